"""posenet's portable decoder: an exported network (``model.onnx`` + ``model.json``) to people,
with numpy alone (onnxruntime only to run the graph, imported when it first runs).

This one file is all a deployment needs: ``scripts/export_onnx.py`` copies it beside the graph
as ``posenet_decoder.py``; it imports neither ``posenet`` nor ``torch``. It mirrors, step for
step, what the PyTorch predictors do after the network (``posenet.inference.Predictor`` for
MultiPoseNet, ``posenet.inference.paf_predictor.PafPredictor`` for the OpenPose family), so
that its people are theirs: keypoints within a fraction of a pixel, the same people.

    import posenet_decoder
    model = posenet_decoder.load("export/model.json")
    result = model.run(rgb)                 # (H, W, 3) uint8 RGB
    for person in result["people"]:         # best first
        person["keypoints"]                 # (K, 3) x, y, score in image pixels

    python posenet_decoder.py export/model.json photo.jpg [...] [--out results.json]

Steps (metadata keys in brackets)
---------------------------------
1. Input geometry per scale ``sc`` of [infer.scales]: the image side that [infer.input_side]
   names ("longer", the default; "height"; "shorter") becomes
   ``size = max(input.min_size, round(infer.input_size * sc))``, the aspect kept; the image -> input matrix puts
   pixel areas onto pixel areas (``x' = s (x + 0.5) - 0.5``, top-left aligned); the image is
   resampled bilinearly (as ``cv2.warpAffine`` INTER_LINEAR, border 0; an enlarged image is first
   extended by one replicated pixel per side) and padded at the bottom/right with
   [input.pad_value] (the mean colour: 0 once normalised, as the PyTorch models pad) to a
   multiple of [input.size_divisor] (or to the fixed [input.size]).
2. Flip test [infer.flip]: the input padded on the right to a multiple of the heatmap stride
   with the rounded mean colour, mirrored, run, and its maps mirrored back (channels swapped
   left/right, the PAFs' x negated), averaged with the unmirrored maps cell for cell.
   Scales: the reference scale is the listed scale nearest 1 (by ratio; the larger of two
   equally near); every other scale's maps are resampled onto its grid (cell centre to cell
   centre), summed in increasing order of scale after the reference's and averaged; boxes come
   from the reference scale, unflipped. The order of [infer.scales] changes nothing.
3. Peaks: 3x3 local maxima at or above [infer.peak_threshold], at most [infer.max_peaks] per
   channel, refined by a parabola through the log-values (exact for the training Gaussians of
   [heatmaps.sigma]), cell ``j`` being centred on input pixel ``stride * j + (stride - 1) / 2``.
4. MultiPoseNet: RetinaNet boxes ([detection]: sigmoid, score threshold, top-k per level,
   decoding against the anchors, clipping to the input, greedy NMS, max detections), those at
   or above [infer.box_threshold] scaled about their centres by [infer.box_scale]; the peaks
   grouped into the boxes by [grouping]: "prn" (the Pose Residual Network's MLP as numpy
   products, weights from ``model.prn.npz``; each peak, written into its input cell as its
   score or as 1 ([grouping.peak_input] "score" or "one"), scored by the PRN output summed in a
   window at its cell (times its score with "one"), assigned best first one-to-one; the grid
   over the enlarged box or, [grouping.grid] "reference", over the box itself with the margin's
   peaks clamped onto its border and the reference code's blur) or "greedy" (each peak to the enlarged
   box it is most central in). Pose score: box score times the mean of the keypoint scores
   above [infer.keypoint_threshold].
   OpenPose family: part peaks joined by the part affinity fields ([openpose.paf]: pair scores
   sampled along each candidate limb, the PAF read bilinearly or at the nearest cell
   ([openpose.paf.sampling]; "nearest" in exports before the key), one-to-one best first,
   merged limb by limb), the parts
   mapped back to the dataset's keypoints ([openpose.sources]); box = extent of the found
   keypoints; score = the grouping's person score.
5. Everything back to image pixels through the inverse of the reference scale's matrix.

Output of ``PoseModel.run`` / ``PoseModel.decode`` (the fields of posenet's ``Prediction``)
-------------------------------------------------------------------------------------------
``{"people": [person, ...]`` best first (stable sort on the score), each person
``{"keypoints": (K, 3) float64 x, y (image pixels, pixel centres at integers), score (0..1;
0: not found)``, ``"box": (4,) float64 x1, y1, x2, y2`` (image pixels, edges at integers,
clipped to the image), ``"box_score": float, "score": float}``;
``"boxes": (B, 4)`` all boxes (MultiPoseNet: above the box threshold; OpenPose: the people's),
``"box_scores": (B,)``, ``"heatmaps": (K or P, h, w) float32`` on the reference scale's grid (K
dataset keypoints for MultiPoseNet, P parts for OpenPose), ``"pafs": (2L, h, w)`` or None,
``"matrix": (2, 3)`` image -> input pixels, ``"image_size": (h, w)``, ``"stride": int``,
``"timing": {"network_ms", "decode_ms"}}``. The keypoint order is [keypoints.names].
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

FORMAT = "posenet-onnx"
VERSION = 1
FAMILIES = ("multiposenet", "openpose")
# The flip test pads the mirrored input with this colour whatever the network's normalisation
# (posenet's ``scales_and_flip.pad_width``: ImageNet's mean, rounded), before the graph's own padding.
FLIP_FILL = (0.485, 0.456, 0.406)
GROUPINGS = ("prn", "greedy")

# ============================================================================ geometry


def invert(matrix) -> np.ndarray:
    """The inverse of a 2x3 affine matrix (float64)."""
    m = np.asarray(matrix, dtype=np.float64)[:2]
    a, b, tx = m[0]
    c, d, ty = m[1]
    det = a * d - b * c
    if det == 0.0 or not math.isfinite(det):
        raise ValueError(f"affine matrix is not invertible: {m.tolist()}")
    inv = np.array([[d, -b], [-c, a]]) / det
    return np.hstack([inv, -inv @ np.array([[tx], [ty]])])


def transform_points(matrix, points) -> np.ndarray:
    """(..., 2) points (x, y) through a 2x3 matrix, float64."""
    m = np.asarray(matrix, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ m[:, :2].T + m[:, 2]


def _scaling(s: float) -> np.ndarray:
    """Image -> input pixels scaling the image by ``s``, top-left aligned, pixel areas onto
    pixel areas: x' = s (x + 0.5) - 0.5."""
    f = 1.0 / s  # the input -> image matrix is the resampling by f; its inverse is the fit
    return invert(np.array([[f, 0.0, 0.5 * f - 0.5], [0.0, f, 0.5 * f - 0.5]]))


def scale_order(scales):
    """(reference, others): the listed scale nearest 1 (by ratio; the larger of two equally
    near) and the remaining scales in increasing order (posenet's ``scales_and_flip.scale_order``)."""
    values = [float(s) for s in scales]
    if not values or min(values) <= 0:
        raise ValueError(f"infer.scales must be positive numbers, got {list(scales)}")
    ref = min(values, key=lambda s: (round(abs(math.log(s)), 9), -s))
    others = sorted(values)
    others.remove(ref)
    return ref, others


INPUT_SIDES = ("longer", "height", "shorter")


