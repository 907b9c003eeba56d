"""The synthetic video with known identities (posenet.data.synthetic.video) and the tracking
benchmark's measures (posenet.bench.tracking): a tiny video is deterministic, COCO-readable,
a track id on every annotation, a still person who does not move and walkers who cross; the
ground-truth poses track without an ID switch, identities swapped on purpose are counted, and
the still person's jitter is what was put in and less once smoothed."""
from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from posenet.bench import tracking as bench
from posenet.data.keypoints import COCO_PERSON
from posenet.data.synthetic import SyntheticVideo, read_video_annotations, write_synthetic_video
from posenet.inference.video import video_section
from posenet.portable.tracking import Tracker

from _scripts import REPO, run_script

TINY = dict(width=128, height=96, frames=12, walkers=2, still=1, min_height=60, max_height=75, min_speed=4,
            max_speed=6)


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    summary = write_synthetic_video(root, seed=1, video=SyntheticVideo(**TINY), progress=False)
    return root, summary


def test_the_video_is_deterministic_and_coco_readable(tiny_video, tmp_path):
    root, summary = tiny_video
    again = tmp_path / "again"
    write_synthetic_video(again, seed=1, video=SyntheticVideo(**TINY), progress=False)
    assert (again / "annotations.json").read_bytes() == (root / "annotations.json").read_bytes()
    for name in ("000000.jpg", "000011.jpg"):
        assert (again / "frames" / name).read_bytes() == (root / "frames" / name).read_bytes()
    assert sorted(p.name for p in (root / "frames").iterdir()) == [f"{i:06d}.jpg" for i in range(12)]
    coco = COCO(str(root / "annotations.json"))
    assert len(coco.getImgIds()) == 12 == summary["frames"] and summary["tracks"] == 3
    anns = coco.loadAnns(coco.getAnnIds())
    assert anns and all(isinstance(a["track_id"], int) and a["iscrowd"] == 0 for a in anns)
    data = json.loads((root / "annotations.json").read_text())
    assert data["info"]["fps"] == 10.0 and data["info"]["still_track_ids"] == [1]
    assert [im["frame_id"] for im in data["images"]] == list(range(12))
    for image_id in coco.getImgIds():  # one annotation per track and frame
        ids = [a["track_id"] for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id))]
        assert len(ids) == len(set(ids))


def test_the_still_person_stays_and_the_walkers_cross(tiny_video):
    frames, info = read_video_annotations(tiny_video[0])
    assert len(frames) == 12 and info["files"][0] == "frames/000000.jpg"
    still = [p for f in frames for p in f if p["track_id"] == 1]
    assert len(still) >= 10
    first = still[0]["keypoints"]
    for p in still:  # its labelled keypoints never move, whatever hides them
        labelled = (p["keypoints"][:, 2] > 0) & (first[:, 2] > 0)
        assert labelled.sum() >= 10 and np.array_equal(p["keypoints"][labelled, :2], first[labelled, :2])

    def centre(frame, tid):
        return next(((p["box"][0] + p["box"][2]) / 2 for p in frame if p["track_id"] == tid), None)

    both = [(centre(f, 2), centre(f, 3)) for f in frames if centre(f, 2) is not None and centre(f, 3) is not None]
    assert len(both) >= 4
    assert both[0][0] < both[0][1] and both[-1][0] > both[-1][1]  # 2 walks right, 3 left: they cross
    xs = [centre(f, 2) for f in frames if centre(f, 2) is not None]
    assert (np.diff(xs) > 0).all()


