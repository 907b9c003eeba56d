"""Test helpers around the heatmap codec."""
from __future__ import annotations

import torch


def highest_peak(codec, heatmaps) -> tuple[torch.Tensor, torch.Tensor]:
    """The highest cell of each channel (one person per heatmap), refined: coords (N, K, 2) or
    (K, 2) in input pixels and scores (N, K) or (K,), through the codec's own ``decode``."""
    peaks = codec.decode(heatmaps, threshold=0.0, max_peaks=1)
    return peaks.coords[..., 0, :], peaks.scores[..., 0]
