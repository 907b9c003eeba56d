"""The PRN grids compared (``scripts/benchmark.py prn-grid``): one PRN trained per
``prn.grid``, each and the greedy baseline scored on ground-truth keypoints grouped into
ground-truth boxes, on ``data.val_split`` and on crowds composed from it (docs/design.md, "The
PRN's grid")."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from posenet.config import build
from posenet.data.prn_samples import ComposedCrowds
from posenet.data.targets import image_persons
from posenet.inference.groupings import grouping_from_config
from posenet.stages import prn
from posenet.stages.prn import PrnEvaluator


def right_person_share(evaluator: PrnEvaluator) -> float:
    """The share of the labelled keypoints of ``evaluator``'s last evaluation that went to
    their own person's box (the ground truth's keypoints are the peaks, so an assigned keypoint
    sits on one person's keypoint, to the results' rounding)."""
    by_image: dict[int, list] = {}
    for r in evaluator.last_results:
        by_image.setdefault(r["image_id"], []).append(r["keypoints"])
    right = total = 0
    for image_id in evaluator.image_ids:
        people = image_persons(evaluator.persons.annotations(image_id), evaluator.layout.num_keypoints)
        kps = people.keypoints[people.num_keypoints > 0]
        found = np.asarray(by_image.get(image_id, []), dtype=np.float64).reshape(-1, kps.shape[1], 3)
        labelled = kps[..., 2] > 0
        total += int(labelled.sum())
        if len(found) == len(kps):  # results come box by box, in the order of the boxes
            # (results hold 3 decimals)
            right += int((labelled & (np.abs(found[..., :2] - kps[..., :2]).max(-1) < 1e-2)).sum())
    return right / max(total, 1)


def compare_grids(cfg: DictConfig, grids, out_dir: str | Path, scenes: int = 200, log=print) -> dict:
    """Train one PRN per ``prn.grid`` in ``grids`` (``cfg``'s recipe otherwise, no ``init``:
    the PRN alone) and evaluate each, and the greedy baseline, on the ground truth of
    ``data.val_split`` and of ``scenes`` crowds composed from it (``ComposedCrowds``): COCO
    keypoint AP and the share of keypoints given to their own person. Returns ``{"rows": [...],
    "seconds": {...}, "protocol": str}``."""
    out_dir = Path(out_dir)
    layout = build.keypoint_layout(cfg.data.keypoints)
    val = build.same_keypoints(build.coco_split(cfg.data, cfg.data.val_split), layout)
    crowds = ComposedCrowds(val, scenes=scenes, seed=cfg.seed + 1)
    rows, seconds = [], {}

    def measure(name, grouping_cfg, grouping_name, model):
        row = {"name": name}
        for where, persons in (("val", val), ("crowds", crowds)):
            evaluator = PrnEvaluator(persons, grouping_from_config(grouping_cfg, grouping_name), layout,
                                     keypoint_threshold=cfg.infer.keypoint_threshold, progress=False)
            row[f"{where}_ap"] = evaluator(model)["AP"]
            row[f"{where}_right"] = right_person_share(evaluator)
        log(f"{name}: AP {row['val_ap']:.3f} on {val.split}, {row['crowds_ap']:.3f} on the crowds "
            f"({row['crowds_right']:.1%} of the keypoints to their own person)")
        return row

    for grid in grids:
        run_cfg = OmegaConf.merge(cfg, {"prn": {"grid": grid}})
        start = time.perf_counter()
        prn.train(run_cfg, out_dir=out_dir / grid, log=log)
        seconds[grid] = time.perf_counter() - start
        model = prn.load_model(run_cfg, out_dir / grid / "last.pt")
        rows.append(measure(f"PRN, grid {grid}", run_cfg, "prn", model))
    rows.append(measure("greedy (no PRN)", cfg, "greedy", None))
    protocol = (f"ground-truth keypoints (score 1) grouped into ground-truth boxes: {val.split} of "
                f"{Path(str(val.root)).name} ({len(val)} images) and {crowds.split} (seed {cfg.seed + 1})")
    return {"rows": rows, "seconds": seconds, "protocol": protocol}


def format_grid_table(result: dict, cfg: DictConfig, machine: str, command: str) -> str:
    p = build.stage_config(cfg, "prn")
    lines = [
        f"`{command}` on {machine}: "
        + ", ".join(f"training with grid {k} {v / 60:.1f} min" for k, v in result["seconds"].items()) + ".",
        "",
        "| grouping | AP (val) | right person (val) | AP (crowds) | right person (crowds) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['name']} | {r['val_ap']:.3f} | {r['val_right']:.1%} | {r['crowds_ap']:.3f} | "
                     f"{r['crowds_right']:.1%} |")
    lines += ["", f"Protocol: {result['protocol']}. PRN: {p.prn.hidden} hidden, {p.train.epochs} epochs of "
              f"{p.prn.samples_per_epoch} scenes of {p.data.train_split}, batch {p.train.batch_size}, lr "
              f"{p.train.lr:g}, the last epoch's weights; window {p.prn.window}, box margin {p.prn.box_margin:g}."]
    return "\n".join(lines) + "\n"


__all__ = ["compare_grids", "format_grid_table", "right_person_share"]
