"""One training loop for every stage (keypoint, detection, PRN).

The model contract follows torchvision's detection models: in train mode
``model(images, targets)`` returns a dict of scalar losses. The objective is ``losses["loss"]``
when the model provides that key (the other entries are then only logged), otherwise the sum
of all entries. ``(images, targets)`` is what ``collate_fn`` returns for a list of samples.

Evaluation is the stage's business: ``evaluate(model, epoch) -> {name: number}`` is called on
rank 0 only, with the unwrapped model in eval mode under ``torch.no_grad()``; the other ranks
wait (for up to ``dist_timeout_minutes``) and then receive the metrics, so the LR plateau and
the best checkpoint are decided identically everywhere.

Outputs in ``out_dir``: ``last.pt`` (every ``checkpoint_every`` epochs, after the last epoch,
whenever ``best.pt`` changes, and every ``checkpoint_every_steps``), ``best.pt`` (best
``metric``: a hard link to that ``last.pt`` where the file system allows, so it costs no copy),
``config.yaml``, ``log.txt``, ``metrics.jsonl`` and ``tb/``. A resumed run replays the epochs
after its checkpoint exactly and drops their records from ``metrics.jsonl`` first, so each
epoch is recorded once.
"""
from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from posenet.engine import checkpoint as ckpt
from posenet.engine.precision import AMP_DTYPES, autocast, resolve_amp
from posenet.engine.schedules import LRSchedule, build_scheduler
from posenet.engine.tb import RunLogger
from posenet.errors import ConfigError, PosenetError
from posenet.utils.io import RUN_CONFIG_NAME, write_text_atomic
from posenet.engine.distributed import (
    all_gather_objects,
    all_reduce_sum,
    barrier,
    broadcast_object,
    cleanup_distributed,
    init_distributed,
)
from posenet.engine.loader import (
    EpochSampler,
    LoadedBatch,
    SeededDataset,
    SkippingCollate,
    WorkerSeeder,
    derive_seed,
    seed_everything,
    to_device,
)


LAST, BEST = "last.pt", "best.pt"


class SkippedSampleWarning(UserWarning):
    """A training sample could not be loaded and was left out of its batch."""


