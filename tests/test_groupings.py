"""The groupings registry: every grouping is called the same way by the Predictor and the
evaluators; a new one is a class with @register_grouping; unknown names are one clear error."""
from __future__ import annotations

import numpy as np
import pytest

from posenet.config import build, load_config
from posenet.errors import ConfigError
from posenet.inference.groupings import GROUPINGS, GreedyGrouping, Grouping, make_grouping, register_grouping
from posenet.inference.prn_grouping import most_central_assign

from _scripts import REPO

CONFIG = REPO / "configs/synthetic_small.yaml"


def test_the_registry_builds_from_config_and_names_the_choices():
    cfg = load_config(CONFIG, ["prn.box_margin=0.3", "prn.window=9"])
    assert {"prn", "greedy"} <= set(GROUPINGS)
    prn, greedy = build.grouping(cfg, "prn"), build.grouping(cfg, "greedy")
    assert (prn.name, prn.window, prn.margin, prn.needs_prn) == ("prn", 9, 0.3, True)
    assert (greedy.name, greedy.margin, greedy.needs_prn) == ("greedy", 0.3, False)
    assert "window 9" in prn.describe() and "greedy" in greedy.describe()
    with pytest.raises(ConfigError, match="unknown grouping 'paf'; choose one of greedy, prn"):
        make_grouping("paf")


def test_a_grouping_that_needs_a_prn_refuses_a_model_without_one():
    class NoPrn:
        has_prn = False

    with pytest.raises(ConfigError, match="no PRN"):
        build.grouping(load_config(CONFIG), "prn").check_model(NoPrn())
    GreedyGrouping().check_model(NoPrn())  # needs none


def test_greedy_grouping_is_greedy_assign():
    rng = np.random.default_rng(0)
    boxes = np.array([[0, 0, 40, 80], [30, 0, 70, 80]], dtype=np.float64)
    xy, types, scores = rng.uniform(0, 70, (30, 2)), rng.integers(0, 17, 30), rng.uniform(0.1, 1, 30)
    got = GreedyGrouping(0.21)(boxes, xy, types, scores, 17)
    want = most_central_assign(boxes, xy, types, scores, 17, 0.21)
    assert all(np.array_equal(a, b) for a, b in zip(got, want))


def test_a_registered_grouping_runs_through_the_predictor_and_the_evaluator(coco_mini):
    """One class is all a new grouping needs: the Predictor and the ground-truth evaluator call it."""
    from _stub_models import ColourCodedNet
    from posenet.stages.prn import PrnEvaluator

    calls = []

    @register_grouping
    class FirstBox(Grouping):
        name = "first-box-test"

        def __call__(self, boxes, peaks_xy, peaks_type, peaks_score, num_keypoints, model=None):
            calls.append(len(boxes))
            keypoints = np.zeros((len(boxes), num_keypoints, 2))
            scores = np.zeros((len(boxes), num_keypoints))
            for xy, k, s in zip(np.asarray(peaks_xy), np.asarray(peaks_type), np.asarray(peaks_score)):
                if len(boxes) and s > scores[0, k]:
                    keypoints[0, k], scores[0, k] = xy, s
            return keypoints, scores

    try:
        cfg = load_config(CONFIG, [f"data.root={coco_mini}"])
        predictor = build.predictor(cfg, ColourCodedNet(whole_image_box=True), grouping_name="first-box-test")
        people = predictor.predict(np.full((64, 48, 3), 40, np.uint8))
        assert calls == [1] and len(people) == 1
        persons = build.coco_split(cfg.data, "val2017")
        evaluator = PrnEvaluator(persons, FirstBox(), build.keypoint_layout(cfg.data.keypoints), max_images=5,
                                 progress=False)
        metrics = evaluator()
        assert len(calls) > 1 and 0.0 <= metrics["AP"] <= 1.0 and "first-box-test" in evaluator.protocol()
    finally:
        GROUPINGS.pop("first-box-test", None)
    with pytest.raises(ValueError, match="already registered"):
        register_grouping(GreedyGrouping)
