"""What the validation-set evaluators share: the dataset (cut to ``max_images``), its loader,
the evaluated image ids, the batches with the model in eval mode, and ``last_results``.

A subclass implements ``protocol()`` and ``evaluate(model, batches) -> metrics``; calling the
evaluator (``evaluator(model, epoch)``, as the trainer does) runs it under ``torch.no_grad()``
with the model in eval mode, restores the model's mode and adds ``val_seconds``.
"""
from __future__ import annotations

import time
from typing import Iterable

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from posenet.data.dataset import collate


class DatasetEvaluator:
    """Base of the evaluators over a ``CocoKeypointDataset`` of validation inputs."""

    description = "validate"

    def __init__(self, dataset, batch_size: int = 4, num_workers: int = 0, max_images: int = 0,
                 progress: bool = True):
        if max_images and max_images < len(dataset):
            dataset = Subset(dataset, range(max_images))
        self.dataset = dataset
        base = dataset.dataset if isinstance(dataset, Subset) else dataset
        self.persons = base.persons
        self.layout = base.layout
        self.codec = base.codec
        self.input_size = base.input_size
        self.image_ids = list(base.image_ids[: len(dataset)])
        self.loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate)
        self.progress = progress
        self.last_results: list[dict] = []

    def protocol(self) -> str:
        raise NotImplementedError

    def evaluate(self, model, batches: Iterable) -> dict:
        """Metrics of ``model`` (in eval mode, on its device) over ``batches`` of
        ``(images, targets)``; sets ``last_results``."""
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, model, epoch: int | None = None) -> dict:
        was_training = model.training
        model.eval()
        start = time.perf_counter()
        try:
            batches = tqdm(self.loader, desc=self.description, leave=False, disable=not self.progress, mininterval=5)
            metrics = self.evaluate(model, batches)
        finally:
            model.train(was_training)
        metrics["val_seconds"] = time.perf_counter() - start
        return metrics


__all__ = ["DatasetEvaluator"]
