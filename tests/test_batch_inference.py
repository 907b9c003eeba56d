"""Batched inference: ``run_batch`` of both predictors against one image at a time (images of
one input size, and of sizes the model pads alike: the same people; mixed sizes: each image's
people in its own pixels), ``infer_folder`` with batches and loader workers against one image
at a time (outputs, order, skipped files, batches never mixing input sizes), and the clear
errors of the options."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from posenet.config import build, load_config
from posenet.errors import ConfigError
from posenet.inference import infer_folder
from posenet.inference.paf_predictor import PafPredictor
from posenet.inference.predictor import Predictor, batch_key, size_divisor

from _random_runs import TINY
from _scripts import REPO, run_script

pytestmark = pytest.mark.usefixtures("single_thread")

CONFIG = REPO / "configs/synthetic_small.yaml"
OPENPOSE = REPO / "configs/openpose_synthetic_small.yaml"
TINY_OPENPOSE = ["openpose.network=hourglass", "openpose.stacks=1", "openpose.channels=16", "infer.input_size=64"]


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build.posenet_model(load_config(CONFIG, TINY), 17, detection=True, prn=True).eval()


def predictor(model, *overrides) -> Predictor:
    return Predictor.from_config(load_config(CONFIG, [*TINY, *overrides]), model)


def images(*sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def assert_same_people(one, many, tolerance=1e-3):
    assert len(one.people) == len(many.people) > 0
    for p, q in zip(one.people, many.people):
        assert np.abs(p["keypoints"][:, :2] - q["keypoints"][:, :2]).max() < tolerance
        assert np.abs(p["keypoints"][:, 2] - q["keypoints"][:, 2]).max() < 1e-4
        assert np.abs(p["box"] - q["box"]).max() < tolerance and abs(p["score"] - q["score"]) < 1e-5


@pytest.mark.parametrize("overrides", [[], ["infer.flip=true", "infer.scales=[1.0,0.75]"], ["infer.grouping=greedy"],
                                       ["infer.flip=true", "infer.scales=[1.0,1.3]", "infer.boxes=all"]])
def test_a_batch_of_one_input_size_gives_the_people_of_one_at_a_time(tiny_model, overrides):
    """120x90 and 119x90 images have inputs of 96x72 and 96x73 that the model pads alike (to
    96x96): the batch pads the narrower one by a column of the colour the network normalises to
    0, which is what the model's own padding is, so every image gets the people of one at a
    time (the flip test's mirrored inputs and every scale included)."""
    p = predictor(tiny_model, *overrides)
    batch = images((120, 90), (119, 90), (120, 90), (120, 90))
    prepared = [p.prepare(x) for x in batch]
    assert prepared[0].inputs[0].size != prepared[1].inputs[0].size
    assert len({batch_key(x, size_divisor(p.model)) for x in prepared}) == 1
    together = p.run_batch(batch)
    for image, many in zip(batch, together):
        one = p.run(image)
        assert np.abs(one.heatmaps - many.heatmaps).max() < 1e-5
        assert np.array_equal(one.matrix, many.matrix) and one.image_size == many.image_size
        assert_same_people(one, many)
        assert many.timing["network_ms"] > 0 and many.timing["decode_ms"] > 0


def test_the_paf_predictor_batches_the_same_way():
    cfg = load_config(OPENPOSE, [*TINY_OPENPOSE, "infer.flip=true", "infer.scales=[1.0,0.6]"])
    torch.manual_seed(0)
    p = PafPredictor.from_config(cfg, build.paf_network(cfg).eval())
    batch = images((50, 64), (48, 64), (50, 64), seed=1)
    assert len({batch_key(p.prepare(x), size_divisor(p.model)) for x in batch}) == 1
    together = p.run_batch(batch)
    for image, many in zip(batch, together):
        one = p.run(image)
        assert np.abs(one.heatmaps - many.heatmaps).max() < 1e-5 and np.abs(one.pafs - many.pafs).max() < 1e-5
        assert len(one.people) == len(many.people)
        for a, b in zip(one.people, many.people):
            assert np.abs(a["keypoints"] - b["keypoints"]).max() < 1e-3


def _coded_image(hw, places):
    from _stub_models import BACKGROUND, CODES

    image = np.full((*hw, 3), BACKGROUND, np.uint8)
    for k, (x, y) in places.items():
        cv2.circle(image, (int(x), int(y)), 5, CODES[k], -1)
    return image


@pytest.mark.parametrize("flip", [False, True])
def test_mixed_sizes_give_each_image_its_own_people_in_its_own_pixels(flip):
    """A landscape image, its copy turned upright and an image of a third size in one batch
    (padded to the largest input; with the flip test each mirrored input on its own grid): with
    a translation-equivariant network whose maps the padding does not reach (coded dots, away
    from the borders), every image gets one at a time's people and every dot comes back where
    it was drawn in its own image (without the flip test: the stand-in's left and right codes
    are not mirror images, so the flip test blends their maps)."""
    from _stub_models import CODES, ColourCodedNet

    cfg = load_config(CONFIG, ["infer.grouping=greedy", "infer.peak_threshold=0.1", "infer.input_size=160",
                               f"infer.flip={str(flip).lower()}"])
    p = Predictor.from_config(cfg, ColourCodedNet(whole_image_box=True))
    places = {k: (30.0 + 25 * i, 25.0 + 12 * i) for i, k in enumerate(CODES)}
    wide = _coded_image((110, 200), places)
    upright = np.ascontiguousarray(np.rot90(wide, -1))  # turned clockwise: (x, y) -> (H - 1 - y, x)
    turned = {k: (109 - y, x) for k, (x, y) in places.items()}
    square = _coded_image((90, 90), {k: (20.0 + 9 * i, 70.0 - 8 * i) for i, k in enumerate(CODES)})
    batch = [wide, upright, square]
    assert len({p.prepare(x).inputs[0].size for x in batch}) == 3
    together = p.run_batch(batch)
    for image, expected, many in zip(batch, (places, turned, None), together):
        assert many.image_size == image.shape[:2] and len(many.people) == 1
        assert_same_people(p.run(image), many)
        if expected is not None and not flip:
            kps = many.people[0]["keypoints"]
            for k, (x, y) in expected.items():
                assert np.hypot(kps[k, 0] - x, kps[k, 1] - y) < 1.0, (k, kps[k, :2], (x, y))


def test_mixed_sizes_run_with_a_real_network_each_on_its_own_geometry(tiny_model):
    """Padding an input beyond the model's own padding changes what a real network computes
    near (and through its deep layers, beyond) the image's border, so the people need not equal
    one at a time's; each image still gets its own geometry, maps and boxes."""
    p = predictor(tiny_model, "infer.flip=true")
    batch = images((120, 90), (90, 120), (77, 131))
    for image, many in zip(batch, p.run_batch(batch)):
        one = p.run(image)
        assert many.image_size == image.shape[:2] and np.array_equal(one.matrix, many.matrix)
        assert many.heatmaps.shape == one.heatmaps.shape and many.people
        for person in many.people:
            x1, y1, x2, y2 = person["box"]
            assert 0 <= x1 <= x2 <= image.shape[1] and 0 <= y1 <= y2 <= image.shape[0]


def test_prepared_images_of_other_settings_are_refused(tiny_model):
    prepared = predictor(tiny_model, "infer.scales=[1.0,0.5]").prepare(images((40, 50))[0])
    with pytest.raises(ConfigError, match="prepared for"):
        predictor(tiny_model).run_batch([prepared])


def _folder(root: Path) -> Path:
    """Images of three input sizes in an order that interleaves them, an unreadable file and a
    directory with an image name."""
    folder = root / "images"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i, hw in enumerate([(60, 80), (80, 60), (60, 80), (60, 80), (80, 60), (40, 120), (60, 80), (80, 60)]):
        pixels = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{i:03d}.{'png' if i % 3 else 'jpg'}"), pixels)
    (folder / "004b.jpg").write_bytes(b"not an image")
    (folder / "002b.jpg").mkdir()
    return folder


def _outputs(out: Path) -> dict:
    return {"results": json.loads((out / "results.json").read_text()),
            "ids": json.loads((out / "image_ids.json").read_text()),
            "json": {p.name: json.loads(p.read_text()) for p in sorted((out / "json").iterdir())}}


def _assert_same_outputs(a: dict, b: dict):
    assert a["ids"] == b["ids"] and a["json"].keys() == b["json"].keys()
    assert [r["image_id"] for r in a["results"]] == [r["image_id"] for r in b["results"]]
    for r, s in zip(a["results"], b["results"]):  # the files round to 3 decimals
        assert np.abs(np.subtract(r["keypoints"], s["keypoints"])).max() <= 2e-3 and abs(r["score"] - s["score"]) < 2e-5
    for name, record in a["json"].items():
        other = b["json"][name]
        assert (record["height"], record["width"], len(record["people"])) == (other["height"], other["width"],
                                                                             len(other["people"]))


@pytest.mark.parametrize("batch_size,workers", [(3, 2), (2, 0), (1, 2)])
def test_infer_folder_in_batches_and_with_workers_writes_what_one_at_a_time_writes(tiny_model, tmp_path, batch_size,
                                                                                 workers):
    folder = _folder(tmp_path)
    p = predictor(tiny_model)
    warnings = {}
    for run, (b, w) in {"one": (1, 0), "batched": (batch_size, workers)}.items():
        lines = []
        summary = infer_folder(p, folder, tmp_path / run, pictures=run == "batched", progress=False,
                               log=lines.append, batch_size=b, workers=w)
        warnings[run] = [line for line in lines if line.startswith("warning: skipped")]
        assert summary["images"] == 8 and summary["skipped"] == 2 and summary["images_per_s"] > 0
    assert len(warnings["one"]) == 2 and warnings["one"] == warnings["batched"]
    assert "002b.jpg: is a directory" in warnings["one"][0] and "004b.jpg" in warnings["one"][1]
    _assert_same_outputs(_outputs(tmp_path / "one"), _outputs(tmp_path / "batched"))
    for name in ("000", "005", "007"):
        assert cv2.imread(str(tmp_path / "batched" / "pictures" / f"{name}_panel.jpg")) is not None


def test_batches_never_mix_input_sizes(tiny_model, tmp_path):
    """Images wait in a group of their input size until it is full; the groups left at the end
    run as they are: each batch holds one size, and every image runs once."""
    folder = _folder(tmp_path)
    p = predictor(tiny_model, "infer.input_size=128")  # inputs of 96x128, 128x96 and 43x128: three keys
    batches = []
    run_batch = p.run_batch

    def spy(prepared):
        batches.append([batch_key(x, size_divisor(p.model)) for x in prepared])
        return run_batch(prepared)

    p.run_batch = spy
    infer_folder(p, folder, tmp_path / "out", pictures=False, progress=False, log=lambda *a: None, batch_size=3)
    assert all(len(set(keys)) == 1 and len(keys) <= 3 for keys in batches)
    assert len({keys[0] for keys in batches}) == 3
    assert sorted(len(keys) for keys in batches) == [1, 1, 3, 3]  # 4 of 60x80, 3 of 80x60, 1 of 40x120


class OneAtATime:
    """A predictor without ``run_batch`` (as ``OnnxPredictor``: its graph has batch 1)."""

    def __init__(self, predictor):
        self.inner = predictor

    def run(self, rgb):
        return self.inner.run(rgb)

    def draw(self, rgb, prediction):
        return self.inner.draw(rgb, prediction)


def test_a_predictor_of_one_image_at_a_time_takes_workers_but_no_batches(tiny_model, tmp_path):
    folder = _folder(tmp_path)
    p = OneAtATime(predictor(tiny_model))
    with pytest.raises(ConfigError, match="batch size 2: an ONNX export runs one image at a time"):
        infer_folder(p, folder, tmp_path / "no", batch_size=2)
    quiet = {"pictures": False, "progress": False, "log": lambda *a: None}
    infer_folder(p, folder, tmp_path / "one", **quiet)
    infer_folder(p, folder, tmp_path / "read_ahead", workers=2, **quiet)
    assert _outputs(tmp_path / "one") == {**_outputs(tmp_path / "read_ahead"),
                                          "json": _outputs(tmp_path / "one")["json"]}


@pytest.mark.parametrize("args,message", [
    (["--runtime", "onnx", "--onnx", "model.onnx", "--batch", "4"], "error: batch size 4: an ONNX export runs one"),
    (["--checkpoint", "best.pt", "--batch", "0"], "error: the batch size must be at least 1, got 0"),
    (["--checkpoint", "best.pt", "--workers", "-1"], "error: the number of loader workers must be 0 or more"),
])
def test_infer_script_refuses_bad_loader_options_in_one_line(tmp_path, args, message):
    proc = run_script("infer.py", *args, "--images", tmp_path, "--out", tmp_path / "out", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().startswith(message)
    assert len(proc.stderr.strip().splitlines()) == 1


def test_the_folder_benchmark_compares_people_per_image_and_writes_coco_sized_images(tmp_path):
    from posenet.bench.folder_inference import TOLERANCE_PX, compare_people, write_folder

    a, b = np.zeros((17, 3)), np.ones((17, 3))
    reference = {1: [a, b], 2: [a]}
    assert compare_people(reference, {1: [b, a + TOLERANCE_PX / 2], 2: [a]}) == (0, TOLERANCE_PX / 2)  # reordered
    assert compare_people(reference, {1: [a, b + 0.01], 2: [a]})[0] == 1  # a keypoint moved
    assert compare_people(reference, {1: [a, b]})[0] == 1  # a person lost
    counts = write_folder(tmp_path / "images", 8, source=tmp_path / "absent")  # synthetic pictures
    assert counts == {"landscape": 6, "portrait": 2}
    sizes = sorted(cv2.imread(str(p)).shape[:2] for p in (tmp_path / "images").iterdir())
    assert sizes == [(480, 640)] * 6 + [(640, 480)] * 2
