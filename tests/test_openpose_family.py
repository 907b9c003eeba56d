"""The OpenPose family through the shared data path, config, scripts and inference."""
import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from posenet import families
from posenet.codecs.paf import PafCodec
from posenet.config import build, load_config
from posenet.data.keypoints import OPENPOSE_18
from posenet.errors import ConfigError
from posenet.inference.paf_predictor import PafPredictor
from posenet.inference.scales_and_flip import flip_back, paf_flip_index
from _scripts import REPO, run_script

CONFIG = REPO / "configs/openpose_synthetic_small.yaml"


def tiny_openpose(root, out) -> list[str]:
    """The smallest network of the family (a 1-stack hourglass, 16 channels) on tiny inputs."""
    return [f"data.root={root}", f"output_dir={out}", "openpose.network=hourglass", "openpose.stacks=1",
            "openpose.channels=16", "keypoint.input_size=64", "keypoint.val_input_size=64", "infer.input_size=64",
            "train.batch_size=4", "train.num_workers=0", "train.log_every=1", "train.visualize_every=2",
            "train.eval_every=1", "train.epochs=1", "train.amp=none", "train.channels_last=false"]


def config(*overrides):
    return load_config(CONFIG, list(overrides))


def test_the_family_switch_picks_the_family():
    assert families.of(config()).name == "openpose"
    assert families.of(load_config(REPO / "configs/synthetic_small.yaml")).name == "multiposenet"
    with pytest.raises(ConfigError, match="no detection stage"):
        families.of(config()).check_stage("detection")


def test_dataset_gives_the_family_targets_on_the_network_grid(tiny_synthetic):
    for network, stride in (("shufflenetv2", 8), ("hourglass", 4)):
        cfg = config(f"data.root={tiny_synthetic}", f"openpose.network={network}", "keypoint.input_size=96",
                     "keypoint.augment=true")
        sample = build.keypoint_dataset(cfg, "train2017", train=True, **build.paf_targets(cfg))[0][1]
        cells = 96 // stride
        assert sample["heatmaps"].shape == (19, cells, cells)
        assert sample["pafs"].shape == (38, cells, cells)
        assert sample["ignore_mask"].shape == (1, cells, cells)
        # the background is one minus the strongest part
        assert torch.allclose(sample["heatmaps"][-1], 1 - sample["heatmaps"][:-1].max(0).values)
        # PAF vectors are unit vectors or zero (an average of unit vectors where limbs overlap)
        norm = sample["pafs"].view(19, 2, cells, cells).norm(dim=1)
        assert float(norm.max()) <= 1 + 1e-5 and float(norm.max()) > 0.99


@pytest.fixture(scope="module")
def quickstart_world(tmp_path_factory):
    """A few images of the quickstart's world (people side by side, no crowds or occluders)."""
    from posenet.data.synthetic import write_synthetic_coco

    root = tmp_path_factory.mktemp("quickstart_world")
    write_synthetic_coco(root, num_train=4, num_val=6, seed=5, workers=1, progress=False,
                         generator=build.synthetic_generator(config().synthetic))
    return root


def test_the_targets_decode_back_to_the_people(quickstart_world):
    """Round trip: annotations -> dataset targets -> peaks + PAF grouping -> the same people."""
    cfg = config(f"data.root={quickstart_world}", "keypoint.val_input_size=320", "infer.input_size=320")
    dataset = build.keypoint_dataset(cfg, "val2017", train=False, **build.paf_targets(cfg))
    predictor = PafPredictor.from_config(cfg, build.paf_network(cfg))
    errors = []
    for index in range(len(dataset)):
        image, target = dataset[index]
        kps = target["keypoints"].numpy()
        whole = [p for p in OPENPOSE_18.encode(kps) if (p[:, 2] > 0).all()]
        maps = torch.cat([target["heatmaps"], target["pafs"]])
        people = predictor.group(maps, np.eye(2, 3), dataset.input_size, dataset.input_size)
        for person in whole:  # every fully labelled person comes back
            coco = OPENPOSE_18.decode(person[None])[0]
            error = np.array([np.linalg.norm(p["keypoints"][:, :2] - coco[:, :2], axis=-1) for p in people])
            errors.append(error[error.max(1).argmin()])
    errors = np.concatenate(errors)
    # every part of every such person within half a pixel, most much closer
    assert len(errors) > 100 and errors.max() < 0.5 and np.median(errors) < 0.1


