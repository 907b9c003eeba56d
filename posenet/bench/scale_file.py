"""A COCO-sized person keypoint annotation file, made to measure data loading at full scale.

``write_scale_coco(root)`` writes ``root/annotations/person_keypoints_train2017.json`` with as
many images and persons as COCO 2017's training split holds persons (64,115 images with at
least one person, 149,813 persons with keypoints, and, as in COCO, persons without keypoints
and a few crowd regions), and ``root/train2017/`` where every image is a symlink to one
640x480 JPEG. The annotations are plausible rather than real: boxes inside the image,
keypoints on a scaled standing skeleton with COCO's mix of visible, occluded and unlabelled
points, polygon segmentations (one or two polygons of 16-40 points, two-decimal coordinates
as COCO stores them) with their areas, and crowd regions as uncompressed RLEs (list counts,
as COCO stores crowds). Only their number and shape matter: the memory and time of building
a dataset from such a file and of loading its samples are those of COCO.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from posenet.data.keypoints import COCO_PERSON

COCO_TRAIN_IMAGES = 64115  # train2017 images with at least one person annotation
COCO_TRAIN_KEYPOINT_PERSONS = 149813  # non-crowd persons with num_keypoints > 0
COCO_TRAIN_OTHER_PERSONS = 111000  # non-crowd persons without keypoints (about COCO's count)
COCO_TRAIN_CROWDS = 1500  # crowd regions (about COCO's count)
IMAGE_SIZE = (480, 640)  # height, width of the one JPEG every image links to

# A standing person's COCO keypoints in a unit box (x right, y down), from nose to ankles.
_TEMPLATE = np.array([
    [0.50, 0.08], [0.54, 0.06], [0.46, 0.06], [0.58, 0.08], [0.42, 0.08],
    [0.68, 0.22], [0.32, 0.22], [0.76, 0.38], [0.24, 0.38], [0.80, 0.52], [0.20, 0.52],
    [0.62, 0.54], [0.38, 0.54], [0.62, 0.75], [0.38, 0.75], [0.62, 0.95], [0.38, 0.95],
])


def _image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = IMAGE_SIZE
    noise = rng.integers(0, 256, size=(h // 8, w // 8, 3), dtype=np.uint8)
    return cv2.GaussianBlur(cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC), (0, 0), 3)


def _polygon(rng, box, points: int) -> tuple[list[float], float]:
    """A closed star-shaped outline inside ``box`` (x, y, w, h), two-decimal coordinates, and its area."""
    x, y, w, h = box
    angles = np.sort(rng.uniform(0, 2 * np.pi, points))
    radius = rng.uniform(0.6, 1.0, points)
    px = np.round(x + w / 2 + np.cos(angles) * radius * w / 2, 2)
    py = np.round(y + h / 2 + np.sin(angles) * radius * h / 2, 2)
    area = 0.5 * abs(np.dot(px, np.roll(py, 1)) - np.dot(py, np.roll(px, 1)))
    return np.stack([px, py], 1).ravel().tolist(), float(area)


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE of a binary mask: run lengths in column-major order, zeros first."""
    flat = mask.ravel(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"counts": counts, "size": list(mask.shape)}


def _person(rng, image_id: int, ann_id: int, with_keypoints: bool) -> dict:
    H, W = IMAGE_SIZE
    bw = float(rng.uniform(30, 260) if with_keypoints else rng.uniform(8, 80))
    bh = min(bw * rng.uniform(1.4, 2.8), H - 2.0)
    bw = min(bw, W - 2.0)
    x, y = float(rng.uniform(0, W - bw)), float(rng.uniform(0, H - bh))
    box = [round(x, 2), round(y, 2), round(bw, 2), round(bh, 2)]
    outlines = [_polygon(rng, box, int(rng.integers(16, 41)))]
    if rng.random() < 0.15:  # an occluder splits the outline
        outlines.append(_polygon(rng, (x + bw / 4, y + bh / 2, bw / 2, bh / 3), int(rng.integers(8, 17))))
    keypoints = [0] * (3 * COCO_PERSON.num_keypoints)
    labelled = 0
    if with_keypoints:
        points = _TEMPLATE * [bw, bh] + [x, y] + rng.normal(0, 0.03, _TEMPLATE.shape) * [bw, bh]
        flags = rng.choice([0, 1, 2], size=len(points), p=[0.3, 0.1, 0.6])
        flags[rng.integers(len(points))] = 2  # at least one labelled keypoint
        kps = np.zeros((len(points), 3), dtype=np.int64)
        kps[flags > 0, :2] = np.clip(np.round(points[flags > 0]), 0, [W - 1, H - 1])
        kps[:, 2] = flags
        keypoints = kps.ravel().tolist()
        labelled = int((flags > 0).sum())
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "bbox": box,
            "area": round(sum(a for _, a in outlines), 2), "segmentation": [p for p, _ in outlines],
            "keypoints": keypoints, "num_keypoints": labelled}