def input_geometry(image_hw, input_size: int, scale: float, min_size: int, side: str = "longer"):
    """(matrix, s, input (height, width)) of an image at ``scale``: its ``side`` (one of
    ``INPUT_SIDES``) becomes ``max(min_size, round(input_size * scale))``, aspect kept."""
    height, width = image_hw
    size = max(int(min_size), int(round(input_size * float(scale))))
    if side not in INPUT_SIDES:
        raise ValueError(f"infer.input_side must be one of {', '.join(INPUT_SIDES)}, got {side!r}")
    ref = max(height, width) if side == "longer" else height if side == "height" else min(height, width)
    s = size / ref
    hw = (max(1, int(round(height * s))), max(1, int(round(width * s))))
    return _scaling(s), s, hw


def _taps(n_out: int, scale: float, offset: float, n_in: int):
    """Source indices (into the image padded by one zero pixel per side) of the two taps of
    each output pixel, and the upper tap's weight."""
    pos = scale * np.arange(n_out, dtype=np.float64) + offset
    i0 = np.floor(pos)
    frac = (pos - i0).astype(np.float32)
    i0 = i0.astype(np.int64)
    return np.clip(i0 + 1, 0, n_in + 1), np.clip(i0 + 2, 0, n_in + 1), frac


def warp_image(image: np.ndarray, matrix, output_hw) -> np.ndarray:
    """Bilinear resampling of an (h, w, C) or (h, w) uint8 image through an axis-aligned
    (scale + translation) image -> output matrix into ``output_hw``; outside the image reads 0.
    posenet's ``warp_image`` (``cv2.warpAffine`` INTER_LINEAR, border 0), to within a grey level:
    an enlarging matrix first extends the image by one replicated pixel per side."""
    m = np.asarray(matrix, dtype=np.float64)
    if m[0, 1] != 0.0 or m[1, 0] != 0.0:
        raise ValueError("warp_image: only scale + translation matrices are supported")
    img = np.asarray(image)
    squeeze = img.ndim == 2
    if squeeze:
        img = img[:, :, None]
    if math.sqrt(abs(m[0, 0] * m[1, 1])) > 1.0:
        img = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
        m = np.hstack([m[:, :2], (m[:, 2] - m[:, :2].sum(1))[:, None]])  # m after a shift by (-1, -1)
    inv = invert(m)
    H, W = output_hw
    h, w = img.shape[:2]
    padded = np.zeros((h + 2, w + 2, img.shape[2]), dtype=np.float32)
    padded[1:-1, 1:-1] = img
    y_lo, y_hi, fy = _taps(H, inv[1, 1], inv[1, 2], h)
    x_lo, x_hi, fx = _taps(W, inv[0, 0], inv[0, 2], w)
    rows = padded[y_lo] * (1.0 - fy)[:, None, None] + padded[y_hi] * fy[:, None, None]
    out = rows[:, x_lo] * (1.0 - fx)[None, :, None] + rows[:, x_hi] * fx[None, :, None]
    out = np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)
    return out[:, :, 0] if squeeze else out


# ============================================================================ test-time augmentation


def flip_back(maps: np.ndarray, index, sign=None) -> np.ndarray:
    """(C, h, w) maps of a mirrored input mapped back: mirrored, channels permuted by ``index``,
    each multiplied by ``sign`` (-1 for the x of vector fields)."""
    out = maps[np.asarray(index, dtype=np.int64), :, ::-1]
    if sign is not None:
        out = out * np.asarray(sign, dtype=np.float32)[:, None, None]
    return out


def paf_flip_index(limbs, flip_index) -> tuple[list[int], list[float]]:
    """The channel index and signs that flip part affinity fields back (channels 2l, 2l + 1 the
    x, y of limb l): limb (a, b) becomes the limb of the mirrored parts, x negated (or y, when
    that limb is listed the other way round)."""
    limbs = [tuple(int(i) for i in limb) for limb in limbs]
    index, sign = [], []
    for a, b in limbs:
        fa, fb = int(flip_index[a]), int(flip_index[b])
        if (fa, fb) in limbs:
            m, sx, sy = limbs.index((fa, fb)), -1.0, 1.0
        elif (fb, fa) in limbs:
            m, sx, sy = limbs.index((fb, fa)), 1.0, -1.0
        else:
            raise ValueError(f"limb {(a, b)} has no mirrored limb {(fa, fb)} among the limbs")
        index += [2 * m, 2 * m + 1]
        sign += [sx, sy]
    return index, sign


def _resample_matrix(n_out: int, n_in: int, ratio: float) -> np.ndarray:
    """(n_out, n_in) bilinear weights reading output cell j at input cell ratio j + (ratio - 1)/2,
    zero outside the input."""
    pos = ratio * np.arange(n_out, dtype=np.float32) + np.float32((ratio - 1.0) / 2.0)
    if n_in == 1:
        pos = np.zeros_like(pos)
    i0 = np.floor(pos).astype(np.int64)
    f = (pos - i0).astype(np.float32)
    m = np.zeros((n_out, n_in), dtype=np.float32)
    rows = np.arange(n_out)
    for idx, wgt in ((i0, 1.0 - f), (i0 + 1, f)):
        ok = (idx >= 0) & (idx < n_in)
        np.add.at(m, (rows[ok], idx[ok]), wgt[ok])
    return m


def to_grid_of(maps: np.ndarray, ratio: float, size) -> np.ndarray:
    """Maps (C, h, w) of an input scaled by ``ratio`` relative to the reference scale's, resampled
    bilinearly onto the reference scale's grid of ``size`` (h, w) cells (cell centre to cell centre;
    outside reads 0), as posenet's ``scales_and_flip.to_grid_of``."""
    _, h, w = maps.shape
    ry = _resample_matrix(size[0], h, ratio)
    rx = _resample_matrix(size[1], w, ratio)
    return np.einsum("yi,cij,xj->cyx", ry, maps.astype(np.float32), rx, optimize=True).astype(np.float32)


# ============================================================================ heatmap peaks


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


# ============================================================================ detection


def anchors(sizes, strides, ratios, scales, feature_sizes) -> list[np.ndarray]:
    """Per level (h * w * A, 4) float32 anchors x1 y1 x2 y2, rows (y, x, anchor), anchors
    ratio-major, scale-minor, centred on ((x + 0.5) stride, (y + 0.5) stride)."""
    r = np.asarray(ratios, dtype=np.float64)[:, None]
    out = []
    for size, stride, (h, w) in zip(sizes, strides, feature_sizes):
        sides = float(size) * np.asarray(scales, dtype=np.float64)[None, :]
        aw, ah = (sides / np.sqrt(r)).reshape(-1), (sides * np.sqrt(r)).reshape(-1)
        base = np.stack([-aw, -ah, aw, ah], axis=1) / 2
        ys = (np.arange(h, dtype=np.float64) + 0.5) * stride
        xs = (np.arange(w, dtype=np.float64) + 0.5) * stride
        cy, cx = np.meshgrid(ys, xs, indexing="ij")
        centres = np.stack([cx, cy, cx, cy], axis=-1).reshape(-1, 1, 4)
        out.append((centres + base[None]).reshape(-1, 4).astype(np.float32))
    return out


