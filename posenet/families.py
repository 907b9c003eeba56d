"""The model families and what each script does for them (``model.family``).

``train_keypoint.py``, ``val_keypoint.py``, ``infer.py``, ``video.py`` and ``benchmark.py``
ask the config's family (``of(cfg)``) instead of branching on names:

=============  =====================================  ====================================
family         stages (train_*.py)                    validation modes (val_keypoint.py)
=============  =====================================  ====================================
multiposenet   keypoint, detection, prn               auto, keypoint-stage, end-to-end and
                                                      its ablations (``end_to_end.MODES``)
openpose       keypoint (the PAF network)             auto (= end-to-end), gt-maps and the
                                                      branch ablations (``openpose.MODES``)
=============  =====================================  ====================================

``load_predictor`` gives a checkpoint's predictor whatever its family (what ``infer.py`` and
``video.py`` load). To add a family: subclass :class:`Family` and register it in ``FAMILIES``
(``@FAMILIES.register("name")``), which ``model.family`` then names.

The families sit above the stages, inference and deployment they tie together: nothing below
imports this module.
"""
from __future__ import annotations

import os
from typing import Sequence

from omegaconf import DictConfig

from posenet.config import build
from posenet.errors import ConfigError
from posenet.inference.groupings import GROUPINGS
from posenet.inference.paf_predictor import PafPredictor
from posenet.inference.predictor import Predictor
from posenet.models import PoseNet
from posenet.stages import end_to_end, keypoint, openpose, pipeline
from posenet.utils.registry import Registry


FAMILIES = Registry("model.family")


class Family:
    name = ""  # the registered name
    stages: tuple[str, ...] = ()
    modes: tuple[str, ...] = ()

    def check_stage(self, stage: str) -> None:
        """A clear error when this family has no ``stage``."""
        if stage not in self.stages:
            raise ConfigError(f"model.family {self.name} has no {stage} stage (its stages: {', '.join(self.stages)})")

    def check_mode(self, mode: str) -> None:
        if mode not in self.modes:
            raise ConfigError(f"--mode {mode} is not one of model.family {self.name}'s: {', '.join(self.modes)}")

    def train(self, cfg: DictConfig, out_dir=None, resume: bool = False) -> list[dict]:
        """Train the first (keypoint) stage: what train_keypoint.py runs."""
        raise NotImplementedError

    def validate(self, cfg: DictConfig, checkpoint, mode: str = "auto", device: str = "cpu", log=print):
        """COCO keypoint AP of ``checkpoint`` on ``data.val_split`` in ``mode`` (one of
        ``modes``): (metrics, evaluator, record), the record being what ``--metrics-out`` writes."""
        self.check_mode(mode)
        metrics, evaluator = self.evaluate(cfg, checkpoint, mode, device, log)
        return metrics, evaluator, evaluator.metrics_record(metrics, checkpoint)

    def evaluate(self, cfg: DictConfig, checkpoint, mode: str, device: str, log) -> tuple[dict, object]:
        """``validate``'s (metrics, evaluator) for a mode of ``modes``."""
        raise NotImplementedError

    def predictor(self, cfg: DictConfig, checkpoint, device: str = "cpu"):
        """The predictor of ``checkpoint`` (what infer.py and video.py run)."""
        raise NotImplementedError

    def run_stages(self, cfg: DictConfig, out_dir, log=print) -> dict:
        """Every stage trained (resuming what is done) and evaluated beside its ceiling: what
        the overfitting benchmark runs. ``{"metrics": {..., "images"}, "rows": [(what, metric,
        metrics, protocol), ...], "seconds": {...}}`` and more (see each family's function)."""
        raise NotImplementedError

    def keypoint_model(self, cfg: DictConfig):
        """A freshly initialised model of the first (keypoint) stage: what train_keypoint.py
        trains (the training benchmark times it)."""
        raise NotImplementedError


@FAMILIES.register("multiposenet")
class MultiPoseNetFamily(Family):
    stages = ("keypoint", "detection", "prn")
    modes = ("auto", "keypoint-stage", *end_to_end.MODES)

    def train(self, cfg, out_dir=None, resume=False):
        return keypoint.train(cfg, out_dir=out_dir, resume=resume)

    def evaluate(self, cfg, checkpoint, mode, device, log):
        if mode == "auto":
            parts = PoseNet.parts_in(build.checkpoint_state(checkpoint))
            mode = "end-to-end" if "detection" in parts else "keypoint-stage"
            if mode == "end-to-end" and "prn" not in parts and GROUPINGS[cfg.infer.grouping].needs_prn:
                log("the checkpoint has no PRN (yet): grouping greedy")
                cfg.infer.grouping = "greedy"
        if mode == "keypoint-stage":
            return keypoint.validate(cfg, checkpoint, device=device, log=log)
        return end_to_end.validate(cfg, checkpoint, mode, device=device, log=log)

    def predictor(self, cfg, checkpoint, device="cpu"):
        return Predictor.from_config(cfg, checkpoint, device)

    def run_stages(self, cfg, out_dir, log=print):
        return pipeline.run_stages(cfg, out_dir, log)

    def keypoint_model(self, cfg):
        return build.posenet_model(cfg, len(cfg.data.keypoints.names))


@FAMILIES.register("openpose")
class OpenPoseFamily(Family):
    stages = ("keypoint",)
    modes = ("auto", *openpose.MODES)

    def train(self, cfg, out_dir=None, resume=False):
        return openpose.train(cfg, out_dir=out_dir, resume=resume)

    def evaluate(self, cfg, checkpoint, mode, device, log):
        return openpose.validate(cfg, checkpoint, "end-to-end" if mode == "auto" else mode, device=device, log=log)

    def predictor(self, cfg, checkpoint, device="cpu"):
        return PafPredictor.from_config(cfg, checkpoint, device)

    def run_stages(self, cfg, out_dir, log=print):
        return openpose.run_stages(cfg, out_dir, log)

    def keypoint_model(self, cfg):
        return build.paf_network(cfg)


def of(cfg: DictConfig) -> Family:
    """The family of ``cfg`` (``model.family``)."""
    return FAMILIES[cfg.model.family]()


def load_predictor(checkpoint: str | os.PathLike, config: str | os.PathLike | None = None,
                   overrides: Sequence[str] = (), device: str = "cpu"):
    """The predictor of ``checkpoint`` for its config's model family (``model.family``; the
    config: ``config``, default the ``config.yaml`` of the checkpoint's run directory, with
    ``overrides``). A checkpoint is a training checkpoint (last.pt / best.pt, or its bare state
    dict) or a file of the OpenPose release (pose_model.pth / pose_model_scratch.pth) with an
    openpose vgg19 config. Every predictor has ``run(rgb) -> Prediction``, ``predict(image) ->
    people``, ``draw(rgb, prediction) -> pictures``, ``describe()``, ``layout`` and
    ``keypoint_threshold``."""
    cfg = build.run_config(checkpoint, config, overrides)
    return of(cfg).predictor(cfg, checkpoint, device)


__all__ = ["FAMILIES", "Family", "MultiPoseNetFamily", "OpenPoseFamily", "load_predictor", "of"]
