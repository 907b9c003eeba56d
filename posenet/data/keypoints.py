"""Keypoint layouts: names, left/right flip pairs, skeleton and OKS sigmas.

A layout is data, not code: the COCO-17 person layout is the default, and any other layout can
come from a config or from the ``categories`` entry of a COCO annotation file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class KeypointLayout:
    names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]  # 0-based index pairs
    sigmas: tuple[float, ...]  # OKS sigmas, one per keypoint
    flip_pairs: tuple[tuple[int, int], ...] = field(default=())

    def __post_init__(self):
        n = len(self.names)
        if len(set(self.names)) != n:
            raise ValueError(f"keypoint names are not unique: {list(self.names)}")
        if len(self.sigmas) != n:
            raise ValueError(f"{len(self.sigmas)} OKS sigmas for {n} keypoints")
        for a, b in tuple(self.skeleton) + tuple(self.flip_pairs):
            if not (0 <= a < n and 0 <= b < n):
                raise ValueError(f"keypoint pair ({a}, {b}) out of range for {n} keypoints")
        seen = [i for pair in self.flip_pairs for i in pair]
        if len(seen) != len(set(seen)):
            raise ValueError(f"a keypoint appears in two flip pairs: {list(self.flip_pairs)}")

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    @property
    def flip_index(self) -> np.ndarray:
        """Permutation that maps keypoint k of a mirrored image to its new index."""
        perm = np.arange(self.num_keypoints)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    @classmethod
    def from_names(
        cls,
        names: Sequence[str],
        skeleton: Sequence[Sequence[int]] = (),
        sigmas: Sequence[float] | None = None,
        flip_pairs: Sequence[Sequence[int]] | None = None,
    ) -> "KeypointLayout":
        """Build a layout; flip pairs default to matching ``left_*``/``right_*`` names."""
        names = tuple(names)
        if flip_pairs is None:
            flip_pairs = [
                (i, names.index("right_" + n[5:]))
                for i, n in enumerate(names)
                if n.startswith("left_") and "right_" + n[5:] in names
            ]
        if sigmas is None:
            sigmas = [0.05] * len(names)
        return cls(
            names=names,
            skeleton=tuple((int(a), int(b)) for a, b in skeleton),
            sigmas=tuple(float(s) for s in sigmas),
            flip_pairs=tuple((int(a), int(b)) for a, b in flip_pairs),
        )

    @classmethod
    def from_coco_category(cls, category: dict, sigmas: Sequence[float] | None = None) -> "KeypointLayout":
        """Layout of a COCO ``categories`` entry (its skeleton is 1-based)."""
        if "keypoints" not in category:
            raise ValueError(f"category {category.get('name')!r} has no 'keypoints' list")
        skeleton = [(a - 1, b - 1) for a, b in category.get("skeleton", [])]
        names = category["keypoints"]
        if sigmas is None and tuple(names) == COCO_PERSON.names:
            sigmas = COCO_PERSON.sigmas
        return cls.from_names(names, skeleton, sigmas)

    def coco_category(self, category_id: int = 1, name: str = "person") -> dict:
        """The ``categories`` entry of a COCO keypoint annotation file for this layout."""
        return {
            "supercategory": name,
            "id": category_id,
            "name": name,
            "keypoints": list(self.names),
            "skeleton": [[a + 1, b + 1] for a, b in self.skeleton],
        }


COCO_PERSON = KeypointLayout.from_names(
    names=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    # COCO's own skeleton (person_keypoints_*.json), converted to 0-based indices.
    skeleton=[
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
        (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    ],
    # OKS sigmas of pycocotools' COCOeval for the 17 person keypoints.
    sigmas=[
        0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
        0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
    ],
)


@dataclass(frozen=True)
class DerivedLayout:
    """A model's keypoints defined from a dataset's: keypoint k of the model is the mean of the
    source keypoints ``sources[k]``, labelled only where all of them are (OpenPose's neck is the
    mean of the shoulders). ``layout`` holds the model keypoints' names, limbs (its skeleton),
    OKS sigmas and flip pairs. Data, not code: a table, for any layout pair.
    """

    source: KeypointLayout
    layout: KeypointLayout
    sources: tuple[tuple[int, ...], ...]

    def __post_init__(self):
        if len(self.sources) != self.layout.num_keypoints:
            raise ValueError(f"{len(self.sources)} source lists for {self.layout.num_keypoints} keypoints")
        for k, src in enumerate(self.sources):
            if not src or not all(0 <= i < self.source.num_keypoints for i in src):
                raise ValueError(f"keypoint {self.layout.names[k]!r}: sources {src} out of range")

    @property
    def source_index(self) -> np.ndarray:
        """For each source keypoint, the model keypoint that is exactly it (-1: none)."""
        index = np.full(self.source.num_keypoints, -1, dtype=np.int64)
        for k, src in enumerate(self.sources):
            if len(src) == 1:
                index[src[0]] = k
        return index

    def encode(self, keypoints) -> np.ndarray:
        """(..., K_source, 3) dataset keypoints (x, y, v) -> (..., K_model, 3): means of the
        sources, v the smallest of their flags (0 when any is unlabelled)."""
        kps = np.asarray(keypoints, dtype=np.float64)
        out = np.zeros(kps.shape[:-2] + (self.layout.num_keypoints, 3))
        for k, src in enumerate(self.sources):
            part = kps[..., list(src), :]
            v = part[..., 2].min(axis=-1)
            out[..., k, :2] = np.where((v > 0)[..., None], part[..., :2].mean(axis=-2), 0.0)
            out[..., k, 2] = np.maximum(v, 0)
        return out

    def decode(self, keypoints) -> np.ndarray:
        """(..., K_model, C) model keypoints -> (..., K_source, C) in the dataset's order (the
        source keypoints that no model keypoint is exactly get zeros)."""
        kps = np.asarray(keypoints)
        index = self.source_index
        out = np.zeros(kps.shape[:-2] + (self.source.num_keypoints,) + kps.shape[-1:], dtype=kps.dtype)
        have = index >= 0
        out[..., have, :] = kps[..., index[have], :]
        return out

    @classmethod
    def from_names(cls, source: KeypointLayout, names: Sequence[str], sources: Sequence[Sequence[str]],
                   limbs: Sequence[Sequence[str]] = (), sigmas: Sequence[float] | None = None) -> "DerivedLayout":
        """By names: ``sources[k]`` names the source keypoints of model keypoint ``names[k]``;
        ``limbs`` are name pairs; OKS sigmas default to the mean of the sources' sigmas."""
        names = tuple(names)
        src = tuple(tuple(source.names.index(n) for n in group) for group in sources)
        if sigmas is None:
            sigmas = [float(np.mean([source.sigmas[i] for i in group])) for group in src]
        skeleton = [(names.index(a), names.index(b)) for a, b in limbs]
        return cls(source, KeypointLayout.from_names(names, skeleton, sigmas), src)


# OpenPose's 18 parts (Cao et al., CVPR 2017) from COCO's 17: the neck is the mean of the
# shoulders; the 19 limbs in the release's PAF channel order (channels 2i, 2i + 1).
_OPENPOSE_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)
OPENPOSE_18 = DerivedLayout.from_names(
    COCO_PERSON,
    _OPENPOSE_NAMES,
    [("left_shoulder", "right_shoulder") if n == "neck" else (n,) for n in _OPENPOSE_NAMES],
    limbs=[
        ("neck", "right_hip"), ("right_hip", "right_knee"), ("right_knee", "right_ankle"),
        ("neck", "left_hip"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
        ("neck", "right_shoulder"), ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"),
        ("right_shoulder", "right_ear"), ("neck", "left_shoulder"), ("left_shoulder", "left_elbow"),
        ("left_elbow", "left_wrist"), ("left_shoulder", "left_ear"), ("neck", "nose"), ("nose", "right_eye"),
        ("nose", "left_eye"), ("right_eye", "right_ear"), ("left_eye", "left_ear"),
    ],
)