def _crowd(rng, image_id: int, ann_id: int) -> dict:
    H, W = IMAGE_SIZE
    mask = np.zeros(IMAGE_SIZE, np.uint8)
    w, h = int(rng.integers(60, 300)), int(rng.integers(40, 200))
    cx, cy = int(rng.integers(w // 2, W - w // 2)), int(rng.integers(h // 2, H - h // 2))
    cv2.ellipse(mask, (cx, cy), (w // 2, h // 2), 0, 0, 360, 1, -1)
    ys, xs = np.nonzero(mask)
    box = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 1, "bbox": box,
            "area": float(mask.sum()), "segmentation": uncompressed_rle(mask),
            "keypoints": [0] * (3 * COCO_PERSON.num_keypoints), "num_keypoints": 0}


def _spread(rng, total: int, images: int, at_least_one: bool) -> np.ndarray:
    """How many of ``total`` items each image gets: one each first where asked, the rest drawn
    with a skew (a few crowded images, most with one or two)."""
    counts = np.ones(images, np.int64) if at_least_one else np.zeros(images, np.int64)
    rest = total - int(counts.sum())
    if rest > 0:
        weights = rng.pareto(1.5, images) + 0.2
        counts += np.bincount(rng.choice(images, rest, p=weights / weights.sum()), minlength=images)
    return counts


def write_scale_coco(root: str | os.PathLike, images: int = COCO_TRAIN_IMAGES,
                     keypoint_persons: int = COCO_TRAIN_KEYPOINT_PERSONS, other_persons: int = COCO_TRAIN_OTHER_PERSONS,
                     crowds: int = COCO_TRAIN_CROWDS, seed: int = 0, split: str = "train2017") -> Path:
    """Write the file and the image links under ``root`` (module docstring); returns the
    annotation file. ``keypoint_persons`` must be at least ``images`` (each image gets one)."""
    if images < 1 or keypoint_persons < images or other_persons < 0 or crowds < 0:
        raise ValueError(f"need 1 <= images <= keypoint_persons and counts >= 0, got images={images}, "
                         f"keypoint_persons={keypoint_persons}, other_persons={other_persons}, crowds={crowds}")
    root = Path(root)
    image_dir, ann_dir = root / split, root / "annotations"
    image_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    jpeg = root / "scale_image.jpg"
    if not cv2.imwrite(str(jpeg), _image(seed)):
        raise OSError(f"cannot write {jpeg}")
    rng = np.random.default_rng(seed)
    per_image = [_spread(rng, keypoint_persons, images, True), _spread(rng, other_persons, images, False),
                 _spread(rng, crowds, images, False)]
    H, W = IMAGE_SIZE
    entries, annotations = [], []
    for i in range(images):
        image_id = 1 + 3 * i  # ids with gaps, as COCO's
        name = f"{image_id:012d}.jpg"
        link = image_dir / name
        if not link.is_symlink():
            link.symlink_to(jpeg.resolve())
        entries.append({"id": image_id, "file_name": name, "width": W, "height": H})
        for kind, count in zip(("keypoints", "other", "crowd"), (int(c[i]) for c in per_image)):
            for _ in range(count):
                ann_id = len(annotations) + 1
                annotations.append(_crowd(rng, image_id, ann_id) if kind == "crowd"
                                   else _person(rng, image_id, ann_id, kind == "keypoints"))
    data = {"info": {"description": "COCO-sized synthetic person keypoints (posenet.bench.scale_file)"},
            "images": entries, "annotations": annotations, "categories": [COCO_PERSON.coco_category()]}
    out = ann_dir / f"person_keypoints_{split}.json"
    tmp = out.with_suffix(".json.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(data, separators=(",", ":")))  # dumps: the C encoder, dump's is Python
    os.replace(tmp, out)
    return out


__all__ = ["write_scale_coco", "COCO_TRAIN_IMAGES", "COCO_TRAIN_KEYPOINT_PERSONS", "COCO_TRAIN_OTHER_PERSONS",
           "COCO_TRAIN_CROWDS", "IMAGE_SIZE"]
