"""Data loading at COCO scale: build time, main-process memory and per-worker memory over an epoch.

Protocol (``benchmark.py data --scale``):

* data: a COCO-sized annotation file (:func:`posenet.bench.scale_file.write_scale_coco`: 64,115
  images, 149,813 persons with keypoints, persons without keypoints, crowd RLEs; every image
  a link to one 640x480 JPEG), written to a temporary folder (or reused from ``scale_dir``).
* build: the training dataset of a config (default ``coco2017_r50.yaml``: its data and
  keypoint settings, 480 px, augmented) built from that file, as training builds it
  (``config.build.keypoint_dataset``); timed, with the main process's resident memory after
  it (RSS) and at its peak (VmHWM, the JSON parse included).
* loading: one shuffled pass over the epoch's indices (or the first ``num_samples`` of it)
  through a DataLoader with ``workers`` forked processes, wrapped as the engine wraps it.
  Each worker's RSS and PSS (``/proc/PID/smaps_rollup``: a page shared by n processes counts
  1/n, so PSS is what a worker really adds) are read after the first batch, at evenly spaced
  points from the end of a warm-up (25 batches: the workers' heaps and buffers grow to their
  working size there, whatever the annotations' layout) and after the last batch (the
  workers still alive). Samples per second exclude the first ``workers`` batches (start-up).
* split: the first ``profile_samples`` of those samples loaded again one by one in this
  process, one worker's view (:func:`~posenet.bench.data_loading.profile_split`): ms per
  sample in decoding, augmenting and building the targets (the masks and the heatmaps apart),
  and the collate.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from posenet.bench.common import cpu_model
from posenet.bench.data_loading import _keys, profile_split, split_rows
from posenet.config import build, load_config
from posenet.data.dataset import collate
from posenet.engine.loader import SeededDataset, SkippingCollate, WorkerSeeder
from posenet.bench.scale_file import (COCO_TRAIN_CROWDS, COCO_TRAIN_IMAGES, COCO_TRAIN_KEYPOINT_PERSONS,
                                     COCO_TRAIN_OTHER_PERSONS, write_scale_coco)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO / "configs" / "coco2017_r50.yaml"


def process_memory(pid: int | str = "self") -> dict[str, float]:
    """``rss_mb`` and ``pss_mb`` of a process (``/proc/PID/smaps_rollup``), and ``peak_rss_mb``
    (VmHWM) where ``/proc/PID/status`` gives it; empty where /proc cannot be read."""
    out: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss"):
                    out[f"{key.lower()}_mb"] = int(rest.split()[0]) / 1024
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    out["peak_rss_mb"] = int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def _worker_pids(iterator) -> list[int]:
    # The multiprocessing iterator keeps its worker processes in ``_workers`` (torch 1.x-2.x).
    return [w.pid for w in getattr(iterator, "_workers", [])]


def _scale_file(scale_dir: Path, counts: dict) -> tuple[Path, float]:
    """The annotation root: reused where ``scale_dir`` already holds a file of these counts
    (a marker beside it says so), else written; and the seconds spent writing it."""
    marker = scale_dir / "scale_counts.txt"
    wanted = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    if marker.is_file() and marker.read_text() == wanted and (scale_dir / "annotations").is_dir():
        return scale_dir, 0.0
    start = time.perf_counter()
    write_scale_coco(scale_dir, **counts)
    marker.write_text(wanted)
    return scale_dir, time.perf_counter() - start


def benchmark_data_scale(
    config: str | os.PathLike = DEFAULT_CONFIG,
    workers: int = 2,
    num_samples: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    points: int = 5,
    warmup_batches: int = 25,
    profile_samples: int = 200,
    scale_dir: str | os.PathLike | None = None,
    images: int = COCO_TRAIN_IMAGES,
    keypoint_persons: int = COCO_TRAIN_KEYPOINT_PERSONS,
    other_persons: int = COCO_TRAIN_OTHER_PERSONS,
    crowds: int = COCO_TRAIN_CROWDS,
    log=print,
) -> dict:
    """Run the protocol of the module docstring; returns a dict for :func:`format_data_scale`.

    ``num_samples`` None: the whole epoch. ``points``: memory readings from the end of the
    warm-up (``warmup_batches``: the workers' buffers and heaps reach their working size) to
    the last batch, besides the one after the first batch. ``profile_samples``: the first that
    many samples loaded again one by one in this process, split into stages
    (:func:`~posenet.bench.data_loading.profile_split`; 0: not). ``scale_dir``: where the file
    is written or reused (default: a temporary folder, removed afterwards). ``log``: progress
    lines (None: quiet).
    """

    log = log or (lambda message: None)
    if workers < 1:
        raise ValueError(f"the scale benchmark measures loader workers: need workers >= 1, got {workers}")
    counts = dict(images=images, keypoint_persons=keypoint_persons, other_persons=other_persons, crowds=crowds)
    with tempfile.TemporaryDirectory(prefix="posenet-scale-") as tmp:
        root, write_s = _scale_file(Path(scale_dir) if scale_dir else Path(tmp), counts)
        if write_s:
            log(f"wrote the COCO-sized file in {write_s:.0f} s")
        file_mb = (root / "annotations" / "person_keypoints_train2017.json").stat().st_size / 2**20
        cfg = load_config(config, [f"data.root={root}", "data.folders=coco2017", "data.train_split=train2017",
                                   "data.first_images=0"])
        before = process_memory()
        start = time.perf_counter()
        dataset = build.keypoint_dataset(cfg, cfg.data.train_split, train=True)
        build_s = time.perf_counter() - start
        after_build = process_memory()
        log(f"built the dataset of {len(dataset)} images in {build_s:.1f} s; main RSS "
            f"{after_build.get('rss_mb', float('nan')):.0f} MB")
        store = getattr(dataset, "store", None)

        n = len(dataset) if num_samples is None else min(int(num_samples), len(dataset))
        keys = _keys(list(range(len(dataset))), n, seed)
        loader = DataLoader(SeededDataset(dataset, seed), batch_size=batch_size, sampler=keys, num_workers=workers,
                            collate_fn=SkippingCollate(collate), worker_init_fn=WorkerSeeder(seed),
                            generator=torch.Generator().manual_seed(seed))
        num_batches = len(loader)
        warm = min(warmup_batches, num_batches - 1)
        at = sorted({0, warm, num_batches - 1,
                     *np.linspace(warm, num_batches - 1, max(points, 2)).round().astype(int).tolist()})
        readings, arrivals, sizes = [], [], []
        t0 = time.perf_counter()
        iterator = iter(loader)
        for b, batch in enumerate(iterator):
            arrivals.append(time.perf_counter())
            sizes.append(batch.size + len(batch.bad))
            if b in at:
                mem = [process_memory(pid) for pid in _worker_pids(iterator)]
                readings.append({"batch": b + 1, "samples": sum(sizes), "main": process_memory(), "workers": mem})
                if b:
                    log(f"  {sum(sizes)} samples: worker PSS "
                        + ", ".join(f"{m.get('pss_mb', float('nan')):.0f}" for m in mem) + " MB")
        del iterator
        skip = workers
        steady = (sum(sizes[skip:]) / (arrivals[-1] - arrivals[skip - 1])) if len(arrivals) > skip else float("nan")
        stages = profile_split(dataset, keys[:min(profile_samples, n)], seed, batch_size) if profile_samples else {}

    return {
        "config": str(config),
        "input_size": dataset.input_size,
        "images": len(dataset),
        "persons": counts,
        "file_mb": file_mb,
        "write_s": write_s,
        "build_s": build_s,
        "main_rss_before_mb": before.get("rss_mb", float("nan")),
        "main_rss_mb": after_build.get("rss_mb", float("nan")),
        "main_peak_rss_mb": after_build.get("peak_rss_mb", float("nan")),
        "store_mb": store.nbytes / 2**20 if store is not None else float("nan"),
        "workers": workers,
        "batch_size": batch_size,
        "num_samples": sum(sizes),
        "epoch_samples": len(dataset),
        "wall_s": arrivals[-1] - t0 if arrivals else float("nan"),
        "samples_per_s": steady,
        **stages,
        "readings": readings,
        "warmup_samples": next((r["samples"] for r in readings if r["batch"] == warm + 1), 0),
        "cpu": f"{cpu_model()} ({os.cpu_count()} logical cores)",
        "torch": torch.__version__,
    }


def format_data_scale(result: dict) -> str:
    """Markdown report of :func:`benchmark_data_scale`."""
    r = result
    H, W = r["input_size"]
    p = r["persons"]
    first, last = r["readings"][0], r["readings"][-1]

    def pss(reading):
        return [m.get("pss_mb", float("nan")) for m in reading["workers"]]

    def growth(start):
        return "; ".join(f"{100 * (b / a - 1):+.1f} %" for a, b in zip(pss(start), pss(last)))

    warm = next((x for x in r["readings"] if x["samples"] == r["warmup_samples"]), first)
    span = " (the whole epoch)" if r["num_samples"] >= r["epoch_samples"] else f" of the {r['epoch_samples']:,} of an epoch"
    lines = [
        f"### Data loading at COCO scale ({r['images']:,} images, {p['keypoint_persons']:,} persons with keypoints, "
        f"{p['other_persons']:,} without, {p['crowds']:,} crowd regions; {r['file_mb']:.0f} MB annotation file)",
        "",
        f"Training dataset of `{os.path.basename(r['config'])}` at {H}x{W}, DataLoader with {r['workers']} workers, "
        f"batch {r['batch_size']}, {r['num_samples']:,} samples{span}.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| dataset build (JSON parse + flat store) | {r['build_s']:.1f} s |",
        f"| main process RSS before the build, after it (peak) | {r['main_rss_before_mb']:.0f} MB, "
        f"{r['main_rss_mb']:.0f} MB ({r['main_peak_rss_mb']:.0f} MB) |",
        f"| flat annotation store | {r['store_mb']:.0f} MB |",
    ]
    for reading in r["readings"]:
        workers = reading["workers"]
        lines.append(
            f"| after {reading['samples']:,} samples: worker RSS / PSS | "
            + "; ".join(f"{m.get('rss_mb', float('nan')):.0f} / {m.get('pss_mb', float('nan')):.0f} MB" for m in workers)
            + f" (main RSS {reading['main'].get('rss_mb', float('nan')):.0f} MB) |")
    lines += [
        f"| worker PSS, last reading against the first | {growth(first)} |",
        f"| worker PSS, last reading against the one after the warm-up ({warm['samples']:,} samples) "
        f"| {growth(warm)} |",
        f"| samples/s (steady) | {r['samples_per_s']:.1f} |",
    ]
    if r.get("profile_samples"):
        per_core = 1e3 / r["sample_ms"] if r["sample_ms"] > 0 else float("nan")
        lines += [f"| one process, 1 OpenCV and torch thread, first {r['profile_samples']} samples: ms/sample "
                  f"| {r['sample_ms']:.2f} (= {per_core:.0f} samples/s per core) |", *split_rows(r)]
    lines += [
        "",
        f"Machine: {r['cpu']}; torch {r['torch']}.",
        "",
    ]
    return "\n".join(lines)


__all__ = ["benchmark_data_scale", "format_data_scale", "process_memory"]
