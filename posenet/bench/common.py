"""Timing helpers, the machine label every table states, and the generated blocks of the
documentation, shared by the benchmarks of ``posenet.bench``.

Protocol: every measurement is the median wall time of repeated calls after warm-up calls,
with ``torch.cuda.synchronize()`` around each call on a GPU. The number of timed calls is
``repeats``, cut short (but never below ``min_repeats``) once a cell has used
``budget_s`` seconds, so that slow baselines do not take minutes.

Generated blocks: each table that a command writes (``--update-readme``) lives between
``<!-- benchmark:NAME -->`` and ``<!-- /benchmark:NAME -->`` in exactly one file, README.md or a
page of docs/ (``GENERATED_BLOCKS`` lists the names; ``update_generated_block`` finds the one
home and rewrites it).
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence

from posenet.errors import PosenetError
from posenet.utils.io import write_text_atomic

if TYPE_CHECKING:
    import torch

# torch is imported where it is used, so that the documentation's generated blocks (the end of
# this module) can be checked and written without it.
REPO = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- timing


@dataclass
class Timing:
    median_s: float
    runs: int
    samples: List[float] = field(repr=False, default_factory=list)


def time_call(
    fn: Callable[[], object],
    *,
    device: torch.device | str = "cpu",
    warmup: int = 2,
    repeats: int = 25,
    min_repeats: int = 5,
    budget_s: float = 5.0,
) -> Timing:
    """Median wall time of ``fn()`` over up to ``repeats`` calls after ``warmup`` calls."""
    import torch

    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    samples: List[float] = []
    spent = 0.0
    while len(samples) < repeats and (len(samples) < min_repeats or spent < budget_s):
        start = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - start)
        spent += samples[-1]
    return Timing(statistics.median(samples), len(samples), samples)


def _cpuinfo() -> Dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: Dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    return fields


def simd_level(flags: Optional[Sequence[str]] = None) -> str:
    """The best SIMD level of this CPU, from its /proc/cpuinfo flags (or ``flags``): "amx",
    "avx512_bf16", "avx512" (AVX-512F), "avx2", "sve" / "neon" on Arm, else "baseline";
    "SIMD level unknown" where the flags cannot be read."""
    if flags is None:
        info = _cpuinfo()
        text = info.get("flags", info.get("features"))
        if text is None:
            return "SIMD level unknown"
        flags = text.split()
    have = set(flags)
    for level, needs in (("amx", ("amx_bf16", "amx_tile")), ("avx512_bf16", ("avx512_bf16",)),
                         ("avx512", ("avx512f",)), ("avx2", ("avx2",)), ("sve", ("sve",)),
                         ("neon", ("asimd", "neon"))):
        if have.intersection(needs):
            return level
    return "baseline"


def cpu_model() -> str:
    """The CPU's model name and SIMD level, e.g. "AMD EPYC, avx2": the label every table
    states, so that figures of two machines never share one."""
    info = _cpuinfo()
    name = info.get("model name") or info.get("cpu model") or platform.processor() or platform.machine()
    return f"{name}, {simd_level()}"


def gpu_model() -> Optional[str]:
    """The first visible GPU's name, None without one."""
    import torch

    try:
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - a broken driver is "no GPU" for a label
        pass
    return None


def machine_info(device: torch.device | str = "cpu") -> Dict[str, str]:
    """What a benchmark table must state about the machine it ran on: the CPU with its SIMD
    level and logical cores, torch threads and versions, the GPU when there is one."""
    import torch
    import torchvision

    device = torch.device(device)
    info = {
        "cpu": f"{cpu_model()} ({os.cpu_count()} logical cores)",
        "torch threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
    }
    try:
        from posenet import _C

        info["posenet CPU kernel"] = _C.cpu_isa()
    except ImportError:
        info["posenet CPU kernel"] = "not built"
    from posenet.engine.precision import native_bf16

    info["bf16"] = "native" if native_bf16(device) else "not native (no AVX512-BF16/AMX: bf16 autocast is slow)"
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = str(torch.version.cuda)
    elif (gpu := gpu_model()) is not None:
        info["gpu"] = f"{gpu} (present, not used)"
    return info


# --------------------------------------------------------------------------- generated blocks

