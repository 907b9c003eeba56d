"""The Pose Residual Network's grouping in numpy: peaks to person boxes.

``prn_assign``: each box's peaks written into its grid (``prn_grid``), the PRN's MLP
(``PoseResidualMLP``, numpy float32 products) run on them, each peak scored by the PRN output
summed in a window at its cell, and the peaks assigned to boxes one-to-one, best first.
``most_central_assign``: the baseline without a network (each peak to the box it is most
central in). ``pose_scores``: a grouped person's score. posenet's PyTorch grouping
(``posenet.inference.prn_grouping``) shares the assignment and the scores; its MLP is the
torch module."""
from __future__ import annotations

import numpy as np

from .matching import best_first_matching
from .prn_grid import (add_blurred_cells, blur_matrix, box_grid, box_matrix, grid_margin, grid_to_image, scatter_cells,
                       separable)


# What a peak writes into its PRN input cell (``prn_assign``'s ``peak_input``).
PEAK_INPUTS = ("score", "one")


def as_peaks(peaks_xy, peaks_type, peaks_score):
    """Peaks as float64 (P, 2) xy, int64 (P,) types and float64 (P,) scores (None: 1 each)."""
    xy = np.asarray(peaks_xy, dtype=np.float64).reshape(-1, 2)
    types = np.asarray(peaks_type, dtype=np.int64).reshape(-1)
    scores = np.ones(len(xy)) if peaks_score is None else np.asarray(peaks_score, dtype=np.float64).reshape(-1)
    if not len(xy) == len(types) == len(scores):
        raise ValueError(f"{len(xy)} peaks, {len(types)} types and {len(scores)} scores")
    return xy, types, scores


def by_type(types: np.ndarray, num_keypoints: int) -> tuple[np.ndarray, int]:
    """Each peak's slot among the peaks of its type, and the most peaks of one type."""
    order = np.argsort(types, kind="stable")
    counts = np.bincount(types, minlength=num_keypoints)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.empty(len(types), dtype=np.int64)
    slot[order] = np.arange(len(types)) - starts[types[order]]
    return slot, int(counts.max()) if len(types) else 0


def assign(pair_score: np.ndarray, types: np.ndarray, num_keypoints: int) -> np.ndarray:
    """Greedy assignment of (B, P) pair scores (-inf: not a candidate) -> the peak index per
    (box, type), (B, K), -1 where none."""
    B, P = pair_score.shape
    slot, slots = by_type(types, num_keypoints)
    score = np.full((num_keypoints, B, slots), -np.inf)
    score[types, :, slot] = pair_score.T
    chosen = best_first_matching(score)  # (K, B) slots
    peak_of = np.full((num_keypoints, max(slots, 1)), -1, dtype=np.int64)
    peak_of[types, slot] = np.arange(P)
    return np.where(chosen >= 0, np.take_along_axis(peak_of, chosen.clip(0), 1), -1).T


