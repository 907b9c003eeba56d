"""Reproducible training data: seeds, the epoch sampler, and skipping of bad samples.

Why batches are exactly reproducible, also across a resume and for any ``num_workers``:

- the order of an epoch is a permutation drawn from ``seed + epoch`` (``DistributedSampler``'s
  rule, so one process with batch 2B sees the same samples per step as two with B each);
- a resumed epoch skips the samples already consumed at the sampler, without loading them;
- before each sample is loaded, Python's ``random``, numpy's global generator and torch's CPU
  generator are seeded from ``(seed, epoch, index)``, so a sample's augmentation does not depend
  on which worker loads it or on what was loaded before. In the main process
  (``num_workers=0``) the previous generator states are put back afterwards, so data loading
  never disturbs the model's own randomness (dropout).
"""
from __future__ import annotations

import hashlib
import random
from itertools import islice
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler, get_worker_info
from torch.utils.data import default_collate as _torch_default_collate

from posenet.errors import DataError


def derive_seed(*values: int) -> int:
    """A 63-bit seed that depends on every value (stable across processes and runs)."""
    data = b"".join(int(v).to_bytes(8, "little", signed=True) for v in values)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and every GPU).

    ``deterministic`` also asks cuDNN and torch for deterministic kernels (slower on a GPU;
    ops without a deterministic version only warn).
    """
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def _seed_host_generators(seed: int) -> None:
    # torch.default_generator only: torch.manual_seed would also reseed the GPUs.
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.default_generator.manual_seed(seed)


class BadSample(NamedTuple):
    """Placeholder for a sample the dataset could not produce."""

    index: int
    message: str


class LoadedBatch(NamedTuple):
    """What the training loader yields: the collated batch (None when every sample was bad),
    the number of good samples in it, and ``(index, message)`` of each bad one."""

    data: Any
    size: int
    bad: list


class SeededDataset(Dataset):
    """Wraps a map-style dataset; indexed by ``(epoch, index)`` keys from :class:`EpochSampler`.

    Seeds the host generators per sample (module docstring) and turns a
    :class:`~posenet.errors.DataError` or a ``None`` sample into a :class:`BadSample`.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        seed = derive_seed(self.seed, epoch, index)
        if get_worker_info() is not None:
            _seed_host_generators(seed)
            return self._load(index)
        saved = random.getstate(), np.random.get_state(), torch.default_generator.get_state()
        try:
            _seed_host_generators(seed)
            return self._load(index)
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.default_generator.set_state(saved[2])

    def _load(self, index: int):
        try:
            sample = self.dataset[index]
        except DataError as e:
            return BadSample(index, str(e) or f"sample {index}: {type(e).__name__}")
        if sample is None:
            return BadSample(index, f"{type(self.dataset).__name__} returned no sample for index {index}")
        return sample


class EpochSampler(Sampler):
    """This rank's share of an epoch's order, as ``(epoch, index)`` keys.

    The order is ``DistributedSampler``'s for ``(seed, epoch)``; ``set_epoch(epoch, skip)``
    also drops the first ``skip`` samples (the part of the epoch a resumed run has done).
    """

    def __init__(self, length: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0):
        self._order = DistributedSampler(range(length), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch = int(epoch)
        self.skip = int(skip)
        self._order.set_epoch(self.epoch)

    def __len__(self) -> int:
        return max(0, len(self._order) - self.skip)

    def __iter__(self):
        for index in islice(iter(self._order), self.skip, None):
            yield self.epoch, index


class WorkerSeeder:
    """``worker_init_fn``: seeds each worker from (seed, epoch, rank, worker id).

    Samples are reseeded one by one anyway; this covers whatever a worker does outside
    ``__getitem__`` (the collate function, for instance). Set ``epoch`` before each epoch's
    iterator is created (workers are not persistent).
    """

    def __init__(self, seed: int, rank: int = 0):
        self.seed = int(seed)
        self.rank = int(rank)
        self.epoch = 0

    def __call__(self, worker_id: int) -> None:
        _seed_host_generators(derive_seed(self.seed, self.epoch, self.rank, worker_id, 0x5EED))


class SkippingCollate:
    """Collates the good samples of a batch with ``collate_fn``; reports the bad ones."""

    def __init__(self, collate_fn: Callable[[Sequence], Any] | None = None):
        self.collate_fn = collate_fn or default_collate

    def __call__(self, samples: Sequence) -> LoadedBatch:
        good = [s for s in samples if not isinstance(s, BadSample)]
        bad = [(s.index, s.message) for s in samples if isinstance(s, BadSample)]
        return LoadedBatch(self.collate_fn(good) if good else None, len(good), bad)


def default_collate(samples: Sequence) -> Any:
    """torch's ``default_collate`` of ``(image, target)`` pairs: stacked images and targets."""
    return _torch_default_collate(samples)


def to_device(obj: Any, device: torch.device) -> Any:
    """``obj`` with every tensor in it (through dicts, lists and tuples) moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(to_device(v, device) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj
