"""Poses in a video (what ``scripts/video.py`` runs): a camera, a video file or a folder of frames,
each frame through a predictor, its people tracked (a track id per person across frames,
``posenet.portable.tracking``; optionally smoothed) and written as JSON lines (``json``) and/or
drawn as skeletons, coloured and labelled by track id, with a line of the network and decoding
times and the frame rate, written as a video (``out``) and/or shown in a window (``show``).

Sources (``open_source``): a string of digits is a camera index, a folder is its jpg/jpeg/png/bmp
images in sorted order (unreadable ones skipped with a warning line, as ``infer_folder`` does),
anything else a video file that OpenCV reads. A source that cannot be opened (a missing file, a
camera that does not open, a file OpenCV cannot decode, a folder without images) is one
PosenetError; the end of the stream ends the run.

The people of a frame are the predictor's whose box score reaches its
``picture_box_threshold`` (``frame_people``). The JSON file has one line per frame: ``frame``
(0-based index of the frames read), ``time`` (seconds: index / fps for files and folders, since
the first frame for a camera) and ``people`` (``person_record``: ``track_id``, ``score``,
``box_score``, ``box``, ``keypoints``); nothing is drawn when it is the only output.

The video is written with OpenCV's writer (``mp4v``) at the ``fps`` given, else the source's
frame rate when it has one, else 25, to a temporary file beside ``out`` that is renamed at the
end (``utils.io.atomic_path``), as is the JSON file; every frame is written at the first frame's
size (rounded down to even sides, which the codec needs). A window opens only where one can: on
Linux a display (``DISPLAY`` or ``WAYLAND_DISPLAY``) and an OpenCV with GUI support
(opencv-python-headless has none); elsewhere one line says why and the files are still written.
q or Esc in the window stops; so does Ctrl-C, and what was written so far is still finalised.

Without a window the loop is pipelined (``VideoDemo(pipeline=True)``, the default): one thread
reads the next frames and makes them into network inputs (the predictor's ``prepare``: resizing
per scale), this one runs the network (``run_network``) and, on the CPU, the decoding, a third
(decoding there where the network runs on a GPU: ``decodes_apart``) tracks, draws and writes
the frames in their order; with ``pipeline=False`` each frame is read and run (``run``), then
written before the next. A predictor without ``prepare`` / ``run_network`` is run whole
(``run``) in the network's thread. The people are the same either way; in the pipelined loop a
frame's ``network_ms`` leaves out its resizing, done while the network ran the frame before.
"""
from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import queue
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from omegaconf import DictConfig

from posenet.config.loader import load_config
from posenet.config.schema import VideoConfig
from posenet.data.keypoints import COCO_PERSON, KeypointLayout
from posenet.errors import ConfigError, DataError, PosenetError
from posenet.inference.folder import EXTENSIONS, list_images
from posenet.inference.predictor import as_rgb
from posenet.portable.tracking import Tracker
from posenet.utils.io import atomic_path
from posenet.vis import draw_skeleton, person_color

FOURCC = "mp4v"
DEFAULT_FPS = 25.0
WINDOW = "posenet"
QUIT_KEYS = (ord("q"), ord("Q"), 27)  # 27: Esc
# The frame rate drawn on the frames and shown by the progress line is over this many last frames.
FPS_WINDOW = 10
# Frames read ahead of the network, and run frames waiting to be drawn and written (pipelined).
PIPELINE_DEPTH = 4


