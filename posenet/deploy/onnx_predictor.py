"""An exported model (``scripts/export_onnx.py``) as a posenet predictor: onnxruntime runs the
graph and the portable decoder (``posenet.portable``) does everything after it, and the
results come back as ``posenet.inference.predictor.Prediction`` objects. So ``infer_folder``,
pictures, video and the end-to-end evaluators run an export exactly as they run a checkpoint
(``infer.py`` / ``val_keypoint.py --runtime onnx``).

    from posenet.deploy.onnx_predictor import OnnxPredictor
    predictor = OnnxPredictor("export/model.onnx")    # or its model.json
    people = predictor.predict("photo.jpg")

The settings are the metadata's (``model.json``: what the exported run's config said);
``infer.*`` overrides change the decoder's thresholds and scales as they would a config's.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from posenet.data.keypoints import KeypointLayout
from posenet.errors import ConfigError, DataError
from posenet.evaluation import format_metrics
from posenet.inference.groupings import GROUPINGS, PafFieldGrouping
from posenet.inference.predictor import Prediction, as_rgb, draw_prediction
from posenet.inference.scales_and_flip import INPUT_SIDES
from posenet.portable.model import FORMAT, PoseModel, paf_options, timed

# The metadata's ``infer`` keys an override may set, and their types; ``infer.grouping`` is
# the export's (the PRN's weights are written only for it) and ``input_size`` of a fixed-size
# graph is checked against the graph by the decoder.
OVERRIDABLE = {"input_size": int, "input_side": str, "scales": list, "flip": bool, "peak_threshold": float, "max_peaks": int,
               "keypoint_threshold": float, "box_threshold": float, "box_scale": float,
               "picture_box_threshold": float}


def metadata_path(path: str | os.PathLike) -> Path:
    """The ``model.json`` of an export given as its ``.onnx`` or its ``.json`` file."""
    path = Path(path)
    meta = path if path.suffix == ".json" else path.with_suffix(".json")
    if not path.exists():
        raise ConfigError(f"{path}: no such file (an export of scripts/export_onnx.py: model.onnx + model.json)")
    if not meta.is_file():
        raise ConfigError(f"{path}: no metadata beside it ({meta.name} missing; scripts/export_onnx.py writes both)")
    return meta


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata of an export (``metadata_path``); ConfigError for a file that is not one."""

    meta_file = metadata_path(path)
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{meta_file}: cannot read it as JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConfigError(f"{meta_file}: not the metadata of a posenet ONNX export (no \"format\": \"{FORMAT}\")")
    return meta


def apply_overrides(meta: dict, overrides: Sequence[str]) -> dict:
    """``meta`` with ``infer.KEY=VALUE`` overrides applied to its ``infer`` section (values
    parsed as YAML, as config overrides are); ConfigError for any other key."""
    from omegaconf import OmegaConf

    if not overrides:
        return meta
    try:
        given = OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)))
    except Exception as e:  # noqa: BLE001 - omegaconf's parse errors are of several kinds
        raise ConfigError(f"cannot parse the overrides {list(overrides)}: {e}") from None
    others = [k for k in given if k != "infer"]
    if others or not isinstance(given.get("infer", {}), dict):
        raise ConfigError(f"with --runtime onnx only infer.* overrides apply (the rest is fixed in the export), "
                          f"got {', '.join(others) or 'infer'}")
    infer = dict(meta["infer"])
    for key, value in given.get("infer", {}).items():
        if key not in OVERRIDABLE:
            raise ConfigError(f"infer.{key} cannot be changed on an ONNX export (it is fixed at export time; "
                              f"overridable: {', '.join('infer.' + k for k in OVERRIDABLE)})")
        kind = OVERRIDABLE[key]
        try:
            infer[key] = [float(v) for v in value] if kind is list else kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"infer.{key}={value!r}: expected {kind.__name__}") from None
    if not infer["scales"]:
        raise ConfigError("infer.scales is empty: give at least one scale")
    if infer.get("input_side", "longer") not in INPUT_SIDES:
        raise ConfigError(f"infer.input_side must be one of {', '.join(INPUT_SIDES)}, got {infer['input_side']!r}")
    return {**meta, "infer": infer}


def layout_of(entry: dict) -> KeypointLayout:
    """The results' keypoint layout from the metadata's ``keypoints`` entry."""
    flip = entry.get("flip_index", list(range(len(entry["names"]))))
    pairs = [(i, int(j)) for i, j in enumerate(flip) if i < int(j)]
    sigmas = entry.get("sigmas") or [0.05] * len(entry["names"])
    return KeypointLayout(tuple(entry["names"]), tuple(tuple(p) for p in entry["skeleton"]), tuple(sigmas),
                          tuple(pairs))


