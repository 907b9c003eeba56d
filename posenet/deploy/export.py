"""The ONNX export of both model families and everything the portable decoder needs beside it.

An export is a folder (the contract with the portable decoder, ``posenet/portable/``, whose
docstring gives the output layout in full)::

    model.onnx          the network: RGB 0..255 in (normalisation in the graph), raw maps out
    model.json          the metadata (``metadata``): input geometry, keypoint layout, codec,
                        anchors, box coder, thresholds, grouping
    model.prn.npz       MultiPoseNet with a PRN: its Linear layers (``save_prn``)
    posenet_decoder/    a copy of the decoder package, so that the folder runs on its own
                        (``python EXPORT/posenet_decoder EXPORT/model.json photo.jpg``)

The graph holds only what is dense and the same for every image: the trunk, the pyramids and
the heads. Peaks, anchors, box decoding, NMS and grouping stay in the decoder (numpy), with
every number of theirs written into ``model.json`` from the same builders that configure the
PyTorch predictors (``Predictor.from_config`` / ``PafPredictor.from_config``, the model's anchor generator
and box coder), so that the two runtimes cannot drift apart.

Graph outputs. MultiPoseNet: ``heatmaps`` (1, K, H/4, W/4), keypoints only (the segmentation
channel is a training aid), then per detection level ``cls_logits_i`` (1, A*C, h, w) and
``box_deltas_i`` (1, A*4, h, w), the raw convolutions of ``RetinaNetHead`` before its flatten.
OpenPose family: the last stage's ``heatmaps`` (1, P+1, H/s, W/s) and ``pafs`` (1, 2L, H/s, W/s).
The input's sides must be multiples of ``input.size_divisor``: the decoder pads (with the mean
colour, which normalises to the PyTorch models' zero padding) and crops the outputs back.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import math
import os
import shutil
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from posenet import portable
from posenet.config import build
from posenet.deploy import quantize
from posenet.errors import ConfigError, PosenetError
from posenet.inference.folder import list_images
from posenet.inference.paf_predictor import PafPredictor
from posenet.inference.predictor import Predictor
from posenet.models import PoseNet
from posenet.models.backbone import IMAGE_MEAN, IMAGE_STD, normalize_image
from posenet.models.openpose import PafNetwork
from posenet.portable.boxes import flatten_level
from posenet.portable.model import FAMILIES, FORMAT, VERSION
from posenet.utils.io import atomic_path, write_json_atomic

INPUT_NAME = "image"
DEFAULT_SIDE = 480  # the example input's longer side when none is given
DECODER = Path(portable.__file__).parent  # the package shipped beside the graph
DECODER_NAME = "posenet_decoder"


# ----------------------------------------------------------------------------- the graphs


class FamilyGraph(nn.Module):
    """What the export does for one model family: the graph of its network (``forward``), the
    predictor whose settings the metadata records, the metadata's family section and the
    comparison of the graph's outputs with the network's own. ``family`` names the family
    (``model.family``), ``model_class`` its networks; ``require``: the checkpoint parts the
    export needs."""

    family = ""
    model_class: type = nn.Module
    predictor_class: type = object
    require: tuple[str, ...] = ()
    caffe = False  # the input preprocessing: "caffe" (BGR, x / 256 - 0.5) or ImageNet's

    @classmethod
    def load_model(cls, cfg: DictConfig, checkpoint):
        """The network of ``checkpoint`` under ``cfg``, with the parts the export needs."""
        raise NotImplementedError

    def geometry(self, predictor) -> tuple[int, int]:
        """(the smallest input side, the heatmap stride)."""
        raise NotImplementedError

    def sections(self, predictor, prn_file: str) -> dict:
        """The metadata's sections of this family."""
        raise NotImplementedError

    def differences(self, ours: dict, reference: dict, path) -> dict:
        """Abs differences per output name between the graph's outputs (onnxruntime) and the
        network's own forward."""
        raise NotImplementedError


