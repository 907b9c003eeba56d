"""From drawn pixels to COCO annotations: polygons, RLE, boxes.

Polygons are traced with ``cv2.findContours`` and pushed half a pixel outwards, so that they
run along pixel edges rather than through pixel centres: pycocotools rasterises a pixel when
its centre (i + 0.5) is inside, and a polygon through the centres of the outermost pixels would
lose half of them (a 2-pixel-wide limb would lose it all). Holes are not representable in COCO
polygons (several polygons are a union), so outer contours only are kept.
"""
from __future__ import annotations

import cv2
import numpy as np
import pycocotools.mask as mask_utils


def _offset_contour(c: np.ndarray, d: float = 0.5) -> np.ndarray:
    """Pixel-centre contour (n, 2) -> polygon along the pixel edges (miter offset by ``d``)."""
    prev, nxt = np.roll(c, 1, axis=0), np.roll(c, -1, axis=0)
    e1, e2 = c - prev, nxt - c
    e1 /= np.maximum(np.linalg.norm(e1, axis=1, keepdims=True), 1e-9)
    e2 /= np.maximum(np.linalg.norm(e2, axis=1, keepdims=True), 1e-9)
    n1 = np.stack([e1[:, 1], -e1[:, 0]], axis=1)
    n2 = np.stack([e2[:, 1], -e2[:, 0]], axis=1)
    area2 = np.sum(prev[:, 0] * c[:, 1] - c[:, 0] * prev[:, 1])
    if area2 < 0:
        n1, n2 = -n1, -n2
    bis = n1 + n2
    length = np.linalg.norm(bis, axis=1, keepdims=True)
    turn = length[:, 0] < 1e-6  # the contour doubles back: the tip of a one-pixel-wide spur
    bis /= np.maximum(length, 1e-9)
    cos_half = np.sum(bis * n1, axis=1, keepdims=True)
    out = c + 0.5 + bis * (d / np.maximum(cos_half, 0.5))
    if not turn.any():
        return out
    # A square cap around the tip pixel: two vertices, one on each side of the spur.
    first = c + 0.5 + d * (e1 + n1)
    second = c + 0.5 + d * (e1 + n2)
    rows = []
    for i in range(len(c)):
        if turn[i]:
            rows.extend((first[i], second[i]))
        else:
            rows.append(out[i])
    return np.array(rows)


def mask_to_polygons(mask: np.ndarray, origin=(0, 0), min_area: float = 4.0,
                     decimals: int = 2) -> list[list[float]]:
    """COCO polygons (flat x, y lists in image coordinates) of a binary mask window.

    ``origin`` is the image position of ``mask[0, 0]``. Fragments smaller than ``min_area``
    pixels and polygons with fewer than 3 vertices are dropped.
    """
    # A zero frame: OpenCV does not trace pixels on the outermost row or column of its input.
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    contours, _ = cv2.findContours(padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        c = c.reshape(-1, 2).astype(np.float64) - 1.0
        if len(c) < 3:
            continue
        poly = _offset_contour(c) + np.asarray(origin, np.float64)
        if abs(cv2.contourArea(poly.astype(np.float32))) < min_area:
            continue
        polys.append(np.round(poly, decimals).ravel().tolist())
    return polys


def rasterize_polygons(polys: list[list[float]], window: tuple[int, int, int, int]) -> np.ndarray:
    """pycocotools' raster of ``polys`` inside ``window`` (x0, y0, x1, y1) as uint8 (h, w).

    Same pixels as ``COCO.annToMask`` cropped to the window: pycocotools scales coordinates by
    a whole number, so an integer shift of the polygons shifts the raster exactly.
    """
    x0, y0, x1, y1 = window
    shifted = [(np.asarray(p).reshape(-1, 2) - (x0, y0)).ravel().tolist() for p in polys]
    rles = mask_utils.frPyObjects(shifted, y1 - y0, x1 - x0)
    return mask_utils.decode(mask_utils.merge(rles))


def rle_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts (column-major runs, starting with background)."""
    flat = np.asfortranarray(mask).ravel(order="F").astype(bool)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return counts


def mask_bbox(mask: np.ndarray, origin=(0, 0)) -> list[float]:
    """Tight [x, y, w, h] around the set pixels of a window whose corner is at ``origin``."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(origin[0] + cols[0]), float(origin[1] + rows[0]),
            float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]
