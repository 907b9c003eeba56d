"""End-to-end COCO keypoint AP through the inference pipeline, and its ablations.

Every mode runs the same ``Predictor`` code path as ``infer.py`` on each validation image;
the modes only change where the keypoint candidates and the person boxes come from:

=========================  ==============================  ==========================
mode                       keypoint candidates             person boxes
=========================  ==============================  ==========================
end-to-end                 heatmap peaks                   detection head
pred-keypoints-gt-boxes    heatmap peaks                   ground truth
gt-keypoints-pred-boxes    ground-truth keypoints (1.0)    detection head
gt-keypoints-gt-boxes      ground-truth keypoints (1.0)    ground truth (the paper's
                                                           PRN "both GT" row)
=========================  ==============================  ==========================

Ground-truth keypoints are the labelled (v > 0) keypoints of the non-crowd persons with
keypoints, ground-truth boxes those persons' boxes (score 1). Grouping is the predictor's
(``infer.grouping``: one of ``posenet.inference.groupings``).
"""
from __future__ import annotations

import time

import numpy as np
import torch
from omegaconf import DictConfig

from posenet.config import build
from posenet.data.targets import keypoint_persons, xywh_to_xyxy
from posenet.data.transforms import fit_matrix, transform_points
from posenet.errors import ConfigError
from posenet.evaluation import KEYPOINT_METRICS, format_metrics
from posenet.evaluation.base import ImageEvaluator
from posenet.inference.predictor import Predictor

MODES = {
    "end-to-end": ("pred", "pred"),
    "pred-keypoints-gt-boxes": ("pred", "gt"),
    "gt-keypoints-pred-boxes": ("gt", "pred"),
    "gt-keypoints-gt-boxes": ("gt", "gt"),
}


class EndToEndEvaluator(ImageEvaluator):
    """COCO keypoint AP of ``predictor`` on the images of ``persons`` (the first
    ``max_images``; 0: all) in one of ``MODES``. Called with no model (``evaluator()``): it
    evaluates the predictor's. Mode end-to-end needs only the predictor's ``run`` (and
    ``describe``, ``layout``, ``box_threshold``, ``grouping``), so an ONNX export's
    ``OnnxPredictor`` runs through it as the PyTorch ``Predictor`` does; the ablations take the
    ``Predictor``'s network, peaks and grouping apart."""

    reported_metrics = KEYPOINT_METRICS[:6] + ("decode_ms", "network_ms")

    def __init__(self, predictor: Predictor, persons, mode: str = "end-to-end", max_images: int = 0,
                 progress: bool = True, log=print):
        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        super().__init__(persons, max_images, progress, log)
        self.predictor, self.mode = predictor, mode
        self.description = f"validate {mode}"

    @classmethod
    def from_config(cls, cfg: DictConfig, predictor, mode: str = "end-to-end", progress: bool = True,
                    log=print) -> "EndToEndEvaluator":
        """``eval.max_images`` → the evaluator of ``predictor`` on ``data.val_split`` in ``mode``."""
        return cls(predictor, build.coco_split(cfg.data, cfg.data.val_split), mode, max_images=cfg.eval.max_images,
                   progress=progress, log=log)

    def protocol(self) -> str:
        p = self.predictor
        keypoints, boxes = MODES[self.mode]
        return (f"{self.persons.split} of {self.persons.root} ({len(self.image_ids)} images), {self.mode}: "
                f"{'heatmap peaks' if keypoints == 'pred' else 'ground-truth keypoints'} + "
                f"{'detected boxes (score >= ' + format(p.box_threshold, 'g') + ')' if boxes == 'pred' else 'ground-truth boxes'}, "
                f"{p.describe()}")

    def record_fields(self) -> dict:
        return {"mode": self.mode, "grouping": self.predictor.grouping.name}

    def evaluate(self, model, image_ids) -> dict:
        keypoint_source, box_source = MODES[self.mode]
        needs_network = "pred" in (keypoint_source, box_source)
        predictor = self.predictor
        results, decode_ms, network_ms = [], [], []
        self.skipped = 0
        for image_id in image_ids:
            if self.mode == "end-to-end":  # the predictor's whole pipeline: any predictor (an ONNX export too)
                rgb = self.stored_rgb(image_id)
                if rgb is None:
                    continue
                prediction = predictor.run(rgb)
                network_ms.append(prediction.timing["network_ms"])
                decode_ms.append(prediction.timing["decode_ms"])
                results += self.people_results(image_id, prediction.people)
                continue
            anns = keypoint_persons(self.persons.annotations(image_id))
            if needs_network:
                rgb = self.stored_rgb(image_id)
                if rgb is None:
                    continue
                start = time.perf_counter()
                net = predictor.network(rgb)
                network_ms.append(1e3 * (time.perf_counter() - start))
                matrix, image_size = net.matrix, net.image_size
            else:
                info = self.persons.image_info(image_id)
                image_size = (int(info["height"]), int(info["width"]))
                matrix = fit_matrix(image_size, (predictor.input_size, predictor.input_size))
            start = time.perf_counter()
            if keypoint_source == "pred":
                xy, types, scores = predictor.peaks(net)
            else:
                xy, types, scores = _gt_keypoints(anns, matrix)
            if box_source == "pred":
                boxes, box_scores = net.boxes, net.box_scores
            else:
                boxes, box_scores = _gt_boxes(anns, matrix)
            people, _ = predictor.group(xy, types, scores, boxes, box_scores, matrix, image_size)
            decode_ms.append(1e3 * (time.perf_counter() - start))
            results += self.people_results(image_id, people)
        return self.pipeline_metrics(results, predictor.layout.sigmas, network_ms, decode_ms, self.skipped)


def _gt_keypoints(anns, matrix) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not anns:
        return torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), torch.zeros(0)
    kps = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(len(anns), -1, 3)
    labelled = kps[..., 2] > 0
    _, types = np.nonzero(labelled)
    xy = transform_points(matrix, kps[..., :2][labelled])
    return torch.from_numpy(xy).float(), torch.from_numpy(types).long(), torch.ones(len(types))


def _gt_boxes(anns, matrix) -> tuple[torch.Tensor, torch.Tensor]:
    if not anns:
        return torch.zeros(0, 4), torch.zeros(0)
    xyxy = xywh_to_xyxy([a["bbox"] for a in anns])
    boxes = transform_points(matrix, xyxy.reshape(-1, 2)).reshape(-1, 4)
    return torch.from_numpy(boxes).float(), torch.ones(len(boxes))


def validate(cfg, checkpoint, mode: str = "end-to-end", device: str = "cpu", log=print):
    """Keypoint AP of ``checkpoint`` on ``data.val_split`` in ``mode``; returns (metrics, evaluator)."""
    evaluator = EndToEndEvaluator.from_config(cfg, Predictor.from_config(cfg, checkpoint, device), mode, log=log)
    log(f"protocol: {evaluator.protocol()}; checkpoint {checkpoint}")
    metrics = evaluator()
    log(format_metrics(metrics))
    log(f"decoding (peaks + grouping + mapping back) {metrics['decode_ms']:.2f} ms per image"
        + (f", network {metrics['network_ms']:.1f} ms" if "network_ms" in metrics else ""))
    return metrics, evaluator


__all__ = ["EndToEndEvaluator", "MODES", "validate"]
