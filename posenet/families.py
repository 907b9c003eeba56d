"""The model families (``model.family``): each is one object that names what every script does
for it, so that nothing else branches on a family's name (ultralytics' task map is the model).

=============  =====================================  ====================================
family         stages (train_*.py)                    validation modes (val_keypoint.py)
=============  =====================================  ====================================
multiposenet   keypoint, detection, prn               auto, keypoint-stage, end-to-end and
                                                      its ablations (``end_to_end.MODES``)
openpose       keypoint (the PAF network)             auto (= end-to-end), gt-maps and the
                                                      branch ablations (``openpose.MODES``)
=============  =====================================  ====================================

A family names its network builder (``network``), its targets
(``targets``: the keypoint dataset's keywords), its predictor (``predictor``: the
MultiPoseNet one holds the grouping ``infer.grouping`` names, the OpenPose one the "paf"
grouping), its end-to-end evaluator (``evaluator``, also that of its ONNX exports), its
export graph (``export_graph``, ``posenet.deploy.export.FamilyGraph``), its stages and modes,
its quickstart (``quickstart``), its decode benchmark (``decode_benchmark``), its overfit proof's
metrics and aims, and the generated blocks of the docs its tables go to (``block``).

``of(cfg)`` is the config's family; ``load_predictor`` gives a checkpoint's predictor whatever
its family (what ``infer.py`` and ``video.py`` load). To add a family: subclass :class:`Family`
and register it (``@FAMILIES.register("name")``), which ``model.family`` then names.

The families sit above the stages, inference, deployment and quickstart they tie together; the
benchmarks, ``cli.py`` and the scripts sit above them and ask them.
"""
from __future__ import annotations

import os
from typing import Sequence

from omegaconf import DictConfig

from posenet import quickstart
from posenet.config import build
from posenet.deploy import onnx_predictor
from posenet.deploy.export import FamilyGraph, MultiPoseNetGraph, PafGraph
from posenet.deploy.onnx_predictor import OnnxPredictor
from posenet.errors import ConfigError
from posenet.inference.groupings import GROUPINGS
from posenet.models import PoseNet
from posenet.stages import end_to_end, keypoint, openpose, pipeline
from posenet.utils.registry import Registry


FAMILIES = Registry("model.family")


