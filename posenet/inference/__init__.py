"""From network outputs to people: peaks, boxes, grouping (PRN or greedy), the Predictor and
folders of images."""

from posenet.inference.grouping import flip_back, keypoints_in_boxes
from posenet.inference.predictor import Prediction, Predictor, draw_prediction
from posenet.inference.folder import infer_folder

__all__ = ["Prediction", "Predictor", "draw_prediction", "flip_back", "infer_folder", "keypoints_in_boxes"]
