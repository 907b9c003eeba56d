"""From network outputs to people: grouping of keypoints and mapping back to image pixels."""

from posenet.inference.grouping import flip_back, keypoints_in_boxes

__all__ = ["flip_back", "keypoints_in_boxes"]
