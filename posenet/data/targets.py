"""Training targets of one image from its COCO person annotations, built on the fly.

* ignore mask: 0 on crowd regions and on persons without keypoints (non-crowd,
  ``num_keypoints == 0``), whose joints are in the image but not in the heatmaps; 1 elsewhere,
  including the padding outside the image (it is plainly background).
* segmentation: the union of the non-crowd person masks (with or without keypoints).
* boxes: x1, y1, x2, y2 of every non-crowd person (with or without keypoints; later detection
  targets), and the crowd boxes apart, as regions that detection ignores.

Masks come from the annotations' polygons or RLEs through pycocotools, are merged into two
full-resolution layers (ignore regions, persons) and warped once, straight onto the stride-4
grid (``grid_matrix``), so a sample never holds a full-resolution warped mask. An annotation
without a usable segmentation falls back to its box. The dataset keeps each annotation's
region unrasterised (:func:`annotation_region`, in ``posenet.data.person_store``'s flat
arrays) and rasterises it per sample: building both layers costs about 0.5 ms for a COCO
image with persons (nothing for the half without; most of it is pycocotools' decode of the
two full-resolution layers), while rasterised RLEs of every image would add seconds per
10,000 images to the dataset's build.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple, Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from posenet.data.transforms import grid_matrix


class ImagePersons(NamedTuple):
    """The person annotations of one image as arrays.

    ``keypoints`` (P, K, 3) and ``boxes`` (P, 4, x1 y1 x2 y2, pixel-edge frame) are aligned, one
    row per non-crowd person; ``num_keypoints`` (P,) counts each person's labelled keypoints;
    ``crowd_boxes`` (C, 4); ``annotations`` the non-crowd annotation dicts, ``crowd`` the crowd ones.
    """

    keypoints: np.ndarray
    boxes: np.ndarray
    num_keypoints: np.ndarray
    crowd_boxes: np.ndarray
    annotations: list
    crowd: list


def image_persons(annotations: Sequence[dict], num_keypoints: int) -> ImagePersons:
    """Split an image's person annotations into arrays (see :class:`ImagePersons`)."""
    singles = [a for a in annotations if not a.get("iscrowd", 0)]
    crowd = [a for a in annotations if a.get("iscrowd", 0)]
    kps = np.zeros((len(singles), num_keypoints, 3), dtype=np.float64)
    for i, a in enumerate(singles):
        values = a.get("keypoints") or ()
        if values:
            if len(values) != 3 * num_keypoints:
                raise ValueError(
                    f"annotation {a.get('id')}: {len(values) // 3} keypoints, the layout has {num_keypoints}"
                )
            kps[i] = np.asarray(values, dtype=np.float64).reshape(num_keypoints, 3)
    kps[..., 2] = np.where(kps[..., 2] > 0, kps[..., 2], 0.0)
    counted = (kps[..., 2] > 0).sum(axis=1)
    return ImagePersons(
        keypoints=kps,
        boxes=xywh_to_xyxy([a.get("bbox") for a in singles]),
        num_keypoints=counted,
        crowd_boxes=xywh_to_xyxy([a.get("bbox") for a in crowd]),
        annotations=singles,
        crowd=crowd,
    )


def xywh_to_xyxy(bboxes: Sequence) -> np.ndarray:
    """COCO boxes (x, y, width, height) -> (N, 4) x1, y1, x2, y2 (missing boxes: zeros)."""
    out = np.zeros((len(bboxes), 4), dtype=np.float64)
    for i, b in enumerate(bboxes):
        if b is not None and len(b) == 4:
            x, y, w, h = (float(v) for v in b)
            out[i] = (x, y, x + max(w, 0.0), y + max(h, 0.0))
    return out


def has_keypoints(annotation: dict) -> bool:
    """Whether a non-crowd annotation has labelled keypoints (``num_keypoints``, else its flags)."""
    if "num_keypoints" in annotation:
        return annotation["num_keypoints"] > 0
    return any(v > 0 for v in (annotation.get("keypoints") or ())[2::3])


def keypoint_persons(annotations: Sequence[dict]) -> list[dict]:
    """The evaluated persons of an image: not crowd, with labelled keypoints."""
    return [a for a in annotations if not a.get("iscrowd", 0) and has_keypoints(a)]


