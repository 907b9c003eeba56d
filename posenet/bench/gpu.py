"""The GPU check (``scripts/benchmark.py gpu``): one unattended command for a lent CUDA
machine that builds the extension, runs the CUDA tests and times training and inference,
writing what it found to ``OUT/gpu.json`` and ``OUT/gpu.md`` after every part.

Parts, in order (``PARTS``); each runs inside its own try/except, within its own time budget
cut to what the whole run (``budget_s``) has left, and a part that fails or runs out of time is
recorded (status, error, traceback) while the next one starts:

1. ``build``: ``python setup.py build_ext --inplace`` with ``FORCE_CUDA=1`` and
   ``TORCH_CUDA_ARCH_LIST`` set to the GPU's compute capability (a subprocess with a timeout;
   the log goes to ``OUT/build.log``), then, in a fresh process, whether
   ``posenet.ops.has_compiled_nms()``, whether ``posenet::nms`` has a CUDA kernel and whether that
   kernel keeps what ``torchvision.ops.nms`` keeps on 2000 random boxes.
2. ``cuda-tests``: ``python -m pytest -m cuda -q`` (a subprocess with a timeout; ``OUT/pytest.log``),
   its passed / failed / skipped counts.
3. ``train``: the keypoint stage of the training config (``configs/coco2017_r50.yaml``,
   ``model.pretrained=none``) with ``train.amp=bf16`` and ``train.channels_last=true``, through
   the project's trainer as ``posenet.bench.training`` times it (``Trainer._train_batch`` on the
   trainer's own loader, epoch after epoch) on coco-mini's train2017 beside the repository, or on
   synthetic images (``posenet.data.synthetic``) when it is absent: samples per second over the
   timed steps after the warm-up steps, CUDA-synchronised at both ends, the peak of
   ``torch.cuda.max_memory_allocated`` over them; then the same step on one batch held in host
   memory (no data loading), which is what the GPU alone gives.
4. ``inference-multiposenet`` / ``inference-openpose``: each family's network (random weights,
   batch norm folded and channels_last input as the predictors run it) on random uint8 images of
   ``input_size`` px, batch 1 and larger batches, fp32 and bf16 autocast: median time of forward
   (+ the detection post-processing, ``PoseNet.detect`` with NMS, for MultiPoseNet) per batch
   (``common.time_call``: warm-up calls first, CUDA-synchronised around each call), images per
   second, the peak memory of the call; the largest bf16 heatmap difference from fp32; and the
   predictor's whole network part on one image (resize on the CPU, upload, forward, boxes,
   maps back to the CPU).
5. ``decode``: decoding per image on the CPU, one thread, on the scenes of the decode benchmarks
   (``bench.decode.crowd_network_output``: ``people`` overlapping people, the PRN grouping;
   ``bench.paf_decode.benchmark_paf_decode``: ``people`` separated people, peaks and PAF grouping).

A CUDA run still going ``HARD_STOP_SLACK_S`` seconds past its budget is ended, every thread's
stack printed (``faulthandler``); ``gpu.json`` then shows the part that was running.

``quick_settings`` runs the same path with tiny settings (no build, no CUDA tests on the CPU,
the small synthetic configs, a few steps, batches 1 and 2), so that the command can be tested
on a CPU in seconds.
"""
from __future__ import annotations

import faulthandler
import gc
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from posenet import families
from posenet.bench.common import REPO, Timing, machine_info, time_call
from posenet.bench.decode import crowd_network_output
from posenet.bench.memory import sample_config, write_samples
from posenet.bench.paf_decode import benchmark_paf_decode
from posenet.bench.training import _batches
from posenet.config import build, load_config
from posenet.data.dataset import collate
from posenet.engine.loader import seed_everything
from posenet.engine.precision import autocast, native_bf16
from posenet.inference.paf_predictor import PafPredictor
from posenet.inference.predictor import Predictor
from posenet.ops import has_compiled_nms
from posenet.utils.io import write_json_atomic, write_text_atomic

MiB = float(1 << 20)
# seconds past the run's budget after which a CUDA run is stopped whatever it is doing
HARD_STOP_SLACK_S = 40.0
COCO_MINI = REPO.parent / "shared" / "data" / "coco-mini"
COMMAND = "python scripts/benchmark.py gpu --out DIR --update-readme"

PART_TITLES = {
    "build": "build",
    "cuda-tests": "CUDA tests",
    "train": "training",
    "inference-multiposenet": "inference, MultiPoseNet",
    "inference-openpose": "inference, OpenPose",
    "decode": "decoding on the CPU",
}


