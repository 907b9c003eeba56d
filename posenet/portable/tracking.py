"""People tracked across the frames of a video: a track id per person that persists from one
frame to the next, and optionally One-Euro smoothing of each track's keypoints.

``Tracker.update(people)`` takes one frame's people (records with ``keypoints`` (K, 3) x, y,
score and ``box`` x1, y1, x2, y2, as every posenet predictor and the portable decoder give) and
returns them with a ``track_id``. Per frame:

1. Similarity of each person to each live track: OKS,
   COCO's formula ``mean_k exp(-d_k^2 / (2 A (2 sigma_k)^2))`` over the keypoints found in both
   (score at or above ``keypoint_threshold``), ``A`` the area of the track's box, ``sigma_k`` the
   layout's OKS sigmas; where fewer than ``min_keypoints`` keypoints are found in both, the IoU
   of the boxes instead. A pair is a candidate at or above ``oks_threshold`` (OKS) or
   ``iou_threshold`` (IoU). A track's keypoints and box are those of its last match, moved on
   (``motion``, the default) at its velocity for the frames since: the mean step of its
   keypoints found in both of its last two matches (else of its box centre) per frame,
   averaged with the velocity before.
2. Candidates matched one-to-one, best first (``matching.best_first_matching``: ties by index).
3. A matched track takes the person's keypoints and box; an unmatched track counts a missed
   frame and ends after more than ``max_missed`` of them in a row; an unmatched person starts a
   new track. Ids count up from 1 and are never reused.
4. With ``smooth``, each track's keypoints go through a ``smoothing.OneEuroFilter``
   (``min_cutoff``, ``beta``) after the matching (which uses the unsmoothed keypoints); a
   keypoint that is not found restarts its filter, as does every keypoint of a track that
   missed a frame. Time stamps: ``update(people, t)`` in seconds, default the frame count over
   ``fps``.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from .matching import best_first_matching
from .smoothing import OneEuroFilter

# The keys of the config's ``video`` section that ``Tracker.from_config`` reads.
CONFIG_KEYS = ("max_missed", "oks_threshold", "iou_threshold", "min_keypoints", "motion", "smooth", "min_cutoff",
               "beta")


def box_iou(a, b) -> np.ndarray:
    """IoU of (N, 4) and (M, 4) boxes x1, y1, x2, y2 -> (N, M); 0 where a union is empty."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def keypoint_similarity(a, b, sigmas, areas, keypoint_threshold: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """OKS of (N, K, 3) poses ``a`` against (M, K, 3) poses ``b`` with ``areas`` (M,) of ``b``:
    the mean over the keypoints found in both (score >= ``keypoint_threshold``) of COCO's
    ``exp(-d^2 / (2 area (2 sigma)^2))``. Returns (oks (N, M), common (N, M) keypoint counts);
    OKS is 0 where none is common."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    variances = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2
    d2 = ((a[:, None, :, :2] - b[None, :, :, :2]) ** 2).sum(-1)  # (N, M, K)
    both = (a[:, None, :, 2] >= keypoint_threshold) & (b[None, :, :, 2] >= keypoint_threshold)
    area = np.maximum(np.asarray(areas, dtype=np.float64), np.finfo(np.float64).eps)
    e = np.exp(-d2 / (2.0 * area[None, :, None] * variances))
    common = both.sum(-1)
    oks = np.where(common > 0, (e * both).sum(-1) / np.maximum(common, 1), 0.0)
    return oks, common


