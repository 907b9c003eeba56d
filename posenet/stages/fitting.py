"""What every stage's ``train`` shares: the run directory, the seed, the description of what is
trained, and the trainer built from the config and run."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from omegaconf import DictConfig

from posenet.config import build
from posenet.data.dataset import collate
from posenet.engine.loader import seed_everything


def stage_dir(cfg: DictConfig, stage: str, out_dir: str | Path | None = None) -> Path:
    """``out_dir``, or the stage's folder of ``output_dir``."""
    return Path(out_dir or Path(cfg.output_dir) / stage)


def is_resuming(out_dir: Path, resume: bool) -> bool:
    """Whether a run resumes: asked to, and its last.pt exists."""
    return resume and (out_dir / "last.pt").is_file()


def seeded(cfg: DictConfig, make_model: Callable):
    """``make_model()`` after seeding every generator with ``cfg.seed``: the initial weights are
    part of the run (same seed, same run)."""
    seed_everything(cfg.seed)
    return make_model()


def trainable(model) -> str:
    """The frozen parts and the trainable parameter count, for a stage's opening line."""
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = ", ".join(sorted(getattr(model, "frozen", ()))) or "nothing"
    return f"frozen: {frozen} ({count / 1e6:.2f} M trainable parameters)"


def fit(cfg: DictConfig, model, train_set, evaluator, out_dir: Path, resume: bool, *, collate_fn=collate,
        visualize=None) -> list[dict]:
    """Train ``model`` on ``train_set`` with the ``train`` section of ``cfg`` (the trainer
    evaluates with ``evaluator``); returns the per-epoch records."""
    trainer = build.trainer(cfg, model=model, train_dataset=train_set, collate_fn=collate_fn, evaluate=evaluator,
                            visualize=visualize, out_dir=out_dir, resume=resume)
    return trainer.fit()


__all__ = ["fit", "is_resuming", "seeded", "stage_dir", "trainable"]
