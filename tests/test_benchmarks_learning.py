"""The learning proofs and the training-speed benchmark: ``benchmark.py overfit`` memorises
real COCO images through every stage (AP beside each ceiling), ``benchmark.py train`` times
the speed options of a config."""
from __future__ import annotations

import json

import pytest

from _scripts import REPO, run_script
from posenet.stages.keypoint import KeypointEvaluator


def test_overfit_config_trains_on_the_evaluation_inputs(coco_mini):
    from posenet.config import build, load_config

    cfg = load_config(REPO / "configs/overfit_coco_mini.yaml", [f"data.root={coco_mini}", "data.first_images=3"])
    train = build.keypoint_dataset(cfg, cfg.data.train_split, train=True)
    val = build.keypoint_dataset(cfg, cfg.data.val_split, train=False)
    assert len(train) == len(val) == 3 and not train.train
    for i in range(3):
        (image_t, t), (image_v, v) = train[i], val[i]
        assert (image_t == image_v).all() and (t["heatmaps"] == v["heatmaps"]).all()
        assert (t["meta"]["matrix"] == v["meta"]["matrix"]).all()


def test_target_heatmaps_measure_the_grouping_ceiling(coco_mini):
    from posenet.config import load_config
    from posenet.stages import keypoint

    cfg = load_config(REPO / "configs/overfit_coco_mini.yaml", [f"data.root={coco_mini}", "data.first_images=4"])
    metrics = KeypointEvaluator.from_config(cfg, progress=False)(keypoint.TargetHeatmaps())
    assert 0.8 < metrics["AP"] <= 1.0 and metrics["val_loss"] == 0.0


OVERFIT_KEYS = {"keypoint_ap_gt_boxes", "keypoint_ap_gt_boxes_ceiling", "box_ap", "box_ap_medium_large",
                "end_to_end_ap", "end_to_end_ap_ceiling", "images", "minutes"}


def test_overfit_benchmark_memorises_two_real_images_through_every_stage(coco_mini, tmp_path):
    """The overfit proof shrunk to seconds: two images at 128 px, a 32-channel model, fewer
    steps. Every stage must still memorise them (a stage that cannot learn scores near zero);
    the proof at the recipe's size is the slow test below."""
    metrics_file = tmp_path / "overfit.json"
    result = run_script("benchmark.py", "overfit", "--images", "2", "--out", tmp_path / "run",
                        "--metrics-out", metrics_file, f"--root={coco_mini}", "--markdown-out", tmp_path / "overfit.md",
                        "keypoint.val_input_size=128", "train.batch_size=1", "train.epochs=24", "train.eval_every=24",
                        "train.checkpoint_every=24",
                        "detection.epochs=40", "prn.epochs=1", "prn.samples_per_epoch=512",
                        "model.fpn_channels=32", "model.subnet_channels=32", "model.fuse_channels=32",
                        "detection.fpn_channels=32", threads=2)
    m = json.loads(metrics_file.read_text())
    assert set(m) == OVERFIT_KEYS and m["images"] == 2
    assert m["keypoint_ap_gt_boxes"] >= 0.8 * m["keypoint_ap_gt_boxes_ceiling"], m
    assert m["box_ap_medium_large"] >= 0.6, m
    assert m["end_to_end_ap"] >= 0.3 * m["end_to_end_ap_ceiling"], m
    assert "of its ceiling" in result.stdout and "| keypoint stage" in (tmp_path / "overfit.md").read_text()


@pytest.mark.slow
def test_overfit_benchmark_memorises_sixteen_real_images_through_every_stage(coco_mini, tmp_path):
    """The learning proof on real images (docs/results.md): the recipe of
    configs/overfit_coco_mini.yaml on 16 coco-mini images, each stage within reach of its
    ceiling. Measured on the 2-core CPU (15 min): keypoint 0.93 of its ceiling, box AP of the
    medium and large persons 0.884 (the table's target 0.9 is not met), end to end 0.86 of its
    ceiling; the bounds are the table's
    targets less 0.02 for another machine's float rounding."""
    metrics_file = tmp_path / "overfit.json"
    # all cores and a generous limit: the result does not depend on the speed, only the time does
    result = run_script("benchmark.py", "overfit", "--images", "16", "--out", tmp_path / "run",
                        "--metrics-out", metrics_file, f"--root={coco_mini}", timeout=3600, threads=None)
    m = json.loads(metrics_file.read_text())
    print(result.stdout[-3000:])
    assert set(m) == OVERFIT_KEYS and m["images"] == 16
    assert m["keypoint_ap_gt_boxes"] >= 0.88 * m["keypoint_ap_gt_boxes_ceiling"], m
    assert m["box_ap_medium_large"] >= 0.88, m
    assert m["end_to_end_ap"] >= 0.78 * m["end_to_end_ap_ceiling"], m
    assert "of its ceiling" in result.stdout


OPENPOSE_OVERFIT_KEYS = {"end_to_end_ap", "end_to_end_ap_ceiling", "images", "minutes"}


