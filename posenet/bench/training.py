"""Training-speed benchmark (``scripts/benchmark.py train``): samples per second of a config's
keypoint-stage training steps, data loading included, for fp32 and each speed option.

Each variant builds the real training objects (dataset, model, :class:`Trainer` with its
loader, autocast and memory format) from the config with the variant's overrides, runs
``warmup`` steps, then times ``steps`` steps of ``Trainer._train_batch`` on batches drawn from
the trainer's own loader (the steady state: workers started, caches warm). A variant the
device cannot run fast (bf16 autocast without native bf16) is timed on fewer steps and says so.
"""
from __future__ import annotations

import tempfile
import time
from typing import Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from posenet.config import build
from posenet.data.dataset import collate
from posenet.engine.loader import seed_everything
from posenet.engine.precision import native_bf16

# (name, overrides): what each row changes from the config's own train section.
VARIANTS = (
    ("fp32", {"amp": "none", "channels_last": False}),
    ("fp32, channels_last", {"amp": "none", "channels_last": True}),
    ("bf16 autocast", {"amp": "bf16", "channels_last": False}),
    ("bf16 autocast, channels_last", {"amp": "bf16", "channels_last": True}),
)


def _variants(cfg: DictConfig, threads: Sequence[int]) -> list[tuple[str, dict, int | None]]:
    t = cfg.train
    rows = [(name, dict(kw), None) for name, kw in VARIANTS]
    for w in sorted({0, 2, int(t.num_workers)}):
        if w != int(t.num_workers):
            rows.append((f"fp32, {w} data workers", {"amp": "none", "channels_last": False, "num_workers": w}, None))
    for n in threads:
        if n != torch.get_num_threads():
            rows.append((f"fp32, {n} torch threads", {"amp": "none", "channels_last": False}, n))
    rows.append(("quickstart setting (the config's train section)", {}, None))
    return rows


def time_training(cfg: DictConfig, family, steps: int = 10, warmup: int = 3, threads: int | None = None) -> dict:
    """Samples per second of ``steps`` training steps of ``cfg``'s keypoint stage (the network
    of ``family``, a ``posenet.families.Family``; after ``warmup`` steps), data loading included."""

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        train_set = build.keypoint_dataset(cfg, cfg.data.train_split, train=True, **family.targets(cfg))
        seed_everything(cfg.seed)
        model = family.network(cfg)
        with tempfile.TemporaryDirectory() as out:
            trainer = build.trainer(OmegaConf.merge(cfg, {"train": {"epochs": 1}}), model=model, train_dataset=train_set,
                                    collate_fn=collate, out_dir=out, tensorboard=False, progress=False)
            trainer.train_model.train()
            batches = _batches(trainer)
            for _ in range(warmup):
                trainer._train_batch(next(batches))
            samples = 0
            start = time.perf_counter()
            for _ in range(steps):
                batch = next(batches)
                trainer._train_batch(batch)
                samples += batch.size
            elapsed = time.perf_counter() - start
            del batches
        return {"samples_per_s": samples / elapsed, "s_per_step": elapsed / steps, "steps": steps,
                "batch_size": trainer.batch_size, "amp": trainer.amp or "fp32",
                "channels_last": trainer.channels_last, "num_workers": trainer.num_workers,
                "threads": torch.get_num_threads()}
    finally:
        torch.set_num_threads(previous)


def _batches(trainer):
    """The trainer's batches, epoch after epoch (a small dataset may hold fewer steps than timed)."""
    epoch = 0
    while True:
        trainer.sampler.set_epoch(epoch)
        yield from trainer.train_loader
        epoch += 1


def benchmark_training(cfg: DictConfig, family, steps: int = 10, warmup: int = 3, threads: Sequence[int] = (1,),
                       log=print) -> dict:
    """Every variant of ``cfg`` (see ``VARIANTS``) training ``family``'s network; returns rows and
    the quickstart's speed-up."""
    native = native_bf16("cpu")
    # The process's first training steps pay one-off costs (allocator, oneDNN primitive caches,
    # worker start-up) that would land on the first row: an untimed run of the baseline first.
    time_training(OmegaConf.merge(cfg, {"train": dict(VARIANTS[0][1])}), family, steps=2, warmup=warmup)
    rows = []
    for name, overrides, n_threads in _variants(cfg, threads):
        variant = OmegaConf.merge(cfg, {"train": overrides}) if overrides else cfg
        slow = variant.train.amp == "bf16" and not native
        n, w = (2, 1) if slow else (steps, warmup)  # emulated bf16 is ~25x slower: a glimpse is enough
        log(f"benchmark train: {name} ({n} steps after {w} warm-up steps)")
        result = time_training(variant, family, steps=n, warmup=w, threads=n_threads)
        rows.append({"name": name, **result, "note": "bf16 not native on this CPU" if slow else ""})
    base = rows[0]["samples_per_s"]
    for row in rows:
        row["speedup"] = row["samples_per_s"] / base
    return {"rows": rows, "native_bf16": native, "fp32": base, "quickstart": rows[-1]}


def format_training_table(result: dict, cfg: DictConfig, config_name: str, info: dict) -> str:
    k, t = cfg.keypoint, cfg.train
    q = result["quickstart"]
    lines = [
        "### Training speed",
        "",
        "Machine: " + "; ".join(f"{key} {value}" for key, value in info.items()) + ".",
        "",
        f"Protocol: `{config_name}`, keypoint stage, batch {t.batch_size} of "
        f"{'augmented ' + str(k.input_size) + 'x' + str(k.input_size) + ' crops' if k.augment else str(k.val_input_size) + ' px fit-and-pad inputs'}"
        f" with all targets, data loading included ({t.num_workers} loader workers unless stated); "
        "steady state: samples per second over timed steps after warm-up steps, each variant a fresh model.",
        "",
        "| variant | amp | channels_last | workers | threads | s/step | samples/s | vs fp32 | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['name']} | {r['amp']} | {'yes' if r['channels_last'] else 'no'} | {r['num_workers']} | "
                     f"{r['threads']} | {r['s_per_step']:.3f} | {r['samples_per_s']:.1f} | {r['speedup']:.2f}x | "
                     f"{r['note']} |")
    lines += ["", f"quickstart setting: {q['samples_per_s']:.1f} samples/s, {q['speedup']:.2f}× fp32"]
    return "\n".join(lines) + "\n"


__all__ = ["VARIANTS", "benchmark_training", "format_training_table", "time_training"]
