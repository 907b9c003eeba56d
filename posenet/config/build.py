"""The one place where config keys become constructor arguments.

Every component can also be built from plain Python with the same keywords; these functions
only translate a validated config section into those keywords.
"""
from __future__ import annotations

from omegaconf import DictConfig

from posenet.data.coco import CocoPersons
from posenet.data.keypoints import KeypointLayout
from posenet.errors import ConfigError


def keypoint_layout(cfg: DictConfig) -> KeypointLayout:
    """``data.keypoints`` → :class:`KeypointLayout`."""
    try:
        return KeypointLayout.from_names(
            names=list(cfg.names),
            skeleton=[list(p) for p in cfg.skeleton],
            sigmas=list(cfg.sigmas),
            flip_pairs=None if cfg.flip_pairs is None else [list(p) for p in cfg.flip_pairs],
        )
    except ValueError as e:
        raise ConfigError(f"data.keypoints: {e}") from None


def coco_split(cfg: DictConfig, split: str) -> CocoPersons:
    """``data`` → the annotations of one split."""
    return CocoPersons(cfg.root, split, layout=cfg.layout, minival_size=cfg.minival_size)


def synthetic_generator(cfg: DictConfig):
    """``synthetic`` → the synthetic dataset generator (image counts and seed stay with the caller)."""
    from posenet.data.synthetic import SyntheticCocoGenerator

    return SyntheticCocoGenerator(
        min_people=cfg.min_people,
        max_people=cfg.max_people,
        min_size=cfg.min_size,
        max_size=cfg.max_size,
    )
