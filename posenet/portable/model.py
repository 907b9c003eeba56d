"""An exported network and its metadata (``model.onnx`` + ``model.json``): ``PoseModel`` runs the
graph with onnxruntime and decodes its outputs into people with the steps of this package
(the package docstring lists them)."""
from __future__ import annotations

import json
import os
import time

import numpy as np

from .boxes import detect
from .geometry import (FLIP_FILL, INPUT_SIDES, flip_back, input_geometry, invert, paf_flip_index, scale_order,
                       to_grid_of, transform_points, warp_image)
from .paf import PafGrouping, people_boxes
from .peaks import heatmap_peaks
from .prn import PoseResidualMLP, most_central_assign, pose_scores, prn_assign

# The metadata this decoder reads: its format and version, the model families and the groupings
# of MultiPoseNet exports it decodes.
FORMAT = "posenet-onnx"
VERSION = 1
FAMILIES = ("multiposenet", "openpose")
GROUPINGS = ("prn", "greedy")


def _read_json(path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the model metadata ({exc})") from None
    return meta


def check_metadata(meta: dict) -> None:
    """ValueError naming what this decoder does not support or what is missing."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} metadata file (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if int(meta.get("version", -1)) != VERSION:
        raise ValueError(f"metadata version {meta.get('version')!r} is not supported (this decoder reads {VERSION})")
    family = meta.get("family")
    if family not in FAMILIES:
        raise ValueError(f"model family {family!r} is not supported; known: {', '.join(FAMILIES)}")
    need = ["input", "outputs", "keypoints", "heatmaps", "infer"]
    need += ["detection", "grouping"] if family == "multiposenet" else ["openpose"]
    missing = [k for k in need if k not in meta]
    if missing:
        raise ValueError(f"metadata lacks {', '.join(missing)}")
    if family == "multiposenet":
        name = meta["grouping"].get("name")
        if name not in GROUPINGS:
            raise ValueError(f"grouping {name!r} is not supported; known: {', '.join(GROUPINGS)}")
        if not meta["infer"].get("scales"):
            raise ValueError("infer.scales is empty: give at least one scale")


class PoseModel:
    """An exported network and its metadata. ``session`` is anything with onnxruntime's
    ``run(None, {input: array}) -> [arrays in metadata "outputs" order]`` (made from
    ``meta["onnx"]`` on first use when not given); ``prn`` a ``PoseResidualMLP`` (read from
    ``grouping.weights`` when needed and not given); ``base_dir`` the folder of those files."""

    def __init__(self, meta: dict, session=None, prn: PoseResidualMLP | None = None, base_dir=".",
                 providers=None, threads: int | None = None):
        check_metadata(meta)
        self.meta = meta
        self.family = meta["family"]
        self.base_dir = os.fspath(base_dir)
        self._session, self._providers, self._threads = session, providers, threads
        self._prn = prn
        inp, inf = meta["input"], meta["infer"]
        self.stride = int(meta["heatmaps"]["stride"])
        self.sigma = float(meta["heatmaps"].get("sigma", 7.0))
        self.mean = np.asarray(inp["mean"], dtype=np.float64)
        self.pad_value = np.asarray(inp.get("pad_value", self.mean * 255.0), dtype=np.float32)
        self.divisor = int(inp.get("size_divisor", 32))
        self.fixed = tuple(int(v) for v in inp["size"]) if inp.get("size") else None
        self.min_size = int(inp.get("min_size", 32 if self.family == "multiposenet" else self.stride))
        self.input_size = int(inf["input_size"])
        self.input_side = str(inf.get("input_side", "longer"))
        if self.input_side not in INPUT_SIDES:
            raise ValueError(f"infer.input_side must be one of {', '.join(INPUT_SIDES)}, got {self.input_side!r}")
        self.scales = tuple(float(s) for s in inf.get("scales", [1.0]))
        self.flip = bool(inf.get("flip", False))
        kp = meta["keypoints"]
        self.names = list(kp["names"])
        if self.family == "openpose":
            op = meta["openpose"]
            parts = op["parts"]
            self.num_parts = len(parts["names"])
            self.limbs = [tuple(int(i) for i in limb) for limb in parts["skeleton"]]
            paf_index, paf_sign = paf_flip_index(self.limbs, parts["flip_index"])
            P = self.num_parts
            self._flip_index = [*map(int, parts["flip_index"]), P, *[P + 1 + i for i in paf_index]]
            self._flip_sign = [1.0] * (P + 1) + paf_sign
            source_index = np.full(len(self.names), -1, dtype=np.int64)
            for k, src in enumerate(op["sources"]):
                if len(src) == 1:
                    source_index[int(src[0])] = k
            self._source_index = source_index
        else:
            self._flip_index = [int(i) for i in kp["flip_index"]]
            self._flip_sign = None
            self.levels = sum(1 for n in meta["outputs"] if n.startswith("cls_logits_"))

    # ---------------------------------------------------------------- the graph

    @property
    def session(self):
        if self._session is None:
            try:
                import onnxruntime as ort
            except ImportError:
                raise ValueError("running the network needs onnxruntime (pip install onnxruntime)") from None
            options = ort.SessionOptions()
            if self._threads:
                options.intra_op_num_threads = int(self._threads)
            path = os.path.join(self.base_dir, self.meta.get("onnx", "model.onnx"))
            if not os.path.exists(path):
                raise ValueError(f"{path}: the network file is missing")
            self._session = ort.InferenceSession(path, options,
                                                 providers=self._providers or ["CPUExecutionProvider"])
        return self._session

    @property
    def prn(self) -> PoseResidualMLP:
        if self._prn is None:
            g = self.meta["grouping"]
            path = os.path.join(self.base_dir, g.get("weights", "model.prn.npz"))
            if not os.path.exists(path):
                raise ValueError(f"{path}: the PRN weights are missing (grouping prn)")
            self._prn = PoseResidualMLP.from_npz(path, g.get("softmax", "channel"), float(g.get("input_sigma", 1.0)),
                                                 str(g.get("grid", "enlarged")))
        return self._prn

    def _graph_size(self, h: int, w: int) -> tuple[int, int]:
        if self.fixed is None:
            return -(-h // self.divisor) * self.divisor, -(-w // self.divisor) * self.divisor
        if h > self.fixed[0] or w > self.fixed[1]:
            raise ValueError(f"an input of {h}x{w} does not fit the graph's fixed size {self.fixed[0]}x{self.fixed[1]} "
                             "(export with --dynamic for larger scales)")
        return self.fixed

    def _run_graph(self, chw: np.ndarray) -> dict:
        """The graph's outputs by name for a (3, h, w) float image (0..255), padded as the
        graph needs with the mean colour."""
        _, h, w = chw.shape
        H, W = self._graph_size(h, w)
        x = np.empty((1, 3, H, W), dtype=np.float32)
        x[0] = self.pad_value.reshape(3, 1, 1)
        x[0, :, :h, :w] = chw
        name = self.meta["input"].get("name", "image")
        values = self.session.run(None, {name: x})
        return dict(zip(self.meta["outputs"], values))

    def _maps(self, out: dict, hw) -> np.ndarray:
        """The heatmaps (and PAFs) of an output dict cropped to the unpadded input's grid."""
        h, w = -(-hw[0] // self.stride), -(-hw[1] // self.stride)
        heat = np.asarray(out["heatmaps"], dtype=np.float32)
        heat = heat.reshape(heat.shape[-3:])[:, :h, :w]
        if self.family == "openpose":
            pafs = np.asarray(out["pafs"], dtype=np.float32)
            heat = np.concatenate([heat, pafs.reshape(pafs.shape[-3:])[:, :h, :w]])
        return heat

    def network(self, rgb: np.ndarray):
        """(outputs, matrix, input_hw): the reference scale's raw outputs by name with
        "heatmaps" (and "pafs") replaced by the flip- and scale-averaged maps (C, h, w) on its
        grid (step 2 of the module docstring)."""
        rgb = as_rgb(rgb)
        ref, others = scale_order(self.scales)
        total, outputs, matrix, input_hw, ref_s = self._scale_maps(rgb, ref)
        for scale in others:
            maps, _, _, hw, s = self._scale_maps(rgb, scale)
            total = total + (maps if hw == input_hw else to_grid_of(maps, s / ref_s, total.shape[-2:]))
        total = (total / np.float32(len(self.scales))).astype(np.float32)
        outputs = dict(outputs)
        if self.family == "openpose":
            P = self.num_parts
            outputs["heatmaps"], outputs["pafs"] = total[:P + 1], total[P + 1:]
        else:
            outputs["heatmaps"] = total
        return outputs, matrix, input_hw

    def _scale_maps(self, rgb: np.ndarray, scale: float):
        """(maps (C, h, w), raw outputs, image -> input matrix, input (h, w), scale factor) of
        one scale, flip-averaged with [infer.flip]."""
        height, width = rgb.shape[:2]
        fill = np.rint(np.asarray(FLIP_FILL) * 255.0).astype(np.float32).reshape(3, 1, 1)
        m, s, hw = input_geometry((height, width), self.input_size, scale, self.min_size, self.input_side)
        chw = warp_image(rgb, m, hw).transpose(2, 0, 1).astype(np.float32)
        out = self._run_graph(chw)
        maps = self._maps(out, hw)
        if self.flip:
            pad = (-hw[1]) % self.stride
            wide = np.concatenate([chw, np.broadcast_to(fill, (3, hw[0], pad))], axis=2) if pad else chw
            flipped = self._maps(self._run_graph(np.ascontiguousarray(wide[:, :, ::-1])), (hw[0], hw[1] + pad))
            back = flip_back(flipped, self._flip_index, self._flip_sign)
            maps = np.float32(0.5) * (maps + back[:, :maps.shape[1], :maps.shape[2]])
        return maps, out, m, hw, s

    def run(self, rgb: np.ndarray) -> dict:
        """The people of one (H, W, 3) uint8 RGB image and everything else (module docstring)."""
        rgb = as_rgb(rgb)
        (outputs, matrix, input_hw), network_ms = timed(self.network, rgb)
        result, decode_ms = timed(self.decode, outputs, matrix, input_hw, rgb.shape[:2])
        result["timing"] = {"network_ms": network_ms, "decode_ms": decode_ms}
        return result

    # ---------------------------------------------------------------- decoding

    def decode(self, outputs: dict, matrix, input_hw, image_size) -> dict:
        """People from the network's outputs (the graph's, or ``network``'s averaged maps) for
        an input of ``input_hw`` made from an image of ``image_size`` by ``matrix``."""
        input_hw = (int(input_hw[0]), int(input_hw[1]))
        image_size = (int(image_size[0]), int(image_size[1]))
        start = time.perf_counter()
        maps = self._maps(outputs, input_hw)
        if self.family == "openpose":
            result = self._decode_openpose(maps, matrix, input_hw, image_size)
        else:
            result = self._decode_multiposenet(maps, outputs, matrix, input_hw, image_size)
        result.update(matrix=np.asarray(matrix, dtype=np.float64), image_size=image_size, stride=self.stride,
                      timing={"network_ms": 0.0, "decode_ms": 1e3 * (time.perf_counter() - start)})
        return result

    def _peaks(self, heat: np.ndarray):
        inf = self.meta["infer"]
        return heatmap_peaks(heat, self.stride, self.sigma, float(inf.get("peak_threshold", 0.05)),
                             int(inf.get("max_peaks", 20)))

    def _decode_multiposenet(self, heat, outputs, matrix, input_hw, image_size) -> dict:
        inf, K = self.meta["infer"], heat.shape[0]
        try:
            cls_levels = [outputs[f"cls_logits_{i}"] for i in range(self.levels)]
            box_levels = [outputs[f"box_deltas_{i}"] for i in range(self.levels)]
        except KeyError as exc:
            raise ValueError(f"the network outputs lack {exc.args[0]}") from None
        boxes, box_scores = detect(cls_levels, box_levels, self.meta["detection"], input_hw)
        keep = box_scores >= np.float32(inf.get("box_threshold", 0.3))
        boxes, box_scores = boxes[keep], box_scores[keep]
        coords, scores, valid = self._peaks(heat)
        types = np.broadcast_to(np.arange(K)[:, None], valid.shape)[valid]
        xy, peak_scores = coords[valid].astype(np.float64), scores[valid].astype(np.float64)
        people, image_boxes = self.group(xy, types, peak_scores, boxes, box_scores, matrix, image_size)
        return {"people": people, "boxes": image_boxes, "box_scores": box_scores, "heatmaps": heat, "pafs": None}

    def group(self, xy, types, scores, boxes, box_scores, matrix, image_size):
        """People and (B, 4) image boxes from peaks (P, 2) / (P,) / (P,) and boxes (B, 4) in input
        pixels (posenet's ``Predictor.group``)."""
        inf, g = self.meta["infer"], self.meta["grouping"]
        K = len(self.names)
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if not len(boxes):
            return [], np.zeros((0, 4))
        box_scale = float(inf.get("box_scale", 1.0))
        if box_scale != 1.0:
            centre, half = np.float32(0.5) * (boxes[:, :2] + boxes[:, 2:]), np.float32(0.5) * (boxes[:, 2:] - boxes[:, :2])
            s = np.float32(box_scale)
            boxes = np.concatenate([centre - s * half, centre + s * half], axis=1)
        margin = float(g.get("margin", 0.21))
        if g["name"] == "prn":
            keypoints, kp_scores = prn_assign(self.prn, boxes, xy, types, scores, K, margin, int(g.get("window", 15)),
                                              peak_input=str(g.get("peak_input", "score")))  # exports before the key wrote scores
        else:
            keypoints, kp_scores = most_central_assign(boxes, xy, types, scores, K, margin)
        inverse = invert(matrix)
        keypoints = transform_points(inverse, np.asarray(keypoints, np.float64).reshape(-1, 2)).reshape(len(boxes), K, 2)
        image_boxes = transform_points(inverse, boxes.astype(np.float64).reshape(-1, 2)).reshape(-1, 4)
        h, w = image_size
        image_boxes[:, 0::2] = image_boxes[:, 0::2].clip(0, w)
        image_boxes[:, 1::2] = image_boxes[:, 1::2].clip(0, h)
        kp_scores = np.clip(np.asarray(kp_scores, np.float64).reshape(len(boxes), K), 0, 1)
        box_scores = np.asarray(box_scores, dtype=np.float64).reshape(-1)
        person = pose_scores(box_scores, kp_scores, float(inf.get("keypoint_threshold", 0.05)))
        people = [{"keypoints": np.concatenate([keypoints[i], kp_scores[i][:, None]], axis=1), "box": image_boxes[i],
                   "box_score": float(box_scores[i]), "score": float(person[i])}
                  for i in np.argsort(-person, kind="stable")]
        return people, image_boxes

    def _decode_openpose(self, maps, matrix, input_hw, image_size) -> dict:
        P = self.num_parts
        coords, scores, valid = self._peaks(maps[:P])
        grouping = PafGrouping(input_hw, self.limbs, self.stride, **paf_options(self.meta))
        kps, person_scores = grouping(coords, scores, valid, maps[P + 1:])
        people = []
        if len(person_scores):
            kps = kps.copy()
            kps[..., :2] = transform_points(invert(matrix), kps[..., :2].reshape(-1, 2)).reshape(len(kps), P, 2)
            index = self._source_index
            keypoints = np.zeros((len(kps), len(self.names), 3))
            keypoints[:, index >= 0] = kps[:, index[index >= 0]]
            keypoints[..., 2] = np.clip(keypoints[..., 2], 0, 1)
            boxes = people_boxes(keypoints, image_size)
            people = [{"keypoints": keypoints[i], "box": boxes[i], "box_score": float(s), "score": float(s)}
                      for i, s in enumerate(person_scores)]
        boxes = np.array([p["box"] for p in people]).reshape(-1, 4)
        return {"people": people, "boxes": boxes, "box_scores": np.array([p["score"] for p in people]),
                "heatmaps": maps[:P], "pafs": maps[P + 1:]}


def paf_options(meta: dict) -> dict:
    """The ``PafGrouping`` keywords of an OpenPose export's metadata ([openpose.paf])."""
    paf = dict(meta["openpose"].get("paf", {}))
    paf.pop("limb_width", None)  # the targets' width, written by exports before the grouping was an object
    paf.setdefault("sampling", "nearest")  # exports before the key read the nearest cell
    return paf


def timed(function, *args):
    """``function(*args)`` and the milliseconds it took."""
    start = time.perf_counter()
    result = function(*args)
    return result, 1e3 * (time.perf_counter() - start)


def as_rgb(image) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array from an RGB / gray / RGBA uint8 or uint16 array."""
    array = np.asarray(image)
    if array.dtype == np.uint16:
        array = (array // 257).astype(np.uint8)
    if array.dtype != np.uint8:
        raise ValueError(f"images must be uint8 or uint16 arrays, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or min(array.shape[:2]) < 1:
        raise ValueError(f"images must be (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
    return np.ascontiguousarray(array[:, :, :3])


def load(metadata_path, providers=None, threads: int | None = None) -> PoseModel:
    """The model of a ``model.json`` (its graph and PRN weights beside it, read on first use)."""
    meta = _read_json(metadata_path)
    return PoseModel(meta, base_dir=os.path.dirname(os.path.abspath(metadata_path)), providers=providers,
                     threads=threads)


def read_image(path) -> np.ndarray:
    """An (H, W, 3) uint8 RGB image from a file, with PIL (upright as EXIF says) or else cv2."""
    try:
        from PIL import Image, ImageOps
    except ImportError:
        Image = None
    if Image is not None:
        try:
            with Image.open(path) as im:
                return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read the image ({exc})") from None
    try:
        import cv2
    except ImportError:
        raise ValueError("reading images needs PIL (pip install pillow) or cv2 (pip install opencv-python-headless)") \
            from None
    bgr = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: cannot read the image")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def to_json(result: dict) -> dict:
    """The JSON-ready part of a result: people (lists), image size, timing."""
    return {"image_size": list(result["image_size"]), "timing": result["timing"],
            "people": [{"keypoints": np.round(p["keypoints"], 3).tolist(), "box": np.round(p["box"], 2).tolist(),
                        "box_score": p["box_score"], "score": p["score"]} for p in result["people"]]}
