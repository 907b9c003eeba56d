"""The int8 network of an export: onnxruntime's static quantisation of ``model.onnx``, calibrated
on images of the model's own training data (``scripts/export_onnx.py --int8``).

    from posenet.deploy.quantize import quantize_export
    quantize_export("export/model.json", images)      # writes export/model.int8.onnx + .json

What it does:

* **Calibration inputs** are what the decoder feeds the graph: every image goes through the
  export's own ``PoseModel.network`` (its input geometry, padding, scales and flip) with a
  session that records each input and answers with the float32 graph's outputs, so the
  activation ranges are those of real use, not of a resized copy.
* **Quantisation** (``onnxruntime.quantization.quantize_static``): QDQ format, weights int8 per
  output channel, activations uint8 with one scale per tensor from the calibration's min-max
  ranges (percentile ranges scored no better and fail on inputs of several sizes); the graph is first shape-inferred and optimised (``quant_pre_process``). The layers that
  write the graph's outputs stay float32 (``float_outputs``): quantising them cost the OpenPose
  quickstart model 0.055 AP (0.496 -> 0.441) and keeping them 0.002. ``exclude``: more node
  types or names kept in float32.
* The int8 export is the float one beside it with another network file: ``model.int8.onnx``
  and ``model.int8.json`` (the same metadata, ``onnx`` pointing at the int8 graph, and a
  ``quantization`` entry recording how it was made), so ``infer.py --runtime onnx --onnx
  export/model.int8.onnx``, the portable decoder and ``val_keypoint.py --runtime onnx`` run it
  as any export.

Whether it is accurate enough is measured, never assumed: ``val_keypoint.py --runtime onnx``
on the int8 export beside the float one (docs/deployment.md has the figures). On an x86 CPU
without VNNI (AVX2 only), onnxruntime's uint8 × int8 products can saturate; ``reduce_range``
(7-bit weights) avoids that at some accuracy.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from posenet.config import build
from posenet.errors import ConfigError, DataError, PosenetError
from posenet.portable.model import PoseModel, read_image
from posenet.utils.io import atomic_path, write_json_atomic

SUFFIX = ".int8"


class RecordingSession:
    """An onnxruntime session that records every input it is given and answers with the wrapped
    session's outputs (``PoseModel``'s ``session``)."""

    def __init__(self, session):
        self.session = session
        self.feeds: list[dict[str, np.ndarray]] = []

    def run(self, names, feed: dict):
        self.feeds.append({k: np.array(v, copy=True) for k, v in feed.items()})
        return self.session.run(names, feed)


def float_session(meta: dict, base_dir: str | os.PathLike, threads: int | None = None):
    """The onnxruntime session of the float32 graph of ``meta``; ConfigError if it cannot open."""
    try:
        return PoseModel(meta, base_dir=base_dir, threads=threads).session
    except ValueError as e:
        raise ConfigError(str(e)) from None


def calibration_feeds(meta: dict, base_dir: str | os.PathLike, images: Iterable, *, threads: int | None = None,
                      progress: bool = True, log=print, session=None) -> list[dict[str, np.ndarray]]:
    """The graph inputs ``PoseModel.network`` makes of ``images`` (paths or RGB arrays; with
    flip and several scales, several per image), recorded on the float32 graph of ``meta``
    (``session``: its session, if already open). Unreadable images are skipped with one line
    each; none readable is an error."""
    recorder = RecordingSession(session or float_session(meta, base_dir, threads))
    model = PoseModel(meta, session=recorder, base_dir=base_dir)
    images = list(images)
    used = 0
    for image in tqdm(images, desc="calibrate", unit="img", disable=not progress):
        try:
            rgb = read_image(image) if isinstance(image, (str, os.PathLike)) else image
        except (OSError, ValueError) as e:
            log(f"warning: calibration skipped {image}: {e}")
            continue
        model.network(rgb)
        used += 1
    if not used:
        raise DataError(f"none of the {len(images)} calibration image(s) could be read")
    return recorder.feeds


def quantize_graph(float_path: str | os.PathLike, int8_path: str | os.PathLike, feeds: Sequence[dict], *,
                   per_channel: bool = True, reduce_range: bool = False, float_outputs: bool = True, exclude: Sequence[str] = ()) -> dict:
    """Write the int8 (QDQ) graph of ``float_path`` to ``int8_path`` (atomically), calibrated
    on ``feeds``; returns what was done (the metadata's ``quantization`` entry). With
    ``float_outputs`` the layers that write the graph's outputs (the last convolution of each
    map and detection head) stay float32: their outputs are read as values, not only ranked."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)

    if not feeds:
        raise ConfigError("no calibration inputs")
    float_path, int8_path = Path(float_path), Path(int8_path)
    class Reader(CalibrationDataReader):  # onnxruntime's reader over the recorded feeds
        def __init__(self):
            self._feeds = iter(feeds)

        def get_next(self):
            return next(self._feeds, None)

    reader = Reader()
    model = onnx.load(str(float_path))
    types = {n.op_type for n in model.graph.node}
    names = {n.name for n in model.graph.node}
    unknown = [e for e in exclude if e not in types and e not in names]
    if unknown:
        raise ConfigError(f"--int8-exclude {', '.join(unknown)}: no node of that type or name in the graph "
                          f"(types: {', '.join(sorted(types))})")
    start = time.perf_counter()
    with atomic_path(int8_path, ".onnx") as tmp:
        prepared = Path(f"{tmp}.pre.onnx")
        try:
            quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
            graph = onnx.load(str(prepared)).graph
            nodes = [n.name for n in graph.node]
            last = output_layers(graph) if float_outputs else set()
            excluded = [n.name for n in graph.node if n.op_type in exclude or n.name in exclude or n.name in last]
            quantize_static(str(prepared), str(tmp), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=excluded or None,
                            calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"CalibMovingAverage": False})
        except (ConfigError, PosenetError):
            raise
        except Exception as err:  # noqa: BLE001 - onnxruntime's quantiser raises many kinds
            raise PosenetError(f"int8 quantisation of {float_path} failed: {type(err).__name__}: "
                               f"{str(err).splitlines()[0] if str(err) else ''}") from err
        finally:
            prepared.unlink(missing_ok=True)
    return {"format": "QDQ", "weights": "int8, per output channel" if per_channel else "int8, per tensor",
            "activations": "uint8, per tensor", "method": "minmax", "reduce_range": bool(reduce_range),
            "float_outputs": bool(float_outputs), "calibration_inputs": len(feeds), "float_nodes": len(excluded),
            "nodes": len(nodes),
            "seconds": round(time.perf_counter() - start, 1)}


