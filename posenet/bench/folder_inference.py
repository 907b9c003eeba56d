"""Folder inference throughput (``scripts/benchmark.py folder``): ``infer_folder`` one image at a
time against batches (``batch_size``) and loader workers (``workers``), on a folder of
coco-mini-sized photos.

Protocol: ``images`` JPEG files (quality 90) of coco's two usual sizes, 640x480 and 480x640,
written to a temporary folder: coco-mini's val2017 photos beside the repository in sorted order
(repeated as needed), each scaled to cover the size of its own orientation and cropped to it
centrally; where coco-mini is absent, synthetic pictures (smooth noise and shapes), every
fourth one upright. Each setting (batch, workers) runs ``infer_folder`` on the whole folder
without pictures; the settings are timed interleaved, in ``rounds`` rounds, after one untimed
run of each on a few images (primitives and worker start-up warmed), and each figure is the
median over the rounds. Reported: images per second of the whole run (worker start-up and the
first batch included) and in the steady state (after the first batch), the network's
milliseconds per image (each batch's time divided by its images) and the decoding's, and
whether the people equal those of one image at a time in the same round (per image the same
count, and keypoints matched within ``TOLERANCE_PX``: the results file's 3 decimals).
"""
from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from posenet.bench.common import machine_info
from posenet.config import build
from posenet.inference.folder import infer_folder

SIZES = {"landscape": (480, 640), "portrait": (640, 480)}  # (height, width)
# Keypoints of two runs are the same person within this many pixels (the results file rounds to
# 3 decimals, so two equal runs can differ by one unit in the last place).
TOLERANCE_PX = 2e-3
WARMUP_IMAGES = 8