@dataclass
class Settings:
    """What the check runs; ``gpu_settings`` and ``quick_settings`` give the two sets."""

    device: str = "cuda"
    quick: bool = False
    budget_s: float = 420.0
    skip: Sequence[str] = ()
    data_root: str = str(COCO_MINI)  # "synthetic": always the synthetic images
    train_config: str = "configs/coco2017_r50.yaml"
    steps: int = 100
    warmup: int = 10
    held_steps: int = 30
    synthetic_images: int = 24
    mpn_config: str = "configs/coco2017_r50.yaml"
    openpose_config: str = "configs/openpose_vgg19.yaml"
    # config overrides of the training and of each family's network (beside model.pretrained=none)
    train_overrides: Sequence[str] = ()
    mpn_overrides: Sequence[str] = ()
    openpose_overrides: Sequence[str] = ()
    input_size: int = 512
    batches: Sequence[int] = (1, 8, 32)
    repeats: int = 30
    infer_warmup: int = 3
    people: int = 20
    decode_repeats: int = 30
    # the most seconds each part may take; the run's budget cuts them further
    part_budgets: dict = field(default_factory=lambda: {
        "build": 210.0, "cuda-tests": 120.0, "train": 100.0, "inference-multiposenet": 60.0,
        "inference-openpose": 60.0, "decode": 25.0})


def gpu_settings(**overrides) -> Settings:
    """The full check for a CUDA machine (about 5 minutes with the build)."""
    return replace(Settings(), **{k: v for k, v in overrides.items() if v is not None})


# the small synthetic configs shrunk further (16 channels, 64 px), as the fast tests shrink them
TINY = ("model.fpn_channels=16", "model.subnet_channels=16", "model.fuse_channels=16", "detection.fpn_channels=16",
        "detection.head_convs=1", "prn.hidden=32")
TINY_OPENPOSE = ("openpose.stacks=1", "openpose.channels=16")


def quick_settings(**overrides) -> Settings:
    """Tiny settings of the same path (seconds on a CPU): the small synthetic configs with 16
    channels at 64 px, 3 timed training steps of batch 2, inference batches 1 and 2, a few repeats."""
    quick = Settings(quick=True, device="cpu", budget_s=300.0,
                     train_config="configs/synthetic_small.yaml", steps=3, warmup=2, held_steps=2, synthetic_images=4,
                     train_overrides=(*TINY, "keypoint.input_size=64", "keypoint.val_input_size=64", "train.batch_size=2"),
                     mpn_config="configs/synthetic_small.yaml", mpn_overrides=TINY,
                     openpose_config="configs/openpose_synthetic_small.yaml", openpose_overrides=TINY_OPENPOSE,
                     input_size=64, batches=(1, 2), repeats=3, infer_warmup=2, people=4, decode_repeats=3)
    return replace(quick, **{k: v for k, v in overrides.items() if v is not None})


class PartTimeout(RuntimeError):
    """A part ran out of its time budget."""


# --------------------------------------------------------------------------- the run


class Run:
    """The state of one check: settings, output folder, results so far, and the clock."""

    def __init__(self, settings: Settings, out: str | os.PathLike, log: Callable[[str], None] = print):
        self.settings = settings
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.device = torch.device(settings.device)
        self.start = time.perf_counter()
        self.result = {"settings": _jsonable(asdict(settings)), "parts": {}, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                       "machine": {}}

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def left(self) -> float:
        return self.settings.budget_s - (time.perf_counter() - self.start)

    def part_budget(self, name: str, names: Sequence[str]) -> float:
        """The part's own budget, cut so that the parts after it keep a third of theirs."""
        budgets = self.settings.part_budgets
        later = names[names.index(name) + 1:]
        reserve = sum(budgets.get(n, 0.0) / 3 for n in later if n not in self.settings.skip)
        return max(1.0, min(budgets.get(name, 60.0), self.left() - reserve))

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def save(self) -> None:
        """``gpu.json`` and ``gpu.md`` as they stand (after every part: a run killed later
        still leaves what it had)."""
        self.result["seconds"] = time.perf_counter() - self.start
        write_json_atomic(self.out / "gpu.json", _jsonable(self.result), indent=2)
        write_text_atomic(self.out / "gpu.md", format_table(self.result))


def run_check(settings: Settings, out: str | os.PathLike, parts: Sequence[str] | None = None,
              log: Callable[[str], None] = print) -> dict:
    """Every part of ``PARTS`` (or ``parts``) in order, each recorded whatever happens; writes
    ``out/gpu.json`` and ``out/gpu.md`` after each; returns the result."""
    run = Run(settings, out, log)
    names = list(parts or PARTS)
    if run.cuda:  # past the budget by more than a part's slack, a hung part is stopped with its stack printed
        faulthandler.dump_traceback_later(settings.budget_s + HARD_STOP_SLACK_S, exit=True)
    try:
        for i, name in enumerate(names):
            _run_part(run, name, names)
            if i == 0 or i == len(names) - 1:
                # the machine label loads posenet._C: not before the build has replaced it
                run.result["machine"] = _machine(run)
            run.save()
    finally:
        if run.cuda:
            faulthandler.cancel_dump_traceback_later()
    return run.result


