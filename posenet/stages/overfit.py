"""Memorise a few real COCO images through every stage: the correctness proof on real data.

``scripts/benchmark.py overfit`` trains the keypoint stage, then the detection stage, then the
PRN on the first N images of a split that hold annotated persons (``data.first_images``),
through the real stage code and data path (masks, crowd ignore, targets, the trainer), with
``keypoint.augment: false`` so the network is trained on exactly the inputs the evaluation
gives it, and evaluates on the same images with the official metrics:

* keypoint AP with ground-truth boxes (``stages.keypoint``), beside its ceiling: the training
  targets as the network's heatmaps (:class:`~posenet.stages.keypoint.TargetHeatmaps`); the
  grouping protocol loses people in crowds, so no network can pass it;
* person box AP, all sizes and medium + large (``APML``), beside the ground-truth boxes as
  detections;
* end-to-end keypoint AP (detector + PRN, ``stages.end_to_end``), beside ground-truth
  keypoints and boxes grouped by the trained PRN.

A correct pipeline memorises a handful of images; a stage that cannot is a bug to find.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from posenet.config import build, save_config
from posenet.utils.io import write_json_atomic

METRIC_KEYS = ("keypoint_ap_gt_boxes", "keypoint_ap_gt_boxes_ceiling", "box_ap", "box_ap_medium_large",
               "end_to_end_ap", "end_to_end_ap_ceiling", "images", "minutes")


def box_ceiling(persons) -> dict:
    """Box AP of the ground-truth boxes (every non-crowd person, score 1) as detections."""
    from posenet.data.targets import image_persons
    from posenet.evaluation import box_results, evaluate_boxes

    results = []
    for image_id in persons.image_ids:
        boxes = image_persons(persons.annotations(image_id), persons.keypoint_layout.num_keypoints).boxes
        results += box_results([image_id] * len(boxes), boxes, np.ones(len(boxes)))
    return evaluate_boxes(persons.coco, results, image_ids=persons.image_ids)


def run(cfg: DictConfig, out_dir: str | Path | None = None, log=print) -> dict:
    """Train and evaluate every stage of ``cfg`` on its ``data.first_images`` images; returns
    ``{"metrics": {METRIC_KEYS...}, "rows": [(what, metric, metrics, protocol), ...],
    "seconds": {...}}``."""
    from posenet.stages import detection, end_to_end, keypoint, prn

    if cfg.data.train_split != cfg.data.val_split:
        log(f"note: training on {cfg.data.train_split} and evaluating on {cfg.data.val_split}: "
            "this measures generalisation, not memorisation")
    out_dir = Path(out_dir or cfg.output_dir)
    save_config(cfg, out_dir)
    start_all = time.perf_counter()
    seconds, rows = {}, []

    start = time.perf_counter()
    evaluator = keypoint.evaluator_from_config(cfg, progress=False)
    kp_ceiling = evaluator(keypoint.TargetHeatmaps())
    persons = evaluator.persons
    box_top = box_ceiling(persons)
    seconds["ceilings"] = time.perf_counter() - start
    log(f"overfit: {len(persons)} images of {persons.split} ({persons.root}); keypoint ceiling "
        f"AP {kp_ceiling['AP']:.3f}, box ceiling AP {box_top['AP']:.3f}")

    start = time.perf_counter()
    keypoint.train(cfg, out_dir=out_dir / "keypoint", resume=True, log=log)
    seconds["keypoint"] = time.perf_counter() - start
    checkpoint = out_dir / "keypoint" / "best.pt"
    kp, kp_eval = keypoint.validate(cfg, checkpoint, log=log)
    rows.append(("keypoint stage: predicted keypoints in GT boxes", "keypoint AP", kp, kp_eval.protocol()))
    rows.append(("  ceiling: training targets as heatmaps", "keypoint AP", kp_ceiling, kp_eval.protocol()))

    start = time.perf_counter()
    detection.train(cfg, init=checkpoint, out_dir=out_dir / "detection", resume=True, log=log)
    seconds["detection"] = time.perf_counter() - start
    checkpoint = out_dir / "detection" / "best.pt"
    box, box_eval = detection.validate(cfg, checkpoint, log=log)
    rows.append(("detection stage: person boxes", "box AP", box, box_eval.protocol()))
    rows.append(("  ceiling: ground-truth boxes as detections", "box AP", box_top, box_eval.protocol()))

    start = time.perf_counter()
    prn.train(cfg, init=checkpoint, out_dir=out_dir / "prn", resume=True, log=log)
    seconds["prn"] = time.perf_counter() - start
    full = out_dir / "prn" / "best.pt"
    start = time.perf_counter()
    e2e, e2e_eval = end_to_end.validate(cfg, full, "end-to-end", log=log)
    top, top_eval = end_to_end.validate(cfg, full, "gt-keypoints-gt-boxes", log=log)
    seconds["end_to_end"] = time.perf_counter() - start
    rows.append(("end to end: detector + PRN", "keypoint AP", e2e, e2e_eval.protocol()))
    rows.append(("  ceiling: GT keypoints + GT boxes through the trained PRN", "keypoint AP", top,
                 top_eval.protocol()))
    seconds["total"] = time.perf_counter() - start_all

    metrics = {
        "keypoint_ap_gt_boxes": kp["AP"],
        "keypoint_ap_gt_boxes_ceiling": kp_ceiling["AP"],
        "box_ap": box["AP"],
        "box_ap_medium_large": box["APML"],
        "box_ap_ceiling": box_top["AP"],
        "end_to_end_ap": e2e["AP"],
        "end_to_end_ap_ceiling": top["AP"],
        "images": len(persons),
        "minutes": seconds["total"] / 60.0,
    }
    result = {"metrics": metrics, "rows": rows, "seconds": seconds}
    write_json_atomic(out_dir / "overfit_metrics.json", {**metrics, "seconds": seconds}, indent=2)
    return result


def format_table(result: dict, cfg: DictConfig, machine: str) -> str:
    """The README's table: each metric beside its ceiling, the ratio, and the protocol."""
    m, s = result["metrics"], result["seconds"]
    lines = [
        f"`python scripts/benchmark.py overfit --images {m['images']}` on {machine}: "
        f"{m['minutes']:.1f} min in all (" + ", ".join(f"{k} {v:.0f} s" for k, v in s.items() if k != "total") + ").",
        "",
        "| what | AP | AP50 | AP75 | APM | APL | AP (M+L) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for what, _, metrics, _ in result["rows"]:
        cells = [metrics.get(k, float("nan")) for k in ("AP", "AP50", "AP75", "APM", "APL")]
        ml = metrics.get("APML")
        lines.append(f"| {what} | " + " | ".join(_num(v) for v in cells) + f" | {_num(ml) if ml is not None else ''} |")
    lines += [
        "",
        f"- keypoint AP (GT boxes) {m['keypoint_ap_gt_boxes']:.3f} = "
        f"{_ratio(m['keypoint_ap_gt_boxes'], m['keypoint_ap_gt_boxes_ceiling'])} of its ceiling "
        f"{m['keypoint_ap_gt_boxes_ceiling']:.3f} (target 0.9);",
        f"- person box AP {m['box_ap']:.3f}, medium + large {m['box_ap_medium_large']:.3f} (target 0.9);",
        f"- end-to-end AP {m['end_to_end_ap']:.3f} = {_ratio(m['end_to_end_ap'], m['end_to_end_ap_ceiling'])} "
        f"of its ceiling {m['end_to_end_ap_ceiling']:.3f} (target 0.8).",
        "",
        f"Protocol: the first {m['images']} images of {cfg.data.train_split} of {Path(cfg.data.root).name} that hold "
        f"a person with keypoints, trained on and evaluated on (memorisation); input: longer side "
        f"{cfg.keypoint.val_input_size} px, fit and pad, no augmentation, no flip; "
        f"`configs/{cfg.name}.yaml` for the rest of the recipe.",
    ]
    return "\n".join(lines) + "\n"


def _num(v) -> str:
    return "n/a" if v is None or v < 0 else f"{v:.3f}"


def _ratio(value: float, ceiling: float) -> str:
    return f"{value / ceiling:.2f}" if ceiling > 0 else "n/a"


__all__ = ["METRIC_KEYS", "box_ceiling", "format_table", "run"]
