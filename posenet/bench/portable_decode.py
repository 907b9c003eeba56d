"""Decoding time of the portable decoder (``posenet.portable``) beside posenet's own, on
the same crowded scene: peaks + grouping + mapping back per image, network excluded.

    python -c "from posenet.bench.portable_decode import main; main()" [CONFIG] [PEOPLE] [SIZE] [key=value ...]

(config overrides last, e.g. ``prn.precision=exact`` for posenet's dense PRN output layer, which
the portable decoder computes).

The scene is ``posenet.bench.decode.crowd_scene`` (``people`` overlapping persons, their
encoded heatmaps and their boxes), the weights a random initialisation of the config's model
(the PRN's cost does not depend on its weights); the two decoders run interleaved, call for
call, so that the load of the machine falls on both alike; one torch thread.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import torch
from omegaconf import OmegaConf

from posenet.bench.decode import crowd_scene
from posenet.codecs import KeypointHeatmapCodec
from posenet.config import build, load_config
from posenet import portable
from posenet.deploy.export import metadata, prn_arrays
from posenet.inference.predictor import NetworkOutput, Predictor


def benchmark(cfg, people: int = 20, input_size: int = 480, repeats: int = 40) -> dict:
    """{grouping: {"posenet": (median ms, min ms), "portable": (median ms, min ms), "people",
    "keypoints"}} for the PRN and the greedy grouping."""
    torch.set_num_threads(1)
    keypoints, boxes = crowd_scene(people, input_size)
    heat = KeypointHeatmapCodec((input_size, input_size), sigma=float(cfg.keypoint.sigma)).encode(keypoints)
    eye = np.eye(3)[:2]
    rows = {}
    for grouping in ("prn", "greedy"):
        c = OmegaConf.merge(cfg, {"infer": {"grouping": grouping, "input_size": input_size}})
        torch.manual_seed(0)
        model = build.posenet_model(c, len(c.data.keypoints.names), detection=True, prn=True).eval()
        predictor = Predictor.from_config(c, model)
        meta = metadata(c, model, dynamic=True)
        arrays = prn_arrays(model.prn)
        layers = [(arrays[f"w{i}"], arrays[f"b{i}"]) for i in range(sum(k.startswith("w") for k in arrays))]
        ours = portable.PoseModel(meta, prn=portable.PoseResidualMLP(layers, model.prn.grid_shape, c.prn.softmax,
                                                                     c.prn.input_sigma))
        net = NetworkOutput(torch.from_numpy(heat), torch.from_numpy(boxes).float(), torch.ones(people), eye,
                            (input_size, input_size), (input_size, input_size))

        def theirs():
            xy, types, scores = predictor.peaks(net)
            return predictor.group(xy, types, scores, net.boxes, net.box_scores, net.matrix, net.image_size)[0]

        def mine():
            coords, scores, valid = ours._peaks(heat)
            types = np.broadcast_to(np.arange(len(heat))[:, None], valid.shape)[valid]
            return ours.group(coords[valid].astype(np.float64), types, scores[valid].astype(np.float64),
                              boxes.astype(np.float32), np.ones(people, np.float32), eye,
                              (input_size, input_size))[0]

        found = {"posenet": theirs(), "portable": mine()}
        times = {"posenet": [], "portable": []}
        for _ in range(repeats):
            for name, f in (("posenet", theirs), ("portable", mine)):
                start = time.perf_counter()
                f()
                times[name].append(1e3 * (time.perf_counter() - start))
        rows[grouping] = {name: (float(np.median(t)), float(min(t))) for name, t in times.items()}
        rows[grouping].update(
            people={k: len(v) for k, v in found.items()},
            keypoints={k: int(sum((p["keypoints"][:, 2] > 0).sum() for p in v)) for k, v in found.items()},
            precision=getattr(predictor.grouping, "precision", "exact") if grouping == "prn" else "-")
    return rows


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    overrides = [a for a in argv if "=" in a]
    argv = [a for a in argv if "=" not in a]
    config = argv[0] if argv else "configs/synthetic_small.yaml"
    people = int(argv[1]) if len(argv) > 1 else 20
    size = int(argv[2]) if len(argv) > 2 else 480
    rows = benchmark(load_config(config, overrides), people, size)
    print(f"decoding per image, {people} people at {size} px ({config}), median / min ms of interleaved calls")
    for grouping, row in rows.items():
        print(f"{grouping:6s} posenet ({row['precision']}) {row['posenet'][0]:7.2f} / {row['posenet'][1]:7.2f}   "
              f"portable {row['portable'][0]:7.2f} / {row['portable'][1]:7.2f}   people {row['people']}, "
              f"keypoints {row['keypoints']}")


__all__ = ["benchmark", "main"]
