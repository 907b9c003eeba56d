"""Drawing person annotations and predictions on images.

All functions take a BGR ``uint8`` image (OpenCV order; (H, W, 3), or (H, W) grayscale, which
is converted to BGR) and return a new BGR image; the input is never modified. Colours are BGR
tuples. Keypoints are COCO-style: (K, 3) or (N, K, 3) arrays or flat lists of x, y, v, where
v=0 is not labelled (not drawn), v=1 labelled but occluded (drawn hollow) and v=2 visible
(drawn filled); predictions may carry a score instead of v, see ``min_visibility``.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import cv2
import numpy as np
import pycocotools.mask as mask_utils

from posenet.data.keypoints import COCO_PERSON, KeypointLayout

# A palette of distinct BGR colours for persons.
PALETTE = (
    (75, 25, 230), (75, 180, 60), (25, 225, 255), (200, 130, 0), (48, 130, 245), (180, 30, 145),
    (240, 240, 70), (230, 50, 240), (60, 245, 210), (212, 190, 250), (128, 128, 0), (255, 190, 220),
    (40, 110, 170), (200, 250, 255), (0, 0, 128), (195, 255, 170), (0, 128, 128), (128, 0, 0),
)
CROWD_COLOR = (0, 0, 255)


def person_color(i: int) -> tuple[int, int, int]:
    """The ``i``-th palette colour (BGR)."""
    return PALETTE[i % len(PALETTE)]


def _as_bgr(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 1:
        return cv2.cvtColor(image[..., 0], cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image.copy()
    raise ValueError(f"expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got {image.shape}")


def _scale_for(image: np.ndarray) -> float:
    """Line widths grow with the image so drawings stay readable on big photos."""
    return max(1.0, max(image.shape[:2]) / 640.0)


def _shade(color, factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, c * factor))) for c in color)


def segmentation_to_mask(segmentation, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (polygon list, RLE dict with list or compressed counts) as a
    (height, width) uint8 mask, exactly as ``pycocotools.coco.COCO.annToMask`` rasterises it."""
    if isinstance(segmentation, list):
        polys = [p for p in segmentation if len(p) >= 6]
        if not polys:
            return np.zeros((height, width), np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle)


