"""The inference pipeline: image inputs of every kind, the Predictor with flip and scales,
the end-to-end evaluator's ground-truth modes, infer_folder / infer.py outputs (results that
pycocotools loads, per-image JSON, pictures), and unreadable, empty and huge inputs."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from posenet.config import build, load_config, save_config
from posenet.errors import DataError, PosenetError
from posenet.inference import Predictor, infer_folder
from posenet.inference.predictor import as_rgb, draw_prediction
from posenet.stages.end_to_end import EndToEndEvaluator

from test_keypoint_stage import REPO, run_script

CONFIG = REPO / "configs/synthetic_small.yaml"
TINY = ["model.fpn_channels=16", "model.subnet_channels=16", "model.fuse_channels=16", "detection.fpn_channels=16",
        "detection.head_convs=1", "prn.hidden=32", "keypoint.val_input_size=96",
        # random weights score every box ~0.01: keep them so that grouping has work to do
        "detection.score_threshold=0.0", "detection.max_detections=5", "infer.box_threshold=0.0"]


@pytest.fixture(scope="module")
def full_checkpoint(tmp_path_factory, coco_mini):
    """A randomly initialised full model (keypoint + detection + PRN) saved like a run."""
    run = tmp_path_factory.mktemp("run")
    cfg = load_config(CONFIG, [f"data.root={coco_mini}", *TINY])
    torch.manual_seed(0)
    model = build.posenet_model(cfg, 17, detection=True, prn=True)
    torch.save({"format": "posenet-checkpoint", "model": model.state_dict()}, run / "best.pt")
    save_config(cfg, run)
    return run / "best.pt"


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
    assert greedy.predict(np.zeros((40, 30, 3), np.uint8)) is not None


def test_ground_truth_keypoints_and_boxes_score_high_through_the_pipeline(full_checkpoint, coco_mini):
    from posenet.data.coco import CocoPersons

    persons = CocoPersons(coco_mini, "val2017")
    predictor = Predictor.from_checkpoint(full_checkpoint, overrides=["infer.grouping=greedy"])
    metrics = EndToEndEvaluator(predictor, persons, "gt-keypoints-gt-boxes", progress=False)()
    # greedy grouping of the true keypoints into the true boxes: right except where people
    # overlap (0.788 on the 79 val images when written)
    assert 0.7 < metrics["AP"] < 1.0 and metrics["decode_ms"] > 0
    assert "network_ms" not in metrics  # no network pass needed in this mode


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


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


def test_infer_script_handles_corrupt_gray_rgba_huge_and_empty(full_checkpoint, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    cv2.imwrite(str(images / "gray.jpg"), rng.integers(0, 255, (50, 70), dtype=np.uint8))
    cv2.imwrite(str(images / "rgba.png"), rng.integers(0, 255, (60, 40, 4), dtype=np.uint8))
    cv2.imwrite(str(images / "huge.bmp"), np.full((3000, 4200, 3), 128, np.uint8))
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    result = run_script("infer.py", "--checkpoint", str(full_checkpoint), "--images", str(images), "--out", str(out),
                        "--flip")
    assert "skipped 1 unreadable file(s): corrupt.jpg" in result.stdout
    assert "3 images" in result.stdout
    ids = json.loads((out / "image_ids.json").read_text())
    assert set(ids) == {"corrupt.jpg", "gray.jpg", "huge.bmp", "rgba.png"}
    huge = cv2.imread(str(out / "pictures" / "huge_panel.jpg"))
    assert max(huge.shape[:2]) <= 1600  # pictures of huge images are scaled down
    record = json.loads((out / "json" / "huge.json").read_text())
    assert (record["height"], record["width"]) == (3000, 4200)
    empty = tmp_path / "empty"
    empty.mkdir()
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "infer.py"), "--checkpoint", str(full_checkpoint),
                           "--images", str(empty), "--out", str(tmp_path / "o2")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: no images in")
    assert len(proc.stderr.strip().splitlines()) == 1