class Track:
    """One tracked person: ``id``, the last matched ``keypoints`` (K, 3) and ``box`` (4,),
    ``missed`` (frames in a row without a match), ``hits`` (frames matched), its smoother."""

    def __init__(self, track_id: int, keypoints: np.ndarray, box: np.ndarray, smoother: OneEuroFilter | None):
        self.id, self.keypoints, self.box = track_id, keypoints, box
        self.missed, self.hits, self.smoother = 0, 1, smoother
        self.velocity = np.zeros(2)  # px per frame

    def predicted(self, motion: bool) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints and box where the track is expected in the next frame: where it was last
        seen, moved on at its velocity for the frames since (``motion``), else where it was."""
        if not motion:
            return self.keypoints, self.box
        shift = self.velocity * (self.missed + 1)
        keypoints = self.keypoints.copy()
        keypoints[:, :2] += shift
        return keypoints, self.box + np.tile(shift, 2)

    def move(self, keypoints: np.ndarray, box: np.ndarray, keypoint_threshold: float, min_keypoints: int) -> None:
        """A match: the velocity from the displacement since the last match (mean over the
        keypoints found in both, else the box centre's), averaged with the previous one."""
        found = (keypoints[:, 2] >= keypoint_threshold) & (self.keypoints[:, 2] >= keypoint_threshold)
        if found.sum() >= min_keypoints:
            step = (keypoints[found, :2] - self.keypoints[found, :2]).mean(0)
        else:
            step = (box[:2] + box[2:] - self.box[:2] - self.box[2:]) / 2
        step = step / (self.missed + 1)
        self.velocity = step if self.hits == 1 else 0.5 * (self.velocity + step)
        self.keypoints, self.box = keypoints, box


def _person_arrays(people: Sequence[Mapping], num_keypoints: int | None) -> tuple[np.ndarray, np.ndarray]:
    if not people:
        k = num_keypoints or 0
        return np.zeros((0, k, 3)), np.zeros((0, 4))
    keypoints = np.stack([np.asarray(p["keypoints"], dtype=np.float64).reshape(-1, 3) for p in people])
    boxes = np.stack([np.asarray(p["box"], dtype=np.float64).reshape(4) for p in people])
    return keypoints, boxes


class Tracker:
    """Track ids for people across frames (the module's docstring gives the protocol).

    ``sigmas``: the keypoint layout's OKS sigmas (K,). Keywords: ``max_missed`` (frames a track
    outlives without a match), ``oks_threshold`` / ``iou_threshold`` (least similarity of a
    match), ``min_keypoints`` (keypoints found in both below which boxes are compared instead),
    ``motion`` (tracks compared where their velocity takes them, else where they were seen),
    ``keypoint_threshold`` (the score of a found keypoint), ``smooth`` with ``min_cutoff`` (Hz),
    ``beta`` and ``d_cutoff`` (the One-Euro filter), ``fps`` (time stamps when none is given).

        tracker = Tracker(sigmas)
        for prediction in predictions:
            people = tracker.update(prediction.people)   # copies, each with "track_id"
    """

    def __init__(self, sigmas: Sequence[float], *, max_missed: int = 10, oks_threshold: float = 0.2,
                 iou_threshold: float = 0.2, min_keypoints: int = 4, keypoint_threshold: float = 0.05,
                 motion: bool = True, smooth: bool = False, min_cutoff: float = 1.0, beta: float = 0.05,
                 d_cutoff: float = 1.0, fps: float = 25.0):
        self.sigmas = np.asarray(sigmas, dtype=np.float64).reshape(-1)
        if not len(self.sigmas) or (self.sigmas <= 0).any():
            raise ValueError(f"sigmas must be positive, one per keypoint, got {list(self.sigmas)}")
        if int(max_missed) < 0 or int(min_keypoints) < 1:
            raise ValueError(f"need max_missed >= 0 and min_keypoints >= 1, got {max_missed}, {min_keypoints}")
        if not (0 <= oks_threshold <= 1 and 0 <= iou_threshold <= 1):
            raise ValueError(f"oks_threshold and iou_threshold lie in [0, 1], got {oks_threshold}, {iou_threshold}")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.max_missed, self.min_keypoints = int(max_missed), int(min_keypoints)
        self.oks_threshold, self.iou_threshold = float(oks_threshold), float(iou_threshold)
        self.keypoint_threshold = float(keypoint_threshold)
        self.motion, self.smooth = bool(motion), bool(smooth)
        self.filter_options = dict(min_cutoff=float(min_cutoff), beta=float(beta), d_cutoff=float(d_cutoff))
        if self.smooth:
            OneEuroFilter(**self.filter_options)  # checks the options now
        self.fps = float(fps)
        self.reset()

    @classmethod
    def from_config(cls, section: Mapping, sigmas: Sequence[float], **keywords) -> "Tracker":
        """A tracker with the options of the config's ``video`` section (``cfg.video``, or a dict
        of its keys: ``CONFIG_KEYS``); ``keywords`` (``keypoint_threshold``, ``fps``) as
        ``__init__``'s."""
        return cls(sigmas, **{key: section[key] for key in CONFIG_KEYS if key in section}, **keywords)

    def reset(self) -> None:
        """No tracks; ids start at 1 again."""
        self.tracks: list[Track] = []
        self.next_id = 1
        self.frames = 0

    def similarity(self, keypoints: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(N, T) similarity of N people (keypoints (N, K, 3), boxes (N, 4)) to the live tracks,
        -inf where a pair is no candidate."""
        T = len(self.tracks)
        score = np.full((len(keypoints), T), -np.inf)
        if not T or not len(keypoints):
            return score
        expected = [t.predicted(self.motion) for t in self.tracks]
        track_kps = np.stack([k for k, _ in expected])
        track_boxes = np.stack([b for _, b in expected])
        areas = np.prod(np.clip(track_boxes[:, 2:] - track_boxes[:, :2], 0, None), axis=1)
        oks, common = keypoint_similarity(keypoints, track_kps, self.sigmas, areas, self.keypoint_threshold)
        iou = box_iou(boxes, track_boxes)
        use_oks = common >= self.min_keypoints
        value = np.where(use_oks, oks, iou)
        ok = value >= np.where(use_oks, self.oks_threshold, self.iou_threshold)
        score[ok] = value[ok]
        return score

    def update(self, people: Sequence[Mapping], t: float | None = None) -> list[dict]:
        """One frame: ``people`` (in any order) -> shallow copies in the same order, each with
        ``track_id`` (and, with ``smooth``, smoothed ``keypoints``). ``t``: the frame's time in
        seconds (default: frames so far / ``fps``)."""
        t = self.frames / self.fps if t is None else float(t)
        self.frames += 1
        keypoints, boxes = _person_arrays(people, len(self.sigmas))
        if keypoints.shape[1] != len(self.sigmas):
            raise ValueError(f"people have {keypoints.shape[1]} keypoints, the tracker's layout {len(self.sigmas)}")
        chosen = best_first_matching(self.similarity(keypoints, boxes)[None])[0] if len(self.tracks) else \
            np.full(len(people), -1)
        matched = set()
        of_person: list[Track] = []
        for i, j in enumerate(chosen):
            if j >= 0:
                track = self.tracks[j]
                track.move(keypoints[i], boxes[i], self.keypoint_threshold, self.min_keypoints)
                track.hits += 1
                if track.missed and track.smoother is not None:
                    track.smoother.reset()  # every keypoint disappeared for a while
                track.missed = 0
                matched.add(int(j))
            else:
                track = Track(self.next_id, keypoints[i], boxes[i],
                              OneEuroFilter(**self.filter_options) if self.smooth else None)
                self.next_id += 1
            of_person.append(track)
        live = []
        for j, track in enumerate(self.tracks):
            if j not in matched:
                track.missed += 1
                if track.missed > self.max_missed:
                    continue
            live.append(track)
        self.tracks = live + [track for track, j in zip(of_person, chosen) if j < 0]
        out = []
        for person, track, kps in zip(people, of_person, keypoints):
            record = dict(person)
            record["track_id"] = track.id
            if track.smoother is not None:
                found = kps[:, 2] >= self.keypoint_threshold
                smoothed = kps.copy()
                smoothed[:, :2] = track.smoother(kps[:, :2], t, found)
                record["keypoints"] = smoothed
            out.append(record)
        return out

    def track(self, frames: Iterable, times: Iterable[float] | None = None) -> Iterator[list[dict]]:
        """``update`` over a sequence of frames, each a list of people or a prediction with
        ``people`` (posenet's ``Prediction``, the portable decoder's result dict)."""
        times = iter(times) if times is not None else None
        for frame in frames:
            people = frame.get("people") if isinstance(frame, Mapping) else getattr(frame, "people", frame)
            yield self.update(people, None if times is None else next(times))


__all__ = ["CONFIG_KEYS", "Track", "Tracker", "box_iou", "keypoint_similarity"]
