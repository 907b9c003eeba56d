"""The video demo (posenet.inference.video, scripts/video.py): video files and folders of frames
to an annotated mp4 with as many frames of the same size, sources that cannot be opened as one
clear error, --show without a display, q in the window, Ctrl-C still finishing the video."""
from __future__ import annotations

import re
import runpy
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from posenet.data.keypoints import COCO_PERSON
from posenet.errors import PosenetError
from posenet.inference import video
from posenet.inference.video import VideoDemo, open_source, read_json_lines, run_video

from test_inference import full_checkpoint  # noqa: F401  (a fixture: a small random full model)
from _scripts import REPO, run_script

W, H = 96, 64


class StubPredictor:
    """The predictor interface with no model: records the frames it is given (their mean RGB),
    finds ``people`` people (the first at x = 20 + the frame's green level / 30, the others 30 px
    apart; none with ``people=0``), and takes fixed times; ``interrupt_at``: raise
    KeyboardInterrupt (Ctrl-C) when asked for that frame (0-based); ``delay``: seconds per call,
    random up to it (``seed``)."""

    layout = COCO_PERSON
    keypoint_threshold = 0.05
    picture_box_threshold = 0.5

    def __init__(self, interrupt_at: int | None = None, people: int = 1, delay: float = 0.0, seed: int = 0):
        self.seen: list[np.ndarray] = []
        self.interrupt_at, self.people, self.delay = interrupt_at, people, delay
        self.rng = np.random.default_rng(seed)

    def describe(self) -> str:
        return "stub"

    def run(self, rgb: np.ndarray):
        if len(self.seen) == self.interrupt_at:
            raise KeyboardInterrupt
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        if self.delay:
            time.sleep(self.rng.uniform(0, self.delay))
        self.seen.append(rgb.reshape(-1, 3).mean(0))
        x = 20 + round(float(rgb[..., 1].mean()) / 30)
        people = [_person(x + 30 * i, box_score=0.9 - 0.1 * i) for i in range(self.people)]
        people.append(_person(10, box_score=0.3))  # below picture_box_threshold: not in the video
        return SimpleNamespace(people=people, image_size=rgb.shape[:2], timing={"network_ms": 12.0, "decode_ms": 3.0})

    def draw(self, rgb: np.ndarray, prediction) -> dict:
        raise AssertionError("the video draws its own skeletons")


def _person(x: float, y: float = 12.0, height: float = 40.0, box_score: float = 0.9) -> dict:
    kps = np.zeros((17, 3))
    kps[:, 0] = x + np.linspace(-0.15, 0.15, 17) * height
    kps[:, 1] = y + np.linspace(0.05, 0.95, 17) * height
    kps[:, 2] = 0.8
    kps[3, 2] = 0.0  # not found
    return {"keypoints": kps, "box": np.array([x - 10, y, x + 10, y + height]), "box_score": box_score,
            "score": box_score * 0.8}


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
    # the drawn picture is what is written: the skeleton in its track's colour (blue 75 on a frame without
    # blue), and the timing line top left
    assert frames[2][20:50, 20:40, 0].max() > 50 and frames[2][20:50, 60:, 0].max() < 30
    assert frames[2][:6, :40].mean() < 120
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


# ----------------------------------------------------------------------------- poses as data, tracking


def test_json_alone_writes_one_line_per_frame_and_draws_nothing(clip, tmp_path, monkeypatch):
    monkeypatch.setattr(video, "draw_people", lambda *_: pytest.fail("drawn without --out or --show"))
    path = tmp_path / "poses.jsonl"
    lines = []
    summary = run_video(StubPredictor(people=2), clip, json=path, progress=False, log=lines.append)
    frames = read_json_lines(path)
    assert [f["frame"] for f in frames] == list(range(6))
    assert [f["time"] for f in frames] == pytest.approx([i / 10 for i in range(6)])  # the clip's 10 fps
    for f in frames:
        # the people of the picture (box score 0.5 and up), best first, with ids that stay
        assert [p["track_id"] for p in f["people"]] == [1, 2]
        assert [p["box_score"] for p in f["people"]] == [0.9, 0.8]
        kps = f["people"][0]["keypoints"]
        assert kps.shape == (17, 3) and kps[3, 2] == 0 and kps[0, 2] == 0.8
        assert set(f["people"][0]) == {"track_id", "score", "box_score", "box", "keypoints"}
    assert summary["frames"] == 6 and summary["out"] is None and summary["json"] == str(path)
    assert summary["tracks"] == 2 and summary["people"] == 12
    assert not [p for p in tmp_path.iterdir() if p.name not in ("clip.mp4", "poses.jsonl")]  # no temporary file
    assert lines[-1].endswith(f"2 track ids -> {path}")