def _run_part(run: Run, name: str, names: Sequence[str]) -> None:
    record = run.result["parts"][name] = {"status": "running"}
    skipped = _skip_reason(run, name)
    if skipped:
        record.update(status="skipped", reason=skipped)
        return
    budget = run.part_budget(name, names)
    record["budget_s"] = round(budget, 1)
    run.save()
    run.log(f"benchmark gpu: {name} (budget {budget:.0f} s) ...")
    start = time.perf_counter()
    try:
        record["result"] = PARTS[name](run, time.perf_counter() + budget)
        record["status"] = "ok"
    except Exception as e:  # noqa: BLE001 - a part's failure is recorded, the next part runs
        record.update(status="timeout" if isinstance(e, PartTimeout) else "failed",
                      error=f"{type(e).__name__}: {e}".splitlines()[0][:400],
                      traceback=traceback.format_exc()[-4000:])
        run.log(f"benchmark gpu: {name} {record['status']}: {record['error']}")
    finally:
        record["seconds"] = round(time.perf_counter() - start, 1)
        _free(run)


def _skip_reason(run: Run, name: str) -> str | None:
    if name in run.settings.skip:
        return "--skip"
    if name in ("build", "cuda-tests") and not run.cuda:
        return f"no GPU (--device {run.settings.device})"
    if run.left() <= 0:
        return "the run's time budget was spent"
    return None


def _free(run: Run) -> None:
    gc.collect()
    if run.cuda:
        torch.cuda.empty_cache()


def _machine(run: Run) -> dict:
    """``machine_info`` with the GPU's properties, cuDNN and driver, and the NMS backend this
    process runs."""
    info = machine_info(run.device)
    info["posenet NMS"] = _nms_backend(run)
    if run.cuda:
        props = torch.cuda.get_device_properties(run.device)
        info["gpu"] = (f"{props.name} (compute capability {props.major}.{props.minor}, {props.multi_processor_count} SMs, "
                       f"{props.total_memory / 2**30:.1f} GiB)")
        info["cudnn"] = (f"{torch.backends.cudnn.version()} (benchmark {'on' if torch.backends.cudnn.benchmark else 'off'}, "
                         f"TF32 in fp32 convolutions {'allowed' if torch.backends.cudnn.allow_tf32 else 'off'})")
        driver = _driver_version()
        if driver:
            info["driver"] = driver
    return info


def _nms_backend(run: Run) -> str:
    if not has_compiled_nms():
        return "pure-torch fallback (posenet._C not loaded)"
    if not run.cuda:
        return "compiled"
    try:
        cuda = bool(torch._C._dispatch_has_kernel_for_dispatch_key("posenet::nms", "CUDA"))
    except RuntimeError:
        cuda = False
    return "compiled, CUDA kernel" if cuda else "compiled without a CUDA kernel (the pure-torch fallback on the GPU)"


def _driver_version() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def _env() -> dict:
    """The environment of the subprocesses: the repository importable without an install."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _subprocess(cmd: list, deadline: float, log_file: Path, env: dict | None = None) -> tuple[int, str, float]:
    """(exit code, output, seconds) of ``cmd`` in the repository, in a process group of its own
    that is killed whole at ``deadline`` (PartTimeout: no compiler or test worker is left
    running into the next part); the whole output goes to ``log_file``."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env or _env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=max(1.0, deadline - time.perf_counter()))
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        output, _ = proc.communicate()
        write_text_atomic(log_file, output or "")
        raise PartTimeout(f"{' '.join(map(str, cmd[1:]))} still running after {time.perf_counter() - start:.0f} s "
                          f"(log: {log_file.name})") from None
    write_text_atomic(log_file, output)
    return proc.returncode, output, time.perf_counter() - start


# --------------------------------------------------------------------------- 1. build

PROBE = r"""
import json, sys
import torch, torchvision
import posenet.ops
result = {"compiled_nms": posenet.ops.has_compiled_nms()}
if not result["compiled_nms"]:
    result["load_error"] = sys.modules["posenet.ops.nms"]._compiled_error
else:
    result["cuda_kernel"] = bool(torch._C._dispatch_has_kernel_for_dispatch_key("posenet::nms", "CUDA"))
    if result["cuda_kernel"] and torch.cuda.is_available():
        g = torch.Generator().manual_seed(0)
        xy = torch.rand(2000, 2, generator=g) * 1000
        boxes = torch.cat([xy, xy + 8 + torch.rand(2000, 2, generator=g) * 120], 1).cuda()
        scores = torch.rand(2000, generator=g).cuda()
        kept = torch.ops.posenet.nms(boxes, scores, 0.5)
        result["boxes"] = 2000
        result["kept"] = int(kept.numel())
        result["cuda_matches_torchvision"] = bool(torch.equal(kept.cpu(), torchvision.ops.nms(boxes, scores, 0.5).cpu()))
print("PROBE " + json.dumps(result))
"""


