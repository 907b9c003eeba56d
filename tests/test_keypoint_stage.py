"""Keypoint stage: GT-box grouping, flip-back, the COCO AP evaluator with a perfect model,
heatmap pictures, and train_keypoint.py / val_keypoint.py end to end (outputs, exact resume,
two gloo processes against one)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from posenet.codecs import KeypointHeatmapCodec
from posenet.config import load_config
from posenet.engine.checkpoint import load_checkpoint
from posenet.inference import keypoints_in_boxes
from posenet.stages.keypoint import KeypointEvaluator
from posenet.vis import heatmap_overlay, heatmap_panels

from _scripts import REPO, run_script


# ----------------------------------------------------------------------------- grouping


def _person(x, y, K=3):
    """K keypoints in a vertical line starting at (x, y), all labelled."""
    return [[x, y + 12 * k, 2] for k in range(K)]


def test_keypoints_in_boxes_decode_each_persons_own_keypoints():
    codec = KeypointHeatmapCodec((96, 128), stride=4, sigma=3)
    people = np.array([_person(20.3, 10.6), _person(90.8, 30.2)], dtype=np.float64)
    heat = torch.from_numpy(codec.encode(people))
    boxes = torch.tensor([[10.0, 5, 32, 40], [80, 25, 102, 60]])
    for exclusive in (False, True):
        xy, scores = keypoints_in_boxes(heat, boxes, codec, margin=0.1, exclusive=exclusive)
        assert xy.shape == (2, 3, 2) and scores.shape == (2, 3)
        assert torch.allclose(xy, torch.from_numpy(people[..., :2]).float(), atol=1.0)
        assert (scores > 0.8).all()


def test_exclusive_grouping_gives_overlapping_boxes_their_own_peaks():
    codec = KeypointHeatmapCodec((96, 128), stride=4, sigma=3)
    # person B's keypoints are stronger and lie inside A's box too, near its edge
    a, b = np.array(_person(30.0, 20.0)), np.array(_person(52.0, 24.0))
    heat = torch.from_numpy(codec.encode(a[None])) * 0.8
    heat = torch.maximum(heat, torch.from_numpy(codec.encode(b[None])))
    boxes = torch.tensor([[22.0, 12, 56, 56], [44, 16, 72, 60]])
    plain, _ = keypoints_in_boxes(heat, boxes, codec, margin=0.1, exclusive=False)
    assert torch.allclose(plain[0], torch.from_numpy(b[:, :2]).float(), atol=1.0)  # A took B's peaks
    xy, scores = keypoints_in_boxes(heat, boxes, codec, margin=0.1, exclusive=True)
    assert torch.allclose(xy[0], torch.from_numpy(a[:, :2]).float(), atol=1.0)
    assert torch.allclose(xy[1], torch.from_numpy(b[:, :2]).float(), atol=1.0)
    assert (scores[0] > 0.5).all() and (scores[0] <= 0.8).all() and (scores[1] > scores[0]).all()


def test_exclusive_grouping_falls_back_to_the_best_cell_when_peaks_run_out():
    codec = KeypointHeatmapCodec((64, 64), stride=4, sigma=3)
    one = np.array(_person(30.0, 10.0))
    heat = torch.from_numpy(codec.encode(one[None]))
    boxes = torch.tensor([[20.0, 0, 40, 40], [22, 2, 42, 42]])  # two boxes, one person's peaks
    xy, scores = keypoints_in_boxes(heat, boxes, codec, exclusive=True)
    assert torch.allclose(xy[0], xy[1]) and torch.allclose(xy[0], torch.from_numpy(one[:, :2]).float(), atol=1.0)
    empty_xy, empty_scores = keypoints_in_boxes(heat, torch.zeros(0, 4), codec)
    assert empty_xy.shape == (0, 3, 2) and empty_scores.shape == (0, 3)


# ----------------------------------------------------------------------------- pictures


def test_heatmap_overlay_and_panels():
    image = np.full((32, 48, 3), 100, np.uint8)
    heat = np.zeros((2, 8, 12), np.float32)
    heat[1, 4, 6] = 1.0
    out = heatmap_overlay(image, heat)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (out[0, 0] == 100).all()  # no heat: the image shows through
    assert not (out[17, 25] == 100).all()
    with pytest.raises(ValueError, match="uint8"):
        heatmap_overlay(image.astype(np.float32), heat)
    images = torch.full((3, 3, 32, 48), 100, dtype=torch.uint8)
    panels = heatmap_panels(images, torch.zeros(3, 2, 8, 12), torch.from_numpy(heat)[None].repeat(3, 1, 1, 1), max_images=2)
    assert panels.shape == (2, 3, 32, 3 * 48) and panels.dtype == torch.uint8


# ----------------------------------------------------------------------------- evaluator


class PerfectModel(nn.Module):
    """Predicts the targets it is given: the evaluator's grouping and geometry alone decide AP."""

    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, images, targets=None):
        return {"heatmaps": targets["heatmaps"], "segmentation": targets["segmentation"],
                "losses": {"loss": self.p * 0}}


