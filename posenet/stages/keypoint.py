"""Keypoint stage: train the trunk, keypoint FPN and keypoint subnet; evaluate COCO keypoint AP.

Until person boxes are predicted, keypoints are grouped with the ground-truth boxes of the
persons that have keypoints ("predicted keypoints + GT boxes"): each keypoint is the highest
heatmap cell of its channel inside the box enlarged by ``eval.box_margin``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from posenet.config import build
from posenet.data.targets import keypoint_persons, xywh_to_xyxy
from posenet.data.transforms import transform_points
from posenet.evaluation import KEYPOINT_METRICS, format_metrics, keypoint_results, write_results
from posenet.evaluation.base import DatasetEvaluator
from posenet.inference import flip_test, keypoints_in_boxes
from posenet.stages.fitting import fit, seeded, stage_dir
from posenet.vis import heatmap_panels


class KeypointEvaluator(DatasetEvaluator):
    """COCO keypoint AP (GT boxes), PCK@0.1 ("PCK": share of the labelled keypoints predicted
    within 0.1 * sqrt(person area)) and the masked heatmap loss on a validation dataset.

    Callable as the trainer's ``evaluate(model, epoch)``; ``last_results`` keeps the results
    of the last call (COCO results format, original image pixels).
    """

    description = "validate keypoints"
    reported_metrics = KEYPOINT_METRICS[:6] + ("PCK", "val_loss")

    def __init__(self, dataset, batch_size: int = 4, num_workers: int = 0, flip: bool = False,
                 box_margin: float = 0.1, keypoint_threshold: float = 0.05, max_images: int = 0,
                 exclusive_peaks: bool = True, box_centrality: float = 1.0, progress: bool = True):
        super().__init__(dataset, batch_size, num_workers, max_images, progress)
        self.flip = flip
        self.box_margin = box_margin
        self.exclusive_peaks = exclusive_peaks
        self.box_centrality = box_centrality
        self.keypoint_threshold = keypoint_threshold
        self.pck_threshold = 0.1
        self._pck_counts = [0, 0]

    @classmethod
    def from_config(cls, cfg: DictConfig, dataset=None, progress: bool = True) -> "KeypointEvaluator":
        """``eval`` → the evaluator on ``dataset`` (default: the validation inputs of
        ``data.val_split``)."""
        e = cfg.eval
        return cls(build.validation_inputs(cfg, dataset), **build.evaluation_loader(cfg), flip=e.flip,
                   box_margin=e.box_margin, keypoint_threshold=e.keypoint_threshold,
                   exclusive_peaks=e.exclusive_peaks, box_centrality=e.box_centrality, progress=progress)

    def protocol(self) -> str:
        h, w = self.codec.input_size
        return (f"{self.persons.split} of {self.persons.root} ({len(self.dataset)} images), single scale "
                f"(longer side {max(h, w)} px), flip {'on' if self.flip else 'off'}, keypoints grouped with "
                f"ground-truth boxes of the persons with keypoints (margin {self.box_margin:.0%}, "
                + (f"exclusive peaks, centrality {self.box_centrality:g})" if self.exclusive_peaks else "highest cell per box)"))

    def evaluate(self, model, batches) -> dict:
        device = next(model.parameters()).device
        results, losses, n_batches = [], {}, 0
        self._pck_counts = [0, 0]
        for images, targets in batches:
            images = images.to(device)
            dense = {k: targets[k].to(device) for k in ("heatmaps", "segmentation", "ignore_mask")}
            out = model(images, dense)
            heatmaps = out["heatmaps"].float()
            for name, value in out["losses"].items():
                losses[name] = losses.get(name, 0.0) + float(value)
            n_batches += 1
            if self.flip:
                heatmaps = flip_test(lambda x: model(x)["heatmaps"], images, heatmaps, self.layout.flip_index,
                                     model.output_stride)
            results += self._group(heatmaps.cpu(), targets["meta"])
        metrics = self.keypoint_metrics(results, self.layout.sigmas)
        hits, labelled = self._pck_counts
        metrics["PCK"] = hits / labelled if labelled else 0.0
        metrics.update({f"val_{k}": v / max(n_batches, 1) for k, v in losses.items()})
        return metrics

    def _group(self, heatmaps: torch.Tensor, metas: list[dict]) -> list[dict]:
        results = []
        for heat, meta in zip(heatmaps, metas):
            anns = keypoint_persons(self.persons.annotations(meta["image_id"]))
            if not anns:
                continue
            xyxy = xywh_to_xyxy([a["bbox"] for a in anns])
            corners = transform_points(meta["matrix"], xyxy.reshape(-1, 2)).reshape(-1, 4)
            xy, scores = keypoints_in_boxes(heat, torch.from_numpy(corners), self.codec, self.box_margin,
                                            self.exclusive_peaks, self.box_centrality)
            xy = transform_points(meta["inverse"], xy.numpy().reshape(-1, 2)).reshape(len(anns), -1, 2)
            scores = scores.numpy()
            self._count_pck(xy, scores, anns)
            found = scores >= self.keypoint_threshold
            person_score = np.where(found, scores, 0).sum(1) / np.maximum(found.sum(1), 1)
            results += keypoint_results([meta["image_id"]] * len(anns), xy, np.clip(scores, 0, 1), person_score)
        return results

    def _count_pck(self, xy: np.ndarray, scores: np.ndarray, anns: list[dict]) -> None:
        """PCK@``pck_threshold``: a labelled keypoint is correct when its prediction (found, at
        or above ``keypoint_threshold``) lies within threshold * sqrt(area) of it."""
        gt = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(len(anns), -1, 3)
        size = np.sqrt(np.maximum([a.get("area", 0.0) for a in anns], 1.0))[:, None]
        labelled = gt[..., 2] > 0
        close = np.linalg.norm(xy - gt[..., :2], axis=-1) <= self.pck_threshold * size
        self._pck_counts[0] += int((close & labelled & (scores >= self.keypoint_threshold)).sum())
        self._pck_counts[1] += int(labelled.sum())


class TargetHeatmaps(torch.nn.Module):
    """A "model" whose heatmaps are the training targets of its inputs: through the
    :class:`KeypointEvaluator` it measures the ceiling of the grouping protocol (what a
    perfect network would score), e.g. 0.852 AP on coco-mini val2017."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the evaluator a device

    def forward(self, images, targets=None):
        if targets is None:
            raise ValueError("TargetHeatmaps needs the targets: it predicts them")
        return {"heatmaps": targets["heatmaps"], "segmentation": targets["segmentation"],
                "losses": {"loss": self.anchor * 0}}


