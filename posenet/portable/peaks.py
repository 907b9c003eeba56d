"""Heatmap peaks in numpy: 3x3 local maxima above a threshold, best first per channel, refined
by a parabola through the log-values (exact for Gaussian peaks of the training sigma)."""
from __future__ import annotations

import numpy as np


def max_filter_3x3(heat: np.ndarray) -> np.ndarray:
    """3x3 maximum filter of (..., H, W) maps (what lies outside does not count)."""
    rows = heat.copy()
    np.maximum(rows[..., 1:], heat[..., :-1], out=rows[..., 1:])
    np.maximum(rows[..., :-1], heat[..., 1:], out=rows[..., :-1])
    out = rows.copy()
    np.maximum(out[..., 1:, :], rows[..., :-1, :], out=out[..., 1:, :])
    np.maximum(out[..., :-1, :], rows[..., 1:, :], out=out[..., :-1, :])
    return out


def _log_quadratic_offset(lo, mid, hi, has_lo, has_hi, prior):
    eps = np.float32(1e-10)
    l_lo, l_mid, l_hi = (np.log(np.maximum(t, eps)) for t in (lo, mid, hi))
    prior = np.float32(prior)
    curvature = l_hi - np.float32(2.0) * l_mid + l_lo
    concave = has_lo & has_hi & (curvature < 0)
    half = np.float32(0.5)
    slope = np.where(has_lo & has_hi, half * (l_hi - l_lo),
                     np.where(has_hi, (l_hi - l_mid) - half * prior, (l_mid - l_lo) + half * prior))
    curvature = np.where(concave, curvature, prior)
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = -slope / curvature
    offset = np.where(has_lo | has_hi, offset, np.float32(0.0))
    return np.clip(offset, -0.5, 0.5).astype(np.float32)


def heatmap_peaks(heatmaps: np.ndarray, stride: int, sigma: float, threshold: float, max_peaks: int):
    """Peaks of (K, H, W) heatmaps, best first per channel: coords (K, M, 2) float32 x, y in
    input pixels, scores (K, M) (0 where not valid), valid (K, M); as posenet's
    ``KeypointHeatmapCodec.decode`` (refine "quadratic")."""
    heat = np.ascontiguousarray(heatmaps, dtype=np.float32)
    K, H, W = heat.shape
    is_peak = (heat == max_filter_3x3(heat)) & (heat >= np.float32(threshold))
    ranked = np.where(is_peak, heat, -np.inf).reshape(K, H * W)
    M = min(int(max_peaks), H * W)
    if M < H * W:
        part = np.argpartition(-ranked, M - 1, axis=1)[:, :M]
    else:
        part = np.broadcast_to(np.arange(H * W), (K, H * W))
    values = np.take_along_axis(ranked, part, 1)
    order = np.lexsort((part, -values), axis=1) if K else np.zeros((0, M), np.int64)
    index = np.take_along_axis(part, order, 1)
    scores = np.take_along_axis(values, order, 1).astype(np.float32)
    valid = np.isfinite(scores)
    scores = np.where(valid, scores, np.float32(0.0))
    iy, ix = np.divmod(index, W)
    flat = heat.reshape(K, -1)

    def at(dy, dx):
        return np.take_along_axis(flat, np.clip(iy + dy, 0, H - 1) * W + np.clip(ix + dx, 0, W - 1), 1)

    centre, left, right, up, down = at(0, 0), at(0, -1), at(0, 1), at(-1, 0), at(1, 0)
    prior = -1.0 / (sigma / stride) ** 2
    x = ix.astype(np.float32) + _log_quadratic_offset(left, centre, right, ix > 0, ix < W - 1, prior)
    y = iy.astype(np.float32) + _log_quadratic_offset(up, centre, down, iy > 0, iy < H - 1, prior)
    coords = (np.stack([x, y], axis=-1) + np.float32(0.5)) * np.float32(stride) - np.float32(0.5)
    return coords.astype(np.float32), scores, valid
