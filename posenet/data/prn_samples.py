"""Pose Residual Network grids from keypoints and boxes, and the PRN's training samples.

The grid of a box: the box is enlarged by ``margin`` of its width (height) on each side, then
split into ``height`` x ``width`` cells. Grid coordinates are continuous: ``u = (x - X1) *
width / (X2 - X1)`` and ``v = (y - Y1) * height / (Y2 - Y1)`` for the enlarged box (X1, Y1,
X2, Y2), so cell (i, j) covers u in [j, j + 1), v in [i, i + 1) and its centre is (j + 0.5,
i + 0.5); a point belongs to cell (floor(v), floor(u)). ``box_grid`` returns this map as one
2x3 affine matrix per box and ``grid_to_image`` its exact inverse.

* ``encode_peaks``: the PRN input. Every peak of type k inside a box sets its cell of channel
  k (to 1, or to the peak's score; the larger where two share a cell), then each channel is
  blurred with a Gaussian of ``sigma`` cells whose centre weight is 1 (truncated at 3 sigma),
  as separable matrix products over all boxes at once.
* ``encode_targets``: the PRN target. The same for the box's own person's labelled keypoints,
  blurred with ``target_sigma`` and normalised to sum 1 per channel; ``weight`` is 1 for the
  keypoints that are labelled and inside the grid.

``PrnSceneDataset`` trains the PRN on annotations alone. Most of its scenes are composed from
real poses: COCO skeletons (non-crowd persons with at least ``min_keypoints`` labelled
keypoints) re-placed at random scales, positions and mirrorings so that they overlap often.
The real images' own annotation sets alone would be far too few for a network of 35 M
parameters per layer on a small split (coco-mini has 159 images and 154 persons with
keypoints), and even on full COCO most images hold one or two persons, while the PRN matters
where boxes overlap; re-placing real poses keeps the poses real and makes the crowds. A
fraction of the scenes (``real_fraction``) are the real images' annotation sets as they are.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from posenet.data.targets import image_persons
from posenet.errors import DataError


# ----------------------------------------------------------------------------- grids


def box_grid(boxes, margin: float, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The enlarged boxes (B, 4) x1 y1 x2 y2 and the affine matrices (B, 2, 3) that map image
    pixels (x, y) to continuous grid coordinates (u, v) (module docstring). Boxes narrower or
    shorter than 1 pixel are widened to 1 pixel about their centre."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    centre = (b[:, :2] + b[:, 2:]) / 2
    size = np.maximum(b[:, 2:] - b[:, :2], 1.0)
    half = size * (0.5 + margin)
    enlarged = np.concatenate([centre - half, centre + half], axis=1)
    scale = np.array([width, height], dtype=np.float64) / (2 * half)  # (B, 2) cells per pixel
    affine = np.zeros((len(b), 2, 3))
    affine[:, 0, 0], affine[:, 1, 1] = scale[:, 0], scale[:, 1]
    affine[:, :, 2] = -enlarged[:, :2] * scale
    return enlarged, affine


def _affine_parts(affine: np.ndarray, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """The per-box scale and offset (box grids are axis-aligned), shaped (B, 1.., 2)."""
    shape = (len(affine),) + (1,) * (ndim - 2) + (2,)
    return affine[:, [0, 1], [0, 1]].reshape(shape), affine[:, :, 2].reshape(shape)


def image_to_grid(affine: np.ndarray, xy, per_box: bool = False) -> np.ndarray:
    """Image pixels -> grid coordinates: points (P, 2) into every box's grid, (B, P, 2); or,
    with ``per_box``, points (B, ..., 2) each into its own box's grid."""
    xy = np.asarray(xy, dtype=np.float64)
    if not per_box:
        xy = np.broadcast_to(xy.reshape(1, -1, 2), (len(affine), xy.size // 2, 2))
    scale, offset = _affine_parts(affine, xy.ndim)
    return xy * scale + offset


def grid_to_image(affine: np.ndarray, uv) -> np.ndarray:
    """Grid coordinates (B, ..., 2), each in its own box's grid -> image pixels: the exact
    inverse of ``image_to_grid``, x = (u - tx) / sx."""
    uv = np.asarray(uv, dtype=np.float64)
    scale, offset = _affine_parts(affine, uv.ndim)
    return (uv - offset) / scale


def gaussian_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) blur along one axis: exp(-d^2 / (2 sigma^2)) for |d| <= ceil(3 sigma), else 0
    (the identity for sigma 0)."""
    d = np.arange(n)[:, None] - np.arange(n)[None]
    if sigma <= 0:
        return (d == 0).astype(np.float32)
    g = np.exp(-0.5 * (d / sigma) ** 2)
    g[np.abs(d) > np.ceil(3 * sigma)] = 0.0
    return g.astype(np.float32)


def blur(grids: np.ndarray, sigma: float) -> np.ndarray:
    """(..., H, W) grids blurred with the separable Gaussian of ``gaussian_matrix``."""
    h, w = grids.shape[-2:]
    return gaussian_matrix(h, sigma) @ grids.astype(np.float32) @ gaussian_matrix(w, sigma).T


def _scatter(boxes, xy, types, values, num_keypoints: int, margin: float, height: int, width: int):
    """(B, K, H, W) grids with ``values`` (P,) at the cells of points ``xy`` (P, 2) of ``types``
    (P,) in each box (the maximum where two share a cell), and whether each point is inside
    each grid, (B, P)."""
    _, affine = box_grid(boxes, margin, height, width)
    B, P = len(affine), len(xy)
    grids = np.zeros((B, num_keypoints, height, width), dtype=np.float32)
    if P == 0 or B == 0:
        return grids, np.zeros((B, P), dtype=bool)
    cell = np.floor(image_to_grid(affine, xy)).astype(np.int64)  # (B, P, 2): column, row
    inside = (cell[..., 0] >= 0) & (cell[..., 0] < width) & (cell[..., 1] >= 0) & (cell[..., 1] < height)
    b, p = np.nonzero(inside)
    flat = ((b * num_keypoints + types[p]) * height + cell[b, p, 1]) * width + cell[b, p, 0]
    np.maximum.at(grids.reshape(-1), flat, values[p].astype(np.float32))
    return grids, inside


def peak_cells(boxes, peaks_xy, peaks_type, peaks_score=None, num_keypoints: int = 17, margin: float = 0.21,
               height: int = 56, width: int = 36) -> np.ndarray:
    """The PRN input grids before their blur, (B, K, H, W) float32: each peak's score (None: 1)
    at its cell of its type's channel in every box it lies in; arguments as ``encode_peaks``."""
    xy = np.asarray(peaks_xy, dtype=np.float64).reshape(-1, 2)
    types = np.asarray(peaks_type, dtype=np.int64).reshape(-1)
    values = np.ones(len(xy), np.float32) if peaks_score is None else np.asarray(peaks_score, np.float32).reshape(-1)
    if not (len(types) == len(values) == len(xy)):
        raise ValueError(f"{len(xy)} peaks, {len(types)} types and {len(values)} scores")
    if len(types) and (types.min() < 0 or types.max() >= num_keypoints):
        raise ValueError(f"peak types must lie in 0..{num_keypoints - 1}")
    return _scatter(boxes, xy, types, values, num_keypoints, margin, height, width)[0]


def encode_peaks(boxes, peaks_xy, peaks_type, peaks_score=None, num_keypoints: int = 17, margin: float = 0.21,
                 height: int = 56, width: int = 36, sigma: float = 1.0) -> np.ndarray:
    """PRN input grids (B, K, H, W) float32 of boxes (B, 4) x1 y1 x2 y2 from peaks (P, 2) in
    image pixels, their keypoint types (P,) and scores (P,) (None: 1 each); see the module
    docstring."""
    return blur(peak_cells(boxes, peaks_xy, peaks_type, peaks_score, num_keypoints, margin, height, width), sigma)


def encode_targets(boxes, keypoints, margin: float = 0.21, height: int = 56, width: int = 36,
                   sigma: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """PRN targets of boxes (B, 4) from each box's own person's keypoints (B, K, 3) (x, y,
    flag; flag > 0 is labelled): (target (B, K, H, W) float32, each channel with a labelled
    keypoint inside the grid blurred with ``sigma`` and normalised to sum 1, else 0;
    weight (B, K) float32, 1 on those channels)."""
    kps = np.asarray(keypoints, dtype=np.float64)
    if kps.ndim != 3 or kps.shape[-1] != 3:
        raise ValueError(f"keypoints must be (B, K, 3), got {kps.shape}")
    B, K = kps.shape[:2]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) != B:
        raise ValueError(f"{len(boxes)} boxes for the keypoints of {B} persons")
    grids = np.zeros((B, K, height, width), dtype=np.float32)
    for_box = np.zeros((B, K), dtype=bool)
    if B:
        _, affine = box_grid(boxes, margin, height, width)
        cell = np.floor(image_to_grid(affine, kps[..., :2], per_box=True)).astype(np.int64)
        for_box = ((kps[..., 2] > 0) & (cell[..., 0] >= 0) & (cell[..., 0] < width)
                   & (cell[..., 1] >= 0) & (cell[..., 1] < height))
        b, k = np.nonzero(for_box)
        grids[b, k, cell[b, k, 1], cell[b, k, 0]] = 1.0
    target = blur(grids, sigma)
    total = target.sum(axis=(2, 3), keepdims=True)
    target = np.where(total > 0, target / np.maximum(total, 1e-12), 0.0).astype(np.float32)
    return target, for_box.astype(np.float32)


# ----------------------------------------------------------------------------- training samples


class PrnScene(NamedTuple):
    """One training scene: every person's box (n, 4) and keypoints (n, K, 3), the person whose
    box the sample is, and whether the scene is a real image's annotation set."""

    boxes: np.ndarray
    keypoints: np.ndarray
    person: int
    real: bool


class PrnSceneDataset(Dataset):
    """PRN training samples from the annotations of a ``CocoPersons`` split (no images).

    ``dataset[i]`` is ``(input (K, H, W), {"target": (K, H, W), "weight": (K,)})`` for one box
    of scene i (``scene(i)``): a real image's persons with probability ``real_fraction``, else
    ``min_people..max_people`` real poses, each scaled by a log-uniform factor in
    ``scale_range`` (relative to a common person size, ``PERSON_SIZE``), mirrored with
    probability ``flip_prob`` (left/right swapped with ``flip_index``) and placed at random in
    a region about as wide as the people, so that boxes overlap often. The input holds every labelled
    keypoint of every person of the scene; the target is the box's own person's.

    Reproducible: sample i draws from ``numpy.random.Generator(PCG64)`` seeded with
    ``(seed, i)`` alone, so the same index gives the same sample anywhere. That repeats the
    same ``samples_per_epoch`` scenes every epoch; ``fresh_each_epoch=True`` also mixes one
    draw of numpy's global generator into the seed: the trainer seeds that generator from
    (run seed, epoch, index) before each sample, so every epoch sees new scenes and a resumed
    run sees the ones it would have seen.
    """

    PERSON_SIZE = 256.0  # pixels: the longer box side of a composed person before its random scale

    def __init__(self, persons, samples_per_epoch: int = 20000, min_people: int = 2, max_people: int = 12,
                 min_keypoints: int = 4, margin: float = 0.21, height: int = 56, width: int = 36,
                 input_sigma: float = 1.0, target_sigma: float = 2.0, real_fraction: float = 0.25,
                 scale_range: Sequence[float] = (0.5, 2.0), flip_prob: float = 0.5, flip_index=None,
                 seed: int = 0, fresh_each_epoch: bool = False):
        if not 1 <= min_people <= max_people:
            raise ValueError(f"need 1 <= min_people <= max_people, got {min_people}, {max_people}")
        if samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be positive, got {samples_per_epoch}")
        self.persons = persons
        layout = persons.keypoint_layout
        self.num_keypoints = layout.num_keypoints
        self.flip_index = np.asarray(layout.flip_index if flip_index is None else flip_index, dtype=np.int64)
        self.samples_per_epoch = int(samples_per_epoch)
        self.min_people, self.max_people = int(min_people), int(max_people)
        self.margin, self.height, self.width = float(margin), int(height), int(width)
        self.input_sigma, self.target_sigma = float(input_sigma), float(target_sigma)
        self.real_fraction, self.flip_prob = float(real_fraction), float(flip_prob)
        self.log_scale = np.log(np.asarray(scale_range, dtype=np.float64))
        self.seed, self.fresh_each_epoch = int(seed), bool(fresh_each_epoch)

        poses, boxes, self.real_scenes = [], [], []
        for image_id in persons.image_ids:
            people = image_persons(persons.annotations(image_id), self.num_keypoints)
            size = people.boxes[:, 2:] - people.boxes[:, :2]
            eligible = (people.num_keypoints >= min_keypoints) & (size > 0).all(1)
            if not eligible.any():
                continue
            poses.append(people.keypoints[eligible])
            boxes.append(people.boxes[eligible])
            labelled = people.num_keypoints > 0
            self.real_scenes.append((people.boxes[labelled], people.keypoints[labelled],
                                     np.flatnonzero(eligible[labelled])))
        if not poses:
            raise DataError(f"{persons.split} of {persons.root}: no non-crowd person with at least "
                            f"{min_keypoints} labelled keypoints to train the PRN on")
        self.poses = np.concatenate(poses)  # (M, K, 3)
        self.pose_boxes = np.concatenate(boxes)  # (M, 4)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def _rng(self, index: int) -> np.random.Generator:
        salt = [int(np.random.randint(0, 2**63 - 1, dtype=np.int64))] if self.fresh_each_epoch else []
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, int(index)] + salt)))

    def scene(self, index: int) -> PrnScene:
        """The scene of sample ``index`` and which of its persons the sample's box is."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        rng = self._rng(index)
        if rng.random() < self.real_fraction:
            boxes, keypoints, eligible = self.real_scenes[rng.integers(len(self.real_scenes))]
            return PrnScene(boxes, keypoints, int(eligible[rng.integers(len(eligible))]), True)
        n = int(rng.integers(self.min_people, self.max_people + 1))
        pick = rng.integers(len(self.poses), size=n)
        kps, box = self.poses[pick].copy(), self.pose_boxes[pick]
        # each pose about its box centre, its box's longer side rescaled to PERSON_SIZE pixels
        # times the random factor (pixel-sized scenes: ``box_grid`` widens boxes under 1 pixel)
        centre = (box[:, :2] + box[:, 2:]) / 2
        unit = (box[:, 2:] - box[:, :2]).max(1)
        scale = self.PERSON_SIZE * np.exp(rng.uniform(*self.log_scale, size=n)) / unit  # (n,)
        flip = rng.random(n) < self.flip_prob
        kps[flip] = kps[flip][:, self.flip_index]
        sign = np.where(flip, -1.0, 1.0)
        spread = self.PERSON_SIZE * rng.uniform(0.25, 0.75) * np.sqrt(n)
        place = rng.uniform(-1, 1, size=(n, 2)) * [spread, spread / 2]
        rel = kps[..., :2] - centre[:, None]
        rel[..., 0] *= sign[:, None]
        kps[..., :2] = rel * scale[:, None, None] + place[:, None]
        half = (box[:, 2:] - box[:, :2]) / 2 * scale[:, None]
        boxes = np.concatenate([place - half, place + half], axis=1)
        return PrnScene(boxes, kps, int(rng.integers(n)), False)

    def __getitem__(self, index: int):
        scene = self.scene(index)
        labelled = scene.keypoints[..., 2] > 0
        types = np.broadcast_to(np.arange(self.num_keypoints), labelled.shape)[labelled]
        box = scene.boxes[scene.person][None]
        grid = encode_peaks(box, scene.keypoints[..., :2][labelled], types, None, self.num_keypoints,
                            self.margin, self.height, self.width, self.input_sigma)
        target, weight = encode_targets(box, scene.keypoints[scene.person][None], self.margin, self.height,
                                        self.width, self.target_sigma)
        return torch.from_numpy(grid[0]), {"target": torch.from_numpy(target[0]), "weight": torch.from_numpy(weight[0])}


__all__ = ["PrnScene", "PrnSceneDataset", "blur", "box_grid", "encode_peaks", "encode_targets", "gaussian_matrix", "peak_cells",
           "grid_to_image", "image_to_grid"]