def visualize(model, batch, losses=None, max_images: int = 4) -> dict:
    """The trainer's image hook: input | predicted heatmaps | target heatmaps, one row per image."""

    images, targets = batch
    images = images[:max_images]
    model.eval()
    predicted = model(images)["heatmaps"]
    return {"heatmaps": heatmap_panels(images, predicted, targets["heatmaps"][:max_images], max_images)}


def train(cfg: DictConfig, out_dir: str | Path | None = None, resume: bool = False, log=print) -> list[dict]:
    """Train the keypoint stage of ``cfg``; returns the per-epoch records."""

    train_set = build.keypoint_dataset(cfg, cfg.data.train_split, train=True)
    evaluator = KeypointEvaluator.from_config(cfg)
    model = seeded(cfg, lambda: build.posenet_model(cfg, train_set.layout.num_keypoints))
    log(f"keypoint stage: {len(train_set)} training images, validation on {evaluator.protocol()}")
    return fit(cfg, model, train_set, evaluator, stage_dir(cfg, "keypoint", out_dir), resume, visualize=visualize)


def load_model(cfg: DictConfig, checkpoint: str | Path, device="cpu"):
    """The model of ``cfg`` with the weights of ``checkpoint``, of any stage (a clear error if
    they do not fit)."""
    return build.posenet_from_checkpoint(cfg, checkpoint, device)


def validate(cfg: DictConfig, checkpoint: str | Path, device: str = "cpu", log=print) -> tuple[dict, KeypointEvaluator]:
    """COCO keypoint AP of ``checkpoint`` on ``data.val_split``, with the protocol logged."""
    evaluator = KeypointEvaluator.from_config(cfg)
    model = load_model(cfg, checkpoint, device)
    log(f"protocol: {evaluator.protocol()}; checkpoint {checkpoint}")
    metrics = evaluator(model)
    log(format_metrics(metrics))
    log(f"PCK@0.1 (labelled keypoints within 0.1 sqrt(area)): {metrics.get('PCK', float('nan')):.3f}; "
        f"masked heatmap loss (val): {metrics.get('val_loss', float('nan')):.4f}")
    return metrics, evaluator


__all__ = ["KeypointEvaluator", "TargetHeatmaps", "load_model", "train", "validate", "write_results"]
