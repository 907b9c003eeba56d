"""Poses in a video (what ``scripts/video.py`` runs): a camera, a video file or a folder of frames,
each frame through a predictor and drawn as skeletons with a line of its network and decoding
times and the frame rate; written as a video (``out``) and/or shown in a window (``show``).

Sources (``open_source``): a string of digits is a camera index, a folder is its jpg/jpeg/png/bmp
images in sorted order (unreadable ones skipped with a warning line, as ``infer_folder`` does),
anything else a video file that OpenCV reads. A source that cannot be opened (a missing file, a
camera that does not open, a file OpenCV cannot decode, a folder without images) is one
PosenetError; the end of the stream ends the run.

The video is written with OpenCV's writer (``mp4v``) at the ``fps`` given, else the source's
frame rate when it has one, else 25, to a temporary file beside ``out`` that is renamed at the
end (``utils.io.atomic_path``); every frame is written at the first frame's size (rounded down to
even sides, which the codec needs). A window opens only where one can: on Linux a display
(``DISPLAY`` or ``WAYLAND_DISPLAY``) and an OpenCV with GUI support (opencv-python-headless has
none); elsewhere one line says why and the video is still written. q or Esc in the window
stops; so does Ctrl-C, and the video written so far is still finalised.
"""
from __future__ import annotations

import collections
import contextlib
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
from tqdm import tqdm

from posenet.errors import DataError, PosenetError
from posenet.inference.folder import EXTENSIONS, list_images
from posenet.inference.predictor import as_rgb
from posenet.utils.io import atomic_path

FOURCC = "mp4v"
DEFAULT_FPS = 25.0
WINDOW = "posenet"
QUIT_KEYS = (ord("q"), ord("Q"), 27)  # 27: Esc
# The frame rate drawn on the frames and shown by the progress line is over this many last frames.
FPS_WINDOW = 10


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


