"""Networks: the ResNet trunk, feature pyramids, keypoint subnet and the PoseNet model."""
from posenet.models.backbone import (
    IMAGE_MEAN,
    IMAGE_STD,
    DetectionFPN,
    FeaturePyramid,
    KeypointFPN,
    ResNetTrunk,
    denormalize_image,
    normalize_image,
)
from posenet.models.keypoint_head import KeypointSubnet
from posenet.models.posenet import PoseNet

__all__ = [
    "IMAGE_MEAN",
    "IMAGE_STD",
    "DetectionFPN",
    "FeaturePyramid",
    "KeypointFPN",
    "KeypointSubnet",
    "PoseNet",
    "ResNetTrunk",
    "denormalize_image",
    "normalize_image",
]
