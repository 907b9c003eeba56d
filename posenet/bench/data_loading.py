"""Data-pipeline benchmark (docs/design.md §8: at least 150 training samples/s with 2 workers).

Protocol:

* throughput: the training dataset wrapped exactly as the engine wraps it (per-sample
  seeding, bad-sample skipping, :func:`~posenet.data.dataset.collate`) in a real
  ``DataLoader`` with ``workers`` processes, batches of ``batch_size``, JPEG decode and every
  target included. The first ``workers`` batches, which carry the workers' start-up, are
  excluded from the steady rate; the overall rate, start-up included, is reported too.
* split: the same samples loaded one by one in this process with OpenCV and torch on one
  thread (one worker's view, :func:`profile_split`), time per sample in decoding, augmenting
  (drawing the matrix, warping and reordering the image) and building the targets (masks,
  keypoints, heatmaps, boxes; the masks and the heatmaps also apart), plus the collate per
  sample.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from posenet.bench.common import cpu_model
from posenet.data.coco import CocoPersons
from posenet.data.dataset import CocoKeypointDataset, collate
from posenet.engine.loader import SeededDataset, SkippingCollate, WorkerSeeder, derive_seed


def _keys(indices: list[int], num_samples: int, seed: int) -> list[tuple[int, int]]:
    """``num_samples`` (epoch, index) keys: one shuffled pass over ``indices`` after another."""
    keys: list[tuple[int, int]] = []
    epoch = 0
    while len(keys) < num_samples:
        order = np.random.default_rng(derive_seed(seed, epoch)).permutation(len(indices))
        keys.extend((epoch, indices[i]) for i in order)
        epoch += 1
    return keys[:num_samples]


def profile_split(dataset: CocoKeypointDataset, keys: list[tuple[int, int]], seed: int, batch_size: int) -> dict:
    """One worker's view of loading ``keys`` (epoch, index): the samples loaded one by one in
    this process, seeded as the engine seeds them, with OpenCV and torch on one thread as in a
    loader worker, collated ``batch_size`` at a time. ms per sample in total and per stage
    (``dataset.timings``): decode, augment, targets and, of the targets, masks and heatmaps."""
    threads, torch_threads = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    saved_timings, dataset.timings = dataset.timings, {}
    samples, total, collate_s, collated = [], 0.0, 0.0, 0
    saved = np.random.get_state()
    try:
        for epoch, index in keys:
            np.random.seed(derive_seed(seed, epoch, index) & 0xFFFFFFFF)
            t = time.perf_counter()
            samples.append(dataset[index])
            total += time.perf_counter() - t
            if len(samples) == batch_size:
                t = time.perf_counter()
                collate(samples)
                collate_s += time.perf_counter() - t
                collated += len(samples)
                samples = []
        timings = dataset.timings
    finally:
        np.random.set_state(saved)
        cv2.setNumThreads(threads)
        torch.set_num_threads(torch_threads)
        dataset.timings = saved_timings
    n = max(len(keys), 1)
    out = {f"{k}_ms": 1e3 * timings.get(k, 0.0) / n for k in ("decode", "augment", "targets", "masks", "heatmaps")}
    out.update(profile_samples=len(keys), sample_ms=1e3 * total / n,
               collate_ms=1e3 * collate_s / collated if collated else float("nan"))
    return out


def benchmark_data(
    root: str | os.PathLike,
    split: str = "train2017",
    input_size: int = 480,
    workers: int = 2,
    num_samples: int = 960,
    batch_size: int = 8,
    train: bool = True,
    folders: str = "coco2017",
    seed: int = 0,
    profile_samples: int | None = None,
    persons_only: bool = False,
    **dataset_kwargs,
) -> dict:
    """Throughput of the keypoint-stage data pipeline and its per-stage cost (module docstring).

    ``profile_samples`` (default: one pass over the split, at most ``num_samples``) sets how
    many samples the single-process split loads; ``persons_only`` leaves out the images
    without a (non-crowd) person, the cheaper half of COCO; ``dataset_kwargs`` go to
    :class:`CocoKeypointDataset`. Returns a dict; :func:`format_data_benchmark` prints it.
    """
    persons = CocoPersons(root, split, folders=folders)
    dataset = CocoKeypointDataset(persons, input_size=input_size, train=train, **dataset_kwargs)
    indices = list(range(len(dataset)))
    if persons_only:
        indices = np.flatnonzero(np.diff(persons.store.person_offsets) > 0).tolist()  # a non-crowd person
        if not indices:
            raise ValueError(f"{root} {split}: no image with a person")
    keys = _keys(indices, num_samples, seed)

    # --- throughput through a real DataLoader
    seeder = WorkerSeeder(seed)
    loader = DataLoader(
        SeededDataset(dataset, seed),
        batch_size=batch_size,
        sampler=keys,
        num_workers=workers,
        collate_fn=SkippingCollate(collate),
        worker_init_fn=seeder if workers else None,
        generator=torch.Generator().manual_seed(seed),
    )
    skip_batches = max(workers, 1)
    arrivals: list[float] = []
    sizes: list[int] = []
    bad = 0
    start = time.perf_counter()
    for batch in loader:
        arrivals.append(time.perf_counter())
        sizes.append(batch.size + len(batch.bad))
        bad += len(batch.bad)
    end = arrivals[-1] if arrivals else time.perf_counter()
    if len(arrivals) > skip_batches:
        steady = sum(sizes[skip_batches:]) / (end - arrivals[skip_batches - 1])
    else:
        steady = float("nan")

    # --- per-stage split, one process, one OpenCV thread
    n_profile = min(profile_samples or len(indices), num_samples)
    profiled = CocoKeypointDataset(persons, input_size=input_size, train=train, **dataset_kwargs)
    stages = profile_split(profiled, keys[:n_profile], seed, batch_size)

    return {
        "root": str(Path(root)),
        "split": split,
        "images": len(indices),
        "persons_only": persons_only,
        "train": train,
        "input_size": dataset.input_size,
        "heatmap_size": dataset.codec.heatmap_size,
        "workers": workers,
        "batch_size": batch_size,
        "num_samples": sum(sizes),
        "bad_samples": bad,
        "samples_per_s": steady,
        "samples_per_s_with_startup": sum(sizes) / (end - start),
        "wall_s": end - start,
        **stages,
        "cpu": f"{cpu_model()} ({os.cpu_count()} logical cores)",
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
    }


def split_rows(r: dict) -> list[str]:
    """The table rows of :func:`profile_split`'s stages (without its total)."""
    rows = [
        f"| &nbsp;&nbsp;decode | {r['decode_ms']:.2f} ms |",
        f"| &nbsp;&nbsp;augment (matrix, image warp) | {r['augment_ms']:.2f} ms |",
        f"| &nbsp;&nbsp;targets (masks, keypoints, heatmaps, boxes) | {r['targets_ms']:.2f} ms |",
    ]
    if "masks_ms" in r:
        rows += [f"| &nbsp;&nbsp;&nbsp;&nbsp;of which masks (regions rasterised, decoded, warped to the grid) "
                 f"| {r['masks_ms']:.2f} ms |",
                 f"| &nbsp;&nbsp;&nbsp;&nbsp;of which heatmaps | {r['heatmaps_ms']:.2f} ms |"]
    return rows + [f"| collate, per sample | {r['collate_ms']:.2f} ms |"]


