"""PRN stage: the Pose Residual Network, trained on ground-truth annotations alone; evaluated
as the paper's "both GT" upper bound (ground-truth keypoints grouped into ground-truth boxes).

The stage builds the whole model (trunk, keypoint branch and, when its ``init`` checkpoint has
one, the detection branch), loads the earlier stage's checkpoint, freezes everything but the
PRN and trains the PRN on ``PrnSceneDataset`` grids: its checkpoints hold the whole model, the
earlier stages' weights bitwise unchanged, so inference loads one file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from posenet.config import build
from posenet.data.targets import image_persons
from posenet.evaluation import keypoint_results
from posenet.evaluation.base import ImageEvaluator
from posenet.inference.prn_grouping import pose_scores
from posenet.models import PoseNet


class PrnEvaluator(ImageEvaluator):
    """COCO keypoint AP of a grouping of ground-truth keypoints into ground-truth boxes.

    Per image of ``persons`` (the first ``max_images``; 0: all), every non-crowd person with
    labelled keypoints gives a box (its annotation's, score 1) and each of its labelled
    keypoints a peak (score 1); ``grouping`` (a ``posenet.inference.groupings`` object) assigns
    the peaks. Results: keypoint scores clipped to [0, 1], person scores from ``pose_scores``
    with ``keypoint_threshold``; AP by pycocotools' OKS with ``layout``'s sigmas.

    Callable as the trainer's ``evaluate(model, epoch)``: the model is a ``PoseNet`` with a PRN
    or a ``PoseResidualNetwork`` (ignored by groupings that need none); ``last_results`` keeps
    the results of the last call.
    """

    def __init__(self, persons, grouping, layout, keypoint_threshold: float = 0.05, max_images: int = 0,
                 progress: bool = True):
        super().__init__(persons, max_images, progress)
        self.grouping, self.layout = grouping, layout
        self.keypoint_threshold = keypoint_threshold
        self.description = f"validate {grouping.name}"

    def protocol(self) -> str:
        return (f"{self.persons.split} of {self.persons.root} ({len(self.image_ids)} images), ground-truth keypoints "
                f"grouped into ground-truth boxes of the persons with keypoints by {self.grouping.describe()}; "
                f"no images, no flip; pose score = box score x mean keypoint score above {self.keypoint_threshold:g}")

    def image_inputs(self, image_id: int) -> dict:
        """The grouping's inputs for one image: "boxes" (B, 4) x1 y1 x2 y2 and "box_scores"
        (B,), "peaks_xy" (P, 2), "peaks_type" (P,), "peaks_score" (P,), and the ground truth
        "keypoints" (B, K, 3) of each box's person."""
        people = image_persons(self.persons.annotations(image_id), self.layout.num_keypoints)
        keep = people.num_keypoints > 0
        kps, boxes = people.keypoints[keep], people.boxes[keep]
        labelled = kps[..., 2] > 0
        types = np.broadcast_to(np.arange(self.layout.num_keypoints), labelled.shape)[labelled]
        return {"boxes": boxes, "box_scores": np.ones(len(boxes)), "peaks_xy": kps[..., :2][labelled],
                "peaks_type": types, "peaks_score": np.ones(len(types)), "keypoints": kps}

    def group(self, model, inputs: dict) -> tuple[np.ndarray, np.ndarray]:
        """(keypoints (B, K, 2), scores (B, K)) of one image's ``image_inputs``."""
        return self.grouping(inputs["boxes"], inputs["peaks_xy"], inputs["peaks_type"], inputs["peaks_score"],
                             self.layout.num_keypoints, model)

    def evaluate(self, model, image_ids) -> dict:
        self.grouping.check_model(model)
        results = []
        for image_id in image_ids:
            inputs = self.image_inputs(image_id)
            if not len(inputs["boxes"]):
                continue
            xy, scores = self.group(model, inputs)
            person = pose_scores(inputs["box_scores"], scores, self.keypoint_threshold)
            results += keypoint_results([image_id] * len(xy), xy, np.clip(scores, 0, 1), person)
        return self.keypoint_metrics(results, self.layout.sigmas)


def prepare_model(cfg: DictConfig, num_keypoints: int, init: str | Path | None, detection: bool | None = None):
    """The full model with a PRN, ``init``'s weights (a keypoint- or detection-stage checkpoint;
    the detection branch is built when it has one, or when ``detection`` says so), everything
    but the PRN frozen and ``train_tasks == {"prn"}``."""
    if detection is None:
        detection = init is not None and "detection" in PoseNet.parts_in(build.checkpoint_state(init))
    # the other parts come from ``init`` or are not used: never fetch pretrained weights for them
    model = build.posenet_model(OmegaConf.merge(cfg, {"model": {"pretrained": "none"}}), num_keypoints,
                                detection=detection, prn=True)
    if init is not None:
        build.load_earlier_stage(model, init, "prn")
    model.freeze(["trunk", "keypoint"] + (["detection"] if model.has_detection else []))
    model.train_tasks = {"prn"}
    return model


def train(cfg: DictConfig, init: str | Path | None = None, out_dir: str | Path | None = None,
          resume: bool = False, log=print) -> list[dict]:
    """Train the PRN stage of ``cfg`` on top of the checkpoint ``init``; returns the per-epoch
    records. Without ``init`` the other parts keep random weights: only the PRN of the
    resulting checkpoint is of use."""
    from posenet.engine.loader import seed_everything

    out_dir = Path(out_dir or Path(cfg.output_dir) / "prn")
    resuming = resume and (out_dir / "last.pt").is_file()
    cfg = build.stage_config(cfg, "prn")
    train_set = build.prn_scenes(cfg)
    evaluator = build.prn_evaluator(cfg)
    seed_everything(cfg.seed)
    detection = None
    if resuming:  # the run's own checkpoint decides whether the model has a detection branch
        detection = "detection" in PoseNet.parts_in(build.checkpoint_state(out_dir / "last.pt"))
    if init is None and not resuming:
        log("warning: no --init checkpoint: the trunk and keypoint branch keep random weights; "
            "only the PRN of this run's checkpoints is of use")
    model = prepare_model(cfg, train_set.num_keypoints, None if resuming else init, detection)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"PRN stage: {len(train_set)} samples per epoch from {len(train_set.poses)} poses and "
        f"{len(train_set.real_scenes)} real scenes of {train_set.persons.split}, frozen: "
        f"{', '.join(sorted(model.frozen))} ({trainable / 1e6:.2f} M trainable parameters), "
        f"validation on {evaluator.protocol()}")
    trainer = build.trainer(cfg, model=model, train_dataset=train_set, collate_fn=None,
                            evaluate=evaluator, out_dir=out_dir, resume=resume)
    return trainer.fit()


