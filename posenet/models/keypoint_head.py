"""The keypoint subnet of MultiPoseNet and its loss.

Output channels: ``num_keypoints`` heatmaps, then one person-segmentation map, all at the
resolution of K2 (stride 4). Both are raw regression outputs trained with L2 (the paper's
loss); they are not probabilities, so clamp to [0, 1] where one is needed.

Loss normalisation: squared errors are summed over channels and pixels of each image and
averaged over the batch (the port's loss without its factor 1/2). Adam is insensitive to the
overall scale of a loss, so what matters is that the value does not change with the batch
size, and that the terms keep their natural relative weights: a mean over all pixels would
tie the weight of the heatmaps to the image size and a mean over unmasked pixels would change
it with how much of an image is ignored. The segmentation channel uses the same masked L2 and
the same normalisation (``segmentation_weight`` scales it); its error mass is large for the
first steps and falls to the size of the heatmaps' once the person outlines are learnt.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _upsample(x: torch.Tensor, size, mode: str) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    align = False if mode in ("bilinear", "bicubic") else None
    return F.interpolate(x, size=size, mode=mode, align_corners=align)


def pyramid_fusion(in_channels: int, level_channels: int, fuse_channels: int,
                   num_levels: int) -> tuple[nn.ModuleList, nn.Sequential]:
    """The layers of the keypoint subnet's fusion (run by ``fuse_pyramid``): per level two 3x3
    convs ``in_channels -> level_channels -> level_channels``, each followed by ReLU, and a 3x3
    conv of the concatenated levels to ``fuse_channels`` + ReLU."""
    levels = nn.ModuleList(
        nn.Sequential(
            nn.Conv2d(in_channels, level_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(level_channels, level_channels, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        for _ in range(num_levels)
    )
    fuse = nn.Sequential(nn.Conv2d(level_channels * num_levels, fuse_channels, 3, padding=1), nn.ReLU(inplace=True))
    return levels, fuse


def fuse_pyramid(levels: nn.ModuleList, fuse: nn.Module, features: Sequence[torch.Tensor],
                 upsample_mode: str = "bilinear") -> torch.Tensor:
    """Each level's block on its pyramid map, upsampled to the finest map's size, concatenated
    and fused: (N, fuse_channels, H, W) at the finest map's resolution."""
    size = features[0].shape[-2:]
    return fuse(torch.cat([_upsample(block(f), size, upsample_mode) for block, f in zip(levels, features)], dim=1))


class KeypointSubnet(nn.Module):
    """Keypoint heatmaps and person segmentation from K2..K5 (docs/design.md §2).

    Per level: two 3x3 convs ``in_channels -> level_channels -> level_channels``, each followed
    by ReLU. The coarser levels are upsampled to K2's size and concatenated, then a 3x3 conv to
    ``fuse_channels`` + ReLU and a 1x1 conv to ``num_keypoints + 1`` outputs. Intermediate
    supervision: a 1x1 conv per K level to the same outputs, upsampled to K2's size.

    ``forward`` returns a dict: "heatmaps" (N, K, H, W), "segmentation" (N, 1, H, W) and,
    when asked for (by default in training), "intermediate": one (N, K + 1, H, W) map per level.
    """

    def __init__(
        self,
        num_keypoints: int = 17,
        in_channels: int = 256,
        level_channels: int = 128,
        fuse_channels: int = 256,
        num_levels: int = 4,
        intermediate_supervision: bool = True,
        upsample_mode: str = "bilinear",
        segmentation_weight: float = 1.0,
        intermediate_weight: float = 1.0,
        foreground_weight: float = 0.0,
    ):
        super().__init__()
        self.num_keypoints = num_keypoints
        self.foreground_weight = float(foreground_weight)
        self.num_levels = num_levels
        self.upsample_mode = upsample_mode
        self.segmentation_weight = float(segmentation_weight)
        self.intermediate_weight = float(intermediate_weight)
        num_outputs = num_keypoints + 1
        self.levels, self.fuse = pyramid_fusion(in_channels, level_channels, fuse_channels, num_levels)
        self.predict = nn.Conv2d(fuse_channels, num_outputs, 1)
        self.intermediate = (
            nn.ModuleList(nn.Conv2d(in_channels, num_outputs, 1) for _ in range(num_levels))
            if intermediate_supervision
            else None
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        # Outputs start near 0, the value of almost every target pixel.
        for m in [self.predict, *(self.intermediate or [])]:
            nn.init.normal_(m.weight, std=0.001)

    def forward(self, features: Sequence[torch.Tensor], intermediate: bool | None = None) -> dict:
        if len(features) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} feature maps (K2..), got {len(features)}")
        size = features[0].shape[-2:]
        out = self.predict(fuse_pyramid(self.levels, self.fuse, features, self.upsample_mode))
        K = self.num_keypoints
        result = {"heatmaps": out[:, :K], "segmentation": out[:, K:]}
        if intermediate is None:
            intermediate = self.training
        if intermediate and self.intermediate is not None:
            result["intermediate"] = [
                _upsample(conv(f), size, "bilinear") for conv, f in zip(self.intermediate, features)
            ]
        return result

    def compute_loss(self, outputs: Mapping, targets: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Masked L2 losses; see the module docstring for the normalisation.

        ``targets``: "heatmaps" (N, K, H, W), "segmentation" (N, 1, H, W), "ignore_mask"
        (N, 1, H, W) with 0 where the loss ignores a pixel and 1 elsewhere.

        Returns "loss_heatmap", "loss_segmentation" (final output), "loss_k2".."loss_k5"
        (heatmaps + segmentation of each intermediate output, when present) and "loss", the
        weighted total that training minimises.
        """
        heatmaps, segmentation, mask = targets["heatmaps"], targets["segmentation"], targets["ignore_mask"]
        expected = tuple(outputs["heatmaps"].shape)
        if tuple(heatmaps.shape) != expected or tuple(segmentation.shape[-2:]) != expected[-2:] \
                or tuple(mask.shape[-2:]) != expected[-2:]:
            raise ValueError(
                f"targets do not match the outputs {expected}: heatmaps {tuple(heatmaps.shape)}, "
                f"segmentation {tuple(segmentation.shape)}, ignore_mask {tuple(mask.shape)}"
            )
        n = heatmaps.shape[0]
        mask = mask.float()

        def l2(pred: torch.Tensor, target: torch.Tensor, weight=None) -> torch.Tensor:
            w = mask if weight is None else mask * weight
            return ((pred.float() - target.float()).square() * w).sum() / n

        # Pixel weight 1 + foreground_weight * target: errors on the Gaussians count more than
        # on the background that covers most of the map.
        fg = 1.0 + self.foreground_weight * heatmaps.float() if self.foreground_weight else None
        losses = {
            "loss_heatmap": l2(outputs["heatmaps"], heatmaps, fg),
            "loss_segmentation": self.segmentation_weight * l2(outputs["segmentation"], segmentation),
        }
        total = losses["loss_heatmap"] + losses["loss_segmentation"]
        K = self.num_keypoints
        for level, pred in enumerate(outputs.get("intermediate", ()), start=2):
            loss = self.intermediate_weight * (
                l2(pred[:, :K], heatmaps, fg) + self.segmentation_weight * l2(pred[:, K:], segmentation)
            )
            losses[f"loss_k{level}"] = loss
            total = total + loss
        losses["loss"] = total
        return losses
