"""The OpenPose family's other trunks, as the original PyTorch port trained them, and the
registry of the family's networks (``PAF_NETWORKS``).

* ``ShuffleNetPafNet``: torchvision's ShuffleNetV2 features at stride 8, then one stage of the
  two branches (the first stage's layer table of ``OpenPoseNet``).
* ``HourglassPafNet``: stacked hourglasses (Newell et al., ECCV 2016) at stride 4, every stack
  predicting PAFs and heatmaps and every stack supervised.
* ``ResNetFpnPafNet``: MultiPoseNet's keypoint network (a torchvision ResNet, the keypoint
  feature pyramid and the keypoint subnet's fusion) at stride 4, predicting PAFs and heatmaps.

All are ``PafNetwork``s: the same inputs (RGB images in 0..255, any size), outputs and loss.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from posenet.models.backbone import KeypointFPN, RESNET_DEPTHS, ResNetTrunk, torchvision_weights
from posenet.models.keypoint_head import fuse_pyramid, pyramid_fusion
from posenet.models.openpose import PAF_NETWORKS, PafNetwork, stage_branch

SHUFFLENET_WIDTHS = ("x0_5", "x1_0", "x1_5", "x2_0")
HOURGLASS_DEPTH = 4  # max-pools inside one hourglass


def _dilate(stage: nn.Sequential, dilation: int) -> None:
    """Run a ShuffleNetV2 stage at stride 1: its 3×3 (depthwise) convolutions at stride 1 and
    ``dilation``, the first block's at half of it (the previous stage's), as torchvision's
    dilated ResNets do. The first block keeps its ``stride`` attribute (2): it selects the
    block's two-branch form in ``InvertedResidual.forward``, which the weights are for."""
    for i, block in enumerate(stage):
        d = dilation // 2 if i == 0 else dilation
        for m in block.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
                m.stride, m.dilation, m.padding = (1, 1), (d, d), (d, d)


