import urllib.error

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from posenet.codecs import KeypointHeatmapCodec
from posenet.errors import PosenetError
from posenet.models import (
    DetectionFPN,
    KeypointSubnet,
    PoseNet,
    ResNetTrunk,
    denormalize_image,
    normalize_image,
)

K = 17


def make_targets(n, height, width, seed=0):
    """Heatmaps of two people per image, a box-shaped segmentation, an ignored corner."""
    rng = np.random.default_rng(seed)
    codec = KeypointHeatmapCodec((height, width))
    h, w = codec.heatmap_size
    heatmaps, segmentation, mask = [], np.zeros((n, 1, h, w), np.float32), np.ones((n, 1, h, w), np.float32)
    for i in range(n):
        kps = np.concatenate([rng.uniform(8, [width - 8, height - 8], (2, K, 2)), np.ones((2, K, 1))], -1)
        heatmaps.append(codec.encode(kps))
        segmentation[i, 0, h // 4: 3 * h // 4, w // 4: w // 2] = 1
        mask[i, 0, : h // 5, : w // 5] = 0
    return {
        "heatmaps": torch.from_numpy(np.stack(heatmaps)),
        "segmentation": torch.from_numpy(segmentation),
        "ignore_mask": torch.from_numpy(mask),
    }


@pytest.fixture(scope="module")
def resnet18_model():
    torch.manual_seed(0)
    return PoseNet(backbone_depth=18)


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("size", [(480, 480), (333, 517)])
def test_eval_output_shapes(depth, size):
    torch.manual_seed(0)
    model = PoseNet(backbone_depth=depth).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, *size))
    h, w = -(-size[0] // 4), -(-size[1] // 4)
    assert set(out) == {"heatmaps", "segmentation"}
    assert out["heatmaps"].shape == (1, K, h, w)
    assert out["segmentation"].shape == (1, 1, h, w)
    assert PoseNet.output_size(*size) == (h, w) == KeypointHeatmapCodec(size).heatmap_size
    assert torch.isfinite(out["heatmaps"]).all()


def test_channels_last_input_gives_the_same_output(resnet18_model):
    model = resnet18_model.eval()
    x = torch.randn(2, 3, 72, 100)
    with torch.inference_mode():
        a = model(x)["heatmaps"]
        b = model(x.contiguous(memory_format=torch.channels_last))["heatmaps"]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_subnet_convs_are_followed_by_relu():
    subnet = KeypointSubnet()
    for block in subnet.levels:
        assert [type(m) for m in block] == [nn.Conv2d, nn.ReLU, nn.Conv2d, nn.ReLU]
        assert (block[0].in_channels, block[0].out_channels, block[2].out_channels) == (256, 128, 128)
    assert [type(m) for m in subnet.fuse] == [nn.Conv2d, nn.ReLU]
    assert (subnet.fuse[0].in_channels, subnet.fuse[0].out_channels) == (512, 256)
    assert subnet.predict.out_channels == K + 1 and subnet.predict.kernel_size == (1, 1)

    seen = []

    def non_negative(module, args, output=None):
        seen.append(bool((args[0] if output is None else output).min() >= 0))

    for block in subnet.levels:
        block[2].register_forward_pre_hook(non_negative)  # after the first conv's ReLU
        block.register_forward_hook(non_negative)  # after the second
    subnet.predict.register_forward_pre_hook(non_negative)  # after the fusing conv's ReLU
    torch.manual_seed(0)
    features = [torch.randn(1, 256, 32 // 2**i, 32 // 2**i) for i in range(4)]
    out = subnet.eval()(features)
    assert len(seen) == 9 and all(seen)
    assert out["heatmaps"].min() < 0  # the outputs themselves are linear


def test_intermediate_supervision_gives_one_loss_per_level(resnet18_model):
    model = resnet18_model.train()
    targets = make_targets(2, 64, 96)
    losses = model(torch.randn(2, 3, 64, 96), targets)
    levels = {"loss_k2", "loss_k3", "loss_k4", "loss_k5"}
    assert set(losses) == {"loss", "loss_heatmap", "loss_segmentation"} | levels
    parts = sum(v for k, v in losses.items() if k != "loss")
    torch.testing.assert_close(losses["loss"], parts)
    assert all(losses[k] > 0 for k in levels)

    plain = PoseNet(backbone_depth=18, intermediate_supervision=False).train()
    assert set(plain(torch.randn(2, 3, 64, 96), targets)) == {"loss", "loss_heatmap", "loss_segmentation"}

    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96), targets)
    assert set(out) == {"heatmaps", "segmentation", "losses"}
    assert levels <= set(out["losses"])
    with pytest.raises(ValueError, match="targets"):
        model.train()(torch.randn(1, 3, 64, 64))


def test_loss_is_zero_at_the_target_and_ignores_masked_pixels():
    subnet = KeypointSubnet()
    targets = make_targets(3, 64, 64)
    exact = torch.cat([targets["heatmaps"], targets["segmentation"]], 1)
    outputs = {"heatmaps": exact[:, :K], "segmentation": exact[:, K:], "intermediate": [exact] * 4}
    losses = subnet.compute_loss(outputs, targets)
    assert all(v.item() == 0 for v in losses.values())

    ignored = targets["ignore_mask"] == 0
    noisy = exact + 5.0 * ignored  # changed only where ignored
    outputs = {"heatmaps": noisy[:, :K], "segmentation": noisy[:, K:], "intermediate": [noisy] * 4}
    assert all(v.item() == 0 for v in subnet.compute_loss(outputs, targets).values())

    off = exact + 0.5 * ~ignored  # changed everywhere else
    outputs = {"heatmaps": off[:, :K], "segmentation": off[:, K:], "intermediate": [off] * 4}
    losses = subnet.compute_loss(outputs, targets)
    kept = (~ignored).sum().item()  # unmasked pixels of the batch, per channel
    # Summed over channels and pixels, averaged over the batch.
    assert losses["loss_heatmap"].item() == pytest.approx(0.25 * kept * K / 3, rel=1e-5)
    assert losses["loss_segmentation"].item() == pytest.approx(0.25 * kept / 3, rel=1e-5)
    assert losses["loss_k2"].item() == pytest.approx(0.25 * kept * (K + 1) / 3, rel=1e-5)

    with pytest.raises(ValueError, match="do not match"):
        subnet.compute_loss(outputs, make_targets(3, 32, 32))


def test_foreground_weight_scales_each_heatmap_pixel_by_one_plus_w_times_its_target():
    targets = make_targets(2, 128, 128)
    pred = torch.rand(2, K + 1, 32, 32, generator=torch.Generator().manual_seed(1))
    outputs = {"heatmaps": pred[:, :K], "segmentation": pred[:, K:], "intermediate": [pred] * 4}
    plain = KeypointSubnet().compute_loss(outputs, targets)
    weighted = KeypointSubnet(foreground_weight=9.0).compute_loss(outputs, targets)
    mask, heat = targets["ignore_mask"], targets["heatmaps"]
    expected = ((pred[:, :K] - heat).square() * mask * (1 + 9.0 * heat)).sum() / 2
    assert weighted["loss_heatmap"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert weighted["loss_heatmap"] > plain["loss_heatmap"]
    # segmentation keeps its plain L2; the intermediate heatmaps get the same weights
    assert weighted["loss_segmentation"].item() == pytest.approx(plain["loss_segmentation"].item(), rel=1e-6)
    assert weighted["loss_k2"] > plain["loss_k2"]
    assert KeypointSubnet(foreground_weight=0.0).compute_loss(outputs, targets)["loss_heatmap"] == plain["loss_heatmap"]


def test_gradient_reaches_the_trunk(resnet18_model):
    model = resnet18_model.train()
    model.zero_grad()
    model(torch.randn(1, 3, 64, 64), make_targets(1, 64, 64))["loss"].backward()
    for param in (model.trunk.conv1.weight, model.trunk.layer1[0].conv1.weight, model.trunk.layer4[1].conv2.weight):
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_overfits_a_tiny_batch():
    """Adam at the recipe's 1e-4 fits two people's heatmaps well below predicting zeros.

    From random weights the trunk needs trainable BN: frozen BN is an identity there. 64-channel
    FPN and subnet at 96 px: the same property at a quarter of the default model's cost.
    """
    torch.manual_seed(0)
    model = PoseNet(backbone_depth=18, frozen_bn=False, fpn_channels=64, subnet_channels=64, fuse_channels=64).train()
    images = torch.randn(2, 3, 96, 96)
    targets = make_targets(2, 96, 96, seed=1)
    mask = targets["ignore_mask"]
    zero_heatmap = (targets["heatmaps"].square() * mask).sum().item() / 2
    zero_segmentation = (targets["segmentation"].square() * mask).sum().item() / 2
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    history = []
    for _ in range(30):
        losses = model(images, targets)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        history.append({k: v.item() for k, v in losses.items()})
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["loss_heatmap"] < 0.5 * zero_heatmap
    assert history[-1]["loss_segmentation"] < 0.5 * zero_segmentation


def test_frozen_batch_norm_stays_frozen():
    trunk = ResNetTrunk(depth=18)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in trunk.modules())
    frozen = [m for m in trunk.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(frozen) == 20
    # Make the statistics non-trivial so a change would show.
    for m in frozen:
        m.running_mean.uniform_(-0.1, 0.1)
        m.running_var.uniform_(0.5, 1.5)
    before = {k: v.clone() for k, v in trunk.state_dict().items() if "bn" in k or "downsample.1" in k}
    assert not any("bn" in name for name, _ in trunk.named_parameters())
    optimizer = torch.optim.Adam(trunk.parameters(), lr=1e-2)
    trunk.train()
    for _ in range(2):
        loss = sum(c.square().mean() for c in trunk(torch.randn(2, 3, 64, 64)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = trunk.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)

    plain = ResNetTrunk(depth=18, frozen_bn=False)
    assert any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())


def test_trainable_layers():
    trunk = ResNetTrunk(depth=18, trainable_layers=3)
    trainable = {name.split(".")[0] for name, p in trunk.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"}
    assert not any(p.requires_grad for p in ResNetTrunk(depth=18, trainable_layers=0).parameters())
    assert all(p.requires_grad for p in ResNetTrunk(depth=18, trainable_layers=5).parameters())


def test_imagenet_weights_offline_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(PosenetError) as err:
        ResNetTrunk(depth=18, pretrained="imagenet")
    message = str(err.value)
    assert "resnet18-f37072fd.pth" in message and str(tmp_path / "torch") in message
    assert "pretrained: none" in message and "pretrained: <path" in message
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_imagenet_weights_come_from_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = torchvision.models.resnet18()
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)
    trunk = ResNetTrunk(depth=18, pretrained="imagenet")
    torch.testing.assert_close(trunk.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)
    torch.testing.assert_close(trunk.bn1.running_var, reference.bn1.running_var)


def test_local_weight_files(tmp_path):
    good = tmp_path / "r18.pth"
    reference = torchvision.models.resnet18()
    torch.save({"state_dict": reference.state_dict()}, good)  # a wrapping checkpoint is fine
    trunk = ResNetTrunk(depth=18, pretrained=good, frozen_bn=False)
    torch.testing.assert_close(trunk.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)

    other = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), other)
    with pytest.raises(PosenetError, match=r"r34\.pth: not a resnet18 state dict: .*unexpected"):
        ResNetTrunk(depth=18, pretrained=other)
    with pytest.raises(PosenetError, match=r"r18\.pth: not a resnet50 state dict: .*wrongly shaped"):
        ResNetTrunk(depth=50, pretrained=good)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(PosenetError, match="garbage.pth: cannot read"):
        ResNetTrunk(depth=18, pretrained=garbage)
    with pytest.raises(PosenetError, match="missing.pth: pretrained weight file not found"):
        ResNetTrunk(depth=18, pretrained=tmp_path / "missing.pth")