def draw_skeleton(image: np.ndarray, keypoints, color=None, layout: KeypointLayout = COCO_PERSON,
                  min_visibility: float = 0.5, thickness: int | None = None,
                  radius: int | None = None) -> np.ndarray:
    """Draw one or several skeletons.

    ``keypoints``: (K, 3), (N, K, 3) or flat x, y, v lists. A point is drawn when its third
    value is above ``min_visibility`` (0.5: COCO v=1 and v=2); COCO v=1 (third value below 1.5)
    is drawn hollow. Limbs between two drawn points use the person's colour (``color``, or the
    palette by person index), lightened on the person's left side and darkened on the right
    side, so left and right can be told apart; the layout's other pairs (head, trunk) get the
    plain colour. Left keypoints have a white ring, right keypoints a black one.
    """
    out = _as_bgr(image)
    kps = np.asarray(keypoints, np.float64)
    if kps.ndim == 1:
        kps = kps.reshape(-1, layout.num_keypoints, 3)
    elif kps.ndim == 2:
        kps = kps[None]
    s = _scale_for(out)
    th = thickness or max(1, int(round(2 * s)))
    rad = radius or max(2, int(round(3 * s)))
    left = {a for a, _ in layout.flip_pairs}
    right = {b for _, b in layout.flip_pairs}
    for n, person in enumerate(kps):
        base = tuple(int(c) for c in (color if color is not None else person_color(n)))
        shown = person[:, 2] > min_visibility
        for a, b in layout.skeleton:
            if not (shown[a] and shown[b]):
                continue
            if a in left and b in left:
                c = tuple(int(v * 0.45 + 140) for v in base)
            elif a in right and b in right:
                c = _shade(base, 0.5)
            else:
                c = base
            pa = (int(round(person[a, 0])), int(round(person[a, 1])))
            pb = (int(round(person[b, 0])), int(round(person[b, 1])))
            cv2.line(out, pa, pb, c, th, cv2.LINE_AA)
        for k in np.flatnonzero(shown):
            p = (int(round(person[k, 0])), int(round(person[k, 1])))
            ring = (255, 255, 255) if k in left else (0, 0, 0) if k in right else (128, 128, 128)
            hollow = person[k, 2] < 1.5
            if hollow:
                cv2.circle(out, p, rad, base, max(1, th // 2 + 1), cv2.LINE_AA)
                cv2.circle(out, p, rad + max(1, th // 2), ring, 1, cv2.LINE_AA)
            else:
                cv2.circle(out, p, rad, base, -1, cv2.LINE_AA)
                cv2.circle(out, p, rad, ring, 1, cv2.LINE_AA)
    return out


def draw_boxes(image: np.ndarray, boxes, colors=None, labels: Sequence[str] | None = None,
               thickness: int | None = None, xywh: bool = True) -> np.ndarray:
    """Draw boxes ([x, y, w, h] when ``xywh``, else [x0, y0, x1, y1]) with optional labels
    (e.g. scores as text) above their top-left corners."""
    out = _as_bgr(image)
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    s = _scale_for(out)
    th = thickness or max(1, int(round(s)))
    for i, box in enumerate(b):
        x0, y0 = box[0], box[1]
        x1, y1 = (box[0] + box[2], box[1] + box[3]) if xywh else (box[2], box[3])
        c = tuple(int(v) for v in (colors[i] if colors is not None else person_color(i)))
        cv2.rectangle(out, (int(round(x0)), int(round(y0))), (int(round(x1)), int(round(y1))), c, th,
                      cv2.LINE_AA)
        if labels is not None and labels[i]:
            fs = 0.4 * s
            (tw, tht), _ = cv2.getTextSize(str(labels[i]), cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
            ty = int(max(tht + 2, y0 - 2))
            cv2.rectangle(out, (int(x0), ty - tht - 2), (int(x0) + tw + 2, ty + 1), c, -1)
            cv2.putText(out, str(labels[i]), (int(x0) + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, fs,
                        (0, 0, 0) if sum(c) > 380 else (255, 255, 255), 1, cv2.LINE_AA)
    return out


def draw_mask(image: np.ndarray, mask: np.ndarray, color=(0, 255, 0), alpha: float = 0.4,
              outline: bool = True, hatch: bool = False) -> np.ndarray:
    """Tint the pixels of a (H, W) mask with ``color``; optionally outline it and hatch it
    with diagonal lines (used for crowd / ignore regions)."""
    out = _as_bgr(image)
    m = np.asarray(mask).astype(bool)
    if m.shape != out.shape[:2]:
        raise ValueError(f"mask shape {m.shape} does not match image {out.shape[:2]}")
    if not m.any():
        return out
    c = np.array(color, np.float32)
    out[m] = (out[m].astype(np.float32) * (1 - alpha) + c * alpha).astype(np.uint8)
    if hatch:
        h, w = m.shape
        lines = np.zeros((h, w), np.uint8)
        step = max(6, int(8 * _scale_for(out)))
        for k in range(-h, w, step):
            cv2.line(lines, (k, 0), (k + h, h), 1, 1)
        sel = m & lines.astype(bool)
        out[sel] = c.astype(np.uint8)
    if outline:
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, tuple(int(v) for v in color), 1, cv2.LINE_AA)
    return out


def draw_polygons(image: np.ndarray, polygons: Iterable[Sequence[float]], color=(0, 255, 0),
                  thickness: int = 1) -> np.ndarray:
    """Outline COCO polygons (flat x, y lists) with sub-pixel precision."""
    out = _as_bgr(image)
    for p in polygons:
        pts = np.round(np.asarray(p, np.float64).reshape(-1, 2) * 16).astype(np.int32)
        cv2.polylines(out, [pts], True, tuple(int(v) for v in color), thickness, cv2.LINE_AA, 4)
    return out


def draw_coco_annotations(image: np.ndarray, annotations: Sequence[dict],
                          layout: KeypointLayout = COCO_PERSON, draw_masks: bool = True,
                          draw_boxes_: bool = True, draw_keypoints: bool = True,
                          mask_alpha: float = 0.35, show_ids: bool = False) -> np.ndarray:
    """Draw a COCO image's annotations: persons get a tinted mask with its polygon outline,
    a box and the skeleton in their own colour; crowd regions (``iscrowd``) are tinted and
    hatched red; persons without keypoints get their box labelled 'no kp'.
    Works for ground truth and for results (``score`` is shown as the box label)."""
    out = _as_bgr(image)
    h, w = out.shape[:2]
    persons = [a for a in annotations if not a.get("iscrowd", 0)]
    for a in annotations:
        if a.get("iscrowd", 0) and "segmentation" in a:
            out = draw_mask(out, segmentation_to_mask(a["segmentation"], h, w), CROWD_COLOR,
                            alpha=0.25, hatch=True)
    if draw_masks:
        for i, a in enumerate(persons):
            seg = a.get("segmentation")
            if not seg:
                continue
            mask = segmentation_to_mask(seg, h, w)
            out = draw_mask(out, mask, person_color(i), mask_alpha, outline=False)
            if isinstance(seg, list):
                out = draw_polygons(out, seg, person_color(i))
    if draw_boxes_:
        boxes, colors, labels = [], [], []
        for i, a in enumerate(persons):
            if "bbox" not in a:
                continue
            boxes.append(a["bbox"])
            colors.append(person_color(i))
            parts = []
            if show_ids and "id" in a:
                parts.append(str(a["id"]))
            if "score" in a:
                parts.append(f"{a['score']:.2f}")
            if a.get("num_keypoints", 1) == 0 and "keypoints" in a and "score" not in a:
                parts.append("no kp")
            labels.append(" ".join(parts))
        if boxes:
            out = draw_boxes(out, boxes, colors, labels)
        crowd = [a["bbox"] for a in annotations if a.get("iscrowd", 0) and "bbox" in a]
        if crowd:
            out = draw_boxes(out, crowd, [CROWD_COLOR] * len(crowd), ["crowd"] * len(crowd))
    if draw_keypoints:
        for i, a in enumerate(persons):
            kp = a.get("keypoints")
            if kp and any(kp[2::3]):
                out = draw_skeleton(out, kp, person_color(i), layout)
    return out
