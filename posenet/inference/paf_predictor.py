"""The OpenPose family's inference: image → network (scales, flip) → part peaks → PAF grouping
→ people in COCO's keypoints.

    from posenet.families import load_predictor
    predictor = load_predictor("runs/openpose_synthetic_small/keypoint/best.pt")
    people = predictor.predict("photo.jpg")

Per image and scale: the longer side (``input_side``: or the height, as the CMU release, or the
shorter side, as its PyTorch port) is scaled to ``input_size * scale`` (aspect kept; the
network pads to its stride itself); part heatmaps and PAFs of every scale are resampled onto the
grid of the reference scale, the listed scale nearest 1 (cell centre to cell centre; the order of
the scales changes nothing), and averaged, with ``flip`` also with the
mirrored image's (parts swapped left/right, limbs swapped and their x component negated; exact
for any width, ``scales_and_flip.flip_test``). Peaks (3x3 maxima above ``peak_threshold``, sub-pixel)
are grouped by the PAF codec's decode (``codecs/paf.py``); the parts go back to the dataset's
keypoints (``DerivedLayout.decode``: OpenPose's 18 → COCO's 17) and to image pixels.

A person is {"keypoints": (K, 3) x, y, score, "box": the extent of its found keypoints,
"box_score" and "score": the grouping's person score} — the same records as the MultiPoseNet
``Predictor``'s, so results files, pictures and video work alike.
"""
from __future__ import annotations

import functools
import os
from typing import Callable, Sequence

import numpy as np
import torch
from omegaconf import DictConfig

from posenet.codecs import KeypointHeatmapCodec
from posenet.config import build
from posenet.data.keypoints import DerivedLayout
from posenet.data.transforms import invert, transform_points
from posenet.errors import ConfigError
from posenet.inference.groupings import Grouping, PafFieldGrouping, grouping_from_config
from posenet.inference.predictor import (InputPlan, Prediction, PreparedImage, as_rgb, batch_maps, check_prepared,
                                         draw_prediction, inference_model, input_tensors, padding_colour)
from posenet.portable.model import timed
from posenet.portable.paf import people_boxes
from posenet.inference.scales_and_flip import check_input_side, input_geometry, paf_flip_index, side_words, to_grid_of