def test_ground_truth_poses_track_without_a_switch_and_swaps_are_counted(tiny_video):
    frames, info = read_video_annotations(tiny_video[0])
    tracker = Tracker(COCO_PERSON.sigmas)
    tracked = bench.track(bench.ground_truth_people(frames), tracker, info["fps"])
    m = bench.tracking_metrics(frames, tracked)
    assert m["persons"] > 20 and m["found"] == m["persons"] and m["id_switches"] == 0
    assert m["right_id"] == m["persons"] and m["ids"] == m["gt_tracks"] == 3 and m["error_px"] == 0
    # identities swapped on purpose from frame 6 on: each of the two tracks switches once
    ids = {tuple(p["track_id"] for p in people) for people in tracked[6:]}
    a, b = sorted({i for t in ids for i in t})[:2]
    swapped = [[{**p, "track_id": {a: b, b: a}.get(p["track_id"], p["track_id"])} for p in people] if f >= 6
               else people for f, people in enumerate(tracked)]
    m = bench.tracking_metrics(frames, swapped)
    assert m["id_switches"] == 2 and m["found"] == m["persons"] and m["right_id"] < m["persons"]
    # an id that changes for good (a new one): one switch, and the right id from then on is wrong
    renamed = [[{**p, "track_id": 99 if p["track_id"] == a else p["track_id"]} for p in people] if f >= 6
               else people for f, people in enumerate(tracked)]
    assert bench.tracking_metrics(frames, renamed)["id_switches"] == 1


def test_still_jitter_is_the_noise_put_in_and_less_once_smoothed(tiny_video):
    frames, info = read_video_annotations(tiny_video[0])
    rng = np.random.default_rng(0)
    people = bench.ground_truth_people(frames)
    assert bench.still_jitter(frames, bench.track(people, Tracker(COCO_PERSON.sigmas), 10), [1])["jitter_px"] == 0
    noisy = [[{**p, "keypoints": np.concatenate([p["keypoints"][:, :2] + rng.normal(0, 1.0, (17, 2)),
                                                 p["keypoints"][:, 2:]], 1)} for p in f] for f in people]
    raw = bench.still_jitter(frames, bench.track(noisy, Tracker(COCO_PERSON.sigmas), 10), [1])
    smooth = bench.still_jitter(frames, bench.track(noisy, Tracker(COCO_PERSON.sigmas, smooth=True), 10), [1])
    # the distance between two independent N(0, 1) 2-D points is sqrt(pi) on average
    assert raw["keypoint_moves"] > 50 and raw["jitter_px"] == pytest.approx(np.sqrt(np.pi), rel=0.2)
    assert smooth["jitter_px"] < 0.7 * raw["jitter_px"]


def test_the_benchmark_end_to_end_with_a_small_random_model(tmp_path):
    """``run`` with a checkpoint on a 6-frame video: every row, the jitter table, both loops."""
    import torch

    from posenet.config import build, load_config, save_config

    cfg = load_config(REPO / "configs" / "synthetic_small.yaml", [
        "data.root=unused", "model.fpn_channels=16", "model.subnet_channels=16", "model.fuse_channels=16",
        "detection.fpn_channels=16", "detection.head_convs=1", "prn.hidden=32", "detection.score_threshold=0.0",
        "detection.max_detections=5", "infer.box_threshold=0.0", "infer.picture_box_threshold=0.0"])
    torch.manual_seed(0)
    model = build.posenet_model(cfg, 17, detection=True, prn=True)
    torch.save({"format": "posenet-checkpoint", "model": model.state_dict()}, tmp_path / "best.pt")
    save_config(cfg, tmp_path)
    world = dict(TINY, frames=6, width=96, height=64, min_height=40, max_height=50)
    result = bench.run(video_section(), tmp_path / "best.pt", seeds=[0], rounds=1, smoothing=[(0.5, 0.0)],
                       progress=False, **world)
    assert set(result["rows"]) == {"ground truth", "model"} and result["rows"]["ground truth"]["id_switches"] == 0
    assert set(result["jitter"]) == {"none", "1, 0.05", "0.5, 0"}
    assert result["speed"]["serial"]["fps"] > 0 and result["speed"]["pipelined"]["fps"] > 0
    table = bench.format_table(result, {"cpu": "test"})
    assert "| the model's people |" in table and "| pipelined (the default) |" in table
    assert "1, 0.05 (the config's)" in table


def test_make_synthetic_video(tmp_path):
    run_script("make_synthetic.py", "--video", "--out", tmp_path, "--frames", "3", "--walkers", "1", "--width", "64",
               "--height", "48", "--no-progress")
    frames, info = read_video_annotations(tmp_path)
    assert len(frames) == 3 and info["frames"] == 3
    bad = run_script("make_synthetic.py", "--video", "--out", tmp_path, "--walkers", "0", "--still", "0", check=False)
    assert bad.returncode == 2 and "at least one person" in bad.stderr
