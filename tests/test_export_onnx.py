"""The ONNX export of both families (scripts/export_onnx.py, posenet.deploy.export) and its
runtime (posenet.deploy.onnx_predictor, infer.py / val_keypoint.py --runtime onnx): the graph
passes onnx.checker and matches PyTorch on onnxruntime, the metadata holds the numbers the
PyTorch predictors use, and the export's people are the checkpoint's (keypoints within 0.5 px,
the same people, the same COCO AP), at a fixed size and with dynamic height and width.

Random-weight models at small inputs keep it fast; their people are many and arbitrary (boxes
and peaks of an untrained network), which is what makes the comparison of the two runtimes
non-trivial. The exports take most of the time (the dynamo exporter builds its op registry per
export), so each family is exported once per module with dynamic height and width, and once at
a fixed size (MultiPoseNet's through the script).
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from omegaconf import OmegaConf
import torch

from posenet import families
from posenet.config import build, load_config, save_config
from posenet.deploy import export as E
from posenet.inference.groupings import PafFieldGrouping
from posenet.deploy.onnx_predictor import OnnxPredictor, apply_overrides, layout_of, read_metadata
from posenet.errors import ConfigError, PosenetError
from posenet.inference.paf_predictor import PafPredictor
from posenet.inference.predictor import Predictor

from _scripts import REPO, run_script

pytestmark = pytest.mark.usefixtures("single_thread")

MULTIPOSENET = REPO / "configs/synthetic_small.yaml"
OPENPOSE = REPO / "configs/openpose_synthetic_small.yaml"
TINY_MULTIPOSENET = [
    "model.fpn_channels=16", "model.subnet_channels=16", "model.fuse_channels=16", "detection.fpn_channels=16",
    "detection.head_convs=1", "prn.hidden=32", "infer.input_size=96", "eval.max_images=3",
    # random weights score every box ~0.01: keep a few so that grouping has work to do
    "detection.score_threshold=0.0", "detection.max_detections=5", "infer.box_threshold=0.0",
]
TINY_OPENPOSE = ["openpose.network=hourglass", "openpose.stacks=1", "openpose.channels=16", "infer.input_size=64",
                 "eval.max_images=3"]


def _run(root, name, config, overrides, **parts):
    """A random-weight model of ``config`` saved like a run (checkpoint + config.yaml)."""
    run = root / name
    cfg = load_config(config, overrides)
    torch.manual_seed(0)
    model = build.paf_network(cfg) if cfg.model.family == "openpose" else build.posenet_model(cfg, 17, **parts)
    run.mkdir()
    torch.save({"format": "posenet-checkpoint", "model": model.state_dict()}, run / "best.pt")
    save_config(cfg, run)
    return cfg, model.eval(), run / "best.pt"


@pytest.fixture(scope="module")
def multiposenet(tiny_synthetic, tmp_path_factory):
    """A full random MultiPoseNet (detection + PRN) exported with dynamic H/W from its checkpoint."""
    root = tmp_path_factory.mktemp("multiposenet_export")
    cfg, model, checkpoint = _run(root, "run", MULTIPOSENET, [f"data.root={tiny_synthetic}", *TINY_MULTIPOSENET],
                                  detection=True, prn=True)
    out = root / "export" / "model.onnx"
    lines = []
    summary = E.export_checkpoint(checkpoint, out, dynamic=True, log=lines.append)
    assert not [line for line in lines if "exporter failed" in line], lines  # the dynamo exporter did it
    return cfg, model, checkpoint, out, summary


@pytest.fixture(scope="module")
def openpose(tiny_synthetic, tmp_path_factory):
    """A random one-stack hourglass PAF network exported with dynamic H/W."""
    root = tmp_path_factory.mktemp("openpose_export")
    cfg, model, checkpoint = _run(root, "run", OPENPOSE, [f"data.root={tiny_synthetic}", *TINY_OPENPOSE])
    out = root / "export" / "model.onnx"
    lines = []
    summary = E.export(cfg, model, out, dynamic=True, log=lines.append)
    assert not [line for line in lines if "exporter failed" in line], lines  # the dynamo exporter did it
    return cfg, model, checkpoint, out, summary


def _val_images(cfg, count=3, longer_side=None):
    """The first val images (RGB); with ``longer_side``, resized to it beforehand, so that the
    predictors' fit to the input is the identity and both runtimes see the same pixels (the
    decoder's numpy resampling differs from cv2's fixed-point one by a grey level here and
    there, which can tip a borderline person of an untrained network over a threshold)."""
    import cv2

    from posenet.data.images import read_image

    persons = build.coco_split(cfg.data, cfg.data.val_split)
    images = [np.ascontiguousarray(read_image(persons.image_path(i))[:, :, ::-1]) for i in persons.image_ids[:count]]
    if longer_side:
        images = [cv2.resize(rgb, (round(rgb.shape[1] * longer_side / max(rgb.shape[:2])),
                                   round(rgb.shape[0] * longer_side / max(rgb.shape[:2]))),
                             interpolation=cv2.INTER_AREA) for rgb in images]
    return images


def _same_people(torch_prediction, onnx_prediction):
    a, b = torch_prediction.people, onnx_prediction.people
    assert len(a) == len(b)
    for p, q in zip(a, b):
        assert np.abs(p["keypoints"][:, :2] - q["keypoints"][:, :2]).max() < 0.5
        assert np.abs(p["keypoints"][:, 2] - q["keypoints"][:, 2]).max() < 1e-3
        assert np.abs(p["box"] - q["box"]).max() < 0.5 and abs(p["score"] - q["score"]) < 1e-3
    return len(a)


# ----------------------------------------------------------------------------- MultiPoseNet


def test_the_export_writes_every_file(multiposenet):
    _, _, _, out, summary = multiposenet
    names = ["heatmaps", *(f"cls_logits_{i}" for i in range(5)), *(f"box_deltas_{i}" for i in range(5))]
    assert summary["outputs"] == summary["check"]["outputs"] == names and summary["check"]["opset"] == 18
    assert max(summary["max_abs_diff"].values()) < 1e-4 and set(summary["max_abs_diff"]) == set(names)
    for name in ("model.onnx", "model.json", "model.prn.npz"):
        assert (out.parent / name).is_file(), name
    shipped = sorted(p.name for p in (out.parent / "posenet_decoder").iterdir())
    assert shipped == sorted(p.name for p in (REPO / "posenet/portable").glob("*.py"))
    for name in shipped:
        assert (out.parent / "posenet_decoder" / name).read_text() == (REPO / "posenet/portable" / name).read_text()


@pytest.fixture(scope="module")
def script_export(multiposenet, tmp_path_factory):
    """The MultiPoseNet checkpoint through scripts/export_onnx.py: a fixed graph for longer side
    80 at scales 1 and 0.5 (96 x 96, the divisor being 32); returns the export and the output."""
    _, _, checkpoint, _, _ = multiposenet
    out = tmp_path_factory.mktemp("script_export") / "model.onnx"
    result = run_script("export_onnx.py", "--checkpoint", str(checkpoint), "--out", str(out), "--input-size", "80",
                        "infer.scales=[1.0,0.5]")
    return out, result.stdout + result.stderr


def test_the_script_reports_the_check_quietly(script_export):
    _, output = script_export
    names = ["heatmaps", *(f"cls_logits_{i}" for i in range(5)), *(f"box_deltas_{i}" for i in range(5))]
    assert f"outputs: {', '.join(names)}" in output
    assert "onnx.checker: ok (opset 18" in output and "fixed input 96x96" in output
    assert float(output.split("(worst ")[1].split(")")[0]) < 1e-4
    assert "Warning" not in output and "[torch.onnx]" not in output  # the exporter's chatter is kept quiet


def test_multiposenet_graph_matches_pytorch_at_any_size(multiposenet):
    _, model, _, out, _ = multiposenet
    check = E.check_onnx(out)
    assert check["opset"] >= 17 and check["inputs"] == ["image"] and check["outputs"][0] == "heatmaps"
    # dynamic height and width: sizes the export never saw, square and not, one of a single block
    diffs = E.compare_onnxruntime(model, out, sizes=[(64, 160), (128, 96), (32, 32)])
    assert set(diffs) == set(check["outputs"]) and max(diffs.values()) < 1e-4


def test_multiposenet_metadata_round_trip(multiposenet):
    cfg, model, _, out, _ = multiposenet
    meta = read_metadata(out)
    assert meta == json.loads(json.dumps(E.metadata(cfg, model, dynamic=True)))
    predictor = Predictor.from_config(cfg, model)
    assert meta["input"]["size"] is None and meta["input"]["size_divisor"] == 32 and meta["input"]["min_size"] == 32
    assert np.allclose(meta["input"]["pad_value"], 255 * np.array([0.485, 0.456, 0.406]))
    anchors = model.detection_head.anchor_generator
    assert meta["detection"]["anchors"] == {"sizes": list(anchors.sizes), "strides": list(anchors.strides),
                                            "ratios": list(anchors.ratios), "scales": list(anchors.scales)}
    assert meta["detection"]["postprocess"] == build.detection_options(cfg)
    assert meta["infer"]["box_threshold"] == predictor.box_threshold == 0.0
    assert meta["infer"]["input_size"] == predictor.input_size == 96
    assert meta["heatmaps"] == {"stride": 4, "sigma": cfg.keypoint.sigma}
    assert meta["grouping"]["name"] == "prn" and meta["grouping"]["window"] == cfg.prn.window
    layout = layout_of(meta["keypoints"])
    assert layout == build.keypoint_layout(cfg.data.keypoints)
    # the PRN's layers as the decoder reads them: x -> relu(W x + b) ... as torch computes it
    arrays = np.load(out.with_suffix(".prn.npz"))
    assert sorted(arrays.files) == ["b0", "b1", "grid_shape", "w0", "w1"]
    assert tuple(arrays["grid_shape"]) == model.prn.grid_shape
    x = torch.rand(2, int(np.prod(model.prn.grid_shape)))
    with torch.no_grad():
        expected = model.prn.mlp.eval()(x).numpy()
    hidden = np.maximum(x.numpy() @ arrays["w0"].T + arrays["b0"], 0)
    assert np.allclose(np.maximum(hidden @ arrays["w1"].T + arrays["b1"], 0), expected, atol=1e-5)


def test_onnx_predictor_gives_the_pytorch_predictors_people(multiposenet):
    cfg, model, _, out, _ = multiposenet
    torch_predictor, onnx_predictor = Predictor.from_config(cfg, model), OnnxPredictor(out)
    people = 0
    for rgb in _val_images(cfg):
        a, b = torch_predictor.run(rgb), onnx_predictor.run(rgb)
        people += _same_people(a, b)
        assert np.allclose(a.boxes, b.boxes, atol=0.5) and np.allclose(a.heatmaps, b.heatmaps, atol=1e-4)
        assert np.allclose(a.matrix, b.matrix) and a.image_size == b.image_size and a.stride == b.stride
        assert onnx_predictor.draw(rgb, b)["panel"].shape == (rgb.shape[0], 3 * rgb.shape[1], 3)
    assert people >= 3  # five boxes an image: a comparison with people in it
    assert onnx_predictor.layout == torch_predictor.layout
    assert onnx_predictor.keypoint_threshold == torch_predictor.keypoint_threshold
    assert "onnxruntime" in onnx_predictor.describe() and "grouping prn" in onnx_predictor.describe()


def test_validation_through_the_export_scores_what_the_checkpoint_scores(multiposenet):
    from posenet.stages import end_to_end

    cfg, _, checkpoint, out, _ = multiposenet
    silent = lambda line: None  # noqa: E731
    torch_metrics, torch_eval = end_to_end.validate(cfg, checkpoint, log=silent)
    onnx_metrics, onnx_eval, record = families.of(cfg).validate_export(cfg, out, log=silent)
    assert abs(torch_metrics["AP"] - onnx_metrics["AP"]) <= 1e-3 and abs(torch_metrics["AR"] - onnx_metrics["AR"]) <= 1e-3
    # random weights score near 0: the results themselves are the non-trivial comparison
    a, b = torch_eval.last_results, onnx_eval.last_results
    assert len(a) == len(b) >= 3
    for p, q in zip(a, b):
        assert p["image_id"] == q["image_id"] and abs(p["score"] - q["score"]) < 1e-3
        assert np.abs(np.subtract(p["keypoints"], q["keypoints"])).max() < 0.5
    assert record["mode"] == "end-to-end" and record["grouping"] == "prn" and "onnxruntime" in record["protocol"]


def test_infer_script_runs_the_export(multiposenet, tmp_path):
    from posenet.inference import infer_folder

    cfg, model, _, out, _ = multiposenet
    images = tmp_path / "images"
    images.mkdir()
    persons = build.coco_split(cfg.data, cfg.data.val_split)
    for i in persons.image_ids[:2]:
        shutil.copy(persons.image_path(i), images)
    run_script("infer.py", "--runtime", "onnx", "--onnx", str(out), "--images", str(images),
               "--out", str(tmp_path / "onnx"), "--no-pictures", "infer.keypoint_threshold=0.2")
    infer_folder(Predictor.from_config(load_config(MULTIPOSENET, [f"data.root={cfg.data.root}", *TINY_MULTIPOSENET,
                                                            "infer.keypoint_threshold=0.2"]), model),
                 images, tmp_path / "torch", pictures=False, progress=False, log=lambda line: None)
    ours = json.loads((tmp_path / "onnx" / "results.json").read_text())
    theirs = json.loads((tmp_path / "torch" / "results.json").read_text())
    assert len(ours) == len(theirs) > 0
    for p, q in zip(ours, theirs):
        # the override reached the pose score (box score times the mean keypoint score above it)
        assert p["image_id"] == q["image_id"] and abs(p["score"] - q["score"]) < 1e-3
        assert np.abs(np.subtract(p["keypoints"], q["keypoints"])).max() < 0.5


def test_clear_errors(multiposenet, tmp_path):
    cfg, model, checkpoint, out, _ = multiposenet
    lonely = tmp_path / "lonely.onnx"
    shutil.copy(out, lonely)
    with pytest.raises(ConfigError, match="no metadata beside it"):
        OnnxPredictor(lonely)
    with pytest.raises(ConfigError, match="no such file"):
        OnnxPredictor(tmp_path / "absent.onnx")
    (tmp_path / "other.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ConfigError, match="not the metadata of a posenet ONNX export"):
        OnnxPredictor(tmp_path / "other.json")
    with pytest.raises(ConfigError, match="infer.boxes=all: the portable decoder"):
        E.metadata(OmegaConf.merge(cfg, {"infer": {"boxes": "all", "scales": [1.0, 0.5]}}), model, dynamic=True)
    meta = read_metadata(out)
    with pytest.raises(ConfigError, match="infer.grouping cannot be changed"):
        apply_overrides(meta, ["infer.grouping=greedy"])
    with pytest.raises(ConfigError, match="only infer.. overrides"):
        apply_overrides(meta, ["model.fpn_channels=8"])
    assert apply_overrides(meta, ["infer.box_threshold=0.5"])["infer"]["box_threshold"] == 0.5
    # a keypoint-stage checkpoint has no boxes to export
    state = torch.load(checkpoint, weights_only=True)["model"]
    keypoint_only = tmp_path / "keypoint.pt"
    torch.save({"format": "posenet-checkpoint", "model": {k: v for k, v in state.items()
                                                          if not k.startswith(("detection_", "prn."))}}, keypoint_only)
    with pytest.raises(ConfigError, match="no detection branch"):
        E.export_checkpoint(keypoint_only, tmp_path / "k.onnx", config=checkpoint.parent / "config.yaml")
    with pytest.raises(ConfigError, match="checkpoint not found"):
        E.export_checkpoint(tmp_path / "missing.pt", tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="must end in .onnx"):
        E.export(cfg, model, tmp_path / "model.bin")
    with pytest.raises(ConfigError, match="opset 16"):
        E.export_onnx(model, tmp_path / "old.onnx", family="multiposenet", opset=16)
    with pytest.raises(ConfigError, match="not a openpose one|not a openpose"):
        E.graph_of(model, "openpose")
    with pytest.raises(PosenetError, match="no such ONNX file"):
        E.check_onnx(tmp_path / "absent.onnx")


def test_scripts_give_one_line_errors(multiposenet, tmp_path):
    lonely = tmp_path / "lonely.onnx"
    shutil.copy(multiposenet[3], lonely)
    for script, args, message in (
        ("infer.py", ["--runtime", "onnx", "--onnx", str(lonely), "--images", str(tmp_path), "--out", str(tmp_path)],
         "no metadata"),
        ("infer.py", ["--runtime", "onnx", "--images", str(tmp_path), "--out", str(tmp_path)], "takes --onnx"),
        ("export_onnx.py", ["--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "m.onnx")],
         "checkpoint not found"),
    ):
        result = run_script(script, *args, check=False)
        assert result.returncode == 2 and result.stderr.startswith("error: ") and message in result.stderr, script


# ----------------------------------------------------------------------------- OpenPose family


def test_openpose_graph_and_metadata(openpose):
    cfg, model, _, out, summary = openpose
    assert summary["outputs"] == ["heatmaps", "pafs"] and summary["check"]["outputs"] == ["heatmaps", "pafs"]
    assert max(summary["max_abs_diff"].values()) < 1e-4
    assert max(E.compare_onnxruntime(model, out, sizes=[(64, 128), (192, 64)]).values()) < 1e-4
    meta = read_metadata(out)
    assert meta == json.loads(json.dumps(E.metadata(cfg, model, dynamic=True)))
    predictor = PafPredictor.from_config(cfg, model)
    assert meta["family"] == "openpose" and meta["outputs"] == ["heatmaps", "pafs"]
    assert meta["input"]["size_divisor"] == model.input_divisor == 64 and meta["input"]["min_size"] == 4
    assert meta["heatmaps"]["stride"] == predictor.stride == 4
    assert meta["openpose"]["paf"] == PafFieldGrouping.from_config(cfg).options()
    assert [tuple(s) for s in meta["openpose"]["sources"]] == list(predictor.parts.sources)
    assert layout_of(meta["keypoints"]) == predictor.layout  # COCO's 17: the results' keypoints
    assert meta["openpose"]["parts"]["skeleton"] == [list(limb) for limb in predictor.parts.layout.skeleton]
    assert not (out.parent / "model.prn.npz").exists() and (out.parent / "posenet_decoder" / "__init__.py").is_file()


def test_openpose_export_gives_the_pytorch_predictors_people(openpose):
    cfg, model, _, out, _ = openpose
    torch_predictor, onnx_predictor = PafPredictor.from_config(cfg, model), OnnxPredictor(out)
    people = 0
    for rgb in _val_images(cfg, longer_side=cfg.infer.input_size):
        a, b = torch_predictor.run(rgb), onnx_predictor.run(rgb)
        people += _same_people(a, b)
        assert np.allclose(a.pafs, b.pafs, atol=1e-4) and a.stride == b.stride == 4
    assert people >= 3
    # the release's rule (the height is input_size): the same people through both runtimes
    import cv2

    rgb = _val_images(cfg, 1)[0]  # resized so that its height is the input size: the same pixels in both
    size = cfg.infer.input_size
    rgb = cv2.resize(rgb, (round(rgb.shape[1] * size / rgb.shape[0]), size), interpolation=cv2.INTER_AREA)
    assert rgb.shape[1] > size  # a landscape image: its longer side is not the input size
    torch_height = PafPredictor.from_config(OmegaConf.merge(cfg, {"infer": {"input_side": "height"}}), model)
    onnx_height = OnnxPredictor(out, ["infer.input_side=height"])
    a, b = torch_height.run(rgb), onnx_height.run(rgb)
    assert np.allclose(a.matrix, [[1, 0, 0], [0, 1, 0]]) and np.allclose(b.matrix, a.matrix)
    _same_people(a, b)
    assert np.allclose(a.pafs, b.pafs, atol=1e-4) and np.allclose(a.heatmaps, b.heatmaps, atol=1e-4)
    with pytest.raises(ConfigError, match="fixed-size graph"):
        E.metadata(OmegaConf.merge(cfg, {"infer": {"input_side": "height"}}), model, dynamic=False)
    silent = lambda line: None  # noqa: E731
    from posenet.stages import openpose as stage

    torch_metrics, torch_eval = stage.validate(cfg, out.parent.parent / "run" / "best.pt", log=silent)
    onnx_metrics, onnx_eval, record = families.of(cfg).validate_export(cfg, out, log=silent)
    # the split's own images: resampled by each runtime its own way (see _val_images)
    assert abs(torch_metrics["AP"] - onnx_metrics["AP"]) <= 1e-3
    assert len(torch_eval.last_results) > 0 and len(onnx_eval.last_results) > 0
    assert record["grouping"] == "paf" and "onnxruntime" in record["protocol"]


def test_family_mismatch_is_a_clear_error(openpose, multiposenet):
    with pytest.raises(ConfigError, match="the export is a openpose model"):
        families.of(multiposenet[0]).validate_export(multiposenet[0], openpose[3])


# ----------------------------------------------------------------------------- fixed size


@pytest.mark.parametrize("family", ["multiposenet", "openpose"])
def test_fixed_size_export(family, multiposenet, openpose, script_export, tmp_path):
    """Longer side 80 at scales 1 and 0.5: a square graph of 80 rounded up to the divisor, the
    metadata keeping 80 (MultiPoseNet through the script, OpenPose through ``export``)."""
    cfg, model, _, _, _ = multiposenet if family == "multiposenet" else openpose
    cfg = load_config(MULTIPOSENET if family == "multiposenet" else OPENPOSE,
                      [f"data.root={cfg.data.root}", *(TINY_MULTIPOSENET if family == "multiposenet" else TINY_OPENPOSE),
                       "infer.scales=[1.0,0.5]"])
    if family == "multiposenet":
        path = script_export[0]
    else:
        path = tmp_path / "model.onnx"
        summary = E.export(cfg, model, path, input_size=80, log=lambda line: None)
        assert max(summary["max_abs_diff"].values()) < 1e-4
    divisor = 32 if family == "multiposenet" else 64
    side = -(-80 // divisor) * divisor
    meta = read_metadata(path)
    assert meta["input"]["size"] == [side, side] and meta["infer"]["input_size"] == 80
    assert meta["infer"]["scales"] == [1.0, 0.5]
    import onnx

    dims = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, side, side]
    # a square image fills the fixed graph exactly as the PyTorch model pads it: the same people
    rgb = _val_images(cfg, 1)[0]
    square = np.ascontiguousarray(rgb[:min(rgb.shape[:2]), :min(rgb.shape[:2])])
    torch_predictor = Predictor.from_config(cfg, model) if family == "multiposenet" else PafPredictor.from_config(cfg, model)
    torch_predictor.input_size, torch_predictor.scales = side, (1.0,)
    onnx_predictor = OnnxPredictor(path, [f"infer.input_size={side}", "infer.scales=[1.0]"])
    assert _same_people(torch_predictor.run(square), onnx_predictor.run(square)) > 0


@pytest.mark.parametrize("family", ["multiposenet", "openpose"])
def test_a_video_through_an_export_pipelined_and_serial(family, request, tmp_path):
    """Both families' exports run a video (--runtime onnx's predictor): the pipelined loop, whose
    network and decoding run in two threads, writes the serial loop's JSON lines, with track
    ids, and its run_network steps give run's people."""
    import cv2

    from posenet.inference.video import read_json_lines, run_video

    cfg, _, _, out, _ = request.getfixturevalue(family)
    predictor = OnnxPredictor(out, ["infer.picture_box_threshold=0.0"])  # the random boxes score ~0.01
    frames = tmp_path / "frames"
    frames.mkdir()
    images = _val_images(cfg, 3)
    for i, rgb in enumerate(images * 2):
        cv2.imwrite(str(frames / f"{i:02d}.png"), np.ascontiguousarray(rgb[:, :, ::-1]))
    texts = {}
    for pipeline in (False, True):
        path = tmp_path / f"{pipeline}.jsonl"
        summary = run_video(predictor, frames, json=path, progress=False, log=lambda *_: None, pipeline=pipeline)
        assert summary["frames"] == 6 and summary["pipelined"] == pipeline
        texts[pipeline] = path.read_text()
    assert texts[True] == texts[False]
    people = [p for f in read_json_lines(tmp_path / "True.jsonl") for p in f["people"]]
    assert people and all(isinstance(p["track_id"], int) for p in people)
    whole, (decode,) = predictor.run(images[0]), predictor.run_network([images[0]])
    assert _same_people(whole, decode()) == len(whole.people)