def test_tracking_off_gives_no_ids(clip, tmp_path):
    for tracking in (False, {"track": False}):
        run_video(StubPredictor(people=2), clip, json=tmp_path / "p.jsonl", progress=False, log=_quiet,
                  tracking=tracking)
        assert {p["track_id"] for f in read_json_lines(tmp_path / "p.jsonl") for p in f["people"]} == {None}


def test_tracking_options_come_from_the_video_section(clip, tmp_path):
    """video.max_missed=0 with a person seen every other frame: a new id each time it comes back."""
    class Blinking(StubPredictor):
        def run(self, rgb):
            prediction = super().run(rgb)
            if len(self.seen) % 2 == 0:
                prediction.people = []
            return prediction

    for max_missed, ids in ((0, [1, 2, 3]), (1, [1, 1, 1])):
        section = video.video_section([f"video.max_missed={max_missed}"])
        run_video(Blinking(), clip, json=tmp_path / "p.jsonl", progress=False, log=_quiet, tracking=section)
        got = [p["track_id"] for f in read_json_lines(tmp_path / "p.jsonl") for p in f["people"]]
        assert got == ids


@pytest.mark.parametrize("pipeline", [True, False])
def test_ctrl_c_finishes_the_video_and_the_json(clip, tmp_path, pipeline):
    out, path = tmp_path / "o.mp4", tmp_path / "o.jsonl"
    summary = run_video(StubPredictor(interrupt_at=3), clip, out, json=path, progress=False, log=_quiet,
                        pipeline=pipeline)
    assert summary["interrupted"] and summary["frames"] == 3 and summary["pipelined"] == pipeline
    assert len(_read_video(out)[0]) == 3 and [f["frame"] for f in read_json_lines(path)] == [0, 1, 2]
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_pipelined_frames_are_written_in_order_with_the_serial_loops_people(tmp_path):
    """Frames of varying content through a predictor of random delays: the pipelined loop writes
    the serial loop's JSON lines exactly and its video (below the timing line, which differs)."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(12):
        cv2.imwrite(str(folder / f"{i:03d}.png"), _frame(i % 8))
    results = {}
    for pipeline in (False, True):
        out, path = tmp_path / f"{pipeline}.mp4", tmp_path / f"{pipeline}.jsonl"
        predictor = StubPredictor(people=2, delay=0.01, seed=int(pipeline))
        summary = run_video(predictor, folder, out, json=path, fps=5, progress=False, log=_quiet, pipeline=pipeline)
        assert summary["pipelined"] == pipeline and summary["frames"] == 12
        assert (np.diff(np.array(predictor.seen)[:8, 1]) > 0).all()  # read in order
        results[pipeline] = path.read_text(), _read_video(out)[0]
    assert results[True][0] == results[False][0]
    assert len(results[True][0].splitlines()) == 12
    serial, pipelined = results[False][1], results[True][1]
    assert len(pipelined) == len(serial) == 12
    for a, b in zip(serial, pipelined):
        assert np.abs(a[16:].astype(int) - b[16:].astype(int)).mean() < 1.0


def test_an_error_while_writing_is_raised_and_leaves_no_file(clip, tmp_path, monkeypatch):
    def fail(*_):
        raise PosenetError("disk full")

    monkeypatch.setattr(video.JsonLines, "write", fail)
    for pipeline in (True, False):
        with pytest.raises(PosenetError, match="disk full"):
            run_video(StubPredictor(), clip, json=tmp_path / "p.jsonl", progress=False, log=_quiet,
                      pipeline=pipeline)
        assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_bad_json_paths_are_one_clear_error(clip, tmp_path, no_display):
    (tmp_path / "file").write_text("")
    with pytest.raises(PosenetError, match=r"--json .* is a folder: give a file name"):
        VideoDemo(clip, json=tmp_path)
    with pytest.raises(PosenetError, match=r"--json .*: .*file is not a folder"):
        VideoDemo(clip, json=tmp_path / "file" / "poses.jsonl")
    with pytest.raises(PosenetError, match="are the same file"):
        VideoDemo(clip, out=tmp_path / "o.mp4", json=tmp_path / "o.mp4")
    # --json alone is enough to do, with --show where no window opens as well
    VideoDemo(clip, json=tmp_path / "p.jsonl").close()
    lines = []
    VideoDemo(clip, json=tmp_path / "p.jsonl", show=True, log=lines.append).close()
    assert lines == [f"no window: no display (neither DISPLAY nor WAYLAND_DISPLAY is set); writing "
                     f"{tmp_path / 'p.jsonl'} only"]
    # a missing folder is made, as for --out
    run_video(StubPredictor(), clip, json=tmp_path / "new" / "p.jsonl", progress=False, log=_quiet)
    assert len(read_json_lines(tmp_path / "new" / "p.jsonl")) == 6


def test_draw_people_colours_and_labels_by_track_id():
    bgr = np.zeros((64, 96, 3), np.uint8)
    a, b = _person(30), _person(70)
    first = video.draw_people(bgr, [{**a, "track_id": 1}, {**b, "track_id": 2}])
    swapped = video.draw_people(bgr, [{**a, "track_id": 2}, {**b, "track_id": 1}])
    # the colour goes with the id, not with the place in the list
    assert not np.array_equal(first, swapped)
    left = lambda img: img[:, :50].reshape(-1, 3)  # noqa: E731
    colours = lambda img: {tuple(c) for c in left(img)}  # noqa: E731
    from posenet.vis import person_color
    assert person_color(0) in colours(first) and person_color(1) in colours(swapped)
    assert (bgr == 0).all()  # the input is left as it was


def test_track_labels_stay_clear_of_the_timing_band():
    """A person just below the top-left band the timing line is drawn in afterwards: its id
    label, drawn above its highest keypoint, would be under the band; it goes below the band
    instead. A person right of the band keeps its label where it was."""
    from posenet.vis import person_color

    bgr = np.zeros((120, 200, 3), np.uint8)
    text = "network 40.0 ms  decode 3.0 ms  20.0 FPS"
    band_w, band_h = video.overlay_band(bgr, text)
    assert 0 < band_h < 40 and band_w < 200
    person = {**_person(15, y=band_h + 2.0), "track_id": 1}  # the skeleton below the band

    def coloured_rows(img):  # rows of the corner holding the person's colour (label or skeleton)
        return np.flatnonzero((img[:, :band_w] == person_color(0)).all(-1).any(1))

    plain = video.draw_people(bgr, [person])
    clear = video.draw_people(bgr, [person], keep_clear=(band_w, band_h))
    assert coloured_rows(plain).min() < band_h  # the label in the band's place
    assert coloured_rows(clear).min() >= band_h
    assert (video.overlay(clear.copy(), text) == clear)[band_h:].all()  # the band covers nothing of it
    right = {**_person(band_w + 20, y=band_h + 2.0), "track_id": 1}
    assert np.array_equal(video.draw_people(bgr, [right]),
                          video.draw_people(bgr, [right], keep_clear=(band_w, band_h)))


# ----------------------------------------------------------------------------- the script, both families


TINY_RUNS = {
    "multiposenet": ("configs/synthetic_small.yaml",
                     ["model.fpn_channels=16", "model.subnet_channels=16", "model.fuse_channels=16",
                      "detection.fpn_channels=16", "detection.head_convs=1", "prn.hidden=32", "infer.input_size=96",
                      "detection.score_threshold=0.0", "detection.max_detections=5", "infer.box_threshold=0.0"]),
    "openpose": ("configs/openpose_synthetic_small.yaml",
                 ["openpose.network=hourglass", "openpose.stacks=1", "openpose.channels=16", "infer.input_size=64",
                  "openpose.min_parts=1", "openpose.min_mean_score=0.0"]),
}


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> dict:
    """A random-weight checkpoint of each family saved like a run (best.pt + config.yaml); every
    person drawn in the pictures (infer.picture_box_threshold 0)."""
    import torch

    from posenet.config import build, load_config, save_config

    root = tmp_path_factory.mktemp("video_runs")
    runs = {}
    for family, (config, overrides) in TINY_RUNS.items():
        cfg = load_config(REPO / config, [*overrides, "data.root=unused", "infer.picture_box_threshold=0.0"])
        torch.manual_seed(0)
        model = build.paf_network(cfg) if family == "openpose" else build.posenet_model(cfg, 17, detection=True,
                                                                                           prn=True)
        run = root / family
        run.mkdir()
        torch.save({"format": "posenet-checkpoint", "model": model.state_dict()}, run / "best.pt")
        save_config(cfg, run)
        runs[family] = run / "best.pt"
    return runs


@pytest.mark.parametrize("family", sorted(TINY_RUNS))
def test_script_json_and_video_with_each_family(family, tiny_runs, clip, tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    out, path = tmp_path / "poses.mp4", tmp_path / "poses.jsonl"
    result = run_script("video.py", "--checkpoint", tiny_runs[family], "--source", clip, "--json", path,
                        "--out", out, "video.smooth=true", "video.max_missed=2")
    assert "6 frames: network" in result.stdout and f"-> {out} and {path}" in result.stdout
    frames = read_json_lines(path)
    assert [f["frame"] for f in frames] == list(range(6)) and len(_read_video(out)[0]) == 6
    people = [p for f in frames for p in f["people"]]
    assert people, "the random model finds somebody"  # (a few random people in every frame)
    assert all(p["keypoints"].shape == (17, 3) and isinstance(p["track_id"], int) for p in people)
    # --json alone: the same people, nothing drawn
    alone = tmp_path / "alone.jsonl"
    result = run_script("video.py", "--checkpoint", tiny_runs[family], "--source", clip, "--json", alone,
                        "video.smooth=true", "video.max_missed=2", "--serial")
    assert alone.read_text() == path.read_text() and f"-> {alone}" in result.stdout


@pytest.mark.parametrize("family", sorted(TINY_RUNS))
def test_pipelined_steps_give_the_serial_loops_people_with_each_family(family, tiny_runs, clip, tmp_path):
    """The pipelined loop of a real predictor: frames resized in the reading thread, decoded after
    the network in its thread (the CPU's way) or in the writing thread (a GPU's way), write the
    serial loop's JSON lines."""
    from posenet.families import load_predictor

    predictor = load_predictor(tiny_runs[family])
    assert not video.decodes_apart(predictor)  # a CPU predictor decodes in the network's thread
    texts = []
    for pipeline, apart in ((False, None), (True, None), (True, True)):
        path = tmp_path / f"{pipeline}{apart}.jsonl"
        summary = run_video(predictor, clip, json=path, progress=False, log=_quiet, pipeline=pipeline,
                            decode_apart=apart)
        assert summary["decoded_apart"] == bool(apart)
        texts.append(path.read_text())
    assert texts[0] == texts[1] == texts[2] and len(texts[0].splitlines()) == 6
    assert [p for f in read_json_lines(tmp_path / "TrueTrue.jsonl") for p in f["people"]]


