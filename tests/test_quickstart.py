"""The quickstart's main job end to end, shrunk: every stage, the end-to-end rows, infer.py's
work over the synthetic val images and extra/test_images, and the results table."""
from __future__ import annotations

import json

import pytest

from test_keypoint_stage import run_script


@pytest.mark.slow
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
    for row in ("keypoint stage", "person boxes", "end-to-end, prn grouping", "end-to-end, greedy grouping",
                "gt-keypoints-gt-boxes, prn grouping", "gt-keypoints-gt-boxes, greedy grouping"):
        assert row in table and row in result.stdout, row
    records = json.loads((out / "end_to_end_metrics.json").read_text())
    assert {"end-to-end/prn", "gt-keypoints-gt-boxes/greedy"} <= set(records)
    assert records["gt-keypoints-gt-boxes/greedy"]["AP"] > 0.5  # ground truth grouped: far above chance
    for name, count in (("synthetic_val", 4), ("test_images", 2)):
        folder = out / "infer" / name
        assert len(list((folder / "json").glob("*.json"))) == count
        assert len(list((folder / "pictures").glob("*_panel.jpg"))) == count
        assert isinstance(json.loads((folder / "results.json").read_text()), list)
    assert "pictures (test_images)" in result.stdout
