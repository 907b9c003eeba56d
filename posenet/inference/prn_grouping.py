"""Group keypoint peaks into the persons of known boxes: with the Pose Residual Network, or
with the greedy baseline; and the pose score of a grouped person.

Both groupings take the boxes (B, 4) x1 y1 x2 y2 and the candidate peaks of one image in image
pixels: ``peaks_xy`` (P, 2), ``peaks_type`` (P,) keypoint index, ``peaks_score`` (P,) heatmap
value; both return ``(keypoints (B, K, 2) image pixels, scores (B, K))`` as numpy arrays, the
score of an assigned keypoint being its peak's score and that of a keypoint left unassigned 0.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from posenet.codecs.prn_grid import PrnGridCodec, grid_to_image
from posenet.models.prn import PoseResidualNetwork
from posenet.inference.prn_fast import (PRECISIONS, ChannelOutputs, Laps, contested, folded_first_layer,
                                       hidden_activations, int8_available, output_layer, peak_entries)
from posenet.portable.prn import PEAK_INPUTS, as_peaks, assign, most_central_assign, pose_scores


def window_sums(maps, types: np.ndarray, rows: np.ndarray, cols: np.ndarray, window: int) -> np.ndarray:
    """Sums of ``maps`` (B, K, H, W) over the ``window`` x ``window`` cells (zero outside the
    grid) centred on cell (rows, cols) (B, P) of channel ``types`` (P,): a box filter read off
    an integral image (float32: the maps are probabilities) at just those cells. Returns (B, P)
    float64."""
    maps = torch.as_tensor(maps).float()
    B, K, H, W = maps.shape
    integral = F.pad(maps.cumsum(2).cumsum(3), (1, 0, 1, 0))
    r = window // 2
    y0, y1, x0, x1 = (torch.from_numpy(np.asarray(v).clip(0, n)).to(maps.device)
                      for v, n in ((rows - r, H), (rows + r + 1, H), (cols - r, W), (cols + r + 1, W)))
    b = torch.arange(B, device=maps.device)[:, None]
    k = torch.as_tensor(types, device=maps.device)[None]
    sums = integral[b, k, y1, x1] - integral[b, k, y0, x1] - integral[b, k, y1, x0] + integral[b, k, y0, x0]
    return sums.double().cpu().numpy()


def _first_layer(prn: PoseResidualNetwork, cells: np.ndarray, codec: PrnGridCodec, device) -> torch.Tensor:
    """The first linear layer's output (B, hidden) for the blurred ``cells`` (B, K, H, W)."""
    index = np.flatnonzero(cells)
    b, i = np.divmod(index, cells[0].size)
    rows = folded_first_layer(prn, codec.input_sigma, device, codec.grid)[torch.from_numpy(i).to(device)]
    rows = rows * torch.from_numpy(cells.reshape(-1)[index]).to(device)[:, None]
    bias = prn.first_layer.bias.detach().float().to(device)
    return bias.expand(len(cells), -1).clone().index_add_(0, torch.from_numpy(b).to(device), rows)


