"""The inference pipeline: image → one network pass → peaks + boxes → grouping → people.

    from posenet.inference import Predictor
    predictor = Predictor.from_checkpoint("runs/synthetic_small/prn/best.pt")
    people = predictor.predict("photo.jpg")          # or an RGB / gray / RGBA uint8 array

Per image: the longer side (``infer.input_side``: or the height, or the shorter side) is scaled
to ``infer.input_size`` (aspect kept; the model pads to a multiple of 32 itself); the keypoint heatmaps are averaged over ``infer.scales`` (each resampled
onto the heatmap grid of the reference scale, the listed scale nearest 1, cell centre to cell
centre; their order changes nothing) and, with ``infer.flip``, with the mirrored image's
(left/right swapped; ``scales_and_flip.flip_test``, exact for any width); person boxes come from the
reference scale's detection head; the heatmap peaks (3x3 local maxima above
``infer.peak_threshold``, sub-pixel refined) are grouped into the boxes
by a grouping of ``posenet.inference.groupings`` (``infer.grouping``: the Pose Residual
Network, all boxes of the image in one batch, or the greedy baseline, each peak to the box it
is most central in). Everything is mapped back to original image pixels.

A person is {"keypoints": (K, 3) x, y, score, "box": (4,) x1, y1, x2, y2, "box_score",
"score"}; the pose score is the box score times the mean score of the keypoints above
``infer.keypoint_threshold`` (see ``pose_scores``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np
import torch
from omegaconf import DictConfig

from posenet.codecs import KeypointHeatmapCodec
from posenet.config import build
from posenet.data.images import read_image
from posenet.data.keypoints import KeypointLayout
from posenet.data.transforms import invert, transform_points, warp_image
from posenet.errors import ConfigError, DataError
from posenet.inference.groupings import grouping_from_config
from posenet.inference.prn_grouping import pose_scores
from posenet.inference.scales_and_flip import (check_input_side, flip_test, input_geometry, scale_order, side_words,
                                               to_grid_of)
from posenet.models.fuse import fold_batchnorm, foldable_pairs
from posenet.ops import nms
from posenet.portable.model import as_rgb as rgb_array, timed
from posenet.vis import draw_boxes, draw_skeleton, heatmap_overlay, paf_overlay, person_color


@dataclass
class Prediction:
    """Everything one image gave: the people, and what pictures and benchmarks need."""

    people: list[dict]
    boxes: np.ndarray              # (B, 4) all boxes above the box threshold, image pixels
    box_scores: np.ndarray         # (B,)
    heatmaps: np.ndarray           # (K, h, w) heatmaps on the network's grid
    matrix: np.ndarray             # image pixels -> network input pixels
    image_size: tuple[int, int]    # (height, width) of the original image
    timing: dict = field(default_factory=dict)  # "network_ms", "decode_ms"
    stride: int = 4                # heatmap cell j is centred on input pixel stride * j + (stride - 1) / 2
    pafs: np.ndarray | None = None  # (2L, h, w) part affinity fields (OpenPose family)


def as_rgb(image) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array from a path (turned upright as its EXIF orientation says)
    or an RGB / gray / RGBA array (uint8 or uint16); raises DataError for what cannot be read."""

    if isinstance(image, (str, os.PathLike)):
        return np.ascontiguousarray(read_image(image, upright=True)[:, :, ::-1])
    try:
        return rgb_array(image)
    except ValueError as exc:
        raise DataError(str(exc)) from None


# Where the person boxes come from with several scales: the reference scale's detections, or
# every scale's mapped onto the reference input and merged by NMS.
BOX_SOURCES = ("reference", "all")


