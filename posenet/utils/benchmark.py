"""Timing helpers and the NMS benchmark behind ``scripts/benchmark.py nms``.

Protocol: every measurement is the median wall time of repeated calls after warm-up calls,
with ``torch.cuda.synchronize()`` around each call on a GPU. The number of timed calls is
``repeats``, cut short (but never below ``min_repeats``) once a cell has used
``budget_s`` seconds, so that slow baselines do not take minutes.
"""
from __future__ import annotations

import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

from posenet.utils.io import write_text_atomic

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


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device | str = "cpu") -> Dict[str, str]:
    """What a benchmark table must state about the machine it ran on."""
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
    return info


# --------------------------------------------------------------------------- NMS

NMS_DISTRIBUTIONS = {
    "clustered": (
        "n/50 objects with centres uniform on a 1333x800 image and sides log-uniform in "
        "[32, 256] px; each box is one object's box with every corner jittered by N(0, 0.1 * "
        "side) (detector-like: most boxes are suppressed)"
    ),
    "scattered": (
        "centres uniform on a square of side 32*sqrt(n) px, sides uniform in [8, 40] px "
        "(little overlap: most boxes are kept, the worst case for greedy NMS)"
    ),
}


def nms_boxes(
    distribution: str, n: int, *, seed: int = 0, device: torch.device | str = "cpu"
) -> tuple:
    """``(boxes, scores)``: ``n`` float32 boxes of ``distribution`` (see NMS_DISTRIBUTIONS)
    with scores uniform in [0, 1)."""
    g = torch.Generator().manual_seed(seed)
    if distribution == "clustered":
        k = max(1, n // 50)
        centre = torch.rand(k, 2, generator=g) * torch.tensor([1333.0, 800.0])
        side = torch.exp(torch.empty(k, 2).uniform_(math.log(32), math.log(256), generator=g))
        obj = torch.randint(0, k, (n,), generator=g)
        boxes = torch.cat([centre[obj] - side[obj] / 2, centre[obj] + side[obj] / 2], 1)
        boxes = boxes + torch.randn(n, 4, generator=g) * 0.1 * side[obj].repeat(1, 2)
    elif distribution == "scattered":
        centre = torch.rand(n, 2, generator=g) * 32 * math.sqrt(n)
        side = 8 + 32 * torch.rand(n, 2, generator=g)
        boxes = torch.cat([centre - side / 2, centre + side / 2], 1)
    else:
        raise ValueError(
            f"unknown box distribution {distribution!r}; choose from {', '.join(NMS_DISTRIBUTIONS)}"
        )
    scores = torch.rand(n, generator=g)
    return boxes.to(device), scores.to(device)


def benchmark_nms(
    sizes: Sequence[int] = (1000, 10000),
    distributions: Sequence[str] = ("clustered", "scattered"),
    *,
    iou_threshold: float = 0.5,
    device: torch.device | str = "cpu",
    fallback: bool = True,
    seed: int = 0,
    **timing,
) -> List[Dict[str, object]]:
    """Times posenet's compiled NMS, torchvision.ops.nms and posenet's pure-torch fallback
    (all through their public functions) and checks that they keep the same boxes."""
    import torchvision

    from posenet import ops

    if not ops.has_compiled_nms():
        raise RuntimeError("posenet._C is not built: run `pip install --no-build-isolation -e .`")
    device = torch.device(device)
    rows = []
    previous = ops.set_nms_backend("compiled")
    try:
        for n in sizes:
            for dist in distributions:
                boxes, scores = nms_boxes(dist, n, seed=seed, device=device)
                ops.set_nms_backend("compiled")
                ours = ops.nms(boxes, scores, iou_threshold)
                t_ours = time_call(lambda: ops.nms(boxes, scores, iou_threshold), device=device, **timing)
                ref = torchvision.ops.nms(boxes, scores, iou_threshold)
                t_tv = time_call(
                    lambda: torchvision.ops.nms(boxes, scores, iou_threshold), device=device, **timing
                )
                same = torch.equal(ours, ref)
                t_fb = None
                if fallback:
                    ops.set_nms_backend("torch")
                    same = same and torch.equal(ops.nms(boxes, scores, iou_threshold), ref)
                    t_fb = time_call(lambda: ops.nms(boxes, scores, iou_threshold), device=device, **timing)
                rows.append(
                    {
                        "n": n,
                        "distribution": dist,
                        "kept": int(ref.numel()),
                        "posenet": t_ours,
                        "torchvision": t_tv,
                        "fallback": t_fb,
                        "identical": same,
                    }
                )
    finally:
        ops.set_nms_backend(previous)
    return rows


def nms_protocol(
    *, iou_threshold: float, device: str, warmup: int, repeats: int, min_repeats: int, budget_s: float
) -> str:
    return (
        f"Protocol: torchvision.ops.nms vs posenet.ops.nms (compiled, and forced to the "
        f"pure-torch fallback), float32 boxes on {device}, IoU threshold {iou_threshold}; each "
        f"cell is the median wall time of {min_repeats} to {repeats} timed calls (fewer once "
        f"a cell has used {budget_s:g} s) after {warmup} warm-up calls; "
        f"torch.set_num_threads({torch.get_num_threads()}). "
        f"'identical': all three returned the same kept indices."
    )


def _ms(t: Optional[Timing]) -> str:
    if t is None:
        return "-"
    ms = t.median_s * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def format_nms_table(rows: List[Dict[str, object]], info: Dict[str, str], protocol: str) -> str:
    """Markdown: the machine, the protocol, one row per (size, distribution), and how the
    boxes were drawn."""
    lines = [
        "### NMS benchmark",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + ".",
        "",
        protocol,
        "",
        "| boxes | distribution | kept | posenet compiled (ms) | torchvision (ms) | pure-torch fallback (ms) "
        "| torchvision / posenet | identical |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ratio = r["torchvision"].median_s / r["posenet"].median_s
        lines.append(
            f"| {r['n']} | {r['distribution']} | {r['kept']} | {_ms(r['posenet'])} | "
            f"{_ms(r['torchvision'])} | {_ms(r['fallback'])} | {ratio:.1f}x | "
            f"{'yes' if r['identical'] else 'NO'} |"
        )
    lines += ["", "Distributions:"]
    used = dict.fromkeys(r["distribution"] for r in rows)
    lines += [f"- {name}: {NMS_DISTRIBUTIONS[name]}." for name in used]
    return "\n".join(lines) + "\n"


def replace_readme_section(readme: str, name: str, markdown: str) -> None:
    """Replace the text between ``<!-- benchmark:NAME -->`` and ``<!-- /benchmark:NAME -->``
    in ``readme`` (atomically), so the README's tables come from the command, not from typing."""
    begin, end = f"<!-- benchmark:{name} -->", f"<!-- /benchmark:{name} -->"
    with open(readme) as f:
        text = f.read()
    if begin not in text or end not in text:
        raise ValueError(f"{readme} has no {begin} ... {end} markers")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    write_text_atomic(readme, f"{head}{begin}\n{markdown.strip()}\n{end}{tail}")
