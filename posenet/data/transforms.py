"""One affine matrix per sample: how it is drawn, inverted and applied.

Every geometric change of a sample (scale, rotation, crop, centre jitter, horizontal flip, the
fit-and-pad of validation, a reduced-resolution JPEG decode, the stride-4 target grid) is a
2x3 matrix, and matrices compose. The image, the masks, the keypoints and the boxes all go
through the same product, so they cannot disagree, and its inverse maps predictions back.

Coordinate frames
-----------------
* Points (keypoints, and the frame of every matrix here) put pixel centres at integers: pixel
  ``i`` covers ``[i - 0.5, i + 0.5)``. This is the convention of ``cv2.warpAffine`` and of
  :class:`~posenet.codecs.heatmap.KeypointHeatmapCodec`. COCO keypoints are pixel indices and
  are used as they are.
* Boxes (COCO ``bbox`` and the x1, y1, x2, y2 targets) put pixel edges at integers: pixel ``i``
  covers ``[i, i + 1)``, so an image of width ``w`` spans ``[0, w]``. They are shifted by half
  a pixel into the point frame to be transformed and shifted back afterwards.

Randomness comes from numpy's global generator, which the training engine reseeds before each
sample (``posenet.engine.loader``), so an augmentation depends only on (seed, epoch, index).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import cv2
import numpy as np

from posenet.portable.geometry import invert, resampling, transform_points

# ------------------------------------------------------------------ matrices


def as_3x3(matrix) -> np.ndarray:
    """A 2x3 affine matrix as a 3x3 float64 homogeneous one."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape == (3, 3):
        return m
    if m.shape != (2, 3):
        raise ValueError(f"expected a 2x3 or 3x3 affine matrix, got shape {m.shape}")
    return np.vstack([m, (0.0, 0.0, 1.0)])


def compose(*matrices) -> np.ndarray:
    """``compose(A, B, C)`` applies C first, then B, then A (the product A @ B @ C), as 2x3."""
    out = np.eye(3)
    for m in matrices:
        out = out @ as_3x3(m)
    return out[:2].copy()


def linear_scale(matrix) -> float:
    """Geometric mean of the matrix's scale factors (sqrt of |det|): output pixels per input pixel."""
    m = np.asarray(matrix, dtype=np.float64)
    return math.sqrt(abs(m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]))


def translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty]])


def scaling(sx: float, sy: float | None = None) -> np.ndarray:
    return np.array([[sx, 0.0, 0.0], [0.0, sx if sy is None else sy, 0.0]])


def rotation(degrees: float) -> np.ndarray:
    """Rotation about the origin; positive angles turn counter-clockwise on screen (cv2's sense)."""
    r = math.radians(degrees)
    c, s = math.cos(r), math.sin(r)
    return np.array([[c, s, 0.0], [-s, c, 0.0]])


