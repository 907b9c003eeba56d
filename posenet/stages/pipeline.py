"""Every stage in order, each result beside its ceiling: what the quickstart and the overfitting
benchmark both run.

Trains the keypoint stage, then the detection stage (from the keypoint checkpoint), then the
PRN (from the detection checkpoint), resuming whatever is already done, and evaluates on
``data.val_split`` with the official metrics, each beside the ceiling that no network can pass
on those images through the same protocol:

* keypoint AP with ground-truth boxes, beside the training targets as the network's heatmaps
  (:class:`~posenet.stages.keypoint.TargetHeatmaps`; the grouping loses people in crowds);
* person box AP (all sizes, and medium + large: ``APML``), beside the ground-truth boxes as
  detections;
* end-to-end keypoint AP (detector + PRN), beside ground-truth keypoints and boxes grouped by
  the trained PRN.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from posenet.data.targets import image_persons
from posenet.evaluation import box_results, evaluate_boxes
from posenet.stages import detection, end_to_end, keypoint, prn
from posenet.stages.keypoint import KeypointEvaluator
from posenet.utils.io import write_json_atomic


def box_ceiling(persons) -> dict:
    """Box AP of the ground-truth boxes (every non-crowd person, score 1) as detections."""

    results = []
    for image_id in persons.image_ids:
        boxes = image_persons(persons.annotations(image_id), persons.keypoint_layout.num_keypoints).boxes
        results += box_results([image_id] * len(boxes), boxes, np.ones(len(boxes)))
    return evaluate_boxes(persons.coco, results, image_ids=persons.image_ids)


def format_ap(value) -> str:
    """A metric for a table: three decimals, "n/a" where COCO reports -1 (no such persons)."""
    return "n/a" if value is None or value < 0 else f"{value:.3f}"


def run_stages(cfg: DictConfig, out_dir: str | Path, log=print) -> dict:
    """Train and evaluate the three stages into ``out_dir/{keypoint,detection,prn}``.

    Returns ``{"metrics": {...}, "rows": [(what, metric, metrics, protocol), ...], "seconds":
    {...}, "checkpoint": the full (PRN stage) checkpoint, "persons": the evaluated split}``;
    ``metrics`` holds ``keypoint_ap_gt_boxes``, ``keypoint_ap_gt_boxes_ceiling``, ``box_ap``,
    ``box_ap_medium_large``, ``box_ap_ceiling``, ``end_to_end_ap``, ``end_to_end_ap_ceiling``
    and ``images``. Each stage's ``val_metrics.json`` is written beside its checkpoints."""

    out_dir = Path(out_dir)
    seconds, rows = {}, []

    start = time.perf_counter()
    evaluator = KeypointEvaluator.from_config(cfg, progress=False)
    kp_ceiling = evaluator(keypoint.TargetHeatmaps())
    persons = evaluator.persons
    box_top = box_ceiling(persons)
    seconds["ceilings"] = time.perf_counter() - start
    log(f"ceilings on {len(persons)} images of {persons.split} ({persons.root}): keypoint AP "
        f"{kp_ceiling['AP']:.3f} (training targets as heatmaps), box AP {box_top['AP']:.3f} (ground-truth boxes)")

    def train(stage, module, init=None) -> Path:
        """Train ``stage`` (resuming what is done) from ``init``; its best checkpoint."""
        log(f"\n== {stage} stage: training into {out_dir / stage}"
            + (f" from {init}" if init else " (runs again only what is not done yet)"))
        start = time.perf_counter()
        if init is None:
            module.train(cfg, out_dir=out_dir / stage, resume=True, log=log)
        else:
            module.train(cfg, init=init, out_dir=out_dir / stage, resume=True, log=log)
        seconds[stage] = time.perf_counter() - start
        return out_dir / stage / "best.pt"

    def validate(stage, module, checkpoint):
        """Validate ``checkpoint`` and write ``val_metrics.json`` beside it."""
        log(f"\n== {stage} stage: validation of {checkpoint}")
        metrics, evaluator = module.validate(cfg, checkpoint, log=log)
        write_json_atomic(out_dir / stage / "val_metrics.json", evaluator.metrics_record(metrics, checkpoint), indent=2)
        return metrics, evaluator

    checkpoint = train("keypoint", keypoint)
    kp, kp_eval = validate("keypoint", keypoint, checkpoint)
    rows.append(("keypoint stage: predicted keypoints in GT boxes", "keypoint AP", kp, kp_eval.protocol()))
    rows.append(("  ceiling: training targets as heatmaps", "keypoint AP", kp_ceiling, kp_eval.protocol()))

    checkpoint = train("detection", detection, checkpoint)
    box, box_eval = validate("detection", detection, checkpoint)
    rows.append(("detection stage: person boxes", "box AP", box, box_eval.protocol()))
    rows.append(("  ceiling: ground-truth boxes as detections", "box AP", box_top, box_eval.protocol()))

    full = train("prn", prn, checkpoint)

    log(f"\n== end to end: {full} through the inference pipeline")
    start = time.perf_counter()
    e2e, e2e_eval = end_to_end.validate(cfg, full, "end-to-end", log=log)
    top, top_eval = end_to_end.validate(cfg, full, "gt-keypoints-gt-boxes", log=log)
    seconds["end_to_end"] = time.perf_counter() - start
    rows.append(("end to end: detector + PRN", "keypoint AP", e2e, e2e_eval.protocol()))
    rows.append(("  ceiling: GT keypoints + GT boxes through the trained PRN", "keypoint AP", top,
                 top_eval.protocol()))

    metrics = {
        "keypoint_ap_gt_boxes": kp["AP"],
        "keypoint_ap_gt_boxes_ceiling": kp_ceiling["AP"],
        "box_ap": box["AP"],
        "box_ap_medium_large": box["APML"],
        "box_ap_ceiling": box_top["AP"],
        "end_to_end_ap": e2e["AP"],
        "end_to_end_ap_ceiling": top["AP"],
        "images": len(persons),
    }
    return {"metrics": metrics, "rows": rows, "seconds": seconds, "checkpoint": full, "persons": persons}


__all__ = ["box_ceiling", "format_ap", "run_stages"]