def merge_boxes(found, detect_options: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Detections of several scales, each (boxes, scores) in the reference input's pixels (the
    reference scale first, then the others in increasing order), merged as one scale's would be:
    NMS at ``nms_threshold``, at most ``max_detections``, best first."""
    boxes = torch.cat([b for b, _ in found])
    scores = torch.cat([s for _, s in found])
    keep = nms(boxes, scores, float(detect_options.get("nms_threshold", 0.5)))
    keep = keep[: int(detect_options.get("max_detections", 100))]
    return boxes[keep], scores[keep]


class Predictor:
    """A model with person boxes (keypoint + detection, and a PRN for the PRN grouping) and the
    inference settings, as plain keywords (``from_config`` reads them from a config's ``infer``
    section; ``from_checkpoint`` loads a run's).

    ``boxes``: with several scales, the reference scale's detections ("reference") or every
    scale's merged by NMS ("all").
    ``grouping`` is a ``posenet.inference.groupings`` object; ``scales`` are relative to
    ``input_size`` (the ``input_side`` at scale 1: "longer", "height" or "shorter"); ``sigma`` is the training heatmaps' Gaussian
    (input pixels), which the sub-pixel refinement assumes; ``detect_options`` go to
    ``PoseNet.detect``; pictures (``draw_prediction`` through ``infer_folder``) draw the people
    whose box score reaches ``picture_box_threshold``.

    Speed, with the same results (``scripts/benchmark.py network``): a model handed over in
    eval mode (a loaded checkpoint) is replaced by its batch-norm-folded copy
    (``posenet.models.fuse.fold_batchnorm``, with ``fold_batchnorm``); a model in training mode
    (the trainer's, validated during training) is run as it is, never folded. With
    ``channels_last`` the network's input is channels_last, which every convolution follows.
    """

    def __init__(self, model, layout: KeypointLayout, grouping, *, input_size: int, scales: Sequence[float] = (1.0,),
                 input_side: str = "longer", boxes: str = "reference", flip: bool = False, peak_threshold: float = 0.05, max_peaks: int = 20, box_threshold: float = 0.3,
                 box_scale: float = 1.0, keypoint_threshold: float = 0.05, sigma: float = 7.0,
                 detect_options: dict | None = None, picture_box_threshold: float = 0.0,
                 device: str | torch.device = "cpu", fold_batchnorm: bool = True, channels_last: bool = True):
        grouping.check_model(model)
        if not scales:
            raise ConfigError("infer.scales is empty: give at least one scale")
        self.device = torch.device(device)
        self.model = inference_model(model, self.device, fold_batchnorm)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.layout = layout
        self.grouping = grouping
        self.input_size = int(input_size)
        self.input_side = check_input_side(input_side)
        if boxes not in BOX_SOURCES:
            raise ConfigError(f"infer.boxes must be one of {', '.join(BOX_SOURCES)}, got {boxes!r}")
        self.boxes = boxes
        self.scales = tuple(float(s) for s in scales)
        self.flip = bool(flip)
        self.peak_threshold, self.max_peaks = float(peak_threshold), int(max_peaks)
        self.box_threshold, self.box_scale = float(box_threshold), float(box_scale)
        self.keypoint_threshold = float(keypoint_threshold)
        self.sigma = float(sigma)
        self.detect_options = dict(detect_options or {})
        self.picture_box_threshold = float(picture_box_threshold)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike, config: str | os.PathLike | None = None,
                        overrides: Sequence[str] = (), device: str = "cpu") -> "Predictor":
        """Load ``checkpoint`` with ``config`` (default: the ``config.yaml`` of its run directory)."""
        return cls.from_config(build.run_config(checkpoint, config, overrides), checkpoint, device)

    @classmethod
    def from_config(cls, cfg: DictConfig, model, device: str = "cpu", grouping: str | None = None) -> "Predictor":
        """``infer`` + ``keypoint`` + ``detection`` + ``prn`` → the predictor of ``model``: a
        module, or a checkpoint file loaded into the model of ``cfg`` with every part it holds
        (detection branch, PRN). ``grouping``: a registered grouping's name (default:
        ``infer.grouping``)."""
        if isinstance(model, (str, os.PathLike)):
            model = build.posenet_from_checkpoint(cfg, model)
        inf = cfg.infer
        return cls(
            model,
            build.keypoint_layout(cfg.data.keypoints),
            grouping_from_config(cfg, grouping),
            input_size=int(inf.input_size or cfg.keypoint.val_input_size),
            input_side=inf.input_side,
            boxes=inf.boxes,
            scales=tuple(float(s) for s in inf.scales),
            flip=inf.flip,
            peak_threshold=inf.peak_threshold,
            max_peaks=inf.max_peaks,
            box_threshold=inf.box_threshold,
            box_scale=inf.box_scale,
            keypoint_threshold=inf.keypoint_threshold,
            sigma=cfg.keypoint.sigma,
            detect_options=build.detection_options(cfg),
            picture_box_threshold=inf.picture_box_threshold,
            device=device,
            fold_batchnorm=inf.fold_batchnorm,
            channels_last=inf.channels_last,
        )

    def with_grouping(self, grouping) -> "Predictor":
        """The same model and settings with another grouping object."""
        grouping.check_model(self.model)
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__, grouping=grouping)
        return other

    def describe(self) -> str:
        """The settings, for protocol lines."""
        scales = ", ".join(f"{s:g}" for s in self.scales)
        return (f"grouping {self.grouping.name}, {side_words(self.input_side)} {self.input_size} px, scales {scales}, "
                f"flip {'on' if self.flip else 'off'}")

    def draw(self, rgb: np.ndarray, prediction: "Prediction") -> dict[str, np.ndarray]:
        """The pictures of ``prediction`` (``draw_prediction``) with this predictor's layout and
        thresholds: BGR uint8 images by name, "panel" holding them side by side."""
        return draw_prediction(rgb, prediction, self.layout, self.keypoint_threshold, self.picture_box_threshold)

    def predict(self, image) -> list[dict]:
        """The people in one image (a path or an RGB / gray / RGBA array)."""
        return self.run(image).people

    def run(self, image) -> Prediction:
        """``predict`` with everything else: boxes, heatmaps, geometry and timings."""
        rgb = as_rgb(image)
        net, network_ms = timed(self.network, rgb)
        (people, image_boxes), decode_ms = timed(
            lambda: self.group(*self.peaks(net), net.boxes, net.box_scores, net.matrix, net.image_size))
        return Prediction(people, image_boxes, net.box_scores.numpy(), net.heatmaps.numpy(), net.matrix,
                          net.image_size, {"network_ms": network_ms, "decode_ms": decode_ms})

    @torch.no_grad()
    def network(self, rgb: np.ndarray) -> "NetworkOutput":
        """The network part: heatmaps (flip and scales averaged) and the boxes above
        ``infer.box_threshold``, in the network input pixels of the reference scale (the listed
        scale nearest 1, ``scales_and_flip.reference_scale``): the order of ``infer.scales`` changes
        nothing."""
        if not self.model.has_detection:
            raise ConfigError("inference needs person boxes: this checkpoint has no detection branch "
                              "(train the detection stage: scripts/train_detection.py)")
        height, width = rgb.shape[:2]
        ref, others = scale_order(self.scales)
        heat, matrix, input_hw, ref_s, out = self._heatmaps(rgb, ref)
        det = self.model.detect(out, [input_hw], **self.detect_options)[0]
        found = [(det["boxes"].float().cpu(), det["scores"].float().cpu())]
        for scale in others:  # increasing: the sum does not depend on the list's order
            h, _, hw, s, out = self._heatmaps(rgb, scale)
            heat = heat + (h if hw == input_hw else to_grid_of(h, s / ref_s, heat.shape[-2:]))
            if self.boxes == "all":  # box edges scale exactly with the input (pixel areas onto pixel areas)
                det = self.model.detect(out, [hw], **self.detect_options)[0]
                found.append((det["boxes"].float().cpu() * (ref_s / s), det["scores"].float().cpu()))
        heat = (heat / len(self.scales))[0].cpu()
        boxes, box_scores = merge_boxes(found, self.detect_options) if len(found) > 1 else found[0]
        keep = box_scores >= self.box_threshold
        boxes, box_scores = boxes[keep], box_scores[keep]
        return NetworkOutput(heat, boxes, box_scores, matrix, input_hw, (height, width))

    def _heatmaps(self, rgb: np.ndarray, scale: float):
        """(heatmaps (1, K, h, w), image -> input matrix, input (h, w), scale factor, raw
        outputs) of one scale, flip-averaged with ``infer.flip``."""
        m, s, hw = input_geometry(rgb.shape[:2], self.input_size, scale, 32, self.input_side)
        batch = torch.from_numpy(warp_image(rgb, m, hw)).permute(2, 0, 1)[None].to(self.device)
        batch = batch.contiguous(memory_format=self.memory_format)
        out = self.model(batch)
        h = out["heatmaps"].float()
        if self.flip:
            h = flip_test(lambda x: self.model(x)["heatmaps"], batch, h, self.layout.flip_index,
                          self.model.output_stride)
        return h, m, hw, s, out

    def heatmap_codec(self, input_hw: tuple[int, int]) -> KeypointHeatmapCodec:
        """The codec of the network's heatmaps for an input of ``input_hw`` (height, width), with
        this predictor's peak settings."""
        return KeypointHeatmapCodec(input_hw, stride=self.model.output_stride, sigma=self.sigma,
                                    peak_threshold=self.peak_threshold, max_peaks=self.max_peaks)

    def peaks(self, net: "NetworkOutput") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Heatmap peaks as flat (P, 2) input-pixel coordinates, (P,) keypoint types and scores."""
        K = net.heatmaps.shape[0]
        peaks = self.heatmap_codec(net.input_size).decode(net.heatmaps)
        valid = peaks.valid.reshape(-1)
        types = torch.arange(K).repeat_interleave(peaks.valid.shape[1])
        return peaks.coords.reshape(-1, 2)[valid], types[valid], peaks.scores.reshape(-1)[valid]

    def group(self, xy: torch.Tensor, types: torch.Tensor, scores: torch.Tensor, boxes: torch.Tensor,
              box_scores: torch.Tensor, matrix: np.ndarray, image_size) -> tuple[list[dict], np.ndarray]:
        """People from peaks and boxes given in network input pixels (``matrix`` maps image
        pixels there): grouping (``self.grouping``), mapping back, pose scores, best first.
        Returns the people and the (B, 4) boxes in image pixels."""
        K = self.layout.num_keypoints
        boxes = boxes.float().reshape(-1, 4)
        if not len(boxes):
            return [], np.zeros((0, 4))
        if self.box_scale != 1.0:
            centre, half = 0.5 * (boxes[:, :2] + boxes[:, 2:]), 0.5 * (boxes[:, 2:] - boxes[:, :2])
            boxes = torch.cat([centre - self.box_scale * half, centre + self.box_scale * half], dim=1)
        keypoints, kp_scores = self.grouping(boxes.numpy(), xy.numpy(), types.numpy(), scores.numpy(), K, self.model)
        inverse = invert(matrix)
        keypoints = transform_points(inverse, np.asarray(keypoints, dtype=np.float64).reshape(-1, 2))
        keypoints = keypoints.reshape(len(boxes), K, 2)
        image_boxes = transform_points(inverse, boxes.numpy().astype(np.float64).reshape(-1, 2)).reshape(-1, 4)
        h, w = image_size
        image_boxes[:, 0::2] = image_boxes[:, 0::2].clip(0, w)
        image_boxes[:, 1::2] = image_boxes[:, 1::2].clip(0, h)
        kp_scores = np.clip(np.asarray(kp_scores, dtype=np.float64).reshape(len(boxes), K), 0, 1)
        box_scores_np = np.asarray(box_scores, dtype=np.float64).reshape(-1)
        person_scores = np.asarray(pose_scores(box_scores_np, kp_scores, self.keypoint_threshold),
                                   dtype=np.float64).reshape(-1)
        people = [
            {"keypoints": np.concatenate([keypoints[i], kp_scores[i][:, None]], axis=1),
             "box": image_boxes[i], "box_score": float(box_scores_np[i]), "score": float(person_scores[i])}
            for i in np.argsort(-person_scores, kind="stable")
        ]
        return people, image_boxes


def inference_model(model, device, fold: bool = True):
    """``model`` on ``device`` in eval mode for a predictor: with ``fold``, a model that came in
    eval mode becomes its batch-norm-folded copy (``fold_batchnorm``; ``model`` itself is left
    as it was); a model in training mode is the trainer's, and is used as it is."""

    inference_only = not model.training
    model = model.to(device).eval()
    if fold and inference_only and foldable_pairs(model):
        model = fold_batchnorm(model)
    return model


@dataclass
class NetworkOutput:
    """What the network part of the pipeline gives for one image (input pixels of scale 1)."""

    heatmaps: torch.Tensor         # (K, h, w)
    boxes: torch.Tensor            # (B, 4)
    box_scores: torch.Tensor       # (B,)
    matrix: np.ndarray             # image pixels -> input pixels
    input_size: tuple[int, int]    # (height, width) of the network input
    image_size: tuple[int, int]    # (height, width) of the image


def strongest_vectors(pafs: np.ndarray) -> np.ndarray:
    """(h, w, 2): at each cell the (x, y) of the limb whose PAF (2L, h, w) is longest there."""
    fields = np.asarray(pafs, dtype=np.float32).reshape(-1, 2, *pafs.shape[-2:])
    if not len(fields):
        return np.zeros((*pafs.shape[-2:], 2), np.float32)
    best = (fields ** 2).sum(1).argmax(0)
    return np.take_along_axis(fields, best[None, None], axis=0)[0].transpose(1, 2, 0)


def grid_to_image(grid: np.ndarray, prediction: Prediction) -> np.ndarray:
    """A map (h, w) or (h, w, C) on the network's output grid, warped onto the image: cell
    (i, j) is centred on input pixel (s j + (s - 1) / 2, s i + (s - 1) / 2) for stride s, and
    the inverse of the input matrix takes that to the image."""
    s = float(prediction.stride)
    grid_to_input = np.array([[s, 0.0, (s - 1) / 2], [0.0, s, (s - 1) / 2], [0.0, 0.0, 1.0]])
    matrix = (np.vstack([invert(prediction.matrix), [0, 0, 1]]) @ grid_to_input)[:2]
    h, w = prediction.image_size
    return cv2.warpAffine(np.ascontiguousarray(grid, dtype=np.float32), matrix, (w, h), flags=cv2.INTER_LINEAR,
                          borderValue=0)


def draw_prediction(rgb: np.ndarray, prediction: Prediction, layout: KeypointLayout,
                    keypoint_threshold: float = 0.05, box_threshold: float = 0.0) -> dict[str, np.ndarray]:
    """Pictures of one prediction as BGR uint8 images: "heatmaps" (the maximum over keypoint
    types, over the image), "boxes" (with scores), "skeletons" (keypoints at or above
    ``keypoint_threshold``), with part affinity fields "pafs" (each limb's direction as a hue,
    its strength as brightness), and "panel": heatmaps, boxes (or PAFs) and skeletons side by
    side; only the people whose box score reaches ``box_threshold`` are drawn."""

    heat = prediction.heatmaps.max(axis=0) if len(prediction.heatmaps) else np.zeros((1, 1))
    heat_image = grid_to_image(heat, prediction)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    pictures = {"heatmaps": np.ascontiguousarray(heatmap_overlay(rgb, heat_image)[:, :, ::-1])}
    people = [p for p in prediction.people if p["box_score"] >= box_threshold]
    colors = [person_color(i) for i in range(len(people))]
    pictures["boxes"] = draw_boxes(bgr, [p["box"] for p in people], colors,
                                   [f"{p['box_score']:.2f}" for p in people], xywh=False)
    skeletons = bgr.copy()
    for person, color in zip(people, colors):
        kps = person["keypoints"].copy()
        kps[:, 2] = np.where(kps[:, 2] >= keypoint_threshold, 2.0, 0.0)
        skeletons = draw_skeleton(skeletons, kps, color, layout)
    pictures["skeletons"] = skeletons
    middle = "boxes"
    if prediction.pafs is not None:

        pictures["pafs"] = paf_overlay(bgr, grid_to_image(strongest_vectors(prediction.pafs), prediction))
        middle = "pafs"
    pictures["panel"] = np.concatenate([pictures["heatmaps"], pictures[middle], pictures["skeletons"]], axis=1)
    return pictures


__all__ = ["NetworkOutput", "Prediction", "Predictor", "as_rgb", "draw_prediction", "grid_to_image", "inference_model"]