def hflip(width: int) -> np.ndarray:
    """Mirror an image of ``width`` pixels: x -> width - 1 - x (pixel centres at integers)."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]])


def grid_matrix(matrix, stride: int) -> np.ndarray:
    """``matrix`` followed by input pixels -> stride-``stride`` cell coordinates.

    Cell ``j``'s centre is input pixel ``(j + 0.5) * stride - 0.5`` (the codec's grid), so
    warping a full-resolution mask with this matrix samples it at the cell centres directly.
    """
    return compose(invert(resampling(stride)), matrix)


def fit_matrix(image_size: Sequence[int], output_size: Sequence[int]) -> np.ndarray:
    """Validation geometry: scale the image to fit ``output_size`` keeping its aspect ratio.

    The image (height, width) is scaled by ``min(H / height, W / width)`` (the longer side,
    relative to the output, fills it) and placed at the top left, so the padding is at the
    bottom and right as in the model's own padding. Pixel areas map onto pixel areas:
    ``x' = s * (x + 0.5) - 0.5``.
    """
    h, w = image_size
    s = min(output_size[0] / h, output_size[1] / w)
    return invert(resampling(1.0 / s))


def crop_matrix(
    center: Sequence[float],
    scale: float,
    rotation_deg: float,
    output_size: Sequence[int],
    jitter: Sequence[float] = (0.0, 0.0),
    flip: bool = False,
) -> np.ndarray:
    """Image -> crop: ``center`` (x, y, image pixels) goes to the crop centre plus ``jitter``
    (crop pixels) after scaling by ``scale`` and rotating by ``rotation_deg`` about it; ``flip``
    then mirrors the crop."""
    H, W = output_size
    cx, cy = (W - 1) / 2.0 + jitter[0], (H - 1) / 2.0 + jitter[1]
    m = compose(translation(cx, cy), rotation(rotation_deg), scaling(scale), translation(-center[0], -center[1]))
    return compose(hflip(W), m) if flip else m


# ------------------------------------------------------------------ applying a matrix


def transform_boxes(matrix, boxes, output_size: Sequence[int], min_size: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N, 4) x1, y1, x2, y2 (pixel-edge frame) through ``matrix``.

    Each box becomes the box enclosing its four transformed corners, clipped to the output
    ``[0, W] x [0, H]``. Returns the boxes (M, 4) float32 whose clipped width and height are
    both at least ``min_size`` pixels, and the boolean mask (N,) of the kept ones.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) - 0.5  # into the point frame
    corners = np.stack([b[:, [0, 1]], b[:, [2, 1]], b[:, [2, 3]], b[:, [0, 3]]], axis=1)
    t = transform_points(matrix, corners) + 0.5  # back to the edge frame
    H, W = output_size
    x1 = t[..., 0].min(axis=1).clip(0, W)
    x2 = t[..., 0].max(axis=1).clip(0, W)
    y1 = t[..., 1].min(axis=1).clip(0, H)
    y2 = t[..., 1].max(axis=1).clip(0, H)
    keep = (x2 - x1 >= min_size) & (y2 - y1 >= min_size)
    out = np.stack([x1, y1, x2, y2], axis=1)[keep]
    return out.astype(np.float32), keep


def transform_keypoints(matrix, keypoints, output_size: Sequence[int], flip_index=None) -> np.ndarray:
    """Keypoints (P, K, 3) x, y, v through ``matrix``; float32 (P, K, 3).

    ``flip_index`` (the layout's, given when the matrix mirrors the image) moves each keypoint
    to its mirrored name: after a flip the person's left wrist is where a right wrist would
    be. Keypoints that end up outside the output get v = 0.
    """
    kps = np.asarray(keypoints, dtype=np.float64).reshape(-1, np.shape(keypoints)[-2], 3).copy()
    kps[..., :2] = transform_points(matrix, kps[..., :2])
    if flip_index is not None:
        kps = kps[:, np.asarray(flip_index)]
    H, W = output_size
    x, y = kps[..., 0], kps[..., 1]
    inside = (x >= -0.5) & (x < W - 0.5) & (y >= -0.5) & (y < H - 0.5)
    kps[..., 2] = np.where(inside, kps[..., 2], 0.0)
    return kps.astype(np.float32)


def warp_image(image: np.ndarray, matrix, output_size: Sequence[int], border_value=0) -> np.ndarray:
    """Bilinear warp of an (h, w[, c]) image to ``output_size`` (H, W); outside is ``border_value``.

    Bilinear sampling between an edge pixel's centre and the image's edge, half a pixel
    further, mixes in the border colour; when the warp enlarges the image that half pixel
    becomes many output pixels (all of a tiny image), so the image is then first extended by
    one replicated pixel per side: the colour stays exact up to the edge, the blend lies outside.
    """
    H, W = output_size
    m = np.asarray(matrix, dtype=np.float64)
    if linear_scale(m) > 1.0:
        image = cv2.copyMakeBorder(image, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
        m = compose(m, translation(-1.0, -1.0))
    return cv2.warpAffine(
        image, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=border_value,
    )


# ------------------------------------------------------------------ random augmentation


class AffineSample(NamedTuple):
    """A drawn augmentation: the matrix (image -> crop) and the parameters it came from."""

    matrix: np.ndarray
    flipped: bool
    center: tuple[float, float]
    scale: float
    rotation: float


@dataclass(frozen=True)
class RandomAffine:
    """Training augmentation as one affine matrix: scale, rotation, crop, jitter, flip.

    Scale reference (the port's, from the OpenPose/CPM data transformer): a person with at
    least ``min_keypoints`` labelled keypoints is drawn at random, the crop is centred on their
    box, and the reference scale makes the *longer side* of their box ``person_fraction`` of
    the crop's shorter side (0.6 x 480 = 288 px). The port used the box height; the longer side
    keeps lying and sitting people from being blown up. The reference is kept within
    ``zoom_limits`` times the scale that fits the whole image into the crop, so a tiny person
    is not enlarged 20 times nor a giant one shrunk to nothing. An image with no such person
    is centred on the image at the fitting scale. The drawn scale is the reference times
    U(``scale_range``); rotation U(-``max_rotation``, ``max_rotation``) degrees about the crop
    centre; the centre moves by U(-``center_jitter``, ``center_jitter``) crop pixels per axis;
    the crop is mirrored with probability ``flip_prob``.

    All random numbers are drawn in a fixed order whatever the parameters, so e.g. the same
    seed with ``flip_prob`` 0 and 1 gives mirror images of the same crop.
    """

    output_size: tuple[int, int] = (480, 480)
    scale_range: tuple[float, float] = (0.8, 1.2)
    max_rotation: float = 40.0
    center_jitter: float = 40.0
    flip_prob: float = 0.5
    person_fraction: float = 0.6
    zoom_limits: tuple[float, float] = (0.5, 4.0)

    def __post_init__(self):
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must be 0 < low <= high, got {self.scale_range}")
        if not 0 < self.zoom_limits[0] <= self.zoom_limits[1]:
            raise ValueError(f"zoom_limits must be 0 < low <= high, got {self.zoom_limits}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {self.flip_prob}")
        if self.max_rotation < 0 or self.center_jitter < 0 or self.person_fraction <= 0:
            raise ValueError("max_rotation and center_jitter must be >= 0, person_fraction > 0")

    def reference(self, image_size: Sequence[int], box=None) -> tuple[tuple[float, float], float]:
        """Centre (x, y, point frame) and reference scale for an image and an optional person box."""
        h, w = image_size
        H, W = self.output_size
        fit = min(H / h, W / w)
        if box is None:
            return ((w - 1) / 2.0, (h - 1) / 2.0), fit
        x1, y1, x2, y2 = (float(v) for v in box)
        center = ((x1 + x2) / 2.0 - 0.5, (y1 + y2) / 2.0 - 0.5)
        size = max(x2 - x1, y2 - y1, 1.0)
        ref = self.person_fraction * min(H, W) / size
        return center, float(np.clip(ref, fit * self.zoom_limits[0], fit * self.zoom_limits[1]))

    def sample(self, image_size: Sequence[int], person_boxes=()) -> AffineSample:
        """Draw an augmentation for an image (height, width) with candidate person boxes (N, 4)."""
        u = np.random.random_sample(6)
        boxes = np.asarray(person_boxes, dtype=np.float64).reshape(-1, 4)
        box = boxes[min(int(u[0] * len(boxes)), len(boxes) - 1)] if len(boxes) else None
        center, ref = self.reference(image_size, box)
        lo, hi = self.scale_range
        scale = ref * (lo + (hi - lo) * u[1])
        rot = (2.0 * u[2] - 1.0) * self.max_rotation
        jitter = ((2.0 * u[3] - 1.0) * self.center_jitter, (2.0 * u[4] - 1.0) * self.center_jitter)
        flip = bool(u[5] < self.flip_prob)
        matrix = crop_matrix(center, scale, rot, self.output_size, jitter, flip)
        return AffineSample(matrix, flip, center, float(scale), float(rot))