def decode_boxes(deltas: np.ndarray, anchor: np.ndarray, std, clamp: float) -> np.ndarray:
    """Boxes (N, 4) from deltas (N, 4) against anchors (N, 4), float32 (posenet's BoxCoder)."""
    d = deltas.astype(np.float32)
    a = anchor.astype(np.float32)
    aw, ah = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    ax, ay = a[:, 0] + np.float32(0.5) * aw, a[:, 1] + np.float32(0.5) * ah
    sx, sy, sw, sh = (np.float32(s) for s in std)
    cx = d[:, 0] * sx * aw + ax
    cy = d[:, 1] * sy * ah + ay
    c = np.float32(clamp)
    w = np.exp(np.minimum(d[:, 2] * sw, c)) * aw
    h = np.exp(np.minimum(d[:, 3] * sh, c)) * ah
    half = np.float32(0.5)
    return np.stack([cx - half * w, cy - half * h, cx + half * w, cy + half * h], axis=1)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int | None = None) -> np.ndarray:
    """Greedy NMS (torchvision's semantics: stable descending score order, IoU in the boxes'
    dtype, suppressed when IoU > threshold): the kept indices, best first; stops after
    ``max_keep`` (the same first kept boxes). Each step suppresses against all boxes at once."""
    n = len(boxes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    b = boxes[order]
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    area = (x2 - x1) * (y2 - y1)
    alive = np.ones(n, dtype=bool)
    keep = []
    thr = np.asarray(iou_threshold, dtype=b.dtype)
    limit = n if max_keep is None else int(max_keep)
    i = 0
    while i < n and len(keep) < limit:
        keep.append(i)
        rest = np.flatnonzero(alive[i + 1:]) + i + 1
        if not len(rest):
            break
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = w * h
        iou = inter / (area[i] + area[rest] - inter)
        alive[rest[iou > thr]] = False
        nxt = np.flatnonzero(alive[i + 1:])
        if not len(nxt):
            break
        i = i + 1 + int(nxt[0])
    return order[np.asarray(keep, dtype=np.int64)]


def flatten_level(x: np.ndarray, per_anchor: int) -> np.ndarray:
    """(1, A * k, h, w) or (A * k, h, w) -> (h * w * A, k), rows in (y, x, anchor) order."""
    x = np.asarray(x)
    x = x.reshape(x.shape[-3:])
    _, h, w = x.shape
    return x.reshape(-1, per_anchor, h, w).transpose(2, 3, 0, 1).reshape(-1, per_anchor)


def detect(cls_levels, box_levels, detection: dict, input_hw) -> tuple[np.ndarray, np.ndarray]:
    """Person boxes (D, 4) float32 and scores (D,) of the raw head outputs of each level
    (``RetinaNetHead.postprocess`` with [detection.postprocess]), boxes clipped to the
    unpadded input (height, width); anchors from the level outputs' (padded) sizes."""
    C = int(detection.get("num_classes", 1))
    a = detection["anchors"]
    post = detection["postprocess"]
    coder = detection["box_coder"]
    sizes = [np.shape(c)[-2:] for c in cls_levels]
    level_anchors = anchors(a["sizes"], a["strides"], a["ratios"], a["scales"], sizes)
    threshold, topk = float(post["score_threshold"]), int(post["topk_per_level"])
    all_boxes, all_scores, all_labels = [], [], []
    for logits, deltas, anc in zip(cls_levels, box_levels, level_anchors):
        logits = flatten_level(logits, C).astype(np.float32).reshape(-1)
        scores = (np.float32(1.0) / (np.float32(1.0) + np.exp(-logits))).astype(np.float32)
        candidates = np.flatnonzero(scores > threshold)
        scores = scores[candidates]
        if len(scores) > topk:
            best = np.argsort(-scores, kind="stable")[:topk]
            scores, candidates = scores[best], candidates[best]
        index = candidates // C
        all_boxes.append(decode_boxes(flatten_level(deltas, 4)[index], anc[index], coder["std"], coder["clamp"]))
        all_scores.append(scores)
        all_labels.append(candidates % C)
    boxes = np.concatenate(all_boxes).astype(np.float32).reshape(-1, 4)
    scores = np.concatenate(all_scores).astype(np.float32)
    labels = np.concatenate(all_labels)
    h, w = float(input_hw[0]), float(input_hw[1])
    boxes = np.stack([boxes[:, 0].clip(0, w), boxes[:, 1].clip(0, h), boxes[:, 2].clip(0, w),
                      boxes[:, 3].clip(0, h)], axis=1).astype(np.float32)
    nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, scores, labels = boxes[nonempty], scores[nonempty], labels[nonempty]
    max_det, iou = int(post["max_detections"]), float(post["nms_threshold"])
    if C == 1:
        keep = nms(boxes, scores, iou, max_det)
    else:  # per class, then in global score order
        kept = [np.flatnonzero(labels == c)[nms(boxes[labels == c], scores[labels == c], iou)] for c in range(C)]
        keep = np.concatenate(kept) if kept else np.zeros(0, np.int64)
        keep = keep[np.argsort(-scores[keep], kind="stable")][:max_det]
    return boxes[keep], scores[keep]


# ============================================================================ groupings


def best_first_matching(score: np.ndarray) -> np.ndarray:
    """Greedy one-to-one assignment in (K, B, S) scores (-inf: no candidate), best pairs first:
    the chosen slot per (k, b), -1 where none (rounds of mutual best pairs; ties by index)."""
    score = score.copy()
    K, B, S = score.shape
    chosen = np.full((K, B), -1, dtype=np.int64)
    if B == 0 or S == 0:
        return chosen
    rows = np.arange(B)
    while True:
        row = score.argmax(2)
        value = np.take_along_axis(score, row[..., None], 2)[..., 0]
        col = score.argmax(1)
        mutual = np.isfinite(value) & (np.take_along_axis(col, row, 1) == rows)
        if not mutual.any():
            return chosen
        k, b = np.nonzero(mutual)
        s = row[k, b]
        chosen[k, b] = s
        score[k, b, :] = -np.inf
        score[k, :, s] = -np.inf


def box_grid(boxes, margin: float, height: int, width: int):
    """Enlarged boxes (B, 4) and per box the scale (B, 2) and offset (B, 2) of image pixels ->
    grid coordinates (u, v) = xy * scale + offset (posenet's ``prn_grid.box_grid``)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    centre = (b[:, :2] + b[:, 2:]) / 2
    half = np.maximum(b[:, 2:] - b[:, :2], 1.0) * (0.5 + margin)
    enlarged = np.concatenate([centre - half, centre + half], axis=1)
    scale = np.array([width, height], dtype=np.float64) / (2 * half)
    return enlarged, scale, -enlarged[:, :2] * scale


def gaussian_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) float32 blur along one axis, centre weight 1, truncated beyond ceil(3 sigma)."""
    d = np.arange(n)[:, None] - np.arange(n)[None]
    if sigma <= 0:
        return (d == 0).astype(np.float32)
    g = np.exp(-0.5 * (d / sigma) ** 2)
    g[np.abs(d) > np.ceil(3 * sigma)] = 0.0
    return g.astype(np.float32)


def blur_matrix(n: int, sigma: float, grid: str = "enlarged") -> np.ndarray:
    """(n, n) float32 blur along one axis of the PRN grid ``grid`` (posenet's
    ``prn_grid.blur_matrix``): "enlarged", ``gaussian_matrix``; "reference", a Gaussian
    normalised to sum 1, truncated at 4 sigma, the edge cells replicated outside the grid."""
    if grid == "enlarged":
        return gaussian_matrix(n, sigma)
    if grid != "reference":
        raise ValueError(f"grouping.grid must be 'enlarged' or 'reference', got {grid!r}")
    if sigma <= 0:
        return np.eye(n, dtype=np.float32)
    r = blur_radius(sigma, grid)
    d = np.arange(-r, r + 1)
    g = np.exp(-0.5 * (d / sigma) ** 2)
    g /= g.sum()
    m = np.zeros((n, n))
    rows = np.repeat(np.arange(n), len(d))
    np.add.at(m, (rows, np.clip(rows + np.tile(d, n), 0, n - 1)), np.tile(g, n))
    return m.astype(np.float32)


def blur_radius(sigma: float, grid: str = "enlarged") -> int:
    if sigma <= 0:
        return 0
    return int(np.ceil(3 * sigma)) if grid == "enlarged" else int(4 * sigma + 0.5)


def separable(grids: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``rows @ g @ cols.T`` for every (H, W) grid g of (..., H, W), as two large products
    (a batch of small ones is many times slower)."""
    shape = grids.shape
    h, w = shape[-2:]
    x = np.ascontiguousarray(grids, dtype=np.float32).reshape(-1, w) @ cols.T
    x = np.tensordot(rows, x.reshape(-1, h, w), axes=([1], [1]))  # (H, N, W)
    return np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(shape)


def blur(grids: np.ndarray, sigma: float, grid: str = "enlarged") -> np.ndarray:
    """(..., H, W) grids blurred with the separable Gaussian of ``blur_matrix``."""
    h, w = grids.shape[-2:]
    return separable(grids, blur_matrix(h, sigma, grid), blur_matrix(w, sigma, grid))


def blur_adjoint(weights: np.ndarray, sigma: float, grid: str = "enlarged") -> np.ndarray:
    """(..., H, W) weights through the adjoint of ``blur`` (``<w, blur(s)> = <blur_adjoint(w), s>``)."""
    h, w = weights.shape[-2:]
    return separable(weights, blur_matrix(h, sigma, grid).T, blur_matrix(w, sigma, grid).T)


def box_matrix(n: int, window: int) -> np.ndarray:
    """(n, n) float32: 1 where |i - j| <= window // 2 (a window sum along one axis, zero outside)."""
    d = np.arange(n)[:, None] - np.arange(n)[None]
    return (np.abs(d) <= window // 2).astype(np.float32)


def add_blurred_cells(out: np.ndarray, flat: np.ndarray, values: np.ndarray, height: int, width: int,
                      sigma: float, grid: str = "enlarged") -> None:
    """Add to ``out`` (N, K*H*W) the blur (``blur``) of grids that are zero but for ``values`` at
    the flat indices ``flat`` into (N, K, H, W): one small patch per set cell, the columns of
    the blur matrices at its cell."""
    if not len(flat):
        return
    radius = blur_radius(sigma, grid)
    d = np.arange(-radius, radius + 1)
    gh, gw = blur_matrix(height, sigma, grid), blur_matrix(width, sigma, grid)
    channel, rest = np.divmod(flat, height * width)
    r, c = np.divmod(rest, width)
    rows, cols = r[:, None] + d, c[:, None] + d  # (n, 2R + 1)
    ok = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
    index = (channel[:, None, None] * height + rows[:, :, None]) * width + cols[:, None, :]
    weight = (gh[rows.clip(0, height - 1), r[:, None]][:, :, None] * gw[cols.clip(0, width - 1), c[:, None]][:, None, :]
              * values.astype(np.float32)[:, None, None])
    np.add.at(out.reshape(-1), index[ok], weight[ok])


def _by_type(types: np.ndarray, num_keypoints: int):
    order = np.argsort(types, kind="stable")
    counts = np.bincount(types, minlength=num_keypoints)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.empty(len(types), dtype=np.int64)
    slot[order] = np.arange(len(types)) - starts[types[order]]
    return slot, int(counts.max()) if len(types) else 0


def _assign(pair_score: np.ndarray, types: np.ndarray, num_keypoints: int) -> np.ndarray:
    """(B, P) pair scores -> the peak per (box, type) (B, K), -1 where none, best first."""
    B, P = pair_score.shape
    slot, slots = _by_type(types, num_keypoints)
    score = np.full((num_keypoints, B, slots), -np.inf)
    score[types, :, slot] = pair_score.T
    chosen = best_first_matching(score)
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
        folded = blur_adjoint(w0.reshape(-1, H, W), self.input_sigma, grid).reshape(w0.shape[0], K * H * W)
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


def peak_cells(scale, offset, xy, types, values, num_keypoints, height, width, margin: float = 0.21,
               grid: str = "enlarged"):
    """(B, K, H, W) float32 grids with each peak's value at its cell in every box it counts for
    (the maximum where two share a cell), the (B, P, 2) cells, the (B, P) mask of the peaks that
    count and the sorted flat indices of the set cells. "enlarged": a peak counts where it lies
    in the grid; "reference": where it lies in the box enlarged by ``margin``, its cell clamped
    onto the grid (posenet's ``prn_grid.point_cells``)."""
    B, P = len(scale), len(xy)
    grids = np.zeros((B, num_keypoints, height, width), dtype=np.float32)
    uv = xy[None] * scale[:, None] + offset[:, None]
    cell = np.floor(uv).astype(np.int64)
    if grid == "enlarged":
        inside = (cell[..., 0] >= 0) & (cell[..., 0] < width) & (cell[..., 1] >= 0) & (cell[..., 1] < height)
    else:
        size = np.array([width, height])
        inside = ((uv >= -margin * size) & (uv < (1 + margin) * size)).all(-1)
        cell = np.clip(cell, 0, size - 1)
    flat = np.zeros(0, dtype=np.int64)
    if P and B:
        b, p = np.nonzero(inside)
        flat = ((b * num_keypoints + types[p]) * height + cell[b, p, 1]) * width + cell[b, p, 0]
        np.maximum.at(grids.reshape(-1), flat, values[p].astype(np.float32))
        flat = np.unique(flat)
        flat = flat[grids.reshape(-1)[flat] != 0]
    return grids, cell, inside, flat


def prn_assign(prn: PoseResidualMLP, boxes, xy, types, scores, num_keypoints: int, margin: float = 0.21,
               window: int = 15, min_score: float = 0.0, peak_input: str = "one"):
    """PRN grouping of one image's peaks into its boxes (posenet's ``prn_assign``): keypoints
    (B, K, 2) and scores (B, K); an unassigned keypoint lies at the centre of the PRN output's
    highest cell of its channel, with score 0. ``peak_input``: a peak's input cell holds its
    score ("score"), or 1 and its pair score is the window sum times its score ("one")."""
    if peak_input not in ("score", "one"):
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
    _, scale, offset = box_grid(boxes, margin if prn.grid == "enlarged" else 0.0, height, width)
    values = scores if peak_input == "score" else np.ones_like(scores)
    cells, cell, inside, nonzero = peak_cells(scale, offset, xy, types, values, K, height, width, margin, prn.grid)
    out = prn(cells, nonzero)
    flat = out.reshape(B, K, -1)
    best = flat.argmax(2)
    centre = np.stack([best % width, best // width], axis=-1) + 0.5
    keypoints = (centre - offset[:, None]) / scale[:, None]
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
        peak = _assign(pair, types, K)
        found = peak >= 0
        keypoints[found] = xy[peak[found]]
        result[found] = scores[peak[found]]
    return keypoints, result


def most_central_assign(boxes, xy, types, scores, num_keypoints: int, margin: float = 0.21):
    """The greedy baseline: each peak to the enlarged box it is most central in (per axis, in
    half box sizes, the larger), each box its best-scoring peak per type; a missing keypoint at
    the box centre with score 0 (posenet's ``most_central_assign``)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    B, K, P = len(boxes), num_keypoints, len(xy)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    keypoints = np.repeat(centre[:, None], K, axis=1)
    result = np.zeros((B, K))
    if B == 0 or P == 0:
        return keypoints, result
    enlarged, _, _ = box_grid(boxes, margin, 1, 1)
    half = (enlarged[:, 2:] - enlarged[:, :2]) / 2
    distance = (np.abs(xy[None] - centre[:, None]) / half[:, None]).max(-1)
    distance = np.where(distance <= 1.0, distance, np.inf)
    owner = distance.argmin(0)
    owned = np.isfinite(distance[owner, np.arange(P)])
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
    """Box score times the mean of the keypoint scores above ``threshold`` (0 when none)."""
    box = np.asarray(box_scores, dtype=np.float64).reshape(-1)
    kps = np.asarray(keypoint_scores, dtype=np.float64).reshape(len(box), -1)
    above = kps > threshold
    return box * (np.where(above, kps, 0.0).sum(1) / np.maximum(above.sum(1), 1))


# ============================================================================ part affinity fields


class PafGrouping:
    """The OpenPose family's grouping (posenet's ``PafCodec.decode``): candidate limbs scored
    by the PAFs sampled along them, taken one-to-one best first, merged into people limb by limb."""

    def __init__(self, input_hw, limbs, stride: int, limb_width: float = 1.0, samples: int = 10,
                 paf_threshold: float = 0.05, min_inliers: float = 0.8, min_parts: int = 3,
                 min_mean_score: float = 0.2, sampling: str = "nearest"):
        if stride <= 0 or limb_width <= 0 or samples < 2:
            raise ValueError("openpose.paf: stride and limb_width must be positive and samples at least 2")
        if sampling not in ("bilinear", "nearest"):
            raise ValueError(f"openpose.paf: sampling must be bilinear or nearest, got {sampling!r}")
        self.input_size = (int(input_hw[0]), int(input_hw[1]))
        self.limbs = np.asarray(limbs, dtype=np.int64).reshape(-1, 2)
        self.stride, self.samples = int(stride), int(samples)
        self.paf_threshold, self.min_inliers = float(paf_threshold), float(min_inliers)
        self.min_parts, self.min_mean_score = int(min_parts), float(min_mean_score)
        self.sampling = sampling
        self._t = np.linspace(0.0, 1.0, self.samples, dtype=np.float32)
        self._allowed = self.samples - int(np.floor(self.min_inliers * self.samples)) - 1
        tried, rest = [0, self.samples - 1], list(range(1, self.samples - 1))
        while rest:
            k = max(rest, key=lambda r: (min(abs(r - c) for c in tried), -r))
            tried.append(k)
            rest.remove(k)
        self._probe = tried[2:5]
        self._probe_min = 64

    def pair_scores(self, coords: np.ndarray, valid: np.ndarray, pafs: np.ndarray) -> np.ndarray:
        """(L, M, M) scores of every candidate pair, -inf where not accepted."""
        L, M = len(self.limbs), coords.shape[1]
        h, w = pafs.shape[-2:]
        hw = h * w
        out = np.full((L, M, M), -np.inf)
        first, second = self.limbs[:, 0], self.limbs[:, 1]
        candidate = valid[first][:, :, None] & valid[second][:, None, :]
        if not candidate.any():
            return out
        field = np.ascontiguousarray(pafs, dtype=np.float32).reshape(-1)
        xy = np.moveaxis(np.where(valid[..., None], coords, 0.0).astype(np.float32), -1, 0)
        a = xy[:, first]
        pair = np.empty((6, L, M, M), dtype=np.float32)
        pair[0:2] = a[..., None]
        np.subtract(xy[:, second, None, :], pair[0:2], out=pair[2:4])
        length = np.sqrt(pair[2] * pair[2] + pair[3] * pair[3])
        np.divide(pair[2:4], np.maximum(length, 1e-6), out=pair[4:6])
        t, thr, allowed = self._t, self.paf_threshold, self._allowed
        scale, offset = 1.0 / self.stride, 0.5 / self.stride - 0.5
        limit = np.array([w - 1, h - 1], dtype=np.float32)

        bilinear = self.sampling == "bilinear"

        def sample(base, p):
            """The PAF (x, y) at the points ``p`` (2, ...): the nearest cell's or bilinear."""
            g = p * scale + offset
            g = np.clip(g, 0, limit.reshape((2,) + (1,) * (g.ndim - 1)))
            if not bilinear:
                g = np.rint(g).astype(np.int64)
                index = base + g[1] * w + g[0]
                return at(index), at(index + hw)
            g0 = np.floor(g)
            fx, fy = g[0] - g0[0], g[1] - g0[1]
            g0 = g0.astype(np.int64)
            step_x = (g0[0] < w - 1).astype(np.int64)
            step_y = (g0[1] < h - 1) * w
            i00 = base + g0[1] * w + g0[0]
            i01, i10 = i00 + step_x, i00 + step_y
            i11 = i10 + step_x
            w00, w01, w10, w11 = (1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy
            return tuple(at(i00 + o) * w00 + at(i01 + o) * w01 + at(i10 + o) * w10 + at(i11 + o) * w11
                         for o in (0, hw))

        base = (2 * hw) * np.arange(L)
        unit = pair[4:6]
        at = field.take
        sx, sy = sample(base[:, None], a)
        fails = (sx[:, :, None] * unit[0] + sy[:, :, None] * unit[1] <= thr).view(np.int8)
        ex, ey = sample(base[:, None, None], pair[0:2] + pair[2:4])
        fails = fails + (ex * unit[0] + ey * unit[1] <= thr).view(np.int8)
        pairs = np.flatnonzero(candidate & (fails <= allowed))
        pair, base, fails = pair.reshape(6, -1).take(pairs, 1), base.take(pairs // (M * M)), fails.take(pairs)

        def dots(ts):
            vx, vy = sample(base[:, None], pair[0:2, :, None] + ts * pair[2:4, :, None])
            return vx * pair[4, :, None] + vy * pair[5, :, None]

        for k in self._probe:
            if len(pairs) <= self._probe_min:
                break
            fails = fails + (dots(t[k:k + 1])[:, 0] <= thr)
            keep = np.flatnonzero(fails <= allowed)
            pairs, pair, base, fails = pairs.take(keep), pair.take(keep, 1), base.take(keep), fails.take(keep)
        dot = dots(t)
        length = length.take(pairs)
        score = dot.mean(-1) + np.minimum(0.5 * self.input_size[0] / np.maximum(length, 1e-6) - 1.0, 0.0)
        ok = ((dot > thr).mean(-1) > self.min_inliers) & (score > 0) & (length > 1e-6)
        out.reshape(-1)[pairs[ok]] = score[ok]
        return out

    def __call__(self, coords, scores, valid, pafs) -> tuple[np.ndarray, np.ndarray]:
        """People (N, K, 3) x, y (input pixels), peak score; and their scores (N,), best first."""
        coords, scores = np.asarray(coords, np.float64), np.asarray(scores, np.float64)
        valid, pafs = np.asarray(valid, bool), np.asarray(pafs, np.float32)
        used = int(valid.sum(1).max()) if valid.size else 0
        if used < valid.shape[1] and valid[:, :used].sum() == valid.sum():
            coords, scores, valid = coords[:, :used], scores[:, :used], valid[:, :used]
        K, M = scores.shape
        pair = self.pair_scores(coords, valid, pafs)
        chosen = best_first_matching(pair)
        limb, ia = np.nonzero(chosen >= 0)
        ib = chosen[limb, ia]
        # the merging: a loop over the chosen pairs (a few hundred), limb by limb
        owner = [[-1] * M for _ in range(K)]
        parts: list[list[int]] = []
        pair_total: list[float] = []
        ends = self.limbs.tolist()
        for l, i, j, s in zip(limb.tolist(), ia.tolist(), ib.tolist(), pair[limb, ia, ib].tolist()):
            a, b = ends[l]
            p, q = owner[a][i], owner[b][j]
            if p >= 0 and q < 0:
                if parts[p][b] < 0:
                    parts[p][b], owner[b][j] = j, p
                    pair_total[p] += s
            elif p < 0 and q >= 0:
                if parts[q][a] < 0:
                    parts[q][a], owner[a][i] = i, q
                    pair_total[q] += s
            elif p < 0:
                row = [-1] * K
                row[a], row[b] = i, j
                owner[a][i] = owner[b][j] = len(parts)
                parts.append(row)
                pair_total.append(s)
            elif p == q:
                pair_total[p] += s
            else:
                mine, theirs = parts[p], parts[q]
                if any(x >= 0 and y >= 0 for x, y in zip(mine, theirs)):
                    continue
                for k, y in enumerate(theirs):
                    if y >= 0:
                        mine[k], owner[k][y] = y, p
                pair_total[p] += pair_total[q] + s
                parts[q] = [-1] * K
                pair_total[q] = 0.0
        parts = np.array(parts, dtype=np.int64).reshape(-1, K)
        pair_total = np.array(pair_total, dtype=np.float64)
        found = parts >= 0
        n_parts = found.sum(1)
        peak = np.where(found, scores[np.arange(K)[None], np.maximum(parts, 0)], 0.0)
        total = peak.sum(1) + pair_total
        keep = (n_parts >= self.min_parts) & (total / np.maximum(n_parts, 1) >= self.min_mean_score)
        found, parts, peak, total = found[keep], parts[keep], peak[keep], total[keep]
        n_pairs = np.maximum(found.sum(1) - 1, 0)
        keypoints = np.zeros((len(parts), K, 3))
        keypoints[..., :2] = np.where(found[..., None], coords[np.arange(K)[None], np.maximum(parts, 0)], 0.0)
        keypoints[..., 2] = peak
        person = total / np.maximum(found.sum(1) + n_pairs, 1) * found.sum(1) / K
        order = np.argsort(-person, kind="stable")
        return keypoints[order], person[order]


# ============================================================================ the model


def _read_json(path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the model metadata ({exc})") from None
    return meta


def check_metadata(meta: dict) -> None:
    """ValueError naming what this decoder does not support or what is missing."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} metadata file (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if int(meta.get("version", -1)) != VERSION:
        raise ValueError(f"metadata version {meta.get('version')!r} is not supported (this decoder reads {VERSION})")
    family = meta.get("family")
    if family not in FAMILIES:
        raise ValueError(f"model family {family!r} is not supported; known: {', '.join(FAMILIES)}")
    need = ["input", "outputs", "keypoints", "heatmaps", "infer"]
    need += ["detection", "grouping"] if family == "multiposenet" else ["openpose"]
    missing = [k for k in need if k not in meta]
    if missing:
        raise ValueError(f"metadata lacks {', '.join(missing)}")
    if family == "multiposenet":
        name = meta["grouping"].get("name")
        if name not in GROUPINGS:
            raise ValueError(f"grouping {name!r} is not supported; known: {', '.join(GROUPINGS)}")
        if not meta["infer"].get("scales"):
            raise ValueError("infer.scales is empty: give at least one scale")


class PoseModel:
    """An exported network and its metadata. ``session`` is anything with onnxruntime's
    ``run(None, {input: array}) -> [arrays in metadata "outputs" order]`` (made from
    ``meta["onnx"]`` on first use when not given); ``prn`` a ``PoseResidualMLP`` (read from
    ``grouping.weights`` when needed and not given); ``base_dir`` the folder of those files."""

    def __init__(self, meta: dict, session=None, prn: PoseResidualMLP | None = None, base_dir=".",
                 providers=None, threads: int | None = None):
        check_metadata(meta)
        self.meta = meta
        self.family = meta["family"]
        self.base_dir = os.fspath(base_dir)
        self._session, self._providers, self._threads = session, providers, threads
        self._prn = prn
        inp, inf = meta["input"], meta["infer"]
        self.stride = int(meta["heatmaps"]["stride"])
        self.sigma = float(meta["heatmaps"].get("sigma", 7.0))
        self.mean = np.asarray(inp["mean"], dtype=np.float64)
        self.pad_value = np.asarray(inp.get("pad_value", self.mean * 255.0), dtype=np.float32)
        self.divisor = int(inp.get("size_divisor", 32))
        self.fixed = tuple(int(v) for v in inp["size"]) if inp.get("size") else None
        self.min_size = int(inp.get("min_size", 32 if self.family == "multiposenet" else self.stride))
        self.input_size = int(inf["input_size"])
        self.input_side = str(inf.get("input_side", "longer"))
        if self.input_side not in INPUT_SIDES:
            raise ValueError(f"infer.input_side must be one of {', '.join(INPUT_SIDES)}, got {self.input_side!r}")
        self.scales = tuple(float(s) for s in inf.get("scales", [1.0]))
        self.flip = bool(inf.get("flip", False))
        kp = meta["keypoints"]
        self.names = list(kp["names"])
        if self.family == "openpose":
            op = meta["openpose"]
            parts = op["parts"]
            self.num_parts = len(parts["names"])
            self.limbs = [tuple(int(i) for i in limb) for limb in parts["skeleton"]]
            paf_index, paf_sign = paf_flip_index(self.limbs, parts["flip_index"])
            P = self.num_parts
            self._flip_index = [*map(int, parts["flip_index"]), P, *[P + 1 + i for i in paf_index]]
            self._flip_sign = [1.0] * (P + 1) + paf_sign
            source_index = np.full(len(self.names), -1, dtype=np.int64)
            for k, src in enumerate(op["sources"]):
                if len(src) == 1:
                    source_index[int(src[0])] = k
            self._source_index = source_index
        else:
            self._flip_index = [int(i) for i in kp["flip_index"]]
            self._flip_sign = None
            self.levels = sum(1 for n in meta["outputs"] if n.startswith("cls_logits_"))

    # ---------------------------------------------------------------- the graph

    @property
    def session(self):
        if self._session is None:
            try:
                import onnxruntime as ort
            except ImportError:
                raise ValueError("running the network needs onnxruntime (pip install onnxruntime)") from None
            options = ort.SessionOptions()
            if self._threads:
                options.intra_op_num_threads = int(self._threads)
            path = os.path.join(self.base_dir, self.meta.get("onnx", "model.onnx"))
            if not os.path.exists(path):
                raise ValueError(f"{path}: the network file is missing")
            self._session = ort.InferenceSession(path, options,
                                                 providers=self._providers or ["CPUExecutionProvider"])
        return self._session

    @property
    def prn(self) -> PoseResidualMLP:
        if self._prn is None:
            g = self.meta["grouping"]
            path = os.path.join(self.base_dir, g.get("weights", "model.prn.npz"))
            if not os.path.exists(path):
                raise ValueError(f"{path}: the PRN weights are missing (grouping prn)")
            self._prn = PoseResidualMLP.from_npz(path, g.get("softmax", "channel"), float(g.get("input_sigma", 1.0)),
                                                 str(g.get("grid", "enlarged")))
        return self._prn

    def _graph_size(self, h: int, w: int) -> tuple[int, int]:
        if self.fixed is None:
            return -(-h // self.divisor) * self.divisor, -(-w // self.divisor) * self.divisor
        if h > self.fixed[0] or w > self.fixed[1]:
            raise ValueError(f"an input of {h}x{w} does not fit the graph's fixed size {self.fixed[0]}x{self.fixed[1]} "
                             "(export with --dynamic for larger scales)")
        return self.fixed

    def _run_graph(self, chw: np.ndarray) -> dict:
        """The graph's outputs by name for a (3, h, w) float image (0..255), padded as the
        graph needs with the mean colour."""
        _, h, w = chw.shape
        H, W = self._graph_size(h, w)
        x = np.empty((1, 3, H, W), dtype=np.float32)
        x[0] = self.pad_value.reshape(3, 1, 1)
        x[0, :, :h, :w] = chw
        name = self.meta["input"].get("name", "image")
        values = self.session.run(None, {name: x})
        return dict(zip(self.meta["outputs"], values))

    def _maps(self, out: dict, hw) -> np.ndarray:
        """The heatmaps (and PAFs) of an output dict cropped to the unpadded input's grid."""
        h, w = -(-hw[0] // self.stride), -(-hw[1] // self.stride)
        heat = np.asarray(out["heatmaps"], dtype=np.float32)
        heat = heat.reshape(heat.shape[-3:])[:, :h, :w]
        if self.family == "openpose":
            pafs = np.asarray(out["pafs"], dtype=np.float32)
            heat = np.concatenate([heat, pafs.reshape(pafs.shape[-3:])[:, :h, :w]])
        return heat

    def network(self, rgb: np.ndarray):
        """(outputs, matrix, input_hw): the reference scale's raw outputs by name with
        "heatmaps" (and "pafs") replaced by the flip- and scale-averaged maps (C, h, w) on its
        grid (step 2 of the module docstring)."""
        rgb = as_rgb(rgb)
        ref, others = scale_order(self.scales)
        total, outputs, matrix, input_hw, ref_s = self._scale_maps(rgb, ref)
        for scale in others:
            maps, _, _, hw, s = self._scale_maps(rgb, scale)
            total = total + (maps if hw == input_hw else to_grid_of(maps, s / ref_s, total.shape[-2:]))
        total = (total / np.float32(len(self.scales))).astype(np.float32)
        outputs = dict(outputs)
        if self.family == "openpose":
            P = self.num_parts
            outputs["heatmaps"], outputs["pafs"] = total[:P + 1], total[P + 1:]
        else:
            outputs["heatmaps"] = total
        return outputs, matrix, input_hw

    def _scale_maps(self, rgb: np.ndarray, scale: float):
        """(maps (C, h, w), raw outputs, image -> input matrix, input (h, w), scale factor) of
        one scale, flip-averaged with [infer.flip]."""
        height, width = rgb.shape[:2]
        fill = np.rint(np.asarray(FLIP_FILL) * 255.0).astype(np.float32).reshape(3, 1, 1)
        m, s, hw = input_geometry((height, width), self.input_size, scale, self.min_size, self.input_side)
        chw = warp_image(rgb, m, hw).transpose(2, 0, 1).astype(np.float32)
        out = self._run_graph(chw)
        maps = self._maps(out, hw)
        if self.flip:
            pad = (-hw[1]) % self.stride
            wide = np.concatenate([chw, np.broadcast_to(fill, (3, hw[0], pad))], axis=2) if pad else chw
            flipped = self._maps(self._run_graph(np.ascontiguousarray(wide[:, :, ::-1])), (hw[0], hw[1] + pad))
            back = flip_back(flipped, self._flip_index, self._flip_sign)
            maps = np.float32(0.5) * (maps + back[:, :maps.shape[1], :maps.shape[2]])
        return maps, out, m, hw, s

    def run(self, rgb: np.ndarray) -> dict:
        """The people of one (H, W, 3) uint8 RGB image and everything else (module docstring)."""
        rgb = as_rgb(rgb)
        start = time.perf_counter()
        outputs, matrix, input_hw = self.network(rgb)
        network = time.perf_counter() - start
        start = time.perf_counter()
        result = self.decode(outputs, matrix, input_hw, rgb.shape[:2])
        result["timing"] = {"network_ms": 1e3 * network, "decode_ms": 1e3 * (time.perf_counter() - start)}
        return result

    # ---------------------------------------------------------------- decoding

    def decode(self, outputs: dict, matrix, input_hw, image_size) -> dict:
        """People from the network's outputs (the graph's, or ``network``'s averaged maps) for
        an input of ``input_hw`` made from an image of ``image_size`` by ``matrix``."""
        input_hw = (int(input_hw[0]), int(input_hw[1]))
        image_size = (int(image_size[0]), int(image_size[1]))
        start = time.perf_counter()
        maps = self._maps(outputs, input_hw)
        if self.family == "openpose":
            result = self._decode_openpose(maps, matrix, input_hw, image_size)
        else:
            result = self._decode_multiposenet(maps, outputs, matrix, input_hw, image_size)
        result.update(matrix=np.asarray(matrix, dtype=np.float64), image_size=image_size, stride=self.stride,
                      timing={"network_ms": 0.0, "decode_ms": 1e3 * (time.perf_counter() - start)})
        return result

    def _peaks(self, heat: np.ndarray):
        inf = self.meta["infer"]
        return heatmap_peaks(heat, self.stride, self.sigma, float(inf.get("peak_threshold", 0.05)),
                             int(inf.get("max_peaks", 20)))

    def _decode_multiposenet(self, heat, outputs, matrix, input_hw, image_size) -> dict:
        inf, K = self.meta["infer"], heat.shape[0]
        try:
            cls_levels = [outputs[f"cls_logits_{i}"] for i in range(self.levels)]
            box_levels = [outputs[f"box_deltas_{i}"] for i in range(self.levels)]
        except KeyError as exc:
            raise ValueError(f"the network outputs lack {exc.args[0]}") from None
        boxes, box_scores = detect(cls_levels, box_levels, self.meta["detection"], input_hw)
        keep = box_scores >= np.float32(inf.get("box_threshold", 0.3))
        boxes, box_scores = boxes[keep], box_scores[keep]
        coords, scores, valid = self._peaks(heat)
        types = np.broadcast_to(np.arange(K)[:, None], valid.shape)[valid]
        xy, peak_scores = coords[valid].astype(np.float64), scores[valid].astype(np.float64)
        people, image_boxes = self.group(xy, types, peak_scores, boxes, box_scores, matrix, image_size)
        return {"people": people, "boxes": image_boxes, "box_scores": box_scores, "heatmaps": heat, "pafs": None}

    def group(self, xy, types, scores, boxes, box_scores, matrix, image_size):
        """People and (B, 4) image boxes from peaks (P, 2) / (P,) / (P,) and boxes (B, 4) in input
        pixels (posenet's ``Predictor.group``)."""
        inf, g = self.meta["infer"], self.meta["grouping"]
        K = len(self.names)
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if not len(boxes):
            return [], np.zeros((0, 4))
        box_scale = float(inf.get("box_scale", 1.0))
        if box_scale != 1.0:
            centre, half = np.float32(0.5) * (boxes[:, :2] + boxes[:, 2:]), np.float32(0.5) * (boxes[:, 2:] - boxes[:, :2])
            s = np.float32(box_scale)
            boxes = np.concatenate([centre - s * half, centre + s * half], axis=1)
        margin = float(g.get("margin", 0.21))
        if g["name"] == "prn":
            keypoints, kp_scores = prn_assign(self.prn, boxes, xy, types, scores, K, margin, int(g.get("window", 15)),
                                              peak_input=str(g.get("peak_input", "score")))  # exports before the key wrote scores
        else:
            keypoints, kp_scores = most_central_assign(boxes, xy, types, scores, K, margin)
        inverse = invert(matrix)
        keypoints = transform_points(inverse, np.asarray(keypoints, np.float64).reshape(-1, 2)).reshape(len(boxes), K, 2)
        image_boxes = transform_points(inverse, boxes.astype(np.float64).reshape(-1, 2)).reshape(-1, 4)
        h, w = image_size
        image_boxes[:, 0::2] = image_boxes[:, 0::2].clip(0, w)
        image_boxes[:, 1::2] = image_boxes[:, 1::2].clip(0, h)
        kp_scores = np.clip(np.asarray(kp_scores, np.float64).reshape(len(boxes), K), 0, 1)
        box_scores = np.asarray(box_scores, dtype=np.float64).reshape(-1)
        person = pose_scores(box_scores, kp_scores, float(inf.get("keypoint_threshold", 0.05)))
        people = [{"keypoints": np.concatenate([keypoints[i], kp_scores[i][:, None]], axis=1), "box": image_boxes[i],
                   "box_score": float(box_scores[i]), "score": float(person[i])}
                  for i in np.argsort(-person, kind="stable")]
        return people, image_boxes

    def _decode_openpose(self, maps, matrix, input_hw, image_size) -> dict:
        P = self.num_parts
        coords, scores, valid = self._peaks(maps[:P])
        paf = self.meta["openpose"].get("paf", {})
        grouping = PafGrouping(input_hw, self.limbs, self.stride, **paf)
        kps, person_scores = grouping(coords, scores, valid, maps[P + 1:])
        people = []
        if len(person_scores):
            kps = kps.copy()
            kps[..., :2] = transform_points(invert(matrix), kps[..., :2].reshape(-1, 2)).reshape(len(kps), P, 2)
            index = self._source_index
            keypoints = np.zeros((len(kps), len(self.names), 3))
            keypoints[:, index >= 0] = kps[:, index[index >= 0]]
            keypoints[..., 2] = np.clip(keypoints[..., 2], 0, 1)
            h, w = image_size
            have = keypoints[..., 2] > 0
            big = np.where(have, 0.0, np.inf)
            lo = np.min(keypoints[..., :2] + big[..., None], axis=1)
            hi = np.max(keypoints[..., :2] - big[..., None], axis=1)
            none = ~have.any(1)
            lo[none], hi[none] = 0.0, 0.0
            boxes = np.concatenate([lo, hi], axis=1)
            boxes[:, 0::2], boxes[:, 1::2] = boxes[:, 0::2].clip(0, w), boxes[:, 1::2].clip(0, h)
            people = [{"keypoints": keypoints[i], "box": boxes[i], "box_score": float(s), "score": float(s)}
                      for i, s in enumerate(person_scores)]
        boxes = np.array([p["box"] for p in people]).reshape(-1, 4)
        return {"people": people, "boxes": boxes, "box_scores": np.array([p["score"] for p in people]),
                "heatmaps": maps[:P], "pafs": maps[P + 1:]}


def as_rgb(image) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array from an RGB / gray / RGBA uint8 or uint16 array."""
    array = np.asarray(image)
    if array.dtype == np.uint16:
        array = (array // 257).astype(np.uint8)
    if array.dtype != np.uint8:
        raise ValueError(f"images must be uint8 or uint16 arrays, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or min(array.shape[:2]) < 1:
        raise ValueError(f"images must be (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
    return np.ascontiguousarray(array[:, :, :3])


def load(metadata_path, providers=None, threads: int | None = None) -> PoseModel:
    """The model of a ``model.json`` (its graph and PRN weights beside it, read on first use)."""
    meta = _read_json(metadata_path)
    return PoseModel(meta, base_dir=os.path.dirname(os.path.abspath(metadata_path)), providers=providers,
                     threads=threads)


# ============================================================================ command line


def read_image(path) -> np.ndarray:
    """An (H, W, 3) uint8 RGB image from a file, with PIL (upright as EXIF says) or else cv2."""
    try:
        from PIL import Image, ImageOps
    except ImportError:
        Image = None
    if Image is not None:
        try:
            with Image.open(path) as im:
                return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read the image ({exc})") from None
    try:
        import cv2
    except ImportError:
        raise ValueError("reading images needs PIL (pip install pillow) or cv2 (pip install opencv-python-headless)") \
            from None
    bgr = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: cannot read the image")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def to_json(result: dict) -> dict:
    """The JSON-ready part of a result: people (lists), image size, timing."""
    return {"image_size": list(result["image_size"]), "timing": result["timing"],
            "people": [{"keypoints": np.round(p["keypoints"], 3).tolist(), "box": np.round(p["box"], 2).tolist(),
                        "box_score": p["box_score"], "score": p["score"]} for p in result["people"]]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="People in images with an exported posenet model "
                                                 "(numpy + onnxruntime only).")
    parser.add_argument("model", help="the model's metadata file (model.json)")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", help="write the results of all images to this JSON file")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    args = parser.parse_args(argv)
    try:
        model = load(args.model, threads=args.threads)
        results = {}
        for path in args.images:
            result = model.run(read_image(path))
            results[path] = to_json(result)
            t = result["timing"]
            print(f"{path}: {len(result['people'])} people, network {t['network_ms']:.1f} ms, "
                  f"decoding {t['decode_ms']:.1f} ms")
        if args.out:
            tmp = args.out + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(results, f)
            os.replace(tmp, args.out)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