def map_differences(meta: dict, base_dir: str | os.PathLike, int8_graph: str, feeds: Sequence[dict],
                    count: int = 8, threads: int | None = None, session=None) -> dict[str, dict]:
    """How far the int8 graph's maps (heatmaps, and PAFs) are from the float graph's (``session``:
    its session, if already open) on the first ``count`` of ``feeds``: per output, the largest
    absolute difference, the mean one and the float maps' largest value."""
    maps = [n for n in ("heatmaps", "pafs") if n in meta["outputs"]]
    reference = session or float_session(meta, base_dir, threads)
    int8_session = PoseModel({**meta, "onnx": int8_graph}, base_dir=base_dir, threads=threads).session
    found = {n: {"max_abs": 0.0, "mean_abs": [], "largest": 0.0} for n in maps}
    for feed in feeds[:count]:
        ours = dict(zip(meta["outputs"], int8_session.run(None, feed)))
        ref = dict(zip(meta["outputs"], reference.run(None, feed)))
        for n in maps:
            diff = np.abs(ours[n] - ref[n])
            found[n]["max_abs"] = max(found[n]["max_abs"], float(diff.max()))
            found[n]["mean_abs"].append(float(diff.mean()))
            found[n]["largest"] = max(found[n]["largest"], float(np.abs(ref[n]).max()))
    return {n: {**v, "mean_abs": float(np.mean(v["mean_abs"])) if v["mean_abs"] else 0.0, "inputs": min(count, len(feeds))}
            for n, v in found.items()}


