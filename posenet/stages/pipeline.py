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

from posenet.utils.io import write_json_atomic


def box_ceiling(persons) -> dict:
    """Box AP of the ground-truth boxes (every non-crowd person, score 1) as detections."""
    from posenet.data.targets import image_persons
    from posenet.evaluation import box_results, evaluate_boxes

    results = []
    for image_id in persons.image_ids:
        boxes = image_persons(persons.annotations(image_id), persons.keypoint_layout.num_keypoints).boxes
        results += box_results([image_id] * len(boxes), boxes, np.ones(len(boxes)))
    return evaluate_boxes(persons.coco, results, image_ids=persons.image_ids)


def run_stages(cfg: DictConfig, out_dir: str | Path, log=print) -> dict:
    """Train and evaluate the three stages into ``out_dir/{keypoint,detection,prn}``.

    Returns ``{"metrics": {...}, "rows": [(what, metric, metrics, protocol), ...], "seconds":
    {...}, "checkpoint": the full (PRN stage) checkpoint, "persons": the evaluated split}``;
    ``metrics`` holds ``keypoint_ap_gt_boxes``, ``keypoint_ap_gt_boxes_ceiling``, ``box_ap``,
    ``box_ap_medium_large``, ``box_ap_ceiling``, ``end_to_end_ap``, ``end_to_end_ap_ceiling``
    and ``images``. Each stage's ``val_metrics.json`` is written beside its checkpoints."""
    from posenet.stages import detection, end_to_end, keypoint, prn

    out_dir = Path(out_dir)
    seconds, rows = {}, []

    start = time.perf_counter()
    evaluator = keypoint.evaluator_from_config(cfg, progress=False)
    kp_ceiling = evaluator(keypoint.TargetHeatmaps())
    persons = evaluator.persons
    box_top = box_ceiling(persons)
    seconds["ceilings"] = time.perf_counter() - start
    log(f"ceilings on {len(persons)} images of {persons.split} ({persons.root}): keypoint AP "
        f"{kp_ceiling['AP']:.3f} (training targets as heatmaps), box AP {box_top['AP']:.3f} (ground-truth boxes)")

    log(f"\n== keypoint stage: training into {out_dir / 'keypoint'} (runs again only what is not done yet)")
    start = time.perf_counter()
    keypoint.train(cfg, out_dir=out_dir / "keypoint", resume=True, log=log)
    seconds["keypoint"] = time.perf_counter() - start
    checkpoint = out_dir / "keypoint" / "best.pt"
    log(f"\n== keypoint stage: validation of {checkpoint}")
    kp, kp_eval = keypoint.validate(cfg, checkpoint, log=log)
    write_json_atomic(out_dir / "keypoint" / "val_metrics.json", keypoint.metrics_record(kp, kp_eval, checkpoint),
                      indent=2)
    rows.append(("keypoint stage: predicted keypoints in GT boxes", "keypoint AP", kp, kp_eval.protocol()))
    rows.append(("  ceiling: training targets as heatmaps", "keypoint AP", kp_ceiling, kp_eval.protocol()))

    log(f"\n== detection stage: training into {out_dir / 'detection'} from {checkpoint}")
    start = time.perf_counter()
    detection.train(cfg, init=checkpoint, out_dir=out_dir / "detection", resume=True, log=log)
    seconds["detection"] = time.perf_counter() - start
    checkpoint = out_dir / "detection" / "best.pt"
    log(f"\n== detection stage: validation of {checkpoint}")
    box, box_eval = detection.validate(cfg, checkpoint, log=log)
    write_json_atomic(out_dir / "detection" / "val_metrics.json",
                      detection.metrics_record(box, box_eval, checkpoint), indent=2)
    rows.append(("detection stage: person boxes", "box AP", box, box_eval.protocol()))
    rows.append(("  ceiling: ground-truth boxes as detections", "box AP", box_top, box_eval.protocol()))

    log(f"\n== PRN stage: training into {out_dir / 'prn'} from {checkpoint}")
    start = time.perf_counter()
    prn.train(cfg, init=checkpoint, out_dir=out_dir / "prn", resume=True, log=log)
    seconds["prn"] = time.perf_counter() - start
    full = out_dir / "prn" / "best.pt"

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


__all__ = ["box_ceiling", "run_stages"]