class PafPredictor:
    """A PAF network (``posenet.models.openpose``) and the inference settings as plain keywords
    (``from_config`` reads them from a config).

    ``parts`` maps the network's parts to the dataset's keypoints; ``grouping`` is a bottom-up
    grouping of ``posenet.inference.groupings`` (``PafFieldGrouping``, "paf"); ``scales`` are
    relative to ``input_size`` (the ``input_side`` at scale 1:
    "longer", "height" as the CMU release or "shorter" as its PyTorch port);
    ``sigma`` is the training heatmaps' Gaussian (input pixels), which the sub-pixel refinement
    assumes; pictures draw the people whose score reaches ``picture_box_threshold``.

    Speed, with the same results: ``fold_batchnorm`` and ``channels_last`` as in ``Predictor``
    (a model handed over in eval mode is replaced by its batch-norm-folded copy; the trainer's
    model, in training mode, and ``with_model``'s are run as they are).
    """

    def __init__(self, model, parts: DerivedLayout, *, input_size: int, input_side: str = "longer",
                 grouping: Grouping | None = None, scales: Sequence[float] = (1.0,), flip: bool = False, peak_threshold: float = 0.05,
                 max_peaks: int = 20, keypoint_threshold: float = 0.05, sigma: float = 7.0,
                 picture_box_threshold: float = 0.0, device: str | torch.device = "cpu",
                 fold_batchnorm: bool = True, channels_last: bool = True):
        if not scales:
            raise ConfigError("infer.scales is empty: give at least one scale")
        if model.num_parts != parts.layout.num_keypoints:
            raise ConfigError(f"the network has {model.num_parts} parts, the layout {parts.layout.num_keypoints}")
        self.device = torch.device(device)
        self.model = inference_model(model, self.device, fold_batchnorm)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.parts = parts
        self.layout = parts.source  # the keypoints of the results
        self.grouping = PafFieldGrouping() if grouping is None else grouping
        if not self.grouping.bottom_up:
            raise ConfigError(f"grouping {self.grouping.name} assigns peaks to person boxes: the OpenPose family "
                              "groups with part affinity fields (paf)")
        self.input_size = int(input_size)
        self.input_side = check_input_side(input_side)
        self.scales = tuple(float(s) for s in scales)
        self.flip = bool(flip)
        self.peak_threshold, self.max_peaks = float(peak_threshold), int(max_peaks)
        self.keypoint_threshold = float(keypoint_threshold)
        self.sigma = float(sigma)
        self.picture_box_threshold = float(picture_box_threshold)
        limbs = parts.layout.skeleton
        paf_index, paf_sign = paf_flip_index(limbs, parts.layout.flip_index)
        P = parts.layout.num_keypoints
        # one tensor of heatmaps (P parts + background) then PAFs, flipped back in one go
        self._flip_index = [*parts.layout.flip_index.tolist(), P, *[P + 1 + i for i in paf_index]]
        self._flip_sign = [1.0] * (P + 1) + paf_sign

    @classmethod
    def from_config(cls, cfg: DictConfig, model, device: str = "cpu") -> "PafPredictor":
        """``infer`` + ``keypoint`` + ``openpose`` → the predictor of ``model``: a PAF network,
        or a checkpoint file (or a file of the OpenPose release) loaded into the network of
        ``cfg``."""
        if isinstance(model, (str, os.PathLike)):
            model = build.paf_network_from_checkpoint(cfg, model, device)
        inf = cfg.infer
        return cls(
            model,
            build.openpose_parts(cfg),
            input_size=int(inf.input_size or cfg.keypoint.val_input_size),
            input_side=inf.input_side,
            grouping=grouping_from_config(cfg, "paf"),
            scales=tuple(float(s) for s in inf.scales),
            flip=inf.flip,
            peak_threshold=inf.peak_threshold,
            max_peaks=inf.max_peaks,
            keypoint_threshold=inf.keypoint_threshold,
            sigma=cfg.keypoint.sigma,
            picture_box_threshold=inf.picture_box_threshold,
            device=device,
            fold_batchnorm=inf.fold_batchnorm,
            channels_last=inf.channels_last,
        )

    @property
    def stride(self) -> int:
        return int(self.model.output_stride)

    def with_model(self, model) -> "PafPredictor":
        """The same settings with another network (the trainer's, during validation)."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__, model=model.eval(), device=next(model.parameters()).device)
        return other

    def describe(self) -> str:
        scales = ", ".join(f"{s:g}" for s in self.scales)
        return (f"PAF grouping, {side_words(self.input_side)} {self.input_size} px, scales {scales}, "
                f"flip {'on' if self.flip else 'off'}")

    def predict(self, image) -> list[dict]:
        """The people in one image (a path or an RGB / gray / RGBA array)."""
        return self.run(image).people

    def run(self, image) -> Prediction:
        return self.run_batch([image])[0]

    @property
    def input_plan(self) -> InputPlan:
        """How this predictor makes an image into its inputs (picklable, for loader workers)."""
        return InputPlan(self.input_size, self.scales, self.stride, self.input_side)

    def prepare(self, image) -> PreparedImage:
        """An image (a path, an RGB / gray / RGBA array, or already prepared) as its inputs."""
        return image if isinstance(image, PreparedImage) else self.input_plan(as_rgb(image))

    def run_batch(self, images: Sequence) -> list[Prediction]:
        """``run`` of several images (paths, arrays or ``PreparedImage``), one network pass per
        scale (and one for the mirrored inputs), as ``Predictor.run_batch``: images whose inputs
        round up to the same multiple of the network's ``input_divisor`` give the people of one
        at a time; timings as there."""
        return [decode() for decode in self.run_network(images)]

    def run_network(self, images: Sequence) -> list[Callable[[], Prediction]]:
        """``run_batch`` in two steps, as ``Predictor.run_network``: the network now, and per
        image a function that decodes it."""
        items = [image if isinstance(image, PreparedImage) else as_rgb(image) for image in images]
        prepared, network_ms = timed(lambda: [self.prepare(item) for item in items])
        nets, ms = timed(self.network_batch, prepared)
        network_ms = (network_ms + ms) / len(nets)
        return [functools.partial(self._decode, net, p.image_size, network_ms) for net, p in zip(nets, prepared)]

    def _decode(self, net, image_size: tuple[int, int], network_ms: float) -> Prediction:
        maps, matrix, input_hw = net
        P = self.parts.layout.num_keypoints
        people, decode_ms = timed(self.group, maps, matrix, input_hw, image_size)
        boxes = np.array([person["box"] for person in people]).reshape(-1, 4)
        scores = np.array([person["score"] for person in people])
        return Prediction(people, boxes, scores, maps[:P].numpy(), matrix, image_size,
                          {"network_ms": network_ms, "decode_ms": decode_ms}, stride=self.stride,
                          pafs=maps[P + 1:].numpy())

    def _maps(self, batch: torch.Tensor):
        out = self.model(batch)
        return torch.cat([out["heatmaps"], out["pafs"]], dim=1).float(), out

    def network(self, rgb: np.ndarray) -> tuple[torch.Tensor, np.ndarray, tuple[int, int]]:
        """Heatmaps and PAFs (P + 1 + 2L, h, w) averaged over scales and flip on the grid of the
        reference scale (the listed scale nearest 1, ``scales_and_flip.reference_scale``; the order of
        the scales changes nothing); that scale's image -> input matrix and input size."""
        return self.network_batch([self.input_plan(rgb)])[0]

    @torch.no_grad()
    def network_batch(self, prepared) -> list[tuple[torch.Tensor, np.ndarray, tuple[int, int]]]:
        """``network`` of prepared images, each scale's inputs as one batch."""
        check_prepared(prepared, self.input_plan)
        refs = [p.inputs[0] for p in prepared]
        total = self._scale_maps(prepared, 0)
        for k in range(1, len(self.scales)):  # increasing: the sum does not depend on the list's order
            scaled = [p.inputs[k] for p in prepared]
            total = [t + (m if x.size == ref.size else to_grid_of(m, x.factor / ref.factor, t.shape[-2:]))
                     for t, m, x, ref in zip(total, self._scale_maps(prepared, k), scaled, refs)]
        return [((t / len(self.scales))[0].cpu(), ref.matrix, ref.size) for t, ref in zip(total, refs)]

    def _scale_maps(self, prepared, k: int) -> list[torch.Tensor]:
        """Per image, the (1, C, h, w) maps of scale ``k``, flip-averaged with ``flip``."""
        maps, _ = batch_maps(self._maps, input_tensors(prepared, k), stride=self.stride,
                             fill=padding_colour(self.model), device=self.device, memory_format=self.memory_format,
                             flip=(self._flip_index, self._flip_sign) if self.flip else None)
        return maps

    def input_geometry(self, image_hw: tuple[int, int], scale: float = 1.0):
        """The network input of an image of ``image_hw`` at ``scale``: the image -> input matrix,
        the scale factor and the input's (height, width) (its ``input_side`` ``input_size * scale``)."""
        return input_geometry(image_hw, self.input_size, scale, self.stride, self.input_side)

    def heatmap_codec(self, input_hw: tuple[int, int]) -> KeypointHeatmapCodec:
        return KeypointHeatmapCodec(input_hw, stride=self.stride, sigma=self.sigma,
                                    peak_threshold=self.peak_threshold, max_peaks=self.max_peaks)

    def group(self, maps: torch.Tensor, matrix: np.ndarray, input_hw, image_size) -> list[dict]:
        """People (best first, image pixels, the dataset's keypoints) from the maps of ``network``."""
        P = self.parts.layout.num_keypoints
        peaks = self.heatmap_codec(input_hw).decode(maps[:P])
        found = self.grouping(peaks.coords.numpy(), peaks.scores.numpy(), peaks.valid.numpy(), maps[P + 1:].numpy(),
                              input_hw, self.parts.layout.skeleton, self.stride)
        if not len(found.scores):
            return []
        kps = found.keypoints.copy()
        kps[..., :2] = transform_points(invert(matrix), kps[..., :2].reshape(-1, 2)).reshape(kps.shape[0], P, 2)
        keypoints = self.parts.decode(kps)  # (N, K, 3) in the dataset's order
        keypoints[..., 2] = np.clip(keypoints[..., 2], 0, 1)
        boxes = people_boxes(keypoints, image_size)
        return [{"keypoints": person, "box": box, "box_score": float(score), "score": float(score)}
                for person, box, score in zip(keypoints, boxes, found.scores)]

    def draw(self, rgb: np.ndarray, prediction: Prediction) -> dict[str, np.ndarray]:
        """Pictures: part heatmaps, the PAF field (hue: direction), skeletons, and the panel."""
        return draw_prediction(rgb, prediction, self.layout, self.keypoint_threshold, self.picture_box_threshold)


__all__ = ["PafPredictor"]
