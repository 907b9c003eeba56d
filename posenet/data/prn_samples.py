"""The Pose Residual Network's training samples: scenes of real poses, encoded as PRN grids.

The grids are encoded by ``posenet.codecs.prn_grid``.

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

import contextlib
import io
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from posenet.codecs.prn_grid import check_grid, encode_peaks, encode_targets
from posenet.errors import DataError


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
                 seed: int = 0, fresh_each_epoch: bool = False, grid: str = "enlarged"):
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
        self.grid = check_grid(grid)
        self.real_fraction, self.flip_prob = float(real_fraction), float(flip_prob)
        self.log_scale = np.log(np.asarray(scale_range, dtype=np.float64))
        self.seed, self.fresh_each_epoch = int(seed), bool(fresh_each_epoch)

        poses, boxes, self.real_scenes = [], [], []
        store = persons.store  # the split's flat arrays, not its annotation dicts (posenet.data.person_store)
        for i in range(len(store)):
            try:
                people = store.people(i)
            except ValueError as e:
                raise DataError(f"{persons.files.annotation_file}: image {store.image_id(i)}: {e}") from None
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
                            self.margin, self.height, self.width, self.input_sigma, self.grid)
        target, weight = encode_targets(box, scene.keypoints[scene.person][None], self.margin, self.height,
                                        self.width, self.target_sigma, self.grid)
        return torch.from_numpy(grid[0]), {"target": torch.from_numpy(target[0]), "weight": torch.from_numpy(weight[0])}


class ComposedCrowds:
    """``scenes`` crowds of ``min_people..max_people`` real poses of ``persons`` composed as
    ``PrnSceneDataset`` composes its training scenes (seeded by ``seed``, no real scenes), held
    as a COCO keypoint split of annotations without images: ``image_ids``, ``annotations(id)``,
    ``coco`` (pycocotools), ``split``, ``root`` and ``keypoint_layout``, what the PRN stage's
    evaluator reads. The PRN matters where people overlap; a split's own images rarely crowd."""

    def __init__(self, persons, scenes: int = 200, min_people: int = 2, max_people: int = 12, seed: int = 0,
                 min_keypoints: int = 4):
        from pycocotools.coco import COCO

        composer = PrnSceneDataset(persons, samples_per_epoch=scenes, min_people=min_people, max_people=max_people,
                                   min_keypoints=min_keypoints, real_fraction=0.0, seed=seed)
        self.keypoint_layout = persons.keypoint_layout
        self.split = f"{scenes} crowds of {min_people}-{max_people} people composed from {persons.split}"
        self.root = persons.root
        self.image_ids = list(range(1, scenes + 1))
        images, self._annotations, n = [], {}, 0
        for image_id in self.image_ids:
            scene = composer.scene(image_id - 1)
            anns = []
            for box, kps in zip(scene.boxes, scene.keypoints):
                n += 1
                w, h = float(box[2] - box[0]), float(box[3] - box[1])
                anns.append({"id": n, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                             "bbox": [float(box[0]), float(box[1]), w, h], "area": w * h,
                             "keypoints": [float(v) for v in kps.reshape(-1)],
                             "num_keypoints": int((kps[:, 2] > 0).sum())})
            self._annotations[image_id] = anns
            # the persons lie around the origin: the image's frame only has to hold them
            images.append({"id": image_id, "width": 4096, "height": 4096})
        self.coco = COCO()  # quiet: pycocotools prints while indexing
        self.coco.dataset = {"images": images, "annotations": [a for i in self.image_ids for a in self._annotations[i]],
                             "categories": [{"id": 1, "name": "person", "keypoints": list(self.keypoint_layout.names),
                                             "skeleton": []}]}
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco.createIndex()

    def __len__(self) -> int:
        return len(self.image_ids)

    def annotations(self, image_id: int) -> list[dict]:
        return self._annotations[image_id]


__all__ = ["ComposedCrowds", "PrnScene", "PrnSceneDataset"]
