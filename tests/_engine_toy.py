"""A toy regression model and dataset for the engine tests (importable by spawned processes).

Run as a script (alone, or under torchrun) it trains the toy model and saves the final weights:
``torchrun --nproc_per_node 2 tests/_engine_toy.py OUT_DIR BATCH_SIZE EPOCHS [dropout=P] [resume=1]``;
with ``split_at=E`` it trains OUT_DIR/straight for EPOCHS epochs, then OUT_DIR/split for E epochs and,
after scrambling every random generator, resumes OUT_DIR/split to EPOCHS (``resume_in_process``).
For the kill -9 tests: ``every=N`` writes a step checkpoint every N steps; ``hang_at_step=S``
stops at global step S, and ``hang_in_save=N`` halfway through writing the N-th checkpoint file;
either touches ``OUT_DIR/hanging`` and then waits to be killed.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from posenet.errors import DataError

TRUE_W = torch.linspace(-1.0, 1.0, 8)


class ToyRegression(Dataset):
    """y = x . w + 0.5 with mildly "augmented" inputs: random draws from Python, numpy and
    torch, so the data order and augmentation seeding is exercised. Indices in ``bad`` raise
    DataError, indices in ``missing`` return None."""

    def __init__(self, n: int = 64, bad=(), missing=()):
        g = torch.Generator().manual_seed(1234)
        self.x = torch.randn(n, 8, generator=g)
        self.y = self.x @ TRUE_W + 0.5
        self.bad, self.missing = set(bad), set(missing)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if i in self.bad:
            raise DataError(f"/data/toy/{i:04d}.jpg: cannot decode image")
        if i in self.missing:
            return None
        jitter = 0.01 * (random.random() - 0.5) + 0.01 * float(np.random.randn()) + 0.01 * float(torch.randn(()))
        return self.x[i] + jitter, self.y[i].reshape(1)


class ToyModel(nn.Module):
    """Linear regression with an optional dropout; returns two losses in train mode."""

    def __init__(self, dropout: float = 0.0, width: int = 8):
        super().__init__()
        self.hidden = nn.Linear(8, width)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(width, 1)

    def forward(self, x, y=None):
        pred = self.head(self.drop(self.hidden(x)))
        if self.training:
            return {"mse": ((pred.float() - y) ** 2).mean(), "l1": 0.1 * (pred.float() - y).abs().mean()}
        return pred


def make_model(seed: int = 0, **kw) -> ToyModel:
    torch.manual_seed(seed)
    return ToyModel(**kw)


def evaluate(model, epoch) -> dict:
    data = ToyRegression(16)
    return {"neg_mse": -float(((model(data.x).squeeze(1) - data.y) ** 2).mean())}


def _hang(out_dir: str) -> None:
    import time

    (Path(out_dir) / "hanging").touch()
    while True:
        time.sleep(1)


def main(out_dir: str, batch_size: int, epochs: int, dropout: float = 0.0, resume: bool = False,
         every: int = 0, hang_at_step: int = 0, hang_in_save: int = 0) -> None:
    from posenet.engine import Trainer
    from posenet.engine import checkpoint

    if hang_in_save:
        save, calls = torch.save, []

        def half_then_hang(obj, f, *args, **kw):
            calls.append(1)
            if len(calls) < hang_in_save:
                return save(obj, f, *args, **kw)
            import io

            data = io.BytesIO()
            save(obj, data)
            f.write(data.getvalue()[: len(data.getvalue()) // 2])
            f.flush()
            _hang(out_dir)

        checkpoint.torch.save = half_then_hang

    torch.set_num_threads(1)
    trainer = Trainer(
        model=make_model(dropout=dropout),
        optimizer=lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.5),
        train_dataset=ToyRegression(64),
        evaluate=evaluate,
        metric="neg_mse",
        metric_mode="max",
        epochs=epochs,
        batch_size=batch_size,
        out_dir=out_dir,
        seed=3,
        resume=resume,
        checkpoint_every_steps=every,
        progress=False,
        tensorboard=False,
    )
    if hang_at_step:
        train_batch = trainer._train_batch

        def hanging(batch):
            if trainer.global_step == hang_at_step:
                _hang(out_dir)
            return train_batch(batch)

        trainer._train_batch = hanging
    trainer.fit()
    if trainer.dist.rank == 0:
        torch.save(trainer.module.state_dict(), Path(out_dir) / "final.pt")


def resume_in_process(out_dir: str, batch_size: int, epochs: int, split_at: int, dropout: float = 0.0) -> None:
    """An uninterrupted run (``straight``) and one stopped after ``split_at`` epochs and resumed
    (``split``), in the same processes: between the two halves every generator (Python, numpy,
    torch) is reseeded differently on each rank, so only what the checkpoint holds can make the
    resumed run continue the interrupted one. (Resuming in a new process after kill -9 is what
    test_engine's sigkill tests check; this is the per-rank state under torchrun.)"""
    import os

    import torch.distributed as dist

    # one process group for the three trainers (a group destroyed and made again in the same
    # processes can fail to connect under gloo)
    group = "WORLD_SIZE" in os.environ and not dist.is_initialized()
    if group:
        dist.init_process_group("gloo")
    try:
        main(str(Path(out_dir) / "straight"), batch_size, epochs, dropout)
        main(str(Path(out_dir) / "split"), batch_size, split_at, dropout)
        rank = dist.get_rank() if dist.is_initialized() else 0
        random.seed(1000 + rank)
        np.random.seed(2000 + rank)
        torch.manual_seed(3000 + rank)
        main(str(Path(out_dir) / "split"), batch_size, epochs, dropout, resume=True)
        if group:
            # every rank done (rank 0 wrote final.pt after the others left fit) before any tears
            # the group down: a gloo peer that destroys its side while the other still writes
            # its last file can abort the process at exit
            dist.barrier()
    finally:
        if group:
            dist.destroy_process_group()


if __name__ == "__main__":
    options = dict(arg.split("=") for arg in sys.argv[4:])
    if "split_at" in options:
        resume_in_process(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(options["split_at"]),
                          float(options.get("dropout", 0)))
        sys.exit(0)
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(options.get("dropout", 0)), options.get("resume") == "1",
         int(options.get("every", 0)), int(options.get("hang_at_step", 0)), int(options.get("hang_in_save", 0)))
