"""Groupings: how one image's keypoint peaks are assigned to its person boxes, behind one
registry, so that the Predictor, the evaluators, ``val_keypoint.py --grouping`` and the
benchmarks call every grouping the same way.

A grouping is called as ``grouping(boxes, peaks_xy, peaks_type, peaks_score, num_keypoints,
model)``: boxes (B, 4) x1 y1 x2 y2 and peaks (P, 2) / (P,) / (P,) of one image in one pixel
frame, ``model`` the network (a ``PoseNet`` or the PRN itself; groupings that need no network
ignore it). It returns ``(keypoints (B, K, 2), scores (B, K))`` as numpy arrays: the score of an
assigned keypoint is its peak's, that of one left unassigned 0.

Adding a grouping is one class registered with ``@GROUPINGS.register("name")`` (here or in a
module of its own that is imported before the config names it), whose ``from_config`` reads its
options from the config (the default: none); ``infer.grouping`` (or ``val_keypoint.py
--grouping``) then names it.
"""
from __future__ import annotations

import numpy as np

from posenet.codecs.prn_grid import GRIDS
from posenet.errors import ConfigError
from posenet.inference.prn_fast import PRECISIONS
from posenet.inference.prn_grouping import PEAK_INPUTS, most_central_assign, prn_assign
from posenet.utils.registry import Registry
from omegaconf import DictConfig


GROUPINGS = Registry("infer.grouping")


class Grouping:
    """The interface; see the module's note."""

    name: str = ""  # the registered name
    needs_prn: bool = False

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "Grouping":
        """This grouping with its options from ``cfg`` (the default: no options)."""
        return cls()

    def __call__(self, boxes, peaks_xy, peaks_type, peaks_score, num_keypoints: int,
                 model=None) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def describe(self) -> str:
        """One phrase for protocol lines."""
        return self.name

    def check_model(self, model) -> None:
        """ConfigError when ``model`` lacks what this grouping needs."""
        if self.needs_prn and _prn_of(model) is None:
            raise ConfigError(f"infer.grouping={self.name} needs a PRN but this checkpoint has no PRN (train it "
                              "with scripts/train_prn.py, or use infer.grouping=greedy)")


def _prn_of(model):
    if model is None:
        return None
    if getattr(model, "has_prn", None) is not None:
        return model.prn if model.has_prn else None
    return getattr(model, "prn", model)


@GROUPINGS.register("prn")
class PrnGrouping(Grouping):
    """The Pose Residual Network (``prn_assign``): every box's peaks through the trained PRN;
    ``precision`` "int8" (the fastest that keeps the assignments), "float32" or "exact" (the
    dense reference), see ``posenet.inference.prn_fast``."""

    needs_prn = True

    def __init__(self, margin: float = 0.21, height: int = 56, width: int = 36, input_sigma: float = 1.0,
                 window: int = 15, precision: str = "int8", peak_input: str = "one", grid: str = "enlarged"):
        if precision not in PRECISIONS:
            raise ConfigError(f"prn.precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        if peak_input not in PEAK_INPUTS:
            raise ConfigError(f"prn.peak_input must be one of {', '.join(PEAK_INPUTS)}, not {peak_input!r}")
        self.margin, self.height, self.width = margin, height, width
        self.input_sigma, self.window, self.precision = input_sigma, window, precision
        self.peak_input = peak_input
        if grid not in GRIDS:
            raise ConfigError(f"prn.grid must be one of {', '.join(GRIDS)}, not {grid!r}")
        self.grid = grid

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "PrnGrouping":
        """``prn`` → the PRN grouping."""
        p = cfg.prn
        return cls(margin=p.box_margin, height=p.height, width=p.width, input_sigma=p.input_sigma, window=p.window,
                   precision=p.precision, peak_input=p.peak_input, grid=p.grid)

    def __call__(self, boxes, peaks_xy, peaks_type, peaks_score, num_keypoints, model=None):
        prn = _prn_of(model)
        if prn is None:
            raise ConfigError("PRN grouping needs a model with a PRN")
        return prn_assign(prn, boxes, peaks_xy, peaks_type, peaks_score, num_keypoints, self.margin, self.height,
                          self.width, self.input_sigma, self.window, precision=self.precision,
                          peak_input=self.peak_input, grid=self.grid)

    def describe(self) -> str:
        return (f"PRN (window {self.window}, box margin {self.margin:.0%}, {self.precision} output layer, "
                f"peaks input as {'their score' if self.peak_input == 'score' else '1, scored after'}"
                + (", the reference's grid" if self.grid == "reference" else "") + ")")


@GROUPINGS.register("greedy")
class GreedyGrouping(Grouping):
    """The baseline (``most_central_assign``): each peak to the enlarged box it is most central in."""

    def __init__(self, margin: float = 0.21):
        self.margin = margin

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "GreedyGrouping":
        """``prn.box_margin`` → the greedy grouping (the PRN's enlarged boxes)."""
        return cls(margin=cfg.prn.box_margin)

    def __call__(self, boxes, peaks_xy, peaks_type, peaks_score, num_keypoints, model=None):
        return most_central_assign(boxes, peaks_xy, peaks_type, peaks_score, num_keypoints, self.margin)

    def describe(self) -> str:
        return f"greedy (most central box, margin {self.margin:.0%})"


def grouping_from_config(cfg: DictConfig, name: str | None = None) -> Grouping:
    """The grouping ``name`` (default: ``infer.grouping``) with its options from ``cfg``."""
    return GROUPINGS[name or cfg.infer.grouping].from_config(cfg)


__all__ = ["GROUPINGS", "GreedyGrouping", "Grouping", "PrnGrouping", "grouping_from_config"]
