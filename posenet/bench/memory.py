"""Training-memory benchmark (``scripts/benchmark.py memory``): per training stage of a config,
the memory that autograd keeps for backward per image at the configured input size, and the
fixed cost of weights, gradients and optimizer state.

Method: exact bookkeeping, not process RSS. Each stage's model is built from the config as its
training builds it (``model.pretrained`` none: memory does not depend on weight values), with
the same frozen parts and training tasks, in training mode. Batches of B = 1 and B = 2 real
training samples (images and targets from the stage's own dataset class, on a few synthetic
COCO-format images written to a temporary folder, at the stage's training input size) go
through ``model(images, targets)``, which returns the losses, under
``torch.autograd.graph.saved_tensors_hooks`` that record every tensor saved for backward; the
bytes of their storages (each storage once, the model's own parameters and buffers left out:
they are the fixed cost) are what the step holds between forward and backward. The difference
B=2 minus B=1 is the cost of one image; B=1 minus that is the part that does not grow with the
batch (under bf16 autocast mostly the bf16 copies of the weights). The same is done under
``torch.autocast(dtype=torch.bfloat16)``; where the CPU has no native bf16 (emulated bf16
convolutions take minutes per image at 480 px) the convolutions are allocated but not computed
(``SkipArithmetic``): autograd saves the same tensors, so the count is the same.

The per-GPU peak is estimated as weights + gradients of the trainable parameters + optimizer
state + the constant part + batch x per-image activations; it leaves out the caching
allocator's rounding and fragmentation, cuDNN/cuBLAS workspaces, the CUDA context and the
transient buffers of backward. On a GPU (``device="cuda"``) a real training step (forward,
backward, optimizer step) at the per-GPU batch is also run and its
``torch.cuda.max_memory_allocated`` reported beside the estimate.
"""
from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.utils._pytree as pytree
from omegaconf import DictConfig, OmegaConf
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.ops import FrozenBatchNorm2d

from posenet.config import build
from posenet.config.build import trainer_options
from posenet.data.dataset import collate
from posenet.data.synthetic import SyntheticCocoGenerator, write_synthetic_coco
from posenet.engine.loader import seed_everything, to_device
from posenet.engine.precision import autocast, native_bf16
from posenet.stages import detection, prn

MiB = float(1 << 20)

# Optimizer state per trainable parameter, in parameters' worth of memory.
OPTIMIZER_STATE = {"adam": 2, "adamw": 2}


def optimizer_state_factor(cfg: DictConfig) -> int:
    """How many tensors the size of the trainable parameters the optimizer keeps: 2 for Adam
    and AdamW (first and second moments), 1 for SGD with momentum, 0 without."""
    t = cfg.train
    name = str(t.optimizer).lower()
    if name == "sgd":
        return 1 if float(t.momentum) > 0 else 0
    return OPTIMIZER_STATE.get(name, 2)


# --------------------------------------------------------------------------- samples


def write_samples(root: str | Path, num_images: int = 4, seed: int = 0) -> Path:
    """A few synthetic COCO-format training images (2 to 6 annotated persons each, crowds,
    occluders and clutter as the generator draws them) under ``root``: the data every stage's
    dataset reads here, so that the benchmark needs no COCO."""

    generator = SyntheticCocoGenerator(min_people=2, max_people=6, min_size=320, max_size=480,
                                       min_person_height=48)
    write_synthetic_coco(root, num_train=num_images, num_val=0, seed=seed, workers=1, generator=generator,
                         progress=False)
    return Path(root)


def sample_config(cfg: DictConfig, data_root: str | Path) -> DictConfig:
    """``cfg`` reading the synthetic samples under ``data_root`` (COCO 2017 layout) and
    building its trunk without pretrained weights."""
    return OmegaConf.merge(cfg, {
        "model": {"pretrained": "none"},
        "data": {"root": str(data_root), "folders": "coco2017", "train_split": "train2017",
                 "val_split": "val2017", "first_images": 0},
    })


# --------------------------------------------------------------------------- stages


