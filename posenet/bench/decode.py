"""Inference benchmark: the network time and the decoding time (peaks + grouping + mapping
back) per image, measured separately (``scripts/benchmark.py decode``).

Decoding is timed on a scene of ``people`` persons whose heatmaps are the codec's encoding of
real-looking poses (COCO-17 skeletons placed side by side with overlaps) and whose boxes are
their boxes, so the peak count and the overlap are those of a crowded image whatever the
weights; the network is timed on a random image of the stated size. The default PRN path
(int8) is also split into its parts (``decode_parts``: the peaks, then the parts the fast path
reports, ``posenet.inference.prn_fast.timed_parts``) at each PRN width.
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from posenet.bench.common import machine_info, time_call
from posenet.config import build
from posenet.inference.groupings import GROUPINGS, grouping_from_config
from posenet.inference.predictor import NetworkOutput, Predictor
from posenet.inference.prn_fast import PARTS, PRECISIONS, timed_parts

# The columns of the split (``decode_parts``): the peaks, the fast path's parts, what is left.
SPLIT = ("peaks",) + PARTS + ("rest",)

# A standing person (COCO-17 order) in a unit box, x and y in [0, 1].
_POSE = np.array([
    [0.50, 0.06], [0.54, 0.04], [0.46, 0.04], [0.58, 0.06], [0.42, 0.06], [0.68, 0.20], [0.32, 0.20],
    [0.76, 0.36], [0.24, 0.36], [0.78, 0.50], [0.22, 0.50], [0.62, 0.52], [0.38, 0.52], [0.62, 0.74],
    [0.38, 0.74], [0.62, 0.96], [0.38, 0.96]])


def crowd_scene(num_people: int, input_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(P, 17, 3) keypoints and (P, 4) boxes of ``num_people`` overlapping persons."""
    rng = np.random.default_rng(seed)
    cols = int(np.ceil(np.sqrt(num_people)))
    cell = input_size / cols
    keypoints, boxes = [], []
    for i in range(num_people):
        h = cell * rng.uniform(1.0, 1.4)  # taller than a cell: neighbours overlap
        w = 0.5 * h
        x0 = (i % cols) * cell + rng.uniform(-0.2, 0.2) * cell
        y0 = (i // cols) * cell + rng.uniform(-0.2, 0.2) * cell
        xy = _POSE * [w, h] + [x0, y0] + rng.normal(0, 0.02 * h, _POSE.shape)
        keypoints.append(np.concatenate([xy, np.full((17, 1), 2.0)], axis=1))
        boxes.append([xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()])
    return np.array(keypoints), np.array(boxes)


def crowd_network_output(predictor: Predictor, people: int, input_size: int) -> NetworkOutput:
    """What a perfect network would give for ``crowd_scene(people, input_size)``: the
    predictor's codec's heatmaps of the people and their boxes (score 1), image = input."""
    keypoints, boxes = crowd_scene(people, input_size)
    heat = torch.from_numpy(predictor.heatmap_codec((input_size, input_size)).encode(keypoints))
    return NetworkOutput(heat, torch.from_numpy(boxes).float(), torch.ones(people), np.eye(3)[:2],
                         (input_size, input_size), (input_size, input_size))


def benchmark_decode(cfg: DictConfig, input_size: int = 480, people: int = 20, checkpoint=None,
                     threads: int = 1, repeats: int = 30, prn_widths=None) -> dict:
    """Median milliseconds per image: network (random image), decoding with every grouping
    and, for the PRN, every output-layer precision (``prn.precision``) at each of
    ``prn_widths`` hidden units (default: the config's and the paper's 1024; a width other
    than the checkpoint's gets a randomly initialised PRN, which costs the same)."""
    torch.set_num_threads(threads)
    cfg = OmegaConf.merge(cfg, {"infer": {"input_size": input_size}})
    if checkpoint:
        predictor = Predictor.from_config(cfg, checkpoint)
    else:
        torch.manual_seed(0)
        predictor = Predictor.from_config(cfg, build.posenet_model(cfg, len(cfg.data.keypoints.names), detection=True,
                                                             prn=True))
    image = np.random.default_rng(0).integers(0, 255, (input_size, input_size, 3), dtype=np.uint8)
    network = time_call(lambda: predictor.network(image), warmup=2, repeats=repeats, budget_s=20)

    net = crowd_network_output(predictor, people, input_size)
    rows, parts = {}, {}

    widths = list(dict.fromkeys([int(cfg.prn.hidden)] + [int(w) for w in (prn_widths or [1024])]))
    runs = [(g, None) for g in GROUPINGS if g != "prn" and not GROUPINGS[g].bottom_up]  # the box groupings
    runs = [("prn", (w, precision)) for w in widths for precision in PRECISIONS] + runs
    for grouping, prn_run in runs:
        if prn_run is None:
            timed = predictor.with_grouping(grouping_from_config(cfg, grouping))
            name = f"{grouping} grouping"
        else:
            width, precision = prn_run
            cfg_run = OmegaConf.merge(cfg, {"prn": {"hidden": width, "precision": precision}})
            if width == cfg.prn.hidden:
                timed = predictor
            else:
                torch.manual_seed(0)
                timed = Predictor.from_config(cfg_run, build.posenet_model(cfg_run, len(cfg.data.keypoints.names),
                                                                     detection=True, prn=True))
            timed = timed.with_grouping(grouping_from_config(cfg_run, grouping))
            name = f"prn grouping, {precision} output layer, PRN hidden {width}"

        def decode(p=timed):
            xy, types, scores = p.peaks(net)
            return p.group(xy, types, scores, net.boxes, net.box_scores, net.matrix, net.image_size)

        people_found, _ = decode()
        rows[name] = {"timing": time_call(decode, warmup=3, repeats=repeats * 3, budget_s=10),
                      "peaks": int(timed.peaks(net)[0].shape[0]), "people": len(people_found)}
        if prn_run is not None and prn_run[1] == "int8":
            parts[prn_run[0]] = decode_parts(timed, net, repeats=repeats * 3)
    return {"network": network, "decode": rows, "parts": parts, "input_size": input_size, "people": people,
            "threads": threads,
            "model": f"ResNet-{cfg.model.backbone_depth}, FPN {cfg.model.fpn_channels}, detection FPN "
                     f"{cfg.detection.fpn_channels}, PRN hidden {cfg.prn.hidden}",
            "weights": str(checkpoint) if checkpoint else "random initialisation"}


def decode_parts(predictor: Predictor, net: NetworkOutput, repeats: int = 90, warmup: int = 3,
                 budget_s: float = 10.0) -> dict:
    """Median milliseconds of each part of decoding ``net`` (``SPLIT``): the peaks
    (``Predictor.peaks``), the PRN fast path's ``PARTS`` within ``Predictor.group``, and the rest
    of it (the grouping's preamble, mapping back, pose scores); ``total`` the median of the
    whole, ``cpu`` that of the thread's CPU time over the whole (below ``total`` where other
    processes took the core). Each median is taken over the same calls; the parts need not add
    up to the total."""
    samples = []
    spent = 0.0
    while len(samples) < warmup + repeats and (len(samples) < warmup + 5 or spent < budget_s):
        cpu = time.thread_time()
        start = time.perf_counter()
        xy, types, scores = predictor.peaks(net)
        peaks = time.perf_counter()
        with timed_parts() as times:
            predictor.group(xy, types, scores, net.boxes, net.box_scores, net.matrix, net.image_size)
        end = time.perf_counter()
        samples.append({"peaks": peaks - start, **times, "rest": end - peaks - sum(times.values()),
                        "total": end - start, "cpu": time.thread_time() - cpu})
        spent += end - start
    samples = samples[warmup:]
    return {key: 1e3 * statistics.median(s[key] for s in samples) for key in SPLIT + ("total", "cpu")} | {
        "runs": len(samples)}


def format_decode_table(result: dict) -> str:
    info = machine_info("cpu")
    machine = "; ".join(f"{k} {v}" for k, v in info.items())
    n = result["people"]
    lines = [
        "### Inference time per image",
        "",
        f"Machine: {machine}.",
        "",
        f"Protocol: median wall time per call. Network: one {result['input_size']}×{result['input_size']} image, "
        f"batch 1, {result['model']} ({result['weights']}), heatmaps + detection head + box "
        f"post-processing (NMS). Decoding: peaks (3×3 maxima, sub-pixel), grouping and mapping back, on the "
        f"encoded heatmaps of a crowded scene of {n} overlapping people with their {n} boxes; the PRN grouping "
        f"with each output-layer precision (`prn.precision`; int8 is the default, exact the dense reference) "
        f"at each PRN width. {result['threads']} torch thread(s) throughout.",
        "",
        "| part | ms per image | notes |",
        "|---|---:|---|",
        f"| network | {1e3 * result['network'].median_s:.1f} | {result['network'].runs} runs |",
    ]
    for name, row in result["decode"].items():
        lines.append(f"| decoding, {name} | {1e3 * row['timing'].median_s:.2f} | "
                     f"{row['peaks']} peaks, {row['people']} people, {row['timing'].runs} runs |")
    if result.get("parts"):
        lines += [
            "",
            "Where the default decoding's time goes (PRN grouping, int8 output layer), median ms per part over the "
            "same calls: peaks (3×3 maxima and sub-pixel refinement); selection (box grids, peak cells, the "
            "contested channels); first layer (the folded rows of the peak cells, to the last hidden layer); "
            "products (the int8 output layer and its ReLU, one product per keypoint type over its needed channels); "
            "softmax (the residual input's blur patches, softmax); window sums; assignment (best-first matching); "
            "fallback (the highest cell of unassigned keypoints); rest (the grouping's preamble, mapping back to "
            "the image, pose scores). CPU: the median thread CPU time of the whole call (below the total where "
            "other processes shared the core).",
            "",
            "| PRN hidden | total | CPU | " + " | ".join(SPLIT) + " | runs |",
            "|---:|---:|---:|" + "---:|" * len(SPLIT) + "---:|",
        ]
        for width, part in result["parts"].items():
            lines.append(f"| {width} | {part['total']:.2f} | {part['cpu']:.2f} | "
                         + " | ".join(f"{part[k]:.2f}" for k in SPLIT) + f" | {part['runs']} |")
    return "\n".join(lines) + "\n"


def run(cfg: DictConfig, family, *, input_size: int | None = None, people: int = 20, checkpoint=None,
        threads: int = 1, repeats: int | None = None, prn_widths=None) -> str:
    """``benchmark.py decode`` for MultiPoseNet (``family``): the table of ``benchmark_decode``."""
    result = benchmark_decode(cfg, input_size=input_size or 480, people=people, checkpoint=checkpoint,
                              threads=threads, prn_widths=prn_widths, **({} if repeats is None else {"repeats": repeats}))
    return format_decode_table(result)


__all__ = ["SPLIT", "benchmark_decode", "crowd_network_output", "crowd_scene", "decode_parts", "format_decode_table",
           "run"]