class Family:
    name = ""  # the registered name
    stages: tuple[str, ...] = ()
    modes: tuple[str, ...] = ()
    export_graph: type[FamilyGraph] = FamilyGraph  # it names the family's predictor class too
    # the overfit proof (``benchmark.py overfit``): the metrics it reports, and its aims as a
    # share of each metric's ceiling (box AP of medium + large persons: as AP)
    proof_metrics: tuple[str, ...] = ()
    proof_aims: dict = {}
    # the decode benchmark (``benchmark.py decode``): the module of ``posenet.bench`` whose
    # ``run(cfg, family, ...)`` times this family's decoding (named, not imported: the product
    # never imports the benchmarks)
    decode_benchmark = ""

    def check_stage(self, stage: str) -> None:
        """A clear error when this family has no ``stage``."""
        if stage not in self.stages:
            raise ConfigError(f"model.family {self.name} has no {stage} stage (its stages: {', '.join(self.stages)})")

    def check_mode(self, mode: str) -> None:
        if mode not in self.modes:
            raise ConfigError(f"--mode {mode} is not one of model.family {self.name}'s: {', '.join(self.modes)}")

    def block(self, kind: str) -> str:
        """The generated block of the docs that this family's ``kind`` table ("quickstart",
        "overfit", "decode") goes to: ``kind``, or ``kind-<family>`` for the families after the
        first."""
        return f"{kind}-{self.name}"

    # ------------------------------------------------------------------ models and inference

    def network(self, cfg: DictConfig):
        """A freshly initialised network of the first (keypoint) stage: what train_keypoint.py
        trains (the training and memory benchmarks build it too)."""
        raise NotImplementedError

    def network_name(self, cfg: DictConfig) -> str:
        """How tables name the first stage's network."""
        return "keypoint"

    def targets(self, cfg: DictConfig) -> dict:
        """The keypoint dataset's keywords for this family's targets (``build.keypoint_dataset``)."""
        return {}

    @property
    def predictor_class(self) -> type:
        """The family's predictor (``Predictor``, ``PafPredictor``): its export graph's."""
        return self.export_graph.predictor_class

    def predictor(self, cfg: DictConfig, checkpoint, device: str = "cpu"):
        """The predictor of ``checkpoint`` (what infer.py and video.py run)."""
        return self.predictor_class.from_config(cfg, checkpoint, device)

    def evaluator(self, cfg: DictConfig, predictor, log=print):
        """The end-to-end evaluator of ``predictor`` (a PyTorch or an ONNX one) on
        ``data.val_split``."""
        raise NotImplementedError

    def validate_export(self, cfg: DictConfig, path, overrides: Sequence[str] = (), log=print):
        """COCO keypoint AP of the ONNX export at ``path`` on ``cfg``'s ``data.val_split``, end
        to end: (metrics, evaluator, record), as ``validate``. ``overrides``: ``infer.*`` ones;
        ConfigError when the export is of another family."""
        predictor = OnnxPredictor(path, overrides)
        if predictor.family != self.name:
            raise ConfigError(f"the export is a {predictor.family} model, the config's model.family {self.name}")
        return onnx_predictor.validate(self.evaluator(cfg, predictor, log=log), path, log=log)

    # ------------------------------------------------------------------ training and validation

    def train(self, cfg: DictConfig, out_dir=None, resume: bool = False, log=print) -> list[dict]:
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

    def run_stages(self, cfg: DictConfig, out_dir, log=print) -> dict:
        """Every stage trained (resuming what is done) and evaluated beside its ceiling: what
        the overfitting benchmark runs. ``{"metrics": {..., "images"}, "rows": [(what, metric,
        metrics, protocol), ...], "seconds": {...}}`` and more (see each family's function)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the quickstart and benchmarks

    def quickstart(self, cfg: DictConfig, log=print) -> dict:
        """The quickstart on the synthetic world (``make demo``)."""
        raise NotImplementedError


@FAMILIES.register("multiposenet")
class MultiPoseNetFamily(Family):
    stages = ("keypoint", "detection", "prn")
    modes = ("auto", "keypoint-stage", *end_to_end.MODES)
    export_graph = MultiPoseNetGraph
    decode_benchmark = "decode"
    proof_metrics = ("keypoint_ap_gt_boxes", "keypoint_ap_gt_boxes_ceiling", "box_ap", "box_ap_medium_large",
                     "end_to_end_ap", "end_to_end_ap_ceiling", "images", "minutes")
    proof_aims = {"keypoint_ap_gt_boxes": 0.9, "box_ap_medium_large": 0.9, "end_to_end_ap": 0.8}

    def block(self, kind):
        return kind  # the first family's blocks carry the bare names

    def network(self, cfg):
        return build.posenet_model(cfg, len(cfg.data.keypoints.names))

    def evaluator(self, cfg, predictor, log=print):
        return end_to_end.EndToEndEvaluator.from_config(cfg, predictor, "end-to-end", log=log)

    def train(self, cfg, out_dir=None, resume=False, log=print):
        return keypoint.train(cfg, out_dir=out_dir, resume=resume, log=log)

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

    def run_stages(self, cfg, out_dir, log=print):
        return pipeline.run_stages(cfg, out_dir, log)

    def quickstart(self, cfg, log=print):
        return quickstart.run_multiposenet(cfg, log)


@FAMILIES.register("openpose")
class OpenPoseFamily(Family):
    stages = ("keypoint",)
    modes = ("auto", *openpose.MODES)
    export_graph = PafGraph
    decode_benchmark = "paf_decode"
    proof_metrics = ("end_to_end_ap", "end_to_end_ap_ceiling", "images", "minutes")
    proof_aims = {"end_to_end_ap": 0.9}

    def network(self, cfg):
        return build.paf_network(cfg)

    def network_name(self, cfg):
        return f"keypoint (openpose {cfg.openpose.network})"

    def targets(self, cfg):
        return build.paf_targets(cfg)

    def evaluator(self, cfg, predictor, log=print):
        return openpose.PafEvaluator.from_config(cfg, predictor, log=log)

    def train(self, cfg, out_dir=None, resume=False, log=print):
        return openpose.train(cfg, out_dir=out_dir, resume=resume, log=log)

    def evaluate(self, cfg, checkpoint, mode, device, log):
        return openpose.validate(cfg, checkpoint, "end-to-end" if mode == "auto" else mode, device=device, log=log)

    def run_stages(self, cfg, out_dir, log=print):
        return openpose.run_stages(cfg, out_dir, log)

    def quickstart(self, cfg, log=print):
        return quickstart.run_openpose(cfg, log)


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
