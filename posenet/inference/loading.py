"""A checkpoint's predictor, whatever its model family: what infer.py and video.py load. A
checkpoint is a training checkpoint (last.pt / best.pt, or its bare state dict) or a file of the
OpenPose release (pose_model.pth / pose_model_scratch.pth) with an openpose vgg19 config."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig

from posenet.config import load_config
from posenet.errors import ConfigError


def run_config(checkpoint: str | os.PathLike, config: str | os.PathLike | None = None,
               overrides: Sequence[str] = ()) -> DictConfig:
    """``config`` (default: the ``config.yaml`` of the checkpoint's run directory) with
    ``overrides``. A file of the OpenPose release has no run directory: it needs ``config``,
    one with model.family openpose and openpose.network vgg19 (configs/openpose_vgg19.yaml)."""
    checkpoint = Path(checkpoint)
    given = bool(config)
    config = Path(config) if config else checkpoint.parent / "config.yaml"
    if not config.is_file():
        if not given and checkpoint.is_file():
            from posenet.config import build

            if build.release_weights(str(checkpoint)) is not None:
                raise ConfigError(build.release_config_error(checkpoint))
        raise ConfigError(f"no config for {checkpoint}: {config} does not exist; pass --config FILE")
    return load_config(config, list(overrides))


def load_predictor(checkpoint: str | os.PathLike, config: str | os.PathLike | None = None,
                   overrides: Sequence[str] = (), device: str = "cpu"):
    """The predictor of ``checkpoint`` for its config's model family (``model.family``). Every
    predictor has ``run(rgb) -> Prediction``, ``predict(image) -> people``, ``draw(rgb,
    prediction) -> pictures``, ``describe()``, ``layout`` and ``keypoint_threshold``."""
    from posenet.stages import families

    cfg = run_config(checkpoint, config, overrides)
    return families.of(cfg).predictor(cfg, checkpoint, device)


__all__ = ["load_predictor", "run_config"]