def overlay(bgr: np.ndarray, text: str) -> np.ndarray:
    """``bgr`` with ``text`` in a small dark band at its top left (drawn in place when it can be)."""
    if not (bgr.flags.writeable and bgr.flags.c_contiguous):
        bgr = np.array(bgr, order="C")
    h, w = bgr.shape[:2]
    # the text grows with the frame's width (full size from 1280 px), smaller where it would not fit
    width_at_1 = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 1.0, 1)[0][0]
    scale = max(0.25, min(1.0, max(0.45, w / 1280), 0.95 * w / width_at_1))
    thickness = 1 if scale < 0.7 else 2
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(2, th // 3)
    cv2.rectangle(bgr, (0, 0), (min(w, tw + 2 * pad), min(h, th + base + 2 * pad)), (0, 0, 0), -1)
    cv2.putText(bgr, text, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness,
                cv2.LINE_AA)
    return bgr


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


# ----------------------------------------------------------------------------- the demo


class VideoDemo:
    """A source and its outputs, checked and opened before any model is loaded (so that every
    mistake on the command line costs nothing); ``run(predictor)`` then does the frames.

    ``out``: the video to write; ``show``: a window where one can open (else a line says why);
    one of them is needed. ``fps``: the written video's frame rate (default: the source's, else
    25); ``max_frames``: stop after that many frames.
    """

    def __init__(self, source: str | os.PathLike | int, out: str | os.PathLike | None = None, show: bool = False,
                 fps: float | None = None, max_frames: int | None = None, progress: bool = True,
                 log: Callable[[str], object] = print):
        self.out = Path(out) if out is not None else None
        if fps is not None and not (math.isfinite(fps) and fps > 0):
            raise PosenetError(f"--fps must be a positive number, got {fps}")
        if max_frames is not None and max_frames < 1:
            raise PosenetError(f"--max-frames must be at least 1, got {max_frames}")
        if self.out is not None and self.out.is_dir():
            raise PosenetError(f"--out {self.out} is a folder: give a video file name, e.g. {self.out / 'poses.mp4'}")
        if self.out is not None and not self.out.suffix:
            raise PosenetError(f"--out {self.out} has no extension: give a video file name, e.g. {self.out}.mp4")
        self.window = None
        if show:
            problem = display_problem()
            if problem is None:
                self.window = Window()
            elif self.out is None:
                raise PosenetError(f"--show: no window can open: {problem}; give --out FILE.mp4 to write the video")
            else:
                log(f"no window: {problem}; writing {self.out} only")
        elif self.out is None:
            raise PosenetError("nothing to do: give --out FILE.mp4 to write the video, --show to watch it, or both")
        self.fps, self.max_frames, self.progress, self.log = fps, max_frames, progress, log
        self.source = open_source(source, log)

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
            if self.out is None:
                raise PosenetError(f"--show: no window can open: cv2.imshow failed ({_first_sentence(e)}); "
                                   "give --out FILE.mp4 to write the video") from None
            self.log(f"no window: cv2.imshow failed ({_first_sentence(e)}); writing {self.out} only")
            return True

    def run(self, predictor) -> dict:
        """Every frame through ``predictor`` (``run(rgb)``, ``draw(rgb, prediction)["skeletons"]``);
        returns the summary: frames, skipped, mean network and decoding ms, mean fps, the output."""
        source, out = self.source, self.out
        total = source.total
        if self.max_frames is not None:
            total = self.max_frames if total is None else min(total, self.max_frames)
        fps = self.fps or source.fps or DEFAULT_FPS
        self.log(f"{source.name} ({f'{source.total} frames' if source.total is not None else 'a stream'}"
                 + (f", {source.fps:g} fps" if source.fps else "") + ")"
                 + (f" -> {out} at {fps:g} fps" if out else "") + f"; {predictor.describe()}")
        network, decode = [], []
        interrupted = stopped = False
        size = None
        with contextlib.ExitStack() as stack:
            writer = None
            if out is not None:
                writer = VideoOutput(stack.enter_context(atomic_path(out, out.suffix)), fps, out)
                stack.callback(writer.close)  # released before the rename
            bar = stack.enter_context(tqdm(total=total, desc="video", unit="frame", disable=not self.progress))
            start = last = time.perf_counter()
            recent = collections.deque(maxlen=FPS_WINDOW)  # seconds per frame
            try:
                for rgb in source.frames():
                    prediction = predictor.run(rgb)
                    frame = predictor.draw(rgb, prediction)["skeletons"]
                    network.append(float(prediction.timing["network_ms"]))
                    decode.append(float(prediction.timing["decode_ms"]))
                    now = time.perf_counter()
                    recent.append(max(now - last, 1e-9))
                    last = now
                    rate = len(recent) / sum(recent)
                    text = f"network {network[-1]:.1f} ms  decode {decode[-1]:.1f} ms  {rate:.1f} FPS"
                    frame = overlay(frame, text)
                    if writer is not None:
                        writer.write(frame)
                    size = writer.size if writer is not None else frame.shape[1::-1]
                    bar.update(1)
                    bar.set_postfix({"net": f"{network[-1]:.1f}ms", "dec": f"{decode[-1]:.1f}ms", "fps": f"{rate:.1f}"})
                    if self.window is not None and not self._show(frame):
                        stopped = True
                        break
                    if self.max_frames is not None and len(network) >= self.max_frames:
                        break
            except KeyboardInterrupt:
                interrupted = True
            seconds = time.perf_counter() - start
            if not network and not interrupted:
                raise PosenetError(f"no frames could be read from {source.name}")
        frames = len(network)
        summary = {
            "source": source.name, "frames": frames, "skipped": source.skipped,
            "network_ms": _mean(network), "decode_ms": _mean(decode),
            "fps": frames / seconds if frames else None, "seconds": seconds,
            "width": size[0] if size else None, "height": size[1] if size else None,
            "out": str(out) if out is not None and frames else None,
            "interrupted": interrupted, "stopped": stopped,
        }
        if source.skipped:
            self.log(f"skipped {source.skipped} unreadable frame file(s)")
        ended = " (interrupted)" if interrupted else " (stopped)" if stopped else ""
        timings = (f": network {summary['network_ms']:.1f} ms, decoding {summary['decode_ms']:.2f} ms per frame, "
                   f"{summary['fps']:.1f} FPS" if frames else "")
        self.log(f"{frames} frames{ended}{timings} -> {summary['out'] or 'no video written'}")
        return summary


def run_video(predictor, source: str | os.PathLike | int, out: str | os.PathLike | None = None, show: bool = False,
              **options) -> dict:
    """``VideoDemo(source, out, show, **options).run(predictor)``, closing the source."""
    with VideoDemo(source, out, show, **options) as demo:
        return demo.run(predictor)


__all__ = ["CaptureSource", "FolderSource", "FrameSource", "VideoDemo", "VideoOutput", "Window", "display_problem",
           "open_source", "overlay", "run_video"]
