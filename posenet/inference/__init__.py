"""From network outputs to people: peaks, boxes, grouping (PRN or greedy), the Predictor and
folders of images."""

from posenet.inference.box_peaks import keypoints_in_boxes
from posenet.inference.folder import infer_folder
from posenet.inference.predictor import Prediction, Predictor, draw_prediction
from posenet.inference.scales_and_flip import flip_back, flip_test, to_grid_of

__all__ = ["Prediction", "Predictor", "draw_prediction", "flip_back", "flip_test", "infer_folder",
           "keypoints_in_boxes", "to_grid_of"]
