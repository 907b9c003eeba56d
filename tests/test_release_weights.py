"""The OpenPose release's weight files (pose_model.pth, pose_model_scratch.pth) as --checkpoint:
recognised by their layout, run in the network of an openpose vgg19 config through the release
loader, with the predictions of model.pretrained=FILE; any other config is one clear line."""
import argparse

import numpy as np
import pytest
import torch

from posenet import cli, families
from posenet.config import build, load_config
from posenet.errors import ConfigError, PosenetError
from posenet.families import load_predictor
from posenet.inference.paf_predictor import PafPredictor
from posenet.models.openpose import OpenPoseNet, release_state_dict
from _scripts import REPO, run_script

pytestmark = pytest.mark.usefixtures("single_thread")

CONFIG = REPO / "configs/openpose_vgg19.yaml"
# two stages (the release has six): the stage-1 and stage-2 key layouts at a third of the size
SMALL = ["openpose.stages=2", "infer.input_size=64"]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The source network and its weights under the release's keys, as pose_model.pth and as
    pose_model_scratch.pth (under ``module.``), each alone in its folder as downloaded."""
    torch.manual_seed(0)
    source = OpenPoseNet(stages=2)
    state = release_state_dict(source)
    files = {}
    for name, prefix in (("pose_model.pth", ""), ("pose_model_scratch.pth", "module.")):
        path = tmp_path_factory.mktemp("release") / name
        torch.save({prefix + k: v for k, v in state.items()}, path)
        files[name] = path
    return source, files


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def args(checkpoint, config=CONFIG):
    return argparse.Namespace(runtime="torch", checkpoint=str(checkpoint), onnx=None,
                              config=None if config is None else str(config), device="cpu")


@pytest.mark.parametrize("name, preprocessing", [("pose_model.pth", "caffe"), ("pose_model_scratch.pth", "imagenet")])
def test_a_release_file_is_a_checkpoint_with_the_predictions_of_model_pretrained(release, image, name,
                                                                                  preprocessing):
    source, files = release
    predictor = cli.predictor_from_args(args(files[name]), SMALL)
    model = predictor.model
    assert model.preprocessing == preprocessing
    loaded, expected = model.state_dict(), source.state_dict()
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        if key != "caffe_input":
            assert torch.equal(loaded[key], value), key

    cfg = load_config(CONFIG, SMALL + [f"model.pretrained={files[name]}"])
    reference = PafPredictor.from_config(cfg, build.paf_network(cfg).eval())
    got, want = predictor.run(image), reference.run(image)
    assert got.heatmaps.std() > 0 and got.pafs.std() > 0
    np.testing.assert_array_equal(got.heatmaps, want.heatmaps)
    np.testing.assert_array_equal(got.pafs, want.pafs)
    assert got.people == want.people


def test_the_two_layouts_run_with_their_own_preprocessing(release, image):
    _, files = release
    caffe, scratch = (load_predictor(files[name], CONFIG, SMALL).run(image)
                      for name in ("pose_model.pth", "pose_model_scratch.pth"))
    assert not np.array_equal(caffe.heatmaps, scratch.heatmaps)


def one_line_error(capsys, checkpoint, config, overrides=SMALL) -> str:
    """What a script prints for ``predictor_from_args``: one line on stderr, exit 2."""
    with pytest.raises(SystemExit) as exit:
        cli.run(lambda: cli.predictor_from_args(args(checkpoint, config), overrides))
    assert exit.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_another_config_or_none_is_one_line_naming_the_config_to_pass(release, capsys):
    _, files = release
    path = files["pose_model.pth"]
    for config, overrides, wrong in ((REPO / "configs/synthetic_small.yaml", (), "not model.family multiposenet"),
                                     (CONFIG, SMALL + ["openpose.network=shufflenetv2"],
                                      "not openpose.network shufflenetv2"),
                                     (None, (), "")):  # no config.yaml beside the download
        line = one_line_error(capsys, path, config, overrides)
        assert "OpenPose release's weights" in line and wrong in line
        assert line.endswith("pass --config configs/openpose_vgg19.yaml")
    # val_keypoint.py's MultiPoseNet path reads the checkpoint's parts first: the same line
    with pytest.raises(ConfigError, match="pass --config configs/openpose_vgg19.yaml"):
        families.of(load_config(REPO / "configs/synthetic_small.yaml")).validate(
            load_config(REPO / "configs/synthetic_small.yaml"), path)


def test_a_file_of_neither_layout_keeps_the_checkpoint_error(release, tmp_path, capsys):
    path = tmp_path / "weights.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    line = one_line_error(capsys, path, CONFIG)
    assert "does not fit the model" in line and "release" not in line
    # the release's layout with the wrong number of stages: the release loader's line
    _, files = release
    with pytest.raises(PosenetError, match=r"pose_model\.pth: unexpected key 'model2_1\.0\.bias' for this model"):
        load_predictor(files["pose_model.pth"], CONFIG, ["openpose.stages=1"])


def test_infer_script_runs_a_release_file_end_to_end(release, image, tmp_path):
    from PIL import Image

    _, files = release
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(image).save(images / "one.png")
    out = tmp_path / "out"
    run_script("infer.py", "--config", str(CONFIG), "--checkpoint", str(files["pose_model.pth"]),
               "--images", str(images), "--out", str(out), *SMALL)
    assert (out / "results.json").is_file() and len(list((out / "json").iterdir())) == 1
    assert any(p.name.endswith("panel.jpg") for p in (out / "pictures").iterdir())


def test_export_onnx_loads_a_release_file_with_its_preprocessing(release, tmp_path, monkeypatch):
    """scripts/export_onnx.py's loading path, up to the export itself (test_export_onnx.py
    exports the family's networks; this one would take seconds)."""
    from posenet.deploy import export

    source, files = release
    handed = {}
    monkeypatch.setattr(export, "export", lambda cfg, model, out, **kw: handed.update(cfg=cfg, model=model))
    export.export_checkpoint(files["pose_model.pth"], tmp_path / "model.onnx", config=CONFIG, overrides=SMALL)
    model = handed["model"]
    assert handed["cfg"].openpose.network == "vgg19" and model.preprocessing == "caffe" and not model.training
    assert torch.equal(model.paf_branches[1][-1].weight, source.paf_branches[1][-1].weight)