class PoseResidualMLP:
    """The PRN's MLP as numpy float32 products: Linear + ReLU layers (weights (out, in) as torch
    stores them), plus the input grids, then a softmax per channel ("channel") or over the whole
    grid ("global"). The first layer is applied to the unblurred peak cells with the blur folded
    into its weights (the blur is linear, so ``W vec(blur(S)) = blur_adjoint(W) vec(S)``): a few
    rows per grid instead of a 34272-wide product."""

    def __init__(self, layers, grid_shape, softmax: str = "channel", input_sigma: float = 1.0,
                 grid: str = "enlarged"):
        if softmax not in ("channel", "global"):
            raise ValueError(f"grouping.softmax must be 'channel' or 'global', got {softmax!r}")
        self.grid_shape = tuple(int(v) for v in grid_shape)
        K, H, W = self.grid_shape
        if len(layers) < 2:
            raise ValueError(f"the PRN needs at least two linear layers, got {len(layers)}")
        self.layers = [(np.ascontiguousarray(w, np.float32), np.ascontiguousarray(b, np.float32)) for w, b in layers]
        if self.layers[0][0].shape[1] != K * H * W or self.layers[-1][0].shape[0] != K * H * W:
            raise ValueError(f"PRN weights do not fit the grid {self.grid_shape}")
        self.softmax, self.input_sigma, self.grid = softmax, float(input_sigma), grid
        w0 = self.layers[0][0]
        # blur_adjoint as two large products: the first layer's rows are thousands of grids
        adjoint = separable(w0.reshape(-1, H, W), blur_matrix(H, self.input_sigma, grid).T,
                            blur_matrix(W, self.input_sigma, grid).T)
        folded = adjoint.reshape(w0.shape[0], K * H * W)
        self.folded = np.ascontiguousarray(folded.T)  # (K*H*W, hidden)
        self.last_t = [np.ascontiguousarray(w.T) for w, _ in self.layers[1:]]

    @classmethod
    def from_npz(cls, path, softmax: str, input_sigma: float, grid: str = "enlarged") -> "PoseResidualMLP":
        with np.load(path) as data:
            if "grid_shape" not in data:
                raise ValueError(f"{path}: no grid_shape array")
            n = sum(1 for k in data.files if k.startswith("w"))
            layers = [(data[f"w{i}"], data[f"b{i}"]) for i in range(n)]
            return cls(layers, data["grid_shape"].tolist(), softmax, input_sigma, grid)

    def __call__(self, cells: np.ndarray, nonzero=None) -> np.ndarray:
        """Probabilities (B, K, H, W) for the unblurred peak cells (B, K, H, W); ``nonzero``:
        their sorted flat indices into ``cells`` when the caller has them."""
        B = len(cells)
        size = cells[0].size
        flat = np.flatnonzero(cells) if nonzero is None else nonzero
        first = np.broadcast_to(self.layers[0][1], (B, len(self.layers[0][1]))).copy()
        if len(flat):  # sorted, so each grid's cells are one segment to sum
            b, i = np.divmod(flat, size)
            rows = self.folded[i] * cells.reshape(-1)[flat][:, None]
            starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
            first[b[starts]] += np.add.reduceat(rows, starts, axis=0)
        x = np.maximum(first, 0, out=first)
        for w_t, (_, bias) in zip(self.last_t, self.layers[1:]):
            x = x @ w_t
            x += bias
            np.maximum(x, 0, out=x)
        _, H, W = self.grid_shape
        add_blurred_cells(x, flat, cells.reshape(-1)[flat], H, W, self.input_sigma, self.grid)  # the residual input
        K = self.grid_shape[0]
        z = x.reshape(B, K, -1) if self.softmax == "channel" else x.reshape(B, 1, -1)
        z -= z.max(-1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(-1, keepdims=True)
        return z.reshape(B, *self.grid_shape)


def prn_assign(prn: PoseResidualMLP, boxes, xy, types, scores, num_keypoints: int, margin: float = 0.21,
               window: int = 15, min_score: float = 0.0, peak_input: str = "one"):
    """PRN grouping of one image's peaks into its boxes (posenet's ``prn_assign``): keypoints
    (B, K, 2) and scores (B, K); an unassigned keypoint lies at the centre of the PRN output's
    highest cell of its channel, with score 0. ``peak_input``: a peak's input cell holds its
    score ("score"), or 1 and its pair score is the window sum times its score ("one")."""
    if peak_input not in PEAK_INPUTS:
        raise ValueError(f"grouping.peak_input must be 'score' or 'one', got {peak_input!r}")
    K, height, width = prn.grid_shape
    if num_keypoints != K:
        raise ValueError(f"the PRN has {K} keypoint channels, the layout {num_keypoints}")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"grouping.window must be a positive odd number of cells, got {window}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    B, P = len(boxes), len(xy)
    if B == 0:
        return np.zeros((0, K, 2)), np.zeros((0, K))
    _, affine = box_grid(boxes, grid_margin(margin, prn.grid), height, width)
    values = scores if peak_input == "score" else np.ones_like(scores)
    cells, cell, inside, nonzero = scatter_cells(affine, xy, types, values, K, margin, height, width, prn.grid)
    out = prn(cells, nonzero)
    flat = out.reshape(B, K, -1)
    best = flat.argmax(2)
    centre = np.stack([best % width, best // width], axis=-1) + 0.5
    keypoints = grid_to_image(affine, centre)
    result = np.zeros((B, K))
    if P:
        cx, cy = cell[..., 0].clip(0, width - 1), cell[..., 1].clip(0, height - 1)
        # window sums (zero outside the grid) at the cells of the peaks inside each box: sums
        # along the rows at every cell (one product), then over the window's rows at the peaks
        r = window // 2
        across = (out.reshape(-1, width) @ box_matrix(width, window)).reshape(B, K, height, width)
        bi, pi = np.nonzero(inside)
        ys = cy[bi, pi][:, None] + np.arange(-r, r + 1)
        taken = across[bi[:, None], types[pi][:, None], ys.clip(0, height - 1), cx[bi, pi][:, None]]
        pair = np.zeros((B, P))
        pair[bi, pi] = np.where((ys >= 0) & (ys < height), taken, np.float32(0)).sum(1, dtype=np.float32)
        if peak_input == "one":
            pair = pair * scores[None].astype(np.float32)
        pair = np.where(inside & (pair > min_score), pair, -np.inf)
        peak = assign(pair, types, K)
        found = peak >= 0
        keypoints[found] = xy[peak[found]]
        result[found] = scores[peak[found]]
    return keypoints, result


def most_central_assign(boxes, peaks_xy, peaks_type, peaks_score, num_keypoints: int,
                        margin: float = 0.21) -> tuple[np.ndarray, np.ndarray]:
    """The baseline grouping: each peak goes to the box, among the enlarged boxes it lies in,
    where it is most central (distance to the box centre in half box sizes, per axis, the
    larger of the two), and each box keeps its best-scoring peak per type. A box without a
    peak of some type puts that keypoint at its centre, with score 0."""
    xy, types, scores = as_peaks(peaks_xy, peaks_type, peaks_score)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    B, K, P = len(boxes), num_keypoints, len(xy)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    keypoints = np.repeat(centre[:, None], K, axis=1)
    result = np.zeros((B, K))
    if B == 0 or P == 0:
        return keypoints, result
    enlarged, _ = box_grid(boxes, margin, 1, 1)
    half = (enlarged[:, 2:] - enlarged[:, :2]) / 2  # (B, 2)
    distance = (np.abs(xy[None] - centre[:, None]) / half[:, None]).max(-1)  # (B, P); <= 1 inside
    distance = np.where(distance <= 1.0, distance, np.inf)
    owner = distance.argmin(0)  # (P,)
    owned = np.isfinite(distance[owner, np.arange(P)])
    # best-scoring peak per (owner, type): sort by score, the last write of each key wins
    p = np.flatnonzero(owned)
    p = p[np.argsort(scores[p], kind="stable")]
    peak = np.full(B * K, -1, dtype=np.int64)
    peak[owner[p] * K + types[p]] = p
    peak = peak.reshape(B, K)
    found = peak >= 0
    keypoints[found] = xy[peak[found]]
    result[found] = scores[peak[found]]
    return keypoints, result


def pose_scores(box_scores, keypoint_scores, threshold: float = 0.05) -> np.ndarray:
    """The score of each grouped person (B,): its box score times the mean of its keypoint
    scores that exceed ``threshold`` (the keypoints it was found to have), 0 when none does.

    Unlike the port's ``#assigned / K``, it ranks a confident detection with confident
    keypoints above a doubtful one, and a person seen in part is not penalised for the
    keypoints it does not show (those count in the AP through OKS, not through the score).
    """
    box = np.asarray(box_scores, dtype=np.float64).reshape(-1)
    kps = np.asarray(keypoint_scores, dtype=np.float64).reshape(len(box), -1)
    above = kps > threshold
    mean = np.where(above, kps, 0.0).sum(1) / np.maximum(above.sum(1), 1)
    return box * mean