def annotation_region(annotation: dict, height: int, width: int):
    """What :func:`annotation_rle` rasterises, before any rasterising: ``("polygons", [polygon,
    ...])`` (those of at least 3 points), ``("rle", compressed RLE)``, ``("box", (x, y, w, h))``
    (no usable segmentation) or None (no box either). ValueError for an RLE of another size."""
    seg = annotation.get("segmentation")
    if isinstance(seg, list):
        polygons = [p for p in seg if isinstance(p, (list, tuple)) and len(p) >= 6]
        if polygons:
            return "polygons", polygons
    elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if list(seg["size"]) != [height, width]:
            raise ValueError(
                f"annotation {annotation.get('id')}: RLE size {seg['size']} is not the image's {[height, width]}"
            )
        if isinstance(seg["counts"], list):
            return "rle", mask_utils.frPyObjects(seg, height, width)
        counts = seg["counts"]
        return "rle", {"size": seg["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
    box = annotation.get("bbox")
    if box is not None and len(box) == 4 and box[2] > 0 and box[3] > 0:
        return "box", tuple(float(v) for v in box)
    return None


def region_rle(region: tuple, height: int, width: int) -> dict:
    """One RLE of an :func:`annotation_region` (polygons rasterised and merged, a box as its polygon)."""
    kind, data = region
    if kind == "polygons":
        rles = mask_utils.frPyObjects(data, height, width)
        return mask_utils.merge(rles) if len(rles) > 1 else rles[0]
    if kind == "rle":
        return data
    x, y, w, h = data
    return mask_utils.frPyObjects([[x, y, x + w, y, x + w, y + h, x, y + h]], height, width)[0]


def annotation_rle(annotation: dict, height: int, width: int):
    """An annotation's region as one pycocotools RLE (polygons, uncompressed or compressed RLE),
    or its box when it has no usable segmentation; None when it has neither."""
    region = annotation_region(annotation, height, width)
    return None if region is None else region_rle(region, height, width)


def region_rles(annotations: Sequence[dict], height: int, width: int) -> tuple[dict | None, dict | None]:
    """The two regions of :func:`region_masks` as pycocotools RLEs: the regions to ignore and
    the union of non-crowd persons, each None where the image has none."""
    ignore, persons = [], []
    for a in annotations:
        rle = annotation_rle(a, height, width)
        if rle is None:
            continue
        if a.get("iscrowd", 0):
            ignore.append(rle)
            continue
        persons.append(rle)
        if not has_keypoints(a):
            ignore.append(rle)
    return merged_rle(ignore), merged_rle(persons)


def merged_rle(rles: Sequence[dict]) -> dict | None:
    """The union of ``rles`` (the one RLE itself; None for none)."""
    if not rles:
        return None
    return mask_utils.merge(list(rles)) if len(rles) > 1 else rles[0]


def decode_regions(ignore: dict | None, persons: dict | None, height: int, width: int) -> np.ndarray | None:
    """:func:`region_rles`' two RLEs as :func:`region_masks`' (height, width, 2) layers (None for neither)."""
    if ignore is None and persons is None:
        return None
    # pycocotools decodes column-major (a (height, width) array in Fortran order): its transpose
    # is a C-ordered (width, height) plane, which cv2.transpose turns at memory speed and
    # cv2.merge interleaves; numpy's strided copy into out[..., channel] took 1.6 times as long.
    planes = []
    for rle in (ignore, persons):
        if rle is None:
            planes.append(np.zeros((height, width), np.uint8))
            continue
        mask = _decode(rle)
        if mask.shape != (height, width):
            raise ValueError(f"RLE of size {list(mask.shape)} for an image of {[height, width]}")
        planes.append(cv2.transpose(mask.T))
    out = cv2.merge(planes)
    np.multiply(out, 255, out=out)
    return out


def region_masks(annotations: Sequence[dict], height: int, width: int) -> np.ndarray | None:
    """Full-resolution (height, width, 2) uint8, 255 inside and 0 outside: [..., 0] the regions
    to ignore (crowd, persons without keypoints), [..., 1] the union of non-crowd persons;
    None when the image has neither."""
    return decode_regions(*region_rles(annotations, height, width), height, width)


def _decode(rle) -> np.ndarray:
    # pycocotools 2.0.x's compiled decode trips numpy 2's __array__(copy=...) deprecation on
    # every call; the result is right, the warning is noise from inside the library.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
        return mask_utils.decode(rle)


def grid_masks(
    regions: np.ndarray | None, matrix, grid_size: Sequence[int], stride: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Ignore mask and segmentation (1, h, w) float32 on the stride-``stride`` grid of the crop.

    ``regions`` (from :func:`region_masks`) is warped with ``matrix`` composed with the
    input -> grid map, bilinearly, sampling each cell at its centre. A cell is a person where
    the interpolated value is at least 1/2; it is ignored wherever any ignored pixel
    contributes to it: ignoring a little too much costs nothing, while an unlabelled person's
    border marked as background teaches the network to suppress people.
    """
    h, w = grid_size
    if regions is None:
        return np.ones((1, h, w), np.float32), np.zeros((1, h, w), np.float32)
    warped = cv2.warpAffine(
        regions, grid_matrix(matrix, stride), (w, h),
        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )
    ignore = (warped[..., 0] == 0).astype(np.float32)[None]
    segmentation = (warped[..., 1] >= 128).astype(np.float32)[None]
    return ignore, segmentation
