"""ResNet trunk (C2..C5), the two feature pyramids on it, and the input normalisation."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.hub import load_state_dict_from_url
from torchvision.ops import FrozenBatchNorm2d

from posenet.errors import PosenetError
from posenet.utils.registry import Registry

# ImageNet statistics of torchvision's weights, for RGB images scaled to [0, 1]. The data
# pipeline and inference both normalise through ``normalize_image`` so they cannot disagree.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)

RESNET_DEPTHS = (18, 34, 50, 101, 152)


def normalize_image(image: torch.Tensor) -> torch.Tensor:
    """RGB image(s) (..., 3, H, W), uint8 or float in 0..255 -> float32 network input."""
    if image.dim() < 3 or image.shape[-3] != 3:
        raise ValueError(f"expected RGB image(s) of shape (..., 3, H, W), got {tuple(image.shape)}")
    mean = torch.tensor(IMAGE_MEAN, device=image.device).view(3, 1, 1) * 255.0
    std = torch.tensor(IMAGE_STD, device=image.device).view(3, 1, 1) * 255.0
    return (image.float() - mean) / std


def denormalize_image(image: torch.Tensor) -> torch.Tensor:
    """Inverse of ``normalize_image``: network input -> uint8 RGB (..., 3, H, W)."""
    mean = torch.tensor(IMAGE_MEAN, device=image.device).view(3, 1, 1) * 255.0
    std = torch.tensor(IMAGE_STD, device=image.device).view(3, 1, 1) * 255.0
    return (image.float() * std + mean).round().clamp(0, 255).to(torch.uint8)


class Trunk(nn.Module):
    """The backbone interface: ``forward(x)`` of normalised images (N, 3, H, W), H and W
    multiples of 32, returns four feature maps C2..C5 at ``strides`` (4, 8, 16, 32) with
    ``out_channels`` channels each; the keypoint FPN and the detection FPN take any trunk.
    A new backbone is a subclass registered in ``TRUNKS`` (``@TRUNKS.register("name",
    keyword="model key", ...)``), which ``model.backbone`` then names."""

    strides: tuple[int, int, int, int] = (4, 8, 16, 32)
    out_channels: tuple[int, int, int, int]


TRUNKS = Registry("model.backbone")  # options: keys of the ``model`` section


@TRUNKS.register("resnet", depth="backbone_depth", pretrained="pretrained", frozen_bn="frozen_bn",
                 trainable_layers="trainable_layers")
class ResNetTrunk(Trunk):
    """torchvision ResNet without its classifier; returns C2, C3, C4, C5 (strides 4..32).

    Module names are torchvision's (``conv1``, ``bn1``, ``layer1``..``layer4``), so a
    torchvision ResNet state dict loads as it is.

    Args:
        depth: 18, 34, 50, 101 or 152.
        pretrained: "none" (random initialisation), "imagenet" (torchvision's IMAGENET1K_V1
            weights, from the torch hub cache or downloaded into it), or the path of a
            state-dict file of a torchvision ResNet of this depth.
        frozen_bn: use ``FrozenBatchNorm2d`` (fixed statistics and affine parameters, the
            usual choice for small per-GPU batches with pretrained weights) instead of
            ``BatchNorm2d``. With ``pretrained="none"`` frozen BN is an identity, so train
            from scratch with ``frozen_bn=False``.
        trainable_layers: how many stages, counted from ``layer4`` back to the stem, have
            trainable weights: 5 = all, 0 = none.
    """

    def __init__(
        self,
        depth: int = 50,
        pretrained: str | os.PathLike = "none",
        frozen_bn: bool = True,
        trainable_layers: int = 5,
    ):
        super().__init__()
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"ResNet depth must be one of {RESNET_DEPTHS}, got {depth}")
        if not 0 <= trainable_layers <= 5:
            raise ValueError(f"trainable_layers must be in 0..5, got {trainable_layers}")
        self.depth = depth
        norm_layer = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
        resnet = getattr(torchvision.models, f"resnet{depth}")(weights=None, norm_layer=norm_layer)
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        )
        width = 64 if depth < 50 else 256
        self.out_channels = (width, width * 2, width * 4, width * 8)
        if str(pretrained) != "none":
            self._load_pretrained(pretrained)

        stages = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
        if "conv1" in stages:
            stages.append("bn1")
        for name, param in self.named_parameters():
            param.requires_grad_(name.split(".")[0] in stages)

    def _load_pretrained(self, pretrained: str | os.PathLike) -> None:
        state = torchvision_weights(pretrained, f"resnet{self.depth}", self.state_dict(),
                                    keep=lambda key: not key.startswith("fc."))
        self.load_state_dict(state, strict=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c2, c3, c4, c5


def torchvision_weights(
    pretrained: str | os.PathLike,
    arch: str,
    expected: Mapping[str, torch.Tensor],
    keep: Callable[[str], bool] = lambda key: True,
) -> dict[str, torch.Tensor]:
    """The weights that ``pretrained`` names for torchvision's model ``arch`` ("resnet50",
    "vgg19", "shufflenet_v2_x1_0", ...): "imagenet" (its IMAGENET1K_V1 weights, from the torch
    hub cache or downloaded into it) or the path of a state-dict file of such a model. Of the
    file's entries those whose key ``keep`` accepts must be exactly ``expected``'s keys and
    shapes (``num_batches_tracked`` counters aside), or it is one PosenetError; they are
    returned, for ``load_state_dict(..., strict=False)`` or a copy by key."""
    if str(pretrained) == "imagenet":
        state, source = _imagenet_state_dict(arch), f"torchvision's {arch} ImageNet weights"
    else:
        state, source = _read_state_dict(Path(pretrained)), str(pretrained)
    state = {k: v for k, v in state.items() if keep(k)}
    own = {k: v for k, v in expected.items() if not k.endswith("num_batches_tracked")}
    given = {k for k in state if not k.endswith("num_batches_tracked")}
    missing = sorted(own.keys() - given)
    unexpected = sorted(given - own.keys())
    wrong = sorted(k for k in own.keys() & given if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        problems = [
            f"{len(keys)} {what} keys (e.g. {keys[0]})"
            for keys, what in ((missing, "missing"), (unexpected, "unexpected"), (wrong, "wrongly shaped"))
            if keys
        ]
        raise PosenetError(f"{source}: not a {arch} state dict: {'; '.join(problems)}")
    return state


def _imagenet_state_dict(arch: str) -> dict:
    weights = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    try:
        return load_state_dict_from_url(weights.url, progress=False, check_hash=True, map_location="cpu")
    except Exception as err:  # no network, proxy, corrupt cache: all end the same way
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PosenetError(
            f"cannot load the ImageNet weights of {arch} ({reason}). Download "
            f"{weights.url} on a machine with internet and either put it at {cached} or set "
            f"pretrained: <path to the file>; or set pretrained: none to start from scratch"
        ) from None


def _read_state_dict(path: Path) -> dict:
    if not path.is_file():
        raise PosenetError(f"{path}: pretrained weight file not found (or set pretrained: none / imagenet)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise PosenetError(f"{path}: cannot read it as a PyTorch state dict ({type(err).__name__})") from None
    # Accept a checkpoint that wraps the state dict.
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PosenetError(f"{path}: not a state dict of tensors")
    return state


class FeaturePyramid(nn.Module):
    """Top-down feature pyramid (Lin et al. 2017) over backbone maps, finest first.

    Lateral 1x1 convs, nearest-neighbour upsampling to the next finer map's exact size (so
    odd sizes work), and a 3x3 output conv per level; no normalisation, no activation.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels)
        self.out_channels = out_channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        top = self.lateral[-1](features[-1])
        outs = [self.output[-1](top)]
        for i in range(len(features) - 2, -1, -1):
            lateral = self.lateral[i](features[i])
            top = lateral + F.interpolate(top, size=lateral.shape[-2:], mode="nearest")
            outs.append(self.output[i](top))
        return outs[::-1]