def format_data_benchmark(result: dict) -> str:
    """Markdown report of :func:`benchmark_data`'s result."""
    r = result
    H, W = r["input_size"]
    h, w = r["heatmap_size"]
    mode = "training (augmented)" if r["train"] else "validation (fit and pad)"
    per_worker = 1e3 / r["sample_ms"] if r["sample_ms"] > 0 else math.nan
    lines = [
        f"### Data pipeline: {r['split']} of {r['root']} ({r['images']} images"
        f"{', those with persons' if r.get('persons_only') else ''})",
        "",
        f"{mode} samples, {H}x{W} input, all targets ({h}x{w} heatmaps, segmentation, ignore mask, "
        f"boxes), JPEG decode included.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| samples/s, DataLoader with {r['workers']} workers, batch {r['batch_size']} (steady) "
        f"| **{r['samples_per_s']:.1f}** |",
        f"| samples/s including worker start-up | {r['samples_per_s_with_startup']:.1f} |",
        f"| samples loaded (bad) | {r['num_samples']} ({r['bad_samples']}) in {r['wall_s']:.1f} s |",
        f"| one process, 1 OpenCV thread: ms/sample | {r['sample_ms']:.2f} (= {per_worker:.0f} samples/s per core) |",
        *split_rows(r),
        "",
        f"Machine: {r['cpu']}; torch {r['torch']}, OpenCV {r['opencv']}, numpy {r['numpy']}. "
        f"Split measured over {r['profile_samples']} samples.",
        "",
    ]
    return "\n".join(lines)
