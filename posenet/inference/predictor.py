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

Batches (``run_batch``; ``run`` is a batch of one): each image's inputs are made as one image's
are (``InputPlan``: geometry and warp per scale, what loader workers compute), the inputs of a
scale are padded at the bottom and right to the batch's largest height and width with the colour
the network normalises to 0 (``padding_colour``: what the model's own padding to its divisor is)
and run as one batch (the mirrored inputs of the flip test as a second one), and each image's
maps are cut back to its own input and decoded alone. Images whose inputs have the same size once
rounded up to the model's divisor (``batch_key``) give the people of one at a time, up to the
rounding of batched convolutions. Padding an input further changes what the network computes
near its right and bottom border and, through the coarse levels, beyond (padded cells are zeros
only at the input: biases and normalisation make them non-zero further in): a batch of mixed
keys can find other people (measured in ``docs/inference.md``), so ``infer_folder`` batches only
images of one key.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

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
from posenet.inference.scales_and_flip import (check_input_side, flip_back, input_geometry, pad_width, scale_order,
                                               side_words, to_grid_of)
from posenet.models.backbone import IMAGE_MEAN
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


@dataclass
class ScaledInput:
    """One scale's network input of an image."""

    matrix: np.ndarray             # image pixels -> input pixels
    factor: float                  # the scale factor of that matrix
    size: tuple[int, int]          # (height, width) of the input
    pixels: np.ndarray             # (height, width, 3) uint8 RGB, the warped image


@dataclass
class PreparedImage:
    """An image made into the network's inputs by an ``InputPlan``: what a loader worker hands
    over instead of the image itself."""

    image_size: tuple[int, int]            # (height, width) of the image
    inputs: tuple[ScaledInput, ...]        # the reference scale's first, then the others increasing
    plan: "InputPlan"


@dataclass(frozen=True)
class InputPlan:
    """How a predictor makes an image into its inputs, as plain values (loader workers run it):
    per scale of ``scale_order(scales)`` (the reference scale first) the geometry of
    ``scales_and_flip.input_geometry`` and the image warped through it."""

    input_size: int
    scales: tuple[float, ...]
    min_size: int
    side: str = "longer"

    def __call__(self, rgb: np.ndarray) -> PreparedImage:
        ref, others = scale_order(self.scales)
        inputs = []
        for scale in (ref, *others):
            m, s, hw = input_geometry(rgb.shape[:2], self.input_size, scale, self.min_size, self.side)
            inputs.append(ScaledInput(m, s, hw, warp_image(rgb, m, hw)))
        return PreparedImage(tuple(rgb.shape[:2]), tuple(inputs), self)


def size_divisor(model) -> int:
    """The multiple the model pads its input to (MultiPoseNet's ``size_divisor``, a PAF
    network's ``input_divisor``; else its output stride)."""
    return int(getattr(model, "size_divisor", None) or getattr(model, "input_divisor", None) or model.output_stride)


def padding_colour(model) -> torch.Tensor:
    """(3,) float32: the input colour that ``model``'s normalisation takes to exactly 0, which is
    what the model pads its input with (once normalised): 128 for caffe preprocessing (a PAF
    network's ``preprocessing``), else ImageNet's mean x 255 computed as the models compute it."""
    if getattr(model, "preprocessing", "imagenet") == "caffe":
        return torch.full((3,), 128.0)
    return torch.tensor(IMAGE_MEAN) * 255.0


def batch_key(prepared: PreparedImage, divisor: int) -> tuple:
    """Images of one key run as one batch exactly as one at a time: every scale's input has the
    same size once rounded up to ``divisor``, so the padding a batch adds is the padding the
    model adds to each of them alone."""
    return tuple((-(-x.size[0] // divisor) * divisor, -(-x.size[1] // divisor) * divisor) for x in prepared.inputs)


def padded_batch(images: Sequence[torch.Tensor], fill: torch.Tensor, device, memory_format) -> torch.Tensor:
    """(N, 3, H, W) of (3, h_i, w_i) images, each at the top left, padded at the bottom and right
    to the largest H and W with ``fill`` (float32 then; uint8 as given when no image needs it)."""
    if len({tuple(x.shape) for x in images}) == 1:
        batch = torch.stack(list(images)).to(device)
    else:
        H, W = max(x.shape[-2] for x in images), max(x.shape[-1] for x in images)
        batch = fill.to(device=device, dtype=torch.float32).view(1, 3, 1, 1).repeat(len(images), 1, H, W)
        for i, x in enumerate(images):
            batch[i, :, : x.shape[-2], : x.shape[-1]] = x.to(device)
    return batch.contiguous(memory_format=memory_format)


def batch_maps(maps_of, images: Sequence[torch.Tensor], *, stride: int, fill: torch.Tensor, device, memory_format,
               flip: tuple | None = None):
    """Per image, (1, C, ceil(h_i / stride), ceil(w_i / stride)) maps of (3, h_i, w_i) uint8
    inputs run as one batch (``padded_batch``), and the batch's raw outputs: ``maps_of(batch)``
    gives (maps (N, C, H', W') float, raw outputs). With ``flip`` = (channel index, signs or None)
    the maps are averaged with those of the mirrored inputs mapped back: each input padded on
    the right to a multiple of ``stride`` (``pad_width``) and mirrored, the mirrored inputs run
    as a second batch and each one's maps mirrored back (``flip_back``) on its own grid, as
    ``scales_and_flip.flip_test`` does for a batch of one size."""
    maps, raw = maps_of(padded_batch(images, fill, device, memory_format))
    sizes = [(-(-x.shape[-2] // stride), -(-x.shape[-1] // stride)) for x in images]
    out = [maps[i:i + 1, :, :h, :w] for i, (h, w) in enumerate(sizes)]
    if flip is not None:
        mirrored = [pad_width(x[None], stride)[0].flip(-1) for x in images]
        back, _ = maps_of(padded_batch(mirrored, fill, device, memory_format))
        out = [0.5 * (m + flip_back(back[i:i + 1, :, :h, : x.shape[-1] // stride], *flip)[..., :h, :w])
               for i, (m, x, (h, w)) in enumerate(zip(out, mirrored, sizes))]
    return out, raw


def input_tensors(prepared: Sequence[PreparedImage], k: int) -> list[torch.Tensor]:
    """The (3, h, w) uint8 inputs of scale ``k`` (0: the reference scale) of prepared images."""
    return [torch.from_numpy(p.inputs[k].pixels).permute(2, 0, 1) for p in prepared]


def check_prepared(prepared: Sequence[PreparedImage], plan: InputPlan) -> None:
    if not prepared:
        raise DataError("an empty batch: give at least one image")
    for p in prepared:
        if p.plan != plan:
            raise ConfigError(f"an image prepared for {p.plan} given to a predictor of {plan}")


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
        return self.run_batch([image])[0]

    @property
    def input_plan(self) -> InputPlan:
        """How this predictor makes an image into its inputs (picklable, for loader workers)."""
        return InputPlan(self.input_size, self.scales, 32, self.input_side)

    def prepare(self, image) -> PreparedImage:
        """An image (a path, an RGB / gray / RGBA array, or already prepared) as its inputs."""
        return image if isinstance(image, PreparedImage) else self.input_plan(as_rgb(image))

    def run_batch(self, images: Sequence) -> list[Prediction]:
        """``run`` of several images (paths, arrays or ``PreparedImage``) with one network pass
        per scale (and one for the mirrored inputs): see the module's note for what equals one
        at a time. Each image's ``network_ms`` is the batch's network time (preparing the
        images not prepared yet included) divided by the images; ``decode_ms`` is its own."""
        return [decode() for decode in self.run_network(images)]

    def run_network(self, images: Sequence) -> list[Callable[[], Prediction]]:
        """``run_batch`` in two steps: the network part now, and per image a function that
        decodes it into its ``Prediction`` when called (a video decodes one frame while the
        network runs the next, ``posenet.inference.video``)."""
        items = [image if isinstance(image, PreparedImage) else as_rgb(image) for image in images]
        nets, network_ms = timed(lambda: self.network_batch([self.prepare(item) for item in items]))
        return [functools.partial(self._decode, net, network_ms / len(nets)) for net in nets]

    def _decode(self, net: "NetworkOutput", network_ms: float) -> Prediction:
        (people, image_boxes), decode_ms = timed(
            lambda: self.group(*self.peaks(net), net.boxes, net.box_scores, net.matrix, net.image_size))
        return Prediction(people, image_boxes, net.box_scores.numpy(), net.heatmaps.numpy(), net.matrix,
                          net.image_size, {"network_ms": network_ms, "decode_ms": decode_ms})

    def network(self, rgb: np.ndarray) -> "NetworkOutput":
        """The network part: heatmaps (flip and scales averaged) and the boxes above
        ``infer.box_threshold``, in the network input pixels of the reference scale (the listed
        scale nearest 1, ``scales_and_flip.reference_scale``): the order of ``infer.scales`` changes
        nothing."""
        return self.network_batch([self.input_plan(rgb)])[0]

    @torch.no_grad()
    def network_batch(self, prepared: Sequence[PreparedImage]) -> list["NetworkOutput"]:
        """``network`` of prepared images, each scale's inputs as one batch."""
        if not self.model.has_detection:
            raise ConfigError("inference needs person boxes: this checkpoint has no detection branch "
                              "(train the detection stage: scripts/train_detection.py)")
        check_prepared(prepared, self.input_plan)
        refs = [p.inputs[0] for p in prepared]
        heat, out = self._heatmaps(prepared, 0)
        found = [[(d["boxes"].float().cpu(), d["scores"].float().cpu())]
                 for d in self.model.detect(out, [x.size for x in refs], **self.detect_options)]
        for k in range(1, len(self.scales)):  # increasing: the sum does not depend on the list's order
            scaled = [p.inputs[k] for p in prepared]
            maps, out = self._heatmaps(prepared, k)
            heat = [total + (h if x.size == ref.size else to_grid_of(h, x.factor / ref.factor, total.shape[-2:]))
                    for total, h, x, ref in zip(heat, maps, scaled, refs)]
            if self.boxes == "all":  # box edges scale exactly with the input (pixel areas onto pixel areas)
                detections = self.model.detect(out, [x.size for x in scaled], **self.detect_options)
                for boxes, d, x, ref in zip(found, detections, scaled, refs):
                    boxes.append((d["boxes"].float().cpu() * (ref.factor / x.factor), d["scores"].float().cpu()))
        outputs = []
        for total, boxes_found, ref, p in zip(heat, found, refs, prepared):
            boxes, box_scores = (merge_boxes(boxes_found, self.detect_options) if len(boxes_found) > 1
                                 else boxes_found[0])
            keep = box_scores >= self.box_threshold
            outputs.append(NetworkOutput((total / len(self.scales))[0].cpu(), boxes[keep], box_scores[keep], ref.matrix,
                                         ref.size, p.image_size))
        return outputs

    def _heatmaps(self, prepared: Sequence[PreparedImage], k: int):
        """Per image, the (1, K, h, w) heatmaps of scale ``k`` (flip-averaged with
        ``infer.flip``), and the batch's raw outputs."""

        def heatmaps_of(batch):
            out = self.model(batch)
            return out["heatmaps"].float(), out

        return batch_maps(heatmaps_of, input_tensors(prepared, k), stride=self.model.output_stride,
                          fill=padding_colour(self.model), device=self.device, memory_format=self.memory_format,
                          flip=(self.layout.flip_index, None) if self.flip else None)

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


__all__ = ["InputPlan", "NetworkOutput", "Prediction", "PreparedImage", "Predictor", "ScaledInput", "as_rgb",
           "batch_key", "batch_maps", "draw_prediction", "grid_to_image", "inference_model", "padding_colour",
           "size_divisor"]