@contextlib.contextmanager
def _eval_mode(module):
    """``module`` in eval mode (no dropout) for the block, its own mode restored after (a
    module already in eval mode throughout is left alone: switching walks every submodule)."""
    if not any(m.training for m in module.modules()):
        yield module
        return
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@torch.no_grad()
def prn_assign(prn, boxes, peaks_xy, peaks_type, peaks_score, num_keypoints: int, margin: float = 0.21,
               height: int = 56, width: int = 36, input_sigma: float = 1.0, window: int = 15,
               min_score: float = 0.0, precision: str = "int8",
               peak_input: str = "one", grid: str = "enlarged") -> tuple[np.ndarray, np.ndarray]:
    """PRN grouping of one image's peaks into its boxes.

    All boxes go through ``prn`` (put in eval mode for the call) as one batch; a
    ``PoseResidualNetwork`` gets its first layer from the peak cells and its folded weights
    (``folded_first_layer``), any other module the blurred grids. A peak of type
    k inside a box's enlarged box scores the PRN output of that box's channel k summed over
    the ``window`` x ``window`` cells around the peak's cell; pairs scoring more than
    ``min_score`` are assigned greedily, best first, each peak to one box per type and each box
    one peak per type (``best_first_matching``). An unassigned keypoint lies at the centre of the
    PRN output's highest cell of its channel, with score 0.

    ``peak_input``: what a peak writes into its input cell: "score", its heatmap score, or
    "one", 1 as in training (the PRN learns from ground-truth keypoints, written as 1), the
    pair score then being the window sum times the peak's score (the reference code's rule).
    ``grid``: the box's grid, "enlarged" or "reference" (``posenet.codecs.prn_grid``); a peak
    counts for a box where it counts in that grid, and is scored at its (clamped) cell.

    ``precision``: "exact" computes every channel of every box through the dense output layer
    (the reference); "float32" and "int8" compute only the channels whose scores can change the
    assignment, the output layer in float32 or int8 (``posenet.inference.prn_fast``, where the
    differences are stated). The fast paths need a ``PoseResidualNetwork`` on the CPU; any other
    module or device takes the exact path.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number of cells, got {window}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if peak_input not in PEAK_INPUTS:
        raise ValueError(f"peak_input must be one of {', '.join(PEAK_INPUTS)}, not {peak_input!r}")
    xy, types, scores = as_peaks(peaks_xy, peaks_type, peaks_score)
    # the input cells' values, and the factor of each pair's window sum
    values, factor = (scores, None) if peak_input == "score" else (np.ones_like(scores), scores)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    B, K, P = len(boxes), num_keypoints, len(xy)
    if B == 0:
        return np.zeros((0, K, 2)), np.zeros((0, K))
    codec = PrnGridCodec(margin, height, width, input_sigma, grid=grid)
    device = next(prn.parameters()).device
    if precision != "exact" and isinstance(prn, PoseResidualNetwork) and device.type == "cpu":
        with _eval_mode(prn):
            return _fast_assign(prn, codec, boxes, xy, types, scores, K, window, min_score,
                                precision == "int8" and int8_available(device), values, factor)
    cells = codec.cells(boxes, xy, types, values, K)
    grids = torch.from_numpy(codec.blur(cells))
    with _eval_mode(prn):
        if isinstance(prn, PoseResidualNetwork):
            out = prn(grids.to(device), first=_first_layer(prn, cells, codec, device)).float()
        else:
            out = prn(grids.to(device)).float()
    affine = codec.affine(boxes)
    keypoints, _ = codec.decode(boxes, out)  # fallback: the highest output cell of each channel
    result = np.zeros((B, K))
    if P:
        cell, inside = codec.point_cells(affine, xy)  # (B, P, 2), (B, P)
        cx, cy = cell[..., 0].clip(0, width - 1), cell[..., 1].clip(0, height - 1)
        pair = window_sums(out, types, cy, cx, window)  # (B, P)
        if factor is not None:
            pair = pair * factor[None].astype(pair.dtype)
        pair = np.where(inside & (pair > min_score), pair, -np.inf)
        peak = assign(pair, types, K)  # (B, K)
        found = peak >= 0
        keypoints[found] = xy[peak[found]]
        result[found] = scores[peak[found]]
    return keypoints, result


def _fast_assign(prn, codec: PrnGridCodec, boxes, xy, types, scores, K: int, window: int, min_score: float,
                 int8: bool, values: np.ndarray, factor: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``prn_assign``'s fast path (``posenet.inference.prn_fast``), same arguments and result."""
    lap = Laps()
    H, W = codec.height, codec.width
    B, P = len(boxes), len(xy)
    if P and (types.min() < 0 or types.max() >= K):
        raise ValueError(f"peak types must lie in 0..{K - 1}")
    affine = codec.affine(boxes)
    cell, inside = codec.point_cells(affine, xy)  # (B, P, 2), (B, P)
    flat, values = peak_entries(cell, inside, types, values, K, H, W)
    scored = contested(inside, types, K) if min_score <= 0 else inside
    taken = inside & ~scored  # alone in its component of the matching: taken whatever its score
    needed = np.ones((B, K), dtype=bool)  # channels without a candidate: their fallback, in the same products
    b, p = np.nonzero(taken)
    needed[b, types[p]] = False
    b, p = np.nonzero(scored)
    needed[b, types[p]] = True
    lap("selection")
    hidden = hidden_activations(prn, flat, values, B, codec.input_sigma, codec.grid)
    lap("first layer")
    layer = output_layer(prn, int8)
    out = ChannelOutputs(prn, hidden, needed, flat, values, codec.input_sigma, layer, codec.grid, lap)
    pair = np.full((B, P), -np.inf)
    if len(b):
        sums = out.window_sums(b, types[p], cell[b, p, 1], cell[b, p, 0], window)
        if factor is not None:
            sums = sums * factor[p].astype(sums.dtype)
        pair[b, p] = np.where(sums > min_score, sums, -np.inf)
    pair[taken] = 1.0
    lap("window sums")
    peak = assign(pair, types, K) if P else np.full((B, K), -1, dtype=np.int64)
    found = peak >= 0
    keypoints, result = np.zeros((B, K, 2)), np.zeros((B, K))
    keypoints[found] = xy[peak[found]]
    result[found] = scores[peak[found]]
    lap("assignment")
    b, k = np.nonzero(~found)  # fallback: the centre of the channel's highest cell
    if len(b):
        best = np.empty(len(b), dtype=np.int64)
        have = out.rows[b, k] >= 0
        best[have] = out.highest_cells(b[have], k[have])
        if not have.all():
            extra = np.zeros((B, K), dtype=bool)
            extra[b[~have], k[~have]] = True
            more = ChannelOutputs(prn, hidden, extra, flat, values, codec.input_sigma, layer, codec.grid, lap)
            best[~have] = more.highest_cells(b[~have], k[~have])
        centre = np.stack([best % W, best // W], -1) + 0.5
        keypoints[b, k] = grid_to_image(affine[b], centre[:, None])[:, 0]
    lap("fallback")
    return keypoints, result


__all__ = ["PEAK_INPUTS", "folded_first_layer", "most_central_assign", "pose_scores", "prn_assign", "window_sums"]
