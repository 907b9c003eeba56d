"""The MultiPoseNet model: ResNet trunk, keypoint FPN + keypoint subnet, and optionally the
detection FPN + RetinaNet person heads, all on one shared trunk.

One model, one checkpoint format across stages: a model built with ``detection=True`` holds
the keypoint branch too, so a detection-stage checkpoint serves every later stage.
"""
from __future__ import annotations

import contextlib
import os
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from posenet.models.backbone import DetectionFPN, KeypointFPN, ResNetTrunk, normalize_image
from posenet.models.keypoint_head import KeypointSubnet

# The parts that ``PoseNet.freeze`` knows, and the submodules each one names.
PARTS = {
    "trunk": ("trunk",),
    "keypoint": ("keypoint_fpn", "keypoint_subnet"),
    "detection": ("detection_fpn", "detection_head"),
    "prn": ("prn",),
}


class PoseNet(nn.Module):
    """Keypoint heatmaps and person segmentation at stride 4 from RGB images.

    ``forward(images, targets=None)`` with images (N, 3, H, W), RGB, uint8 or float in 0..255
    (what the datasets return); the model normalises them itself (``normalize_image``), so
    training, validation and inference cannot disagree on it:

    * training mode: ``targets`` are required; returns the dict of losses of the branches in
      ``train_tasks`` ("keypoints": ``KeypointSubnet.compute_loss``, "detection":
      ``RetinaNetHead.compute_loss``, which needs "boxes" and "crowd_boxes"), "loss" being
      their total. With ``train_tasks == {"prn"}`` (the PRN stage, trained on annotations
      alone) ``images`` are PRN input grids and the loss is ``PoseResidualNetwork.compute_loss``.
    * eval mode: returns {"heatmaps": (N, K, h, w), "segmentation": (N, 1, h, w)} with
      ``(h, w) = output_size(H, W)``, raw L2-regressed values (not probabilities), and, with
      the detection branch, "detection": the head's raw outputs (``detect`` turns them into
      boxes). Given targets, it also returns the keypoint losses under "losses".

    ``freeze(parts)`` stops the training of whole parts ("trunk", "keypoint", "detection"):
    their parameters stop requiring gradients and their batch-norm layers stay in eval mode
    whatever ``train()`` is called with, so a frozen part computes exactly what it did before.

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
        foreground_weight: float = 0.0,
        trunk: nn.Module | None = None,
        detection_head: nn.Module | None = None,
        detection_fpn_channels: int = 256,
        prn: nn.Module | None = None,
    ):
        super().__init__()
        self.num_keypoints = num_keypoints
        # ``trunk``: any ``backbone.Trunk`` (built from config by ``build.trunk``); without one,
        # the ResNet of ``backbone_depth`` and the other trunk arguments.
        if trunk is None:
            trunk = ResNetTrunk(depth=backbone_depth, pretrained=pretrained, frozen_bn=frozen_bn,
                                trainable_layers=trainable_layers)
        if tuple(getattr(trunk, "strides", ())) != (4, 8, 16, 32) or len(getattr(trunk, "out_channels", ())) != 4:
            raise ValueError("the trunk must return four feature maps at strides 4, 8, 16, 32 and declare their "
                             "out_channels (see posenet.models.backbone.Trunk)")
        self.trunk = trunk
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
            foreground_weight=foreground_weight,
        )
        # The optional parts come built (``posenet.config.build.posenet_model``): a
        # ``RetinaNetHead`` whose ``in_channels`` is ``detection_fpn_channels``, and a
        # ``PoseResidualNetwork`` for ``num_keypoints``.
        self.detection_fpn = None
        self.detection_head = detection_head
        if detection_head is not None:
            self.detection_fpn = DetectionFPN(self.trunk.out_channels, detection_fpn_channels)
        self.prn = prn
        self.train_tasks = {"keypoints"}
        self.frozen: set[str] = set()

    @staticmethod
    def parts_in(state: Mapping) -> set[str]:
        """The parts (``PARTS``) that a state dict holds weights of."""
        prefixes = {part: tuple(f"{name}." for name in names) for part, names in PARTS.items()}
        return {part for part, pre in prefixes.items() if any(k.startswith(pre) for k in state)}

    @property
    def has_detection(self) -> bool:
        return self.detection_head is not None

    @property
    def has_prn(self) -> bool:
        return self.prn is not None

    def freeze(self, parts) -> None:
        """Freeze the named parts (see ``PARTS``); unknown or absent parts raise ValueError."""
        for part in parts:
            if part not in PARTS:
                raise ValueError(f"cannot freeze {part!r}: the parts are {', '.join(PARTS)}")
            for name in PARTS[part]:
                module = getattr(self, name)
                if module is None:
                    raise ValueError(f"cannot freeze {part!r}: this model has no {name}")
                module.requires_grad_(False)
            self.frozen.add(part)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        for part in self.frozen:
            for name in PARTS[part]:
                getattr(self, name).eval()
        return self

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
        if self.training and self.train_tasks == {"prn"}:
            # The PRN stage trains on annotations alone: ``images`` are PRN input grids here.
            if not self.has_prn:
                raise ValueError("train_tasks is {'prn'} but the model has no PRN")
            losses = self.prn.compute_loss(self.prn(images), targets)
            losses["loss"] = losses["loss_prn"]
            return losses
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        if self.training and targets is None:
            raise ValueError("targets are needed in training mode")
        frozen_trunk = self.training and "trunk" in self.frozen
        with torch.no_grad() if frozen_trunk else contextlib.nullcontext():
            features = self.trunk(self._pad(normalize_image(images)))
        if self.training:
            if not self.train_tasks:
                raise ValueError("train_tasks is empty: nothing to train")
            losses, total = {}, 0.0
            if "keypoints" in self.train_tasks:
                keypoint = self.keypoint_subnet.compute_loss(self._keypoints(features, images, True), targets)
                total = total + keypoint.pop("loss")
                losses.update(keypoint)
            if "detection" in self.train_tasks:
                if not self.has_detection:
                    raise ValueError("train_tasks has 'detection' but the model has no detection branch")
                detection = self.detection_head.compute_loss(self.detection_head(self.detection_fpn(features)), targets)
                total = total + detection["loss_detection"]
                losses.update(detection)
            losses["loss"] = total
            return losses
        outputs = self._keypoints(features, images, targets is not None)
        result = {"heatmaps": outputs["heatmaps"], "segmentation": outputs["segmentation"]}
        if targets is not None:
            result["losses"] = self.keypoint_subnet.compute_loss(outputs, targets)
        if self.has_detection:
            result["detection"] = self.detection_head(self.detection_fpn(features))
        return result

    def _keypoints(self, features, images: torch.Tensor, intermediate: bool) -> dict:
        h, w = self.output_size(*images.shape[-2:])
        outputs = self.keypoint_subnet(self.keypoint_fpn(features), intermediate=intermediate)
        return {
            key: [o[..., :h, :w] for o in value] if isinstance(value, list) else value[..., :h, :w]
            for key, value in outputs.items()
        }

    def detect(self, outputs: Mapping, image_sizes, **options) -> list[dict]:
        """Person boxes per image from an eval-mode ``forward``'s outputs: a list of
        {"boxes": (D, 4) input pixels, "scores": (D,)}; ``options`` go to
        ``RetinaNetHead.postprocess`` (thresholds, top-k, NMS IoU, detections per image)."""
        if not self.has_detection:
            raise ValueError("this model has no detection branch")
        return self.detection_head.postprocess(outputs["detection"], image_sizes, **options)