# Operators that only move or select values: the layer that computes an output lies behind them.
_LAYOUT_OPS = {"Slice", "Reshape", "Transpose", "Identity", "Squeeze", "Unsqueeze", "Flatten", "Split", "Gather",
               "Concat"}


def output_layers(graph) -> set[str]:
    """Names of the nodes that compute the graph's outputs: each output's producer, followed back
    through layout operators (slices, reshapes, ...) to the node that computes the values."""
    producer = {out: node for node in graph.node for out in node.output}
    found, todo, seen = set(), [o.name for o in graph.output], set()
    while todo:
        name = todo.pop()
        node = producer.get(name)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in _LAYOUT_OPS:
            todo += [i for i in node.input if i in producer]
        else:
            found.add(node.name)
    return found


def int8_paths(metadata_file: str | os.PathLike) -> tuple[Path, Path]:
    """(graph, metadata) of the int8 export beside the float export whose metadata is given."""
    meta_file = Path(metadata_file)
    stem = meta_file.with_suffix("")
    return Path(f"{stem}{SUFFIX}.onnx"), Path(f"{stem}{SUFFIX}.json")


def quantize_export(metadata_file: str | os.PathLike, images: Iterable, *, per_channel: bool = True, reduce_range: bool = False, float_outputs: bool = True,
                    exclude: Sequence[str] = (),
                    threads: int | None = None, source: str = "", progress: bool = True, log=print) -> dict:
    """The int8 export (module docstring) beside the float export of ``metadata_file`` (its
    ``model.json``), calibrated on ``images``; ``source`` says where they came from (recorded).
    Returns a summary: the files and the ``quantization`` entry."""
    meta_file = Path(metadata_file)
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{meta_file}: cannot read the export's metadata ({e})") from None
    if meta.get("quantization"):
        raise ConfigError(f"{meta_file}: already an int8 export; quantise the float one")
    base = meta_file.parent
    images = list(images)
    session = float_session(meta, base, threads)  # calibration's and the differences' reference
    feeds = calibration_feeds(meta, base, images, threads=threads, progress=progress, log=log, session=session)
    graph, meta_out = int8_paths(meta_file)
    entry = quantize_graph(base / meta.get("onnx", "model.onnx"), graph, feeds, per_channel=per_channel, reduce_range=reduce_range, float_outputs=float_outputs,
                           exclude=exclude)
    entry["calibration_images"] = len(images)
    if source:
        entry["calibration_source"] = source
    write_json_atomic(meta_out, {**meta, "onnx": graph.name, "quantization": entry}, indent=2)
    differences = map_differences(meta, base, graph.name, feeds, threads=threads, session=session)
    return {"files": {"onnx": str(graph), "metadata": str(meta_out)}, "quantization": entry,
            "differences": differences}


def training_images(cfg, count: int = 64) -> tuple[list[Path], str]:
    """``count`` images of the config's training split (evenly spaced over the images that hold
    people, in the annotation file's order; all of them when there are fewer), and a line
    naming them."""
    if count < 1:
        raise ConfigError(f"--calibration-images must be at least 1, got {count}")
    persons = build.coco_split(cfg.data, cfg.data.train_split)
    ids = persons.image_ids
    if not ids:
        raise DataError(f"{cfg.data.root}: the training split {cfg.data.train_split} has no images with people")
    picks = np.unique(np.linspace(0, len(ids) - 1, min(count, len(ids))).round().astype(int))
    paths = [persons.image_path(ids[i]) for i in picks]
    return paths, f"{len(paths)} images of the training split {cfg.data.train_split}"


__all__ = ["RecordingSession", "calibration_feeds", "float_session", "int8_paths", "quantize_export", "quantize_graph",
           "map_differences", "output_layers", "training_images"]
