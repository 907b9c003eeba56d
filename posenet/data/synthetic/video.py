"""A synthetic video with known identities: people walking across a fixed scene at different
speeds, crossing and hiding each other, entering and leaving, and people standing still, with a
ground-truth track id on every annotation (PoseTrack's ``track_id``), so that tracking and
keypoint jitter can be measured.

``SyntheticVideo(**options).frames(seed)`` yields the frames (``VideoFrame``: BGR image and COCO
annotations, each with ``track_id``); ``write_synthetic_video`` writes them as
``OUT/frames/000000.jpg ...`` and ``OUT/annotations.json`` (COCO: ``images`` with ``frame_id``,
``vid_id`` and ``file_name`` under ``frames/``; ``info.fps``); ``read_video_annotations`` reads
the file back, one list of people per frame.

The scene: one background and sensor-noise field per video (``render``'s), a fixed exposure,
fresh sensor noise every frame (what makes a still person's predicted keypoints jitter).
Walkers: standing heights log-uniform in [min_height, max_height] px, facing the camera turned up
to 30 degrees towards where they go (the quickstart world's "front" views), alternately from the
left and from the right at ``min_speed``..``max_speed`` px per frame, walkers 2k and 2k + 1 crossing
each other at a random place of the middle 40 % of the width within the middle half of the video
(each enters from outside the frame, or is already on its way at the first frame, and some leave
before the last); legs and arms swing in a walk cycle
of one stride per 0.8 standing heights walked. Still people stand in ``stand`` poses a little
further back (higher in the picture, drawn first), so that walkers pass in front of them. Depth
order is the figures' lowest rows, as in the still images. Track ids: 1, 2, ... for the still
people first, then the walkers; a person is annotated in the frames where enough of it is seen
(``SyntheticCocoGenerator``'s rule: keypoints with visibility 1 or 2, boxes and polygons of what
is drawn).
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from tqdm import tqdm

from posenet.data.keypoints import COCO_PERSON
from posenet.data.synthetic.figure import BodyShape, Figure, PoseAngles, sample_pose
from posenet.data.synthetic.generator import SyntheticCocoGenerator
from posenet.data.synthetic.render import (LABEL_STRIDE, NoiseField, Outfit, draw_background, draw_figure,
                                           encode_jpeg)
from posenet.utils.io import write_text_atomic

FRAMES_DIR = "frames"
ANNOTATIONS = "annotations.json"
# Annotation ids are frame id * this + k.
ANNOTATIONS_PER_FRAME = 100
_SEED_KEY = 7  # the video's random streams: SeedSequence([seed, _SEED_KEY, ...])


@dataclass
class Person:
    """One person of the video: its track id, look, place and motion (``speed`` px per frame
    along ``direction`` +1 / -1 from ``x0`` at frame ``enter``; 0 for a still person)."""

    track_id: int
    body: BodyShape
    pose: PoseAngles
    outfit: Outfit
    yaw: float
    elevation: float
    roll: float
    height: float
    x0: float
    cy: float
    speed: float = 0.0
    direction: int = 1
    enter: float = 0.0
    phase: float = 0.0

    def x(self, frame: int) -> float:
        return self.x0 + self.direction * self.speed * (frame - self.enter)

    def figure(self, frame: int) -> Figure:
        """The posed, projected figure of ``frame``: a walk cycle's legs and arms for a walker."""
        pose = self.pose
        if self.speed > 0:
            walked = self.speed * (frame - self.enter)
            phi = self.phase + 2 * np.pi * walked / (0.8 * self.height)
            leg, arm = np.deg2rad(24.0) * np.sin(phi), np.deg2rad(18.0) * np.sin(phi)

            def limb(swing: float, bend: float) -> tuple:  # forward (azimuth 0) or backward (pi)
                return (abs(swing), 0.0 if swing >= 0 else np.pi, bend)

            pose = dataclasses.replace(
                pose,
                left_leg=limb(leg, np.deg2rad(8 + 25 * max(0.0, -np.sin(phi)))),
                right_leg=limb(-leg, np.deg2rad(8 + 25 * max(0.0, np.sin(phi)))),
                left_arm=limb(-arm, np.deg2rad(15.0)), right_arm=limb(arm, np.deg2rad(15.0)))
        return Figure(self.body, pose, self.yaw, self.elevation, self.roll, self.height, (self.x(frame), self.cy))


@dataclass
class VideoFrame:
    """One frame: ``index`` (0-based), ``image`` BGR (H, W, 3) uint8, ``annotations`` (COCO
    fields and ``track_id``, without ``id``/``image_id``)."""

    index: int
    image: np.ndarray
    annotations: list[dict]