def test_flipping_the_pafs_back_matches_the_mirrored_people():
    limbs = OPENPOSE_18.layout.skeleton
    index, sign = paf_flip_index(limbs, OPENPOSE_18.layout.flip_index)
    codec = PafCodec((64, 96), limbs, stride=8)
    rng = np.random.default_rng(0)
    people = np.concatenate([rng.uniform(4, 90, (2, 18, 1)), rng.uniform(4, 60, (2, 18, 1)), np.ones((2, 18, 1))], -1)
    mirrored = people[:, OPENPOSE_18.layout.flip_index].copy()
    mirrored[..., 0] = 95 - mirrored[..., 0]  # width 96: a multiple of the stride, cells mirror onto cells
    fields = torch.from_numpy(codec.encode(mirrored))
    assert torch.allclose(flip_back(fields, index, sign), torch.from_numpy(codec.encode(people)), atol=1e-6)


def test_a_release_file_as_model_pretrained_sets_every_weight(tmp_path):
    from posenet.models.openpose import OpenPoseNet, release_state_dict

    torch.manual_seed(0)
    reference = OpenPoseNet(stages=2)
    path = tmp_path / "pose_model.pth"
    torch.save(release_state_dict(reference), path)
    model = build.paf_network(config("openpose.network=vgg19", "openpose.stages=2", f"model.pretrained={path}"))
    assert model.preprocessing == "caffe"
    x = torch.randint(0, 255, (1, 3, 48, 40), dtype=torch.uint8)
    reference.preprocessing = "caffe"
    with torch.no_grad():
        assert torch.equal(model.eval()(x)["pafs"], reference.eval()(x)["pafs"])


def test_detection_and_prn_stages_refuse_the_openpose_family():
    for script, more in (("train_detection.py", ["--init", "x.pt"]), ("train_prn.py", []),
                         ("val_detection.py", ["--checkpoint", "x.pt"])):
        result = run_script(script, "--config", CONFIG, *more, check=False)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines()[-1].startswith("error: model.family openpose has no")


def test_train_validate_and_infer_through_the_shared_scripts(tiny_synthetic, tmp_path):
    out = tmp_path / "run"
    run_script("train_keypoint.py", "--config", str(CONFIG), *tiny_openpose(tiny_synthetic, out), "--out", str(out))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "AP" in records[-1] and records[-1]["train_loss_heatmap1"] > 0 and records[-1]["train_loss_paf1"] > 0
    saved = OmegaConf.load(out / "config.yaml")
    assert saved.model.family == "openpose"

    metrics = tmp_path / "metrics.json"
    result = run_script("val_keypoint.py", "--config", str(out / "config.yaml"), "--checkpoint", str(out / "last.pt"),
                        "--flip", "infer.scales=[1.0,1.5]", "--metrics-out", str(metrics))
    record = json.loads(metrics.read_text())
    assert record["mode"] == "end-to-end" and record["grouping"] == "paf"
    assert "scales 1, 1.5, flip on" in record["protocol"] and "protocol:" in result.stdout
    # the ceiling needs no checkpoint: the ground truth's maps stand in for the network, under the
    # release's rule here (the height is the input size), through scales and flip
    result = run_script("val_keypoint.py", "--config", str(out / "config.yaml"), "--mode", "gt-maps", "--flip",
                        "infer.scales=[1.5,1.0]", "infer.input_side=height", "--metrics-out", str(metrics))
    record = json.loads(metrics.read_text())
    assert record["mode"] == "gt-maps" and record["AP"] > 0.5 and "height" in record["protocol"]
    assert "no network" in result.stdout
    # the branch ablations: the network's PAFs with the ground truth's part heatmaps
    run_script("val_keypoint.py", "--config", str(out / "config.yaml"), "--checkpoint", str(out / "last.pt"),
               "--mode", "gt-heatmaps", "--metrics-out", str(metrics))
    record = json.loads(metrics.read_text())
    assert record["mode"] == "gt-heatmaps" and "network's PAFs" in record["protocol"] and 0 <= record["AP"] <= 1

    pictures = tmp_path / "infer"
    run_script("infer.py", "--checkpoint", str(out / "last.pt"), "--images", str(tiny_synthetic / "val2017"),
               "--out", str(pictures))
    names = {p.name.rsplit("_", 1)[-1] for p in (pictures / "pictures").iterdir()}
    assert {"heatmaps.jpg", "pafs.jpg", "skeletons.jpg", "panel.jpg"} <= names
    assert json.loads((pictures / "results.json").read_text()) is not None
    people = json.loads(next((pictures / "json").iterdir()).read_text())["people"]
    assert all(len(p["keypoints"]) == 17 * 3 for p in people)  # results in COCO's 17 keypoints


def test_a_multiposenet_checkpoint_in_an_openpose_config_is_one_clear_error(tiny_synthetic, tmp_path):
    from posenet.engine.checkpoint import save_atomic
    from posenet.errors import PosenetError

    cfg = load_config(REPO / "configs/synthetic_small.yaml", ["model.pretrained=none", "model.backbone_depth=18"])
    model = build.posenet_model(cfg, 17)
    path = tmp_path / "multiposenet.pt"
    save_atomic({"model": model.state_dict()}, path)
    with pytest.raises(PosenetError) as error:
        build.paf_network_from_checkpoint(config(), path)
    assert len(str(error.value).splitlines()) == 1


