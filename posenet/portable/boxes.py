"""RetinaNet's person boxes in numpy: anchors, box decoding, greedy NMS (torchvision's
semantics) and the whole post-processing of the head's raw outputs (``detect``)."""
from __future__ import annotations

import numpy as np


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
