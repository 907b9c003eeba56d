"""Keypoints inside known person boxes: the highest heatmap peaks of each box.

``keypoints_in_boxes`` is the grouping with known person boxes: each keypoint of a person is
the highest heatmap cell of its channel inside the person's (enlarged) box, refined to
sub-pixel precision by the codec. With ground-truth boxes this is the "predicted keypoints +
GT boxes" protocol; the Pose Residual Network replaces it once boxes are predicted.
"""
from __future__ import annotations

import torch

from posenet.codecs import KeypointHeatmapCodec
from posenet.codecs.heatmap import max_filter_3x3


def keypoints_in_boxes(heatmaps: torch.Tensor, boxes: torch.Tensor, codec: KeypointHeatmapCodec,
                       margin: float = 0.1, exclusive: bool = True,
                       centrality: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints (B, K, 2) in input pixels and their scores (B, K) for boxes (B, 4).

    heatmaps: (K, h, w) of one image on the codec's grid; boxes: (x1, y1, x2, y2) in input
    pixels, enlarged by ``margin`` of their size on each side.

    ``exclusive=False``: each keypoint is the highest cell of its channel inside the box, so two
    overlapping boxes may take the same peak. ``exclusive=True`` (default): the local maxima
    (3x3) inside the boxes are handed out greedily, best first, one per box and channel and
    each to one box only; a candidate's rank is its heatmap value times
    ``exp(-centrality * d^2 / 2)``, d being its distance from the box centre in half box sizes,
    so a peak inside two boxes goes to the box it is more central in. A box left without a
    free peak falls back to its highest cell. Scores are always the heatmap values.
    """
    K, h, w = heatmaps.shape
    boxes = boxes.to(heatmaps.device, torch.float32).reshape(-1, 4)
    B = len(boxes)
    if B == 0:
        return heatmaps.new_zeros(0, K, 2), heatmaps.new_zeros(0, K)
    heat = heatmaps.float().clamp_min(0)  # outside a box 0 is below any real peak (targets >= 0)
    size = (boxes[:, 2:] - boxes[:, :2]).clamp_min(1.0)
    lo = boxes[:, :2] - margin * size
    hi = boxes[:, 2:] + margin * size
    xs = codec.to_input(torch.arange(w, device=heat.device, dtype=torch.float32))
    ys = codec.to_input(torch.arange(h, device=heat.device, dtype=torch.float32))
    inside_x = (xs[None] >= lo[:, :1]) & (xs[None] <= hi[:, :1])  # (B, w)
    inside_y = (ys[None] >= lo[:, 1:]) & (ys[None] <= hi[:, 1:])  # (B, h)
    # A box smaller than one cell still gets the cell under its centre.
    centre = codec.to_grid((boxes[:, :2] + boxes[:, 2:]) / 2).round().long()
    inside_x[torch.arange(B), centre[:, 0].clamp(0, w - 1)] = True
    inside_y[torch.arange(B), centre[:, 1].clamp(0, h - 1)] = True
    mask = inside_y[:, :, None] & inside_x[:, None, :]  # (B, h, w)
    index = (heat[None] * mask[:, None]).flatten(2).argmax(2)  # (B, K): highest cell in each box
    if exclusive and B > 1:
        index = _exclusive_peaks(heat, mask, boxes, xs, ys, index, centrality)
    coords = codec.refine_at(heat[None], index.t()[None])[0].transpose(0, 1)  # (B, K, 2)
    scores = heat.flatten(1).gather(1, index.t()).t()
    return coords, scores


def _exclusive_peaks(heat, mask, boxes, xs, ys, fallback, centrality):
    """Greedy one-peak-per-box-and-channel assignment; see ``keypoints_in_boxes``."""
    K, h, w = heat.shape
    B = len(boxes)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = ((boxes[:, 2:] - boxes[:, :2]) / 2).clamp_min(1.0)
    dx = (xs[None] - centre[:, :1]) / half[:, :1]  # (B, w)
    dy = (ys[None] - centre[:, 1:]) / half[:, 1:]  # (B, h)
    prior = torch.exp(-0.5 * centrality * (dy[:, :, None] ** 2 + dx[:, None, :] ** 2))  # (B, h, w)
    peak = (heat == max_filter_3x3(heat)) & (heat > 0)  # (K, h, w)
    rank = heat[None] * prior[:, None] * (peak[None] & mask[:, None])  # (B, K, h, w)
    rank = rank.transpose(0, 1).reshape(K, B, h * w)  # view of a fresh temporary: free to write
    chosen = torch.full((K, B), -1, dtype=torch.long, device=heat.device)
    channels = torch.arange(K, device=heat.device)
    for _ in range(B):
        best, flat = rank.flatten(1).max(1)  # (K,)
        ok = best > 0
        if not ok.any():
            break
        k, b, cell = channels[ok], torch.div(flat[ok], h * w, rounding_mode="floor"), flat[ok] % (h * w)
        chosen[k, b] = cell
        rank[k, b, :] = 0  # this box has its peak of channel k
        rank[k, :, cell] = 0  # and no other box may take it
    chosen = chosen.t()
    return torch.where(chosen >= 0, chosen, fallback)
