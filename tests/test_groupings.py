"""The groupings registry: every grouping is called the same way by the Predictor and the
evaluators; a new one is a class registered with @GROUPINGS.register (a file of its own: the
toy grouping); unknown names are one clear error."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from posenet.config import build, load_config
from posenet.errors import ConfigError
from posenet.inference.groupings import GROUPINGS, GreedyGrouping, Grouping, grouping_from_config
from posenet.inference.predictor import Predictor
from posenet.inference.prn_grouping import most_central_assign

from _scripts import REPO

CONFIG = REPO / "configs/synthetic_small.yaml"


def test_the_registry_builds_from_config_and_names_the_choices():
    cfg = load_config(CONFIG, ["prn.box_margin=0.3", "prn.window=9"])
    assert {"prn", "greedy"} <= set(GROUPINGS)
    prn, greedy = grouping_from_config(cfg, "prn"), grouping_from_config(cfg, "greedy")
    assert (prn.name, prn.window, prn.margin, prn.needs_prn) == ("prn", 9, 0.3, True)
    assert (greedy.name, greedy.margin, greedy.needs_prn) == ("greedy", 0.3, False)
    assert "window 9" in prn.describe() and "greedy" in greedy.describe()
    with pytest.raises(ConfigError, match="unknown infer.grouping 'pif'; choose one of greedy, paf, prn"):
        GROUPINGS["pif"]


def test_the_paf_grouping_is_a_grouping_of_the_registry_and_refuses_boxes():
    """Both predictors hold the same kind of grouping object: the OpenPose family's is the
    registry's "paf", read from the openpose section; a box model cannot take it."""
    cfg = load_config(CONFIG, ["openpose.paf_samples=7", "openpose.paf_sampling=nearest"])
    paf = grouping_from_config(cfg, "paf")
    assert isinstance(paf, Grouping) and paf.bottom_up and not grouping_from_config(cfg, "prn").bottom_up
    assert paf.options()["samples"] == 7 and "7 nearest samples" in paf.describe()
    with pytest.raises(ConfigError, match="needs a network of model.family openpose"):
        paf.check_model(build.posenet_model(cfg, 17))


def test_a_grouping_that_needs_a_prn_refuses_a_model_without_one():
    class NoPrn:
        has_prn = False

    with pytest.raises(ConfigError, match="no PRN"):
        grouping_from_config(load_config(CONFIG), "prn").check_model(NoPrn())
    GreedyGrouping().check_model(NoPrn())  # needs none


def test_greedy_grouping_is_greedy_assign():
    rng = np.random.default_rng(0)
    boxes = np.array([[0, 0, 40, 80], [30, 0, 70, 80]], dtype=np.float64)
    xy, types, scores = rng.uniform(0, 70, (30, 2)), rng.integers(0, 17, 30), rng.uniform(0.1, 1, 30)
    got = GreedyGrouping(0.21)(boxes, xy, types, scores, 17)
    want = most_central_assign(boxes, xy, types, scores, 17, 0.21)
    assert all(np.array_equal(a, b) for a, b in zip(got, want))


def test_a_grouping_in_a_file_of_its_own_runs_everywhere_by_its_name(coco_mini):
    """Adding a grouping is one file (tests/_toy_grouping.py: a registered class that reads its
    options in ``from_config``): the config names it, and the Predictor and the ground-truth
    evaluator run it, with no other edit."""
    from _stub_models import ColourCodedNet
    from posenet.stages.prn import PrnEvaluator

    sys.modules.pop("_toy_grouping", None)  # registers on import
    import _toy_grouping

    try:
        cfg = load_config(CONFIG, [f"data.root={coco_mini}", "infer.grouping=nearest-centre-test", "prn.box_margin=0.3"])
        predictor = Predictor.from_config(cfg, ColourCodedNet(whole_image_box=True))
        assert isinstance(predictor.grouping, _toy_grouping.NearestCentre) and predictor.grouping.margin == 0.3
        _toy_grouping.NearestCentre.calls = 0
        people = predictor.predict(np.full((64, 48, 3), 40, np.uint8))
        assert _toy_grouping.NearestCentre.calls == 1 and len(people) == 1
        evaluator = PrnEvaluator.from_config(cfg, "nearest-centre-test", progress=False, max_images=5)
        metrics = evaluator()
        assert _toy_grouping.NearestCentre.calls > 1 and 0.0 <= metrics["AP"] <= 1.0
        assert "nearest box centre (margin 30%)" in evaluator.protocol()
    finally:
        GROUPINGS.unregister("nearest-centre-test")
    with pytest.raises(ConfigError, match="unknown infer.grouping 'nearest-centre-test'; choose one of greedy, paf, prn"):
        Predictor.from_config(cfg, ColourCodedNet(whole_image_box=True))
    with pytest.raises(ValueError, match="already registered"):
        GROUPINGS.register("greedy")(GreedyGrouping)
