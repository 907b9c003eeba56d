"""The OpenPose family's networks (VGG19, ShuffleNetV2, stacked hourglasses, ResNet-FPN): outputs at their
strides for any input size, one loss term pair a supervised stage, training moving the loss,
the eval and train outputs, and torchvision weights from a file or the hub cache, with one
clear error for anything else."""
from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

from posenet.errors import ConfigError, PosenetError
from posenet.models.openpose import OpenPoseNet, PafNetwork
from posenet.models.paf_networks import (PAF_NETWORKS, build_paf_network, HourglassPafNet, ResNetFpnPafNet,
    ShuffleNetPafNet)

pytestmark = pytest.mark.usefixtures("single_thread")

# small networks of each kind: constructor keywords, supervised stages, a learning rate (Adam)
SMALL = {
    "vgg19": (dict(stages=2), 2, 3e-4),
    "shufflenetv2": (dict(width="x0_5"), 1, 3e-4),
    "hourglass": (dict(stacks=2, channels=32), 2, 1e-3),
    "resnet_fpn": (dict(depth=18, channels=16), 1, 1e-3),
}
PARTS, LIMBS = 5, 4


def small(name: str, **kw) -> PafNetwork:
    torch.manual_seed(0)
    return build_paf_network(name, num_parts=PARTS, num_limbs=LIMBS, **SMALL[name][0], **kw)


def targets_for(net: PafNetwork, n: int, h: int, w: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"pafs": torch.rand(n, 2 * net.num_limbs, h, w, generator=g) * 2 - 1,
            "heatmaps": torch.rand(n, net.num_parts + 1, h, w, generator=g),
            "ignore_mask": torch.ones(n, 1, h, w)}


def test_the_registry():
    assert PAF_NETWORKS == {"vgg19": OpenPoseNet, "shufflenetv2": ShuffleNetPafNet, "hourglass": HourglassPafNet,
                            "resnet_fpn": ResNetFpnPafNet}
    assert {cls.output_stride for cls in PAF_NETWORKS.values()} == {8, 4}
    with pytest.raises(ConfigError, match="unknown openpose.network 'resnet'; choose one of hourglass, resnet_fpn, "
                                          "shufflenetv2, vgg19"):
        build_paf_network("resnet")


@pytest.mark.parametrize("name", list(SMALL))
def test_outputs_at_the_stride_for_odd_sizes_and_a_loss_pair_per_stage(name):
    net = small(name)
    assert isinstance(net, PafNetwork) and (net.num_parts, net.num_limbs) == (PARTS, LIMBS)
    s = net.output_stride
    assert s == (4 if name in ("hourglass", "resnet_fpn") else 8)
    images = torch.randint(0, 255, (2, 3, 50, 38), dtype=torch.uint8)  # no multiple of 4
    h, w = -(-50 // s), -(-38 // s)
    net.eval()
    with torch.no_grad():
        out = net(images)
    assert set(out) == {"pafs", "heatmaps"}
    assert out["pafs"].shape == (2, 2 * LIMBS, h, w) and out["heatmaps"].shape == (2, PARTS + 1, h, w)
    stages = net.stage_outputs(images[:1])
    assert len(stages) == SMALL[name][1]
    targets = targets_for(net, 2, h, w)
    with torch.no_grad():
        evaluated = net(images, targets)  # eval mode with targets: the outputs and the losses
    assert set(evaluated) == {"pafs", "heatmaps", "losses"}
    net.train()
    with pytest.raises(ValueError, match="targets are needed"):
        net(images)
    losses = net(images, targets)
    terms = {f"loss_{kind}{t}" for t in range(1, SMALL[name][1] + 1) for kind in ("paf", "heatmap")}
    assert set(losses) == terms | {"loss"}
    losses["loss_heatmap1"].backward()  # the first stage is supervised on its own
    first_head = {"vgg19": lambda: net.heatmap_branches[0][-1], "shufflenetv2": lambda: net.heatmap_branch[-1],
                  "hourglass": lambda: net.heatmap_heads[0], "resnet_fpn": lambda: net.heatmap_head}[name]()
    assert first_head.weight.grad is not None and first_head.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        net(images[:, :2])


@pytest.mark.parametrize("name", list(SMALL))
def test_the_loss_goes_down_on_one_batch(name):
    net = small(name).train()
    size = max(32, net.input_divisor)
    images = torch.randint(0, 255, (2, 3, size, size), dtype=torch.uint8)
    targets = targets_for(net, 2, size // net.output_stride, size // net.output_stride)
    optimizer = torch.optim.Adam(net.parameters(), lr=SMALL[name][2])
    history = []
    for _ in range(10):
        loss = net(images, targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    # below 0.9 of its start after 6 to 10 steps (the hourglass's takes 6 to 9 as the CPU's kernels
    # go; Adam's steps make vgg19's rise again after its fall)
    assert min(history[5:]) < 0.9 * history[0], history


def test_hourglass_supervises_every_stack():
    net = HourglassPafNet(stacks=3, channels=16)
    assert (net.output_stride, net.input_divisor) == (4, 64)
    assert len(net.hourglasses) == 3 and len(net.merge_outputs) == 2
    losses = net(torch.zeros(2, 3, 64, 64), targets_for(net, 2, 16, 16))
    assert len(losses) == 2 * 3 + 1
    losses["loss_paf3"].backward()  # the last stack's loss reaches the first hourglass
    assert net.hourglasses[0].skip.body[2].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="stacks must be at least 1"):
        HourglassPafNet(stacks=0)


def test_openpose_state_dict_keys_are_unchanged():
    keys = list(OpenPoseNet(stages=2).state_dict())
    assert keys[0] == "caffe_input" and {k.split(".")[0] for k in keys} == {
        "caffe_input", "trunk", "paf_branches", "heatmap_branches"}
    assert len(keys) == 1 + 2 * 12 + 2 * 2 * (5 + 7)
    assert OpenPoseNet().preprocessing == "imagenet"


def test_vgg19_weights_from_a_local_file(tmp_path):
    torch.manual_seed(0)
    vgg = torchvision.models.vgg19()
    path = tmp_path / "vgg19.pth"
    # the classifier is left out to keep the file small: its keys, like those of the
    # convolutions after conv4_2, are not used
    torch.save({k: v for k, v in vgg.state_dict().items() if k.startswith("features.")}, path)
    net = OpenPoseNet(stages=1, pretrained=path)
    convs = net.trunk.convs
    torch.testing.assert_close(convs[0].weight, vgg.features[0].weight)
    torch.testing.assert_close(convs[9].weight, vgg.features[21].weight)
    torch.testing.assert_close(convs[9].bias, vgg.features[21].bias)
    assert convs[10].weight.shape == (256, 512, 3, 3)  # conv4_3_CPM: not VGG19's, random
    resnet = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), resnet)
    with pytest.raises(PosenetError, match=r"r18\.pth: not a vgg19 state dict: 20 missing keys"):
        OpenPoseNet(stages=1, pretrained=resnet)
    with pytest.raises(ValueError, match="preprocessing='imagenet'"):
        OpenPoseNet(stages=1, pretrained=path, preprocessing="caffe")


