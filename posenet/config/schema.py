"""Typed schema of every config key.

Each dataclass field is a key; its type is enforced when YAML files and command-line overrides
are merged, and a field left at ``MISSING`` must be set by some file or override. Fields whose
values are restricted carry ``metadata={"choices": (...)}``. ``posenet.config.build`` is the one
place where these keys become constructor arguments.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import MISSING

from posenet.data.keypoints import COCO_PERSON


def choice(default, *choices):
    return field(default=default, metadata={"choices": tuple(choices)})


@dataclass
class KeypointLayoutConfig:
    """Keypoint names, skeleton (0-based pairs), OKS sigmas; COCO-17 person by default."""

    names: List[str] = field(default_factory=lambda: list(COCO_PERSON.names))
    skeleton: List[List[int]] = field(default_factory=lambda: [list(p) for p in COCO_PERSON.skeleton])
    sigmas: List[float] = field(default_factory=lambda: list(COCO_PERSON.sigmas))
    # None: pair every ``left_*`` name with its ``right_*`` twin.
    flip_pairs: Optional[List[List[int]]] = None


@dataclass
class DataConfig:
    """Where the COCO-format dataset lives and which splits to use (DESIGN.md §3)."""

    root: str = MISSING
    # coco2017: ROOT/annotations/person_keypoints_{split}.json, ROOT/{split}/*.jpg
    # coco2014: also offers the splits minival2014 (first ``minival_size`` val2014 images in
    # annotation-file order) and valminusminival2014.
    layout: str = choice("coco2017", "coco2017", "coco2014")
    train_split: str = "train2017"
    val_split: str = "val2017"
    minival_size: int = 2644
    keypoints: KeypointLayoutConfig = field(default_factory=KeypointLayoutConfig)


@dataclass
class SyntheticConfig:
    """The synthetic COCO-format dataset: how many images and the generator's parameters."""

    num_train: int = 200
    num_val: int = 50
    seed: int = 0
    workers: int = 2
    min_people: int = 0
    max_people: int = 8
    min_size: int = 256
    max_size: int = 640


@dataclass
class PosenetConfig:
    name: str = "posenet"
    # Every run writes its outputs, and its resolved config, under this folder.
    output_dir: str = "runs/${name}"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