class Trainer:
    """Trains ``model`` on ``train_dataset`` for ``epochs`` epochs; ``fit()`` runs it.

    Args (all keyword-only):
        model: in train mode ``model(images, targets)`` returns a dict of scalar losses.
        optimizer: an optimizer over the model's parameters, or a callable that builds one
            from the list of trainable parameters (``functools.partial(torch.optim.Adam, lr=1e-4)``).
        train_dataset: map-style dataset; a sample that raises ``DataError`` or is None is
            skipped, counted and reported once.
        epochs, batch_size: batch size per process (the global batch is ``batch_size * world``).
        out_dir: where checkpoints, logs and TensorBoard events go.
        evaluate: optional ``(model, epoch) -> dict`` of metrics (see the module docstring).
        collate_fn: list of samples -> ``(images, targets)``; torch's default_collate if None.
        num_workers, drop_last: DataLoader settings for training.
        scheduler: None, a name for :func:`build_scheduler` (options in ``scheduler_kw``;
            ``plateau`` monitors ``metric`` with ``metric_mode`` unless told otherwise), an
            :class:`LRSchedule`, or a callable ``(optimizer, steps_per_epoch) -> LRSchedule``.
        amp: None, "auto", "bf16" or "fp16" (autocast; fp16 adds a GradScaler; "auto" is bf16
            where the device runs it natively, else fp32; see ``posenet.engine.precision``).
        channels_last: train in the channels-last memory format (model and images).
        grad_clip: max global gradient norm (None: no clipping); unscaled first with fp16.
        log_every: steps between TensorBoard scalars (losses, lr, samples/s, grad norm).
        checkpoint_every: write ``last.pt`` every N epochs (and after the last, and when
            ``best.pt`` changes). A checkpoint of a large model takes a while to write; a run of
            many short epochs saves time with N > 1, and a crash then replays up to N - 1 epochs.
        checkpoint_every_steps: also write ``last.pt`` mid-epoch every N steps (0: off).
        eval_every: evaluate every N epochs (and after the last).
        metric, metric_mode: the epoch metric that picks ``best.pt`` ("max" for AP, "min" for
            a loss). Default: ``train_loss``.
        seed: seeds everything (``seed + rank`` for the model's own randomness) and the data order.
        device: None for ``cuda:LOCAL_RANK`` when available, else the CPU.
        resume: True continues from ``out_dir/last.pt`` when it exists; a path resumes from it.
        config: the resolved run config (DictConfig or dict): saved in ``out_dir`` and in
            every checkpoint.
        visualize, visualize_every: ``visualize(model, batch, losses) -> {name: image}``
            called on rank 0 every N steps; images are (C, H, W) or (N, C, H, W) grids.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | Callable[[list], torch.optim.Optimizer],
        train_dataset: Dataset,
        epochs: int,
        batch_size: int,
        out_dir: str | os.PathLike,
        evaluate: Callable[[nn.Module, int], Mapping[str, float]] | None = None,
        collate_fn: Callable | None = None,
        num_workers: int = 0,
        drop_last: bool = True,
        scheduler: str | LRSchedule | Callable | None = None,
        scheduler_kw: Mapping[str, Any] | None = None,
        amp: str | None = None,
        channels_last: bool = False,
        grad_clip: float | None = None,
        log_every: int = 20,
        checkpoint_every: int = 1,
        checkpoint_every_steps: int = 0,
        eval_every: int = 1,
        metric: str | None = None,
        metric_mode: str = "min",
        seed: int = 0,
        device: str | torch.device | None = None,
        resume: bool | str | os.PathLike = False,
        config: Any = None,
        visualize: Callable[[nn.Module, Any, Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]] | None = None,
        visualize_every: int = 0,
        find_unused_parameters: bool = False,
        tensorboard: bool = True,
        progress: bool = True,
        deterministic: bool = False,
        dist_timeout_minutes: float = 30.0,
    ):
        if metric_mode not in ("min", "max"):
            raise ConfigError(f"metric_mode must be 'min' or 'max', not {metric_mode!r}")
        minimums = {"epochs": (epochs, 1), "batch_size": (batch_size, 1), "log_every": (log_every, 1),
                    "eval_every": (eval_every, 1), "num_workers": (num_workers, 0), "checkpoint_every": (checkpoint_every, 1),
                    "checkpoint_every_steps": (checkpoint_every_steps, 0), "visualize_every": (visualize_every, 0)}
        for name, (value, low) in minimums.items():
            if int(value) < low:
                raise ConfigError(f"{name} must be at least {low}, got {value}")
        if grad_clip is not None and grad_clip <= 0:
            raise ConfigError(f"grad_clip must be positive or None, got {grad_clip}")

        self.epochs, self.batch_size, self.num_workers = int(epochs), int(batch_size), int(num_workers)
        self.out_dir = Path(out_dir)
        self.grad_clip = grad_clip
        self.log_every, self.eval_every = int(log_every), int(eval_every)
        self.checkpoint_every = int(checkpoint_every)
        self.checkpoint_every_steps = int(checkpoint_every_steps)
        self.metric = metric or "train_loss"
        self.metric_mode = metric_mode
        self.seed = int(seed)
        self.evaluate_fn = evaluate
        self.visualize_fn, self.visualize_every = visualize, int(visualize_every)

        self.dist = init_distributed(device, timeout_minutes=dist_timeout_minutes)
        self.device = self.dist.device
        try:
            self.amp = resolve_amp(amp, self.device)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.amp_dtype = AMP_DTYPES[self.amp]
        self.channels_last = bool(channels_last)
        seed_everything(self.seed + self.dist.rank, deterministic=deterministic)

        self.module = model.to(self.device)
        if self.channels_last:
            self.module.to(memory_format=torch.channels_last)
        if self.dist.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model: nn.Module = DistributedDataParallel(
                self.module, device_ids=ids, find_unused_parameters=find_unused_parameters
            )
        else:
            self.train_model = self.module
        if isinstance(optimizer, torch.optim.Optimizer):
            self.optimizer = optimizer
        else:
            params = [p for p in self.module.parameters() if p.requires_grad]
            if not params:
                raise ConfigError("the model has no trainable parameters (is everything frozen?)")
            self.optimizer = optimizer(params)

        self.train_dataset = train_dataset
        self.collate = SkippingCollate(collate_fn)
        self.sampler = EpochSampler(len(train_dataset), self.dist.world_size, self.dist.rank, shuffle=True, seed=self.seed)
        self.worker_seeder = WorkerSeeder(self.seed, self.dist.rank)
        # The loader draws its workers' base seed from this generator, never from the global one.
        self._loader_generator = torch.Generator()
        self.train_loader = DataLoader(
            SeededDataset(train_dataset, self.seed),
            batch_size=self.batch_size,
            sampler=self.sampler,
            num_workers=self.num_workers,
            collate_fn=self.collate,
            pin_memory=self.device.type == "cuda",
            drop_last=drop_last,
            worker_init_fn=self.worker_seeder if self.num_workers else None,
            generator=self._loader_generator,
        )
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"the training set ({len(train_dataset)} samples over {self.dist.world_size} process(es)) "
                f"holds less than one batch of {self.batch_size}"
            )
        self.schedule = self._build_schedule(scheduler, dict(scheduler_kw or {}))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")
        self.logger = RunLogger(self.out_dir, enabled=self.dist.is_main, tensorboard=tensorboard, progress=progress)

        self.epoch = 0  # epochs completed
        self.step_in_epoch = 0  # batches of the current epoch already consumed
        self.global_step = 0
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.history: list[dict] = []
        self._epoch_sums: dict[str, float] = {}
        self._warned: set[str] = set()
        self._code_version = ckpt.code_version()
        self.config = self._save_config(config)
        if resume:
            self._resume(resume)

    # ----------------------------------------------------------------------------- set-up

    def _build_schedule(self, scheduler, kw: dict) -> LRSchedule | None:
        if scheduler is None or isinstance(scheduler, LRSchedule):
            return scheduler
        if isinstance(scheduler, str):
            if scheduler.lower() == "plateau":
                kw.setdefault("mode", self.metric_mode)
            return build_scheduler(scheduler, self.optimizer, epochs=self.epochs, steps_per_epoch=self.steps_per_epoch, **kw)
        schedule = scheduler(self.optimizer, self.steps_per_epoch)
        if schedule is not None and not isinstance(schedule, LRSchedule):
            raise TypeError("a scheduler callable must return an LRSchedule (see posenet.engine.schedules)")
        return schedule

    def _save_config(self, config: Any) -> dict | None:
        if config is None:
            return None
        from omegaconf import DictConfig, OmegaConf

        if not isinstance(config, DictConfig):
            config = OmegaConf.create(dict(config))
        if self.dist.is_main:
            write_text_atomic(self.out_dir / RUN_CONFIG_NAME, OmegaConf.to_yaml(config, resolve=True))
            write_text_atomic(self.out_dir / "version.txt", self._code_version + "\n")
        return OmegaConf.to_container(config, resolve=True)

    # ----------------------------------------------------------------------------- loop

    def fit(self) -> list[dict]:
        """Train the remaining epochs; returns one record per epoch run by this call."""
        try:
            if self.epoch >= self.epochs:
                self.logger.line(f"nothing to do: {self.epoch} of {self.epochs} epochs already done")
            for epoch in range(self.epoch, self.epochs):
                record = self._train_epoch(epoch)
                start = time.perf_counter()
                metrics = self._evaluate(epoch)
                record.update(metrics or {})
                record["eval_s"] = round(time.perf_counter() - start, 3)
                value = self._metric_value(record, evaluated=metrics is not None)
                if self.schedule is not None:
                    self.schedule.step_epoch(value)
                improved = self._update_best(value, epoch + 1)
                self.epoch, self.step_in_epoch = epoch + 1, 0
                self._epoch_sums = {}
                # ``improved`` is the same on every rank (metrics are broadcast or all-reduced).
                if improved or self.epoch % self.checkpoint_every == 0 or self.epoch == self.epochs:
                    self._save(best=improved)
                self._report_epoch(record, improved)
                self.history.append(record)
            barrier()
        finally:
            self.close()
        return self.history

    def close(self) -> None:
        """Close the TensorBoard writer and the process group this trainer created."""
        self.logger.close()
        cleanup_distributed(self.dist)

    def _train_epoch(self, epoch: int) -> dict:
        skip = self.step_in_epoch
        self.sampler.set_epoch(epoch, skip * self.batch_size)
        self.worker_seeder.epoch = epoch
        self._loader_generator.manual_seed(derive_seed(self.seed, epoch, 0x10AD))
        self.train_model.train()
        sums = {k: torch.tensor(v, dtype=torch.float64) for k, v in self._epoch_sums.items()}
        window: dict[str, torch.Tensor] = {}
        window_start = time.perf_counter()
        epoch_start = time.perf_counter()
        samples_this_run = 0
        bar = self.logger.progress(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.epochs}", initial=skip)
        try:
            for batch in self.train_loader:
                self.step_in_epoch += 1
                self.global_step += 1
                stats = self._train_batch(batch)
                samples_this_run += batch.size
                for k, v in stats.items():
                    window[k] = window.get(k, 0) + v
                if self.global_step % self.log_every == 0:
                    self._log_window(window, time.perf_counter() - window_start, epoch, bar)
                    _accumulate(sums, window)
                    window, window_start = {}, time.perf_counter()
                if self.visualize_fn is not None and self.visualize_every and not self.global_step % self.visualize_every:
                    self._visualize(batch)
                bar.update(1)
                if (self.checkpoint_every_steps and self.global_step % self.checkpoint_every_steps == 0
                        and self.step_in_epoch < self.steps_per_epoch):
                    pending = dict(sums)
                    _accumulate(pending, window)
                    self._epoch_sums = {k: float(v) for k, v in pending.items()}
                    self._save(best=False)
        finally:
            bar.close()
        _accumulate(sums, window)
        return self._epoch_record(epoch, sums, time.perf_counter() - epoch_start, samples_this_run)

    def _train_batch(self, batch: LoadedBatch) -> dict[str, torch.Tensor]:
        """One optimizer step; returns detached per-step statistics to sum in a window."""
        stats = {
            "steps": torch.ones((), dtype=torch.float64),
            "samples": torch.tensor(float(batch.size), dtype=torch.float64),
            "bad_samples": torch.tensor(float(len(batch.bad)), dtype=torch.float64),
        }
        self._warn_bad(batch.bad)
        usable = batch.data is not None
        if self.dist.distributed:
            # Every rank must take part in each DDP step: skip it everywhere if one rank has no data.
            flag = torch.tensor([0.0 if usable else 1.0], device=self.device)
            usable = all_reduce_sum(flag).item() == 0
        if not usable:
            stats["skipped_batches"] = torch.ones((), dtype=torch.float64)
            return stats
        images, targets = _split_batch(batch.data)
        images, targets = to_device(images, self.device), to_device(targets, self.device)
        if self.channels_last and isinstance(images, torch.Tensor) and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            losses = self.train_model(images, targets)
        total, parts = _objective(losses)
        self.scaler.scale(total).backward()
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
            parts["grad_norm"] = norm.detach().float()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.schedule is not None:
            self.schedule.step_iteration()
        self._last_losses = parts
        # Kept on the device (no sync per step); summed and read at log steps only.
        stats.update({f"loss/{k}": v.double() for k, v in parts.items()})
        return stats

    def _autocast(self):
        return autocast(self.device, self.amp)

    def _warn_bad(self, bad: list) -> None:
        for index, message in bad:
            if message not in self._warned:
                self._warned.add(message)
                warnings.warn(f"skipping a bad training sample (index {index}): {message}", SkippedSampleWarning, stacklevel=2)

    def _visualize(self, batch: LoadedBatch) -> None:
        if not self.dist.is_main or batch.data is None:
            return
        try:
            with torch.no_grad():
                images = self.visualize_fn(self.module, to_device(batch.data, self.device), getattr(self, "_last_losses", {}))
            if images:
                self.logger.images(images, self.global_step)
        finally:
            self.module.train()

    # ----------------------------------------------------------------------------- metrics

    def _reduced(self, sums: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Sum the statistics over ranks (one collective); every rank must call this."""
        names = sorted(sums)
        if not names:
            return {}
        values = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64).to(self.device) for k in names])
        values = all_reduce_sum(values).cpu().tolist()
        return dict(zip(names, values))

    def _log_window(self, window: Mapping[str, torch.Tensor], elapsed: float, epoch: int, bar) -> None:
        total = self._reduced(window)
        world = self.dist.world_size
        steps = max(1.0, (total.get("steps", 0.0) - total.get("skipped_batches", 0.0)) / world)
        losses = {k[len("loss/"):]: v / world / steps for k, v in total.items() if k.startswith("loss/")}
        self._check_finite(losses.get("loss"), epoch)
        scalars = {f"train/{k}": v for k, v in losses.items()}
        scalars.update(self._lr_scalars())
        scalars["train/samples_per_s"] = total.get("samples", 0.0) / max(elapsed, 1e-9)
        self.logger.scalars(scalars, self.global_step)
        if "loss" in losses:
            bar.set_postfix(loss=f"{losses['loss']:.4g}", refresh=False)

    def _lr_scalars(self) -> dict[str, float]:
        groups = self.optimizer.param_groups
        if len(groups) == 1:
            return {"train/lr": groups[0]["lr"]}
        return {f"train/lr/group{i}": g["lr"] for i, g in enumerate(groups)}

    def _check_finite(self, loss: float | None, epoch: int) -> None:
        if loss is None or math.isfinite(loss):
            return
        if self.amp == "fp16":
            # The GradScaler skips such steps; only persistent overflow would matter.
            return
        raise PosenetError(
            f"training loss became {loss} at epoch {epoch + 1}, step {self.global_step}; the last good "
            f"checkpoint is {self.out_dir / LAST} (try a lower learning rate or grad_clip)"
        )

    def _epoch_record(self, epoch: int, sums: Mapping[str, torch.Tensor], elapsed: float, samples_this_run: int) -> dict:
        total = self._reduced(sums)
        world = self.dist.world_size
        steps = max(1.0, (total.get("steps", 0.0) - total.get("skipped_batches", 0.0)) / world)
        record: dict[str, Any] = {"epoch": epoch + 1, "global_step": self.global_step}
        for k, v in total.items():
            if k.startswith("loss/"):
                name = k[len("loss/"):]
                record["train_loss" if name == "loss" else f"train_{name}"] = v / world / steps
        self._check_finite(record.get("train_loss"), epoch)
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        record["bad_samples"] = int(total.get("bad_samples", 0))
        record["skipped_batches"] = int(total.get("skipped_batches", 0) / world)
        record["samples_per_s"] = samples_this_run * world / max(elapsed, 1e-9)
        record["time_s"] = round(elapsed, 3)
        return record

    def _evaluate(self, epoch: int) -> dict[str, float] | None:
        """The validation metrics of this epoch (the same on every rank), None if not its turn."""
        done = epoch + 1
        if self.evaluate_fn is None or (done % self.eval_every and done != self.epochs):
            return None
        metrics, failure = None, None
        if self.dist.is_main:
            try:
                metrics = self._evaluate_here(done)
            except Exception as e:
                # Tell the waiting ranks before raising, or they would wait for the timeout.
                failure = e
        shared = broadcast_object(metrics if failure is None else _EvaluationFailed(f"{type(failure).__name__}: {failure}"))
        if failure is not None:
            raise failure
        if isinstance(shared, _EvaluationFailed):
            raise PosenetError(f"evaluation failed on rank 0: {shared.message}")
        return shared

    def _evaluate_here(self, done: int) -> dict[str, float]:
        self.module.eval()
        try:
            with torch.no_grad():
                result = self.evaluate_fn(self.module, done)
        finally:
            self.module.train()
        return _as_metrics(result)

    def _metric_value(self, record: Mapping[str, Any], evaluated: bool) -> float | None:
        """The monitored metric this epoch; None on epochs without evaluation."""
        if self.metric in record:
            return float(record[self.metric])
        # Validation metrics exist only on evaluated epochs (eval_every); an epoch whose batches
        # were all skipped has no training metrics: neither is an error.
        if evaluated or (self.metric.startswith("train_") and "train_loss" in record):
            known = ", ".join(sorted(k for k in record if k not in ("epoch", "global_step")))
            raise ConfigError(f"metric {self.metric!r} (used to pick best.pt) is not among the epoch's metrics: {known}")
        return None

    def _update_best(self, value: float | None, epoch: int) -> bool:
        if value is None or not math.isfinite(value):
            return False
        if self.best_metric is None:
            better = True
        else:
            better = value > self.best_metric if self.metric_mode == "max" else value < self.best_metric
        if better:
            self.best_metric, self.best_epoch = value, epoch
        return better

    def _report_epoch(self, record: dict, improved: bool) -> None:
        record["best_metric"] = self.best_metric
        record["best_epoch"] = self.best_epoch
        scalars = {k: v for k, v in record.items() if k not in ("epoch", "global_step", "best_epoch", "best_metric")}
        self.logger.scalars({f"epoch/{k}": v for k, v in scalars.items()}, record["epoch"])
        self.logger.record(record)
        self.logger.line(self._epoch_line(record, improved))
        self.logger.flush()

    def _epoch_line(self, record: Mapping[str, Any], improved: bool) -> str:
        parts = [f"epoch {record['epoch']}/{self.epochs}"]
        if "train_loss" in record:
            detail = " ".join(f"{k[len('train_'):]} {v:.4g}" for k, v in record.items()
                              if k.startswith("train_") and k != "train_loss" and k != "train_grad_norm")
            parts.append(f"loss {record['train_loss']:.4g}" + (f" ({detail})" if detail else ""))
        parts.append(f"lr {record['lr']:.3g}")
        skip = {"epoch", "global_step", "lr", "bad_samples", "skipped_batches", "samples_per_s", "time_s", "eval_s",
                "best_metric", "best_epoch"}
        evals = [f"{k} {v:.4g}" for k, v in record.items() if k not in skip and not k.startswith("train_")]
        if evals:
            parts.append(" ".join(evals))
        if self.best_metric is not None:
            parts.append(f"best {self.metric} {self.best_metric:.4g} (epoch {self.best_epoch})" + (" *" if improved else ""))
        parts.append(f"{record['samples_per_s']:.1f} samples/s, {_duration(record['time_s'] + record.get('eval_s', 0))}")
        if record["bad_samples"] or record["skipped_batches"]:
            parts.append(f"skipped {record['bad_samples']} bad samples, {record['skipped_batches']} empty batches")
        return " | ".join(parts)

    # ----------------------------------------------------------------------------- checkpoints

    def state_dict(self, per_rank: list | None = None) -> dict:
        """The training checkpoint (``per_rank``: every rank's RNG and partial epoch sums)."""
        per_rank = per_rank or [{"rng": ckpt.rng_state(), "epoch_sums": dict(self._epoch_sums)}]
        return {
            "format": ckpt.FORMAT,
            "format_version": ckpt.FORMAT_VERSION,
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict() if self.schedule is not None else None,
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "metric": self.metric,
            "metric_mode": self.metric_mode,
            "rng": [r["rng"] for r in per_rank],
            "epoch_sums": [r["epoch_sums"] for r in per_rank],
            "data": {
                "seed": self.seed,
                "world_size": self.dist.world_size,
                "batch_size": self.batch_size,
                "steps_per_epoch": self.steps_per_epoch,
                "dataset_len": len(self.train_dataset),
            },
            "config": self.config,
            "code_version": self._code_version,
            "torch_version": str(torch.__version__),
        }

    def _save(self, best: bool) -> None:
        # Every rank contributes its generator states, so a resumed run continues each rank exactly.
        per_rank = all_gather_objects({"rng": ckpt.rng_state(), "epoch_sums": dict(self._epoch_sums)})
        if self.dist.is_main:
            last = ckpt.save_atomic(self.state_dict(per_rank), self.out_dir / LAST)
            if best:
                ckpt.copy_atomic(last, self.out_dir / BEST)
        barrier()

    def _resume(self, resume: bool | str | os.PathLike) -> None:
        path = self.out_dir / LAST if resume is True else Path(resume)
        if not path.is_file():
            if resume is True:
                self.logger.line(f"no checkpoint at {path}: starting from scratch")
                return
            raise PosenetError(f"checkpoint to resume from not found: {path}")
        self.load_state_dict(ckpt.load_checkpoint(path, map_location=self.device), source=path)
        where = f"epoch {self.epoch}" + (f", step {self.step_in_epoch} of epoch {self.epoch + 1}" if self.step_in_epoch else "")
        replayed = self.logger.forget_records_after(self.epoch)
        again = f"; the {replayed} epoch(s) recorded after it run again" if replayed else ""
        self.logger.line(f"resumed from {path} ({where}, global step {self.global_step}){again}")

    def load_state_dict(self, state: Mapping[str, Any], source: str | os.PathLike = "<checkpoint>") -> None:
        """Restore a training checkpoint written by :meth:`state_dict`."""
        if state.get("format") != ckpt.FORMAT:
            raise PosenetError(f"{source} is not a training checkpoint of this project (no 'format' entry); "
                               "cannot resume from it")
        ckpt.load_model_state(self.module, state["model"], source)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as e:
            raise PosenetError(f"checkpoint {source}: the optimizer state does not fit this optimizer: {e}") from None
        if (state["scheduler"] is None) != (self.schedule is None):
            which = "without" if state["scheduler"] is None else "with"
            raise PosenetError(f"checkpoint {source} was written {which} an lr schedule; resume with the same setting")
        if self.schedule is not None:
            if state["scheduler"].get("interval") != self.schedule.interval:
                raise PosenetError(f"checkpoint {source} used another lr schedule; resume with the same one")
            self.schedule.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        self.step_in_epoch = int(state["step_in_epoch"])
        self.best_metric, self.best_epoch = state["best_metric"], state["best_epoch"]
        if state.get("metric") not in (None, self.metric) or state.get("metric_mode") not in (None, self.metric_mode):
            self.logger.line(f"note: {source} tracked best {state.get('metric')} ({state.get('metric_mode')}); "
                             f"now tracking {self.metric} ({self.metric_mode}); best metric reset")
            self.best_metric = self.best_epoch = None
        data = state["data"]
        rng, sums = state["rng"], state["epoch_sums"]
        same_layout = (data["world_size"] == self.dist.world_size and data["batch_size"] == self.batch_size
                       and data["dataset_len"] == len(self.train_dataset) and data["seed"] == self.seed)
        if len(rng) == self.dist.world_size:
            ckpt.set_rng_state(rng[self.dist.rank])
            self._epoch_sums = dict(sums[self.dist.rank])
        else:
            ckpt.set_rng_state(rng[0])
        if not same_layout:
            warnings.warn(f"resuming {source} with another seed, dataset size, batch size or number of processes: "
                          "training continues, but not exactly as the original run would have", stacklevel=2)
            if self.step_in_epoch:
                consumed = self.step_in_epoch * data["batch_size"] * data["world_size"]
                self.step_in_epoch = min(consumed // (self.batch_size * self.dist.world_size), self.steps_per_epoch)
                self._epoch_sums = {}


class _EvaluationFailed(NamedTuple):
    message: str


def _objective(losses: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss to minimise and every logged entry (including ``loss``) of a model's output."""
    if not isinstance(losses, Mapping) or not losses:
        raise TypeError(f"in train mode the model must return a non-empty dict of scalar losses, "
                        f"got {type(losses).__name__}")
    parts = {}
    for name, value in losses.items():
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            got = getattr(value, "shape", type(value).__name__)
            raise TypeError(f"loss {name!r} must be a scalar tensor, got {got}")
        parts[name] = value.float().reshape(())
    total = parts["loss"] if "loss" in parts else sum(parts.values())
    logged = {k: v.detach() for k, v in parts.items()}
    logged["loss"] = total.detach()
    return total, logged


def _split_batch(data: Any) -> tuple[Any, Any]:
    if isinstance(data, (list, tuple)) and len(data) == 2:
        return data[0], data[1]
    raise TypeError(f"collate_fn must return (images, targets), got {type(data).__name__}")


def _as_metrics(result: Any) -> dict[str, float]:
    if not isinstance(result, Mapping):
        raise TypeError(f"evaluate(model, epoch) must return a dict of metrics, got {type(result).__name__}")
    out = {}
    for k, v in result.items():
        if isinstance(v, torch.Tensor):
            v = v.item()
        out[str(k)] = float(v)
    return out


def _accumulate(into: dict, more: Mapping) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + torch.as_tensor(v, dtype=torch.float64).cpu()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


