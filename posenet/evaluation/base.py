"""What every evaluator shares, and its two kinds.

:class:`Evaluator`: the evaluated images of a ``CocoPersons`` split (``image_ids``, cut to
``max_images``), ``protocol()``, ``last_results`` and ``metrics_record``. A subclass
implements ``protocol()``, ``items()`` (what one evaluation iterates) and ``evaluate(model,
items) -> metrics``; calling the evaluator (``evaluator(model, epoch)``, as the trainer does)
runs ``evaluate`` under ``torch.no_grad()`` with a progress bar over the items and a model in
eval mode, restores the model's mode and adds ``val_seconds``.

* :class:`DatasetEvaluator`: the items are the batches ``(images, targets)`` of a loader over
  a ``CocoKeypointDataset`` of validation inputs;
* :class:`ImageEvaluator`: the items are the image ids; each image's annotations (or file)
  are read by the subclass.
"""
from __future__ import annotations

import time
from typing import Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from posenet.data.dataset import collate
from posenet.data.images import read_image
from posenet.errors import DataError
from posenet.evaluation.coco_eval import KEYPOINT_METRICS, evaluate_keypoints, keypoint_results


class Evaluator:
    """Base of the validation-set evaluators over the images of ``persons``."""

    description = "validate"
    # what ``metrics_record`` keeps of the metrics, where present
    reported_metrics: tuple[str, ...] = KEYPOINT_METRICS[:6]

    def __init__(self, persons, image_ids: Iterable[int] | None = None, max_images: int = 0, progress: bool = True):
        ids = list(persons.image_ids if image_ids is None else image_ids)
        self.persons = persons
        self.image_ids = ids[:max_images] if max_images else ids
        self.progress = progress
        self.last_results: list[dict] = []

    def protocol(self) -> str:
        raise NotImplementedError

    def items(self) -> Iterable:
        """What one evaluation iterates (with the progress bar)."""
        raise NotImplementedError

    def evaluate(self, model, items: Iterable) -> dict:
        """Metrics of ``model`` (in eval mode, on its device; or None) over ``items``; sets
        ``last_results``."""
        raise NotImplementedError

    def keypoint_metrics(self, results: list[dict], sigmas) -> dict:
        """COCO keypoint metrics of ``results`` on the evaluated images, kept as ``last_results``."""
        self.last_results = results
        return evaluate_keypoints(self.persons.coco, results, image_ids=self.image_ids, sigmas=sigmas)

    def record_fields(self) -> dict:
        """What ``metrics_record`` says besides the metrics, the protocol and the checkpoint."""
        return {}

    def metrics_record(self, metrics: dict, checkpoint) -> dict:
        """What ``--metrics-out``, the stages' ``val_metrics.json`` and the quickstart write: the
        reported metrics, the protocol and the checkpoint."""
        record = {k: metrics[k] for k in self.reported_metrics if k in metrics}
        return {**record, **self.record_fields(), "protocol": self.protocol(), "checkpoint": str(checkpoint)}

    @torch.no_grad()
    def __call__(self, model=None, epoch: int | None = None) -> dict:
        module = model if isinstance(model, torch.nn.Module) else None
        was_training = module is not None and module.training
        if module is not None:
            module.eval()
        start = time.perf_counter()
        try:
            items = tqdm(self.items(), desc=self.description, leave=False, disable=not self.progress, mininterval=5)
            metrics = self.evaluate(model, items)
        finally:
            if module is not None:
                module.train(was_training)
        metrics["val_seconds"] = time.perf_counter() - start
        return metrics


class DatasetEvaluator(Evaluator):
    """Base of the evaluators over a ``CocoKeypointDataset`` of validation inputs (its first
    ``max_images``; 0: all), batched by a loader."""

    def __init__(self, dataset, batch_size: int = 4, num_workers: int = 0, max_images: int = 0,
                 progress: bool = True):
        base = dataset.dataset if isinstance(dataset, Subset) else dataset
        super().__init__(base.persons, base.image_ids[: len(dataset)], max_images, progress)
        if len(self.image_ids) < len(dataset):
            dataset = Subset(dataset, range(len(self.image_ids)))
        self.dataset = dataset
        self.layout = base.layout
        self.codec = base.codec
        self.input_size = base.input_size
        self.loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate)

    def items(self) -> Iterable:
        return self.loader


class ImageEvaluator(Evaluator):
    """Base of the evaluators that take the images of ``persons`` (its first ``max_images``;
    0: all) one by one: the items are the image ids."""

    def __init__(self, persons, max_images: int = 0, progress: bool = True, log=print):
        super().__init__(persons, max_images=max_images, progress=progress)
        self.log = log
        self.skipped = 0  # images of the last evaluation that could not be read

    def items(self) -> Iterable:
        return self.image_ids

    def stored_rgb(self, image_id: int) -> np.ndarray | None:
        """The image as an RGB array in its stored pixel frame, which COCO's annotations refer
        to (EXIF orientation not applied, unlike ``infer.py``); None, with one warning line and
        counted in ``skipped``, when it cannot be read."""

        try:
            return np.ascontiguousarray(read_image(self.persons.image_path(image_id))[:, :, ::-1])
        except DataError as e:
            self.log(f"warning: skipped {e}")
            self.skipped += 1
            return None

    @staticmethod
    def people_results(image_id: int, people: list[dict]) -> list[dict]:
        """COCO results entries of the people of one image (a predictor's records: "keypoints"
        (K, 3) in image pixels, "score")."""
        if not people:
            return []
        return keypoint_results([image_id] * len(people), np.stack([p["keypoints"][:, :2] for p in people]),
                                np.stack([p["keypoints"][:, 2] for p in people]), [p["score"] for p in people])

    def pipeline_metrics(self, results: list[dict], sigmas, network_ms: list[float], decode_ms: list[float],
                         skipped: int = 0) -> dict:
        """The keypoint metrics of ``results`` with the mean network and decoding times per
        image and the number of images skipped as unreadable."""
        metrics = self.keypoint_metrics(results, sigmas)
        metrics["decode_ms"] = float(np.mean(decode_ms)) if decode_ms else 0.0
        if network_ms:
            metrics["network_ms"] = float(np.mean(network_ms))
        metrics["skipped_images"] = skipped
        return metrics


__all__ = ["DatasetEvaluator", "Evaluator", "ImageEvaluator"]
