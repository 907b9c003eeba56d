"""COCO keypoint and box AP with pycocotools, and the official results format.

Results are lists of dicts in COCO's results format::

    {"image_id": int, "category_id": int, "keypoints": [x1, y1, s1, ..., xK, yK, sK], "score": float}
    {"image_id": int, "category_id": int, "bbox": [x, y, w, h], "score": float}

The third value of each keypoint triple is its confidence (COCOeval ignores it).
"""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posenet.utils.io import write_json_atomic

KEYPOINT_METRICS = ("AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL")
BOX_METRICS = ("AP", "AP50", "AP75", "APS", "APM", "APL", "AR1", "AR10", "AR100", "ARS", "ARM", "ARL", "APML")
# "APML": box AP over the medium and large persons together (area >= 32^2 original pixels, the
# union of COCO's medium and large ranges), where persons smaller than the smallest anchor
# at a small input are left out.
MEDIUM_LARGE = [32 ** 2, 1e5 ** 2]


def keypoint_results(image_ids, keypoints, keypoint_scores, scores, category_id: int = 1) -> list[dict]:
    """Results entries from arrays: keypoints (P, K, 2) in original image pixels,
    keypoint_scores (P, K), scores (P,), image_ids (P,)."""
    kps = np.asarray(keypoints, dtype=np.float64)
    ks = np.asarray(keypoint_scores, dtype=np.float64)
    triples = np.concatenate([kps, ks[..., None]], axis=-1).reshape(len(kps), -1)
    return [
        {"image_id": int(i), "category_id": category_id,
         "keypoints": [round(float(v), 3) for v in row], "score": float(s)}
        for i, row, s in zip(image_ids, triples, scores)
    ]


def box_results(image_ids, boxes, scores, category_id: int = 1) -> list[dict]:
    """Box results entries from arrays: boxes (D, 4) x1, y1, x2, y2 in original image pixels,
    scores (D,), image_ids (D,); written as COCO's [x, y, width, height]."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
    return [
        {"image_id": int(i), "category_id": category_id, "bbox": [round(float(v), 2) for v in row],
         "score": float(s)}
        for i, row, s in zip(image_ids, xywh, scores)
    ]


def write_results(results: Sequence[dict], path: str | os.PathLike) -> Path:
    """Write a results file atomically."""
    return write_json_atomic(path, list(results))


def evaluate_keypoints(gt: COCO, results: Sequence[dict], image_ids: Sequence[int] | None = None,
                       sigmas: Sequence[float] | None = None, verbose: bool = False) -> dict:
    """Official OKS keypoint AP (``COCOeval(iouType='keypoints')``) of ``results``.

    ``image_ids`` restricts the evaluation to those images (default: every image of ``gt``);
    ``sigmas`` replaces COCO's OKS sigmas for a custom keypoint layout.
    """
    return _evaluate(gt, results, "keypoints", KEYPOINT_METRICS, image_ids, sigmas, verbose)


def evaluate_boxes(gt: COCO, results: Sequence[dict], image_ids: Sequence[int] | None = None,
                   verbose: bool = False) -> dict:
    """Official box AP (``COCOeval(iouType='bbox')``) of ``results``."""
    return _evaluate(gt, results, "bbox", BOX_METRICS, image_ids, None, verbose)


def _evaluate(gt, results, iou_type, names, image_ids, sigmas, verbose) -> dict:
    results = list(results)
    if not results:  # pycocotools cannot load an empty results list; nothing found scores 0
        return {name: 0.0 for name in names}
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iou_type)
        if image_ids is not None:
            ev.params.imgIds = sorted(int(i) for i in image_ids)
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        extra = "APML" in names
        if extra:  # summarize() looks its ranges up by label, so an extra one changes nothing else
            ev.params.areaRng = list(ev.params.areaRng) + [MEDIUM_LARGE]
            ev.params.areaRngLbl = list(ev.params.areaRngLbl) + ["medium_large"]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # COCOeval reports -1 where a metric has no ground truth (e.g. no medium persons).
    metrics = {name: float(v) for name, v in zip(names, ev.stats)}
    if extra:
        # precision: (iou thresholds, recall points, categories, area ranges, max detections)
        precision = ev.eval["precision"][:, :, :, -1, -1]
        valid = precision[precision > -1]
        metrics["APML"] = float(valid.mean()) if valid.size else -1.0
    return metrics


def format_metrics(metrics: dict, names: Sequence[str] = KEYPOINT_METRICS[:6]) -> str:
    """A one-row markdown table of the metrics, in percent."""
    head = "| " + " | ".join(names) + " |"
    rule = "|" + "---:|" * len(names)
    row = "| " + " | ".join(f"{100 * metrics[n]:.1f}" if metrics[n] >= 0 else "n/a" for n in names) + " |"
    return "\n".join((head, rule, row))
