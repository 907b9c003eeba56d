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

import contextlib
import time
import warnings
import weakref

import numpy as np
import torch
import torch.nn.functional as F

from posenet.codecs.prn_grid import blur_adjoint
from posenet.portable.prn_grid import blurred_cells

PRECISIONS = ("int8", "float32", "exact")

# The parts of the fast path that ``timed_parts`` reports, in order.
PARTS = ("selection", "first layer", "products", "softmax", "window sums", "assignment", "fallback")

_OUTPUT: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()
_FOLDED: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()
_TIMES: list = []  # the dicts of the active ``timed_parts`` blocks


@contextlib.contextmanager
def timed_parts():
    """Within the block, the fast path adds the wall time (seconds) of each of its ``PARTS``
    into the yielded dict, summed over its calls (for the decode benchmark's split; outside
    such a block the clock is not read)."""
    times = dict.fromkeys(PARTS, 0.0)
    _TIMES.append(times)
    try:
        yield times
    finally:
        _TIMES.remove(times)


class Laps:
    """``lap(part)``: the time since the previous lap goes to ``part`` of the active
    ``timed_parts`` blocks; a no-op outside them."""

    def __init__(self):
        self.active = bool(_TIMES)
        self.last = time.perf_counter() if self.active else 0.0

    def __call__(self, part: str) -> None:
        if self.active:
            now = time.perf_counter()
            for times in _TIMES:
                times[part] += now - self.last
            self.last = now


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
        """The outputs of channel ``k``, after the layer's ReLU (fused into fbgemm's output stage
        in int8), for hidden activations ``h`` (n, hidden): (n, H*W) float32."""
        if self.int8:
            return torch.ops.quantized.linear_relu_dynamic.default(h.contiguous(), self.blocks[k], True)
        w, b = self.blocks[k]
        return torch.addmm(b, h, w.t()).relu_()


def output_layer(prn, int8: bool) -> OutputLayer:
    """``prn``'s ``OutputLayer`` (int8 and float32 kept side by side), kept while its output
    weights are unchanged."""
    linear = prn.mlp[-2]
    key = (linear.weight.data_ptr(), linear.weight._version, linear.bias._version, str(linear.weight.device))
    cached = _OUTPUT.setdefault(prn, {})
    if int8 not in cached or cached[int8][0] != key:
        cached[int8] = (key, OutputLayer(linear, prn.num_keypoints, int8))
    return cached[int8][1]


def _folded(prn, sigma: float, device, grid: str) -> torch.Tensor:
    """(K*H*W + 1, hidden): ``folded_first_layer``'s rows, then the first layer's bias."""
    weight, bias = prn.first_layer.weight, prn.first_layer.bias
    key = (float(sigma), grid, str(device), weight.data_ptr(), weight._version, bias.data_ptr(), bias._version)
    cached = _FOLDED.get(prn)
    if cached is None or cached[0] != key:
        K, H, W = prn.grid_shape
        blurred = blur_adjoint(weight.detach().float().cpu().numpy().reshape(-1, H, W), sigma, grid)
        rows = torch.from_numpy(blurred.reshape(weight.shape[0], K * H * W).T)
        folded = torch.cat([rows, bias.detach().float().cpu()[None]]).to(device)
        cached = _FOLDED[prn] = (key, folded, folded[:-1])
    return cached[1]


def folded_first_layer(prn, sigma: float, device, grid: str = "enlarged") -> torch.Tensor:
    """The PRN's first weight matrix with the input blur folded in, (K*H*W, hidden) on ``device``.

    The input blur is linear and separable (matrices G of ``grid``), so the first layer of a
    blurred grid equals the weights through the blur's adjoint applied to the unblurred peak
    cells: ``W1 vec(G_h S G_w^T) = (G_h^T W1 G_w) vec(S)`` per channel (``blur_adjoint``; for
    the symmetric "enlarged" blur, the blurred weights). An image's grids hold a few peak
    cells each among K*H*W = 34272 inputs, so the first layer becomes a sum of a few rows
    instead of a dense product. Kept per network while its weights are unchanged (one more
    copy of the first layer in memory, its bias as one more row: ``hidden_activations`` sums
    a grid's rows after it in one ``embedding_bag``).
    """
    _folded(prn, sigma, device, grid)
    return _FOLDED[prn][2]


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
    B = inside.shape[0]
    b, p = np.nonzero(inside)
    per_channel = np.bincount(b * num_keypoints + types[p], minlength=B * num_keypoints).reshape(B, num_keypoints)
    return inside & ((inside.sum(0) > 1)[None] | (per_channel[:, types] > 1))