def test_script_onnx_runtime_takes_the_video_keys_apart(clip, tmp_path, monkeypatch):
    """--runtime onnx: the export gets the infer.* overrides only, the tracker the video.* ones
    (the onnx predictor stands in for an export here; tests/test_export_onnx.py runs real ones)."""
    from posenet import cli

    given = []

    def onnx_predictor(path, overrides):
        given.append((path, list(overrides)))
        return StubPredictor(people=2)

    monkeypatch.setattr(cli, "OnnxPredictor", onnx_predictor)
    path = tmp_path / "p.jsonl"
    result = run_script("video.py", "--runtime", "onnx", "--onnx", "m.onnx", "--source", clip, "--json", path,
                        "infer.flip=true", "video.track=false")
    assert given == [("m.onnx", ["infer.flip=true"])]
    assert {p["track_id"] for f in read_json_lines(path) for p in f["people"]} == {None}
    assert "6 frames" in result.stdout
    bad = run_script("video.py", "--runtime", "onnx", "--onnx", "m.onnx", "--source", clip, "--json", path,
                     "video.smooht=true", check=False)
    assert bad.returncode == 2 and "unknown key 'video.smooht'; did you mean 'video.smooth'?" in bad.stderr


def test_script_json_errors_are_one_line(clip, tmp_path, monkeypatch, capfd):
    (tmp_path / "file").write_text("")
    cases = {str(tmp_path): "is a folder", str(tmp_path / "file" / "p.jsonl"): "is not a folder"}
    for arg, message in cases.items():
        monkeypatch.setattr(sys, "argv", ["video.py", "--checkpoint", "none.pt", "--source", str(clip), "--json", arg])
        with pytest.raises(SystemExit) as exit:
            runpy.run_path(str(REPO / "scripts" / "video.py"), run_name="__main__")
        err = capfd.readouterr().err
        assert exit.value.code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
