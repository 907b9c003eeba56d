"""Memorise a few real COCO images through every stage: the correctness proof on real data.

``scripts/benchmark.py overfit`` trains every stage of the config's model family on the first
N images of a split that hold annotated persons (``data.first_images``), through the real stage
code and data path (masks, crowd ignore, targets, the trainer), with ``keypoint.augment:
false`` so the network is trained on exactly the inputs the evaluation gives it, and evaluates
on the same images with the official metrics, each beside its ceiling (the family's
``run_stages``):

- MultiPoseNet (keypoint, then detection, then PRN; ``stages.pipeline``, which the quickstart
  runs too): keypoint AP with ground-truth boxes, person box AP (all sizes and medium + large)
  and end-to-end keypoint AP;
- OpenPose (the PAF network; ``stages.openpose.run_stages``): end-to-end keypoint AP through
  the part peaks and the PAF grouping, beside the ground truth's maps through the same grouping.

A correct pipeline memorises a handful of images; a stage that cannot is a bug to find.
"""
from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig

from posenet.config import save_config
from posenet.inference.scales_and_flip import side_words
from posenet.stages.pipeline import format_ap
from posenet.utils.io import write_json_atomic

def run(cfg: DictConfig, family, out_dir: str | Path | None = None, log=print) -> dict:
    """Train and evaluate every stage of ``cfg``'s ``family`` (a ``posenet.families.Family``)
    on its ``data.first_images`` images; returns ``{"metrics": {family.proof_metrics...},
    "rows": [(what, metric, metrics, protocol), ...], "seconds": {...}}``."""
    if cfg.data.train_split != cfg.data.val_split:
        log(f"note: training on {cfg.data.train_split} and evaluating on {cfg.data.val_split}: "
            "this measures generalisation, not memorisation")
    out_dir = Path(out_dir or cfg.output_dir)
    save_config(cfg, out_dir)
    start = time.perf_counter()
    result = family.run_stages(cfg, out_dir, log)
    result["seconds"]["total"] = time.perf_counter() - start
    result["metrics"]["minutes"] = result["seconds"]["total"] / 60.0
    write_json_atomic(out_dir / "overfit_metrics.json", {**result["metrics"], "seconds": result["seconds"]}, indent=2)
    metrics = {k: result["metrics"][k] for k in family.proof_metrics}
    return {"metrics": metrics, "rows": result["rows"], "seconds": result["seconds"]}


def format_table(result: dict, cfg: DictConfig, family, machine: str) -> str:
    """The README's table: each metric beside its ceiling, the ratio against ``family``'s aims,
    and the protocol."""
    m, s = result["metrics"], result["seconds"]
    command = f"python scripts/benchmark.py overfit --images {m['images']}"
    if cfg.name != "overfit_coco_mini":
        command += f" --config configs/{cfg.name}.yaml"
    lines = [
        f"`{command}` on {machine}: {m['minutes']:.1f} min in all ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in s.items() if k != "total") + ").",
        "",
        "| what | AP | AP50 | AP75 | APM | APL | AP (M+L) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for what, _, metrics, _ in result["rows"]:
        cells = [metrics.get(k, float("nan")) for k in ("AP", "AP50", "AP75", "APM", "APL")]
        ml = metrics.get("APML")
        lines.append(f"| {what} | " + " | ".join(format_ap(v) for v in cells) + f" | {format_ap(ml) if ml is not None else ''} |")
    target = family.proof_aims
    lines.append("")
    if "keypoint_ap_gt_boxes" in m:  # the stages of a family with person boxes
        lines += [
            f"- keypoint AP (GT boxes) {m['keypoint_ap_gt_boxes']:.3f} = "
            f"{_ratio(m['keypoint_ap_gt_boxes'], m['keypoint_ap_gt_boxes_ceiling'])} of its ceiling "
            f"{m['keypoint_ap_gt_boxes_ceiling']:.3f} (target {target['keypoint_ap_gt_boxes']});",
            f"- person box AP {m['box_ap']:.3f}, medium + large {m['box_ap_medium_large']:.3f} "
            f"(target {target['box_ap_medium_large']});",
        ]
    lines += [
        f"- end-to-end AP {m['end_to_end_ap']:.3f} = {_ratio(m['end_to_end_ap'], m['end_to_end_ap_ceiling'])} "
        f"of its ceiling {m['end_to_end_ap_ceiling']:.3f} (target {target['end_to_end_ap']}).",
        "",
        f"Protocol: the first {m['images']} images of {cfg.data.train_split} of {Path(cfg.data.root).name} that hold "
        f"a person with keypoints, trained on and evaluated on (memorisation); input: "
        f"{side_words(cfg.infer.input_side)} {cfg.infer.input_size or cfg.keypoint.val_input_size} px, fit and pad, "
        f"no augmentation, no flip; `configs/{cfg.name}.yaml` for the rest of the recipe.",
    ]
    return "\n".join(lines) + "\n"


def _ratio(value: float, ceiling: float) -> str:
    return f"{value / ceiling:.2f}" if ceiling > 0 else "n/a"


__all__ = ["format_table", "run"]
