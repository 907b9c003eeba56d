"""The inference pipeline: image inputs of every kind, the Predictor with flip and scales,
the end-to-end evaluator's ground-truth modes, infer_folder / infer.py outputs (results that
pycocotools loads, per-image JSON, pictures), every odd kind of image file, EXIF orientation,
and keypoints mapped back to the pixels of a huge image."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from posenet.config import load_config
from posenet.errors import DataError, PosenetError
from posenet.inference import infer_folder
from posenet.inference.predictor import Predictor, as_rgb, draw_prediction
from posenet.stages.end_to_end import EndToEndEvaluator

from _random_runs import TINY, save_random_run
from _scripts import REPO, run_script

CONFIG = REPO / "configs/synthetic_small.yaml"


@pytest.fixture(scope="module")
def full_checkpoint(tmp_path_factory, coco_mini):
    """A randomly initialised full model (keypoint + detection + PRN) saved like a run."""
    return save_random_run(load_config(CONFIG, [f"data.root={coco_mini}", *TINY]), tmp_path_factory.mktemp("run"))


def test_as_rgb_reads_gray_rgba_16bit_and_paths(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert as_rgb(gray).shape == (3, 4, 3) and (as_rgb(gray)[..., 0] == gray).all()
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0] = 200
    assert as_rgb(rgba).shape == (3, 4, 3) and (as_rgb(rgba)[..., 0] == 200).all()
    assert as_rgb(np.full((2, 2, 3), 65535, np.uint16)).max() == 255
    bgr = np.zeros((5, 6, 3), np.uint8)
    bgr[..., 2] = 255  # red in BGR
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    assert (as_rgb(tmp_path / "red.png")[..., 0] == 255).all()
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match="bad.jpg"):
        as_rgb(tmp_path / "bad.jpg")
    with pytest.raises(DataError, match="float"):
        as_rgb(np.zeros((2, 2, 3), np.float32))


def test_predictor_runs_with_flip_and_scales(full_checkpoint):
    image = np.random.default_rng(0).integers(0, 255, (120, 90, 3), dtype=np.uint8)
    for overrides in ([], ["infer.flip=true", "infer.scales=[1.0,0.75]"], ["infer.grouping=greedy"]):
        predictor = Predictor.from_checkpoint(full_checkpoint, overrides=overrides)
        prediction = predictor.run(image)
        assert prediction.people and len(prediction.people) <= 5
        scores = [p["score"] for p in prediction.people]
        assert scores == sorted(scores, reverse=True)
        for person in prediction.people:
            kps = person["keypoints"]
            assert kps.shape == (17, 3) and np.isfinite(kps).all()
            assert (kps[:, 2] >= 0).all() and (kps[:, 2] <= 1).all()
            x1, y1, x2, y2 = person["box"]
            assert 0 <= x1 <= x2 <= 90 and 0 <= y1 <= y2 <= 120
        assert {"network_ms", "decode_ms"} <= set(prediction.timing)
        pictures = draw_prediction(image, prediction, predictor.layout)
        assert pictures["panel"].shape == (120, 270, 3) and pictures["skeletons"].shape == (120, 90, 3)
        # people under the picture threshold are not drawn: no box, no skeleton over the image
        nobody = draw_prediction(image, prediction, predictor.layout, box_threshold=2.0)
        assert np.array_equal(nobody["boxes"], image[:, :, ::-1]) and np.array_equal(nobody["skeletons"], image[:, :, ::-1])
        assert not np.array_equal(pictures["boxes"], image[:, :, ::-1])


def test_missing_parts_and_config_are_clear_errors(full_checkpoint, tmp_path, coco_mini):
    with pytest.raises(PosenetError, match="config.yaml does not exist"):
        Predictor.from_checkpoint(tmp_path / "elsewhere" / "best.pt")
    state = torch.load(full_checkpoint, weights_only=True)["model"]
    torch.save({"format": "posenet-checkpoint", "model": {k: v for k, v in state.items() if not k.startswith("prn.")}},
               tmp_path / "no_prn.pt")
    with pytest.raises(PosenetError, match="no PRN"):
        Predictor.from_checkpoint(tmp_path / "no_prn.pt", full_checkpoint.parent / "config.yaml")
    greedy = Predictor.from_checkpoint(tmp_path / "no_prn.pt", full_checkpoint.parent / "config.yaml",
                                       ["infer.grouping=greedy"])
    # without a PRN the checkpoint still gives people through the greedy grouping: one per box
    prediction = greedy.run(np.zeros((40, 30, 3), np.uint8))
    assert len(prediction.people) == len(prediction.boxes) > 0
    assert all(p["keypoints"].shape == (17, 3) for p in prediction.people)


def test_ground_truth_keypoints_and_boxes_score_high_through_the_pipeline(full_checkpoint, coco_mini):
    from posenet.data.coco import CocoPersons

    persons = CocoPersons(coco_mini, "val2017")
    predictor = Predictor.from_checkpoint(full_checkpoint, overrides=["infer.grouping=greedy"])
    metrics = EndToEndEvaluator(predictor, persons, "gt-keypoints-gt-boxes", progress=False)()
    # greedy grouping of the true keypoints into the true boxes: right except where people
    # overlap (0.788 on the 79 val images when written)
    assert metrics["AP"] > 0.7 and metrics["decode_ms"] > 0
    assert "network_ms" not in metrics  # no network pass needed in this mode


def _digest(folder: Path) -> dict:
    """Content and permission bits of a folder's files (directories by name)."""
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and os.access(p, os.R_OK) else None,
                     p.stat().st_mode) for p in sorted(folder.iterdir())}


