"""Detection stage: the detection FPN and RetinaNet person heads on a keypoint-stage model;
official COCO person box AP.

The stage starts from the keypoint stage's checkpoint and by default freezes the trunk and the
keypoint branch (``detection.freeze``), so the keypoint outputs of the model it writes are
exactly those of the checkpoint it started from. Its checkpoints hold the whole model, keypoint
branch included: later stages and inference load one file.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from posenet.config import build
from posenet.data.transforms import transform_points
from posenet.errors import ConfigError
from posenet.evaluation import BOX_METRICS, box_results, evaluate_boxes, format_metrics
from posenet.evaluation.base import DatasetEvaluator
from posenet.stages.fitting import fit, is_resuming, seeded, stage_dir, trainable


class DetectionEvaluator(DatasetEvaluator):
    """COCO person box AP on a validation dataset (every non-crowd person is a ground-truth
    box, with or without keypoints; crowd regions are COCO's ignore regions).

    Callable as the trainer's ``evaluate(model, epoch)``; ``last_results`` keeps the results
    of the last call (COCO results format, original image pixels).
    """

    description = "validate boxes"
    reported_metrics = BOX_METRICS

    def __init__(self, dataset, options: dict, batch_size: int = 4, num_workers: int = 0,
                 max_images: int = 0, progress: bool = True):
        super().__init__(dataset, batch_size, num_workers, max_images, progress)
        self.options = dict(options)

    @classmethod
    def from_config(cls, cfg: DictConfig, dataset=None, progress: bool = True) -> "DetectionEvaluator":
        """``eval`` + ``detection`` → the evaluator on ``dataset`` (default: the validation
        inputs of ``data.val_split``)."""
        return cls(build.validation_inputs(cfg, dataset), build.detection_options(cfg), **build.evaluation_loader(cfg),
                   progress=progress)

    def record_fields(self) -> dict:
        return {"iou_type": "bbox"}

    def protocol(self) -> str:
        o = self.options
        return (f"{self.persons.split} of {self.persons.root} ({len(self.dataset)} images), single scale "
                f"(longer side {max(self.input_size)} px), person boxes with score > {o['score_threshold']:g}, "
                f"NMS IoU {o['nms_threshold']:g}, at most {o['max_detections']} per image")

    def evaluate(self, model, batches) -> dict:
        device = next(model.parameters()).device
        results = []
        for images, targets in batches:
            outputs = model(images.to(device))
            size = tuple(images.shape[-2:])
            for det, meta in zip(model.detect(outputs, [size] * len(images), **self.options), targets["meta"]):
                results += self._to_image(det, meta)
        self.last_results = results
        return evaluate_boxes(self.persons.coco, results, image_ids=self.image_ids)

    @staticmethod
    def _to_image(det: dict, meta: dict) -> list[dict]:
        """Boxes from input pixels back to the original image (validation inputs are only
        scaled and padded, so mapping two corners is exact), clipped to it."""
        boxes = det["boxes"].cpu().double().numpy()
        if not len(boxes):
            return []
        corners = transform_points(meta["inverse"], boxes.reshape(-1, 2)).reshape(-1, 4)
        h, w = meta["original_size"]
        corners[:, 0::2] = corners[:, 0::2].clip(0, w)
        corners[:, 1::2] = corners[:, 1::2].clip(0, h)
        keep = (corners[:, 2] > corners[:, 0]) & (corners[:, 3] > corners[:, 1])
        scores = det["scores"].cpu().numpy()[keep]
        return box_results([meta["image_id"]] * int(keep.sum()), corners[keep], scores)


def prepare_model(cfg: DictConfig, num_keypoints: int, init: str | Path | None):
    """The model with the detection branch, the ``init`` checkpoint's weights (a keypoint-stage
    checkpoint, or a detection-stage one), the configured parts frozen and the training tasks set."""
    model = build.posenet_model(cfg, num_keypoints, detection=True)
    if init is not None:
        load_init(model, init)
    try:
        freeze(model, list(cfg.detection.freeze))
    except ValueError as e:
        raise ConfigError(f"detection.freeze: {e}") from None
    return model


def freeze(model, parts) -> None:
    """Freeze ``parts`` of ``model`` (names of ``posenet.models.posenet.PARTS``; ValueError for
    one it cannot freeze) and set its training tasks: detection, and keypoints unless the
    keypoint branch is frozen."""
    parts = list(parts)
    model.freeze(parts)
    model.train_tasks = {"detection"} | (set() if "keypoint" in parts else {"keypoints"})


def load_init(model, path: str | Path) -> None:
    """Load a keypoint-stage checkpoint into ``model``; its detection branch keeps its fresh
    weights unless the checkpoint has some. A checkpoint of another model is one clear error."""
    build.load_earlier_stage(model, path, "detection")


def train(cfg: DictConfig, init: str | Path | None = None, out_dir: str | Path | None = None,
          resume: bool = False, log=print) -> list[dict]:
    """Train the detection stage of ``cfg`` from the keypoint checkpoint ``init``; returns the
    per-epoch records. Resuming an existing run needs no ``init`` (its last.pt holds everything)."""

    out_dir = stage_dir(cfg, "detection", out_dir)
    resuming = is_resuming(out_dir, resume)
    if init is None and not resuming:
        raise ConfigError("the detection stage starts from a keypoint-stage checkpoint: give --init CKPT")
    cfg = build.stage_config(cfg, "detection")
    train_set = build.keypoint_dataset(cfg, cfg.data.train_split, train=True)
    evaluator = DetectionEvaluator.from_config(cfg)
    model = seeded(cfg, lambda: prepare_model(cfg, train_set.layout.num_keypoints, None if resuming else init))
    log(f"detection stage: {len(train_set)} training images, {trainable(model)}, validation on "
        f"{evaluator.protocol()}")
    return fit(cfg, model, train_set, evaluator, out_dir, resume)


def load_model(cfg: DictConfig, checkpoint: str | Path, device="cpu"):
    """The full model (detection branch required) with the weights of ``checkpoint``."""
    return build.posenet_from_checkpoint(cfg, checkpoint, device, require=("detection",))


def validate(cfg: DictConfig, checkpoint: str | Path, device: str = "cpu", log=print):
    """Person box AP of ``checkpoint`` on ``data.val_split``; returns (metrics, evaluator)."""
    evaluator = DetectionEvaluator.from_config(cfg)
    log(f"protocol: {evaluator.protocol()}")
    model = load_model(cfg, checkpoint, device)
    metrics = evaluator(model)
    log("person box AP (COCO bbox):\n" + format_metrics(metrics, BOX_METRICS[:6] + ("APML",)))
    return metrics, evaluator


__all__ = ["DetectionEvaluator", "freeze", "load_init", "load_model", "prepare_model", "train", "validate"]
