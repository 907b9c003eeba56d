"""The synthetic COCO person-keypoint generator: COCO validity, determinism, content, CLI."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posenet.data.keypoints import COCO_PERSON
from posenet.data.synthetic import SyntheticCocoGenerator, write_synthetic_coco
from posenet.vis import draw_coco_annotations, draw_skeleton, segmentation_to_mask

from _scripts import run_script
NUM_TRAIN, NUM_VAL = 48, 16
# pycocotools 2.0.11 warns about numpy 2 copy semantics inside its own decode().
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")


def _quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def _load(root: Path, split: str) -> COCO:
    return _quiet(COCO, str(root / "annotations" / f"person_keypoints_{split}.json"))


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    summary = write_synthetic_coco(root, NUM_TRAIN, NUM_VAL, seed=0, workers=1, progress=False)
    return root, summary


@pytest.fixture(scope="session")
def small_sets(tmp_path_factory):
    """The same small set written with 1 and 2 workers, and with another seed."""
    out = {}
    for name, seed, workers in (("w1", 0, 1), ("w2", 0, 2), ("seed1", 1, 1)):
        root = tmp_path_factory.mktemp(name)
        write_synthetic_coco(root, 6, 3, seed=seed, workers=workers, progress=False)
        out[name] = root
    return out


def _all(root: Path):
    for split in ("train2017", "val2017"):
        coco = _load(root, split)
        for ann in coco.dataset["annotations"]:
            yield split, coco, ann


# ----------------------------------------------------------------------------- COCO validity

def test_layout_and_summary(dataset):
    root, summary = dataset
    for split, n in (("train2017", NUM_TRAIN), ("val2017", NUM_VAL)):
        assert (root / "annotations" / f"person_keypoints_{split}.json").is_file()
        assert len(list((root / split).glob("*.jpg"))) == n
    assert summary["splits"]["train"]["images"] == NUM_TRAIN
    assert summary["splits"]["val"]["images"] == NUM_VAL


def test_images_ids_and_categories(dataset):
    root, _ = dataset
    seen_images, seen_anns = set(), set()
    for split in ("train2017", "val2017"):
        data = json.loads((root / "annotations" / f"person_keypoints_{split}.json").read_text())
        assert data["categories"] == [COCO_PERSON.coco_category()]
        for im in data["images"]:
            assert {"id", "file_name", "width", "height"} <= set(im)
            assert im["id"] not in seen_images
            seen_images.add(im["id"])
            img = cv2.imread(str(root / split / im["file_name"]), cv2.IMREAD_UNCHANGED)
            assert img is not None and img.shape[:2] == (im["height"], im["width"])
        for a in data["annotations"]:
            assert a["id"] not in seen_anns
            seen_anns.add(a["id"])


def test_annotations_are_sane(dataset):
    root, _ = dataset
    for split, coco, a in _all(root):
        im = coco.imgs[a["image_id"]]
        assert a["category_id"] == 1
        assert a["area"] > 0
        mask = coco.annToMask(a)
        assert mask.sum() == a["area"]
        ys, xs = np.nonzero(mask)
        x, y, w, h = a["bbox"]
        assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        assert 0 <= x and 0 <= y and x + w <= im["width"] and y + h <= im["height"]
        kp = np.asarray(a["keypoints"]).reshape(-1, 3)
        assert kp.shape == (17, 3)
        assert a["num_keypoints"] == int((kp[:, 2] > 0).sum())
        if a["iscrowd"]:
            assert isinstance(a["segmentation"], dict) and a["num_keypoints"] == 0
            continue
        assert isinstance(a["segmentation"], list) and a["segmentation"]
        assert all(len(p) >= 6 and len(p) % 2 == 0 for p in a["segmentation"])
        assert np.all(kp[kp[:, 2] == 0, :2] == 0)  # unlabelled: x = y = 0, as COCO
        for kx, ky, v in kp:
            if v == 2:  # visible keypoints lie on the person's own mask and inside its box
                assert mask[ky, kx] == 1, (split, a["id"], kx, ky)
                assert x <= kx <= x + w and y <= ky <= y + h
            if v > 0:
                assert 0 <= kx < im["width"] and 0 <= ky < im["height"]


@pytest.mark.parametrize("iou_type", ["keypoints", "bbox"])
def test_ground_truth_scores_perfect_ap_against_itself(dataset, iou_type):
    root, _ = dataset
    for split in ("train2017", "val2017"):
        gt = _load(root, split)
        results = []
        for a in gt.dataset["annotations"]:
            if a["iscrowd"] or (iou_type == "keypoints" and a["num_keypoints"] == 0):
                continue
            r = {"image_id": a["image_id"], "category_id": 1, "score": 1.0}
            r.update({"keypoints": a["keypoints"]} if iou_type == "keypoints" else {"bbox": a["bbox"]})
            results.append(r)
        dt = _quiet(gt.loadRes, results)
        ev = COCOeval(gt, dt, iouType=iou_type)
        _quiet(ev.evaluate)
        _quiet(ev.accumulate)
        _quiet(ev.summarize)
        assert ev.stats[0] == pytest.approx(1.0), (split, iou_type, ev.stats[:3])


# ----------------------------------------------------------------------------- content

def test_dataset_covers_the_cases_later_code_must_handle(dataset):
    root, summary = dataset
    s = {k: sum(sp[k] for sp in summary["splits"].values())
         for k in summary["splits"]["train"] if not k.endswith("_range")}
    assert s["crowd_regions"] > 0
    assert s["unannotated_persons"] > 0
    assert s["grayscale_images"] > 0
    assert s["images_without_persons"] > 0
    assert s["keypoints_occluded"] > 0 and s["keypoints_outside"] > 0
    assert s["keypoints_visible"] > s["keypoints_occluded"]
    assert s["persons_small"] > 0 and s["persons_medium"] > 0 and s["persons_large"] > 0
    sizes, gray_files = set(), 0
    for split in ("train2017", "val2017"):
        coco = _load(root, split)
        for im in coco.dataset["images"]:
            sizes.add((im["width"], im["height"]))
            img = cv2.imread(str(root / split / im["file_name"]), cv2.IMREAD_UNCHANGED)
            gray_files += img.ndim == 2
    assert len(sizes) >= 10 and len({w / h > 1 for w, h in sizes}) == 2
    assert gray_files == s["grayscale_images"]
    ann = [a for _, _, a in _all(root)]
    assert any(not a["iscrowd"] and a["num_keypoints"] == 0 and a["segmentation"] for a in ann)
    assert max(sum(1 for a in ann if a["image_id"] == i and not a["iscrowd"])
               for i in {a["image_id"] for a in ann}) >= 5


def test_polygons_match_the_drawn_pixels():
    """annToMask of each polygon annotation against the generator's own visible mask."""
    gen = SyntheticCocoGenerator()
    ious = []
    for i in range(12):
        sample = gen.sample(0, "train", i)
        for k, a in enumerate(sample.annotations):
            drawn = sample.visible_mask(k)
            raster = segmentation_to_mask(a["segmentation"], sample.height, sample.width).astype(bool)
            iou = (drawn & raster).sum() / (drawn | raster).sum()
            assert iou >= 0.9, (i, k, iou)
            ious.append(iou)
    assert np.mean(ious) > 0.97