def stage_setup(cfg: DictConfig, family, stage: str) -> dict:
    """The model of ``family``'s ``stage`` (``family`` a ``posenet.families.Family``) built,
    frozen and set as that stage's training does, its training dataset and collate function, its
    config (with the stage's overrides) and a description of its input. ``cfg`` must read an
    existing dataset (``sample_config``)."""
    from torch.utils.data import default_collate

    family.check_stage(stage)
    num_keypoints = len(cfg.data.keypoints.names)
    k = cfg.keypoint
    size = int(k.input_size if k.augment else k.val_input_size)  # what keypoint_dataset crops to
    image_input = f"{size}×{size}"
    seed_everything(cfg.seed)
    if stage == "keypoint":  # the first stage: the family's network
        model = family.network(cfg)
        dataset = build.keypoint_dataset(cfg, cfg.data.train_split, train=True, **family.targets(cfg))
        stage_cfg, collate_fn = cfg, collate
        name = family.network_name(cfg)
    elif stage == "detection":

        stage_cfg = build.stage_config(cfg, "detection")
        model = detection.prepare_model(stage_cfg, num_keypoints, None)
        dataset, collate_fn, name = build.keypoint_dataset(stage_cfg, cfg.data.train_split, train=True), collate, stage
    elif stage == "prn":

        stage_cfg = build.stage_config(cfg, "prn")
        # the recipe starts the PRN stage from the detection stage's checkpoint: the whole model
        model = prn.prepare_model(stage_cfg, num_keypoints, None, detection=True)
        dataset, collate_fn, name = build.prn_scenes(stage_cfg), default_collate, stage
        p = stage_cfg.prn
        image_input = f"{p.height}×{p.width} grid × {num_keypoints}"
    else:  # pragma: no cover - families.check_stage knows the stages
        raise ValueError(stage)
    model.train()
    return {"stage": stage, "name": name, "model": model, "cfg": stage_cfg, "dataset": dataset,
            "collate": collate_fn, "input": image_input}


def draw_samples(dataset, n: int, seed: int = 0) -> list:
    """The first ``n`` training samples of ``dataset`` (cycling through it), augmentation seeded."""

    seed_everything(seed)
    return [dataset[i % len(dataset)] for i in range(n)]


def _batch(setup: dict, samples: list, device: torch.device):

    images, targets = setup["collate"](samples)
    images, targets = to_device(images, device), to_device(targets, device)
    if setup["cfg"].train.channels_last and isinstance(images, torch.Tensor) and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets


def _amp_context(device: torch.device, amp: str | None):

    return autocast(device, amp)


# --------------------------------------------------------------------------- measuring


class SkipArithmetic(TorchDispatchMode):
    """Inside this mode the ops in ``ops`` (default: convolutions) return zeros of the shape,
    dtype and strides their meta kernels give, without computing them. It sits below autograd
    and autocast: autograd records and saves exactly the tensors it would otherwise (what it
    saves depends on shapes and dtypes, not values), so the bookkeeping of ``saved_bytes`` is
    unchanged; only the arithmetic that a CPU without native bf16 emulates slowly is skipped."""

    def __init__(self, ops=(torch.ops.aten.convolution.default,)):
        super().__init__()
        self.ops = frozenset(ops)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in self.ops:
            return func(*args, **kwargs)
        device = next(a.device for a in pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor))
        meta = pytree.tree_map_only(torch.Tensor, lambda t: t.to("meta"), (args, kwargs))
        out = func(*meta[0], **meta[1])
        return pytree.tree_map_only(
            torch.Tensor, lambda m: torch.empty_strided(m.shape, m.stride(), dtype=m.dtype, device=device).zero_(), out)


def saved_bytes(model: torch.nn.Module, images, targets, amp: str | None = None, compute: bool = True) -> int:
    """Bytes of the storages that autograd saves for backward in ``model(images, targets)``
    (training mode: the losses), each storage once, the model's parameters and buffers not
    counted. ``amp``: None (fp32) or "bf16" / "fp16" autocast. ``compute=False``: convolutions
    are not computed (``SkipArithmetic``): the same bytes, far faster where bf16 is emulated."""
    device = next(model.parameters()).device
    own = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    sizes: dict[int, int] = {}
    held: list[torch.Tensor] = []  # alive until counted: no address is reused meanwhile

    def pack(tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in own and ptr not in sizes:
            sizes[ptr] = storage.nbytes()
            held.append(tensor)
        return tensor

    skip = contextlib.nullcontext() if compute else SkipArithmetic()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), _amp_context(device, amp), skip:
        losses = model(images, targets)
    if not torch.is_tensor(losses.get("loss")) or not losses["loss"].requires_grad:
        raise RuntimeError("the model's forward returned no loss to train: nothing would be saved for backward")
    total = sum(sizes.values())
    del losses, held
    return total


def parameter_bytes(model: torch.nn.Module) -> dict:
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    return {
        "params": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in trainable),
        "weights_bytes": sum(p.numel() * p.element_size() for p in params)
        + sum(b.numel() * b.element_size() for b in model.buffers()),
        "trainable_bytes": sum(p.numel() * p.element_size() for p in trainable),
    }