def test_shufflenet_weights_from_a_local_file_and_the_hub_cache(tmp_path, monkeypatch):
    torch.manual_seed(0)
    reference = torchvision.models.shufflenet_v2_x0_5()
    path = tmp_path / "shufflenet.pth"
    torch.save(reference.state_dict(), path)
    net = ShuffleNetPafNet(width="x0_5", pretrained=path)
    torch.testing.assert_close(net.trunk.stage4[2].branch2[3].weight, reference.stage4[2].branch2[3].weight)
    torch.testing.assert_close(net.trunk.conv1[1].running_var, reference.conv1[1].running_var)
    # the dilated trunk computes the classifier's features up to stage2, where strides stay
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = net.trunk.eval().stage2(net.trunk.maxpool(net.trunk.conv1(x)))
        theirs = reference.eval().stage2(reference.maxpool(reference.conv1(x)))
    torch.testing.assert_close(ours, theirs)
    with pytest.raises(PosenetError, match=r"shufflenet\.pth: not a shufflenet_v2_x1_0 state dict: .*wrong"):
        ShuffleNetPafNet(width="x1_0", pretrained=path)

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "shufflenetv2_x0.5-f707e7126e.pth"
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)
    net = ShuffleNetPafNet(width="x0_5", pretrained="imagenet")
    torch.testing.assert_close(net.trunk.stage3[0].branch1[2].weight, reference.stage3[0].branch1[2].weight)


def test_missing_weights_are_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    for make, file in ((lambda: OpenPoseNet(stages=1, pretrained="imagenet"), "vgg19-dcbb9e9d.pth"),
                       (lambda: ShuffleNetPafNet(pretrained="imagenet"), "shufflenetv2_x1-5666bf0f80.pth")):
        with pytest.raises(PosenetError) as err:
            make()
        message = str(err.value)
        assert file in message and str(tmp_path / "torch" / "hub" / "checkpoints") in message
        assert "pretrained: none" in message and err.value.__cause__ is None
    with pytest.raises(PosenetError, match="imagenet1k: pretrained weight file not found"):
        ShuffleNetPafNet(width="x0_5", pretrained="imagenet1k")
    with pytest.raises(PosenetError, match="nope.pth: pretrained weight file not found"):
        OpenPoseNet(stages=1, pretrained=tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="width must be one of"):
        ShuffleNetPafNet(width="x3_0")