def test_sample_matches_written_annotations(dataset):
    root, _ = dataset
    coco = _load(root, "val2017")
    sample = SyntheticCocoGenerator().sample(0, "val", 3)
    image_id = coco.dataset["images"][3]["id"]
    written = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None))
    strip = lambda a: {k: v for k, v in a.items() if k not in ("id", "image_id")}  # noqa: E731
    assert [strip(a) for a in written] == json.loads(json.dumps(sample.annotations))


def test_left_and_right_follow_the_view():
    """A person facing the camera has its left shoulder on the image right, and not from behind."""
    from posenet.data.synthetic.figure import BodyShape, Figure, PoseAngles
    front = Figure(BodyShape(), PoseAngles(), 0.0, 0.0, 0.0, 200, (100, 100))
    back = Figure(BodyShape(), PoseAngles(), np.pi, 0.0, 0.0, 200, (100, 100))
    assert front.keypoints[5, 0] > front.keypoints[6, 0]  # left shoulder right of right shoulder
    assert back.keypoints[5, 0] < back.keypoints[6, 0]
    assert not front.self_hidden[:3].any() and back.self_hidden[:3].all()  # nose, eyes


# ----------------------------------------------------------------------------- determinism

def test_same_seed_same_bytes_for_any_worker_count(small_sets):
    assert _tree_digest(small_sets["w1"]) == _tree_digest(small_sets["w2"])


def test_different_seed_different_data(small_sets):
    a, b = _tree_digest(small_sets["w1"]), _tree_digest(small_sets["seed1"])
    assert a.keys() == b.keys()
    assert all(a[k] != b[k] for k in a)


def test_an_image_does_not_depend_on_the_split_sizes(dataset, small_sets):
    big, small = _tree_digest(dataset[0]), _tree_digest(small_sets["w1"])
    for name, digest in small.items():
        if name.endswith(".jpg"):
            assert big[name] == digest


# ----------------------------------------------------------------------------- CLI and drawing