def measure_activations(setup: dict, samples: list, batches: Sequence[int] = (1, 2), amp: str | None = None,
                        device: torch.device | str = "cpu", compute: bool = True) -> dict:
    """``{B: saved bytes}`` of ``setup``'s model on the first B of ``samples`` for each B."""
    device = torch.device(device)
    out = {}
    for b in batches:
        images, targets = _batch(setup, samples[:b], device)
        out[b] = saved_bytes(setup["model"], images, targets, amp, compute)
        del images, targets
    return out


def cuda_peak(setup: dict, samples: list, batch: int, amp: str | None, device: torch.device) -> int:
    """``torch.cuda.max_memory_allocated`` over a steady-state training step (forward, backward,
    optimizer step, after one step that created the optimizer state) at ``batch``."""

    model = setup["model"]
    optimizer = trainer_options(setup["cfg"])["optimizer"](p for p in model.parameters() if p.requires_grad)
    images, targets = _batch(setup, [samples[i % len(samples)] for i in range(batch)], device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with _amp_context(device, amp):
            loss = model(images, targets)["loss"]
        loss.backward()
        optimizer.step()

    step()
    optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    optimizer.zero_grad(set_to_none=True)
    del optimizer, images, targets
    return int(peak)


def stage_row(setup: dict, samples: list, precisions: Sequence[str], batch: int | None, device: torch.device) -> dict:
    """One table row: parameters, fixed bytes, per-image and constant activations per
    precision, estimated (and on CUDA measured) peaks at the per-GPU batch."""
    model = setup["model"]
    sizes = parameter_bytes(model)
    factor = optimizer_state_factor(setup["cfg"])
    fixed = sizes["weights_bytes"] + sizes["trainable_bytes"] * (1 + factor)
    per_gpu = int(batch or setup["cfg"].train.batch_size)
    row = {"stage": setup["stage"], "name": setup["name"], "input": setup["input"], **sizes, "fixed": fixed,
           "optimizer_factor": factor, "batch": per_gpu, "activations": {}, "measured": {}}
    for precision in precisions:
        amp = None if precision == "fp32" else precision
        # emulated bf16 convolutions take minutes per image at 480 px: count without computing them
        compute = amp is None or native_bf16(device)
        start = time.perf_counter()
        saved = measure_activations(setup, samples, (1, 2), amp, device, compute=compute)
        per_image = saved[2] - saved[1]
        constant = saved[1] - per_image
        row["activations"][precision] = {
            "saved": saved, "per_image": per_image, "constant": constant, "computed": compute,
            "peak": fixed + saved[1] + (per_gpu - 1) * per_image, "seconds": time.perf_counter() - start,
        }
        if device.type == "cuda":
            row["measured"][precision] = cuda_peak(setup, samples, per_gpu, amp, device)
    return row


def benchmark_memory(cfg: DictConfig, family, batch: int | None = None, skip: Sequence[str] = (), device: str = "cpu",
                     stages: Sequence[str] | None = None, data_root: str | Path | None = None, log=print) -> dict:
    """A row per training stage of ``family`` (a ``posenet.families.Family``; or ``stages``);
    ``skip`` may hold "bf16".
    ``data_root``: an existing synthetic (or COCO 2017-layout) dataset to draw the samples
    from (default: four synthetic images written to a temporary folder)."""
    device = torch.device(device)
    precisions = [p for p in ("fp32", "bf16") if p not in skip]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="posenet-memory-") as tmp:
        root = Path(data_root) if data_root is not None else write_samples(Path(tmp) / "data", seed=cfg.seed)
        run_cfg = sample_config(cfg, root)
        rows, frozen_bn = [], False
        for stage in stages or family.stages:
            log(f"benchmark memory: {stage} stage ({', '.join(precisions)})")
            setup = stage_setup(run_cfg, family, stage)
            setup["model"].to(device)
            if setup["cfg"].train.channels_last:
                setup["model"].to(memory_format=torch.channels_last)
            samples = draw_samples(setup["dataset"], max(2, int(batch or setup["cfg"].train.batch_size))
                                   if device.type == "cuda" else 2, seed=cfg.seed)
            rows.append(stage_row(setup, samples, precisions, batch, device))
            frozen_bn |= any(isinstance(m, FrozenBatchNorm2d) for m in setup["model"].modules())
            del setup, samples
    return {"rows": rows, "precisions": precisions, "device": str(device), "seconds": time.perf_counter() - start,
            "channels_last": bool(cfg.train.channels_last),
            "frozen_bn": frozen_bn}


