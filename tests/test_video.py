"""The video demo (posenet.inference.video, scripts/video.py): video files and folders of frames
to an annotated mp4 with as many frames of the same size, sources that cannot be opened as one
clear error, --show without a display, q in the window, Ctrl-C still finishing the video."""
from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from posenet.errors import PosenetError
from posenet.inference import video
from posenet.inference.video import VideoDemo, open_source, run_video

from test_inference import full_checkpoint  # noqa: F401  (a fixture: a small random full model)
from _scripts import REPO, run_script

W, H = 96, 64


class StubPredictor:
    """The predictor interface with no model: records the frames it is given (their mean RGB),
    draws a white square, and takes fixed times; ``interrupt_at``: raise KeyboardInterrupt
    (Ctrl-C) when asked for that frame (0-based)."""

    layout = None
    keypoint_threshold = 0.05

    def __init__(self, interrupt_at: int | None = None):
        self.seen: list[np.ndarray] = []
        self.interrupt_at = interrupt_at

    def describe(self) -> str:
        return "stub"

    def run(self, rgb: np.ndarray):
        if len(self.seen) == self.interrupt_at:
            raise KeyboardInterrupt
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        self.seen.append(rgb.reshape(-1, 3).mean(0))
        return SimpleNamespace(people=[], image_size=rgb.shape[:2], timing={"network_ms": 12.0, "decode_ms": 3.0})

    def draw(self, rgb: np.ndarray, prediction) -> dict:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        bgr[-12:, -12:] = 255
        return {"skeletons": bgr, "boxes": bgr.copy()}


def _frame(i: int, w: int = W, h: int = H) -> np.ndarray:
    """Frame i as BGR: mostly red (so that a channel mix-up shows), its green level i * 30."""
    bgr = np.zeros((h, w, 3), np.uint8)
    bgr[..., 2] = 200
    bgr[..., 1] = 30 * i
    return bgr


def _write_video(path: Path, n: int = 6, fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (W, H))
    assert writer.isOpened()
    for i in range(n):
        writer.write(_frame(i))
    writer.release()
    return path


def _read_video(path: Path) -> tuple[list[np.ndarray], float]:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return frames, fps


def _quiet(*_):
    pass


@pytest.fixture
def clip(tmp_path) -> Path:
    return _write_video(tmp_path / "clip.mp4")


@pytest.fixture
def no_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def test_video_file_gives_an_mp4_of_as_many_frames_of_the_same_size(clip, tmp_path):
    predictor, lines = StubPredictor(), []
    out = tmp_path / "out" / "poses.mp4"
    summary = run_video(predictor, clip, out, progress=False, log=lines.append)
    frames, fps = _read_video(out)
    assert len(frames) == 6 and frames[0].shape == (H, W, 3)
    assert fps == pytest.approx(10.0)  # the source's frame rate
    assert summary["frames"] == 6 and summary["skipped"] == 0 and (summary["width"], summary["height"]) == (W, H)
    assert summary["network_ms"] == 12.0 and summary["decode_ms"] == 3.0 and summary["fps"] > 0
    assert summary["out"] == str(out) and not summary["interrupted"]
    # the predictor gets RGB: the red frames come as red, in order (green rising)
    seen = np.array(predictor.seen)
    assert (seen[:, 0] > 150).all() and (seen[:, 2] < 60).all() and (np.diff(seen[:, 1]) > 0).all()
    # the drawn picture is what is written: the white corner, and the timing line top left
    assert frames[2][-6:, -6:].mean() > 200 and frames[2][:6, :40].mean() < 120
    assert not [p for p in out.parent.iterdir() if p.name != "poses.mp4"]  # the temporary file is gone
    assert "6 frames: network 12.0 ms, decoding 3.00 ms per frame" in lines[-1] and str(out) in lines[-1]


def test_folder_of_frames_in_name_order_resized_to_the_first(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (3, 0, 2, 1):
        cv2.imwrite(str(folder / f"f{i:02d}.png"), _frame(i, *((W, H) if i != 2 else (50, 70))))
    (folder / "f04.jpg").write_text("not an image")
    (folder / "notes.txt").write_text("not a frame")
    predictor, lines = StubPredictor(), []
    summary = run_video(predictor, folder, tmp_path / "poses.mp4", fps=5, progress=False, log=lines.append)
    frames, fps = _read_video(tmp_path / "poses.mp4")
    assert len(frames) == summary["frames"] == 4 and summary["skipped"] == 1
    assert all(f.shape == (H, W, 3) for f in frames) and fps == pytest.approx(5.0)
    assert (np.diff(np.array(predictor.seen)[:, 1]) > 0).all()  # sorted by name
    assert sum(line.startswith("warning: skipped") and "f04.jpg" in line for line in lines) == 1


def test_max_frames_stops_early(clip, tmp_path):
    summary = run_video(StubPredictor(), clip, tmp_path / "o.mp4", max_frames=2, progress=False, log=_quiet)
    assert summary["frames"] == 2 and len(_read_video(tmp_path / "o.mp4")[0]) == 2


def test_ctrl_c_ends_cleanly_and_finishes_the_video(clip, tmp_path):
    out = tmp_path / "o.mp4"
    summary = run_video(StubPredictor(interrupt_at=3), clip, out, progress=False, log=_quiet)
    assert summary["interrupted"] and summary["frames"] == 3
    assert len(_read_video(out)[0]) == 3
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_sources_that_cannot_be_opened_are_one_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "x.mp4").write_text("not a video")
    cases = {"missing.mp4": "video not found", "99": "camera 99 cannot be opened", "empty": "no frames in",
             "x.mp4": "cannot open video"}
    for source, message in cases.items():
        path = source if source.isdigit() else tmp_path / source
        with pytest.raises(PosenetError, match=message):
            open_source(path)