class OnnxPredictor:
    """A posenet predictor over an export: ``run(rgb) -> Prediction``, ``predict``, ``draw``,
    ``describe``, ``layout`` and ``keypoint_threshold`` like the PyTorch predictors (see
    ``posenet.families.load_predictor``). ``providers`` / ``threads`` go to onnxruntime."""

    def __init__(self, path: str | os.PathLike, overrides: Sequence[str] = (), providers=None,
                 threads: int | None = None):

        meta = apply_overrides(read_metadata(path), overrides)
        self.path = metadata_path(path)
        onnx_file = self.path.parent / meta.get("onnx", "model.onnx")
        if not onnx_file.is_file():
            raise ConfigError(f"{self.path}: its network {onnx_file.name} is missing beside it")
        try:
            self.model = PoseModel(meta, base_dir=self.path.parent, providers=providers, threads=threads)
        except ValueError as e:
            raise ConfigError(f"{self.path}: {e}") from None
        self.meta = meta
        self.family = meta["family"]
        inf = meta["infer"]
        self.layout = layout_of(meta["keypoints"])
        self.input_size = int(inf["input_size"])
        self.scales = tuple(float(s) for s in inf["scales"])
        self.flip = bool(inf["flip"])
        self.keypoint_threshold = float(inf["keypoint_threshold"])
        self.box_threshold = float(inf["box_threshold"])
        self.picture_box_threshold = float(inf["picture_box_threshold"])
        if "grouping" in meta:  # boxes and a top-down grouping (MultiPoseNet)
            g = dict(meta["grouping"])
            options = {k: g[k] for k in ("margin", "height", "width", "input_sigma", "window") if k in g}
            self.grouping = GROUPINGS[g["name"]](**options)  # its name and description
        else:
            self.grouping = PafFieldGrouping(**paf_options(meta))

    def describe(self) -> str:
        scales = ", ".join(f"{s:g}" for s in self.scales)
        grouping = f"grouping {self.grouping.name}"
        size = self.meta["input"]["size"]
        graph = f"fixed {size[0]}x{size[1]}" if size else "dynamic"
        if self.meta.get("quantization"):
            graph += ", int8"
        return (f"onnxruntime ({self.meta.get('onnx', 'model.onnx')}, {graph} graph), {grouping}, longer side "
                f"{self.input_size} px, scales {scales}, flip {'on' if self.flip else 'off'}")

    def run(self, image) -> Prediction:
        """The people of one image (a path or an RGB / gray / RGBA array) and everything else."""
        return self.run_network([image])[0]()

    def run_network(self, images: Sequence) -> list[Callable[[], Prediction]]:
        """The network part of ``run`` for each image now (one at a time), and per image a
        function that decodes it into its ``Prediction`` (as ``Predictor.run_network``)."""
        pending = []
        for image in images:
            rgb = as_rgb(image)
            with self._as_data_error():
                (outputs, matrix, input_hw), network_ms = timed(self.model.network, rgb)
            pending.append(functools.partial(self._decode, outputs, matrix, input_hw, rgb.shape[:2], network_ms))
        return pending

    def _decode(self, outputs, matrix, input_hw, image_size, network_ms: float) -> Prediction:
        with self._as_data_error():
            result, decode_ms = timed(self.model.decode, outputs, matrix, input_hw, image_size)
        return Prediction(result["people"], np.asarray(result["boxes"]).reshape(-1, 4),
                          np.asarray(result["box_scores"]).reshape(-1), result["heatmaps"],
                          np.asarray(result["matrix"]), tuple(result["image_size"]),
                          {"network_ms": network_ms, "decode_ms": decode_ms},
                          stride=int(result["stride"]), pafs=result.get("pafs"))

    @contextlib.contextmanager
    def _as_data_error(self):
        try:
            yield
        except ValueError as e:
            raise DataError(f"{self.path}: {e}") from None

    def predict(self, image) -> list[dict]:
        return self.run(image).people

    def draw(self, rgb: np.ndarray, prediction: Prediction) -> dict[str, np.ndarray]:
        return draw_prediction(rgb, prediction, self.layout, self.keypoint_threshold, self.picture_box_threshold)


def validate(validation, path, log=print):
    """Run ``validation``, an end-to-end evaluator of an ``OnnxPredictor`` of the export at
    ``path`` (``Family.validate_export`` makes it): (metrics, evaluator, record), as
    ``Family.validate``."""

    log(f"protocol: {validation.protocol()}; export {path}")
    metrics = validation()
    log(format_metrics(metrics))
    log(f"decoding {metrics['decode_ms']:.2f} ms per image, network {metrics.get('network_ms', 0.0):.1f} ms")
    return metrics, validation, validation.metrics_record(metrics, path)


__all__ = ["OVERRIDABLE", "OnnxPredictor", "apply_overrides", "layout_of", "metadata_path",
           "read_metadata", "validate"]
