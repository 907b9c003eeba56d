"""Group heatmap peaks into people.

``keypoints_in_boxes`` is the grouping with known person boxes: each keypoint of a person is
the highest heatmap cell of its channel inside the person's (enlarged) box, refined to
sub-pixel precision by the codec. With ground-truth boxes this is the "predicted keypoints +
GT boxes" protocol; the Pose Residual Network replaces it once boxes are predicted.
"""
from __future__ import annotations

import torch

from posenet.codecs import KeypointHeatmapCodec


def keypoints_in_boxes(heatmaps: torch.Tensor, boxes: torch.Tensor, codec: KeypointHeatmapCodec,
                       margin: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints (B, K, 2) in input pixels and their scores (B, K) for boxes (B, 4).

    heatmaps: (K, h, w) of one image on the codec's grid; boxes: (x1, y1, x2, y2) in input
    pixels, enlarged by ``margin`` of their size on each side. All boxes at once, no loop.
    """
    K, h, w = heatmaps.shape
    boxes = boxes.to(heatmaps.device, torch.float32).reshape(-1, 4)
    if len(boxes) == 0:
        return heatmaps.new_zeros(0, K, 2), heatmaps.new_zeros(0, K)
    size = (boxes[:, 2:] - boxes[:, :2]).clamp_min(1.0)
    lo = boxes[:, :2] - margin * size
    hi = boxes[:, 2:] + margin * size
    xs = codec.to_input(torch.arange(w, device=heatmaps.device, dtype=torch.float32))
    ys = codec.to_input(torch.arange(h, device=heatmaps.device, dtype=torch.float32))
    inside_x = (xs[None] >= lo[:, :1]) & (xs[None] <= hi[:, :1])  # (B, w)
    inside_y = (ys[None] >= lo[:, 1:]) & (ys[None] <= hi[:, 1:])  # (B, h)
    # A box smaller than one cell still gets the cell under its centre.
    centre = codec.to_grid((boxes[:, :2] + boxes[:, 2:]) / 2).round().long()
    inside_x[torch.arange(len(boxes)), centre[:, 0].clamp(0, w - 1)] = True
    inside_y[torch.arange(len(boxes)), centre[:, 1].clamp(0, h - 1)] = True
    mask = inside_y[:, :, None] & inside_x[:, None, :]  # (B, h, w)
    # Outside the box the heatmap is set to 0, below any real peak (targets are >= 0).
    masked = heatmaps.clamp_min(0)[None] * mask[:, None]
    return codec.decode_single(masked)


def flip_back(heatmaps: torch.Tensor, flip_index) -> torch.Tensor:
    """Heatmaps of a horizontally mirrored input, mapped back to the unmirrored image:
    mirror the maps and swap left/right channels. (N, K, h, w) or (K, h, w)."""
    index = torch.as_tensor(flip_index, device=heatmaps.device, dtype=torch.long)
    return heatmaps.flip(-1).index_select(-3, index)
