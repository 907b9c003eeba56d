"""Optimizers and learning-rate schedules, built by name from config values.

A schedule is a torch scheduler plus when the trainer steps it: ``plateau`` and ``step`` once
per epoch (``plateau`` on the validation metric), ``cosine`` once per optimizer step, with a
linear warm-up. Everything a schedule needs to resume lives in its ``state_dict``.
"""
from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR, MultiStepLR, ReduceLROnPlateau

from posenet.errors import ConfigError

SCHEDULES = ("none", "plateau", "step", "cosine")
OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass
class LRSchedule:
    """A torch scheduler and its stepping rule (``interval`` is "step" or "epoch")."""

    scheduler: object
    interval: str = "epoch"

    @property
    def needs_metric(self) -> bool:
        return isinstance(self.scheduler, ReduceLROnPlateau)

    def step_iteration(self) -> None:
        if self.interval == "step":
            with _quiet_order_warning():
                self.scheduler.step()

    def step_epoch(self, metric: float | None = None) -> None:
        """Step after an epoch; a plateau schedule without a metric this epoch stays put."""
        if self.interval != "epoch":
            return
        if self.needs_metric:
            if metric is not None:
                self.scheduler.step(metric)
        else:
            with _quiet_order_warning():
                self.scheduler.step()

    def state_dict(self) -> dict:
        return {"interval": self.interval, "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state["scheduler"])


class WarmupCosine:
    """LR factor of step ``t``: linear from ``warmup_factor`` to 1 over ``warmup_steps``, then a
    half cosine down to ``min_lr_ratio`` at ``total_steps`` (and flat after it).

    A class rather than a closure so that LambdaLR saves its parameters with its state.
    """

    def __init__(self, total_steps: int, warmup_steps: int = 0, warmup_factor: float = 0.001, min_lr_ratio: float = 0.0):
        if total_steps < 1:
            raise ConfigError(f"cosine schedule: total_steps must be at least 1, got {total_steps}")
        if not 0 <= warmup_steps <= total_steps:
            raise ConfigError(f"cosine schedule: warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.warmup_factor = float(warmup_factor)
        self.min_lr_ratio = float(min_lr_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_factor + (1.0 - self.warmup_factor) * step / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    **kw,
) -> LRSchedule | None:
    """The schedule ``name`` (one of :data:`SCHEDULES`) for ``optimizer``; None for "none".

    - ``plateau``: ``mode`` ("min"/"max", match the monitored metric), ``factor`` (0.1),
      ``patience`` (epochs, 10), ``threshold`` (1e-4), ``cooldown`` (0), ``min_lr`` (0).
    - ``step``: ``milestones`` (epochs), ``gamma`` (0.1).
    - ``cosine``: ``warmup_steps`` or ``warmup_epochs`` (0), ``warmup_factor`` (0.001),
      ``min_lr_ratio`` (0), ``total_steps`` (default ``epochs * steps_per_epoch``).
    """
    name = (name or "none").lower()
    try:
        if name == "none":
            _no_extra(name, kw)
            return None
        if name == "plateau":
            args = dict(mode="min", factor=0.1, patience=10, threshold=1e-4, cooldown=0, min_lr=0.0)
            args.update(_known(name, kw, args))
            return LRSchedule(ReduceLROnPlateau(optimizer, **args), interval="epoch")
        if name == "step":
            args = dict(milestones=(), gamma=0.1)
            args.update(_known(name, kw, args))
            milestones = sorted(int(m) for m in args["milestones"])
            return LRSchedule(MultiStepLR(optimizer, milestones=milestones, gamma=float(args["gamma"])), interval="epoch")
        if name == "cosine":
            args = dict(warmup_steps=None, warmup_epochs=0, warmup_factor=0.001, min_lr_ratio=0.0, total_steps=None)
            args.update(_known(name, kw, args))
            total = args["total_steps"]
            if total is None:
                if not epochs or not steps_per_epoch:
                    raise ConfigError("cosine schedule: needs total_steps, or epochs and steps_per_epoch")
                total = epochs * steps_per_epoch
            warmup = args["warmup_steps"]
            if warmup is None:
                warmup = int(round(float(args["warmup_epochs"]) * (steps_per_epoch or 0)))
            fn = WarmupCosine(total, warmup, args["warmup_factor"], args["min_lr_ratio"])
            return LRSchedule(LambdaLR(optimizer, fn), interval="step")
    except ValueError as e:
        raise ConfigError(f"{name} schedule: {e}") from None
    raise ConfigError(f"unknown lr schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


def build_optimizer(
    name: str,
    params: Iterable,
    *,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = False,
    betas: Sequence[float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """``sgd`` (momentum, nesterov), ``adam`` or ``adamw`` (betas) over ``params``.

    Adam and AdamW use torch's fused kernels where every parameter allows it (floating point,
    on the CPU or a CUDA GPU): the same update up to float rounding, one kernel per step instead
    of a dozen passes over the weights (the 17 M-parameter PRN's step: 130 ms -> 15 ms on two
    CPU cores)."""
    name = name.lower()
    params = list(params)
    if not params:
        raise ConfigError("the optimizer has no parameters to train (is everything frozen?)")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    fused = {"fused": True} if _fusable(params) else {}
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, **fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, **fused)
    raise ConfigError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def _fusable(params: list) -> bool:
    """Whether torch's fused Adam kernels take every parameter (plain tensors or param groups)."""
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    return all(isinstance(p, torch.Tensor) and p.is_floating_point() and p.device.type in ("cpu", "cuda")
               for p in tensors)


@contextmanager
def _quiet_order_warning():
    # torch warns when no optimizer step preceded a schedule step; the trainer skips optimizer
    # steps on purpose (fp16 overflow, a batch of bad samples), so the warning is noise.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
        yield


def _known(name: str, kw: dict, allowed: dict) -> dict:
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise ConfigError(f"{name} schedule: unknown option(s) {', '.join(unknown)}; known: {', '.join(allowed)}")
    return kw


def _no_extra(name: str, kw: dict) -> None:
    _known(name, kw, {})