@contextlib.contextmanager
def quiet_opencv() -> Iterator[list[str]]:
    """What OpenCV and FFmpeg print on stderr in the block (the lines, once it ends) kept off
    the terminal: a camera or a file that does not open becomes our one error line, not a page
    of backend warnings. Where stderr has no file descriptor nothing is kept off."""
    lines: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield lines
        return
    with tempfile.TemporaryFile() as kept:
        os.dup2(kept.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            kept.seek(0)
            lines.extend(line for line in kept.read().decode(errors="replace").splitlines() if line.strip())


def _ffmpeg_reason(lines: list[str]) -> str:
    """FFmpeg's last message among ``lines`` ("[mov,mp4,... @ 0x55...] moov atom not found"), as
    " (FFmpeg: moov atom not found)", or ""."""
    messages = [m.group(1) for m in map(re.compile(r"^\[[^\]]* @ 0x[0-9a-fA-F]+\] (.+)$").match, lines) if m]
    return f" (FFmpeg: {messages[-1].strip()})" if messages else ""


# ----------------------------------------------------------------------------- sources


class FrameSource:
    """Frames as (H, W, 3) uint8 RGB arrays, in order (``frames()``); ``total`` frames and
    ``fps`` where the source knows them (else None); ``skipped`` counts unreadable frames."""

    name: str
    total: int | None = None
    fps: float | None = None
    skipped: int = 0

    def frames(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _known(value: float, low: float, high: float) -> float | None:
    return float(value) if math.isfinite(value) and low < value <= high else None


class CaptureSource(FrameSource):
    """A camera or a video file through ``cv2.VideoCapture`` (BGR frames, turned into RGB)."""

    def __init__(self, capture: cv2.VideoCapture, name: str, camera: bool):
        self.capture, self.name, self.camera = capture, name, camera
        self.fps = _known(capture.get(cv2.CAP_PROP_FPS), 0, 1000)
        count = _known(capture.get(cv2.CAP_PROP_FRAME_COUNT), 0, float("inf"))
        self.total = None if camera or count is None else int(count)

    def frames(self) -> Iterator[np.ndarray]:
        while True:
            ok, frame = self.capture.read()
            if not ok or frame is None:
                return
            yield as_rgb(frame[:, :, 2::-1] if frame.ndim == 3 else frame)

    def close(self) -> None:
        self.capture.release()


class FolderSource(FrameSource):
    """A folder's images in sorted order (``folder.list_images``); unreadable ones are skipped
    with a warning line."""

    def __init__(self, folder: Path, files: list[Path], log: Callable[[str], object] = print):
        self.name, self.files, self.log = str(folder), files, log
        self.total = len(files)

    def frames(self) -> Iterator[np.ndarray]:
        for path in self.files:
            try:
                rgb = as_rgb(path)
            except DataError as e:
                self.log(f"warning: skipped {e}")
                self.skipped += 1
                continue
            yield rgb


def open_source(source: str | os.PathLike | int, log: Callable[[str], object] = print) -> FrameSource:
    """The frames of a camera index (an int or a string of digits), a folder of images or a
    video file; PosenetError saying why for one that cannot be opened."""
    text = str(source)
    if isinstance(source, int) or text.isdigit():
        with quiet_opencv():
            capture = cv2.VideoCapture(int(text))
        if not capture.isOpened():
            capture.release()
            raise PosenetError(f"camera {int(text)} cannot be opened (no such camera, in use by another "
                               "program, or no permission)")
        return CaptureSource(capture, f"camera {int(text)}", camera=True)
    path = Path(source)
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise PosenetError(f"no frames in {path}: no images there (looked for {', '.join(EXTENSIONS)})")
        return FolderSource(path, files, log)
    if not path.exists():
        raise PosenetError(f"video not found: {path}")
    if not os.access(path, os.R_OK):
        raise PosenetError(f"{path}: no permission to read the video")
    with quiet_opencv() as messages:
        capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise PosenetError(f"cannot open video {path}: not a video file, or a format this OpenCV build "
                           f"cannot decode{_ffmpeg_reason(messages)}")
    return CaptureSource(capture, str(path), camera=False)


# ----------------------------------------------------------------------------- outputs


class VideoOutput:
    """An ``mp4v`` video at ``path`` (the temporary file; ``name`` is the final one, for
    messages), opened at the first frame: every frame is written at that frame's size, rounded
    down to even sides."""

    def __init__(self, path: Path, fps: float, name: Path):
        self.path, self.fps, self.name = path, float(fps), name
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None  # (width, height)

    def write(self, bgr: np.ndarray) -> None:
        if self.writer is None:
            h, w = bgr.shape[:2]
            self.size = (max(2, w - w % 2), max(2, h - h % 2))
            with quiet_opencv():
                self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*FOURCC), self.fps, self.size)
            if not self.writer.isOpened():
                self.writer = None
                raise PosenetError(f"cannot write {self.name}: OpenCV has no {FOURCC} writer for "
                                   f"'{self.name.suffix}' files (use a .mp4 name)")
        if bgr.shape[1::-1] != self.size:
            bgr = cv2.resize(bgr, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(bgr)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


def display_problem() -> str | None:
    """Why no window can open in this process, or None where one may."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (neither DISPLAY nor WAYLAND_DISPLAY is set)"
    if re.search(r"^\s*GUI:\s*NONE\s*$", cv2.getBuildInformation(), re.MULTILINE):
        return "this OpenCV has no GUI support (opencv-python-headless; opencv-python has windows)"
    return None


class Window:
    """``cv2.imshow`` frames; ``show`` is False once q or Esc is pressed or the window closed."""

    def __init__(self, title: str = WINDOW):
        self.title, self.opened = title, False

    def show(self, bgr: np.ndarray) -> bool:
        cv2.imshow(self.title, bgr)
        self.opened = True
        if cv2.waitKey(1) & 0xFF in QUIT_KEYS:
            return False
        return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        if self.opened:
            with contextlib.suppress(cv2.error):
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)


def _first_sentence(error: cv2.error) -> str:
    text = getattr(error, "err", None) or str(error)
    return text.strip().split(". ")[0].rstrip(".")


def _band(width: int, height: int, text: str):
    """The layout of ``overlay``'s band on a frame of ``width`` x ``height``: the font scale and
    thickness, the padding, and the band's (width, height)."""
    # the text grows with the frame's width (full size from 1280 px), smaller where it would not fit
    width_at_1 = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 1.0, 1)[0][0]
    scale = max(0.25, min(1.0, max(0.45, width / 1280), 0.95 * width / width_at_1))
    thickness = 1 if scale < 0.7 else 2
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(2, th // 3)
    return scale, thickness, pad, (min(width, tw + 2 * pad), min(height, th + base + 2 * pad))


def overlay_band(bgr: np.ndarray, text: str) -> tuple[int, int]:
    """(width, height) of the band ``overlay(bgr, text)`` draws at the top left."""
    return _band(bgr.shape[1], bgr.shape[0], text)[3]


def overlay(bgr: np.ndarray, text: str) -> np.ndarray:
    """``bgr`` with ``text`` in a small dark band at its top left (drawn in place when it can be)."""
    if not (bgr.flags.writeable and bgr.flags.c_contiguous):
        bgr = np.array(bgr, order="C")
    scale, thickness, pad, (bw, bh) = _band(bgr.shape[1], bgr.shape[0], text)
    th = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][1]
    cv2.rectangle(bgr, (0, 0), (bw - 1, bh - 1), (0, 0, 0), -1)  # bw x bh pixels
    cv2.putText(bgr, text, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness,
                cv2.LINE_AA)
    return bgr


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