def test_cli_writes_the_layout(tmp_path):
    out = tmp_path / "cli"
    r = run_script("make_synthetic.py", "--out", out, "--train", "3", "--val", "2", "--seed", "5", "--no-progress",
                   check=False)
    assert r.returncode == 0, r.stderr
    assert "train: 3 images" in r.stdout and "val: 2 images" in r.stdout
    assert len(list((out / "train2017").glob("*.jpg"))) == 3
    assert len(list((out / "val2017").glob("*.jpg"))) == 2
    for split in ("train2017", "val2017"):
        assert (out / "annotations" / f"person_keypoints_{split}.json").is_file()
    pics = tmp_path / "pics"
    r = run_script("draw_annotations.py", "--root", out, "--split", "train2017", "--num", "2", "--all-images",
                   "--out", pics, check=False)
    assert r.returncode == 0, r.stderr
    assert len(list(pics.glob("*.png"))) == 2


def test_cli_rejects_bad_arguments(tmp_path):
    r = run_script("make_synthetic.py", "--out", tmp_path / "x", "--train", "1", "--val", "0", "--min-size", "900",
                   "--max-size", "300", "--no-progress", check=False)
    assert r.returncode == 2 and "min_size" in r.stderr and "Traceback" not in r.stderr


def test_drawing_returns_new_images(dataset):
    root, _ = dataset
    coco = _load(root, "train2017")
    image_id = max(coco.getImgIds(), key=lambda i: len(coco.getAnnIds(imgIds=i, iscrowd=None)))
    info = coco.imgs[image_id]
    img = cv2.imread(str(root / "train2017" / info["file_name"]), cv2.IMREAD_UNCHANGED)
    before = img.copy()
    out = draw_coco_annotations(img, coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None)))
    assert np.array_equal(img, before)
    bgr = cv2.cvtColor(before, cv2.COLOR_GRAY2BGR) if before.ndim == 2 else before
    assert out.shape == (info["height"], info["width"], 3) and not np.array_equal(out, bgr)
    gray = draw_skeleton(np.zeros((50, 60), np.uint8), np.zeros((17, 3)))
    assert gray.shape == (50, 60, 3)


def test_generator_rejects_bad_settings():
    with pytest.raises(ValueError, match="max_people"):
        SyntheticCocoGenerator(min_people=3, max_people=2)
    with pytest.raises(ValueError, match="crowd_prob"):
        SyntheticCocoGenerator(crowd_prob=1.5)
    with pytest.raises(ValueError, match="seed"):
        write_synthetic_coco(os.devnull + "_never", 1, 1, seed=-1, progress=False)
    with pytest.raises(ValueError, match="placement"):
        SyntheticCocoGenerator(placement="grid")
    with pytest.raises(ValueError, match="views"):
        SyntheticCocoGenerator(views="side")
    with pytest.raises(ValueError, match="pose_kinds"):
        SyntheticCocoGenerator(pose_kinds=["stand", "dance"])


def test_the_quickstart_world_settings_do_what_they_say():
    """placement=row: people side by side, one slot each; views=front: every person faces the
    camera (left shoulder on the image right); pose_kinds: only those poses are drawn."""
    from posenet.data.synthetic import figure

    gen = SyntheticCocoGenerator(min_people=3, max_people=3, min_size=240, max_size=240, min_person_height=100,
                                 max_person_height=0.9, placement="row", views="front",
                                 pose_kinds=["stand", "walk"], crowd_prob=0, unannotated_prob=0,
                                 occluder_prob=0, max_clutter=0)
    for index in range(12):
        sample = gen.sample(0, "train", index)
        people = [a for a in sample.annotations if not a["iscrowd"]]
        assert len(people) == 3
        centres = sorted((a["bbox"][0] + a["bbox"][2] / 2) for a in people)
        for i, c in enumerate(centres):  # slot i of 3, jittered by at most 0.2 of a slot
            assert (i + 0.3) * 80 - 20 <= c <= (i + 0.7) * 80 + 20, (index, centres)
        for a in people:
            k = np.asarray(a["keypoints"]).reshape(17, 3)
            assert k[5, 0] > k[6, 0] and k[11, 0] > k[12, 0], index  # shoulders and hips: facing us
    rng = np.random.default_rng(0)
    kinds = [figure.sample_pose(rng, kinds=("sit",)) for _ in range(5)]
    assert all(p.left_leg[0] > np.deg2rad(60) for p in kinds)  # sitting: thighs raised
    # the default generator draws exactly what it drew before these settings existed
    assert SyntheticCocoGenerator().placement == "random" and SyntheticCocoGenerator().views == "any"


def test_a_dead_worker_is_an_error_not_a_hang(tmp_path):
    """Spawned workers re-run a script that lacks the __main__ guard and die: the writer must
    stop with a clear error instead of restarting them forever."""
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text("from posenet.data.synthetic import write_synthetic_coco\n"
                      f"write_synthetic_coco({str(tmp_path / 'out')!r}, num_train=4, num_val=2, workers=2, progress=False)\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "guard the call with" in proc.stderr