def test_options_that_give_nothing_to_do_are_errors(clip, tmp_path, no_display):
    with pytest.raises(PosenetError, match="nothing to do"):
        VideoDemo(clip)
    with pytest.raises(PosenetError, match="no window can open: no display"):
        VideoDemo(clip, show=True)
    with pytest.raises(PosenetError, match="is a folder"):
        VideoDemo(clip, out=tmp_path)
    with pytest.raises(PosenetError, match="at least 1"):
        VideoDemo(clip, out=tmp_path / "o.mp4", max_frames=0)


def test_show_without_a_display_says_why_and_still_writes(clip, tmp_path, no_display):
    lines = []
    summary = run_video(StubPredictor(), clip, tmp_path / "o.mp4", show=True, progress=False, log=lines.append)
    assert [line for line in lines if line.startswith("no window")] == [
        f"no window: no display (neither DISPLAY nor WAYLAND_DISPLAY is set); writing {tmp_path / 'o.mp4'} only"]
    assert summary["frames"] == 6 and len(_read_video(tmp_path / "o.mp4")[0]) == 6


def test_a_window_that_fails_to_open_is_given_up_with_one_line(clip, tmp_path, monkeypatch):
    def imshow(*_):
        raise cv2.error("The function is not implemented. Rebuild the library with GTK+")

    monkeypatch.setattr(video, "display_problem", lambda: None)
    monkeypatch.setattr(video.cv2, "imshow", imshow)
    lines = []
    summary = run_video(StubPredictor(), clip, tmp_path / "o.mp4", show=True, progress=False, log=lines.append)
    assert sum(line.startswith("no window: cv2.imshow failed") for line in lines) == 1
    assert summary["frames"] == 6
    with pytest.raises(PosenetError, match="cv2.imshow failed"):
        run_video(StubPredictor(), clip, show=True, progress=False, log=_quiet)


def test_q_in_the_window_stops(clip, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(video, "display_problem", lambda: None)
    monkeypatch.setattr(video.cv2, "imshow", lambda title, frame: shown.append(frame.shape))
    monkeypatch.setattr(video.cv2, "waitKey", lambda delay: ord("q") if len(shown) == 2 else -1)
    monkeypatch.setattr(video.cv2, "getWindowProperty", lambda *_: 1.0)
    monkeypatch.setattr(video.cv2, "destroyWindow", lambda *_: None)
    summary = run_video(StubPredictor(), clip, tmp_path / "o.mp4", show=True, progress=False, log=_quiet)
    assert summary["stopped"] and summary["frames"] == 2 and shown == [(H, W, 3)] * 2
    assert len(_read_video(tmp_path / "o.mp4")[0]) == 2


def test_script_with_a_real_checkpoint(full_checkpoint, clip, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    out = tmp_path / "poses.mp4"
    result = run_script("video.py", "--checkpoint", str(full_checkpoint), "--source", str(clip), "--out", str(out),
                        "--show", "infer.grouping=greedy")
    assert "no window: no display" in result.stdout
    assert "6 frames: network" in result.stdout and str(out) in result.stdout
    frames, _ = _read_video(out)
    assert len(frames) == 6 and frames[0].shape == (H, W, 3)


def test_script_errors_are_one_line(tmp_path, monkeypatch, capfd):
    """Through the script's main in this process (a fresh interpreter per case costs seconds);
    capfd sees what OpenCV and FFmpeg print on the file descriptor too."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "x.mp4").write_text("not a video")
    cases = {"missing.mp4": "video not found", "99": "camera 99 cannot be opened", "empty": "no frames in",
             "x.mp4": "cannot open video"}
    for source, message in cases.items():
        arg = source if source.isdigit() else str(tmp_path / source)
        # the source is opened before the checkpoint is read: any checkpoint name does here
        monkeypatch.setattr(sys, "argv", ["video.py", "--checkpoint", "none.pt", "--source", arg,
                                          "--out", str(tmp_path / "o.mp4")])
        with pytest.raises(SystemExit) as exit:
            runpy.run_path(str(REPO / "scripts" / "video.py"), run_name="__main__")
        err = capfd.readouterr().err
        assert exit.value.code == 2, (source, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: {message}"), err
    if re.search(r"FFMPEG:\s*YES", cv2.getBuildInformation()):
        assert "(FFmpeg: moov atom not found)" in err  # what FFmpeg said, in the one line
    assert not (tmp_path / "o.mp4").exists()


def test_script_runtime_options_are_checked_in_one_line(clip, tmp_path, monkeypatch, capfd):
    """The runtime options (shared with infer.py through posenet.cli) refuse a mix of the two
    runtimes and a missing export with one line."""
    cases = [(["--runtime", "onnx", "--checkpoint", "x.pt"], "--runtime onnx takes --onnx"),
             (["--runtime", "onnx", "--onnx", str(tmp_path / "none.onnx")], "no such file"),
             (["--onnx", "m.onnx"], "--runtime torch takes --checkpoint"),
             ([], "--runtime torch takes --checkpoint")]
    for options, message in cases:
        monkeypatch.setattr(sys, "argv", ["video.py", *options, "--source", str(clip), "--out", str(tmp_path / "o.mp4")])
        with pytest.raises(SystemExit) as exit:
            runpy.run_path(str(REPO / "scripts" / "video.py"), run_name="__main__")
        err = capfd.readouterr().err
        assert exit.value.code == 2, (options, err)
        assert len(err.strip().splitlines()) == 1 and message in err, err