class ShuffleNetV2Trunk(nn.Module):
    """torchvision's ShuffleNetV2 (``shufflenet_v2_<width>``) features at stride 8.

    ``conv1``, ``maxpool`` and ``stage2`` as they are (stride 8); ``stage3`` and ``stage4`` at
    stride 1, dilated 2 and 4 (see ``_dilate``), so all of the ImageNet weights are used and
    the receptive field is the classifier's; ``conv5`` and ``fc`` are dropped. The module
    names are torchvision's, so its state dicts load as they are. ``out_channels``: stage4's
    (192, 464, 704, 976 for x0_5, x1_0, x1_5, x2_0).
    """

    stride = 8

    def __init__(self, width: str = "x1_0"):
        super().__init__()
        if width not in SHUFFLENET_WIDTHS:
            raise ValueError(f"ShuffleNetV2 width must be one of {SHUFFLENET_WIDTHS}, got {width!r}")
        self.arch = f"shufflenet_v2_{width}"
        net = getattr(torchvision.models, self.arch)(weights=None)
        self.conv1, self.maxpool, self.stage2, self.stage3, self.stage4 = (
            net.conv1, net.maxpool, net.stage2, net.stage3, net.stage4
        )
        _dilate(self.stage3, 2)
        _dilate(self.stage4, 4)
        self.out_channels = net.conv5[0].in_channels

    def load_pretrained(self, pretrained: str | os.PathLike) -> None:
        """torchvision's weights of this width ("imagenet" or a state-dict file)."""
        state = torchvision_weights(pretrained, self.arch, self.state_dict(),
                                    keep=lambda key: not key.startswith(("conv5.", "fc.")))
        self.load_state_dict(state, strict=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage4(self.stage3(self.stage2(self.maxpool(self.conv1(x)))))


@PAF_NETWORKS.register("shufflenetv2", width="shufflenet_width")
class ShuffleNetPafNet(PafNetwork):
    """ShuffleNetV2 trunk at stride 8, a 3×3 convolution to 128 features (ReLU), then a single
    stage: a PAF branch (2L channels) and a heatmap branch (P + 1), each OpenPose's first-stage
    branch (3 × 3×3 conv 128, 1×1 conv 512, 1×1 conv out).

    ``width``: "x0_5", "x1_0", "x1_5" or "x2_0". ``pretrained``: "none" (random), "imagenet"
    (torchvision's ImageNet weights of that width, from the torch hub cache) or the path of a
    torchvision ``shufflenet_v2_<width>`` state-dict file; it initialises the trunk.
    """

    output_stride = 8
    input_divisor = 8

    def __init__(self, num_parts: int = 18, num_limbs: int = 19, width: str = "x1_0",
                 pretrained: str | os.PathLike = "none", preprocessing: str = "imagenet",
                 foreground_weight: float = 0.0):
        super().__init__(num_parts, num_limbs, preprocessing, pretrained, foreground_weight)
        self.trunk = ShuffleNetV2Trunk(width)
        self.cpm = nn.Sequential(nn.Conv2d(self.trunk.out_channels, 128, 3, padding=1), nn.ReLU(inplace=True))
        self.paf_branch = stage_branch(128, 2 * num_limbs, first=True)
        self.heatmap_branch = stage_branch(128, num_parts + 1, first=True)
        if str(pretrained) != "none":
            self.trunk.load_pretrained(pretrained)

    def _stage_outputs(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        features = self.cpm(self.trunk(x))
        return [(self.paf_branch(features), self.heatmap_branch(features))]


class Residual(nn.Module):
    """The hourglass paper's residual block: pre-activation bottleneck (BN, ReLU, 1×1 conv to
    half the channels, BN, ReLU, 3×3, BN, ReLU, 1×1 to ``out_channels``) plus the input, through
    a 1×1 convolution where the channels change."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 2
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True), nn.Conv2d(in_channels, mid, 1),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, mid, 3, padding=1),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, out_channels, 1),
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class Hourglass(nn.Module):
    """One hourglass of ``depth`` levels: at each, a residual branch at this resolution plus
    max-pool 2, residual, the next level (a residual at the bottom), residual, nearest ×2
    upsampling. Input sides must be multiples of 2 ** depth."""

    def __init__(self, depth: int, channels: int):
        super().__init__()
        self.skip = Residual(channels, channels)
        self.down = Residual(channels, channels)
        self.inner = Hourglass(depth - 1, channels) if depth > 1 else Residual(channels, channels)
        self.up = Residual(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.up(self.inner(self.down(F.max_pool2d(x, 2))))
        return self.skip(x) + F.interpolate(low, scale_factor=2, mode="nearest")


@PAF_NETWORKS.register("hourglass", stacks="stacks", channels="channels")
class HourglassPafNet(PafNetwork):
    """Stacked hourglasses at stride 4 (trained at 256 × 256 in the paper; any input works, it
    is padded to a multiple of 64).

    Stem: 7×7 conv 64 stride 2, BN, ReLU, residual to 128, max-pool 2, residual, residual to
    ``channels``. Each of ``stacks`` stacks: an hourglass of depth 4, a residual, 1×1 conv, BN,
    ReLU, then 1×1 convolutions to the PAFs (2L) and heatmaps (P + 1); but for the last, its
    features and its predictions (through 1×1 convolutions) are added to its input for the
    next stack. Every stack is supervised: ``stage_outputs`` has one (PAFs, heatmaps) a stack.
    """

    output_stride = 4
    input_divisor = 4 * 2 ** HOURGLASS_DEPTH

    def __init__(self, num_parts: int = 18, num_limbs: int = 19, stacks: int = 8, channels: int = 256,
                 preprocessing: str = "imagenet", foreground_weight: float = 0.0):
        super().__init__(num_parts, num_limbs, preprocessing, foreground_weight=foreground_weight)
        if stacks < 1:
            raise ValueError(f"stacks must be at least 1, got {stacks}")
        if channels < 2 or channels % 2:
            raise ValueError(f"channels must be a positive even number, got {channels}")
        c, p, k = channels, 2 * num_limbs, num_parts + 1
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, stride=2, padding=3), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            Residual(64, 128), nn.MaxPool2d(2, 2), Residual(128, 128), Residual(128, c),
        )
        self.hourglasses = nn.ModuleList(Hourglass(HOURGLASS_DEPTH, c) for _ in range(stacks))
        self.features = nn.ModuleList(
            nn.Sequential(Residual(c, c), nn.Conv2d(c, c, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
            for _ in range(stacks)
        )
        self.paf_heads = nn.ModuleList(nn.Conv2d(c, p, 1) for _ in range(stacks))
        self.heatmap_heads = nn.ModuleList(nn.Conv2d(c, k, 1) for _ in range(stacks))
        self.merge_features = nn.ModuleList(nn.Conv2d(c, c, 1) for _ in range(stacks - 1))
        self.merge_outputs = nn.ModuleList(nn.Conv2d(p + k, c, 1) for _ in range(stacks - 1))

    def _stage_outputs(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        x = self.stem(x)
        outputs = []
        for i, (hourglass, features) in enumerate(zip(self.hourglasses, self.features)):
            y = features(hourglass(x))
            pafs, heat = self.paf_heads[i](y), self.heatmap_heads[i](y)
            outputs.append((pafs, heat))
            if i < len(self.merge_features):
                x = x + self.merge_features[i](y) + self.merge_outputs[i](torch.cat([pafs, heat], dim=1))
        return outputs


@PAF_NETWORKS.register("resnet_fpn", depth="resnet_depth", channels="channels")
class ResNetFpnPafNet(PafNetwork):
    """MultiPoseNet's keypoint network with the OpenPose family's outputs, at stride 4: a
    torchvision ResNet of ``depth`` (C2..C5, trained batch norm), the keypoint feature pyramid
    (K2..K5, ``channels``), the keypoint subnet's fusion (two 3x3 convs of ``channels`` per
    level, upsampled to K2 and concatenated, a 3x3 conv of ``channels``) and two 1x1 convs: the
    PAFs and the part heatmaps. One supervised stage. Multi-scale features at stride 4 are what
    memorise the keypoint heatmaps of real images quickly (docs/results.md, the overfit proofs).

    ``pretrained``: "none", "imagenet" or the path of a torchvision ResNet state-dict file of
    this depth (the trunk's weights)."""

    output_stride = 4
    input_divisor = 32

    def __init__(self, num_parts: int = 18, num_limbs: int = 19, depth: int = 50, channels: int = 256,
                 preprocessing: str = "imagenet", pretrained: str | os.PathLike = "none",
                 foreground_weight: float = 0.0):
        super().__init__(num_parts, num_limbs, preprocessing, pretrained, foreground_weight)
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"ResNet depth must be one of {RESNET_DEPTHS}, got {depth}")
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}")
        self.trunk = ResNetTrunk(depth, pretrained=pretrained, frozen_bn=False)
        self.fpn = KeypointFPN(self.trunk.out_channels, channels)
        self.levels, self.fuse = pyramid_fusion(channels, channels, channels, num_levels=4)
        self.paf_head = nn.Conv2d(channels, 2 * num_limbs, 1)
        self.heatmap_head = nn.Conv2d(channels, num_parts + 1, 1)
        for m in [*self.levels.modules(), *self.fuse.modules()]:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        # Outputs start near 0, the value of almost every PAF and part cell.
        for head in (self.paf_head, self.heatmap_head):
            nn.init.normal_(head.weight, std=0.001)
            nn.init.zeros_(head.bias)

    def _stage_outputs(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        y = fuse_pyramid(self.levels, self.fuse, self.fpn(self.trunk(x)))
        return [(self.paf_head(y), self.heatmap_head(y))]


def build_paf_network(name: str, **kwargs) -> PafNetwork:
    """The network of ``PAF_NETWORKS`` named ``name``, built with its constructor's keywords."""
    return PAF_NETWORKS[name](**kwargs)


__all__ = ["PAF_NETWORKS", "HourglassPafNet", "ResNetFpnPafNet", "ShuffleNetPafNet", "ShuffleNetV2Trunk", "build_paf_network"]