@pytest.mark.parametrize("size", [(256, 320), (333, 517)])
def test_detection_fpn_levels_and_strides(size):
    trunk = ResNetTrunk(depth=18).eval()
    fpn = DetectionFPN(trunk.out_channels)
    with torch.no_grad():
        levels = fpn(trunk(torch.randn(1, 3, *size)))
    assert len(levels) == 5
    h, w = size
    for level, p in zip(range(3, 8), levels):
        for _ in range(level):
            h, w = -(-h // 2), -(-w // 2)  # each stride-2 step rounds up
        assert p.shape == (1, 256, h, w), level
        h, w = size


def test_image_normalisation_round_trip():
    image = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    x = normalize_image(image)
    assert x.dtype == torch.float32
    assert torch.equal(denormalize_image(x), image)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1) * 255
    assert normalize_image(mean.expand(3, 4, 4)).abs().max() < 1e-6
    with pytest.raises(ValueError):
        normalize_image(torch.zeros(4, 5, 5))


def test_any_trunk_of_the_interface_feeds_the_fpns_and_a_wrong_one_is_refused():
    """The backbone interface: four maps at strides 4..32 with declared channels."""
    from posenet.models.backbone import TRUNKS, Trunk

    class TinyTrunk(Trunk):
        out_channels = (8, 16, 24, 32)

        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else self.out_channels[i - 1], c, 3,
                                                 stride=4 if i == 0 else 2, padding=1)
                                       for i, c in enumerate(self.out_channels))

        def forward(self, x):
            outs = []
            for conv in self.convs:
                x = conv(x)
                outs.append(x)
            return tuple(outs)

    model = PoseNet(num_keypoints=5, trunk=TinyTrunk(), fpn_channels=16, subnet_channels=8, fuse_channels=16).eval()
    out = model(torch.zeros(1, 3, 64, 96, dtype=torch.uint8))
    assert out["heatmaps"].shape == (1, 5, 16, 24)

    class Wrong(TinyTrunk):
        strides = (8, 16, 32, 64)

    with pytest.raises(ValueError, match="strides 4, 8, 16, 32"):
        PoseNet(trunk=Wrong())
    assert "resnet" in TRUNKS