def _cover(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``image`` scaled to cover ``hw`` (height, width) and cropped to it centrally."""
    h, w = image.shape[:2]
    s = max(hw[0] / h, hw[1] / w)
    scaled = cv2.resize(image, (max(hw[1], round(w * s)), max(hw[0], round(h * s))), interpolation=cv2.INTER_AREA)
    y, x = (scaled.shape[0] - hw[0]) // 2, (scaled.shape[1] - hw[1]) // 2
    return scaled[y: y + hw[0], x: x + hw[1]]


def _synthetic(i: int, hw: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(i)
    small = rng.integers(0, 256, (hw[0] // 16, hw[1] // 16, 3), dtype=np.uint8)
    image = cv2.resize(small, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC)
    for _ in range(6):
        centre = (int(rng.integers(0, hw[1])), int(rng.integers(0, hw[0])))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(image, centre, int(rng.integers(10, 80)), colour, -1)
    return image


def write_folder(folder: Path, images: int, source: Path | None = None) -> dict:
    """``images`` JPEG files of 640x480 / 480x640 in ``folder`` (see the module's protocol) from the
    photos in ``source`` (a folder of JPEGs) or synthetic; returns the count of each size."""
    folder.mkdir(parents=True, exist_ok=True)
    photos = sorted(source.glob("*.jpg")) if source is not None and source.is_dir() else []
    counts = {"landscape": 0, "portrait": 0}
    for i in range(images):
        if photos:
            image = cv2.imread(str(photos[i % len(photos)]))
            kind = "portrait" if image.shape[0] > image.shape[1] else "landscape"
        else:
            kind = "portrait" if i % 4 == 3 else "landscape"
            image = _synthetic(i, SIZES[kind])
        counts[kind] += 1
        cv2.imwrite(str(folder / f"{i:06d}.jpg"), _cover(image, SIZES[kind]), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return counts


def folder_predictor(cfg: DictConfig, family, checkpoint=None, device: str = "cpu"):
    """The predictor of ``checkpoint``, or of the config's model randomly initialised (seed 0,
    in eval mode, so batch norm is folded as a loaded checkpoint's is)."""
    if checkpoint:
        return family.predictor(cfg, checkpoint, device)
    torch.manual_seed(0)
    if family.name == "multiposenet":
        model = build.posenet_model(cfg, len(cfg.data.keypoints.names), detection=True, prn=True)
    else:
        model = family.network(cfg)
    return family.predictor_class.from_config(cfg, model.eval(), device)


def _people(out: Path) -> dict[int, list[np.ndarray]]:
    """Each image's people (keypoints (K, 3)) in a results file of ``infer_folder``."""
    people: dict[int, list[np.ndarray]] = {}
    for record in json.loads((out / "results.json").read_text()):
        people.setdefault(record["image_id"], []).append(np.asarray(record["keypoints"]).reshape(-1, 3))
    return people


def compare_people(reference: dict, other: dict) -> tuple[int, float]:
    """(images whose people differ, the largest keypoint difference in px among the matched):
    per image the same count, each person of ``reference`` matched to one of ``other`` within
    ``TOLERANCE_PX`` (scores of near ties may order them differently)."""
    differ, largest = 0, 0.0
    for image_id in set(reference) | set(other):
        a, b = reference.get(image_id, []), list(other.get(image_id, []))
        same = len(a) == len(b)
        for person in a if same else []:
            gaps = [float(np.abs(person - q).max()) for q in b]
            j = int(np.argmin(gaps))
            if gaps[j] > TOLERANCE_PX:
                same = False
                break
            largest = max(largest, gaps[j])
            b.pop(j)
        differ += not same
    return differ, largest


def benchmark_folder(cfg: DictConfig, family, *, images: int = 100, batches: Sequence[int] = (1, 4, 8),
                     workers: Sequence[int] = (0, 2), threads: int = 2, rounds: int = 3, checkpoint=None,
                     source: Path | None = None, device: str = "cpu", log=print) -> dict:
    """The figures of every (batch, workers) setting (see the module's protocol); the first
    setting of one image at a time in this process, (1, 0), is always run: it is the reference."""
    torch.set_num_threads(threads)
    predictor = folder_predictor(cfg, family, checkpoint, device)
    settings = list(dict.fromkeys([(1, 0)] + [(int(b), int(w)) for b in batches for w in workers]))
    runs: dict[tuple, list[dict]] = {s: [] for s in settings}
    with tempfile.TemporaryDirectory(prefix="posenet-folder-bench-") as tmp:
        tmp = Path(tmp)
        counts = write_folder(tmp / "images", images, source)
        write_folder(tmp / "warmup", WARMUP_IMAGES, source)
        quiet = {"pictures": False, "progress": False, "log": lambda *a: None}
        for batch, n in settings:
            infer_folder(predictor, tmp / "warmup", tmp / "out", batch_size=batch, workers=n, **quiet)
        for r in range(rounds):
            reference = None
            for batch, n in settings:
                out = tmp / f"out_{batch}_{n}"
                summary = infer_folder(predictor, tmp / "images", out, batch_size=batch, workers=n, **quiet)
                people = _people(out)
                if reference is None:
                    reference = people
                summary["differ"], summary["largest_px"] = compare_people(reference, people)
                runs[(batch, n)].append(summary)
                log(f"round {r + 1}/{rounds}: batch {batch}, {n} workers: {summary['images_per_s']:.2f} images/s, "
                    f"{summary['people']} people, {summary['differ']} images differ from batch 1")
    rows = []
    for (batch, n), summaries in runs.items():
        def median(key):
            values = [s[key] for s in summaries if s[key] is not None]
            return statistics.median(values) if values else None

        rows.append({"batch": batch, "workers": n, "images_per_s": median("images_per_s"),
                     "steady_images_per_s": median("steady_images_per_s"), "network_ms": median("network_ms"),
                     "decode_ms": median("decode_ms"), "people": summaries[-1]["people"],
                     "differ": max(s["differ"] for s in summaries),
                     "largest_px": max(s["largest_px"] for s in summaries)})
    info = machine_info(device)
    return {"rows": rows, "images": images, "counts": counts, "source": str(source) if source and source.is_dir()
            else None, "rounds": rounds, "threads": threads, "describe": predictor.describe(),
            "checkpoint": str(checkpoint) if checkpoint else None, "machine": info,
            "input_size": predictor.input_size}


def format_folder_table(result: dict, config: str, command: str, note: str = "") -> str:
    """The markdown table of ``benchmark_folder``'s result; ``note``: a sentence for its header
    (e.g. the machine's load)."""
    r = result
    counts = r["counts"]
    source = (f"coco-mini's val2017 photos ({r['source']})" if r["source"] else "synthetic pictures (coco-mini absent)")
    model = f"checkpoint {r['checkpoint']}" if r["checkpoint"] else "random initialisation"
    base = next(row for row in r["rows"] if (row["batch"], row["workers"]) == (1, 0))
    lines = [
        "### Folder inference: one image at a time, batches, loader workers",
        "",
        f"`infer_folder` without pictures over {r['images']} JPEG files ({counts['landscape']} of 640x480, "
        f"{counts['portrait']} of 480x640) made from {source}; {config}, {model}; {r['describe']}; "
        f"{r['threads']} torch thread{'s' if r['threads'] != 1 else ''}. "
        + (f"Median of {r['rounds']} rounds, the settings interleaved" if r["rounds"] > 1 else "One round")
        + f", each setting after an untimed run on {WARMUP_IMAGES} images. Steady: after the first batch. Network "
        f"and decoding: ms per image. People: per image the same count and keypoints within {TOLERANCE_PX:g} px "
        f"of batch 1's." + (f" {note}" if note else ""),
        "",
        "| batch | workers | images/s | steady images/s | × batch 1 | network ms | decode ms | people as batch 1 |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in r["rows"]:
        same = ("yes" if not row["differ"] else f"no: {row['differ']} images differ") + \
            (f" (max Δ {row['largest_px']:.3f} px)" if (row["batch"], row["workers"]) != (1, 0) else "")
        steady = f"{row['steady_images_per_s']:.2f}" if row["steady_images_per_s"] is not None else "–"
        lines.append(f"| {row['batch']} | {row['workers']} | {row['images_per_s']:.2f} | {steady} | "
                     f"{row['images_per_s'] / base['images_per_s']:.2f} | {row['network_ms']:.1f} | "
                     f"{row['decode_ms']:.2f} | {same} |")
    info = r["machine"]
    gpu = f", GPU {info['gpu']}" if "gpu" in info else ""
    lines += ["", f"Machine: {info['cpu']}{gpu}; torch {info['torch']}, bf16 {info['bf16'].split(' ')[0]}.",
              f"Command: `{command}`", ""]
    return "\n".join(lines)


def config_for(cfg: DictConfig, family, checkpoint, input_size: int | None) -> DictConfig:
    """``cfg`` with the benchmark's settings: ``infer.input_size`` when given; with a random
    MultiPoseNet the 20 best detections of every image kept (score and box thresholds 0), so
    that the decoding and the comparison of the people have work to do."""
    extra: dict = {}
    if input_size:
        extra["infer"] = {"input_size": int(input_size)}
    if not checkpoint and family.name == "multiposenet":
        extra.setdefault("infer", {})["box_threshold"] = 0.0
        extra["detection"] = {"score_threshold": 0.0, "max_detections": 20}
    return OmegaConf.merge(cfg, extra) if extra else cfg


__all__ = ["benchmark_folder", "compare_people", "config_for", "folder_predictor", "format_folder_table",
           "write_folder"]