class SyntheticVideo:
    """People walking across a fixed scene (the module's docstring gives the world).

    Keyword arguments (all optional): ``width``, ``height`` (px); ``frames``; ``fps`` (the time
    stamps: frame / fps); ``walkers`` and ``still`` (how many people of each kind);
    ``min_height``, ``max_height`` (standing heights, px); ``min_speed``, ``max_speed`` (px per
    frame); ``noise_std`` (sensor noise, grey levels); ``jpeg_quality``; ``min_visible_area``
    (pixels of a person that must be seen for it to be annotated).
    """

    def __init__(self, *, width: int = 256, height: int = 160, frames: int = 60, fps: float = 10.0, walkers: int = 4,
                 still: int = 1, min_height: float = 95.0, max_height: float = 130.0, min_speed: float = 1.5,
                 max_speed: float = 4.5, noise_std: float = 3.0, jpeg_quality: int = 92, min_visible_area: int = 64):
        if not (16 <= width and 16 <= height):
            raise ValueError(f"need width and height of at least 16 px, got {width} x {height}")
        if frames < 1 or walkers < 0 or still < 0 or walkers + still < 1:
            raise ValueError(f"need frames >= 1 and at least one person, got {frames} frames, {walkers} walkers, "
                             f"{still} still")
        if not (0 < min_height <= max_height and 0 <= min_speed <= max_speed and fps > 0):
            raise ValueError(f"need 0 < min_height <= max_height, 0 <= min_speed <= max_speed and fps > 0, got "
                             f"{min_height}, {max_height}, {min_speed}, {max_speed}, {fps}")
        self.width, self.height, self.num_frames, self.fps = int(width), int(height), int(frames), float(fps)
        self.walkers, self.still = int(walkers), int(still)
        self.min_height, self.max_height = float(min_height), float(max_height)
        self.min_speed, self.max_speed = float(min_speed), float(max_speed)
        self.noise_std, self.jpeg_quality = float(noise_std), int(jpeg_quality)
        self._annotator = SyntheticCocoGenerator(min_visible_area=int(min_visible_area))

    @property
    def still_track_ids(self) -> list[int]:
        """The track ids of the people who stand still (the first ones)."""
        return list(range(1, self.still + 1))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ the plan

    def people(self, rng: np.random.Generator, noise: NoiseField) -> list[Person]:
        """The still people (track ids 1..still), then the walkers."""
        W, H = self.width, self.height
        people = []
        lo, hi = np.log(self.min_height), np.log(self.max_height)
        slots = (np.arange(self.still) + 0.5) / max(1, self.still)
        for i in range(self.still):
            h = float(np.exp(rng.uniform(lo, hi)))
            x = (0.15 + 0.7 * slots[i] + rng.uniform(-0.05, 0.05)) * W
            people.append(self._person(rng, noise, len(people) + 1, h, x, rng.uniform(0.42, 0.47) * H, "stand",
                                       np.deg2rad(rng.uniform(-20, 20))))
        for i in range(self.walkers):
            h = float(np.exp(rng.uniform(lo, hi)))
            direction = 1 if i % 2 == 0 else -1
            speed = float(rng.uniform(self.min_speed, self.max_speed))
            margin = 0.3 * h  # fully outside the frame at the start of the walk
            start = -margin if direction > 0 else W + margin
            if i % 2 == 0:  # walkers 2k and 2k + 1 cross at this frame and place
                meet_frame, meet_x = rng.uniform(0.25, 0.75) * self.num_frames, rng.uniform(0.3, 0.7) * W
            enter = float(meet_frame - abs(meet_x - start) / max(speed, 1e-6))
            yaw = np.deg2rad(direction * rng.uniform(10, 30))
            p = self._person(rng, noise, len(people) + 1, h, start, rng.uniform(0.49, 0.56) * H, "stand", yaw)
            p.speed, p.direction, p.enter, p.phase = speed, direction, enter, float(rng.uniform(0, 2 * np.pi))
            people.append(p)
        return people

    def _person(self, rng, noise, track_id, height, x, cy, kind, yaw) -> Person:
        body = BodyShape.sample(rng)
        pose = sample_pose(rng, kind)
        outfit = Outfit(rng, noise, height)
        return Person(track_id, body, pose, outfit, float(yaw), float(np.deg2rad(rng.uniform(-3, 8))),
                      float(np.deg2rad(rng.normal(0, 2))), height, float(x), float(cy))

    # ------------------------------------------------------------------ frames

    def frames(self, seed: int = 0) -> Iterator[VideoFrame]:
        """The video of ``seed``, frame by frame (the same seed, the same frames)."""
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), _SEED_KEY]))
        H, W = self.height, self.width
        noise = NoiseField(rng, H, W)
        background = draw_background(rng, H, W, noise)
        people = self.people(rng, noise)
        gain, offset = rng.uniform(0.9, 1.1), rng.uniform(-10, 10)
        for index in range(self.num_frames):
            canvas = background.copy()
            label = np.zeros((H, W), np.uint16)
            figures = [(p, p.figure(index)) for p in people]
            figures = [(p, f) for p, f in figures if f.bbox[2] > 0 and f.bbox[0] < W]
            figures.sort(key=lambda pf: pf[1].bottom)  # lower in the picture = nearer = drawn later
            for i, (person, fig) in enumerate(figures):
                draw_figure(canvas, label, fig, person.outfit, LABEL_STRIDE * (i + 1), detailed=fig.height >= 36)
            annotations, masks = [], []
            for i, (person, fig) in enumerate(figures):
                before = len(annotations)
                self._annotator._annotate_person(fig, LABEL_STRIDE * (i + 1), label, True, annotations, masks)
                if len(annotations) > before:
                    annotations[-1]["track_id"] = person.track_id
            frame_rng = np.random.default_rng(np.random.SeedSequence([int(seed), _SEED_KEY, index + 1]))
            image = cv2.convertScaleAbs(canvas, alpha=gain, beta=offset)
            if self.noise_std > 0:
                noisy = image.astype(np.float32) + frame_rng.normal(0, self.noise_std, image.shape)
                image = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
            yield VideoFrame(index, image, annotations)

    def encode(self, image: np.ndarray) -> bytes:
        return encode_jpeg(image, self.jpeg_quality)