# Every generated block of the documentation and the command that regenerates it. Each has
# exactly one home, README.md or a page of docs/ (tests/test_docs_blocks.py checks it).
GENERATED_BLOCKS: Dict[str, str] = {
    "quickstart": "python scripts/demo.py --update-readme",
    "quickstart-openpose": "python scripts/demo.py --config configs/openpose_synthetic_small.yaml --update-readme",
    "overfit": "python scripts/benchmark.py overfit --images 16 --update-readme",
    "overfit-openpose": "python scripts/benchmark.py overfit --config configs/overfit_openpose_coco_mini.yaml "
                        "--update-readme",
    "prn-grid": "python scripts/benchmark.py prn-grid prn.epochs=4 prn.samples_per_epoch=8192 prn.batch_size=64 "
                "prn.lr=1e-3 train.schedule=cosine train.num_workers=0 train.eval_every=4 --update-readme",
    "learning": "python scripts/benchmark.py learning --config configs/synthetic_small.yaml --budget-minutes 5 "
                "--update-readme",
    "nms": "python scripts/benchmark.py nms --update-readme",
    "nms-cuda": "python scripts/benchmark.py nms --device cuda --update-readme",
    "decode": "python scripts/benchmark.py decode --update-readme",
    "decode-openpose": "python scripts/benchmark.py decode --config configs/openpose_vgg19.yaml model.pretrained=none "
                       "--update-readme",
    "network": "python scripts/benchmark.py network --port-equal --update-readme",
    "int8": "python scripts/benchmark.py int8 runs/synthetic_small/prn/best.pt runs/openpose_synthetic_small/keypoint/best.pt "
            "runs/overfit_coco_mini/prn/best.pt --update-readme",
    "train": "python scripts/benchmark.py train --update-readme",
    "data": "python scripts/benchmark.py data --update-readme",
    "data-scale": "python scripts/benchmark.py data --scale --update-readme",
    "folder": "python scripts/benchmark.py folder --update-readme",
    "memory": "python scripts/benchmark.py memory --config configs/coco2017_r101.yaml --update-readme",
    "gpu": "python scripts/benchmark.py gpu --out DIR --update-readme",
    "track": "python scripts/benchmark.py track --checkpoint runs/synthetic_small/prn/best.pt --update-readme",
}


class GeneratedBlockError(PosenetError, ValueError):
    """A generated block has no home, or more than one, or broken markers."""


def block_markers(name: str) -> tuple:
    """``(begin, end)`` markers of the generated block ``name``."""
    return f"<!-- benchmark:{name} -->", f"<!-- /benchmark:{name} -->"


def documentation_files(root: str | os.PathLike = REPO) -> List[Path]:
    """The files that may hold generated blocks: README.md and docs/*.md under ``root``."""
    root = Path(root)
    files = [root / "README.md"] if (root / "README.md").is_file() else []
    return files + sorted((root / "docs").glob("*.md"))


def find_generated_block(name: str, root: str | os.PathLike = REPO) -> Path:
    """The one file under ``root`` (README.md or docs/*.md) that holds the block ``name``;
    GeneratedBlockError when none or several do."""
    begin, _ = block_markers(name)
    homes = [p for p in documentation_files(root) if begin in p.read_text(encoding="utf-8")]
    root = Path(root)
    if not homes:
        raise GeneratedBlockError(f"generated block '{name}': no {begin} in README.md or docs/*.md")
    if len(homes) > 1:
        where = " and ".join(str(p.relative_to(root)) for p in homes)
        raise GeneratedBlockError(f"generated block '{name}': found in {where}; keep it in one file")
    return homes[0]


def portable_paths(markdown: str, root: str | os.PathLike = REPO) -> str:
    """``markdown`` with this machine's absolute paths of the repository (and of the folder it
    sits in, e.g. ../shared) written relative to the repository."""
    root = Path(root).resolve()
    markdown = markdown.replace(f"{root}{os.sep}", "")
    if root.parent != Path(root.anchor):
        markdown = markdown.replace(f"{root.parent}{os.sep}", f"..{os.sep}")
    return markdown


def update_generated_block(name: str, markdown: str, root: str | os.PathLike = REPO) -> Path:
    """Replace the text between ``<!-- benchmark:NAME -->`` and ``<!-- /benchmark:NAME -->``
    in the one file of README.md and docs/*.md that holds them (atomically), so the
    documentation's tables come from their commands, not from typing; returns that file."""
    path = find_generated_block(name, root)
    begin, end = block_markers(name)
    text = path.read_text(encoding="utf-8")
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(end) < text.index(begin):
        raise GeneratedBlockError(f"generated block '{name}' in {path}: needs one {begin} followed by one {end}")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    write_text_atomic(path, f"{head}{begin}\n{portable_paths(markdown, root).strip()}\n{end}{tail}")
    return path
