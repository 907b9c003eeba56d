"""The OpenPose family's decoding benchmark (``scripts/benchmark.py decode --family openpose``):
the part peaks of the 18 heatmaps and the PAF grouping, timed separately, per image.

The scene: ``people`` synthetic people (the synthetic generator's posed figures, facing the
camera), each scaled into its own cell of a grid over the image so that no two overlap, and
their perfect targets: the 18 parts' Gaussian heatmaps and the 19 limbs' PAFs on the stride-8
grid. The peak count is then that of ``people`` whole people whatever the weights, and the
decode should find every one of them.
"""
from __future__ import annotations

import math
import statistics
import time

import numpy as np
import torch
from omegaconf import DictConfig

from posenet.bench.common import Timing, machine_info, time_call
from posenet.codecs import KeypointHeatmapCodec
from posenet.codecs.paf import PafCodec
from posenet.config import build
from posenet.data.keypoints import OPENPOSE_18
from posenet.data.synthetic.figure import sample_figure
from posenet.inference.paf_predictor import PafPredictor


def grid_shape(num_people: int) -> tuple[int, int]:
    """(rows, columns) of the cells of ``num_people`` people on a square image: cells taller
    than wide, as people are."""
    cols = max(1, math.ceil(math.sqrt(1.25 * num_people)))
    return max(1, math.ceil(num_people / cols)), cols