def test_perfect_heatmaps_score_high_ap_on_coco_mini_val(coco_mini):
    cfg = load_config(REPO / "configs/coco-mini.yaml", [f"data.root={coco_mini}", "train.num_workers=0"])
    evaluator = KeypointEvaluator.from_config(cfg, progress=False)
    metrics = evaluator(PerfectModel())
    # Ground-truth keypoints written as results score AP 1.0 (test_coco_eval); through heatmaps,
    # GT boxes and exclusive peaks the perfect model loses only the persons its grouping mixes up.
    assert metrics["AP"] > 0.8 and metrics["AP50"] > 0.9
    assert metrics["val_loss"] == 0.0
    assert evaluator.last_results and {"image_id", "category_id", "keypoints", "score"} <= set(evaluator.last_results[0])
    plain = KeypointEvaluator.from_config(load_config(REPO / "configs/coco-mini.yaml", [
        f"data.root={coco_mini}", "train.num_workers=0", "eval.exclusive_peaks=false"]), progress=False)
    assert plain(PerfectModel())["AP"] < metrics["AP"]


# ----------------------------------------------------------------------------- scripts


def tiny_overrides(root, out) -> list[str]:
    return [f"data.root={root}", f"output_dir={out}", "model.backbone_depth=18", "model.pretrained=none",
            "model.frozen_bn=true", "model.fpn_channels=16", "model.subnet_channels=16", "model.fuse_channels=16",
            "keypoint.input_size=64", "keypoint.val_input_size=96", "train.batch_size=4", "train.num_workers=0",
            "train.optimizer=adam", "train.lr=1e-3", "train.schedule=cosine", "train.log_every=1",
            "train.visualize_every=2", "train.eval_every=1", "eval.batch_size=4"]


def weights(path) -> dict:
    return load_checkpoint(path)["model"]


