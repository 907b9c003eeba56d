"""The quickstart's main job end to end, shrunk: every stage, the end-to-end rows, infer.py's
work over the synthetic val images and extra/test_images, and the results table."""
from __future__ import annotations

import json

import pytest

from _scripts import run_script


def test_quickstart_runs_every_stage_and_writes_its_outputs(tmp_path):
    out, data = tmp_path / "run", tmp_path / "data"
    tiny = [f"output_dir={out}", f"data.root={data}", "synthetic.num_train=12", "synthetic.num_val=4",
            "model.fpn_channels=16", "model.subnet_channels=16", "model.fuse_channels=16", "keypoint.input_size=64",
            "keypoint.val_input_size=96", "train.epochs=1", "train.batch_size=4", "train.num_workers=0",
            "detection.fpn_channels=16", "detection.head_convs=1", "detection.epochs=1", "prn.hidden=32",
            "prn.epochs=1", "prn.samples_per_epoch=64", "prn.batch_size=16", "infer.box_threshold=0.0",
            "detection.score_threshold=0.0", "detection.max_detections=5"]
    result = run_script("demo.py", *tiny)
    for stage in ("keypoint", "detection", "prn"):
        assert (out / stage / "best.pt").is_file(), stage
    table = (out / "results.md").read_text()
    for row in ("keypoint stage", "ceiling: training targets as heatmaps", "person boxes",
                "ceiling: ground-truth boxes", "end to end: detector + PRN", "ceiling: GT keypoints + GT boxes",
                "end-to-end, greedy grouping", "gt-keypoints-gt-boxes, greedy grouping"):
        assert row in table and row in result.stdout, row
    assert "of ceiling" in table
    records = json.loads((out / "end_to_end_metrics.json").read_text())
    stages, ablations = records["stages"], records["ablations"]
    assert {"end-to-end/greedy", "pred-keypoints-gt-boxes/prn", "gt-keypoints-gt-boxes/greedy"} <= set(ablations)
    # the ceilings are perfect inputs through the real protocol: far above chance on this world
    assert stages["keypoint_ap_gt_boxes_ceiling"] > 0.9 and stages["box_ap_ceiling"] > 0.99
    assert ablations["gt-keypoints-gt-boxes/greedy"]["AP"] > 0.5
    # every result is a number the evaluation computed, and none passes its ceiling
    for key in ("keypoint_ap_gt_boxes", "box_ap", "end_to_end_ap"):
        assert 0.0 <= stages[key] <= stages[f"{key}_ceiling"] + 1e-9, key
    for name, count in (("synthetic_val", 4), ("test_images", 2)):
        folder = out / "infer" / name
        assert len(list((folder / "json").glob("*.json"))) == count
        assert len(list((folder / "pictures").glob("*_panel.jpg"))) == count
        assert isinstance(json.loads((folder / "results.json").read_text()), list)
    assert "pictures (test_images)" in result.stdout


@pytest.mark.slow
def test_the_quickstart_model_works_on_its_own_world(tmp_path):
    """The real quickstart (configs/synthetic_small.yaml, nothing shrunk): the aims of the
    quickstart table (docs/results.md) on the synthetic val split, each below its ceiling, and
    the same AP through its ONNX export. About 5 minutes on two cores; the results do not depend
    on the machine's speed. Its figures and times are printed (``pytest -rP`` shows them)."""
    out, data = tmp_path / "run", tmp_path / "data"
    result = run_script("demo.py", f"output_dir={out}", f"data.root={data}", timeout=3600, threads=None)
    print("\n".join(line for line in result.stdout.splitlines() if line.startswith(("time:", "- "))))
    stages = json.loads((out / "end_to_end_metrics.json").read_text())["stages"]
    assert stages["keypoint_ap_gt_boxes"] >= 0.5, stages
    assert stages["box_ap"] >= 0.6, stages
    assert stages["end_to_end_ap"] >= 0.4, stages
    _export_scores_the_same(out / "prn" / "best.pt", tmp_path / "export")


@pytest.mark.slow
def test_the_openpose_quickstart_model_works_on_its_own_world(tmp_path):
    """The OpenPose family's quickstart (configs/openpose_synthetic_small.yaml, nothing shrunk):
    end-to-end AP at least 0.4 on the synthetic val split, below the ceiling of perfect maps;
    its table and pictures written; the same AP through its ONNX export. About 3 minutes on two
    cores."""
    out, data = tmp_path / "run", tmp_path / "data"
    result = run_script("demo.py", "--config", "configs/openpose_synthetic_small.yaml", f"output_dir={out}",
                        f"data.root={data}", timeout=3600, threads=None)
    print("\n".join(line for line in result.stdout.splitlines() if line.startswith(("time:", "| "))))
    record = json.loads((out / "keypoint" / "val_metrics.json").read_text())
    assert record["ceiling"]["AP"] > 0.95, record
    assert 0.4 <= record["end-to-end"]["AP"] <= record["ceiling"]["AP"], record
    assert "| openpose | hourglass |" in (out / "results.md").read_text()
    assert len(list((out / "infer" / "synthetic_val" / "pictures").glob("*_pafs.jpg"))) == 100
    assert "pictures (test_images)" in result.stdout
    _export_scores_the_same(out / "keypoint" / "best.pt", tmp_path / "export")


def _export_scores_the_same(checkpoint, out_dir):
    """A trained run's AP through its dynamic ONNX export (val_keypoint.py --runtime onnx)
    within 0.001 of the checkpoint's, on 30 val images."""
    out = out_dir / "model.onnx"
    run_script("export_onnx.py", "--checkpoint", str(checkpoint), "--out", str(out), "--dynamic", threads=None)
    config = str(checkpoint.parent / "config.yaml")
    run_script("val_keypoint.py", "--config", config, "--checkpoint", str(checkpoint),
               "--metrics-out", str(out_dir / "torch.json"), "eval.max_images=30", threads=None)
    run_script("val_keypoint.py", "--config", config, "--runtime", "onnx", "--onnx", str(out),
               "--metrics-out", str(out_dir / "onnx.json"), "eval.max_images=30", threads=None)
    ours, theirs = (json.loads((out_dir / f"{n}.json").read_text()) for n in ("onnx", "torch"))
    print(f"the ONNX export of {checkpoint.parent.name}/{checkpoint.name}: AP {ours['AP']:.4f} against the "
          f"checkpoint's {theirs['AP']:.4f} (30 val images)")
    assert theirs["AP"] > 0.3 and abs(ours["AP"] - theirs["AP"]) <= 1e-3