def separated_people(num_people: int, input_size: int, seed: int = 0, fill: float = 0.8) -> np.ndarray:
    """(P, 18, 3) parts (x, y, v = 2) of ``num_people`` posed people, person i scaled to
    ``fill`` of cell i of a ``grid_shape`` grid over an ``input_size`` square and centred in
    it: no two people overlap."""
    rng = np.random.default_rng(seed)
    rows, cols = grid_shape(num_people)
    cell = np.array([input_size / cols, input_size / rows])  # width, height
    coco = np.zeros((num_people, 17, 3))
    for i in range(num_people):
        xy = sample_figure(rng, float(cell[1]), (0.0, 0.0), views="front").keypoints.astype(np.float64)
        lo, hi = xy.min(0), xy.max(0)
        scale = fill * (cell / np.maximum(hi - lo, 1e-6)).min()
        centre = (np.array([i % cols, i // cols]) + 0.5) * cell
        coco[i, :, :2] = (xy - (lo + hi) / 2) * scale + centre
        coco[i, :, 2] = 2
    return OPENPOSE_18.encode(coco)


def recovered_people(truth: np.ndarray, found: np.ndarray, tolerance: float) -> int:
    """How many true people (P, K, 3) a decoded person (N, K, 3) stands for: it has every
    labelled part of that person within ``tolerance`` pixels (each decoded person counts once)."""
    recovered, used = 0, set()
    for person in truth:
        labelled = person[:, 2] > 0
        for n, candidate in enumerate(found):
            if n in used or not (candidate[labelled, 2] > 0).all():
                continue
            if np.abs(candidate[labelled, :2] - person[labelled, :2]).max() <= tolerance:
                recovered += 1
                used.add(n)
                break
    return recovered


def time_in_rounds(fns: dict, warmup: int = 5, repeats: int = 100, budget_s: float = 10.0) -> dict:
    """Median wall time (``Timing``) of each of ``fns`` (name -> callable), timed one after the
    other round after round, so that a busy spell of a shared machine falls on all alike; at
    most ``repeats`` rounds after ``warmup``, fewer (at least 5) once ``budget_s`` is spent."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples = {name: [] for name in fns}
    start = time.perf_counter()
    for done in range(1, repeats + 1):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
        if done >= min(5, repeats) and time.perf_counter() - start > budget_s:
            break
    return {name: Timing(statistics.median(s), len(s), s) for name, s in samples.items()}


def benchmark_paf_decode(people: int = 20, input_size: int = 368, stride: int = 8, sigma: float = 7.0,
                         threads: int = 1, repeats: int = 100, warmup: int = 5, seed: int = 0,
                         peak_threshold: float = 0.05, max_peaks: int | None = None,
                         sampling: str = "bilinear") -> dict:
    """Median milliseconds per image (``time_in_rounds``) of the peaks
    (``KeypointHeatmapCodec.decode``), the PAF grouping (``PafCodec.decode``) and both, on the
    perfect targets of ``separated_people``, the PAFs read as ``sampling`` says;
    ``max_peaks`` per part defaults to max(20, people). Also how many of the people the decode
    recovered (every part within one cell) and how many it returned."""
    torch.set_num_threads(threads)
    size = (input_size, input_size)
    max_peaks = max(20, people) if max_peaks is None else int(max_peaks)
    truth = separated_people(people, input_size, seed)
    heat_codec = KeypointHeatmapCodec(size, stride=stride, sigma=sigma, peak_threshold=peak_threshold,
                                      max_peaks=max_peaks)
    paf_codec = PafCodec(size, OPENPOSE_18.layout.skeleton, stride=stride, sampling=sampling)
    heat = torch.from_numpy(heat_codec.encode(truth))  # as the network gives them
    pafs = torch.from_numpy(paf_codec.encode(truth))

    def group(peaks):
        return paf_codec.decode(peaks.coords.numpy(), peaks.scores.numpy(), peaks.valid.numpy(), pafs)

    peaks = heat_codec.decode(heat)
    found = group(peaks)
    timings = time_in_rounds({"peaks": lambda: heat_codec.decode(heat), "grouping": lambda: group(peaks),
                              "total": lambda: group(heat_codec.decode(heat))}, warmup=warmup, repeats=repeats)
    return {
        **timings,
        "peak_count": int(peaks.valid.sum()), "people": people, "decoded": len(found.keypoints),
        "recovered": recovered_people(truth, found.keypoints, tolerance=float(stride)),
        "input_size": input_size, "grid": paf_codec.heatmap_size, "stride": stride, "sigma": sigma,
        "threads": threads, "warmup": warmup, "sampling": sampling, "peak_threshold": peak_threshold, "max_peaks": max_peaks,
        "cells": grid_shape(people),
    }


def time_paf_network(cfg, input_size: int, checkpoint=None, threads: int = 1, repeats: int = 10) -> dict:
    """Median time of the PAF predictor's network part (resize, forward, no flip, one scale) on
    a random ``input_size`` square image, with ``cfg``'s network (random initialisation, or the
    weights of ``checkpoint``)."""
    from omegaconf import OmegaConf

    torch.set_num_threads(threads)
    cfg = OmegaConf.merge(cfg, {"infer": {"input_size": input_size, "scales": [1.0], "flip": False},
                                "model": {"pretrained": "none"}})
    torch.manual_seed(0)
    model = build.paf_network_from_checkpoint(cfg, checkpoint) if checkpoint else build.paf_network(cfg)
    predictor = PafPredictor.from_config(cfg, model)
    image = np.random.default_rng(0).integers(0, 255, (input_size, input_size, 3), dtype=np.uint8)
    timing = time_call(lambda: predictor.network(image), warmup=2, repeats=repeats, budget_s=30)
    return {"timing": timing, "network": cfg.openpose.network,
            "weights": str(checkpoint) if checkpoint else "random initialisation"}


def _median_and_fastest(timing: Timing) -> str:
    return f"{1e3 * timing.median_s:.2f} | {1e3 * min(timing.samples):.2f}"


def format_paf_decode_table(result: dict) -> str:
    info = machine_info("cpu")
    machine = "; ".join(f"{k} {v}" for k, v in info.items())
    n, s, (gh, gw) = result["people"], result["input_size"], result["grid"]
    rows, cols = result["cells"]
    lines = [
        "### PAF decoding time per image (OpenPose family)",
        "",
        f"Machine: {machine}.",
        "",
        f"Protocol: median and fastest wall time per call over {result['total'].runs} rounds that "
        f"call each part in turn, after {result['warmup']} warm-up rounds, torch.set_num_threads("
        f"{result['threads']}). Scene: {n} synthetic people (posed figures facing the "
        f"camera), each in its own cell of a {rows}×{cols} grid over a {s}×{s} input (no overlaps); perfect "
        f"targets: the 18 parts' heatmaps (σ {result['sigma']:g} px) and the 19 PAFs on the stride-{result['stride']} "
        f"grid ({gh}×{gw}). Peaks: `KeypointHeatmapCodec.decode` (3×3 maxima ≥ {result['peak_threshold']:g}, up to "
        f"{result['max_peaks']} per part, sub-pixel); grouping: `PafCodec.decode` (PAF sampling: "
        f"{result['sampling']}). A person is recovered when a "
        f"decoded person has all its parts within one cell.",
        "",
        "| part | ms per image (median) | fastest | notes |",
        "|---|---:|---:|---|",
        f"| peaks | {_median_and_fastest(result['peaks'])} | {result['peak_count']} peaks |",
        f"| grouping | {_median_and_fastest(result['grouping'])} | {result['recovered']} of {n} people recovered, "
        f"{result['decoded']} decoded |",
        f"| total | {_median_and_fastest(result['total'])} | peaks + grouping |",
    ]
    if "network" in result:
        net = result["network"]
        t = net["timing"]
        lines.append(f"| network ({net['network']}, {net['weights']}) | {1e3 * t.median_s:.1f} | "
                     f"{1e3 * min(t.samples):.1f} | one {s}×{s} image, batch 1, {t.runs} runs |")
    return "\n".join(lines) + "\n"


def run(cfg: DictConfig, family, *, input_size: int | None = None, people: int = 20, checkpoint=None,
        threads: int = 1, repeats: int | None = None, prn_widths=None) -> str:
    """``benchmark.py decode`` for the OpenPose family (``family``): peaks + PAF grouping on
    perfect targets and, when ``cfg`` is a config of that family, its network on a random image."""
    size = input_size or 368
    result = benchmark_paf_decode(people=people, input_size=size, threads=threads, sampling=cfg.openpose.paf_sampling,
                                  **({} if repeats is None else {"repeats": repeats}))
    if cfg.model.family == family.name:
        result["network"] = time_paf_network(cfg, size, checkpoint=checkpoint, threads=threads)
    return format_paf_decode_table(result)


__all__ = ["benchmark_paf_decode", "format_paf_decode_table", "grid_shape", "recovered_people", "time_paf_network",
           "run", "separated_people", "time_in_rounds"]
