"""A grouping added the way docs/design.md §6 shows: one file with one registered class that
reads its options from the config. Each peak goes to the box whose centre is nearest, within
the box enlarged by ``prn.box_margin``."""
import numpy as np

from posenet.inference.groupings import GROUPINGS, Grouping


@GROUPINGS.register("nearest-centre-test")
class NearestCentre(Grouping):
    calls = 0  # how often any instance was called (the test counts)

    def __init__(self, margin: float = 0.0):
        self.margin = margin

    @classmethod
    def from_config(cls, cfg):
        return cls(margin=cfg.prn.box_margin)

    def __call__(self, boxes, peaks_xy, peaks_type, peaks_score, num_keypoints, model=None):
        type(self).calls += 1
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        keypoints = np.zeros((len(boxes), num_keypoints, 2))
        scores = np.zeros((len(boxes), num_keypoints))
        if not len(boxes):
            return keypoints, scores
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        half = (boxes[:, 2:] - boxes[:, :2]) / 2 * (1 + self.margin)
        for xy, k, s in zip(np.asarray(peaks_xy, dtype=np.float64), np.asarray(peaks_type), np.asarray(peaks_score)):
            inside = np.all(np.abs(xy - centres) <= half, axis=1)
            if not inside.any():
                continue
            b = int(np.argmin(np.where(inside, np.linalg.norm(xy - centres, axis=1), np.inf)))
            if s > scores[b, k]:
                keypoints[b, k], scores[b, k] = xy, s
        return keypoints, scores

    def describe(self) -> str:
        return f"nearest box centre (margin {self.margin:.0%})"