class MultiPoseNetGraph(FamilyGraph):
    """A ``PoseNet`` with a detection branch as the exported graph: normalisation, trunk,
    keypoint FPN and subnet (heatmaps only), detection FPN and the head's towers and final
    convolutions per level, called directly so that the outputs are the raw per-level maps."""

    family = "multiposenet"
    model_class = PoseNet
    predictor_class = Predictor
    require = ("detection",)

    def __init__(self, model):
        super().__init__()
        if not getattr(model, "has_detection", False):
            raise ConfigError("the MultiPoseNet export needs person boxes: this model has no detection branch "
                              "(train the detection stage: scripts/train_detection.py)")
        self.model = model
        self.num_levels = len(model.detection_head.anchor_generator.sizes)

    @property
    def divisor(self) -> int:
        return int(self.model.size_divisor)

    @property
    def output_names(self) -> list[str]:
        L = range(self.num_levels)
        return ["heatmaps", *(f"cls_logits_{i}" for i in L), *(f"box_deltas_{i}" for i in L)]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m = self.model
        features = m.trunk(normalize_image(image))
        heatmaps = m.keypoint_subnet(m.keypoint_fpn(features), intermediate=False)["heatmaps"]
        levels = m.detection_fpn(features)
        head = m.detection_head
        cls_logits = [head.cls_logits(head.cls_tower(f)) for f in levels]
        box_deltas = [head.box_deltas(head.box_tower(f)) for f in levels]
        return (heatmaps, *cls_logits, *box_deltas)

    @classmethod
    def load_model(cls, cfg, checkpoint):
        return build.posenet_from_checkpoint(cfg, checkpoint, require=cls.require)

    def geometry(self, predictor) -> tuple[int, int]:
        return 32, int(self.model.output_stride)

    def sections(self, predictor, prn_file: str) -> dict:
        model = self.model
        head = model.detection_head
        anchors = head.anchor_generator
        out = {"detection": {
            "num_classes": int(head.num_classes),
            "anchors": {"sizes": list(anchors.sizes), "strides": list(anchors.strides),
                        "ratios": list(anchors.ratios), "scales": list(anchors.scales)},
            "box_coder": {"std": list(head.box_coder.std), "clamp": float(head.box_coder.clamp)},
            "postprocess": _postprocess_options(head, predictor.detect_options),
        }}
        grouping = predictor.grouping
        if grouping.name == "prn":
            out["grouping"] = {"name": "prn", "margin": float(grouping.margin), "height": int(grouping.height),
                               "width": int(grouping.width), "input_sigma": float(grouping.input_sigma),
                               "window": int(grouping.window), "peak_input": grouping.peak_input,
                               "grid": grouping.grid, "softmax": model.prn.softmax, "weights": prn_file}
            if (grouping.height, grouping.width) != (model.prn.height, model.prn.width):
                raise ConfigError(f"prn.height/width {grouping.height}x{grouping.width} differ from the "
                                  f"checkpoint's PRN grid {model.prn.height}x{model.prn.width}")
        elif grouping.name == "greedy":
            out["grouping"] = {"name": "greedy", "margin": float(grouping.margin)}
        else:
            raise ConfigError(f"infer.grouping {grouping.name} has no portable decoder: use prn or greedy")
        return out

    def differences(self, ours: dict, reference: dict, path) -> dict:
        diffs = {"heatmaps": np.abs(ours["heatmaps"] - reference["heatmaps"].float().cpu().numpy())}
        head = self.model.detection_head
        for key, per_anchor in (("cls_logits", head.num_classes), ("box_deltas", 4)):
            level_names = [n for n in self.output_names if n.startswith(key)]
            flat = [flatten_level(ours[n], per_anchor) for n in level_names]
            expected = reference["detection"][key][0].float().cpu().numpy()
            if sum(len(f) for f in flat) != len(expected):
                raise PosenetError(f"{path}: the levels hold {sum(len(f) for f in flat)} anchors, "
                                   f"the PyTorch head {len(expected)}")
            parts = np.split(expected, np.cumsum([len(f) for f in flat])[:-1])
            diffs.update({n: np.abs(f - p) for n, f, p in zip(level_names, flat, parts)})
        return diffs


