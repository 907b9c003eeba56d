"""Geometry of the input and its inverse, and of the test-time augmentation's maps, in numpy.

The image -> input matrix of a scale puts pixel areas onto pixel areas (``x' = s (x + 0.5) -
0.5``, top-left aligned); output cell ``j`` of a stride-``s`` network is centred on input pixel
``s * j + (s - 1) / 2``. Mirroring an input whose width is a multiple of the stride mirrors the
cell grid onto itself (``flip_back``); the maps of another scale are resampled onto the
reference scale's grid by the cell-centre mapping (``to_grid_of``). The reference scale is the
listed scale nearest 1, so that the order of the scales changes nothing (``scale_order``).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def invert(matrix) -> np.ndarray:
    """The inverse of a 2x3 affine matrix (float64, closed form)."""
    m = np.asarray(matrix, dtype=np.float64)[:2]
    a, b, tx = m[0]
    c, d, ty = m[1]
    det = a * d - b * c
    if det == 0.0 or not math.isfinite(det):
        raise ValueError(f"affine matrix is not invertible: {m.tolist()}")
    inv = np.array([[d, -b], [-c, a]]) / det
    return np.hstack([inv, -inv @ np.array([[tx], [ty]])])


def transform_points(matrix, points) -> np.ndarray:
    """(..., 2) points (x, y) through a 2x3 matrix."""
    m = np.asarray(matrix, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


def resampling(factor: float) -> np.ndarray:
    """Pixels of an image ``factor`` times smaller -> pixels of the full image.

    Pixel ``i`` of the small image covers full-image pixels ``factor*i .. factor*(i+1) - 1``,
    so its centre is at ``factor * (i + 0.5) - 0.5``; this is how a JPEG decoded at 1/2, 1/4
    or 1/8 resolution (``cv2.IMREAD_REDUCED_*``) relates to the full image.
    """
    return np.array([[factor, 0.0, 0.5 * factor - 0.5], [0.0, factor, 0.5 * factor - 0.5]])


# Which image side ``infer.input_size * scale`` applies to: "longer" (posenet's rule: the image
# fits a square of that side), "height" (the CMU OpenPose release) or "shorter" (its PyTorch port).
INPUT_SIDES = ("longer", "height", "shorter")


def input_geometry(image_hw: Sequence[int], input_size: int, scale: float, min_size: int, side: str = "longer"):
    """(image -> input matrix, scale factor, input (height, width)) of an image of ``image_hw``
    at ``scale``: scaled, aspect kept and placed at the top left, so that its ``side`` (one of
    ``INPUT_SIDES``) becomes ``max(min_size, round(input_size * scale))`` pixels."""
    height, width = image_hw
    size = max(int(min_size), int(round(input_size * float(scale))))
    if side == "longer":
        ref = max(height, width)
    elif side == "height":
        ref = height
    elif side == "shorter":
        ref = min(height, width)
    else:
        raise ValueError(f"infer.input_side must be one of {', '.join(INPUT_SIDES)}, got {side!r}")
    s = size / ref
    hw = (max(1, int(round(height * s))), max(1, int(round(width * s))))
    return invert(resampling(1.0 / s)), s, hw


def _taps(n_out: int, scale: float, offset: float, n_in: int):
    """Source indices (into the image padded by one zero pixel per side) of the two taps of
    each output pixel, and the upper tap's weight."""
    pos = scale * np.arange(n_out, dtype=np.float64) + offset
    i0 = np.floor(pos)
    frac = (pos - i0).astype(np.float32)
    i0 = i0.astype(np.int64)
    return np.clip(i0 + 1, 0, n_in + 1), np.clip(i0 + 2, 0, n_in + 1), frac


def warp_image(image: np.ndarray, matrix, output_hw) -> np.ndarray:
    """Bilinear resampling of an (h, w, C) or (h, w) uint8 image through an axis-aligned
    (scale + translation) image -> output matrix into ``output_hw``; outside the image reads 0.
    posenet's ``warp_image`` (``cv2.warpAffine`` INTER_LINEAR, border 0), to within a grey level:
    an enlarging matrix first extends the image by one replicated pixel per side."""
    m = np.asarray(matrix, dtype=np.float64)
    if m[0, 1] != 0.0 or m[1, 0] != 0.0:
        raise ValueError("warp_image: only scale + translation matrices are supported")
    img = np.asarray(image)
    squeeze = img.ndim == 2
    if squeeze:
        img = img[:, :, None]
    if math.sqrt(abs(m[0, 0] * m[1, 1])) > 1.0:
        img = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
        m = np.hstack([m[:, :2], (m[:, 2] - m[:, :2].sum(1))[:, None]])  # m after a shift by (-1, -1)
    inv = invert(m)
    H, W = output_hw
    h, w = img.shape[:2]
    padded = np.zeros((h + 2, w + 2, img.shape[2]), dtype=np.float32)
    padded[1:-1, 1:-1] = img
    y_lo, y_hi, fy = _taps(H, inv[1, 1], inv[1, 2], h)
    x_lo, x_hi, fx = _taps(W, inv[0, 0], inv[0, 2], w)
    rows = padded[y_lo] * (1.0 - fy)[:, None, None] + padded[y_hi] * fy[:, None, None]
    out = rows[:, x_lo] * (1.0 - fx)[None, :, None] + rows[:, x_hi] * fx[None, :, None]
    out = np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)
    return out[:, :, 0] if squeeze else out