def load_model(cfg: DictConfig, checkpoint: str | Path, device="cpu"):
    """The full model (detection branch when the checkpoint has one) with a trained PRN."""
    return build.model_from_checkpoint(cfg, checkpoint, device, require=("prn",))


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
    import time

    from posenet.data.prn_samples import ComposedCrowds

    out_dir = Path(out_dir)
    layout = build.keypoint_layout(cfg.data.keypoints)
    val = build.same_keypoints(build.coco_split(cfg.data, cfg.data.val_split), layout)
    crowds = ComposedCrowds(val, scenes=scenes, seed=cfg.seed + 1)
    rows, seconds = [], {}

    def measure(name, grouping_cfg, grouping_name, model):
        row = {"name": name}
        for where, persons in (("val", val), ("crowds", crowds)):
            evaluator = PrnEvaluator(persons, build.grouping(grouping_cfg, grouping_name), layout,
                                     keypoint_threshold=cfg.infer.keypoint_threshold, progress=False)
            row[f"{where}_ap"] = evaluator(model)["AP"]
            row[f"{where}_right"] = right_person_share(evaluator)
        log(f"{name}: AP {row['val_ap']:.3f} on {val.split}, {row['crowds_ap']:.3f} on the crowds "
            f"({row['crowds_right']:.1%} of the keypoints to their own person)")
        return row

    for grid in grids:
        run_cfg = OmegaConf.merge(cfg, {"prn": {"grid": grid}})
        start = time.perf_counter()
        train(run_cfg, out_dir=out_dir / grid, log=log)
        seconds[grid] = time.perf_counter() - start
        model = load_model(run_cfg, out_dir / grid / "last.pt")
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


__all__ = ["PrnEvaluator", "compare_grids", "format_grid_table", "load_model", "prepare_model", "right_person_share",
           "train"]
