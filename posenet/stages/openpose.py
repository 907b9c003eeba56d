"""The OpenPose family's one stage: train the PAF network on part heatmaps and PAFs, evaluate
COCO keypoint AP through the PAF grouping (docs/design.md §7).

Validation runs every image of the split through the same :class:`PafPredictor` as infer.py
(scales and flip as ``infer`` says), so the number is the end-to-end one. Mode
``gt-maps`` replaces the network by the training targets of the ground truth (part heatmaps
and PAFs encoded from the annotations at the predictor's input size): what a perfect network
would score under the same protocol, the ceiling that stands beside the result. The branch
ablations replace one of the network's two outputs by the ground truth's: ``gt-heatmaps``
(the ground truth's part heatmaps, the network's PAFs) and ``gt-pafs`` (the network's part
heatmaps, the ground truth's PAFs) tell which branch a result is short in.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from posenet.codecs import KeypointHeatmapCodec
from posenet.codecs.heatmap import with_background
from posenet.codecs.paf import PafCodec
from posenet.config import build
from posenet.data.targets import keypoint_persons
from posenet.data.transforms import transform_points
from posenet.errors import ConfigError
from posenet.evaluation import KEYPOINT_METRICS, format_metrics
from posenet.evaluation.base import ImageEvaluator
from posenet.inference.paf_predictor import PafPredictor
from posenet.inference.scales_and_flip import reference_scale
from posenet.stages.fitting import fit, seeded, stage_dir
from posenet.utils.io import write_json_atomic
from posenet.vis import heatmap_panels

# What each mode takes from the ground truth instead of the network: (part heatmaps, PAFs).
MODES = {"end-to-end": (False, False), "gt-maps": (True, True), "gt-heatmaps": (True, False),
         "gt-pafs": (False, True)}


class PafEvaluator(ImageEvaluator):
    """COCO keypoint AP of a :class:`PafPredictor` on the images of ``persons``.

    Callable as the trainer's ``evaluate(model, epoch)`` (the predictor then runs ``model``) or
    with no model (the predictor's own). Images are read in their stored pixel frame, as COCO's
    annotations are.
    """

    description = "validate openpose"
    reported_metrics = KEYPOINT_METRICS[:6] + ("decode_ms", "network_ms")

    def __init__(self, predictor, persons, mode: str = "end-to-end", max_images: int = 0, progress: bool = True,
                 log=print, limb_width: float = 1.0):
        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r} for the openpose family; choose one of {', '.join(MODES)}")
        super().__init__(persons, max_images, progress, log)
        self.predictor, self.mode = predictor, mode
        self.limb_width = float(limb_width)  # the PAF targets' (the ground truth's maps of the ablations)

    @classmethod
    def from_config(cls, cfg: DictConfig, predictor, mode: str = "end-to-end", progress: bool = True,
                    log=print) -> "PafEvaluator":
        """``eval.max_images`` → the evaluator of ``predictor`` on ``data.val_split`` in ``mode``."""
        return cls(predictor, build.coco_split(cfg.data, cfg.data.val_split), mode, max_images=cfg.eval.max_images,
                   progress=progress, log=log, limb_width=cfg.openpose.limb_width)

    def protocol(self) -> str:
        source = {"end-to-end": "the network", "gt-maps": "ground-truth targets instead of the network",
                  "gt-heatmaps": "ground-truth part heatmaps with the network's PAFs",
                  "gt-pafs": "the network's part heatmaps with ground-truth PAFs"}[self.mode]
        return (f"{self.persons.split} of {self.persons.root} ({len(self.image_ids)} images), {self.mode} "
                f"({source}), {self.predictor.describe()}")

    def record_fields(self) -> dict:
        return {"mode": self.mode, "grouping": "paf"}

    def evaluate(self, model, image_ids) -> dict:
        predictor = self.predictor if model is None else self.predictor.with_model(model)
        results, network_ms, decode_ms = [], [], []
        self.skipped = 0
        for image_id in image_ids:
            if self.mode != "end-to-end":
                maps, matrix, hw, size = self._target_maps(predictor, image_id)
                if self.mode != "gt-maps":
                    rgb = self.stored_rgb(image_id)
                    if rgb is None:
                        continue
                    start = time.perf_counter()
                    maps = self._mixed(maps, predictor.network(rgb), matrix, hw, predictor)
                    network_ms.append(1e3 * (time.perf_counter() - start))
                start = time.perf_counter()
                people = predictor.group(maps, matrix, hw, size)
                decode_ms.append(1e3 * (time.perf_counter() - start))
            else:
                rgb = self.stored_rgb(image_id)
                if rgb is None:
                    continue
                prediction = predictor.run(rgb)
                people = prediction.people
                network_ms.append(prediction.timing["network_ms"])
                decode_ms.append(prediction.timing["decode_ms"])
            results += self.people_results(image_id, people)
        return self.pipeline_metrics(results, predictor.layout.sigmas, network_ms, decode_ms, self.skipped)

    def _mixed(self, target, network_output, matrix, hw, predictor) -> torch.Tensor:
        """``target``'s maps with the network's in place of the branch the mode does not take
        from the ground truth (both on the reference scale's grid)."""
        net, net_matrix, net_hw = network_output
        if tuple(net_hw) != tuple(hw) or not np.allclose(net_matrix, matrix):
            raise ValueError(f"the network's maps lie on another grid ({net_hw}) than the targets' ({hw})")
        heat_from_truth, pafs_from_truth = MODES[self.mode]
        channels = predictor.parts.layout.num_keypoints + 1  # parts and background, then PAFs
        maps = target.clone()
        if not heat_from_truth:
            maps[:channels] = net[:channels].to(maps)
        if not pafs_from_truth:
            maps[channels:] = net[channels:].to(maps)
        return maps

    def _target_maps(self, predictor, image_id):
        """The training targets of the ground truth at the predictor's reference scale (the
        listed scale nearest 1: what a perfect network would output there): part heatmaps,
        background and PAFs."""
        info = self.persons.image_info(image_id)
        size = (int(info["height"]), int(info["width"]))
        matrix, _, hw = predictor.input_geometry(size, reference_scale(predictor.scales))
        anns = keypoint_persons(self.persons.annotations(image_id))
        K = predictor.parts.source.num_keypoints
        kps = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(len(anns), K, 3)
        if len(kps):
            kps[..., :2] = transform_points(matrix, kps[..., :2].reshape(-1, 2)).reshape(len(kps), K, 2)
        parts = predictor.parts.encode(kps)
        heat = with_background(KeypointHeatmapCodec(hw, stride=predictor.stride, sigma=predictor.sigma).encode(parts))
        pafs = PafCodec(hw, predictor.parts.layout.skeleton, stride=predictor.stride,
                        limb_width=self.limb_width).encode(parts)
        maps = torch.from_numpy(np.concatenate([heat, pafs]).astype(np.float32))
        return maps, matrix, hw, size


def visualize(model, batch, losses=None, max_images: int = 4) -> dict:
    """The trainer's image hook: input | predicted part heatmaps | targets, one row per image."""

    images, targets = batch
    images = images[:max_images]
    model.eval()
    predicted = model(images)["heatmaps"][:, :-1]  # without the background channel
    return {"heatmaps": heatmap_panels(images, predicted, targets["heatmaps"][:max_images, :-1], max_images)}


def train(cfg: DictConfig, out_dir: str | Path | None = None, resume: bool = False, log=print) -> list[dict]:
    """Train the PAF network of ``cfg``; returns the per-epoch records."""

    train_set = build.keypoint_dataset(cfg, cfg.data.train_split, train=True, **build.paf_targets(cfg))
    model = seeded(cfg, lambda: build.paf_network(cfg))
    validation = PafEvaluator.from_config(cfg, PafPredictor.from_config(cfg, model), log=log)
    log(f"openpose ({cfg.openpose.network}): {len(train_set)} training images, "
        f"validation on {validation.protocol()}")
    return fit(cfg, model, train_set, validation, stage_dir(cfg, "keypoint", out_dir), resume, visualize=visualize)


def validate(cfg: DictConfig, checkpoint, mode: str = "end-to-end", device: str = "cpu", log=print):
    """COCO keypoint AP of ``checkpoint`` (or, mode ``gt-maps``, of perfect maps) on
    ``data.val_split``; returns (metrics, evaluator)."""
    if mode == "gt-maps":
        model = build.paf_network(build_config_without_weights(cfg))
    else:
        model = build.paf_network_from_checkpoint(cfg, checkpoint, device)
    validation = PafEvaluator.from_config(cfg, PafPredictor.from_config(cfg, model, device), mode, log=log)
    log(f"protocol: {validation.protocol()}; "
        + ("the ground truth's maps, no network" if mode == "gt-maps" else f"checkpoint {checkpoint}"))
    metrics = validation()
    log(format_metrics(metrics))
    log(f"decoding (peaks + PAF grouping + mapping back) {metrics['decode_ms']:.2f} ms per image"
        + (f", network {metrics['network_ms']:.1f} ms" if "network_ms" in metrics else ""))
    return metrics, validation


def run_stages(cfg: DictConfig, out_dir: str | Path, log=print) -> dict:
    """The family's one stage, trained and evaluated beside its ceiling: what the quickstart and
    the overfitting benchmark run (the MultiPoseNet family's is ``pipeline.run_stages``).

    Trains the PAF network into ``out_dir/keypoint`` (resuming what is done), validates its best
    checkpoint end to end and the ground truth's maps through the same protocol (``gt-maps``),
    and writes both into ``val_metrics.json`` beside the checkpoints. Returns ``{"metrics":
    {"end_to_end_ap", "end_to_end_ap_ceiling", "images"}, "rows": [(what, metric, metrics,
    protocol), ...], "seconds": {...}, "checkpoint", "end_to_end", "ceiling", "protocol"}``."""

    out_dir = Path(out_dir)
    seconds = {}
    log(f"\n== openpose ({cfg.openpose.network}): training into {out_dir / 'keypoint'} "
        "(runs again only what is not done yet)")
    start = time.perf_counter()
    train(cfg, out_dir=out_dir / "keypoint", resume=True, log=log)
    seconds["train"] = time.perf_counter() - start
    checkpoint = out_dir / "keypoint" / "best.pt"
    start = time.perf_counter()
    result, evaluator = validate(cfg, checkpoint, "end-to-end", log=log)
    top, top_evaluator = validate(cfg, checkpoint, "gt-maps", log=log)
    write_json_atomic(out_dir / "keypoint" / "val_metrics.json",
                      {"end-to-end": evaluator.metrics_record(result, checkpoint),
                       "ceiling": top_evaluator.metrics_record(top, checkpoint)}, indent=2)
    seconds["validation"] = time.perf_counter() - start
    rows = [(f"end to end: {cfg.openpose.network} + PAF grouping", "keypoint AP", result, evaluator.protocol()),
            ("  ceiling: the ground truth's maps through the same grouping", "keypoint AP", top,
             top_evaluator.protocol())]
    metrics = {"end_to_end_ap": result["AP"], "end_to_end_ap_ceiling": top["AP"], "images": len(evaluator.image_ids)}
    return {"metrics": metrics, "rows": rows, "seconds": seconds, "checkpoint": checkpoint, "end_to_end": result,
            "ceiling": top, "protocol": evaluator.protocol()}


def build_config_without_weights(cfg: DictConfig) -> DictConfig:
    from omegaconf import OmegaConf

    return OmegaConf.merge(cfg, {"model": {"pretrained": "none"}})


__all__ = ["MODES", "PafEvaluator", "run_stages", "train", "validate", "visualize"]
