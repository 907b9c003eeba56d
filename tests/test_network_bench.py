"""The network benchmark (posenet.bench.network): the port's reconstructed decoding
picks what a box-by-box PRN would, interleaved timing, and a tiny run of every fp32 row with
its table (the outputs of the fp32 variants equal eager fp32's)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from posenet.codecs.prn_grid import encode_peaks
from posenet.config import load_config
from posenet.models.prn import PoseResidualNetwork
from posenet.bench.network import (benchmark_network, fastest_equal, format_network_table,
                                             interleaved_timing, port_prn_decoding)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_port_decoding_takes_per_box_the_peak_of_the_largest_window_sum():
    torch.manual_seed(0)
    prn = PoseResidualNetwork(num_keypoints=3, height=8, width=6, hidden=8)
    boxes = np.array([[0.0, 0.0, 40.0, 60.0], [30.0, 10.0, 70.0, 70.0]])
    xy = np.array([[10.0, 10.0], [20.0, 40.0], [35.0, 30.0], [60.0, 50.0], [12.0, 50.0]])
    types = np.array([0, 0, 1, 1, 2])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    keypoints, kp_scores = port_prn_decoding(prn, boxes, xy, types, scores, margin=0.1, window=3)
    # the reference by hand: the dense PRN of each box's grid, then the window sums
    grids = encode_peaks(boxes, xy, types, None, 3, 0.1, 8, 6, 1.0)
    with torch.no_grad():
        out = prn.eval()(torch.from_numpy(grids)).numpy()
    for b, box in enumerate(boxes):
        half = (box[2:] - box[:2]) * 0.6
        centre = (box[:2] + box[2:]) / 2
        uv = np.floor((xy - (centre - half)) * np.array([6, 8]) / (2 * half)).astype(int)
        for k in range(3):
            inside = [p for p in np.flatnonzero(types == k) if 0 <= uv[p, 0] < 6 and 0 <= uv[p, 1] < 8]
            if not inside:
                assert kp_scores[b, k] == 0
                continue
            sums = [out[b, k, max(uv[p, 1] - 1, 0):uv[p, 1] + 2, max(uv[p, 0] - 1, 0):uv[p, 0] + 2].sum()
                    for p in inside]
            best = inside[int(np.argmax(sums))]
            assert np.allclose(keypoints[b, k], xy[best]) and kp_scores[b, k] == scores[best]


def test_interleaved_timing_runs_every_call_in_rounds():
    order = []
    timings = interleaved_timing({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3,
                                 warmup=1)
    assert order == ["a", "b"] * 4
    assert {name: t.runs for name, t in timings.items()} == {"a": 3, "b": 3}


def test_a_tiny_run_and_its_table(repo_root):
    cfg = load_config(repo_root / "configs" / "synthetic_small.yaml", ["model.backbone_depth=18"])
    result = benchmark_network(cfg, input_size=64, threads=1, people=4, repeats=1,
                               skip=("bf16", "compile", "onnxruntime"), log=lambda line: None)
    rows = result["rows"]
    assert list(rows) == ["eager", "folded", "channels_last", "folded+channels_last", "onnxruntime-int8"]
    assert rows["eager"].max_abs_diff == 0.0
    fp32 = [r for r in rows.values() if r.fp32]
    assert len(fp32) == 4 and all(r.max_abs_diff <= 1e-4 * result["scale"] for r in fp32)
    assert not rows["onnxruntime-int8"].fp32 and 0 < rows["onnxruntime-int8"].max_abs_diff
    assert set(result["decoding"]) == {"ours", "port"}
    table = format_network_table(result, "python scripts/benchmark.py network")
    assert fastest_equal(result) in rows and fastest_equal(result) != "onnxruntime-int8"
    assert "| eager fp32 (the port's way) |" in table and "faster at equal backbone" in table
    int8_row = next(line for line in table.splitlines() if line.startswith("| onnxruntime int8 |"))
    assert "equal outputs" not in int8_row and "calibrated on 8 random images" in int8_row
    assert "With the int8 network" in table