class KeypointFPN(FeaturePyramid):
    """K2..K5 (strides 4, 8, 16, 32) from C2..C5."""

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256):
        if len(in_channels) != 4:
            raise ValueError(f"KeypointFPN takes the channels of C2..C5, got {list(in_channels)}")
        super().__init__(in_channels, out_channels)


class DetectionFPN(nn.Module):
    """P3..P7 (strides 8..128) for RetinaNet: a pyramid on C3..C5, plus P6 = 3x3 stride-2
    conv on C5 and P7 = 3x3 stride-2 conv on ReLU(P6).

    ``in_channels`` are the channels of C2..C5 (C2 is ignored) so both pyramids are built
    from the same ``ResNetTrunk.out_channels``.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256):
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"DetectionFPN takes the channels of C2..C5, got {list(in_channels)}")
        self.pyramid = FeaturePyramid(in_channels[1:], out_channels)
        self.p6 = nn.Conv2d(in_channels[3], out_channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        self.out_channels = out_channels
        for m in (self.p6, self.p7):
            nn.init.kaiming_uniform_(m.weight, a=1)
            nn.init.zeros_(m.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        p3, p4, p5 = self.pyramid(features[1:])
        p6 = self.p6(features[3])
        p7 = self.p7(F.relu(p6))
        return [p3, p4, p5, p6, p7]