class PafGraph(FamilyGraph):
    """A ``PafNetwork`` (any of the OpenPose family) as the exported graph: its own input
    preprocessing, then the last stage's part heatmaps (with the background) and PAFs."""

    family = "openpose"
    model_class = PafNetwork
    predictor_class = PafPredictor
    output_names = ["heatmaps", "pafs"]

    def __init__(self, model):
        super().__init__()
        self.model = model
        # ``PafNetwork.normalize`` reads its preprocessing from a buffer at every call, which
        # ``torch.export`` cannot trace through; it is fixed for an export, so it is read here.
        self.caffe = model.preprocessing == "caffe"

    @property
    def divisor(self) -> int:
        return int(self.model.input_divisor)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = image.float().flip(-3) / 256.0 - 0.5 if self.caffe else normalize_image(image)
        pafs, heatmaps = self.model._stage_outputs(x)[-1]
        return heatmaps, pafs

    @classmethod
    def load_model(cls, cfg, checkpoint):
        return build.paf_network_from_checkpoint(cfg, checkpoint)

    def geometry(self, predictor) -> tuple[int, int]:
        return int(predictor.stride), int(predictor.stride)

    def sections(self, predictor, prn_file: str) -> dict:
        parts = predictor.parts
        return {"openpose": {
            "parts": _layout_entry(parts.layout, sigmas=False),
            "sources": [[int(i) for i in src] for src in parts.sources],
            "paf": predictor.grouping.options(),
        }}

    def differences(self, ours: dict, reference: dict, path) -> dict:
        return {n: np.abs(ours[n] - reference[n].float().cpu().numpy()) for n in self.output_names}


# The export graph of each family (``Family.export_graph`` names them too).
GRAPHS = (MultiPoseNetGraph, PafGraph)


def family_of(model) -> str:
    """The family a model belongs to (by its class)."""
    for graph in GRAPHS:
        if isinstance(model, graph.model_class):
            return graph.family
    raise ConfigError(f"cannot export a {type(model).__name__}: not a model of the families {', '.join(FAMILIES)}")


def graph_class(family: str) -> type[FamilyGraph]:
    """The ``FamilyGraph`` of the model family named ``family``."""
    for graph in GRAPHS:
        if graph.family == family:
            return graph
    raise ConfigError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")


def graph_of(model, family: str | None = None) -> FamilyGraph:
    """The export graph of ``model`` (its family's ``FamilyGraph``), in eval mode; ``family``,
    when given, must be the model's."""
    own = family_of(model)
    if family is not None and graph_class(family).family != own:
        raise ConfigError(f"the model is a {own} model, not a {family} one")
    return graph_class(own)(model).eval()


def round_up(value: int, divisor: int) -> int:
    return int(divisor * math.ceil(int(value) / divisor))


# ----------------------------------------------------------------------------- ONNX export


@contextlib.contextmanager
def _quiet():
    """The exporter's progress lines and warnings go to a buffer (shown when it fails)."""
    buffer = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        warnings.simplefilter("ignore")
        yield buffer


