"""What a run reports: TensorBoard scalars and images, a progress bar, and one line per epoch.

Only rank 0 reports; on other ranks a ``RunLogger`` is built with ``enabled=False`` and every
method is a no-op. Files under ``out_dir``: ``tb/`` (TensorBoard events), ``log.txt`` (the
per-epoch lines and notices, appended across resumes) and ``metrics.jsonl`` (one JSON record
per epoch, for scripts and tests).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Mapping

import torch
from tqdm import tqdm

from posenet.utils.io import write_text_atomic


class RunLogger:
    def __init__(self, out_dir: str | os.PathLike, enabled: bool = True, tensorboard: bool = True, progress: bool = True):
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self.progress_enabled = enabled and progress
        self._tensorboard = enabled and tensorboard
        self._writer = None
        if enabled:
            self.out_dir.mkdir(parents=True, exist_ok=True)

    @property
    def writer(self):
        if self._writer is None and self._tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when used

            self._writer = SummaryWriter(log_dir=str(self.out_dir / "tb"))
        return self._writer

    def scalars(self, values: Mapping[str, float], step: int, prefix: str = "") -> None:
        if not self._tensorboard:
            return
        for name, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{prefix}{name}", value, global_step=step)

    def images(self, images: Mapping[str, torch.Tensor], step: int, prefix: str = "vis/") -> None:
        """Log each (C, H, W) image, or (N, C, H, W) batch as one grid."""
        if not self._tensorboard:
            return
        from torchvision.utils import make_grid

        for name, img in images.items():
            img = torch.as_tensor(img).detach().cpu()
            if img.dim() == 4:
                img = make_grid(img, nrow=int(math.ceil(math.sqrt(img.shape[0]))))
            elif img.dim() == 2:
                img = img[None]
            self.writer.add_image(f"{prefix}{name}", img, global_step=step)

    def line(self, text: str) -> None:
        """Print ``text`` (without breaking a progress bar) and append it to ``log.txt``."""
        if not self.enabled:
            return
        tqdm.write(text)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.out_dir / "log.txt", "a") as f:
            f.write(f"{stamp} {text}\n")

    def record(self, record: Mapping) -> None:
        if not self.enabled:
            return
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(dict(record), sort_keys=True) + "\n")

    def forget_records_after(self, epoch: int) -> int:
        """Drop the ``metrics.jsonl`` records of epochs after ``epoch`` (a resumed run replays
        them); returns how many were dropped."""
        path = self.out_dir / "metrics.jsonl"
        if not self.enabled or not path.is_file():
            return 0
        lines = path.read_text().splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line).get("epoch", 0) <= epoch]
        if len(kept) != len(lines):
            write_text_atomic(path, "".join(line + "\n" for line in kept))
        return len(lines) - len(kept)

    def progress(self, total: int, desc: str, initial: int = 0) -> tqdm:
        # Redraw often on a terminal, rarely when stderr is a file (CI logs stay short).
        tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
        return tqdm(
            total=total,
            initial=initial,
            desc=desc,
            disable=not self.progress_enabled,
            mininterval=0.5 if tty else 60.0,
            dynamic_ncols=True,
            leave=False,
        )

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
