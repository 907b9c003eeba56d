"""The MultiPoseNet model: ResNet trunk, keypoint FPN and keypoint subnet.

The detection branch (detection FPN + RetinaNet heads) and the Pose Residual Network are
separate modules that later stages add beside ``keypoint_fpn``/``keypoint_subnet``; they
share ``trunk`` and merge their outputs and losses into the same dicts.
"""
from __future__ import annotations

import os
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from posenet.models.backbone import KeypointFPN, ResNetTrunk, normalize_image
from posenet.models.keypoint_head import KeypointSubnet


class PoseNet(nn.Module):
    """Keypoint heatmaps and person segmentation at stride 4 from RGB images.

    ``forward(images, targets=None)`` with images (N, 3, H, W), RGB, uint8 or float in 0..255
    (what the datasets return); the model normalises them itself (``normalize_image``), so
    training, validation and inference cannot disagree on it:

    * training mode: ``targets`` (see ``KeypointSubnet.compute_loss``) are required; returns
      the dict of losses, "loss" being the total.
    * eval mode: returns {"heatmaps": (N, K, h, w), "segmentation": (N, 1, h, w)} with
      ``(h, w) = output_size(H, W)``, raw L2-regressed values (not probabilities). Given
      targets, it also returns their losses under "losses" (validation loss).

    Any input size works: the images are zero-padded (the mean colour, once normalised) at the
    bottom and right to a multiple of 32 and the outputs cropped back, so output cell (i, j)
    always covers input pixels 4i..4i+3, 4j..4j+3, the grid of ``KeypointHeatmapCodec``.
    """

    output_stride = 4
    size_divisor = 32

    def __init__(
        self,
        num_keypoints: int = 17,
        backbone_depth: int = 50,
        pretrained: str | os.PathLike = "none",
        frozen_bn: bool = True,
        trainable_layers: int = 5,
        fpn_channels: int = 256,
        subnet_channels: int = 128,
        fuse_channels: int = 256,
        intermediate_supervision: bool = True,
        upsample_mode: str = "bilinear",
        segmentation_weight: float = 1.0,
        intermediate_weight: float = 1.0,
    ):
        super().__init__()
        self.num_keypoints = num_keypoints
        self.trunk = ResNetTrunk(
            depth=backbone_depth, pretrained=pretrained, frozen_bn=frozen_bn, trainable_layers=trainable_layers
        )
        self.keypoint_fpn = KeypointFPN(self.trunk.out_channels, fpn_channels)
        self.keypoint_subnet = KeypointSubnet(
            num_keypoints=num_keypoints,
            in_channels=fpn_channels,
            level_channels=subnet_channels,
            fuse_channels=fuse_channels,
            intermediate_supervision=intermediate_supervision,
            upsample_mode=upsample_mode,
            segmentation_weight=segmentation_weight,
            intermediate_weight=intermediate_weight,
        )

    @classmethod
    def output_size(cls, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the outputs for an (height, width) input: ceil(size / 4)."""
        s = cls.output_stride
        return -(-height // s), -(-width // s)

    def _pad(self, images: torch.Tensor) -> torch.Tensor:
        H, W = images.shape[-2:]
        d = self.size_divisor
        ph, pw = (-H) % d, (-W) % d
        if ph == 0 and pw == 0:
            return images
        return F.pad(images, (0, pw, 0, ph))

    def forward(self, images: torch.Tensor, targets: Mapping[str, torch.Tensor] | None = None) -> dict:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        if self.training and targets is None:
            raise ValueError("targets are needed in training mode")
        h, w = self.output_size(*images.shape[-2:])
        features = self.trunk(self._pad(normalize_image(images)))
        outputs = self.keypoint_subnet(self.keypoint_fpn(features), intermediate=targets is not None)
        outputs = {
            key: [o[..., :h, :w] for o in value] if isinstance(value, list) else value[..., :h, :w]
            for key, value in outputs.items()
        }
        if self.training:
            return self.keypoint_subnet.compute_loss(outputs, targets)
        result = {"heatmaps": outputs["heatmaps"], "segmentation": outputs["segmentation"]}
        if targets is not None:
            result["losses"] = self.keypoint_subnet.compute_loss(outputs, targets)
        return result