def _example(side_hw: tuple[int, int], device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return (torch.rand((1, 3, *side_hw), generator=generator) * 255).to(device)


def export_onnx(model, path: str | os.PathLike, *, family: str, input_size: int | None = None,
                dynamic: bool = False, opset: int = 18, log=None) -> list[str]:
    """Write ``model``'s graph (``graph_of``) to ``path`` as one ONNX file; returns the output
    names, in order.

    ``input_size``: the side of the fixed (1, 3, S, S) input, rounded up to the model's
    divisor (default 480); with ``dynamic`` the height and width are free multiples of the
    divisor and ``input_size`` only sizes the example the exporter traces (two blocks of the
    divisor at least). The dynamo exporter
    (``torch.export``) is tried first; should it fail, the TorchScript one (``dynamic_axes``);
    ``log`` gets one line when that happens."""
    if opset < 17:
        raise ConfigError(f"opset {opset}: the export needs opset 17 or newer")
    graph = graph_of(model, family)
    side = round_up(input_size or DEFAULT_SIDE, graph.divisor)
    if dynamic:
        # an example of one block per side shrinks the deepest feature maps to 1x1, which
        # torch.export specialises (a size of 1 is a constant to it): trace two blocks or more
        side = max(side, 2 * graph.divisor)
    device = next(model.parameters()).device
    example = _example((side, side), device)
    names = graph.output_names
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    common = dict(input_names=[INPUT_NAME], output_names=names, opset_version=opset)
    with torch.no_grad():
        try:
            with _quiet():
                shapes = None
                if dynamic:
                    blocks_h = torch.export.Dim("height_blocks", min=1, max=8192 // graph.divisor)
                    blocks_w = torch.export.Dim("width_blocks", min=1, max=8192 // graph.divisor)
                    shapes = ({2: graph.divisor * blocks_h, 3: graph.divisor * blocks_w},)
                torch.onnx.export(graph, (example,), str(path), dynamo=True, external_data=False,
                                  dynamic_shapes=shapes, verbose=False, **common)
        except Exception as err:  # noqa: BLE001 - any failure of the new exporter: the old one
            if log is not None:
                log(f"the dynamo exporter failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                    "exporting with the TorchScript exporter")
            axes = {INPUT_NAME: {2: "height", 3: "width"}, **{n: {2: f"{n}_h", 3: f"{n}_w"} for n in names}}
            with _quiet() as buffer:
                try:
                    torch.onnx.export(graph, (example,), str(path), dynamo=False,
                                      dynamic_axes=axes if dynamic else None, **common)
                except Exception as again:  # noqa: BLE001
                    tail = buffer.getvalue().strip().splitlines()[-3:]
                    raise PosenetError(f"ONNX export failed: {type(again).__name__}: {again}"
                                       + (f" ({' / '.join(tail)})" if tail else "")) from again
    return names


def check_onnx(path: str | os.PathLike) -> dict:
    """``onnx.checker`` (full check, shapes inferred) of an exported file; returns its opset,
    input and output names; PosenetError when the check fails."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise PosenetError(f"{path}: no such ONNX file")
    try:
        onnx.checker.check_model(str(path), full_check=True)
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - the checker's errors are of several kinds
        raise PosenetError(f"{path}: onnx.checker failed: {str(err).strip().splitlines()[0]}") from None
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return {"opset": int(opset), "inputs": [i.name for i in proto.graph.input],
            "outputs": [o.name for o in proto.graph.output]}


def _session(path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare_onnxruntime(model, path: str | os.PathLike, *, family: str | None = None,
                        sizes: Sequence[tuple[int, int]] | None = None, threads: int | None = None) -> dict:
    """Max abs difference per output between onnxruntime on ``path`` and ``model``'s own eval
    forward (its padding and cropping included) on random 0..255 images of ``sizes`` (height,
    width); the detection levels are compared after the contract's flattening
    (``flatten_level``) against the head's flattened outputs, so the layout is checked too.
    Default sizes: the graph's fixed size, or for a dynamic graph a square and a non-square
    multiple of the divisor."""
    graph = graph_of(model, family)
    session = _session(path, threads)
    names = [o.name for o in session.get_outputs()]
    if names != graph.output_names:
        raise PosenetError(f"{path}: outputs {names}, expected {graph.output_names}")
    shape = session.get_inputs()[0].shape
    if sizes is None:
        if all(isinstance(d, int) for d in shape[2:]):
            sizes = [tuple(shape[2:])]
        else:
            d = graph.divisor
            sizes = [(round_up(256, d), round_up(256, d)), (round_up(192, d), round_up(320, d))]
    device = next(model.parameters()).device
    worst: dict[str, float] = dict.fromkeys(names, 0.0)
    for hw in sizes:
        image = _example(tuple(hw), device)
        ours = dict(zip(names, session.run(None, {INPUT_NAME: image.cpu().numpy()})))
        with torch.no_grad():
            ref = model.eval()(image)
        diffs = graph.differences(ours, ref, path)
        for n, diff in diffs.items():
            worst[n] = max(worst[n], float(diff.max()) if diff.size else 0.0)
    return worst


# ----------------------------------------------------------------------------- metadata


def _predictor(cfg: DictConfig, model, graph: FamilyGraph):
    """The PyTorch predictor whose settings the metadata records. It is never run, so it keeps
    ``model`` as it is instead of making the batch-norm-folded copy a predictor runs."""

    cfg = OmegaConf.merge(cfg, {"infer": {"fold_batchnorm": False}})
    return graph.predictor_class.from_config(cfg, model)


def _layout_entry(layout, sigmas: bool = True) -> dict:
    entry = {"names": list(layout.names), "skeleton": [[int(a), int(b)] for a, b in layout.skeleton],
             "flip_index": [int(i) for i in layout.flip_index]}
    if sigmas:
        entry["sigmas"] = [float(s) for s in layout.sigmas]  # OKS sigmas: the evaluation's
    return entry


def _postprocess_options(head, detect_options: dict) -> dict:
    """``detect_options`` with ``RetinaNetHead.postprocess``'s defaults filled in."""
    signature = inspect.signature(type(head).postprocess)
    options = {name: p.default for name, p in signature.parameters.items()
               if p.default is not inspect.Parameter.empty}
    options.update(detect_options)
    return {k: (int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else float(v))
            for k, v in options.items()}


def with_input_size(cfg: DictConfig, input_size: int | None) -> DictConfig:
    """``cfg`` with ``infer.input_size`` set to ``input_size`` (when given)."""
    if not input_size:
        return cfg
    if int(input_size) < 1:
        raise ConfigError(f"--input-size must be positive, got {input_size}")
    return OmegaConf.merge(cfg, {"infer": {"input_size": int(input_size)}})


def graph_side(predictor, min_size: int, divisor: int) -> int:
    """The fixed graph's side: the largest network input of ``infer.scales`` (each scale's
    longer side ``max(min_size, round(input_size * scale))``, as the predictors compute it),
    rounded up to the divisor: every scale's input fits, padded."""
    longest = max(max(min_size, int(round(predictor.input_size * float(s)))) for s in predictor.scales)
    return round_up(longest, divisor)


def metadata(cfg: DictConfig, model, *, dynamic: bool = False, onnx_file: str = "model.onnx",
             prn_file: str = "model.prn.npz", output_names: Sequence[str] | None = None) -> dict:
    """The ``model.json`` of ``model`` exported under ``cfg`` (its ``infer.input_size`` already
    set, see ``with_input_size``): every number through the builders the PyTorch predictors use,
    so that they cannot drift. See the module docstring and the decoder's for the fields."""

    family = cfg.model.family
    graph = graph_of(model, family)
    predictor = _predictor(cfg, model, graph)
    min_size, stride = graph.geometry(predictor)
    divisor = graph.divisor
    if getattr(predictor, "boxes", "reference") != "reference":
        raise ConfigError("infer.boxes=all: the portable decoder takes the reference scale's boxes; "
                          "export with infer.boxes=reference")
    if not dynamic and predictor.input_side != "longer":
        raise ConfigError(f"infer.input_side={predictor.input_side}: a fixed-size graph holds images whose longer "
                          "side is infer.input_size; export with --dynamic, or with infer.input_side=longer")
    side = graph_side(predictor, min_size, divisor)
    caffe = graph.caffe
    if caffe:  # BGR, x / 256 - 0.5: zero at 128 in every channel
        mean, std, pad = [128 / 255] * 3, [256 / 255] * 3, [128.0] * 3
    else:
        mean, std, pad = list(IMAGE_MEAN), list(IMAGE_STD), [255.0 * m for m in IMAGE_MEAN]
    inf = cfg.infer
    infer = {
        "input_size": int(predictor.input_size), "input_side": predictor.input_side,
        "scales": [float(s) for s in predictor.scales],
        "flip": bool(predictor.flip), "peak_threshold": float(predictor.peak_threshold),
        "max_peaks": int(predictor.max_peaks), "keypoint_threshold": float(predictor.keypoint_threshold),
        "box_threshold": float(getattr(predictor, "box_threshold", inf.box_threshold)),
        "box_scale": float(getattr(predictor, "box_scale", inf.box_scale)),
        "picture_box_threshold": float(predictor.picture_box_threshold),
    }
    meta = {
        "format": FORMAT, "version": VERSION, "family": family, "onnx": onnx_file,
        "input": {"name": INPUT_NAME, "size": None if dynamic else [side, side], "size_divisor": divisor,
                  "min_size": min_size, "pad_value": pad, "mean": mean, "std": std,
                  "preprocessing": "caffe" if caffe else "imagenet"},
        "outputs": list(output_names or graph.output_names),
        "keypoints": _layout_entry(predictor.layout),
        "heatmaps": {"stride": stride, "sigma": float(predictor.sigma)},
        "infer": infer,
        **graph.sections(predictor, prn_file),
    }
    return meta


def prn_arrays(prn) -> dict[str, np.ndarray]:
    """The PRN's Linear layers in order as float32 ``w0, b0, w1, b1[, w2, b2]`` (weights
    (out, in), as torch holds them) and ``grid_shape`` (K, H, W) int64."""
    linears = [m for m in prn.mlp if isinstance(m, nn.Linear)]
    arrays = {}
    for i, layer in enumerate(linears):
        arrays[f"w{i}"] = layer.weight.detach().float().cpu().numpy()
        arrays[f"b{i}"] = layer.bias.detach().float().cpu().numpy()
    arrays["grid_shape"] = np.asarray(prn.grid_shape, dtype=np.int64)
    return arrays


def save_prn(prn, path: str | os.PathLike) -> Path:
    """``prn_arrays`` as an uncompressed ``.npz`` (written atomically)."""

    path = Path(path)
    with atomic_path(path, ".npz") as tmp:
        np.savez(tmp, **prn_arrays(prn))
    return path


# ----------------------------------------------------------------------------- the whole export


def ship_decoder(folder: str | os.PathLike) -> Path:
    """Copy the portable decoder (the modules of ``posenet.portable``) into ``folder`` as the
    package ``posenet_decoder/``, replacing an earlier copy whole; returns its path."""
    target = Path(folder) / DECODER_NAME
    tmp = Path(folder) / f".{DECODER_NAME}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for source in sorted(DECODER.glob("*.py")):
        shutil.copyfile(source, tmp / source.name)
    old = Path(folder) / f".{DECODER_NAME}.old{os.getpid()}"
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def export(cfg: DictConfig, model, out: str | os.PathLike, *, input_size: int | None = None,
           dynamic: bool = False, opset: int = 18, compare: bool = True, log=print) -> dict:
    """Everything of an export (module docstring) for ``model`` under ``cfg``: the graph at
    ``out`` (a ``.onnx`` path), the metadata and PRN weights beside it (same stem), the
    decoder's copy; then ``check_onnx`` and (``compare``) ``compare_onnxruntime``. Returns a
    summary: files, output names, the checker's result and the max abs differences."""

    out = Path(out)
    if out.suffix != ".onnx":
        raise ConfigError(f"--out {out}: the model file must end in .onnx")
    family = cfg.model.family
    cfg = with_input_size(cfg, input_size)
    model = model.cpu().eval()
    meta = metadata(cfg, model, dynamic=dynamic, onnx_file=out.name, prn_file=out.with_suffix(".prn.npz").name)
    grouping_prn = meta.get("grouping", {}).get("name") == "prn"
    files = {"onnx": out, "metadata": out.with_suffix(".json")}
    if grouping_prn:
        files["prn"] = out.with_suffix(".prn.npz")
    side = meta["input"]["size"][0] if meta["input"]["size"] else round_up(meta["infer"]["input_size"],
                                                                            meta["input"]["size_divisor"])

    with atomic_path(out, ".onnx") as tmp:
        names = export_onnx(model, tmp, family=family, input_size=side, dynamic=dynamic, opset=opset, log=log)
    if names != meta["outputs"]:
        raise PosenetError(f"the graph's outputs {names} differ from the metadata's {meta['outputs']}")
    checked = check_onnx(out)
    if checked["outputs"] != names or checked["inputs"] != [INPUT_NAME]:
        raise PosenetError(f"{out}: the exported graph has inputs {checked['inputs']} and outputs "
                           f"{checked['outputs']}, expected [{INPUT_NAME!r}] and {names}")
    write_json_atomic(files["metadata"], meta, indent=2)
    if grouping_prn:
        save_prn(model.prn, files["prn"])
    files["decoder"] = ship_decoder(out.parent)
    summary = {"family": family, "files": {k: str(v) for k, v in files.items()}, "outputs": names,
               "check": checked, "input_size": meta["input"]["size"], "dynamic": dynamic}
    if compare:
        sizes = None
        if dynamic:
            d = meta["input"]["size_divisor"]
            sizes = [(side, side), (max(d, round_up(side * 3 // 4, d)), side)]
        summary["max_abs_diff"] = compare_onnxruntime(model, out, family=family, sizes=sizes)
    return summary


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, *, config=None,
                      overrides: Sequence[str] = (), input_size: int | None = None, dynamic: bool = False,
                      opset: int = 18, compare: bool = True, int8: bool = False, calibration_images: int = 64,
                      calibration_dir: str | os.PathLike | None = None,
                      log=print) -> dict:
    """``export`` of a checkpoint with its run's config (``config``, default the
    ``config.yaml`` beside it, plus ``overrides``); a MultiPoseNet checkpoint must hold the
    detection branch (and a PRN for ``infer.grouping=prn``). With ``int8``, also the int8
    export beside it (``posenet.deploy.quantize``), calibrated on ``calibration_images`` images
    of the run's training split, or on the images of ``calibration_dir``; the summary's
    "int8" entry says what was written and how far its maps are from the float graph's."""

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise ConfigError(f"checkpoint not found: {checkpoint}")
    cfg = build.run_config(checkpoint, config, overrides)
    if int8:  # the calibration images first: a missing folder is one line before minutes of export
        if calibration_dir is not None:
            images = list_images(calibration_dir)[:calibration_images]
            if not images:
                raise ConfigError(f"no images in the calibration folder {calibration_dir}")
            source = f"{len(images)} images of {Path(calibration_dir).name}"
        else:
            images, source = quantize.training_images(cfg, calibration_images)
    model = graph_class(cfg.model.family).load_model(cfg, checkpoint)
    summary = export(cfg, model, out, input_size=input_size, dynamic=dynamic, opset=opset, compare=compare, log=log)
    if int8:
        log(f"int8: calibrating on {source} ...")
        summary["int8"] = quantize.quantize_export(summary["files"]["metadata"], images, source=source, log=log)
    return summary


__all__ = ["FORMAT", "INPUT_NAME", "MultiPoseNetGraph", "PafGraph", "check_onnx", "compare_onnxruntime", "export",
           "export_checkpoint", "export_onnx", "family_of", "flatten_level", "graph_class", "graph_of", "metadata", "prn_arrays", "save_prn",
           "ship_decoder", "with_input_size"]
