"""The int8 export (``export_onnx.py --int8``, posenet.deploy.quantize): calibration inputs are
exactly what the decoder feeds the graph, the int8 graph quantises every layer but the ones that
write the outputs, its maps stay near the float graph's, and it runs wherever an export runs
(the ONNX predictor, the portable decoder, ``val_keypoint.py --runtime onnx``); clear errors.

A tiny random MultiPoseNet of tests/_random_runs.py on the tiny synthetic dataset keeps it
fast; whether int8 costs AP is measured on trained models (docs/deployment.md), not here.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from posenet.config import build, load_config
from posenet.deploy import quantize as Q
from posenet.deploy.onnx_predictor import OnnxPredictor
from posenet.errors import ConfigError, DataError
from posenet.portable.model import PoseModel

from _random_runs import TINY, save_random_run
from _scripts import REPO, run_script

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def int8_export(tiny_synthetic, tmp_path_factory):
    """A random tiny MultiPoseNet exported at a fixed 96 px with --int8 through the script,
    calibrated on 6 training images."""
    root = tmp_path_factory.mktemp("int8")
    (root / "run").mkdir()
    cfg = load_config(REPO / "configs/synthetic_small.yaml", [f"data.root={tiny_synthetic}", *TINY])
    checkpoint = save_random_run(cfg, root / "run")
    out = root / "export" / "model.onnx"
    result = run_script("export_onnx.py", "--checkpoint", str(checkpoint), "--out", str(out), "--input-size", "96",
                        "--int8", "--calibration-images", "6")
    return cfg, checkpoint, out, result.stdout + result.stderr


def test_the_script_writes_the_int8_export_beside_the_float_one(int8_export):
    _, _, out, output = int8_export
    graph, meta_file = out.parent / "model.int8.onnx", out.parent / "model.int8.json"
    assert graph.is_file() and meta_file.is_file()
    meta, float_meta = json.loads(meta_file.read_text()), json.loads(out.with_suffix(".json").read_text())
    q = meta.pop("quantization")
    assert meta == {**float_meta, "onnx": "model.int8.onnx"}  # the same export, another network file
    assert q["calibration_images"] == 6 and q["calibration_inputs"] == 6 and q["method"] == "minmax"
    assert q["calibration_source"] == "6 images of the training split train2017" and q["float_outputs"]
    assert "int8 heatmaps vs float32 on 6 calibration inputs" in output
    onnx.checker.check_model(str(graph), full_check=True)


def test_every_layer_but_the_output_layers_is_int8(int8_export):
    _, _, out, _ = int8_export
    graph = onnx.load(str(out.parent / "model.int8.onnx")).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    last = Q.output_layers(graph)
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(last) == 11  # heatmaps and the 5 levels of both detection heads
    for conv in convs:
        weight_is_int8 = conv.input[1] in dequantized
        assert weight_is_int8 == (conv.name not in last), conv.name
    assert {graph.output[i].name for i in range(len(graph.output))} == set(json.loads(
        (out.parent / "model.int8.json").read_text())["outputs"])


def test_calibration_feeds_are_the_decoders_graph_inputs(int8_export):
    """With flip and two scales, the decoder runs the graph four times per image: the recorded
    feeds are those four inputs, as the decoder builds them."""
    cfg, _, out, _ = int8_export
    meta = json.loads(out.with_suffix(".json").read_text())
    meta["infer"] = {**meta["infer"], "flip": True, "scales": [1.0, 0.5]}
    rgb = np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)
    feeds = Q.calibration_feeds(meta, out.parent, [rgb, rgb], progress=False)
    assert len(feeds) == 8
    seen = []

    class Spy:
        def __init__(self, session):
            self.session = session

        def run(self, names, feed):
            seen.append(feed["image"].copy())
            return self.session.run(names, feed)

    model = PoseModel(meta, base_dir=out.parent)
    PoseModel(meta, session=Spy(model.session), base_dir=out.parent).network(rgb)
    for a, b in zip(seen, feeds[:4]):
        assert np.array_equal(a, b["image"])
    assert not np.array_equal(feeds[0]["image"], feeds[1]["image"])  # the mirrored input


def test_int8_maps_stay_near_the_float_maps(int8_export):
    """On images like the calibration's (the validation split), the int8 heatmaps follow the
    float ones: correlation above 0.99, mean difference under 3 % of the largest value."""
    cfg, _, out, _ = int8_export
    meta = json.loads(out.with_suffix(".json").read_text())
    persons = build.coco_split(cfg.data, cfg.data.val_split)
    feeds = Q.calibration_feeds(meta, out.parent, [persons.image_path(i) for i in persons.image_ids[:3]],
                                progress=False)
    d = Q.map_differences(meta, out.parent, "model.int8.onnx", feeds)["heatmaps"]
    assert d["inputs"] == 3 and 0 < d["max_abs"] and d["mean_abs"] < 0.03 * d["largest"]
    float_session = PoseModel(meta, base_dir=out.parent).session
    int8_session = PoseModel({**meta, "onnx": "model.int8.onnx"}, base_dir=out.parent).session
    for feed in feeds:
        a, b = float_session.run(None, feed)[0], int8_session.run(None, feed)[0]
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99


def test_the_int8_export_runs_as_any_export(int8_export, tmp_path):
    cfg, _, out, _ = int8_export
    persons = build.coco_split(cfg.data, cfg.data.val_split)
    image = persons.image_path(persons.image_ids[0])
    predictor = OnnxPredictor(out.parent / "model.int8.onnx")
    assert "int8" in predictor.describe()
    prediction = predictor.run(image)
    assert prediction.heatmaps.shape[0] == 17 and len(prediction.people) == len(prediction.boxes)
    decoded = subprocess.run([sys.executable, str(out.parent / "posenet_decoder"), str(out.parent / "model.int8.json"),
                              str(image), "--out", str(tmp_path / "people.json"), "--threads", "1"],
                             capture_output=True, text=True, timeout=120)
    assert decoded.returncode == 0, decoded.stderr
    decoded = json.loads((tmp_path / "people.json").read_text())[str(image)]
    assert len(decoded["people"]) == len(prediction.people)
    for p, q in zip(decoded["people"], prediction.people):
        assert np.allclose(np.asarray(p["keypoints"]).reshape(-1, 3), q["keypoints"], atol=1e-3)


def test_clear_errors(int8_export, tmp_path):
    cfg, checkpoint, out, _ = int8_export
    with pytest.raises(ConfigError, match="already an int8 export"):
        Q.quantize_export(out.parent / "model.int8.json", [])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    lines = []
    with pytest.raises(DataError, match="none of the 1 calibration image"):
        Q.quantize_export(out.with_suffix(".json"), [broken], progress=False, log=lines.append)
    assert lines and "broken.jpg" in lines[0]
    with pytest.raises(ConfigError, match="no node of that type or name"):
        Q.quantize_graph(out, tmp_path / "x.onnx", [{"image": np.zeros((1, 3, 96, 96), np.float32)}],
                         exclude=["NoSuchOp"])
    with pytest.raises(ConfigError, match="no calibration inputs"):
        Q.quantize_graph(out, tmp_path / "x.onnx", [])
    result = run_script("export_onnx.py", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "m.onnx"),
                        "--int8", "--calibration-dir", str(tmp_path / "missing"), check=False)
    assert result.returncode != 0 and "missing" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()  # refused before the export


def test_the_int8_benchmark_measures_both_graphs_and_judges_by_family(int8_export):
    """``benchmark.py int8``'s measurement of a run (both graphs validated end to end, the same
    images) and its verdicts: every run, and each family alone (the default's condition)."""
    from posenet.bench import int8 as bench

    _, checkpoint, _, _ = int8_export
    (row,) = bench.run([checkpoint], calibration_images=4, log=lambda *_: None)
    assert row["family"] == "multiposenet" and row["quantization"]["calibration_images"] == 4
    assert set(row["metrics"]) == {"float32", "int8"} and row["images"] > 0
    assert all(0.0 <= m["AP"] <= 1.0 and m["network_ms"] > 0 for m in row["metrics"].values())
    lossless = {**row, "metrics": {"float32": {**row["metrics"]["float32"], "AP": 0.5},
                                   "int8": {**row["metrics"]["int8"], "AP": 0.499}}}
    lossy = {**lossless, "family": "openpose", "metrics": {"float32": {**row["metrics"]["float32"], "AP": 0.7},
                                                           "int8": {**row["metrics"]["int8"], "AP": 0.69}}}
    table = bench.format_table([lossless, lossy], "python scripts/benchmark.py int8 A B")
    assert "every run: **no** (largest loss 0.010)" in table
    assert "By family: multiposenet yes (1 run(s), largest loss 0.001); openpose no (1 run(s), largest loss 0.010)" \
        in table
    assert "every run: **yes**" in bench.format_table([lossless], "c")
