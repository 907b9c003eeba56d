"""Tracking and smoothing (posenet.portable.tracking, posenet.portable.smoothing): OKS equal to
COCO's, ids stable for people who do not cross whatever their order, tracks kept for
max_missed frames and ids never reused, the box fallback, and the One-Euro filter's output
equal to its input for a still point."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posenet.config.loader import load_config
from posenet.data.keypoints import COCO_PERSON
from posenet.portable.smoothing import OneEuroFilter
from posenet.portable.tracking import CONFIG_KEYS, Tracker, box_iou, keypoint_similarity

REPO = Path(__file__).resolve().parents[1]
SIGMAS = COCO_PERSON.sigmas
K = len(SIGMAS)


def person(x: float, y: float = 50.0, height: float = 100.0, rng=None, found: int = K) -> dict:
    """A pose of ``height`` px whose box's top centre is (x, y): keypoints spread over the box,
    the first ``found`` of them with score 0.9, the rest 0."""
    rng = rng or np.random.default_rng(0)
    kps = np.zeros((K, 3))
    kps[:, 0] = x + np.linspace(-0.2, 0.2, K) * height
    kps[:, 1] = y + np.linspace(0.05, 0.95, K) * height
    kps[:found, 2] = 0.9
    box = np.array([x - 0.25 * height, y, x + 0.25 * height, y + height])
    return {"keypoints": kps, "box": box, "box_score": 0.9, "score": 0.8}


def moved(p: dict, dx: float, noise: float = 0.0, rng=None) -> dict:
    kps = p["keypoints"].copy()
    kps[:, 0] += dx
    if noise:
        kps[:, :2] += rng.normal(0, noise, (K, 2))
    return {**p, "keypoints": kps, "box": p["box"] + [dx, 0, dx, 0]}


def test_oks_is_cocos_formula():
    """Against pycocotools' computeOks with the track's box as the ground truth's area: every
    keypoint found in both, and with some not found in the detection (COCO counts the ground
    truth's visible ones: the same where the tracker's "found in both" are those)."""
    rng = np.random.default_rng(1)
    gt = person(60, 40, 120)
    dets = [moved(gt, d, 2.0, rng) for d in (0.0, 3.0, 9.0)]
    x0, y0, x1, y1 = gt["box"]
    area = (x1 - x0) * (y1 - y0)
    coco = COCO()
    gt_kps = gt["keypoints"].copy()
    gt_kps[:, 2] = 2
    coco.dataset = {"images": [{"id": 1, "width": 200, "height": 200}], "categories": [{"id": 1, "name": "person"}],
                    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": area,
                                     "bbox": [x0, y0, x1 - x0, y1 - y0], "keypoints": gt_kps.ravel().tolist(),
                                     "num_keypoints": K}]}
    coco.createIndex()
    results = [{"image_id": 1, "category_id": 1, "keypoints": d["keypoints"].ravel().tolist(), "score": 1.0 - 0.1 * i}
               for i, d in enumerate(dets)]
    ev = COCOeval(coco, coco.loadRes(results), "keypoints")
    ev.params.kpt_oks_sigmas = np.array(SIGMAS)
    ev._prepare()
    reference = np.asarray(ev.computeOks(1, 1))[:, 0]
    oks, common = keypoint_similarity(np.stack([d["keypoints"] for d in dets]), gt["keypoints"][None], SIGMAS, [area])
    np.testing.assert_allclose(oks[:, 0], reference, rtol=1e-9)
    assert (common == K).all() and reference[0] > reference[1] > reference[2]
    # keypoints of the ground truth not labelled: COCO leaves them out, as the tracker does
    gt_kps[10:, 2] = 0
    coco.dataset["annotations"][0]["keypoints"] = gt_kps.ravel().tolist()
    coco.createIndex()
    ev = COCOeval(coco, coco.loadRes(results), "keypoints")
    ev.params.kpt_oks_sigmas = np.array(SIGMAS)
    ev._prepare()
    track = gt["keypoints"].copy()
    track[10:, 2] = 0
    oks, common = keypoint_similarity(np.stack([d["keypoints"] for d in dets]), track[None], SIGMAS, [area])
    np.testing.assert_allclose(oks[:, 0], np.asarray(ev.computeOks(1, 1))[:, 0], rtol=1e-9)
    assert (common == 10).all()


def test_box_iou():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]])
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 0], [0, 0]])


def test_ids_are_stable_for_people_who_do_not_cross_in_any_order():
    rng = np.random.default_rng(0)
    start = [person(x) for x in (40, 160, 280, 400)]
    speeds = [2.0, -1.5, 3.0, 0.0]
    tracker = Tracker(SIGMAS)
    ids = None
    for frame in range(40):
        people = [moved(p, v * frame, 1.5, rng) for p, v in zip(start, speeds)]
        order = rng.permutation(len(people))
        out = tracker.update([people[i] for i in order])
        got = np.empty(len(people), int)
        got[order] = [p["track_id"] for p in out]
        if ids is None:
            ids = got
            assert sorted(ids) == [1, 2, 3, 4]
        assert (got == ids).all(), frame
        # the records are copies of the people, in the given order, with their keypoints unchanged
        for i, p in zip(order, out):
            np.testing.assert_array_equal(p["keypoints"], people[i]["keypoints"])
            assert p["score"] == people[i]["score"]
        assert "track_id" not in people[0]


def test_missed_frames_keep_a_track_for_max_missed_frames_and_ids_are_never_reused():
    a, b = person(50), person(250)
    tracker = Tracker(SIGMAS, max_missed=2)
    assert [p["track_id"] for p in tracker.update([a, b])] == [1, 2]
    assert [p["track_id"] for p in tracker.update([a])] == [1]
    assert [p["track_id"] for p in tracker.update([a])] == [1]
    assert [p["track_id"] for p in tracker.update([a, b])] == [1, 2]  # back after 2 missed frames: the same id
    for _ in range(3):
        tracker.update([a])
    assert [p["track_id"] for p in tracker.update([b, a])] == [3, 1]  # 3 missed: a new id, 2 is not reused
    assert [t.id for t in tracker.tracks] == [1, 3]
    tracker.reset()
    assert [p["track_id"] for p in tracker.update([b])] == [1]


def test_a_person_who_jumps_far_gets_a_new_id_and_the_nearer_person_wins():
    tracker = Tracker(SIGMAS)
    p = person(100)
    tracker.update([p])
    # two candidates for track 1: the one nearer to where it was seen takes it
    out = tracker.update([moved(p, 30), moved(p, 4)])
    assert [q["track_id"] for q in out] == [2, 1]
    assert [q["track_id"] for q in tracker.update([moved(p, 400)])] == [3]


def test_motion_carries_a_hidden_person_across_a_crossing():
    """A walks right and B left at 6 px a frame; while they overlap only A (in front) is seen.
    Moved on at its velocity, B's track meets B again on the far side; left where it was seen,
    it is taken by A, who walks into that place."""
    def frames():
        for f in range(30):
            a, b = moved(person(100), 6 * f), moved(person(220), -6 * f)
            xa, xb = 100 + 6 * f, 220 - 6 * f
            yield [a] if abs(xa - xb) < 40 else [a, b]

    for motion in (True, False):
        tracker = Tracker(SIGMAS, motion=motion, max_missed=10)
        ids = [[p["track_id"] for p in people] for people in tracker.track(frames())]
        if motion:
            assert all(i == [1, 2] for i in ids if len(i) == 2) and all(i == [1] for i in ids if len(i) == 1)
        else:
            assert ids[-1] == [2, 3]  # A took B's id, B a new one


def test_people_with_few_keypoints_are_matched_by_their_boxes():
    tracker = Tracker(SIGMAS, min_keypoints=4, iou_threshold=0.3)
    p = person(100, found=2)
    tracker.update([p])
    assert tracker.update([moved(p, 5)])[0]["track_id"] == 1  # IoU 0.82
    assert tracker.update([moved(p, 40)])[0]["track_id"] == 2  # IoU of the boxes 0.11: no match
    # the same two keypoints in a box moved by 40 px: a new id by the boxes, the same one by OKS
    q = {**p, "box": p["box"] + [40, 0, 40, 0]}
    for min_keypoints, expected in ((4, [1, 2]), (2, [1, 1])):
        tracker = Tracker(SIGMAS, min_keypoints=min_keypoints, iou_threshold=0.3)
        assert [tracker.update([x])[0]["track_id"] for x in (p, q)] == expected


def test_tracking_a_sequence_of_predictions():
    class Prediction:
        def __init__(self, people):
            self.people = people

    a, b = person(50), person(300)
    frames = [Prediction([a, b]), {"people": [moved(b, 2), moved(a, 2)]}, [moved(a, 4)]]
    ids = [[p["track_id"] for p in people] for people in Tracker(SIGMAS).track(frames)]
    assert ids == [[1, 2], [2, 1], [1]]


def test_from_config_reads_the_video_section():
    cfg = load_config(REPO / "configs" / "synthetic_small.yaml",
                      ["video.max_missed=3", "video.smooth=true", "video.beta=0.5", "video.oks_threshold=0.4"])
    assert set(CONFIG_KEYS) <= set(cfg.video)
    tracker = Tracker.from_config(cfg.video, SIGMAS, keypoint_threshold=0.2, fps=10)
    assert (tracker.max_missed, tracker.smooth, tracker.oks_threshold, tracker.keypoint_threshold, tracker.fps) == \
        (3, True, 0.4, 0.2, 10.0)
    assert tracker.filter_options["beta"] == 0.5
    with pytest.raises(ValueError, match="sigmas"):
        Tracker([])
    with pytest.raises(ValueError, match="min_cutoff"):
        Tracker(SIGMAS, smooth=True, min_cutoff=0)


# ----------------------------------------------------------------------------- smoothing


def test_one_euro_returns_a_constant_input_exactly_and_converges_to_a_still_point():
    f = OneEuroFilter(min_cutoff=1.0, beta=0.05)
    still = np.array([[10.0, 20.0], [30.5, -4.0]])
    for i in range(5):
        np.testing.assert_array_equal(f(still, i / 25), still)
    # a point that moved and then stops: the output converges onto it
    f = OneEuroFilter(min_cutoff=1.0, beta=0.05)
    for i in range(30):
        f(still + [[3.0 * i, 0.0], [0.0, -2.0 * i]], i / 25)
    stop = still + [[90.0, 0.0], [0.0, -60.0]]
    outputs = [f(stop, (30 + i) / 25) for i in range(200)]
    assert np.abs(outputs[0] - stop).max() > 0.3  # it lags at first
    np.testing.assert_allclose(outputs[-1], stop, atol=1e-6)


def test_one_euro_smooths_jitter_and_follows_motion():
    rng = np.random.default_rng(0)
    f = OneEuroFilter(min_cutoff=1.0, beta=0.05)
    truth = np.array([[50.0, 50.0]])
    noisy = [truth + rng.normal(0, 2.0, (1, 2)) for _ in range(200)]
    out = np.array([f(x, i / 25) for i, x in enumerate(noisy)])[:, 0]
    raw = np.array(noisy)[:, 0]
    jitter = lambda a: np.linalg.norm(np.diff(a[50:], axis=0), axis=1).mean()  # noqa: E731
    assert jitter(out) < 0.3 * jitter(raw)
    # a fast point: the speed raises the cutoff, so it lags less than a fixed 1 Hz filter would
    slow = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    fast = OneEuroFilter(min_cutoff=1.0, beta=0.05)
    path = [np.array([[20.0 * i, 0.0]]) for i in range(40)]
    lag_slow = abs(float([slow(x, i / 25) for i, x in enumerate(path)][-1][0, 0]) - 780.0)
    lag_fast = abs(float([fast(x, i / 25) for i, x in enumerate(path)][-1][0, 0]) - 780.0)
    assert lag_fast < 0.2 * lag_slow


def test_one_euro_restarts_a_point_that_disappears():
    f = OneEuroFilter(min_cutoff=0.5, beta=0.0)
    a = np.array([[0.0, 0.0], [0.0, 0.0]])
    f(a, 0.0)
    b = np.array([[10.0, 0.0], [10.0, 0.0]])
    out = f(b, 0.04, valid=[True, False])
    assert 0 < out[0, 0] < 10 and out[1, 0] == 10  # the invalid point is passed through
    out = f(b, 0.08)
    assert out[0, 0] < 10 and out[1, 0] == 10  # it restarts: its first valid sample is returned as it is
    assert f(b + 5, 0.12)[1, 0] < 15  # and it is filtered from then on


def test_tracker_smooths_after_tracking_and_restarts_after_a_missed_frame():
    rng = np.random.default_rng(3)
    p = person(100)
    tracker = Tracker(SIGMAS, smooth=True, min_cutoff=1.0, beta=0.0)
    raw, smoothed = [], []
    for i in range(60):
        q = moved(p, 0.0, 1.5, rng)
        out = tracker.update([q])[0]
        assert out["track_id"] == 1
        np.testing.assert_array_equal(out["keypoints"][:, 2], q["keypoints"][:, 2])
        raw.append(q["keypoints"][:, :2])
        smoothed.append(out["keypoints"][:, :2])
    jitter = lambda a: np.linalg.norm(np.diff(np.array(a)[10:], axis=0), axis=2).mean()  # noqa: E731
    assert jitter(smoothed) < 0.4 * jitter(raw)
    tracker.update([])  # a missed frame
    q = moved(p, 0.0, 1.5, rng)
    np.testing.assert_array_equal(tracker.update([q])[0]["keypoints"], q["keypoints"])
