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
from posenet.inference.groupings import grouping_from_config
from posenet.inference.prn_grouping import pose_scores
from posenet.models import PoseNet
from posenet.stages.fitting import fit, is_resuming, seeded, stage_dir, trainable


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

    @classmethod
    def from_config(cls, cfg: DictConfig, grouping: str = "prn", progress: bool = True,
                    max_images: int | None = None) -> "PrnEvaluator":
        """``infer.keypoint_threshold`` + ``eval.max_images`` (or ``max_images``) + the settings
        of the grouping named ``grouping`` → the evaluator on ``data.val_split``."""
        layout = build.keypoint_layout(cfg.data.keypoints)
        persons = build.same_keypoints(build.coco_split(cfg.data, cfg.data.val_split), layout)
        return cls(persons, grouping_from_config(cfg, grouping), layout, keypoint_threshold=cfg.infer.keypoint_threshold,
                   max_images=cfg.eval.max_images if max_images is None else max_images, progress=progress)

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

    out_dir = stage_dir(cfg, "prn", out_dir)
    resuming = is_resuming(out_dir, resume)
    cfg = build.stage_config(cfg, "prn")
    train_set = build.prn_scenes(cfg)
    evaluator = PrnEvaluator.from_config(cfg)
    detection = None
    if resuming:  # the run's own checkpoint decides whether the model has a detection branch
        detection = "detection" in PoseNet.parts_in(build.checkpoint_state(out_dir / "last.pt"))
    if init is None and not resuming:
        log("warning: no --init checkpoint: the trunk and keypoint branch keep random weights; "
            "only the PRN of this run's checkpoints is of use")
    model = seeded(cfg, lambda: prepare_model(cfg, train_set.num_keypoints, None if resuming else init, detection))
    log(f"PRN stage: {len(train_set)} samples per epoch from {len(train_set.poses)} poses and "
        f"{len(train_set.real_scenes)} real scenes of {train_set.persons.split}, {trainable(model)}, "
        f"validation on {evaluator.protocol()}")
    return fit(cfg, model, train_set, evaluator, out_dir, resume, collate_fn=None)


def load_model(cfg: DictConfig, checkpoint: str | Path, device="cpu"):
    """The full model (detection branch when the checkpoint has one) with a trained PRN."""
    return build.posenet_from_checkpoint(cfg, checkpoint, device, require=("prn",))


__all__ = ["PrnEvaluator", "load_model", "prepare_model", "train"]
