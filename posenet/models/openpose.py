"""OpenPose's part-affinity-field network (Cao et al., CVPR 2017): a VGG19 trunk, then six
stages of two branches (part affinity fields and part heatmaps), each stage supervised.

Layer table (the release's; all convolutions followed by ReLU except each branch's last):

* trunk ("block 0", stride 8): VGG19 ``conv1_1`` 3→64, ``conv1_2`` 64→64, max-pool 2,
  ``conv2_1`` 64→128, ``conv2_2`` 128→128, pool, ``conv3_1`` 128→256, ``conv3_2..conv3_4``
  256→256, pool, ``conv4_1`` 256→512, ``conv4_2`` 512→512, then ``conv4_3_CPM`` 512→256 and
  ``conv4_4_CPM`` 256→128; all 3×3, padding 1.
* stage 1, on the 128 features, per branch: 3 × (3×3 conv 128), 1×1 conv 512, 1×1 conv to 38
  (PAFs, 19 limbs × (x, y)) or 19 (18 part heatmaps + background).
* stages 2–6, on concat(PAFs, heatmaps, features) = 185 channels, per branch: 5 × (7×7 conv 128,
  padding 3), 1×1 conv 128, 1×1 conv to 38 / 19.

``load_release_weights`` reads the two files the port published (``pose_model.pth``,
converted from Caffe, and ``pose_model_scratch.pth``, the same keys under ``module.``); the
input preprocessing goes with the weights and is stored in the model (and so in checkpoints).
Such a file is ``model.pretrained`` or, recognised by ``is_release_state``, a checkpoint of its
own (``config.build.paf_network_from_checkpoint``).

``PafNetwork`` is what the family's networks share (preprocessing, padding and cropping, the
outputs and the loss); the other trunks are in ``paf_networks.py``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from posenet.errors import PosenetError
from posenet.models.backbone import IMAGE_MEAN, IMAGE_STD, torchvision_weights
from posenet.utils.registry import Registry

# (in, out) per 3x3 convolution of the trunk, "M" a 2x2 max-pool; the first ten are VGG19's.
TRUNK_LAYERS = ((3, 64), (64, 64), "M", (64, 128), (128, 128), "M", (128, 256), (256, 256), (256, 256),
                (256, 256), "M", (256, 512), (512, 512), (512, 256), (256, 128))
# The indices in torchvision's vgg19 ``features`` of its conv1_1..conv4_2, our first ten.
VGG19_CONVS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21)
# Preprocessing of the input (RGB uint8 images in 0..255): "imagenet" (RGB / 255, ImageNet mean
# and std; ours and pose_model_scratch.pth's) or "caffe" (BGR, x / 256 - 0.5; pose_model.pth's).
PREPROCESSING = ("imagenet", "caffe")


class VGG19Trunk(nn.Module):
    """The trunk of the layer table: 128 features at stride 8."""

    stride = 8
    out_channels = 128

    def __init__(self):
        super().__init__()
        layers = []
        for spec in TRUNK_LAYERS:
            if spec == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(spec[0], spec[1], 3, padding=1), nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*layers)

    @property
    def convs(self) -> list[nn.Conv2d]:
        return [m for m in self.layers if isinstance(m, nn.Conv2d)]

    def load_vgg19(self, pretrained: str | os.PathLike) -> None:
        """The first ten convolutions from torchvision's vgg19 weights ("imagenet" or a file)."""
        convs = dict(zip((f"features.{i}" for i in VGG19_CONVS), self.convs))
        expected = {f"{name}.{part}": getattr(conv, part)
                    for name, conv in convs.items() for part in ("weight", "bias")}
        state = torchvision_weights(pretrained, "vgg19", expected, keep=expected.__contains__)
        with torch.no_grad():
            for key, param in expected.items():
                param.copy_(state[key])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def stage_branch(in_channels: int, out_channels: int, first: bool) -> nn.Sequential:
    if first:
        sizes = [(in_channels, 128, 3), (128, 128, 3), (128, 128, 3), (128, 512, 1)]
    else:
        sizes = [(in_channels, 128, 7)] + [(128, 128, 7)] * 4 + [(128, 128, 1)]
    layers = []
    for cin, cout, k in sizes:
        layers += [nn.Conv2d(cin, cout, k, padding=k // 2), nn.ReLU(inplace=True)]
    layers.append(nn.Conv2d(sizes[-1][1], out_channels, 1))
    return nn.Sequential(*layers)


class PafNetwork(nn.Module):
    """The interface of the OpenPose family: part heatmaps (with a background channel) and
    part affinity fields at ``output_stride`` from RGB images.

    ``foreground_weight``: see ``compute_loss`` (0: the release's plain masked L2).

    ``forward(images)`` with images (N, 3, H, W) RGB in 0..255 returns, in eval mode,
    {"pafs": (N, 2L, h, w), "heatmaps": (N, P + 1, h, w)} of the last stage (h, w =
    ceil(H / output_stride), ceil(W / output_stride)); given ``targets`` ("heatmaps", "pafs",
    "ignore_mask" at that stride) in training mode, the masked L2 losses of every stage's two
    outputs and their sum ("loss"); in eval mode with targets, the outputs and "losses".

    A subclass builds its layers after ``super().__init__(num_parts, num_limbs, preprocessing)``,
    sets ``output_stride`` and ``input_divisor`` (the input is zero-padded at the bottom and
    right to a multiple of it) and implements ``_stage_outputs(x)``: the (PAFs, heatmaps) of
    every supervised stage, last stage last, from normalised and padded images. The
    preprocessing is a buffer, so that it travels with the weights in every checkpoint.
    """

    output_stride: int = 8
    input_divisor: int = 8

    def __init__(self, num_parts: int = 18, num_limbs: int = 19, preprocessing: str = "imagenet",
                 pretrained: str | os.PathLike = "none", foreground_weight: float = 0.0):
        super().__init__()
        if foreground_weight < 0:
            raise ValueError(f"foreground_weight must be >= 0, got {foreground_weight}")
        self.foreground_weight = float(foreground_weight)
        if preprocessing not in PREPROCESSING:
            raise ValueError(f"preprocessing must be one of {PREPROCESSING}, got {preprocessing!r}")
        if str(pretrained) != "none" and preprocessing != "imagenet":
            raise ValueError("torchvision's weights take ImageNet-normalised RGB input: "
                             f"use preprocessing='imagenet' with pretrained={str(pretrained)!r}")
        self.num_parts, self.num_limbs = num_parts, num_limbs
        self.register_buffer("caffe_input", torch.tensor(preprocessing == "caffe"))

    @property
    def preprocessing(self) -> str:
        return "caffe" if bool(self.caffe_input) else "imagenet"

    @preprocessing.setter
    def preprocessing(self, value: str) -> None:
        if value not in PREPROCESSING:
            raise ValueError(f"preprocessing must be one of {PREPROCESSING}, got {value!r}")
        self.caffe_input.fill_(value == "caffe")

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if self.preprocessing == "caffe":
            return x.flip(-3) / 256.0 - 0.5
        mean = torch.tensor(IMAGE_MEAN, device=x.device).view(3, 1, 1) * 255.0
        std = torch.tensor(IMAGE_STD, device=x.device).view(3, 1, 1) * 255.0
        return (x - mean) / std

    def _stage_outputs(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def stage_outputs(self, images: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(PAFs, heatmaps) of every stage, cropped to ceil(input / output_stride)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        H, W = images.shape[-2:]
        d, s = self.input_divisor, self.output_stride
        x = F.pad(self.normalize(images), (0, (-W) % d, 0, (-H) % d))
        h, w = -(-H // s), -(-W // s)
        return [(p[..., :h, :w], q[..., :h, :w]) for p, q in self._stage_outputs(x)]

    def forward(self, images: torch.Tensor, targets: Mapping[str, torch.Tensor] | None = None) -> dict:
        outputs = self.stage_outputs(images)
        if self.training or targets is not None:
            if targets is None:
                raise ValueError("targets are needed in training mode")
            losses = self.compute_loss(outputs, targets)
            if self.training:
                return losses
            return {"pafs": outputs[-1][0], "heatmaps": outputs[-1][1], "losses": losses}
        return {"pafs": outputs[-1][0], "heatmaps": outputs[-1][1]}

    def compute_loss(self, outputs, targets: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Masked L2 of every stage's PAFs and heatmaps (two terms a stage), each summed over
        cells and channels and averaged over the batch; "loss" is their sum. With
        ``foreground_weight`` w > 0 each cell of a part heatmap weighs 1 + w * target and each
        cell of a PAF 1 + w * |target| (the background channel 1): the release's plain L2 spends
        its gradient on the empty cells, which are most of them."""
        mask = targets["ignore_mask"].float()
        n = mask.shape[0]
        w = self.foreground_weight
        paf_weight, heat_weight = mask, mask
        if w > 0:
            paf_weight = mask * (1 + w * targets["pafs"].abs())
            parts = targets["heatmaps"].clone()
            parts[:, -1] = 0  # the background channel keeps weight 1
            heat_weight = mask * (1 + w * parts)
        losses = {}
        for t, (pafs, heat) in enumerate(outputs, start=1):
            losses[f"loss_paf{t}"] = (((pafs.float() - targets["pafs"]) ** 2) * paf_weight).sum() / n
            losses[f"loss_heatmap{t}"] = (((heat.float() - targets["heatmaps"]) ** 2) * heat_weight).sum() / n
        losses["loss"] = sum(losses.values())
        return losses


# The family's networks (``openpose.network``); options: keys of the ``openpose`` section. The
# other networks register in ``posenet.models.paf_networks``.
PAF_NETWORKS = Registry("openpose.network")


@PAF_NETWORKS.register("vgg19", stages="stages")
class OpenPoseNet(PafNetwork):
    """The VGG19 network of the layer table (``stages`` two-branch stages, 6 in the release)
    at stride 8; see ``PafNetwork`` for the inputs and outputs.

    ``pretrained``: "none" (random initialisation), "imagenet" (torchvision's vgg19 ImageNet
    weights, from the torch hub cache) or the path of a torchvision vgg19 state-dict file;
    either initialises the trunk's first ten convolutions (VGG19's conv1_1..conv4_2).
    """

    output_stride = 8
    input_divisor = 8

    def __init__(self, num_parts: int = 18, num_limbs: int = 19, stages: int = 6,
                 preprocessing: str = "imagenet", pretrained: str | os.PathLike = "none",
                 foreground_weight: float = 0.0):
        super().__init__(num_parts, num_limbs, preprocessing, pretrained, foreground_weight)
        if stages < 1:
            raise ValueError(f"stages must be at least 1, got {stages}")
        self.trunk = VGG19Trunk()
        f, p, k = VGG19Trunk.out_channels, 2 * num_limbs, num_parts + 1
        self.paf_branches = nn.ModuleList(stage_branch(f if t == 0 else f + p + k, p, t == 0) for t in range(stages))
        self.heatmap_branches = nn.ModuleList(stage_branch(f if t == 0 else f + p + k, k, t == 0) for t in range(stages))
        if str(pretrained) != "none":
            self.trunk.load_vgg19(pretrained)

    def _stage_outputs(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        features = self.trunk(x)
        outputs, inputs = [], features
        for paf_branch, heat_branch in zip(self.paf_branches, self.heatmap_branches):
            pafs, heat = paf_branch(inputs), heat_branch(inputs)
            outputs.append((pafs, heat))
            inputs = torch.cat([pafs, heat, features], dim=1)
        return outputs


def _release_key_map(model: OpenPoseNet) -> dict[str, nn.Conv2d]:
    """The release's state-dict prefix of each of our convolutions."""
    names = {}
    for key, conv in zip((0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25), model.trunk.convs):
        names[f"model0.{key}"] = conv
    for t, (paf, heat) in enumerate(zip(model.paf_branches, model.heatmap_branches), start=1):
        keys = (0, 2, 4, 6, 8) if t == 1 else (0, 2, 4, 6, 8, 10, 12)
        for branch, convs in ((1, paf), (2, heat)):
            for key, conv in zip(keys, [m for m in convs if isinstance(m, nn.Conv2d)]):
                names[f"model{t}_{branch}.{key}"] = conv
    return names


def release_state_dict(model: OpenPoseNet) -> dict[str, torch.Tensor]:
    """``model``'s weights under the release's keys (``pose_model.pth``'s layout)."""
    state = {}
    for prefix, conv in _release_key_map(model).items():
        state[f"{prefix}.weight"] = conv.weight.detach().clone()
        state[f"{prefix}.bias"] = conv.bias.detach().clone()
    return state


# The trunk's first key in the release's files (``pose_model_scratch.pth``: under ``module.``).
RELEASE_FIRST_KEY = "model0.0.weight"


def is_release_state(obj) -> bool:
    """Whether ``obj`` (what ``torch.load`` gave) has the layout of the release's files: a plain
    state dict with the release's key names (``model0.0.weight``, ..., ``model6_2.12.bias``),
    perhaps under ``module.``. ``load_release_weights`` checks the rest of it."""
    return isinstance(obj, Mapping) and any(k in obj for k in (RELEASE_FIRST_KEY, f"module.{RELEASE_FIRST_KEY}"))


def load_release_weights(model: OpenPoseNet, path_or_state: str | os.PathLike | Mapping,
                         source: str | os.PathLike | None = None) -> str:
    """Load ``pose_model.pth`` (Caffe-converted: BGR, x / 256 - 0.5) or
    ``pose_model_scratch.pth`` (keys under ``module.``: RGB, ImageNet mean and std) into
    ``model`` and set its preprocessing to the file's; returns the preprocessing. A file of
    another layout is one PosenetError naming the first mismatched key and its shapes (and
    ``source``, the file a given state dict was read from)."""
    source = str(source) if source is not None else "the given state dict"
    if isinstance(path_or_state, Mapping):
        state = dict(path_or_state)
    else:
        source = str(path_or_state)
        if not Path(path_or_state).is_file():
            raise PosenetError(f"weights file not found: {source}")
        try:
            state = torch.load(path_or_state, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is one clear line
            raise PosenetError(f"cannot read {source}: {str(e).splitlines()[0]}") from None
        if not isinstance(state, Mapping):
            raise PosenetError(f"{source}: not a state dict")
    scratch = any(k.startswith("module.") for k in state)
    if scratch:
        state = {k[len("module."):]: v for k, v in state.items() if k.startswith("module.")}
    wanted = _release_key_map(model)
    for prefix, conv in wanted.items():
        for part, param in (("weight", conv.weight), ("bias", conv.bias)):
            key = f"{prefix}.{part}"
            if key not in state:
                raise PosenetError(f"{source}: not an OpenPose release file: no key {key!r} "
                                   f"(expected shape {tuple(param.shape)})")
            if tuple(state[key].shape) != tuple(param.shape):
                raise PosenetError(f"{source}: {key} has shape {tuple(state[key].shape)}, this model's "
                                   f"{tuple(param.shape)}")
    extra = sorted(set(state) - {f"{p}.{s}" for p in wanted for s in ("weight", "bias")})
    if extra:
        raise PosenetError(f"{source}: unexpected key {extra[0]!r} for this model ({len(extra)} in all)")
    with torch.no_grad():
        for prefix, conv in wanted.items():
            conv.weight.copy_(state[f"{prefix}.weight"])
            conv.bias.copy_(state[f"{prefix}.bias"])
    model.preprocessing = "imagenet" if scratch else "caffe"
    return model.preprocessing


__all__ = ["OpenPoseNet", "PREPROCESSING", "PafNetwork", "RELEASE_FIRST_KEY", "VGG19Trunk", "VGG19_CONVS",
           "is_release_state", "load_release_weights", "release_state_dict"]