# ----------------------------------------------------------------------------- people


@dataclass
class _VideoSection:
    video: VideoConfig = field(default_factory=VideoConfig)


def video_section(overrides: Sequence[str] = (), config: str | os.PathLike | None = None) -> DictConfig:
    """The config's ``video`` section: of the file ``config`` (a run's config; default: the
    schema's defaults) with ``overrides`` (key=value, ``video.*`` ones without a file)."""
    if config is not None:
        return load_config(config, list(overrides)).video
    return load_config(None, list(overrides), schema=_VideoSection).video


def make_tracker(predictor, tracking: Mapping | bool | None = True, fps: float = DEFAULT_FPS) -> Tracker | None:
    """The ``Tracker`` of ``predictor``'s people (its layout's OKS sigmas, its keypoint
    threshold) with the options of ``tracking`` (the config's ``video`` section or a dict of its
    keys; True: the defaults); None where tracking is off (``video.track: false``, or
    ``tracking`` False / None)."""
    if tracking is None or tracking is False:
        return None
    section = video_section() if tracking is True else tracking
    if not section.get("track", True):
        return None
    layout = getattr(predictor, "layout", None) or COCO_PERSON
    try:
        return Tracker.from_config(section, layout.sigmas, keypoint_threshold=float(predictor.keypoint_threshold),
                                   fps=fps)
    except ValueError as e:
        raise ConfigError(f"video: {e}") from None


