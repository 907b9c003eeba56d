"""Checkpoint files: atomic writes, clear errors on load, RNG states and the code version.

A training checkpoint is a plain dict (see ``Trainer``): it loads with ``weights_only=True``,
so every value is a tensor, a number, a string or a container of those.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

import posenet
from posenet.errors import PosenetError
from posenet.utils.io import atomic_path, atomic_write

FORMAT = "posenet-checkpoint"
FORMAT_VERSION = 1


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``.

    A crash at any moment, ``kill -9`` included, leaves either the previous file or the new
    one, never a partial file; the temporary file is removed when saving fails, and the next
    save removes one that a killed process left (``utils.io.atomic_write``).
    """
    with atomic_write(path) as f:
        torch.save(obj, f)
    return Path(path)


def copy_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Give ``dst`` the bytes of ``src`` with the same temporary-file-and-rename guarantee.

    A hard link where the file system allows one, so a checkpoint of any size costs nothing to
    keep twice: checkpoints are never modified in place (each save renames a new file over the
    old name), so the link keeps the bytes it was made with. Elsewhere, a copy.
    """
    with atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            with open(src, "rb") as source, open(tmp, "wb") as f:
                shutil.copyfileobj(source, f)
    return Path(dst)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """The dict stored in ``path``; a missing, truncated or foreign file raises PosenetError."""
    path = Path(path)
    if not path.is_file():
        raise PosenetError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise PosenetError(f"cannot read checkpoint {path}: {_reason(e)}") from None
    if not isinstance(obj, dict):
        raise PosenetError(f"{path} is not a checkpoint: it holds a {type(obj).__name__}, not a dict")
    return obj


def _reason(e: Exception) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    # weights_only refusals bury the reason under advice; it names the offending global.
    for line in lines:
        if line.startswith("WeightsUnpickler error:"):
            return line[:300]
    return lines[0][:300] if lines else type(e).__name__


def model_state_of(checkpoint: Mapping[str, Any]) -> Mapping[str, torch.Tensor]:
    """The model weights of a training checkpoint, or ``checkpoint`` itself if it is a bare
    state dict (``DistributedDataParallel``'s ``module.`` prefix is dropped)."""
    state = checkpoint["model"] if checkpoint.get("format") == FORMAT else checkpoint
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_model_state(model: torch.nn.Module, state: Mapping[str, Any], source: str | os.PathLike, strict: bool = True) -> None:
    """Load ``state`` into ``model``; a checkpoint of another model raises PosenetError naming
    ``source`` and a few of the missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != own[k].shape
    ]
    problems = []
    if shapes:
        problems.append("shape mismatch (checkpoint vs model): " + _few(shapes))
    if strict and missing:
        problems.append("missing keys: " + _few(missing))
    if strict and unexpected:
        problems.append("unexpected keys: " + _few(unexpected))
    if problems:
        raise PosenetError(f"checkpoint {source} does not fit the model ({type(model).__name__}): " + "; ".join(problems))
    model.load_state_dict(state, strict=strict)


def _few(keys: list, n: int = 3) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def rng_state() -> dict:
    """Python, numpy, torch CPU and (when in use) CUDA generator states, weights_only-safe."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(_tuplify(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def _tuplify(x):
    # random.setstate wants tuples; a checkpoint round trip may hand back lists.
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def code_version() -> str:
    """``git describe`` of the source tree when it is a git checkout, else the package version."""
    root = Path(posenet.__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0 and out.stdout.strip():
            return f"git:{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return f"posenet {posenet.__version__}"