def part_build(run: Run, deadline: float) -> dict:
    """Compile ``posenet._C`` with its CUDA kernel for this GPU into the tree, then probe it."""
    from torch.utils.cpp_extension import CUDA_HOME

    major, minor = torch.cuda.get_device_capability(run.device)
    env = _env()
    env.update(FORCE_CUDA="1", TORCH_CUDA_ARCH_LIST=f"{major}.{minor}", MAX_JOBS=str(os.cpu_count() or 1))
    if "CUDA_HOME" not in env and os.path.exists("/usr/local/cuda/bin/nvcc"):
        env["CUDA_HOME"] = "/usr/local/cuda"  # as scripts/check_cuda_build.py: the toolkit, not a stray nvcc
    cmd = [sys.executable, "setup.py", "build_ext", "--inplace"]
    result = {"command": "python setup.py build_ext --inplace", "TORCH_CUDA_ARCH_LIST": env["TORCH_CUDA_ARCH_LIST"],
              "CUDA_HOME": env.get("CUDA_HOME", CUDA_HOME), "nvcc": shutil.which("nvcc")}
    code, output, seconds = _subprocess(cmd, deadline, run.out / "build.log", env)
    result.update(build_s=round(seconds, 1), exit_code=code)
    if code != 0:
        result["log_tail"] = _tail(output)
        raise RuntimeError(f"the build failed (exit {code}) after {seconds:.0f} s: "
                           f"{_tail(output, 1) or 'no output'} (log: build.log)")
    code, output, _ = _subprocess([sys.executable, "-c", PROBE], deadline, run.out / "probe.log")
    found = [line for line in output.splitlines() if line.startswith("PROBE ")]
    if code != 0 or not found:
        raise RuntimeError(f"the built extension does not load cleanly: {_tail(output, 1) or f'exit {code}'}")
    result.update(json.loads(found[-1][len("PROBE "):]))
    if not result["compiled_nms"]:
        raise RuntimeError(f"built, but posenet._C does not load: {result.get('load_error')}")
    if not result.get("cuda_kernel"):
        raise RuntimeError("built, but posenet::nms has no CUDA kernel (was nvcc found? see build.log)")
    if "cuda_matches_torchvision" not in result:
        raise RuntimeError("built with a CUDA kernel, but the probe saw no GPU to run it on")
    if not result["cuda_matches_torchvision"]:
        raise RuntimeError("the CUDA kernel does not keep what torchvision.ops.nms keeps")
    return result


# --------------------------------------------------------------------------- 2. CUDA tests

SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)")


def pytest_counts(output: str) -> dict:
    """Counts of pytest's closing line ("3 passed, 1 failed, 2 skipped, 500 deselected in 9.1s")."""
    for line in reversed(output.strip().splitlines()):
        found = SUMMARY.findall(line)
        if found and (" in " in line or "no tests ran" in line):
            counts = {}
            for n, word in found:
                word = "errors" if word.startswith("error") else word
                counts[word] = counts.get(word, 0) + int(n)
            return counts
    return {}


def part_cuda_tests(run: Run, deadline: float) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider"]
    code, output, seconds = _subprocess(cmd, deadline, run.out / "pytest.log")
    counts = pytest_counts(output)
    result = {"command": "python -m pytest -m cuda -q", "exit_code": code, "seconds": round(seconds, 1), **counts}
    if code not in (0, 5) or not counts:
        result["log_tail"] = _tail(output)
    if code != 0:
        raise RuntimeError(f"pytest -m cuda exited {code}: {_counts_line(counts) or _tail(output, 1)} (log: pytest.log)")
    return result


def _counts_line(counts: dict) -> str:
    return ", ".join(f"{counts[k]} {k}" for k in ("passed", "failed", "errors", "skipped", "xfailed", "xpassed")
                     if counts.get(k))


# --------------------------------------------------------------------------- 3. training


def _data_root(run: Run, workdir: Path, images: int) -> tuple[Path, str]:
    """(root, description) of the training data: coco-mini beside the repository (or the
    ``data_root`` given), else synthetic images written to ``workdir``."""
    given = run.settings.data_root
    if given != "synthetic" and (Path(given) / "annotations").is_dir():
        return Path(given).resolve(), f"{Path(given).resolve().name} train2017"
    why = "" if given == "synthetic" else f" ({'coco-mini beside the repository' if Path(given) == COCO_MINI else given} absent)"
    root = write_samples(workdir / "synthetic", num_images=images)
    return root, f"{images} synthetic images (posenet.data.synthetic, 2 to 6 people each){why}"


def part_train(run: Run, deadline: float) -> dict:
    s = run.settings
    with tempfile.TemporaryDirectory(prefix="posenet-gpu-train-") as tmp:
        cfg = load_config(REPO / s.train_config, list(s.train_overrides))
        data_root, data = _data_root(run, Path(tmp), max(s.synthetic_images, int(cfg.train.batch_size)))
        cfg = OmegaConf.merge(sample_config(cfg, data_root), {"train": {
            "amp": "bf16" if run.cuda else "auto", "channels_last": True, "epochs": 1}})
        family = families.of(cfg)
        train_set = build.keypoint_dataset(cfg, cfg.data.train_split, train=True, **family.targets(cfg))
        seed_everything(cfg.seed)
        model = family.network(cfg)
        trainer = build.trainer(cfg, model=model, train_dataset=train_set, collate_fn=collate, out_dir=Path(tmp) / "run",
                                tensorboard=False, progress=False, device=run.device)
        trainer.train_model.train()
        batches = _batches(trainer)
        for _ in range(s.warmup):
            trainer._train_batch(next(batches))
        if run.cuda:
            torch.cuda.synchronize(run.device)
            torch.cuda.reset_peak_memory_stats(run.device)
        loaded = _timed_steps(run, trainer, lambda: next(batches), s.steps, deadline)
        if run.cuda:
            loaded["peak_allocated_mib"] = torch.cuda.max_memory_allocated(run.device) / MiB
            loaded["peak_reserved_mib"] = torch.cuda.max_memory_reserved(run.device) / MiB
        held = next(batches)
        batches.close()  # the loader's workers end with it
        trainer._train_batch(held)
        compute = _timed_steps(run, trainer, lambda: held, s.held_steps, deadline)
        k = cfg.keypoint
        size = int(k.input_size if k.augment else k.val_input_size)
        result = {
            "config": s.train_config, "network": family.network_name(cfg), "data": data,
            "dataset_samples": len(train_set), "steps_per_epoch": trainer.steps_per_epoch,
            "input": f"{size}×{size} {'augmented crops' if k.augment else 'fit and pad'}",
            "batch_size": trainer.batch_size, "amp": trainer.amp or "fp32", "channels_last": trainer.channels_last,
            "num_workers": trainer.num_workers, "warmup_steps": s.warmup, "loader": loaded, "held_batch": compute,
            "torch_threads": torch.get_num_threads(),
        }
        trainer.close()
        del trainer, model, train_set
    return result