def test_the_training_benchmark_times_the_family_network(tiny_synthetic, tmp_path):
    from posenet.bench.training import time_training

    cfg = config(*tiny_openpose(tiny_synthetic, tmp_path))
    result = time_training(cfg, families.of(cfg), steps=2, warmup=1)
    assert result["samples_per_s"] > 0 and result["steps"] == 2 and result["batch_size"] == 4


@pytest.mark.parametrize("width", [64, 60])
def test_with_the_flip_test_a_mirrored_image_gives_the_mirrored_maps(width):
    """Any network, averaged with its mirrored pass, is mirror-equivariant: the maps of the
    mirrored image are the maps mirrored back (parts and limbs swapped, PAF x negated)."""
    from posenet.models.paf_networks import HourglassPafNet
    from posenet.inference.paf_predictor import PafPredictor

    torch.manual_seed(0)
    net = HourglassPafNet(stacks=1, channels=16)
    predictor = PafPredictor(net, OPENPOSE_18, input_size=width, flip=True)
    rgb = np.random.default_rng(0).integers(0, 255, (48, width, 3), dtype=np.uint8)
    maps, _, _ = predictor.network(rgb)
    mirrored, _, _ = predictor.network(np.ascontiguousarray(rgb[:, ::-1]))
    cells = width // 4  # width 60: 15 cells, and the mirrored grid falls on the same cells
    back = flip_back(mirrored[None], predictor._flip_index, predictor._flip_sign)[0]
    assert maps.shape[-1] == cells
    assert torch.allclose(back, maps, atol=1e-4)


def test_the_decode_benchmark_follows_the_config_family():
    result = run_script("benchmark.py", "decode", "--config", CONFIG, "--repeats", "3", "--input-size", "128",
                        "--people", "4", check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "PAF decoding time per image" in result.stdout
    assert "| network (hourglass, random initialisation) |" in result.stdout
    assert "4 of 4 people recovered" in result.stdout


def test_foreground_weighting_weighs_the_part_and_limb_cells():
    from posenet.models.paf_networks import HourglassPafNet

    net = HourglassPafNet(stacks=1, channels=16, foreground_weight=10.0)
    outputs = [(torch.zeros(2, 38, 4, 4), torch.zeros(2, 19, 4, 4))]
    targets = {"pafs": torch.zeros(2, 38, 4, 4), "heatmaps": torch.zeros(2, 19, 4, 4), "ignore_mask": torch.ones(2, 1, 4, 4)}
    targets["pafs"][0, 0, 1, 1] = -1.0     # one limb cell: weight 11
    targets["heatmaps"][1, 3, 2, 2] = 0.5  # one part cell: weight 6
    targets["heatmaps"][:, -1] = 1.0       # the background channel: weight 1
    targets["ignore_mask"][1, 0, 0, 0] = 0
    losses = net.compute_loss(outputs, targets)
    assert losses["loss_paf1"].item() == pytest.approx(11 * 1 / 2)
    assert losses["loss_heatmap1"].item() == pytest.approx((6 * 0.25 + 31) / 2)
    with pytest.raises(ValueError):
        HourglassPafNet(stacks=1, channels=16, foreground_weight=-1)


@pytest.mark.parametrize("mode, heat_source, paf_source", [("end-to-end", "net", "net"), ("gt-maps", "gt", "gt"),
                                                         ("gt-heatmaps", "gt", "net"), ("gt-pafs", "net", "gt")])
def test_each_validation_mode_takes_each_branch_from_its_source(mode, heat_source, paf_source):
    """The branch ablations swap exactly one branch: parts and background (P + 1 channels) or PAFs."""
    from posenet.stages.openpose import MODES, PafEvaluator

    predictor = PafPredictor.from_config(config(), build.paf_network(config()))
    channels = predictor.parts.layout.num_keypoints + 1
    target, net = torch.zeros(channels + 38, 4, 5), torch.ones(channels + 38, 4, 5)
    matrix = np.eye(2, 3)
    evaluator = object.__new__(PafEvaluator)
    evaluator.mode = mode
    if mode in ("end-to-end", "gt-maps"):
        assert MODES[mode] == ((heat_source == "gt"),) * 2
        return
    mixed = evaluator._mixed(target, (net, matrix, (4, 5)), matrix, (4, 5), predictor)
    assert bool(mixed[:channels].eq(0).all()) == (heat_source == "gt")
    assert bool(mixed[channels:].eq(0).all()) == (paf_source == "gt")
    with pytest.raises(ValueError, match="another grid"):
        evaluator._mixed(target, (net, matrix, (4, 6)), matrix, (4, 5), predictor)