def test_train_then_validate_writes_everything_and_resume_is_exact(tiny_synthetic, tmp_path):
    cfg = REPO / "configs/synthetic_small.yaml"
    straight, split = tmp_path / "straight", tmp_path / "split"
    # a schedule that does not depend on train.epochs, which is what the split run changes to stop early
    constant = ["train.schedule=none"]
    run_script("train_keypoint.py", "--config", str(cfg), *tiny_overrides(tiny_synthetic, straight), "--out", str(straight),
               "train.epochs=2", *constant)
    for name in ("last.pt", "best.pt", "config.yaml", "version.txt", "metrics.jsonl", "log.txt"):
        assert (straight / name).is_file(), name
    events = list((straight / "tb").glob("events.out.tfevents.*"))
    assert events and any(b"vis/heatmaps" in e.read_bytes() for e in events)
    history = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2 and all("AP" in r and "val_loss" in r for r in history)

    # stop after one epoch, resume to two: the same weights as running straight through
    run_script("train_keypoint.py", "--config", str(cfg), *tiny_overrides(tiny_synthetic, split), "--out", str(split), "train.epochs=1",
               *constant)
    run_script("train_keypoint.py", "--config", str(cfg), *tiny_overrides(tiny_synthetic, split), "--out", str(split), "train.epochs=2",
               *constant, "--resume")
    a, b = weights(straight / "last.pt"), weights(split / "last.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    metrics_out, results_out = tmp_path / "metrics.json", tmp_path / "results.json"
    result = run_script("val_keypoint.py", "--config", str(cfg), *tiny_overrides(tiny_synthetic, tmp_path / "val"),
                        "--checkpoint", str(straight / "last.pt"), "--flip", "--metrics-out", str(metrics_out),
                        "--results-out", str(results_out))
    assert "protocol:" in result.stdout and "flip on" in result.stdout
    metrics = json.loads(metrics_out.read_text())
    assert {"AP", "AP50", "AP75", "APM", "APL", "AR", "val_loss", "protocol", "checkpoint"} <= set(metrics)
    results = json.loads(results_out.read_text())
    assert isinstance(results, list) and results and len(results[0]["keypoints"]) == 51
    # --flip changes what is evaluated: the same checkpoint without it gives other keypoints
    plain_out = tmp_path / "plain_results.json"
    run_script("val_keypoint.py", "--config", str(cfg), *tiny_overrides(tiny_synthetic, tmp_path / "val_plain"),
               "--checkpoint", str(straight / "last.pt"), "--results-out", str(plain_out))
    plain = json.loads(plain_out.read_text())
    assert len(plain) == len(results)
    assert any(p["keypoints"] != r["keypoints"] for p, r in zip(plain, results))


def test_mismatched_checkpoint_is_one_clear_line(tiny_synthetic, tmp_path):
    cfg = REPO / "configs/synthetic_small.yaml"
    run_script("train_keypoint.py", "--config", str(cfg), *tiny_overrides(tiny_synthetic, tmp_path / "run"), "--out", str(tmp_path / "run"), "train.epochs=1")
    result = run_script("val_keypoint.py", "--config", cfg, *tiny_overrides(tiny_synthetic, tmp_path / "val"),
                        "model.fpn_channels=32", "--checkpoint", tmp_path / "run" / "last.pt", check=False)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "last.pt" in lines[0]


def test_two_gloo_processes_match_one_process(tiny_synthetic, tmp_path):
    """Same global batch (2 x 2 against 1 x 4), frozen batch norm: the same training. SGD, whose
    step is proportional to the gradient: Adam's step is about lr wherever a gradient is near
    zero, so a rounding difference there can flip it by a whole step (3e-4 measured)."""
    cfg = REPO / "configs/synthetic_small.yaml"
    common = ["train.epochs=2", "train.optimizer=sgd", "train.lr=1e-5", "eval.max_images=2"]
    run_script("train_keypoint.py", "--config", str(cfg), *tiny_overrides(tiny_synthetic, tmp_path / "one"), "--out", str(tmp_path / "one"), *common)
    run_script("train_keypoint.py", "--config", str(cfg), *tiny_overrides(tiny_synthetic, tmp_path / "two"), "--out", str(tmp_path / "two"), *common,
               "train.batch_size=2", torchrun=2)
    one, two = weights(tmp_path / "one" / "last.pt"), weights(tmp_path / "two" / "last.pt")
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-3, atol=1e-4, msg=name)
    h1 = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    h2 = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in h2] == pytest.approx([r["train_loss"] for r in h1], rel=1e-3)
    assert h1[-1]["train_loss"] < h1[0]["train_loss"]  # it did train


class ShiftedHeatmaps(nn.Module):
    """The targets moved by ``cells`` heatmap cells to the right."""

    def __init__(self, cells: int):
        super().__init__()
        self.p, self.cells = nn.Parameter(torch.zeros(())), cells

    def forward(self, images, targets=None):
        heat = torch.roll(targets["heatmaps"], self.cells, dims=-1)
        return {"heatmaps": heat, "segmentation": targets["segmentation"], "losses": {"loss": self.p * 0}}


def test_pck_counts_keypoints_within_a_tenth_of_the_person_size(coco_mini):
    from posenet.stages.keypoint import TargetHeatmaps

    cfg = load_config(REPO / "configs/coco-mini.yaml", [f"data.root={coco_mini}", "train.num_workers=0"])
    evaluator = KeypointEvaluator.from_config(cfg, progress=False)
    perfect = evaluator(TargetHeatmaps())["PCK"]
    assert 0.85 < perfect <= 1.0
    # 8 cells = 32 input px at 480: beyond 0.1 sqrt(area) for every but the largest persons
    shifted = evaluator(ShiftedHeatmaps(8))["PCK"]
    assert shifted < 0.5 * perfect
    with pytest.raises(ValueError, match="needs the targets"):
        TargetHeatmaps()(torch.zeros(1, 3, 8, 8))