class ChannelOutputs:
    """PRN probabilities of selected (box, type) channels, (C, H, W) rows in ``rows`` (B, K)
    (-1: not computed). The hidden rows are gathered once; each type's channels are one product
    over a contiguous block of them; the residual input (each peak cell's blur patch,
    ``blurred_cells``) is added to the computed channels only."""

    def __init__(self, prn, hidden: torch.Tensor, needed: np.ndarray, flat: np.ndarray, values: np.ndarray,
                 sigma: float, layer: OutputLayer, grid: str = "enlarged", laps=None):
        lap = laps or Laps()
        K, H, W = prn.grid_shape
        B = needed.shape[0]
        if prn.softmax == "global":
            needed = np.repeat(needed.any(1, keepdims=True), K, 1)
        self.rows = np.full((B, K), -1, dtype=np.int64)
        k, b = np.nonzero(needed.T)  # type-major: each type's product fills consecutive rows
        self.rows[b, k] = np.arange(len(b))
        ends = np.cumsum(np.bincount(k, minlength=K)).tolist()
        selected = hidden.index_select(0, torch.from_numpy(b))
        blocks = [layer(selected[start:end], t) for t, (start, end) in enumerate(zip([0] + ends[:-1], ends))
                  if end > start]
        logits = (torch.cat(blocks) if len(blocks) > 1 else blocks[0]) if blocks else torch.zeros(0, H * W)
        lap("products")
        entry_b, entry_k = np.divmod(flat // (H * W), K)
        rows = self.rows[entry_b, entry_k]
        keep = rows >= 0
        if keep.any():  # the residual input
            index, weight = blurred_cells(rows[keep] * (H * W) + flat[keep] % (H * W), values[keep], H, W, sigma, grid)
            logits.view(-1).index_add_(0, torch.from_numpy(index), torch.from_numpy(weight))
        if prn.softmax == "global":  # a box's channels are all there: normalise over them
            boxes = np.flatnonzero(needed[:, 0])
            order = torch.from_numpy(self.rows[boxes].reshape(-1))
            probs = torch.empty_like(logits)
            probs[order] = logits[order].reshape(len(boxes), -1).softmax(-1).reshape(-1, H * W)
        else:
            probs = logits.softmax(-1)
        self.probs = probs.reshape(-1, H, W)
        lap("softmax")

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
        return np.take(padded.reshape(-1), corner[:, None] + offsets[None]).sum(1, dtype=np.float64)

    def highest_cells(self, b: np.ndarray, k: np.ndarray) -> np.ndarray:
        """The flat index of the highest cell of channels (b, k)."""
        return self.probs.flatten(1)[torch.from_numpy(self.rows[b, k])].argmax(1).numpy()


def hidden_activations(prn, flat: np.ndarray, values: np.ndarray, num_boxes: int, sigma: float,
                       grid: str = "enlarged") -> torch.Tensor:
    """The last hidden layer's activations (B, hidden) from the peak cells (``peak_entries``)
    and the folded first layer (``folded_first_layer``, on the CPU): the inference-mode MLP
    without its output layer. Cells of value 1 (``peak_input`` "one") are summed per grid in
    one ``embedding_bag`` over the folded rows, the bias row first; other values scale their
    rows first. Both add the bias and then each row in order, as one ``index_add_`` would."""
    folded = _folded(prn, sigma, "cpu", grid)
    size = len(folded) - 1
    b, i = np.divmod(flat, size)
    if len(values) and (values == 1).all():
        starts = np.searchsorted(b, np.arange(num_boxes))
        bags = torch.from_numpy(np.insert(i, starts, size))  # each grid's bag: the bias row, its cells
        first = F.embedding_bag(bags, folded, torch.from_numpy(starts + np.arange(num_boxes)), mode="sum")
    else:
        rows = folded[torch.from_numpy(i)] * torch.from_numpy(values)[:, None]
        first = folded[size].expand(num_boxes, -1).clone()
        first.index_add_(0, torch.from_numpy(b), rows)
    for layer in list(prn.mlp)[1:-2]:  # (slicing the Sequential would build a new module per call)
        first = layer(first)
    return first


__all__ = ["ChannelOutputs", "Laps", "OutputLayer", "PARTS", "PRECISIONS", "contested", "folded_first_layer",
           "hidden_activations", "int8_available", "output_layer", "peak_entries", "timed_parts"]