def test_openpose_overfit_benchmark_memorises_a_real_image(coco_mini, tmp_path):
    """The OpenPose family's overfit proof shrunk to seconds: the first image at 128 px, a
    64-channel hourglass, 300 steps in fp32 (measured AP 0.700 of its ceiling 1.000 on an AVX2
    CPU, 0.800 on an AVX-512 one with native bf16, where the recipe's ``train.amp: auto`` would
    train in bf16 and reach 0.400; an untrained network scores 0). Its table goes into its own
    block."""
    metrics_file = tmp_path / "overfit.json"
    result = run_script("benchmark.py", "overfit", "--config", REPO / "configs/overfit_openpose_coco_mini.yaml",
                        "--images", "1", "--out", tmp_path / "run", "--metrics-out", metrics_file,
                        f"--root={coco_mini}", "--markdown-out", tmp_path / "overfit.md",
                        "keypoint.val_input_size=128", "train.batch_size=1", "train.epochs=300", "train.eval_every=300",
                        "train.checkpoint_every=300", "openpose.channels=64", "train.amp=none", threads=2)
    m = json.loads(metrics_file.read_text())
    assert set(m) == OPENPOSE_OVERFIT_KEYS and m["images"] == 1
    assert m["end_to_end_ap_ceiling"] >= 0.9 and m["end_to_end_ap"] >= 0.5 * m["end_to_end_ap_ceiling"], m
    table = (tmp_path / "overfit.md").read_text()
    assert "| end to end: hourglass + PAF grouping |" in table and "configs/overfit_openpose_coco_mini.yaml" in table
    assert "of its ceiling" in result.stdout and "keypoint AP (GT boxes)" not in table


@pytest.mark.slow
def test_openpose_overfit_benchmark_memorises_sixteen_real_images(coco_mini, tmp_path):
    """The OpenPose family's learning proof on real images (docs/results.md): the recipe of
    configs/overfit_openpose_coco_mini.yaml on the same 16 coco-mini images, end to end beside
    its ceiling (the ground truth's maps through the same grouping). Measured at 320 px on a
    2-core AVX-512 CPU training in bf16 (13.1 min): 0.711 = 0.94 of the ceiling 0.757; the bound
    is the aim, 0.9 (at 256 px it was 0.83: docs/results.md)."""
    metrics_file = tmp_path / "overfit.json"
    result = run_script("benchmark.py", "overfit", "--config", REPO / "configs/overfit_openpose_coco_mini.yaml",
                        "--images", "16", "--out", tmp_path / "run", "--metrics-out", metrics_file,
                        f"--root={coco_mini}", timeout=3600, threads=None)
    m = json.loads(metrics_file.read_text())
    print(result.stdout[-3000:])
    assert set(m) == OPENPOSE_OVERFIT_KEYS and m["images"] == 16
    assert m["end_to_end_ap"] >= 0.90 * m["end_to_end_ap_ceiling"], m


def test_train_benchmark_times_every_variant_and_ends_with_the_quickstart_line(tiny_synthetic, tmp_path):
    result = run_script("benchmark.py", "train", "--steps", "2", "--warmup", "1", "--threads",
                        "--markdown-out", str(tmp_path / "train.md"), "--config", str(REPO / "configs/synthetic_small.yaml"),
                        f"data.root={tiny_synthetic}", "keypoint.val_input_size=64", "train.batch_size=2",
                        "train.num_workers=0", "model.fpn_channels=16", "model.subnet_channels=16",
                        "model.fuse_channels=16")
    table = (tmp_path / "train.md").read_text()
    for row in ("| fp32 |", "fp32, channels_last", "bf16 autocast", "quickstart setting"):
        assert row in table, row
    last = [line for line in result.stdout.splitlines() if line.strip()][-3:]
    assert any(line.startswith("quickstart setting: ") and "× fp32" in line for line in last), last


def test_learning_benchmark_draws_both_worlds_curves(tmp_path):
    import cv2

    plot = tmp_path / "curves.png"
    tiny = [f"data.root={tmp_path / 'data' / 'synthetic'}", "synthetic.num_train=8", "synthetic.num_val=3",
            "model.fpn_channels=16", "model.subnet_channels=16", "model.fuse_channels=16", "keypoint.input_size=64",
            "keypoint.val_input_size=96", "train.batch_size=2", "train.num_workers=0", "eval.batch_size=4"]
    result = run_script("benchmark.py", "learning", "--budget-minutes", "0.05", "--out", str(tmp_path / "runs"),
                        "--plot", str(plot), "--markdown-out", str(tmp_path / "learning.md"), *tiny)
    table = (tmp_path / "learning.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| quickstart |") or line.startswith("| hard |")]
    assert {r.split("|")[1].strip() for r in rows} == {"quickstart", "hard"}
    for row in rows:
        ap, pck = (float(v) for v in row.strip("|").split("|")[-2:])
        assert 0.0 <= ap <= 1.0 and 0.0 <= pck <= 1.0
    image = cv2.imread(str(plot))
    assert image is not None and image.shape[0] > 100 and "learning curves" in result.stdout
    assert (tmp_path / "data" / "synthetic_hard" / "synthetic.yaml").is_file()  # the hard world was written
