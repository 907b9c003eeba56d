"""The PRN grouping's fast path: only the PRN outputs that can change an assignment.

``prn_assign`` with ``precision`` "int8" or "float32" lands here; "exact" keeps the dense
reference (every channel of every box through the full output layer). What the fast path
skips, and why the assignment stays the same:

* Uncontested pairs. The greedy matching of one keypoint type splits into the connected
  components of its (box, peak) candidate graph: a pair is the best of its row and column
  only against pairs that share its box or its peak. A pair whose box has no other candidate
  of that type and whose peak lies in no other box is taken whatever its score, so its
  channel's output is not computed (``contested``). Exception: with ``min_score > 0`` the
  score decides whether it is taken at all, so then every channel with a candidate is
  computed. (With ``min_score`` 0 the reference drops such a pair only where its float32
  integral-image window sum rounds to <= 0, i.e. a window holding under ~1e-7 of its
  channel's mass; the fast path takes it. That is the one difference not caused by rounding
  of near ties.)
* Channels nobody needs. The output layer runs per keypoint type on the boxes whose channel
  of that type is contested (one product per type over a contiguous block of the weights),
  and after the matching once more on the channels left unassigned, for their fallback (the
  highest cell). Under ``softmax: global`` a box's normaliser spans all its channels, so a
  box with one needed channel gets all of them.
* The dense input. The first layer reads the few peak cells (``folded_first_layer``), taken
  straight from the peaks rather than from a dense grid; the residual input of a computed
  channel is its peak cells' Gaussian patches added up.
* Window sums are gathered from the computed channels and added directly (the reference
  reads them off a float32 integral image, whose sums carry an error of ~1e-7 of the channel's
  mass: pairs below that are noise there).

"int8" runs the output layer through fbgemm's dynamically quantised linear (weights int8 per
output row, activations uint8 per call, int32 accumulation; CPU with the fbgemm/x86 engine,
float32 elsewhere), about 4x faster than float32 here. Its logits are within 1% of the
channel's largest logit of the float64 ones (typically 0.5%; tests/test_prn_fast.py), so a
pair score moves by at most exp(2 * that) - 1 relative: under 13% (typically ~6%) for a
trained PRN, whose logits stay below ~6 (the synthetic_small and overfit_coco_mini PRNs gave
the same assignments as "exact" on six crowd seeds of 20 people). Assignments can differ only where two competing pair scores are
that close, or where an unassigned keypoint's highest cell ties with another one. "float32"
computes the same channels in float32 and differs from "exact" only by rounding (and in the
windows below the reference's noise floor).

For a port that wants the fast path's results: skip the uncontested pairs (take them), compute
only the contested channels' softmax (all channels of such a box under "global"), sum windows
directly, and compute an unassigned keypoint's channel for its highest cell.
"""
from __future__ import annotations

import warnings
import weakref

import numpy as np
import torch

from posenet.codecs.prn_grid import blur_matrix, blur_radius

PRECISIONS = ("int8", "float32", "exact")

_OUTPUT: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def int8_available(device) -> bool:
    """Whether the int8 output layer runs on ``device`` (fbgemm / x86 quantised engine, CPU)."""
    return torch.device(device).type == "cpu" and torch.backends.quantized.engine in ("fbgemm", "x86")


class OutputLayer:
    """The PRN's output linear layer split per keypoint type (rows k*H*W .. (k+1)*H*W), in
    float32 or as fbgemm int8 packed weights. Built once per network and weights
    (``output_layer``)."""

    def __init__(self, linear: torch.nn.Linear, num_keypoints: int, int8: bool):
        weight = linear.weight.detach().float()
        bias = linear.bias.detach().float()
        cells = weight.shape[0] // num_keypoints
        self.int8 = int8
        self.blocks = []
        for k in range(num_keypoints):
            w, b = weight[k * cells:(k + 1) * cells], bias[k * cells:(k + 1) * cells]
            if int8:
                scale = (w.abs().amax(1) / 127.0).clamp_min(1e-12).double()
                with warnings.catch_warnings():  # quantised tensors are deprecated API, still fbgemm's input
                    warnings.simplefilter("ignore")
                    q = torch.quantize_per_channel(w.cpu(), scale, torch.zeros(cells, dtype=torch.long), 0,
                                                   torch.qint8)
                    self.blocks.append(torch.ops.quantized.linear_prepack(q, b.cpu()))
            else:
                self.blocks.append((w.contiguous(), b.contiguous()))

    def __call__(self, h: torch.Tensor, k: int) -> torch.Tensor:
        """The pre-ReLU outputs of channel ``k`` for hidden activations ``h`` (n, hidden), (n, H*W)."""
        if self.int8:
            return torch.ops.quantized.linear_dynamic(h.contiguous(), self.blocks[k], True)
        w, b = self.blocks[k]
        return torch.addmm(b, h, w.t())