def test_infer_folder_writes_results_json_and_pictures(full_checkpoint, coco_mini, tmp_path):
    from pycocotools.coco import COCO

    images = tmp_path / "images"
    images.mkdir()
    names = sorted(p.name for p in (coco_mini / "val2017").iterdir())[:3]
    for name in names:
        shutil.copy(coco_mini / "val2017" / name, images / name)
    out = tmp_path / "out"
    predictor = Predictor.from_checkpoint(full_checkpoint)
    before = _digest(images)
    summary = infer_folder(predictor, images, out, progress=False, log=lambda *a: None)
    assert _digest(images) == before  # inputs are never modified
    assert summary["images"] == 3 and summary["skipped"] == 0 and summary["people"] > 0
    results = json.loads((out / "results.json").read_text())
    ids = {int(Path(n).stem) for n in names}
    assert results and {r["image_id"] for r in results} <= ids
    gt = COCO(str(coco_mini / "annotations" / "person_keypoints_val2017.json"))
    assert len(gt.loadRes(str(out / "results.json")).anns) == len(results)  # pycocotools accepts it
    for name in names:
        stem = Path(name).stem
        record = json.loads((out / "json" / f"{stem}.json").read_text())
        assert record["image_id"] == int(stem) and len(record["people"][0]["keypoints"]) == 51
        for kind in ("heatmaps", "boxes", "skeletons", "panel"):
            assert cv2.imread(str(out / "pictures" / f"{stem}_{kind}.jpg")) is not None
    assert not list(out.rglob("*.tmp"))


def _odd_files(folder: Path) -> dict[str, str | None]:
    """Every kind of odd file an image folder may hold, as files on disk: name -> None (must give
    a result) or the reason the skip warning must give."""
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(1)
    cv2.imwrite(str(folder / "gray16.png"), rng.integers(0, 65535, (50, 70), dtype=np.uint16))
    cv2.imwrite(str(folder / "rgb16.png"), rng.integers(0, 65535, (50, 70, 3), dtype=np.uint16))
    cv2.imwrite(str(folder / "rgba.png"), rng.integers(0, 255, (60, 40, 4), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).convert("P").save(folder / "palette.png")
    cv2.imwrite(str(folder / "gray.jpg"), rng.integers(0, 255, (50, 70), dtype=np.uint8))
    Image.fromarray(np.full((40, 60, 3), (200, 30, 30), np.uint8)).convert("CMYK").save(folder / "cmyk.jpg")
    cv2.imwrite(str(folder / "one.png"), np.full((1, 1, 3), 90, np.uint8))
    cv2.imwrite(str(folder / "two_by_three.png"), np.full((2, 3, 3), 90, np.uint8))
    cv2.imwrite(str(folder / "big.jpg"), np.full((4000, 6000, 3), 128, np.uint8))
    whole = cv2.imencode(".jpg", rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))[1].tobytes()
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")
    (folder / "x.jpg").mkdir()
    locked = folder / "locked.png"
    cv2.imwrite(str(locked), np.full((20, 20, 3), 90, np.uint8))
    locked.chmod(0)
    (folder / "notes.txt").write_text("not an image name: not listed at all")
    expected = {"gray16.png": None, "rgb16.png": None, "rgba.png": None, "palette.png": None, "gray.jpg": None,
                "cmyk.jpg": None, "one.png": None, "two_by_three.png": None, "big.jpg": None,
                "truncated.jpg": "truncated", "empty.jpg": "empty file", "text.jpg": "cannot decode",
                "x.jpg": "is a directory"}
    # root reads whatever the permission bits say
    expected["locked.png"] = None if os.geteuid() == 0 else "no permission"
    return expected