# --------------------------------------------------------------------------- table


def _mib(n: float) -> str:
    n = n / MiB
    return f"{n:.2f}" if abs(n) < 10 else f"{n:.0f}"


def format_memory_table(result: dict, info: dict, command: str) -> str:
    rows, precisions = result["rows"], result["precisions"]
    cuda = result["device"].startswith("cuda")

    def pair(row: dict, key: str) -> str:
        return " / ".join(_mib(row["activations"][p][key]) if p in row["activations"] else "-"
                          for p in ("fp32", "bf16"))

    def measured(row: dict) -> str:
        return " / ".join(_mib(row["measured"][p]) if p in row["measured"] else "-" for p in ("fp32", "bf16"))

    factor = {r["optimizer_factor"] for r in rows}
    optimizer = "Adam state (2× trainable)" if factor == {2} else "optimizer state"
    lines = [
        "### Training memory per GPU",
        "",
        f"Command: `{command}`.",
        "",
        "| stage | input | batch per GPU | trainable / total parameters (M) | fixed MiB (weights + grads + "
        f"{optimizer.split(' (')[0]}) | activations MiB per image, fp32 / bf16 | constant activations MiB, fp32 / bf16 "
        "| estimated peak MiB at the batch, fp32 / bf16 |" + (" measured peak MiB (CUDA), fp32 / bf16 |" if cuda else ""),
        "|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if cuda else ""),
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['input']} | {r['batch']} | {r['trainable'] / 1e6:.2f} / {r['params'] / 1e6:.2f} | "
            f"{_mib(r['fixed'])} | {pair(r, 'per_image')} | {pair(r, 'constant')} | {pair(r, 'peak')} |"
            + (f" {measured(r)} |" if cuda else ""))
    uncomputed = sorted({p for r in rows for p, a in r["activations"].items() if not a["computed"]})
    notes = (f"{' and '.join(uncomputed)} without native support on this CPU: its convolutions were not computed, "
             "only allocated with their real shapes and dtypes (autograd saves the same tensors; the test checks the "
             "bytes equal a computed run's). " if uncomputed else "")
    more = [r["name"] for r in rows if "bf16" in r["activations"]
            and r["activations"]["bf16"]["per_image"] > r["activations"]["fp32"]["per_image"] > 0]
    if more:
        cause = ("torchvision's FrozenBatchNorm2d, the trunk's frozen batch norm, multiplies by an fp32 scale"
                 if result.get("frozen_bn") else "an fp32 tensor meets a bf16 one outside autocast's op lists")
        notes += (f"bf16 saves more per image than fp32 in the {' and '.join(more)} stage"
                  f"{'s' if len(more) > 1 else ''}: {cause}, so the activations after it are fp32 again and "
                  "autograd keeps both them and the bf16 copies the next convolutions make. ")
    where = (f"on {result['device']}, beside torch.cuda.max_memory_allocated of a real training step (forward, backward, "
             "optimizer step) at the batch" if cuda else "estimated on the CPU: no GPU was used")
    lines += [
        "",
        f"Protocol: {where}. Each stage's model is built from the config as its training builds it (random weights: "
        "memory does not depend on them; the same frozen parts), in training mode; B = 1 and B = 2 training samples "
        "(images and targets from the stage's own dataset class, augmented as in training, on synthetic COCO-format "
        "images) go through forward + loss, fp32 and under bf16 autocast"
        + (", channels-last" if result["channels_last"] else "")
        + "; a saved_tensors_hooks pair sums the bytes of every storage autograd saves for backward, each once, "
        "the model's own parameters and buffers left out. Activations per image = B=2 minus B=1; constant = B=1 minus "
        "one image (bf16 copies of the weights under autocast, anchors). Fixed = fp32 weights and buffers + gradients "
        f"of the trainable parameters + {optimizer}. Estimated peak = fixed + constant + batch × per image: the "
        "caching allocator's rounding and fragmentation, cuDNN/cuBLAS workspaces, the CUDA context (several hundred "
        "MiB) and backward's transient buffers are not included. MiB = 2^20 bytes. "
        + notes + f"Measured in {result['seconds']:.0f} s.",
        "",
        "Machine: " + "; ".join(f"{key} {value}" for key, value in info.items()) + ".",
    ]
    return "\n".join(lines) + "\n"


__all__ = ["benchmark_memory", "format_memory_table", "measure_activations", "parameter_bytes", "sample_config",
           "saved_bytes", "stage_setup", "write_samples"]