def output_layer(prn, int8: bool) -> OutputLayer:
    """``prn``'s ``OutputLayer`` (int8 and float32 kept side by side), kept while its output
    weights are unchanged."""
    linear = prn.mlp[-2]
    key = (linear.weight.data_ptr(), linear.weight._version, linear.bias._version, str(linear.weight.device))
    cached = _OUTPUT.setdefault(prn, {})
    if int8 not in cached or cached[int8][0] != key:
        cached[int8] = (key, OutputLayer(linear, prn.num_keypoints, int8))
    return cached[int8][1]


def peak_entries(cell: np.ndarray, inside: np.ndarray, types: np.ndarray, scores: np.ndarray,
                 num_keypoints: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The nonzero cells of the unblurred input grids, as flat indices into (B, K, H, W) and
    their values (the larger score where two peaks share a cell, as ``peak_cells``), from the
    peaks' cells (B, P, 2) (column, row) and whether each is inside each grid (B, P)."""
    b, p = np.nonzero(inside)
    flat = ((b * num_keypoints + types[p]) * height + cell[b, p, 1]) * width + cell[b, p, 0]
    order = np.lexsort((scores[p], flat))  # by cell, the largest score last
    flat, values = flat[order], scores[p][order]
    last = np.ones(len(flat), dtype=bool)
    last[:-1] = flat[1:] != flat[:-1]
    return flat[last], values[last].astype(np.float32)


def contested(inside: np.ndarray, types: np.ndarray, num_keypoints: int) -> np.ndarray:
    """(B, P) the candidate pairs whose score can change the matching: the box has another
    candidate of the type, or the peak lies in another box."""
    per_peak = inside.sum(0)
    per_channel = np.zeros((inside.shape[0], num_keypoints), dtype=np.int64)
    b, p = np.nonzero(inside)
    np.add.at(per_channel, (b, types[p]), 1)
    return inside & ((per_peak[None] > 1) | (per_channel[:, types] > 1))


def _add_patches(logits: torch.Tensor, rows: np.ndarray, flat: np.ndarray, values: np.ndarray, height: int,
                 width: int, sigma: float, grid: str = "enlarged") -> None:
    """Add the blurred input (the residual) to the computed channels' logits (C, H*W) in
    place: every peak cell's Gaussian patch, the column of the grid's blur matrices
    (``blur_matrix``) at its cell, within the blur's reach; ``rows`` is the channel row of each
    entry (-1: not computed)."""
    keep = rows >= 0
    if not keep.any():
        return
    rows, cell, values = rows[keep], flat[keep] % (height * width), values[keep]
    i, j = np.divmod(cell, width)
    r = blur_radius(sigma, grid)
    d = np.arange(-r, r + 1)
    y, x = i[:, None, None] + d[None, :, None], j[:, None, None] + d[None, None, :]
    ok = (y >= 0) & (y < height) & (x >= 0) & (x < width)
    gh, gw = blur_matrix(height, sigma, grid), blur_matrix(width, sigma, grid)
    weight = (values[:, None, None] * gh[y.clip(0, height - 1), i[:, None, None]]
              * gw[x.clip(0, width - 1), j[:, None, None]])
    index = rows[:, None, None] * (height * width) + y * width + x
    logits.view(-1).index_add_(0, torch.from_numpy(index[ok]), torch.from_numpy(weight[ok].astype(np.float32)))


class ChannelOutputs:
    """PRN probabilities of selected (box, type) channels, (C, H, W) rows in ``rows`` (B, K)
    (-1: not computed)."""

    def __init__(self, prn, hidden: torch.Tensor, needed: np.ndarray, flat: np.ndarray, values: np.ndarray,
                 sigma: float, layer: OutputLayer, grid: str = "enlarged"):
        K, H, W = prn.grid_shape
        B = needed.shape[0]
        if prn.softmax == "global":
            needed = np.repeat(needed.any(1, keepdims=True), K, 1)
        self.rows = np.full((B, K), -1, dtype=np.int64)
        k, b = np.nonzero(needed.T)  # type-major: each type's product fills consecutive rows
        self.rows[b, k] = np.arange(len(b))
        types, starts = np.unique(k, return_index=True)
        blocks = [layer(hidden[torch.from_numpy(b[i:j])], int(t))
                  for t, i, j in zip(types, starts, list(starts[1:]) + [len(b)])]
        logits = torch.cat(blocks).float().relu_() if blocks else torch.zeros(0, H * W)
        entry_b, entry_k = np.divmod(flat // (H * W), K)
        _add_patches(logits, self.rows[entry_b, entry_k], flat, values, H, W, sigma, grid)
        if prn.softmax == "global":  # a box's channels are all there: normalise over them
            boxes = np.flatnonzero(needed[:, 0])
            order = torch.from_numpy(self.rows[boxes].reshape(-1))
            probs = torch.empty_like(logits)
            probs[order] = logits[order].reshape(len(boxes), -1).softmax(-1).reshape(-1, H * W)
        else:
            probs = logits.softmax(-1)
        self.probs = probs.reshape(-1, H, W)

    def window_sums(self, b: np.ndarray, k: np.ndarray, rows: np.ndarray, cols: np.ndarray, window: int):
        """Sums of the probabilities over the ``window`` x ``window`` cells (zero outside the
        grid) around cells (rows, cols) of channels (b, k), (E,) float64. Each window's cells
        are gathered from the zero-padded channels and added directly: cheaper than an integral
        image of every computed channel, and it cancels nothing (``prn_grouping.window_sums``
        subtracts float32 running sums, so there a sum carries an error of ~1e-7 of its
        channel's mass)."""
        C, H, W = self.probs.shape
        r = window // 2
        Hp, Wp = H + 2 * r, W + 2 * r
        padded = np.zeros((C, Hp, Wp), dtype=np.float32)
        padded[:, r:r + H, r:r + W] = self.probs.numpy()
        offsets = (np.arange(window)[:, None] * Wp + np.arange(window)[None]).reshape(-1)
        corner = self.rows[b, k] * (Hp * Wp) + rows * Wp + cols  # the window's top-left cell, padded
        return padded.reshape(-1)[corner[:, None] + offsets[None]].sum(1, dtype=np.float64)

    def highest_cells(self, b: np.ndarray, k: np.ndarray) -> np.ndarray:
        """The flat index of the highest cell of channels (b, k)."""
        return self.probs.flatten(1)[torch.from_numpy(self.rows[b, k])].argmax(1).numpy()


def hidden_activations(prn, flat: np.ndarray, values: np.ndarray, num_boxes: int, folded: torch.Tensor):
    """The last hidden layer's activations (B, hidden) from the peak cells (``peak_entries``)
    and the folded first layer: the inference-mode MLP without its output layer."""
    size = int(np.prod(prn.grid_shape))
    b, i = np.divmod(flat, size)
    rows = folded[torch.from_numpy(i)] * torch.from_numpy(values)[:, None]
    first = prn.first_layer.bias.detach().float().expand(num_boxes, -1).clone()
    first.index_add_(0, torch.from_numpy(b), rows)
    return prn.mlp[1:-2](first)


__all__ = ["ChannelOutputs", "OutputLayer", "PRECISIONS", "contested", "hidden_activations", "int8_available",
           "output_layer", "peak_entries"]