def test_infer_script_reads_or_skips_every_odd_file(full_checkpoint, tmp_path):
    images = tmp_path / "images"
    expected = _odd_files(images)
    before = _digest(images)
    out = tmp_path / "out"
    result = run_script("infer.py", "--checkpoint", str(full_checkpoint), "--images", str(images), "--out", str(out),
                        "--flip")
    assert _digest(images) == before  # inputs untouched
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning: skipped")]
    skipped = {name: reason for name, reason in expected.items() if reason}
    assert len(warnings) == len(skipped), warnings
    for name, reason in skipped.items():
        lines = [w for w in warnings if f"{name}:" in w]
        assert len(lines) == 1 and reason in lines[0], (name, lines)
        assert not (out / "json" / f"{Path(name).stem}.json").exists()
    read = [name for name, reason in expected.items() if reason is None]
    assert f"{len(read)} images" in result.stdout
    assert "Premature end" not in result.stdout + result.stderr  # no decoder noise for cut files
    for name in read:
        record = json.loads((out / "json" / f"{Path(name).stem}.json").read_text())
        stored = cv2.imread(str(images / name), cv2.IMREAD_UNCHANGED) if name != "locked.png" else np.zeros((20, 20))
        assert (record["height"], record["width"]) == stored.shape[:2], name
    big = cv2.imread(str(out / "pictures" / "big_panel.jpg"))
    assert max(big.shape[:2]) <= 1600  # pictures of huge images are scaled down


def test_nothing_readable_is_an_error(full_checkpoint, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "empty.jpg").write_bytes(b"")
    predictor = Predictor.from_checkpoint(full_checkpoint)
    with pytest.raises(PosenetError, match="none of the 1 image file"):
        infer_folder(predictor, images, tmp_path / "out", pictures=False, progress=False, log=lambda *a: None)


def _stub_predictor(input_size: int) -> Predictor:
    from _stub_models import ColourCodedNet

    cfg = load_config(CONFIG, ["infer.grouping=greedy", "infer.peak_threshold=0.1", f"infer.input_size={input_size}"])
    return Predictor.from_config(cfg, ColourCodedNet(whole_image_box=True))


def test_keypoints_map_back_to_the_pixels_of_a_6000_by_4000_image(tmp_path):
    """Coordinates, not only sizes: coded dots on a big photo come back where they were drawn,
    within one network input pixel (23 image pixels at this scale)."""
    from _stub_models import BACKGROUND, CODES

    image = np.full((4000, 6000, 3), BACKGROUND, np.uint8)
    places = {k: (700.0 + 900 * i, 800.0 + 450 * i) for i, k in enumerate(CODES)}
    for k, (x, y) in places.items():
        cv2.circle(image, (int(x), int(y)), 90, CODES[k], -1)
    path = tmp_path / "big.png"
    cv2.imwrite(str(path), image[:, :, ::-1])
    people = _stub_predictor(256).predict(path)
    assert len(people) == 1
    kps = people[0]["keypoints"]
    for k, (x, y) in places.items():
        assert np.hypot(kps[k, 0] - x, kps[k, 1] - y) < 6000 / 256, (k, kps[k, :2], (x, y))


def test_exif_orientation_is_honoured_at_inference_and_ignored_in_training(tmp_path):
    from PIL import Image

    from posenet.data.images import read_image

    stored = np.full((40, 60, 3), 40, np.uint8)
    stored[:10, :10] = (250, 40, 40)  # a red top-left corner in the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    upright = as_rgb(path)
    assert upright.shape == (60, 40, 3)  # turned: the stored width is now the height
    assert upright[:10, -10:, 0].mean() > 200 and upright[-10:, :10, 0].mean() < 100  # red now top right
    assert read_image(path).shape == (40, 60, 3)  # training: the stored pixels, as COCO annotates them
    # a dot drawn in the stored frame comes back in the upright frame
    from _stub_models import BACKGROUND, CODES

    stored = np.full((120, 200, 3), BACKGROUND, np.uint8)
    cv2.circle(stored, (50, 30), 6, CODES[0], -1)
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    nose = _stub_predictor(200).predict(path)[0]["keypoints"][0]
    # rotating 90 degrees clockwise takes stored (x, y) to (H - 1 - y, x)
    assert np.hypot(nose[0] - (119 - 30), nose[1] - 50) < 1.5, nose


def test_infer_script_with_no_images_is_one_error_line(full_checkpoint, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_script("infer.py", "--checkpoint", full_checkpoint, "--images", empty, "--out", tmp_path / "o2",
                      check=False)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: no images in")
    assert len(proc.stderr.strip().splitlines()) == 1
