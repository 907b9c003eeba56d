"""Detection stage: box AP of a perfect detector through the validation transform, frozen
means frozen (bitwise), one checkpoint format across stages, train_detection.py /
val_detection.py end to end, and clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from posenet.config import load_config
from posenet.data.transforms import transform_points
from posenet.engine.checkpoint import load_checkpoint
from posenet.stages import detection, keypoint
from posenet.stages.detection import DetectionEvaluator

from _scripts import REPO, run_script
from test_keypoint_stage import tiny_overrides

CONFIG = REPO / "configs/synthetic_small.yaml"


class _PerfectDetector(nn.Module):
    """Returns each image's ground-truth person boxes, mapped into the input like the image."""

    def __init__(self, persons):
        super().__init__()
        self.persons = persons
        self.anchor = nn.Parameter(torch.zeros(()))
        self.metas = []

    def forward(self, images, targets=None):
        return {}

    def detect(self, outputs, image_sizes, **options):
        out = []
        for meta in self.metas.pop(0):
            anns = [a for a in self.persons.annotations(meta["image_id"]) if not a.get("iscrowd", 0)]
            xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
            xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
            boxes = transform_points(meta["matrix"], xyxy.reshape(-1, 2)).reshape(-1, 4)
            out.append({"boxes": torch.from_numpy(boxes).float(), "scores": torch.linspace(1, 0.5, len(boxes))})
        return out


def test_perfect_boxes_score_box_ap_one_through_the_validation_transform(coco_mini):
    cfg = load_config(CONFIG, [f"data.root={coco_mini}", "train.num_workers=0", "eval.max_images=24"])
    evaluator = DetectionEvaluator.from_config(cfg, progress=False)
    model = _PerfectDetector(evaluator.persons)
    model.metas = [targets["meta"] for _, targets in evaluator.loader]
    metrics = evaluator(model)
    assert metrics["AP"] == pytest.approx(1.0, abs=1e-3) and metrics["AP50"] == pytest.approx(1.0, abs=1e-3)
    assert evaluator.last_results and {"image_id", "bbox", "score", "category_id"} <= set(evaluator.last_results[0])


def _keypoint_outputs(cfg, checkpoint, images):
    model = keypoint.load_model(cfg, checkpoint)
    with torch.no_grad():
        out = model(images)
    return out["heatmaps"], out["segmentation"]


def test_detection_stage_end_to_end_frozen_means_frozen(tiny_synthetic, tmp_path):
    kp_dir, det_dir = tmp_path / "kp", tmp_path / "det"
    # trainable batch norm in the keypoint stage: the detection stage must not move its statistics
    common = ["model.frozen_bn=false", "detection.fpn_channels=16", "detection.head_convs=1"]
    run_script("train_keypoint.py", "--config", str(CONFIG), *tiny_overrides(tiny_synthetic, kp_dir), "--out", str(kp_dir),
               "train.epochs=1", *common)
    init = kp_dir / "last.pt"
    det = tiny_overrides(tiny_synthetic, det_dir) + common + ["detection.epochs=2"]
    result = run_script("train_detection.py", "--config", str(CONFIG), *det, "--init", str(init), "--out", str(det_dir))
    assert "frozen: keypoint, trunk" in result.stdout + result.stderr
    for name in ("last.pt", "best.pt", "config.yaml", "metrics.jsonl"):
        assert (det_dir / name).is_file(), name
    history = [json.loads(line) for line in (det_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2 and all("AP" in r and "train_loss_cls" in r for r in history)
    assert history[1]["train_loss_detection"] < history[0]["train_loss_detection"]

    before, after = load_checkpoint(init)["model"], load_checkpoint(det_dir / "last.pt")["model"]
    shared = [k for k in before if not k.startswith(("detection_fpn.", "detection_head."))]
    assert shared and all(torch.equal(before[k], after[k]) for k in shared)  # weights and BN statistics
    assert any(k.startswith("detection_head.") for k in after)

    cfg = load_config(CONFIG, tiny_overrides(tiny_synthetic, tmp_path / "x") + common)
    images = torch.randint(0, 256, (2, 3, 96, 80), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for a, b in zip(_keypoint_outputs(cfg, init, images), _keypoint_outputs(cfg, det_dir / "last.pt", images)):
        assert torch.equal(a, b)

    metrics_out, results_out = tmp_path / "box_metrics.json", tmp_path / "boxes.json"
    result = run_script("val_detection.py", "--config", str(CONFIG), *det, "--checkpoint", str(det_dir / "best.pt"),
                        "--metrics-out", str(metrics_out), "--results-out", str(results_out))
    assert "protocol:" in result.stdout and "person box AP" in result.stdout
    record = json.loads(metrics_out.read_text())
    assert {"AP", "AP50", "AP75", "APS", "APM", "APL", "iou_type", "protocol", "checkpoint"} <= set(record)
    assert isinstance(json.loads(results_out.read_text()), list)
    # one checkpoint format: val_keypoint reads the detection stage's checkpoint too
    run_script("val_keypoint.py", "--config", str(CONFIG), *det, "--checkpoint", str(det_dir / "last.pt"))


def test_detection_stage_errors_are_one_clear_line(tiny_synthetic, tmp_path):
    cfg = load_config(CONFIG, tiny_overrides(tiny_synthetic, tmp_path / "run"))
    with pytest.raises(Exception, match="--init"):
        detection.train(cfg)
    model = detection.prepare_model(cfg, 17, None)
    torch.save({"trunk.conv1.weight": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(Exception, match="does not fit the model") as info:
        detection.load_init(model, tmp_path / "foreign.pt")
    assert "\n" not in str(info.value)
    bad = load_config(CONFIG, tiny_overrides(tiny_synthetic, tmp_path / "run") + ["detection.freeze=[trunk,head]"])
    with pytest.raises(Exception, match="detection.freeze"):
        detection.prepare_model(bad, 17, None)
    # a keypoint-stage checkpoint asked for boxes
    torch.save({"format": "posenet-checkpoint", "model": detection.prepare_model(cfg, 17, None).state_dict()},
               tmp_path / "full.pt")
    state = load_checkpoint(tmp_path / "full.pt")["model"]
    stripped = {k: v for k, v in state.items() if not k.startswith("detection_")}
    torch.save({"format": "posenet-checkpoint", "model": stripped}, tmp_path / "kp_only.pt")
    with pytest.raises(Exception, match="no detection branch"):
        detection.load_model(cfg, tmp_path / "kp_only.pt")


def test_frozen_parts_stay_in_eval_mode_and_out_of_the_optimizer(tiny_synthetic, tmp_path):
    cfg = load_config(CONFIG, tiny_overrides(tiny_synthetic, tmp_path / "run") + ["model.frozen_bn=false"])
    model = detection.prepare_model(cfg, 17, None)
    model.train()
    assert not model.trunk.training and not model.keypoint_subnet.training and model.detection_head.training
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"detection_fpn", "detection_head"}
    assert model.train_tasks == {"detection"}
    unfrozen = load_config(CONFIG, tiny_overrides(tiny_synthetic, tmp_path / "run") + ["detection.freeze=[trunk]"])
    assert detection.prepare_model(unfrozen, 17, None).train_tasks == {"detection", "keypoints"}