def _timed_steps(run: Run, trainer, next_batch: Callable, steps: int, deadline: float) -> dict:
    """``steps`` training steps (fewer once ``deadline`` passes, at least one), synchronised at
    both ends: samples per second."""
    done = samples = 0
    run.sync()
    start = time.perf_counter()
    while done < steps and (done == 0 or time.perf_counter() < deadline):
        batch = next_batch()
        trainer._train_batch(batch)
        samples += batch.size
        done += 1
    run.sync()
    elapsed = time.perf_counter() - start
    return {"steps": done, "asked": steps, "samples": samples, "seconds": elapsed, "s_per_step": elapsed / done,
            "samples_per_s": samples / elapsed}


# --------------------------------------------------------------------------- 4. inference


def _images(batch: int, size: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)
    return images.to(device).contiguous(memory_format=torch.channels_last)


def _precisions(run: Run) -> list[str]:
    return ["fp32", "bf16"] if native_bf16(run.device) else ["fp32"]


def _time_rows(run: Run, forward: Callable[[torch.Tensor], torch.Tensor], deadline: float) -> dict:
    """Every (precision, batch) row of ``forward`` (images -> heatmaps) and the bf16 heatmaps'
    largest difference from fp32 at batch 1."""
    s = run.settings
    precisions = _precisions(run)
    plan = [(p, b) for p in precisions for b in s.batches]
    rows, heat = [], {}
    for i, (precision, batch) in enumerate(plan):
        images = _images(batch, s.input_size, run.device)
        amp = None if precision == "fp32" else precision

        @torch.no_grad()
        def call(images=images, amp=amp):
            with autocast(run.device, amp):
                return forward(images)

        row = {"precision": precision, "batch": batch}
        try:
            if batch == 1:
                heat[precision] = call().float().cpu()
            if run.cuda:
                torch.cuda.synchronize(run.device)
                torch.cuda.reset_peak_memory_stats(run.device)
            per_row = max(0.5, (deadline - time.perf_counter()) / (len(plan) - i))
            timing = time_call(call, device=run.device, warmup=s.infer_warmup, repeats=s.repeats,
                               min_repeats=min(3, s.repeats), budget_s=per_row)
            row.update(_timing(timing), images_per_s=batch / timing.median_s)
            if run.cuda:
                row["peak_allocated_mib"] = torch.cuda.max_memory_allocated(run.device) / MiB
        except torch.cuda.OutOfMemoryError as e:
            row["error"] = f"out of memory: {str(e).splitlines()[0][:200]}"
        except Exception as e:  # noqa: BLE001 - one row's failure is recorded, the other rows run
            row["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        rows.append(row)
        del images
        _free(run)
        if time.perf_counter() > deadline and i + 1 < len(plan):
            rows += [{"precision": p, "batch": b, "error": "not timed: the part's budget was spent"} for p, b in plan[i + 1:]]
            break
    result = {"rows": rows, "precisions": precisions}
    if "fp32" in heat and "bf16" in heat:
        scale = float(heat["fp32"].abs().max())
        result["bf16_max_abs_diff"] = float((heat["bf16"] - heat["fp32"]).abs().max())
        result["bf16_relative_diff"] = result["bf16_max_abs_diff"] / scale if scale > 0 else float("nan")
    return result


def _timing(t: Timing) -> dict:
    return {"median_ms": 1e3 * t.median_s, "min_ms": 1e3 * min(t.samples), "runs": t.runs}


def _predictor_row(run: Run, predictor, deadline: float) -> dict:
    size = run.settings.input_size
    rgb = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    timing = time_call(lambda: predictor.network(rgb), device=run.device, warmup=run.settings.infer_warmup,
                       repeats=run.settings.repeats, min_repeats=min(3, run.settings.repeats),
                       budget_s=max(0.5, deadline - time.perf_counter()))
    return {"precision": "fp32", "batch": 1, **_timing(timing), "images_per_s": 1.0 / timing.median_s}


def part_inference_multiposenet(run: Run, deadline: float) -> dict:
    s = run.settings
    cfg = load_config(REPO / s.mpn_config, [*s.mpn_overrides, "model.pretrained=none", f"infer.input_size={s.input_size}",
                                             "infer.scales=[1.0]", "infer.flip=false"])
    torch.manual_seed(0)
    model = build.posenet_model(cfg, len(cfg.data.keypoints.names), detection=True, prn=True).eval()
    predictor = Predictor.from_config(cfg, model, device=str(run.device))  # batch norm folded, on the device
    net = predictor.model
    detect_options = build.detection_options(cfg)
    size = s.input_size

    def forward(images):
        out = net(images)
        net.detect(out, [(size, size)] * images.shape[0], **detect_options)
        return out["heatmaps"]

    reserve = min(0.25 * (deadline - time.perf_counter()), 15.0)
    result = _time_rows(run, forward, deadline - reserve)
    result["predictor"] = _predictor_row(run, predictor, deadline)
    result.update(config=s.mpn_config, network=_mpn_name(cfg), nms=_nms_backend(run),
                  timed="forward + detection post-processing (PoseNet.detect: scores, top-k, box decoding, NMS)")
    return result


def _mpn_name(cfg: DictConfig) -> str:
    return (f"ResNet-{cfg.model.backbone_depth}, keypoint FPN {cfg.model.fpn_channels}, detection FPN "
            f"{cfg.detection.fpn_channels} with {cfg.detection.head_convs}-conv heads")


def part_inference_openpose(run: Run, deadline: float) -> dict:
    s = run.settings
    cfg = load_config(REPO / s.openpose_config, [*s.openpose_overrides, "model.pretrained=none",
                                                  f"infer.input_size={s.input_size}", "infer.scales=[1.0]",
                                                  "infer.flip=false"])
    torch.manual_seed(0)
    predictor = PafPredictor.from_config(cfg, build.paf_network(cfg).eval(), device=str(run.device))
    net = predictor.model

    def forward(images):
        return net(images)["heatmaps"]

    reserve = min(0.25 * (deadline - time.perf_counter()), 15.0)
    result = _time_rows(run, forward, deadline - reserve)
    result["predictor"] = _predictor_row(run, predictor, deadline)
    o = cfg.openpose
    name = f"{o.network}" + (f", {o.stages} stages" if o.network == "vgg19" else "")
    result.update(config=s.openpose_config, network=name, timed="forward (all stages; peaks and grouping: decoding)")
    return result


# --------------------------------------------------------------------------- 5. decoding


def part_decode(run: Run, deadline: float) -> dict:
    s = run.settings
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        budget = max(1.0, (deadline - time.perf_counter()) / 4)
        cfg = load_config(REPO / s.mpn_config, [*s.mpn_overrides, "model.pretrained=none",
                                                 f"infer.input_size={s.input_size}"])
        torch.manual_seed(0)
        predictor = Predictor.from_config(cfg, build.posenet_model(cfg, len(cfg.data.keypoints.names), detection=True,
                                                                   prn=True))
        net = crowd_network_output(predictor, s.people, s.input_size)

        def decode():
            xy, types, scores = predictor.peaks(net)
            return predictor.group(xy, types, scores, net.boxes, net.box_scores, net.matrix, net.image_size)

        people_found = len(decode()[0])
        timing = dict(warmup=2, repeats=s.decode_repeats, min_repeats=min(3, s.decode_repeats), budget_s=budget)
        mpn = {"peaks": _timing(time_call(lambda: predictor.peaks(net), **timing)),
               "total": _timing(time_call(decode, **timing)),
               "peak_count": int(predictor.peaks(net)[0].shape[0]), "people": s.people, "found": people_found,
               "grouping": f"{predictor.grouping.name}, {cfg.prn.precision} output layer, PRN hidden {cfg.prn.hidden}"}
        ocfg = load_config(REPO / s.openpose_config, [*s.openpose_overrides, "model.pretrained=none"])
        paf = benchmark_paf_decode(people=s.people, input_size=s.input_size,
                                   stride=build.paf_network_class(ocfg).output_stride, sigma=float(ocfg.keypoint.sigma),
                                   threads=1, repeats=s.decode_repeats, warmup=2, sampling=ocfg.openpose.paf_sampling)
        openpose = {name: _timing(paf[name]) for name in ("peaks", "grouping", "total")}
        openpose.update(peak_count=paf["peak_count"], people=s.people, recovered=paf["recovered"], stride=paf["stride"])
        if time.perf_counter() > deadline:
            raise PartTimeout(f"decoding took {time.perf_counter() - deadline:.0f} s past its budget")
        return {"multiposenet": mpn, "openpose": openpose, "threads": 1}
    finally:
        torch.set_num_threads(threads)


PARTS: dict[str, Callable[[Run, float], dict]] = {
    "build": part_build,
    "cuda-tests": part_cuda_tests,
    "train": part_train,
    "inference-multiposenet": part_inference_multiposenet,
    "inference-openpose": part_inference_openpose,
    "decode": part_decode,
}


# --------------------------------------------------------------------------- the table


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def _f(x, digits: int = 1) -> str:
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"


def _summary(name: str, part: dict) -> str:
    """One line of the overview table for ``part``."""
    status = part.get("status")
    if status == "skipped":
        return f"skipped: {part.get('reason', '')}"
    if status == "running":
        return "did not finish (the run was stopped during this part)"
    r = part.get("result") or {}
    if status != "ok":
        return f"{part.get('error', status)}"
    if name == "build":
        return (f"`{r['command']}`, TORCH_CUDA_ARCH_LIST={r['TORCH_CUDA_ARCH_LIST']}, {r['build_s']:.0f} s: compiled NMS "
                f"loads, CUDA kernel loads, keeps what torchvision.ops.nms keeps on {r.get('boxes')} boxes")
    if name == "cuda-tests":
        return f"`{r['command']}`: {_counts_line(r) or 'no tests ran'}"
    if name == "train":
        return (f"{r['loader']['samples_per_s']:.1f} samples/s with data loading, "
                f"{r['held_batch']['samples_per_s']:.1f} on a held batch; batch {r['batch_size']}"
                + (f", peak {r['loader']['peak_allocated_mib']:.0f} MiB" if "peak_allocated_mib" in r["loader"] else ""))
    if name.startswith("inference"):
        ok = [row for row in r["rows"] if "median_ms" in row]
        b1 = next((row for row in ok if row["batch"] == 1 and row["precision"] == "fp32"), None)
        best = max(ok, key=lambda row: row["images_per_s"], default=None)
        parts = []
        if b1:
            parts.append(f"batch 1 fp32 {_f(b1['images_per_s'])} FPS")
        if best:
            parts.append(f"best {_f(best['images_per_s'])} images/s ({best['precision']}, batch {best['batch']})")
        failed = len(r["rows"]) - len(ok)
        return ", ".join(parts) + (f"; {failed} row(s) failed" if failed else "")
    if name == "decode":
        return (f"MultiPoseNet {r['multiposenet']['total']['median_ms']:.1f} ms, OpenPose "
                f"{r['openpose']['total']['median_ms']:.1f} ms per image ({r['multiposenet']['people']} people)")
    return ""


def format_table(result: dict) -> str:
    """The markdown of a check (also of one stopped part-way): the machine, an overview of the
    parts, then each part's table."""
    s = result["settings"]
    parts = result["parts"]
    machine = result.get("machine") or {}
    cuda = str(s["device"]).startswith("cuda")
    lines = ["### On a GPU: build, CUDA tests, training and inference" if cuda else
             "### The GPU check on the CPU (--device cpu: the command's path, not GPU figures)", ""]
    if machine:
        lines += ["Machine: " + "; ".join(f"{k} {v}" for k, v in machine.items()) + ".", ""]
    command = "python scripts/benchmark.py gpu --out DIR" + (" --quick" if s["quick"] else "") + \
        ("" if cuda else f" --device {s['device']}") + (f" --skip {' '.join(s['skip'])}" if s["skip"] else "")
    lines += [f"Command: `{command}` ({_f(result.get('seconds'), 0)} s in all, budget {s['budget_s']:.0f} s). "
              "Random weights throughout (`model.pretrained=none`): speed does not depend on them.", "",
              "| part | status | seconds | result |", "|---|---|---:|---|"]
    for name, part in parts.items():
        lines.append(f"| {PART_TITLES.get(name, name)} | {part.get('status')} | {_f(part.get('seconds'), 0)} | "
                     f"{_summary(name, part)} |")
    for name, render in (("train", _train_section), ("inference-multiposenet", _inference_section),
                         ("inference-openpose", _inference_section), ("decode", _decode_section)):
        part = parts.get(name)
        if part and part.get("status") == "ok":
            lines += ["", *render(name, part["result"], s)]
    return "\n".join(lines) + "\n"


def _train_section(name: str, r: dict, s: dict) -> list[str]:
    loader, held = r["loader"], r["held_batch"]
    cuda = "peak_allocated_mib" in loader
    lines = [
        f"#### Training: the keypoint stage of `{r['config']}`",
        "",
        f"Protocol: {r['network']}, batch {r['batch_size']} of {r['input']} with all targets, {r['amp']} autocast, "
        f"channels_last {'on' if r['channels_last'] else 'off'}, the project's trainer (`Trainer._train_batch`: "
        f"forward, loss, backward, optimizer step) after {r['warmup_steps']} warm-up step(s); samples per second over "
        f"the timed steps{', CUDA-synchronised at both ends' if cuda else ''}. Data: {r['data']} "
        f"({r['dataset_samples']} samples, {r['steps_per_epoch']} steps an epoch; "
        + (f"the loader's {r['num_workers']} workers start again each epoch" if r["num_workers"] else
           "loaded in the main process")
        + "). Held batch: the same step on one batch kept in host memory (copied to the device each step, no "
        "loading): what the device alone gives."
        + (" Peak: torch.cuda.max_memory_allocated (and reserved) over the timed steps with data loading." if cuda else ""),
        "",
        "| batches from | timed steps | s/step | samples/s |" + (" peak allocated MiB | peak reserved MiB |" if cuda else ""),
        "|---|---:|---:|---:|" + ("---:|---:|" if cuda else ""),
    ]
    for label, t in ((f"the trainer's loader ({r['num_workers']} workers)", loader), ("one held batch", held)):
        steps = f"{t['steps']}" + (f" of {t['asked']} (budget)" if t["steps"] < t["asked"] else "")
        lines.append(f"| {label} | {steps} | {t['s_per_step']:.3f} | {t['samples_per_s']:.1f} |"
                     + (f" {_f(t.get('peak_allocated_mib'), 0)} | {_f(t.get('peak_reserved_mib'), 0)} |" if cuda else ""))
    return lines


def _inference_section(name: str, r: dict, s: dict) -> list[str]:
    family = "MultiPoseNet" if name.endswith("multiposenet") else "OpenPose"
    size = s["input_size"]
    cuda = str(s["device"]).startswith("cuda")
    lines = [
        f"#### Inference at {size} px, {family} (`{r['config']}`: {r['network']})",
        "",
        f"Protocol: random uint8 {size}×{size} images already on the device, channels_last, batch norm folded; "
        f"timed: {r['timed']}; median of up to {s['repeats']} calls after {s['infer_warmup']} warm-up calls"
        + (", torch.cuda.synchronize around each" if cuda else "") + "; bf16 rows under torch.autocast(bfloat16)."
        + (f" NMS: {r['nms']}." if "nms" in r else "")
        + (" Peak: torch.cuda.max_memory_allocated of the row's calls." if cuda else ""),
        "",
        "| precision | batch | ms per batch | fastest ms | images/s | runs |" + (" peak MiB |" if cuda else ""),
        "|---|---:|---:|---:|---:|---:|" + ("---:|" if cuda else ""),
    ]
    for row in r["rows"]:
        if "median_ms" not in row:
            lines.append(f"| {row['precision']} | {row['batch']} | {row.get('error', '-')} |" + " |" * (4 if cuda else 3))
            continue
        lines.append(f"| {row['precision']} | {row['batch']} | {_f(row['median_ms'], 2)} | {_f(row['min_ms'], 2)} | "
                     f"{_f(row['images_per_s'], 1)} | {row['runs']} |"
                     + (f" {_f(row.get('peak_allocated_mib'), 0)} |" if cuda else ""))
    p = r["predictor"]
    lines += ["", f"The predictor's network part on one {size}×{size} RGB image (resize on the CPU, upload, "
                  f"{'forward and boxes' if family == 'MultiPoseNet' else 'forward'}, maps back to the CPU; fp32): "
                  f"{_f(p['median_ms'], 2)} ms, {_f(p['images_per_s'])} images/s."]
    if "bf16_relative_diff" in r:
        lines[-1] += (f" bf16 heatmaps against fp32 (batch 1): largest difference {r['bf16_max_abs_diff']:.3g}, "
                      f"{100 * r['bf16_relative_diff']:.2f} % of the largest fp32 value.")
    if r["precisions"] == ["fp32"]:
        lines[-1] += " bf16 not timed: not native on this device."
    return lines


def _decode_section(name: str, r: dict, s: dict) -> list[str]:
    m, o = r["multiposenet"], r["openpose"]
    size = s["input_size"]
    return [
        f"#### Decoding per image on the CPU ({r['threads']} thread)",
        "",
        f"Protocol: the scenes of `benchmark.py decode`, at {size} px. MultiPoseNet: {m['people']} overlapping people, "
        f"the codec's heatmaps and their boxes (`bench.decode.crowd_network_output`); peaks, then grouping "
        f"({m['grouping']}) and mapping back. OpenPose: {o['people']} separated people, perfect heatmaps and PAFs "
        f"at stride {o['stride']} (`bench.paf_decode`); peaks, then the PAF grouping. Median of up to "
        f"{s['decode_repeats']} calls.",
        "",
        "| family | part | ms per image | fastest ms | notes |",
        "|---|---|---:|---:|---|",
        f"| MultiPoseNet | peaks | {_f(m['peaks']['median_ms'], 2)} | {_f(m['peaks']['min_ms'], 2)} | "
        f"{m['peak_count']} peaks |",
        f"| MultiPoseNet | peaks + grouping + mapping back | {_f(m['total']['median_ms'], 2)} | "
        f"{_f(m['total']['min_ms'], 2)} | {m['found']} people |",
        f"| OpenPose | peaks | {_f(o['peaks']['median_ms'], 2)} | {_f(o['peaks']['min_ms'], 2)} | {o['peak_count']} peaks |",
        f"| OpenPose | PAF grouping | {_f(o['grouping']['median_ms'], 2)} | {_f(o['grouping']['min_ms'], 2)} | "
        f"{o['recovered']} of {o['people']} people recovered |",
        f"| OpenPose | peaks + grouping | {_f(o['total']['median_ms'], 2)} | {_f(o['total']['min_ms'], 2)} | |",
    ]


__all__ = ["COMMAND", "PARTS", "Run", "Settings", "format_table", "gpu_settings", "pytest_counts", "quick_settings",
           "run_check"]
