"""Batch norm folded into the convolutions (posenet.models.fuse): the same outputs (1e-4
relative) for MultiPoseNet (frozen and trainable batch norm, detection head) and the OpenPose
family's networks with batch norm, every post-conv batch norm gone, the original left as it was."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from posenet.inference.paf_predictor import PafPredictor
from posenet.inference.predictor import Predictor
from posenet.models import PoseNet, ResNetTrunk
from posenet.models.fuse import BATCH_NORMS, fold_batchnorm, foldable_pairs
from posenet.models.paf_networks import HourglassPafNet, ShuffleNetPafNet
from posenet.models.prn import PoseResidualNetwork
from posenet.models.retinanet import RetinaNetHead

pytestmark = pytest.mark.usefixtures("single_thread")


def randomise_batch_norms(model: nn.Module, seed: int = 0) -> None:
    """Statistics and affine parameters far from the identity a fresh batch norm is."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BATCH_NORMS):
                c = m.running_mean.numel()
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.2)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.3)


def assert_close(folded: torch.Tensor, reference: torch.Tensor) -> None:
    scale = reference.abs().max().clamp_min(1e-12)
    assert (folded - reference).abs().max() <= 1e-4 * scale, float((folded - reference).abs().max() / scale)


def posenet(frozen_bn: bool) -> PoseNet:
    torch.manual_seed(0)
    model = PoseNet(num_keypoints=17, trunk=ResNetTrunk(depth=18, frozen_bn=frozen_bn),
                    detection_head=RetinaNetHead(256), prn=PoseResidualNetwork(hidden=16))
    randomise_batch_norms(model)
    return model.eval()


@pytest.mark.parametrize("frozen_bn", [True, False])
def test_posenet_outputs_are_unchanged(frozen_bn):
    model = posenet(frozen_bn)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randint(0, 256, (2, 3, 96, 72), dtype=torch.uint8)
    folded = fold_batchnorm(model)
    with torch.no_grad():
        ref, out = model(images), folded(images)
    for key in ("heatmaps", "segmentation"):
        assert_close(out[key], ref[key])
    assert_close(out["detection"]["cls_logits"], ref["detection"]["cls_logits"])
    assert_close(out["detection"]["box_deltas"], ref["detection"]["box_deltas"])
    # every batch norm of the ResNet follows a convolution: 1 stem + 2 per block + 3 downsamples
    assert len(foldable_pairs(model)) == 20
    assert not any(isinstance(m, BATCH_NORMS) for m in folded.modules())
    assert not folded.training
    # the original is untouched; what was not folded is shared, not copied
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert sum(isinstance(m, BATCH_NORMS) for m in model.modules()) == 20
    assert folded.prn.first_layer.weight is model.prn.first_layer.weight
    assert folded.trunk.conv1.weight is not model.trunk.conv1.weight


def test_resnet50_has_53_pairs_and_inplace_folds_the_model_itself():
    trunk = ResNetTrunk(depth=50).eval()
    assert len(foldable_pairs(trunk)) == 53
    randomise_batch_norms(trunk, seed=2)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = trunk(x)
        same = fold_batchnorm(trunk, inplace=True)
        out = trunk(x)
    assert same is trunk and not foldable_pairs(trunk)
    for a, b in zip(out, ref):
        assert_close(a, b)


@pytest.mark.parametrize("make, left", [
    (lambda: ShuffleNetPafNet(num_parts=5, num_limbs=4, width="x0_5"), 0),
    # the pre-activation residuals' first batch norm comes before its convolution: 3 residuals
    # in the stem, 3 per hourglass level + 1 at the bottom, 1 after the hourglass
    (lambda: HourglassPafNet(num_parts=5, num_limbs=4, stacks=1, channels=16), 3 + 3 * 4 + 1 + 1),
])
def test_openpose_family_outputs_are_unchanged(make, left):
    torch.manual_seed(0)
    net = make()
    randomise_batch_norms(net, seed=1)
    net.eval()
    images = torch.randint(0, 256, (1, 3, 64, 80), dtype=torch.uint8)
    folded = fold_batchnorm(net)
    with torch.no_grad():
        ref, out = net(images), folded(images)
    assert_close(out["pafs"], ref["pafs"])
    assert_close(out["heatmaps"], ref["heatmaps"])
    assert sum(isinstance(m, BATCH_NORMS) for m in folded.modules()) == left
    assert foldable_pairs(net)


def test_a_training_model_is_refused():
    model = posenet(frozen_bn=False).train()
    with pytest.raises(ValueError, match="eval-mode"):
        fold_batchnorm(model)


# --------------------------------------------------------------------------- the predictors


def _cfg(name: str, *overrides):
    from posenet.config import load_config

    from tests.conftest import REPO

    return load_config(REPO / "configs" / name, list(overrides))


def test_predictions_are_unchanged_with_folding_and_channels_last():
    cfg = _cfg("synthetic_small.yaml", "infer.grouping=greedy", "infer.input_size=64", "infer.box_threshold=0",
               "detection.score_threshold=0", "infer.flip=true", "infer.scales=[1.0,0.75]")
    model = posenet(frozen_bn=False)  # a loaded checkpoint's model: eval mode, trained statistics
    fast = Predictor.from_config(cfg, model)
    plain = Predictor.from_config(OmegaConf.merge(cfg, {"infer": {"fold_batchnorm": False, "channels_last": False}}),
                            model)
    assert fast.model is not model and plain.model is model
    assert not any(isinstance(m, BATCH_NORMS) for m in fast.model.modules())
    assert fast.memory_format == torch.channels_last and plain.memory_format == torch.contiguous_format
    rgb = torch.Generator().manual_seed(4)
    rgb = torch.randint(0, 256, (50, 64, 3), generator=rgb, dtype=torch.uint8).numpy()
    a, b = fast.run(rgb), plain.run(rgb)
    assert_close(torch.from_numpy(a.heatmaps), torch.from_numpy(b.heatmaps))
    # random detection weights score many boxes alike: compare them (and their people) in one order
    assert len(a.boxes) == len(b.boxes) > 0
    by_box = [sorted(pred.people, key=lambda p: tuple(np.round(p["box"], 2))) for pred in (a, b)]
    for p, q in zip(*by_box):
        assert abs(p["box"] - q["box"]).max() < 1e-3
        # sub-pixel refinement on random (flat) heatmaps magnifies float rounding a little
        assert abs(p["keypoints"] - q["keypoints"]).max() < 1e-2


def test_a_training_model_is_never_folded():
    """The trainer validates its own model through a predictor: it must run that very model."""
    from posenet.config import build

    cfg = _cfg("openpose_synthetic_small.yaml", "openpose.network=hourglass", "openpose.stacks=1",
               "openpose.channels=16", "infer.input_size=64")
    torch.manual_seed(0)
    net = build.paf_network(cfg)
    randomise_batch_norms(net)
    assert net.training
    predictor = PafPredictor.from_config(cfg, net)
    assert predictor.model is net and foldable_pairs(net)
    loaded = PafPredictor.from_config(cfg, net.eval())
    assert loaded.model is not net and not foldable_pairs(loaded.model)
    assert predictor.with_model(net).model is net
    rgb = torch.randint(0, 256, (48, 64, 3), generator=torch.Generator().manual_seed(5), dtype=torch.uint8).numpy()
    maps_a, *_ = loaded.network(rgb)
    maps_b, *_ = predictor.network(rgb)
    assert_close(maps_a, maps_b)