def frame_people(predictor, prediction) -> list[dict]:
    """The people of a frame that the video draws, tracks and writes: those whose box score
    reaches the predictor's ``picture_box_threshold`` (as infer.py's pictures)."""
    threshold = float(getattr(predictor, "picture_box_threshold", 0.0))
    return [p for p in prediction.people if p["box_score"] >= threshold]


def draw_people(bgr: np.ndarray, people: Sequence[Mapping], layout: KeypointLayout | None = None,
                keypoint_threshold: float = 0.05, keep_clear: tuple[int, int] = (0, 0)) -> np.ndarray:
    """A copy of ``bgr`` with each person's skeleton (keypoints at or above
    ``keypoint_threshold``): the colour of its ``track_id`` and the id as a label above its
    highest keypoint, or, for people without one, the colour of their place in the list.
    ``keep_clear``: (width, height) of a top-left corner the labels stay below (``overlay``'s
    band, drawn over the frame afterwards)."""
    layout = layout or COCO_PERSON
    out = np.array(bgr, dtype=np.uint8, order="C")  # a copy: ``bgr`` is left as it is
    labels = []
    for i, person in enumerate(people):
        track_id = person.get("track_id")
        color = person_color(i if track_id is None else int(track_id) - 1)
        kps = np.array(person["keypoints"], dtype=np.float64)
        found = kps[:, 2] >= keypoint_threshold
        kps[:, 2] = np.where(found, 2.0, 0.0)
        out = draw_skeleton(out, kps, color, layout)
        if track_id is not None:
            x1, y1 = (kps[found, 0].min(), kps[found, 1].min()) if found.any() else tuple(person["box"][:2])
            labels.append((str(track_id), float(x1), float(y1), color))
    h, w = out.shape[:2]
    scale = max(0.35, min(1.0, max(h, w) / 900))
    for text, x, y, color in labels:  # on top of every skeleton
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        x0 = int(np.clip(x, 0, max(0, w - tw - 2)))
        top = keep_clear[1] if x0 < keep_clear[0] else 0
        y0 = int(np.clip(y - 4, top + th + 2, h - 1))
        cv2.rectangle(out, (x0, y0 - th - 2), (x0 + tw + 2, y0 + base - 1), color, -1)
        cv2.putText(out, text, (x0 + 1, y0 - 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0) if sum(color) > 380 else (255, 255, 255), 1, cv2.LINE_AA)
    return out


def person_record(person: Mapping, digits: int = 2) -> dict:
    """One person of a frame as JSON: ``track_id`` (null without tracking), ``score``,
    ``box_score``, ``box`` [x1, y1, x2, y2] and ``keypoints`` [[x, y, score], ...] in image
    pixels (coordinates to ``digits`` decimals, scores to 4)."""
    kps = np.asarray(person["keypoints"], dtype=np.float64).reshape(-1, 3)
    track_id = person.get("track_id")
    return {"track_id": None if track_id is None else int(track_id),
            "score": round(float(person["score"]), 4), "box_score": round(float(person["box_score"]), 4),
            "box": [round(float(v), digits) for v in np.asarray(person["box"]).reshape(4)],
            "keypoints": [[round(float(x), digits), round(float(y), digits), round(float(c), 4)] for x, y, c in kps]}


