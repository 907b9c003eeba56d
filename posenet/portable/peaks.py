"""Heatmap peaks in numpy: 3x3 local maxima above a threshold, best first per channel, refined
by a parabola through the log-values (exact for Gaussian peaks of the training sigma).

Two steps, each one source: ``peak_cells`` finds the cells (posenet's compiled
``torch.ops.posenet.peak_cells`` gives the same cells, faster) and ``refine_peaks`` moves them to
sub-cell positions; ``heatmap_peaks`` is both (posenet's ``KeypointHeatmapCodec.decode`` on the
CPU)."""
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


def peak_cells(heatmaps: np.ndarray, threshold: float, max_peaks: int):
    """The peak cells of (..., H, W) maps, best first per map: flat cell indices (..., M) int64
    and values (..., M) float32, M = min(max_peaks, H * W); index -1 and value 0 past a map's
    peaks. A peak is a cell at or above ``threshold`` (compared in float32) equal to the maximum
    of its 3x3 neighbourhood (``max_filter_3x3``; a NaN there makes none); equal values go by
    increasing index."""
    if max_peaks < 0:
        raise ValueError(f"max_peaks must be at least 0, got {max_peaks}")
    heat = np.ascontiguousarray(heatmaps, dtype=np.float32)
    *lead, H, W = heat.shape
    M = min(int(max_peaks), H * W)
    maps = heat.reshape(-1, H * W)
    index = np.full((len(maps), M), -1, dtype=np.int64)
    values = np.zeros((len(maps), M), dtype=np.float32)
    found = np.flatnonzero((heat == max_filter_3x3(heat)) & (heat >= np.float32(threshold)))
    if len(found):
        channel, cell = np.divmod(found, H * W)
        value = maps.reshape(-1)[found]
        order = np.lexsort((cell, -value, channel))  # by map, best first, ties by index
        channel, cell, value = channel[order], cell[order], value[order]
        starts = np.searchsorted(channel, channel, side="left")
        rank = np.arange(len(channel)) - starts
        keep = rank < M
        index[channel[keep], rank[keep]] = cell[keep]
        values[channel[keep], rank[keep]] = value[keep]
    return index.reshape(*lead, M), values.reshape(*lead, M)


def _log_quadratic_offset(l_lo, l_mid, l_hi, has_lo, has_hi, prior):
    """The vertex offset of the parabola through log-values (clipped to half a cell)."""
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


def refine_peaks(heatmaps: np.ndarray, index: np.ndarray, stride: int, sigma: float) -> np.ndarray:
    """Input-pixel (x, y) (..., M, 2) float32 of cells ``index`` (..., M) (``peak_cells``; -1
    reads cell 0) of (..., H, W) maps, moved by the vertex of a parabola through the log-values
    of the cell and its neighbours along each axis (the target's curvature, -1 / (sigma /
    stride)^2 cells, where a neighbour is off the map or the values are not concave)."""
    heat = np.ascontiguousarray(heatmaps, dtype=np.float32)
    H, W = heat.shape[-2:]
    flat = heat.reshape(-1, H * W)
    index = np.asarray(index).reshape(len(flat), np.shape(index)[-1])
    iy, ix = np.divmod(np.maximum(index, 0), W)
    cell = np.stack([iy, ix])  # (2, C, M): the row and the column, each refined along its axis
    size = np.array([H, W]).reshape(2, 1, 1)
    has_lo, has_hi = cell > 0, cell < size - 1
    step = np.array([W, 1]).reshape(2, 1, 1)
    at = np.broadcast_to(index.clip(0) + np.arange(len(flat))[:, None] * (H * W), cell.shape)  # into flat
    reads = np.stack([at, at - has_lo * step, at + has_hi * step])  # the cell, lower, higher neighbour
    logs = np.log(np.maximum(np.take(flat.reshape(-1), reads), np.float32(1e-10)))
    offset = _log_quadratic_offset(logs[1], logs[0], logs[2], has_lo, has_hi, -1.0 / (sigma / stride) ** 2)
    yx = cell.astype(np.float32) + offset
    coords = (np.stack([yx[1], yx[0]], axis=-1) + np.float32(0.5)) * np.float32(stride) - np.float32(0.5)
    return coords.astype(np.float32).reshape(*heat.shape[:-2], index.shape[-1], 2)


def heatmap_peaks(heatmaps: np.ndarray, stride: int, sigma: float, threshold: float, max_peaks: int):
    """Peaks of (K, H, W) heatmaps, best first per channel: coords (K, M, 2) float32 x, y in
    input pixels, scores (K, M) (0 where not valid), valid (K, M); as posenet's
    ``KeypointHeatmapCodec.decode`` (refine "quadratic")."""
    heat = np.ascontiguousarray(heatmaps, dtype=np.float32)
    index, scores = peak_cells(heat, threshold, max_peaks)
    return refine_peaks(heat, index, stride, sigma), scores, index >= 0
