"""The model families and what each script does for them (``model.family``).

``train_keypoint.py``, ``val_keypoint.py``, ``infer.py``, ``video.py`` and ``benchmark.py``
ask the config's family (``of(cfg)``) instead of branching on names:

=============  =====================================  ====================================
family         stages (train_*.py)                    validation modes (val_keypoint.py)
=============  =====================================  ====================================
multiposenet   keypoint, detection, prn               auto, keypoint-stage, end-to-end and
                                                      its ablations (``end_to_end.MODES``)
openpose       keypoint (the PAF network)             auto (= end-to-end), gt-maps
=============  =====================================  ====================================

To add a family: subclass :class:`Family`, list it in ``FAMILIES`` and add its name to the
choices of ``model.family`` in ``config/schema.py``.
"""
from __future__ import annotations

from omegaconf import DictConfig

from posenet.errors import ConfigError


class Family:
    name = ""
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
        """COCO keypoint AP of ``checkpoint`` on ``data.val_split``: (metrics, evaluator, record),
        the record being what ``--metrics-out`` writes."""
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


class MultiPoseNetFamily(Family):
    name = "multiposenet"
    stages = ("keypoint", "detection", "prn")

    @property
    def modes(self):
        from posenet.stages.end_to_end import MODES

        return ("auto", "keypoint-stage", *MODES)

    def train(self, cfg, out_dir=None, resume=False):
        from posenet.stages import keypoint

        return keypoint.train(cfg, out_dir=out_dir, resume=resume)

    def validate(self, cfg, checkpoint, mode="auto", device="cpu", log=print):
        from posenet.config import build
        from posenet.inference.groupings import GROUPINGS
        from posenet.models import PoseNet
        from posenet.stages import end_to_end, keypoint

        self.check_mode(mode)
        if mode == "auto":
            parts = PoseNet.parts_in(build.checkpoint_state(checkpoint))
            mode = "end-to-end" if "detection" in parts else "keypoint-stage"
            if mode == "end-to-end" and "prn" not in parts and GROUPINGS[cfg.infer.grouping].needs_prn:
                log("the checkpoint has no PRN (yet): grouping greedy")
                cfg.infer.grouping = "greedy"
        if mode == "keypoint-stage":
            metrics, evaluator = keypoint.validate(cfg, checkpoint, device=device, log=log)
        else:
            metrics, evaluator = end_to_end.validate(cfg, checkpoint, mode, device=device, log=log)
        return metrics, evaluator, evaluator.metrics_record(metrics, checkpoint)

    def predictor(self, cfg, checkpoint, device="cpu"):
        from posenet.inference.predictor import Predictor

        return Predictor.from_config(cfg, checkpoint, device)

    def run_stages(self, cfg, out_dir, log=print):
        from posenet.stages.pipeline import run_stages

        return run_stages(cfg, out_dir, log)

    def keypoint_model(self, cfg):
        from posenet.config import build

        return build.posenet_model(cfg, len(cfg.data.keypoints.names))


class OpenPoseFamily(Family):
    name = "openpose"
    stages = ("keypoint",)
    modes = ("auto", "end-to-end", "gt-maps")

    def train(self, cfg, out_dir=None, resume=False):
        from posenet.stages import openpose

        return openpose.train(cfg, out_dir=out_dir, resume=resume)

    def validate(self, cfg, checkpoint, mode="auto", device="cpu", log=print):
        from posenet.stages import openpose

        self.check_mode(mode)
        metrics, evaluator = openpose.validate(cfg, checkpoint, "end-to-end" if mode == "auto" else mode,
                                               device=device, log=log)
        return metrics, evaluator, evaluator.metrics_record(metrics, checkpoint)

    def predictor(self, cfg, checkpoint, device="cpu"):
        from posenet.config import build

        return build.paf_predictor(cfg, build.model_from_checkpoint(cfg, checkpoint, device), device)

    def run_stages(self, cfg, out_dir, log=print):
        from posenet.stages import openpose

        return openpose.run_stages(cfg, out_dir, log)

    def keypoint_model(self, cfg):
        from posenet.config import build

        return build.paf_network(cfg)


FAMILIES: dict[str, Family] = {f.name: f for f in (MultiPoseNetFamily(), OpenPoseFamily())}


def of(cfg: DictConfig) -> Family:
    """The family of ``cfg`` (``model.family``)."""
    name = cfg.model.family
    if name not in FAMILIES:
        raise ConfigError(f"unknown model.family {name!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


__all__ = ["FAMILIES", "Family", "MultiPoseNetFamily", "OpenPoseFamily", "of"]
