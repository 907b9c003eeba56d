"""Datasets, keypoint layouts and the synthetic COCO-format generator."""

from posenet.data.keypoints import COCO_PERSON, KeypointLayout

__all__ = ["COCO_PERSON", "KeypointLayout"]
