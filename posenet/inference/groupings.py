"""Groupings: how one image's keypoint peaks become people, behind one registry, so that both
predictors, the evaluators, ``val_keypoint.py --grouping`` and the benchmarks hold every
grouping the same way (a ``Grouping``: ``name``, ``from_config``, ``describe``, ``check_model``).

A top-down grouping (MultiPoseNet's: "prn", "greedy") assigns peaks to person boxes. It is
called as ``grouping(boxes, peaks_xy, peaks_type, peaks_score, num_keypoints, model)``: boxes
(B, 4) x1 y1 x2 y2 and peaks (P, 2) / (P,) / (P,) of one image in one pixel frame, ``model`` the
network (a ``PoseNet`` or the PRN itself; groupings that need no network ignore it). It returns
``(keypoints (B, K, 2), scores (B, K))`` as numpy arrays: the score of an assigned keypoint is
its peak's, that of one left unassigned 0.

A bottom-up grouping (``bottom_up``; the OpenPose family's "paf") joins part peaks into people
along the limbs by the network's fields: ``grouping(coords, scores, valid, fields, input_hw,
limbs, stride)`` -> ``PafPeople`` (see ``PafFieldGrouping``).

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
from posenet.portable.paf import PAF_SAMPLING, PafGrouping, PafPeople
from posenet.utils.registry import Registry
from omegaconf import DictConfig


GROUPINGS = Registry("infer.grouping")


class Grouping:
    """The interface; see the module's note."""

    name: str = ""  # the registered name
    needs_prn: bool = False
    bottom_up: bool = False  # joins peaks along limbs by the network's fields instead of into boxes

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


@GROUPINGS.register("paf")
class PafFieldGrouping(Grouping):
    """The OpenPose family's grouping: part peaks joined into people by the part affinity
    fields (``posenet.portable.paf.PafGrouping``, the portable decoder's own): candidate limbs
    scored by ``samples`` samples of the field along them, taken one-to-one best first, merged
    limb by limb."""

    bottom_up = True

    def __init__(self, samples: int = 10, paf_threshold: float = 0.05, min_inliers: float = 0.8, min_parts: int = 3,
                 min_mean_score: float = 0.2, sampling: str = "bilinear"):
        if sampling not in PAF_SAMPLING:
            raise ConfigError(f"openpose.paf_sampling must be one of {', '.join(PAF_SAMPLING)}, not {sampling!r}")
        self.samples, self.paf_threshold, self.min_inliers = int(samples), float(paf_threshold), float(min_inliers)
        self.min_parts, self.min_mean_score, self.sampling = int(min_parts), float(min_mean_score), str(sampling)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "PafFieldGrouping":
        """``openpose`` → the PAF grouping."""
        o = cfg.openpose
        return cls(samples=o.paf_samples, paf_threshold=o.paf_threshold, min_inliers=o.min_inliers,
                   min_parts=o.min_parts, min_mean_score=o.min_mean_score, sampling=o.paf_sampling)

    def options(self) -> dict:
        """The keywords of ``PafGrouping`` (and of the export's ``openpose.paf``)."""
        return {"samples": self.samples, "paf_threshold": self.paf_threshold, "min_inliers": self.min_inliers,
                "min_parts": self.min_parts, "min_mean_score": self.min_mean_score, "sampling": self.sampling}

    def __call__(self, coords, scores, valid, pafs, input_hw, limbs, stride: int) -> PafPeople:
        """People (input pixels, best first) from part peaks (``coords`` (K, M, 2), ``scores``,
        ``valid`` (K, M)) and PAFs (2L, H, W) of an input of ``input_hw`` on a stride-``stride`` grid."""
        return PafGrouping(input_hw, limbs, stride, **self.options())(coords, scores, valid, pafs)

    def check_model(self, model) -> None:
        if model is not None and not hasattr(model, "num_limbs"):
            raise ConfigError("infer.grouping=paf joins parts by part affinity fields: it needs a network of "
                              "model.family openpose")

    def describe(self) -> str:
        return (f"PAF grouping ({self.samples} {self.sampling} samples a limb, more than {self.min_inliers:.0%} "
                f"above {self.paf_threshold:g})")


def grouping_from_config(cfg: DictConfig, name: str | None = None) -> Grouping:
    """The grouping ``name`` (default: ``infer.grouping``) with its options from ``cfg``."""
    return GROUPINGS[name or cfg.infer.grouping].from_config(cfg)


__all__ = ["GROUPINGS", "GreedyGrouping", "Grouping", "PafFieldGrouping", "PrnGrouping", "grouping_from_config"]
