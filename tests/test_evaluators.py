"""The four evaluators built from plain Python keywords (no config), what ``config.build``
passes them from a config, and what they share (``evaluation.base.Evaluator``): the cut to
``max_images``, ``val_seconds``, the model's mode restored, ``metrics_record``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from posenet.config import build, load_config
from posenet.data.coco import CocoPersons
from posenet.data.dataset import CocoKeypointDataset
from posenet.data.keypoints import OPENPOSE_18
from posenet.errors import ConfigError
from posenet.evaluation.base import DatasetEvaluator, ImageEvaluator
from posenet.inference.groupings import GreedyGrouping
from posenet.inference.predictor import Predictor
from posenet.stages.detection import DetectionEvaluator
from posenet.stages.end_to_end import EndToEndEvaluator
from posenet.stages.keypoint import KeypointEvaluator, TargetHeatmaps
from posenet.stages.prn import PrnEvaluator

REPO = Path(__file__).resolve().parents[1]
KEYPOINT_RECORD = {"AP", "AP50", "AP75", "APM", "APL", "AR", "protocol", "checkpoint"}
BOX_OPTIONS = dict(score_threshold=0.05, topk_per_level=100, nms_threshold=0.5, max_detections=20)


@pytest.fixture(scope="module")
def val(coco_mini):
    return CocoPersons(coco_mini, "val2017")


def _cfg(coco_mini, *overrides):
    return load_config(REPO / "configs/coco-mini.yaml", [f"data.root={coco_mini}", "train.num_workers=0", *overrides])


class _ModeRecorder(TargetHeatmaps):
    def __init__(self):
        super().__init__()
        self.modes = []

    def forward(self, images, targets=None):
        self.modes.append(self.training)
        return super().forward(images, targets)


def test_dataset_evaluators_from_plain_keywords(val):
    dataset = CocoKeypointDataset(val, input_size=(256, 256), train=False)
    keypoints = KeypointEvaluator(dataset, batch_size=2, max_images=3, box_margin=0.2, progress=False)
    boxes = DetectionEvaluator(dataset, BOX_OPTIONS, batch_size=2, max_images=3, progress=False)
    for evaluator in (keypoints, boxes):
        assert isinstance(evaluator, DatasetEvaluator)
        assert evaluator.image_ids == list(val.image_ids[:3]) and len(evaluator.dataset) == 3
        assert "(3 images)" in evaluator.protocol()
    model = _ModeRecorder().train()
    metrics = keypoints(model)
    assert model.modes == [False, False] and model.training  # eval mode inside, restored after
    assert {"AP", "PCK", "val_loss", "val_seconds"} <= set(metrics) and keypoints.last_results
    record = keypoints.metrics_record(metrics, "run/best.pt")
    assert set(record) == KEYPOINT_RECORD | {"PCK", "val_loss"} and record["checkpoint"] == "run/best.pt"
    assert record["protocol"] == keypoints.protocol() and "margin 20%" in record["protocol"]
    assert boxes.metrics_record({"AP": 0.5, "APS": 0.1, "PCK": 1.0}, "c.pt") == {
        "AP": 0.5, "APS": 0.1, "iou_type": "bbox", "protocol": boxes.protocol(), "checkpoint": "c.pt"}


def test_image_evaluators_from_plain_keywords(val):
    from _stub_models import ColourCodedNet

    prn = PrnEvaluator(val, GreedyGrouping(margin=0.2), val.keypoint_layout, keypoint_threshold=0.05, max_images=4,
                       progress=False)
    predictor = Predictor(ColourCodedNet(), val.keypoint_layout, GreedyGrouping(), input_size=128)
    e2e = EndToEndEvaluator(predictor, val, "gt-keypoints-gt-boxes", max_images=4, progress=False)
    for evaluator in (prn, e2e):
        assert isinstance(evaluator, ImageEvaluator) and evaluator.image_ids == list(val.image_ids[:4])
        metrics = evaluator()  # no model: greedy needs none; the predictor has its own
        assert 0.0 <= metrics["AP"] <= 1.0 and metrics["val_seconds"] > 0 and evaluator.last_results
        assert {r["image_id"] for r in evaluator.last_results} <= set(evaluator.image_ids)
        assert "(4 images)" in evaluator.protocol()
    assert set(prn.metrics_record(prn(), "c.pt")) == KEYPOINT_RECORD
    record = e2e.metrics_record(e2e(), "c.pt")
    assert set(record) == KEYPOINT_RECORD | {"decode_ms", "mode", "grouping"}
    assert record["mode"] == "gt-keypoints-gt-boxes" and record["grouping"] == "greedy"


def test_build_passes_the_config_keys(val, coco_mini):
    cfg = _cfg(coco_mini, "eval.max_images=2", "eval.box_margin=0.3", "eval.flip=true", "eval.batch_size=1",
               "infer.keypoint_threshold=0.2", "infer.grouping=greedy")
    dataset = CocoKeypointDataset(val, input_size=(128, 128), train=False)
    keypoints = KeypointEvaluator.from_config(cfg, dataset, progress=False)
    assert (keypoints.box_margin, keypoints.flip, keypoints.loader.batch_size, len(keypoints.image_ids)) == (0.3, True, 1, 2)
    boxes = DetectionEvaluator.from_config(cfg, dataset, progress=False)
    assert boxes.options == build.detection_options(cfg) and len(boxes.image_ids) == 2
    prn = PrnEvaluator.from_config(cfg, "greedy", progress=False, max_images=3)
    assert prn.grouping.name == "greedy" and prn.keypoint_threshold == 0.2 and len(prn.image_ids) == 3
    assert len(PrnEvaluator.from_config(cfg, "greedy", progress=False).image_ids) == 2
    from _stub_models import ColourCodedNet

    predictor = Predictor.from_config(cfg, ColourCodedNet())
    e2e = EndToEndEvaluator.from_config(cfg, predictor, "gt-keypoints-gt-boxes", progress=False)
    assert e2e.mode == "gt-keypoints-gt-boxes" and e2e.persons.split == cfg.data.val_split and len(e2e.image_ids) == 2
    scenes = build.prn_scenes(cfg, val)
    assert scenes.persons is val and len(scenes) == cfg.prn.samples_per_epoch
    with pytest.raises(ConfigError, match="differ from data.keypoints.names"):
        build.same_keypoints(val, OPENPOSE_18.layout)


def test_image_evaluators_read_the_stored_pixel_frame_and_skip_unreadable_images(tmp_path):
    """COCO's annotations refer to the stored pixels: EXIF orientation is not applied (unlike
    infer.py), and an unreadable image is one warning and counted, not an error."""
    from PIL import Image

    from posenet.evaluation.base import ImageEvaluator

    stored = np.full((40, 60, 3), 40, np.uint8)
    stored[:10, :10] = (250, 40, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    Image.fromarray(stored).save(tmp_path / "1.jpg", exif=exif, quality=95)
    (tmp_path / "2.jpg").write_bytes(b"not an image")

    class Persons:
        image_ids = [1, 2]

        @staticmethod
        def image_path(image_id):
            return tmp_path / f"{image_id}.jpg"

    warnings = []
    evaluator = ImageEvaluator(Persons(), log=warnings.append)
    rgb = evaluator.stored_rgb(1)
    assert rgb.shape == (40, 60, 3) and rgb[:10, :10, 0].mean() > 200 and rgb[:10, :10, 2].mean() < 100
    assert evaluator.stored_rgb(2) is None and evaluator.skipped == 1
    assert len(warnings) == 1 and "2.jpg" in warnings[0]