def write_synthetic_video(out_dir, seed: int = 0, video: SyntheticVideo | None = None, progress: bool = True) -> dict:
    """Write the video of ``seed`` under ``out_dir``: ``frames/000000.jpg ...`` and
    ``annotations.json`` (COCO, a ``track_id`` per annotation; written last, atomically).
    Returns a summary: frames, persons (annotations), track ids, seconds."""
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    video = video or SyntheticVideo()
    out = Path(out_dir)
    (out / FRAMES_DIR).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    images, annotations = [], []
    bar = None
    if progress:
        bar = tqdm(total=video.num_frames, desc="synthetic video", unit="frame", dynamic_ncols=True)
    try:
        for frame in video.frames(seed):
            image_id = frame.index + 1
            name = f"{frame.index:06d}.jpg"
            (out / FRAMES_DIR / name).write_bytes(video.encode(frame.image))
            images.append({"id": image_id, "file_name": f"{FRAMES_DIR}/{name}", "width": video.width,
                           "height": video.height, "frame_id": frame.index, "vid_id": 1, "license": 0})
            for k, ann in enumerate(frame.annotations):
                annotations.append({"id": image_id * ANNOTATIONS_PER_FRAME + k, "image_id": image_id, **ann})
            if bar:
                bar.update()
    finally:
        if bar:
            bar.close()
    data = {
        "info": {"description": "posenet synthetic video with track ids", "version": "1.0", "year": 2026,
                 "contributor": "posenet", "seed": int(seed), "fps": video.fps, "frames": video.num_frames,
                 "still_track_ids": video.still_track_ids, "world": repr(video)},
        "licenses": [{"id": 0, "name": "generated", "url": ""}],
        "videos": [{"id": 1, "name": "synthetic", "fps": video.fps}],
        "images": images,
        "annotations": annotations,
        "categories": [COCO_PERSON.coco_category()],
    }
    write_text_atomic(out / ANNOTATIONS, json.dumps(data, separators=(",", ":")))
    return {"out_dir": str(out), "seed": int(seed), "frames": len(images), "persons": len(annotations),
            "tracks": len({a["track_id"] for a in annotations}), "seconds": time.perf_counter() - start}


def read_video_annotations(path) -> tuple[list[list[dict]], dict]:
    """The people of each frame of a video's annotation file (``annotations.json``, or its
    folder), in frame order: ``track_id``, ``keypoints`` (K, 3) float (x, y, visibility),
    ``box`` [x1, y1, x2, y2], ``area``, ``num_keypoints``; and the file's ``info``."""
    path = Path(path)
    if path.is_dir():
        path = path / ANNOTATIONS
    data = json.loads(path.read_text())
    images = sorted(data["images"], key=lambda im: im.get("frame_id", im["id"]))
    row = {im["id"]: i for i, im in enumerate(images)}
    frames: list[list[dict]] = [[] for _ in images]
    for ann in data["annotations"]:
        if ann.get("iscrowd"):
            continue
        x, y, w, h = ann["bbox"]
        frames[row[ann["image_id"]]].append({
            "track_id": int(ann["track_id"]),
            "keypoints": np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3),
            "box": np.array([x, y, x + w, y + h], dtype=np.float64), "area": float(ann["area"]),
            "num_keypoints": int(ann["num_keypoints"])})
    info = dict(data.get("info", {}))
    info["files"] = [im["file_name"] for im in images]
    return frames, info


__all__ = ["Person", "SyntheticVideo", "VideoFrame", "read_video_annotations", "write_synthetic_video"]