class JsonLines:
    """One JSON line per frame (``frame`` index, ``time`` in seconds, ``people``) at ``path``
    (the temporary file), opened at the first frame."""

    def __init__(self, path: Path):
        self.path, self.file = path, None

    def write(self, frame: int, time_s: float, people: Sequence[Mapping]) -> None:
        if self.file is None:
            self.file = open(self.path, "w")
        record = {"frame": int(frame), "time": round(float(time_s), 6), "people": [person_record(p) for p in people]}
        self.file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def read_json_lines(path: str | os.PathLike) -> list[dict]:
    """The frames of a ``--json`` file (what ``JsonLines`` wrote), keypoints and boxes as arrays."""
    frames = []
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            for person in record["people"]:
                person["keypoints"] = np.asarray(person["keypoints"], dtype=np.float64).reshape(-1, 3)
                person["box"] = np.asarray(person["box"], dtype=np.float64)
            frames.append(record)
    return frames


def _check_output(path: Path, option: str, example: str) -> None:
    """One line for an output path that cannot be written: a folder, a parent that is a file,
    a folder without write permission. Missing parent folders are made when it is written."""
    if path.is_dir():
        raise PosenetError(f"{option} {path} is a folder: give a file name, e.g. {path / example}")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise PosenetError(f"{option} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PosenetError(f"{option} {path}: no permission to write in {parent}")


# ----------------------------------------------------------------------------- the demo


@dataclass
class _Frame:
    """A frame on its way through the loop."""

    index: int
    time: float
    rgb: np.ndarray
    inputs: object = None        # the network inputs of ``rgb`` (``predictor.prepare``), or ``rgb`` itself
    decode: Callable | None = None  # gives ``prediction`` once the network has run
    prediction: object = None


_END = object()


class VideoDemo:
    """A source and its outputs, checked and opened before any model is loaded (so that every
    mistake on the command line costs nothing); ``run(predictor)`` then does the frames.

    ``out``: the video to write; ``show``: a window where one can open (else a line says why);
    ``json``: the people of every frame as JSON lines; one of them is needed. ``fps``: the written
    video's frame rate and the time stamps' (default: the source's, else 25); ``max_frames``: stop
    after that many frames. ``tracking``: the config's ``video`` section (track ids, smoothing;
    True: its defaults; False: no track ids). ``pipeline``: the source read, the network run and
    the frames drawn and written in three threads that overlap (False: one after the other;
    frames are written in order either way; a window always runs the serial loop).
    ``decode_apart``: in the pipelined loop, decode in the writing thread (True) or after the
    network in its thread (False); default: ``decodes_apart(predictor)``.
    """

    def __init__(self, source: str | os.PathLike | int, out: str | os.PathLike | None = None, show: bool = False,
                 fps: float | None = None, max_frames: int | None = None, progress: bool = True,
                 log: Callable[[str], object] = print, json: str | os.PathLike | None = None,
                 tracking: Mapping | bool | None = True, pipeline: bool = True,
                 decode_apart: bool | None = None):
        self.out = Path(out) if out is not None else None
        self.json = Path(json) if json is not None else None
        if fps is not None and not (math.isfinite(fps) and fps > 0):
            raise PosenetError(f"--fps must be a positive number, got {fps}")
        if max_frames is not None and max_frames < 1:
            raise PosenetError(f"--max-frames must be at least 1, got {max_frames}")
        if self.out is not None and self.out.is_dir():
            raise PosenetError(f"--out {self.out} is a folder: give a video file name, e.g. {self.out / 'poses.mp4'}")
        if self.out is not None and not self.out.suffix:
            raise PosenetError(f"--out {self.out} has no extension: give a video file name, e.g. {self.out}.mp4")
        if self.out is not None:
            _check_output(self.out, "--out", "poses.mp4")
        if self.json is not None:
            _check_output(self.json, "--json", "poses.jsonl")
            if self.out is not None and self.json.resolve() == self.out.resolve():
                raise PosenetError(f"--json and --out are the same file {self.out}: give two names")
        self.window = None
        if show:
            problem = display_problem()
            if problem is None:
                self.window = Window()
            elif self.out is None and self.json is None:
                raise PosenetError(f"--show: no window can open: {problem}; give --out FILE.mp4 to write the video")
            else:
                log(f"no window: {problem}; writing {self._written()} only")
        elif self.out is None and self.json is None:
            raise PosenetError("nothing to do: give --out FILE.mp4 to write the video, --show to watch it, "
                               "--json FILE to write the poses, or several")
        self.fps, self.max_frames, self.progress, self.log = fps, max_frames, progress, log
        self.tracking, self.pipeline, self.decode_apart = tracking, pipeline, decode_apart
        self.source = open_source(source, log)

    def _written(self) -> str:
        return " and ".join(str(p) for p in (self.out, self.json) if p is not None)

    def close(self) -> None:
        self.source.close()
        if self.window is not None:
            self.window.close()

    def __enter__(self) -> "VideoDemo":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _show(self, frame: np.ndarray) -> bool:
        """Show ``frame``; False where the user asked to stop. A window that fails to open
        (``cv2.imshow`` raises, e.g. an OpenCV without GUI support) is given up with one line."""
        try:
            return self.window.show(frame)
        except cv2.error as e:
            self.window = None
            if self.out is None and self.json is None:
                raise PosenetError(f"--show: no window can open: cv2.imshow failed ({_first_sentence(e)}); "
                                   "give --out FILE.mp4 to write the video") from None
            self.log(f"no window: cv2.imshow failed ({_first_sentence(e)}); writing {self._written()} only")
            return True

    def _timed_frames(self, fps: float) -> Iterator[_Frame]:
        """The source's frames with their index and time stamp: index / ``fps`` for files and
        folders, seconds since the first frame for a camera."""
        camera = getattr(self.source, "camera", False)
        start = None
        for index, rgb in enumerate(self.source.frames()):
            if camera:
                now = time.perf_counter()
                start = now if start is None else start
                t = now - start
            else:
                t = index / fps
            yield _Frame(index, t, rgb)
            if self.max_frames is not None and index + 1 >= self.max_frames:
                return

    def run(self, predictor) -> dict:
        """Every frame through ``predictor`` (``run(rgb) -> Prediction``; its ``layout``,
        ``keypoint_threshold`` and ``picture_box_threshold``), its people tracked, drawn and
        written; returns the summary: frames, skipped, mean network and decoding ms, mean fps,
        track ids given, the outputs."""
        source, out = self.source, self.out
        total = source.total
        if self.max_frames is not None:
            total = self.max_frames if total is None else min(total, self.max_frames)
        fps = self.fps or source.fps or DEFAULT_FPS
        draw = out is not None or self.window is not None
        pipelined = self.pipeline and self.window is None
        outputs = [f"{out} at {fps:g} fps" if out else None, str(self.json) if self.json else None]
        outputs = " and ".join(o for o in outputs if o)
        self.log(f"{source.name} ({f'{source.total} frames' if source.total is not None else 'a stream'}"
                 + (f", {source.fps:g} fps" if source.fps else "") + ")"
                 + (f" -> {outputs}" if outputs else "") + f"; {predictor.describe()}")
        tracker = make_tracker(predictor, self.tracking, fps)
        layout = getattr(predictor, "layout", None)
        keypoint_threshold = float(getattr(predictor, "keypoint_threshold", 0.05))
        state = {"network": [], "decode": [], "people": 0, "size": None, "stopped": False}
        with contextlib.ExitStack() as stack:
            writer = lines = None
            if out is not None:
                writer = VideoOutput(stack.enter_context(atomic_path(out, out.suffix)), fps, out)
                stack.callback(writer.close)  # released before the rename
            if self.json is not None:
                lines = JsonLines(stack.enter_context(atomic_path(self.json, self.json.suffix)))
                stack.callback(lines.close)
            bar = stack.enter_context(tqdm(total=total, desc="video", unit="frame", disable=not self.progress))
            recent = collections.deque(maxlen=FPS_WINDOW)  # seconds per frame
            last = [time.perf_counter()]

            def finish(frame: _Frame) -> bool:
                """Track, draw, write and show one predicted frame; False to stop."""
                prediction = frame.prediction
                people = frame_people(predictor, prediction)
                if tracker is not None:
                    people = tracker.update(people, frame.time)
                network, decode = state["network"], state["decode"]
                network.append(float(prediction.timing["network_ms"]))
                decode.append(float(prediction.timing["decode_ms"]))
                state["people"] += len(people)
                now = time.perf_counter()
                recent.append(max(now - last[0], 1e-9))
                last[0] = now
                rate = len(recent) / sum(recent)
                if lines is not None:
                    lines.write(frame.index, frame.time, people)
                keep_going = True
                if draw:
                    text = f"network {network[-1]:.1f} ms  decode {decode[-1]:.1f} ms  {rate:.1f} FPS"
                    bgr = draw_people(frame.rgb[:, :, ::-1], people, layout, keypoint_threshold,
                                      keep_clear=overlay_band(frame.rgb, text))
                    bgr = overlay(bgr, text)
                    if writer is not None:
                        writer.write(bgr)
                    state["size"] = writer.size if writer is not None else bgr.shape[1::-1]
                    if self.window is not None and not self._show(bgr):
                        state["stopped"], keep_going = True, False
                elif state["size"] is None:
                    state["size"] = frame.rgb.shape[1::-1]
                bar.update(1)
                bar.set_postfix({"net": f"{network[-1]:.1f}ms", "dec": f"{decode[-1]:.1f}ms", "fps": f"{rate:.1f}"})
                return keep_going

            start = time.perf_counter()
            loop = self._pipelined if pipelined else self._serial
            interrupted = loop(predictor, fps, finish)
            seconds = time.perf_counter() - start
            if not state["network"] and not interrupted:
                raise PosenetError(f"no frames could be read from {source.name}")
        network, decode, size = state["network"], state["decode"], state["size"]
        frames = len(network)
        summary = {
            "source": source.name, "frames": frames, "skipped": source.skipped,
            "network_ms": _mean(network), "decode_ms": _mean(decode),
            "fps": frames / seconds if frames else None, "seconds": seconds,
            "width": size[0] if size else None, "height": size[1] if size else None,
            "out": str(out) if out is not None and frames else None,
            "json": str(self.json) if self.json is not None and frames else None,
            "people": state["people"], "tracks": tracker.next_id - 1 if tracker is not None else None,
            "pipelined": pipelined,
            "decoded_apart": pipelined and self._decoding_apart(predictor),
            "interrupted": interrupted, "stopped": state["stopped"],
        }
        if source.skipped:
            self.log(f"skipped {source.skipped} unreadable frame file(s)")
        ended = " (interrupted)" if interrupted else " (stopped)" if state["stopped"] else ""
        timings = (f": network {summary['network_ms']:.1f} ms, decoding {summary['decode_ms']:.2f} ms per frame, "
                   f"{summary['fps']:.1f} FPS" if frames else "")
        tracks = f", {summary['tracks']} track ids" if summary["tracks"] is not None and frames else ""
        written = " and ".join(p for p in (summary["out"], summary["json"]) if p) or "nothing written"
        self.log(f"{frames} frames{ended}{timings}{tracks} -> {written}")
        return summary

    def _decoding_apart(self, predictor) -> bool:
        return decodes_apart(predictor) if self.decode_apart is None else bool(self.decode_apart)

    def _serial(self, predictor, fps: float, finish: Callable[[_Frame], bool]) -> bool:
        """Each frame read, run, then finished before the next is read; True if interrupted."""
        try:
            for frame in self._timed_frames(fps):
                frame.prediction = predictor.run(frame.rgb)
                if not finish(frame):
                    break
        except KeyboardInterrupt:
            return True
        return False

    def _pipelined(self, predictor, fps: float, finish: Callable[[_Frame], bool]) -> bool:
        """The source read and prepared in one thread, the network run in this one, the frames
        finished in order in a third (and decoded there, with ``decodes_apart``; here else),
        through bounded queues; on Ctrl-C the frames already run are still finished. True if
        interrupted; an error of either thread is raised here."""
        ahead: queue.Queue = queue.Queue(maxsize=PIPELINE_DEPTH)
        done: queue.Queue = queue.Queue(maxsize=PIPELINE_DEPTH)
        stop = threading.Event()
        errors: list[BaseException] = []

        def put(q: queue.Queue, item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        prepare = getattr(predictor, "prepare", None)
        run_network = getattr(predictor, "run_network", None)
        apart = self._decoding_apart(predictor)

        def read() -> None:
            try:
                for frame in self._timed_frames(fps):
                    frame.inputs = prepare(frame.rgb) if prepare is not None and run_network is not None else frame.rgb
                    if not put(ahead, frame):
                        return
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                errors.append(e)
            put(ahead, _END)

        def write() -> None:
            stopped = False
            try:
                while True:
                    frame = done.get()
                    if frame is _END:
                        return
                    if stopped:
                        continue
                    if frame.prediction is None:
                        frame.prediction = frame.decode()
                    if not finish(frame):
                        stopped = True
                        stop.set()
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                errors.append(e)
                stop.set()
                while done.get() is not _END:  # let the main thread hand over the rest
                    pass

        reader = threading.Thread(target=read, name="video-read", daemon=True)
        writer = threading.Thread(target=write, name="video-write", daemon=True)
        reader.start()
        writer.start()
        interrupted = False
        try:
            while not stop.is_set():
                try:
                    frame = ahead.get(timeout=0.05)
                except queue.Empty:
                    continue
                if frame is _END:
                    break
                if run_network is not None:
                    frame.decode = run_network([frame.inputs])[0]
                    if not apart:
                        frame.prediction = frame.decode()
                else:
                    frame.prediction = predictor.run(frame.rgb)
                done.put(frame)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            stop.set()
            done.put(_END)
            writer.join()
            reader.join(timeout=5.0)
        if errors:
            raise errors[0]
        return interrupted


def decodes_apart(predictor) -> bool:
    """Whether the pipelined loop decodes a frame in the writing thread, while the network runs
    the next: where the network runs on an accelerator (a predictor's ``device``). On the CPU
    the network's threads take every core, and decoding beside them slowed the loop by a fifth
    (docs/video.md), so it follows the network in its thread."""
    device = getattr(predictor, "device", None)
    return device is not None and getattr(device, "type", str(device)) != "cpu"


def run_video(predictor, source: str | os.PathLike | int, out: str | os.PathLike | None = None, show: bool = False,
              **options) -> dict:
    """``VideoDemo(source, out, show, **options).run(predictor)``, closing the source."""
    with VideoDemo(source, out, show, **options) as demo:
        return demo.run(predictor)


__all__ = ["CaptureSource", "FolderSource", "FrameSource", "JsonLines", "VideoDemo", "VideoOutput", "Window",
           "decodes_apart", "display_problem", "draw_people", "frame_people", "make_tracker", "open_source",
           "overlay", "overlay_band", "person_record", "read_json_lines", "run_video", "video_section"]
