"""Keypoint heatmaps on the stride-4 grid: ground-truth keypoints <-> Gaussian heatmaps.

Grid convention (shared by ``encode`` and ``decode``, and by the model's output):

* A keypoint coordinate ``x`` is in input pixels with pixel centres at integers, so pixel
  ``i`` covers ``[i - 0.5, i + 0.5)`` and an image of width ``w`` spans ``[-0.5, w - 0.5)``.
* Heatmap cell ``j`` covers input pixels ``stride*j .. stride*j + stride - 1``; its centre is
  at input pixel ``(j + 0.5) * stride - 0.5``. The heatmap has ``ceil(w / stride)`` columns,
  so a width that is not a multiple of the stride gets a last, partly covered cell.
* Hence ``grid = (x + 0.5) / stride - 0.5`` and ``x = (grid + 0.5) * stride - 0.5``; decoding
  applies the exact inverse of the mapping used for encoding.

People are combined by maximum, not by the port's sum clipped at 1: where two people's
Gaussians of the same keypoint overlap, the sum exceeds 1 around both centres and clipping
turns them into one flat plateau, so neither peak can be found or refined. The maximum keeps
every person's peak at its own height and position.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from posenet.ops.peaks import peak_cells
from posenet.portable.peaks import refine_peaks


def max_filter_3x3(heat: torch.Tensor) -> torch.Tensor:
    """3x3 maximum filter (stride 1, same size) as two separable passes.

    Equal to ``F.max_pool2d(heat, 3, 1, 1)`` and about ten times faster on CPU.
    """
    p = F.pad(heat, (1, 1, 1, 1), value=-math.inf)
    rows = torch.maximum(torch.maximum(p[..., :, :-2], p[..., :, 1:-1]), p[..., :, 2:])
    return torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


class Peaks(NamedTuple):
    """Peaks of a batch of heatmaps, best first per channel.

    ``coords`` (..., K, M, 2) are (x, y) in input pixels; ``scores`` (..., K, M) are the
    heatmap values at the peak cells (0 where ``valid`` is False); ``valid`` marks the
    entries that are real peaks at or above the threshold.
    """

    coords: torch.Tensor
    scores: torch.Tensor
    valid: torch.Tensor


class KeypointHeatmapCodec:
    """Gaussian keypoint heatmaps at cell centres of a stride-``stride`` grid.

    Args:
        input_size: (height, width) of the network input in pixels.
        stride: input pixels per heatmap cell.
        sigma: Gaussian standard deviation in input pixels.
        truncate: heatmap values below this are set to 0; it also bounds the window that
            ``encode`` writes per keypoint.
        combine: "max" (default, see the module docstring) or "sum" (the port: sum, clip at 1).
        refine: sub-pixel refinement of decoded peaks: "quadratic" (a parabola through the
            log-values of the peak cell and its neighbours, exact for Gaussians), "quarter"
            (shift a quarter cell toward the higher neighbour) or "none".
        peak_threshold: default minimum value of a peak in ``decode`` (as ``infer.peak_threshold``).
        max_peaks: default number of peaks kept per channel in ``decode`` (as ``infer.max_peaks``).
    """

    def __init__(
        self,
        input_size: Sequence[int],
        stride: int = 4,
        sigma: float = 7.0,
        truncate: float = 0.01,
        combine: str = "max",
        refine: str = "quadratic",
        peak_threshold: float = 0.05,
        max_peaks: int = 20,
    ):
        if len(input_size) != 2 or min(input_size) <= 0:
            raise ValueError(f"input_size must be (height, width), got {input_size}")
        if combine not in ("max", "sum"):
            raise ValueError(f"combine must be 'max' or 'sum', got {combine!r}")
        if refine not in ("quadratic", "quarter", "none"):
            raise ValueError(f"refine must be 'quadratic', 'quarter' or 'none', got {refine!r}")
        if not 0.0 < truncate < 1.0:
            raise ValueError(f"truncate must be in (0, 1), got {truncate}")
        if stride <= 0 or sigma <= 0:
            raise ValueError(f"stride and sigma must be positive, got {stride} and {sigma}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.stride = int(stride)
        self.sigma = float(sigma)
        self.truncate = float(truncate)
        self.combine = combine
        self.refine = refine
        self.peak_threshold = float(peak_threshold)
        self.max_peaks = int(max_peaks)
        # Cells farther than this (in cells) from the centre are below ``truncate``.
        self._sigma_cells = self.sigma / self.stride
        self._radius_cells = self._sigma_cells * math.sqrt(-2.0 * math.log(self.truncate))
        self._window = int(math.floor(2.0 * self._radius_cells)) + 1

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """(height, width) of the heatmaps: ``ceil(input / stride)``."""
        h, w = self.input_size
        return -(-h // self.stride), -(-w // self.stride)

    def to_grid(self, xy):
        """Input pixels -> heatmap cell coordinates (cell centres at integers)."""
        return (xy + 0.5) / self.stride - 0.5

    def to_input(self, grid):
        """Heatmap cell coordinates -> input pixels; the inverse of ``to_grid``."""
        return (grid + 0.5) * self.stride - 0.5

    # ------------------------------------------------------------------ encode

    def encode(self, keypoints) -> np.ndarray:
        """Heatmaps (K, H, W) float32 of people's keypoints (P, K, 3): x, y, v; v > 0 labelled.

        Each labelled keypoint writes a Gaussian only in the small window where it is at
        least ``truncate``; all windows are computed at once and scattered into the maps.
        """
        kps = np.asarray(keypoints, dtype=np.float64)
        if kps.ndim != 3 or kps.shape[2] != 3:
            raise ValueError(f"keypoints must have shape (people, keypoints, 3), got {kps.shape}")
        num_keypoints = kps.shape[1]
        H, W = self.heatmap_size
        size = self._window
        pad = size  # every window that touches the map fits in the padded map
        Hp, Wp = H + 2 * pad, W + 2 * pad
        heat = np.zeros((num_keypoints, Hp, Wp), dtype=np.float32)

        gx = self.to_grid(kps[..., 0])
        gy = self.to_grid(kps[..., 1])
        with np.errstate(invalid="ignore"):
            x0 = np.ceil(gx - self._radius_cells)
            y0 = np.ceil(gy - self._radius_cells)
            keep = (
                (kps[..., 2] > 0)
                & np.isfinite(gx) & np.isfinite(gy)
                & (x0 > -size) & (x0 < W) & (y0 > -size) & (y0 < H)
            )
        _, k_idx = np.nonzero(keep)
        if k_idx.size:
            gx, gy = gx[keep], gy[keep]
            x0, y0 = x0[keep].astype(np.int64), y0[keep].astype(np.int64)
            offs = np.arange(size)
            cols = x0[:, None] + offs  # (n, size) cell indices
            rows = y0[:, None] + offs
            inv = -0.5 / self._sigma_cells**2
            ex = np.exp((cols - gx[:, None]) ** 2 * inv).astype(np.float32)
            ey = np.exp((rows - gy[:, None]) ** 2 * inv).astype(np.float32)
            g = ey[:, :, None] * ex[:, None, :]  # (n, size, size)
            g[g < self.truncate] = 0.0
            flat = (
                k_idx[:, None, None] * (Hp * Wp)
                + (rows + pad)[:, :, None] * Wp
                + (cols + pad)[:, None, :]
            )
            out = heat.reshape(-1)
            if self.combine == "max":
                np.maximum.at(out, flat.reshape(-1), g.reshape(-1))
            else:
                np.add.at(out, flat.reshape(-1), g.reshape(-1))
                np.minimum(heat, 1.0, out=heat)
        return np.ascontiguousarray(heat[:, pad:pad + H, pad:pad + W])

    # ------------------------------------------------------------------ decode

    def decode(self, heatmaps, threshold: float | None = None, max_peaks: int | None = None) -> Peaks:
        """All local maxima of heatmaps (N, K, H, W) or (K, H, W), up to ``max_peaks`` per channel.

        A peak is a cell equal to the maximum of its 3x3 neighbourhood and at least
        ``threshold``. Coordinates are refined to sub-cell precision and returned in input
        pixels. On the CPU the cells are ``posenet.ops.peaks.peak_cells`` (compiled, or the
        portable decoder's numpy; equal values by index) and the "quadratic" refinement is the
        portable decoder's (``posenet.portable.peaks.refine_peaks``), so both decoders find the
        same peaks; elsewhere torch ops on the heatmaps' device. No loops over images,
        keypoints or peaks.
        """
        threshold = self.peak_threshold if threshold is None else float(threshold)
        max_peaks = self.max_peaks if max_peaks is None else int(max_peaks)
        heat, single = self._as_batch(heatmaps)
        N, K, H, W = heat.shape
        if heat.device.type == "cpu":
            index, scores = peak_cells(heat, threshold, max_peaks)
            valid = index >= 0
            if self.refine == "quadratic":
                coords = torch.from_numpy(refine_peaks(heat.detach().numpy(), index.numpy(), self.stride, self.sigma))
            else:
                coords = self.refine_at(heat, index.clamp_min(0))
        else:
            is_peak = (heat == max_filter_3x3(heat)) & (heat >= threshold)
            ranked = torch.where(is_peak, heat, torch.full_like(heat, -math.inf))
            scores, index = ranked.flatten(2).topk(min(max_peaks, H * W), dim=2)
            valid = torch.isfinite(scores)
            scores = torch.where(valid, scores, torch.zeros_like(scores))
            coords = self.refine_at(heat, index)
        peaks = Peaks(coords, scores, valid)
        return Peaks(*(t[0] for t in peaks)) if single else peaks

    @staticmethod
    def _as_batch(heatmaps) -> tuple[torch.Tensor, bool]:
        heat = torch.as_tensor(heatmaps)
        if heat.dim() not in (3, 4):
            raise ValueError(f"heatmaps must be (N, K, H, W) or (K, H, W), got {tuple(heat.shape)}")
        single = heat.dim() == 3
        heat = heat[None] if single else heat
        return heat.float(), single

    def refine_at(self, heat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Input-pixel (x, y) (N, K, M, 2) of cells ``index`` (N, K, M) into the flattened maps
        of ``heat`` (N, K, H, W), refined to sub-cell precision as ``refine`` says."""
        N, K, H, W = heat.shape
        iy = torch.div(index, W, rounding_mode="floor")
        ix = index - iy * W
        x = ix.to(heat.dtype)
        y = iy.to(heat.dtype)
        if self.refine != "none":
            flat = heat.flatten(2)

            def at(dy: int, dx: int) -> torch.Tensor:
                yy = (iy + dy).clamp(0, H - 1)
                xx = (ix + dx).clamp(0, W - 1)
                return flat.gather(2, yy * W + xx)

            centre, left, right, up, down = at(0, 0), at(0, -1), at(0, 1), at(-1, 0), at(1, 0)
            if self.refine == "quarter":
                x = x + 0.25 * torch.sign(right - left)
                y = y + 0.25 * torch.sign(down - up)
            else:
                x = x + self._log_quadratic_offset(left, centre, right, ix > 0, ix < W - 1)
                y = y + self._log_quadratic_offset(up, centre, down, iy > 0, iy < H - 1)
        return self.to_input(torch.stack([x, y], dim=-1))

    def _log_quadratic_offset(self, lo, mid, hi, has_lo, has_hi) -> torch.Tensor:
        """Sub-cell offset of the vertex of a parabola through the log-values.

        The log of a Gaussian is a parabola, so this recovers the exact centre of a target
        Gaussian. Where a neighbour is off the map, or the three values are not concave, the
        target's own curvature (-1 / sigma^2 in cells) stands in for the measured one.
        """
        eps = 1e-10
        l_lo, l_mid, l_hi = (t.clamp_min(eps).log() for t in (lo, mid, hi))
        prior = -1.0 / self._sigma_cells**2
        curvature = l_hi - 2.0 * l_mid + l_lo
        concave = has_lo & has_hi & (curvature < 0)
        slope = torch.where(
            has_lo & has_hi,
            0.5 * (l_hi - l_lo),
            torch.where(has_hi, (l_hi - l_mid) - 0.5 * prior, (l_mid - l_lo) + 0.5 * prior),
        )
        curvature = torch.where(concave, curvature, torch.full_like(curvature, prior))
        offset = -slope / curvature
        # A single cell (no neighbour on either side) carries no sub-cell information.
        offset = torch.where(has_lo | has_hi, offset, torch.zeros_like(offset))
        return offset.clamp(-0.5, 0.5)


def with_background(heatmaps: np.ndarray) -> np.ndarray:
    """Heatmaps (K, H, W) with one more channel, the background: 1 - their maximum (OpenPose's
    targets)."""
    return np.concatenate([heatmaps, 1.0 - heatmaps.max(0, keepdims=True, initial=0.0)])


__all__ = ["KeypointHeatmapCodec", "Peaks", "max_filter_3x3", "with_background"]