# The flip test pads the mirrored input with this colour whatever the network's normalisation
# (posenet's ``scales_and_flip.pad_width``: ImageNet's mean, rounded), before the graph's own padding.
FLIP_FILL = (0.485, 0.456, 0.406)


def flip_back(maps: np.ndarray, index, sign=None) -> np.ndarray:
    """(C, h, w) maps of a mirrored input mapped back: mirrored, channels permuted by ``index``,
    each multiplied by ``sign`` (-1 for the x of vector fields)."""
    out = maps[np.asarray(index, dtype=np.int64), :, ::-1]
    if sign is not None:
        out = out * np.asarray(sign, dtype=np.float32)[:, None, None]
    return out


def paf_flip_index(limbs: Sequence[Sequence[int]], flip_index: Sequence[int]) -> tuple[list[int], list[float]]:
    """The ``flip_back`` channel index and signs of part affinity fields (channels 2l, 2l + 1:
    the x, y of limb l from part a to b): mirrored, limb (a, b) becomes the limb of the mirrored
    parts, whose x component changes sign (or, listed the other way round, its y component)."""
    limbs = [tuple(int(i) for i in limb) for limb in limbs]
    index, sign = [], []
    for a, b in limbs:
        fa, fb = int(flip_index[a]), int(flip_index[b])
        if (fa, fb) in limbs:
            m, sx, sy = limbs.index((fa, fb)), -1.0, 1.0
        elif (fb, fa) in limbs:
            m, sx, sy = limbs.index((fb, fa)), 1.0, -1.0
        else:
            raise ValueError(f"limb {(a, b)} has no mirrored limb {(fa, fb)} among the limbs")
        index += [2 * m, 2 * m + 1]
        sign += [sx, sy]
    return index, sign


def reference_scale(scales: Sequence[float]) -> float:
    """The scale a multi-scale prediction is given at (its input geometry, heatmap grid and
    person boxes): the listed scale nearest 1 by ratio, the larger of two equally near. It
    depends on the set of scales, not on their order (the first scale of a list such as the
    OpenPose release's ``[0.5, 1.0, 1.5, 2.0, 2.5]`` would put every map on the 0.5 grid)."""
    values = [float(s) for s in scales]
    if not values or min(values) <= 0:
        raise ValueError(f"infer.scales must be positive numbers, got {list(scales)}")
    return min(values, key=lambda s: (round(abs(math.log(s)), 9), -s))


def scale_order(scales: Sequence[float]) -> tuple[float, list[float]]:
    """``(reference, others)``: the reference scale and the remaining scales in increasing order
    (one occurrence of the reference removed): what the predictors run, in an order that does
    not depend on the list's, so that the averaged maps do not either."""
    ref = reference_scale(scales)
    others = sorted(float(s) for s in scales)
    others.remove(ref)
    return ref, others


def _resample_matrix(n_out: int, n_in: int, ratio: float) -> np.ndarray:
    """(n_out, n_in) bilinear weights reading output cell j at input cell ratio j + (ratio - 1)/2,
    zero outside the input."""
    pos = ratio * np.arange(n_out, dtype=np.float32) + np.float32((ratio - 1.0) / 2.0)
    if n_in == 1:
        pos = np.zeros_like(pos)
    i0 = np.floor(pos).astype(np.int64)
    f = (pos - i0).astype(np.float32)
    m = np.zeros((n_out, n_in), dtype=np.float32)
    rows = np.arange(n_out)
    for idx, wgt in ((i0, 1.0 - f), (i0 + 1, f)):
        ok = (idx >= 0) & (idx < n_in)
        np.add.at(m, (rows[ok], idx[ok]), wgt[ok])
    return m


def to_grid_of(maps: np.ndarray, ratio: float, size) -> np.ndarray:
    """Maps (C, h, w) of an input scaled by ``ratio`` relative to the reference scale's, resampled
    bilinearly onto the reference scale's grid of ``size`` (h, w) cells (cell centre to cell centre;
    outside reads 0), as posenet's ``scales_and_flip.to_grid_of``."""
    _, h, w = maps.shape
    ry = _resample_matrix(size[0], h, ratio)
    rx = _resample_matrix(size[1], w, ratio)
    return np.einsum("yi,cij,xj->cyx", ry, maps.astype(np.float32), rx, optimize=True).astype(np.float32)
