"""The portable decoder (posenet/portable/, numpy only) against the PyTorch path: each
piece on the same inputs (warp, test-time averaging, peaks, boxes + NMS, PRN and greedy
grouping, PAF grouping), the whole decode and the whole run against ``Predictor.run`` /
``PafPredictor.run`` with the same network (a torch model behind onnxruntime's ``run``
interface), and the module on its own in a process where posenet, torch and cv2 cannot be
imported."""
from __future__ import annotations

import inspect
import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from posenet.bench.decode import crowd_scene
from posenet.codecs import KeypointHeatmapCodec
from posenet.codecs.paf import PafCodec
from posenet.codecs.prn_grid import blur
from posenet.config import build, load_config
from posenet.data.keypoints import OPENPOSE_18
from posenet.data.transforms import fit_matrix, warp_image
from posenet import portable as D
from posenet.deploy import export
from posenet.inference.paf_predictor import PafPredictor
from posenet.inference.predictor import NetworkOutput, Predictor
from posenet.inference.prn_grouping import most_central_assign, prn_assign
from posenet.inference.scales_and_flip import flip_back, to_grid_of
from posenet.models.prn import PoseResidualNetwork
from posenet.models.retinanet import RetinaNetHead
from posenet.ops.nms import nms as posenet_nms

from conftest import REPO

pytestmark = pytest.mark.usefixtures("single_thread")

CONFIG = REPO / "configs/synthetic_small.yaml"
OPENPOSE_CONFIG = REPO / "configs/openpose_synthetic_small.yaml"
TINY = ["model.fpn_channels=16", "model.subnet_channels=16", "model.fuse_channels=16", "detection.fpn_channels=16",
        "detection.head_convs=1", "prn.hidden=32", "keypoint.val_input_size=96", "detection.score_threshold=0.0",
        "detection.max_detections=6", "infer.box_threshold=0.0", "infer.peak_threshold=0.0"]


# ----------------------------------------------------------------------------- metadata and graphs


# The decoder computes the PRN's dense output layer (the reference); where posenet's PRN grouping
# offers faster, approximate output layers ("precision"), the comparison uses its exact one.
EXACT = {"precision": "exact"} if "precision" in inspect.signature(prn_assign).parameters else {}


def exact(predictor):
    if EXACT and getattr(predictor.grouping, "precision", None) is not None:
        predictor.grouping.precision = "exact"
    return predictor


def metadata(cfg, model) -> dict:
    """The exporter's model.json of a config and model (a graph of dynamic size)."""
    return export.metadata(cfg, model, dynamic=True)


def prn_layers(prn) -> list[tuple[np.ndarray, np.ndarray]]:
    arrays = export.prn_arrays(prn)
    return [(arrays[f"w{i}"], arrays[f"b{i}"]) for i in range(sum(k.startswith("w") for k in arrays))]


class TorchGraph:
    """The exporter's torch graph of a model (``export.graph_of``) behind onnxruntime's ``run``
    interface: the contract's outputs for a padded (1, 3, H, W) float input."""

    def __init__(self, model):
        self.graph = export.graph_of(model, export.family_of(model))

    @torch.no_grad()
    def run(self, names, feeds):
        return [t.numpy() for t in self.graph(torch.from_numpy(feeds["image"]))]


@pytest.fixture(scope="module")
def posenet_setup():
    cfg = load_config(CONFIG, TINY)
    torch.manual_seed(0)
    return cfg, build.posenet_model(cfg, 17, detection=True, prn=True).eval()


def _sharpen_heatmaps(model):
    """Scale the keypoint head's last convolution so that a random model's heatmaps have
    varied peaks (random weights give nearly flat maps)."""
    with torch.no_grad():
        model.keypoint_subnet.predict.weight.mul_(20.0)


# ----------------------------------------------------------------------------- pieces


@pytest.mark.parametrize("image_hw,size", [((120, 90), 96), ((37, 61), 160), ((200, 333), 128), ((5, 3), 64)])
def test_warp_matches_cv2(image_hw, size):
    rng = np.random.default_rng(sum(image_hw))
    image = rng.integers(0, 256, (*image_hw, 3), dtype=np.uint8)
    m, _, hw = D.input_geometry(image_hw, size, 1.0, 32)
    assert np.allclose(m, fit_matrix(image_hw, (size, size)))
    ours, cv = D.warp_image(image, m, hw).astype(int), warp_image(image, m, hw).astype(int)
    assert ours.shape == cv.shape
    assert np.abs(ours - cv).max() <= 1 and (ours != cv).mean() < 0.02


@pytest.mark.parametrize("side", ["longer", "height", "shorter"])
def test_input_geometry_matches_the_predictors(side):
    from posenet.inference.scales_and_flip import input_geometry

    for image_hw in ((300, 400), (400, 300), (37, 61), (5, 3)):
        for scale in (0.5, 1.0, 2.5):
            ours, theirs = D.input_geometry(image_hw, 368, scale, 8, side), input_geometry(image_hw, 368, scale, 8, side)
            assert np.array_equal(ours[0], theirs[0]) and ours[1:] == theirs[1:]


def test_test_time_resampling_and_flip_back_match_torch():
    rng = np.random.default_rng(1)
    maps = rng.random((5, 13, 17), dtype=np.float32)
    for ratio, size in ((1.5, (9, 11)), (0.75, (17, 23)), (1.0, (13, 17))):
        ref = to_grid_of(torch.from_numpy(maps)[None], ratio, size)[0].numpy()
        assert np.allclose(D.to_grid_of(maps, ratio, size), ref, atol=1e-5)
    index, sign = [1, 0, 2, 4, 3], [1.0, -1.0, 1.0, -1.0, 1.0]
    ref = flip_back(torch.from_numpy(maps), index, sign).numpy()
    assert np.array_equal(D.flip_back(maps, index, sign), ref)


def test_peaks_match_the_heatmap_codec():
    keypoints, _ = crowd_scene(20, 480, seed=1)
    codec = KeypointHeatmapCodec((480, 480), stride=4, sigma=7.0, peak_threshold=0.05, max_peaks=20)
    heat = codec.encode(keypoints) + 0.02 * np.random.default_rng(0).random((17, 120, 120), dtype=np.float32)
    ref = codec.decode(torch.from_numpy(heat))
    coords, scores, valid = D.heatmap_peaks(heat, 4, 7.0, 0.05, 20)
    assert valid.sum() > 300 and np.array_equal(valid, ref.valid.numpy())
    assert np.array_equal(scores, ref.scores.numpy())
    assert np.array_equal(coords, ref.coords.numpy())  # on the CPU the codec runs this very code
    # the codec's torch refinement (its path on a GPU) agrees to within rounding
    index = torch.from_numpy(D.peaks.peak_cells(heat, 0.05, 20)[0]).clamp_min(0)
    on_device = codec.refine_at(torch.from_numpy(heat)[None], index[None])[0].numpy()
    assert np.abs(on_device[valid] - coords[valid]).max() < 1e-4
    # on the map's edge and a single-cell-wide map the refinement falls back the same way
    edge = np.zeros((2, 1, 7), np.float32)
    edge[0, 0, 0], edge[0, 0, 1], edge[1, 0, 6] = 1.0, 0.5, 0.7
    ref = KeypointHeatmapCodec((4, 28), stride=4).decode(torch.from_numpy(edge), threshold=0.1, max_peaks=3)
    coords, scores, valid = D.heatmap_peaks(edge, 4, 7.0, 0.1, 3)
    assert np.array_equal(valid, ref.valid.numpy())
    assert np.allclose(coords[valid], ref.coords.numpy()[valid], atol=1e-4)
    index = torch.from_numpy(D.peaks.peak_cells(edge, 0.1, 3)[0]).clamp_min(0)
    on_device = KeypointHeatmapCodec((4, 28), stride=4).refine_at(torch.from_numpy(edge)[None], index[None])[0]
    assert np.allclose(coords[valid], on_device.numpy()[valid], atol=1e-4)


def test_nms_matches_posenet_on_clustered_boxes():
    rng = np.random.default_rng(2)
    centres = rng.uniform(0, 400, (30, 2)).repeat(40, 0) + rng.normal(0, 6, (1200, 2))
    size = rng.uniform(20, 80, (1200, 2))
    boxes = np.concatenate([centres - size / 2, centres + size / 2], 1).astype(np.float32)
    scores = rng.random(1200).astype(np.float32)
    scores[::7] = scores[0]  # ties resolve by index
    for thr in (0.3, 0.5, 0.7):
        ref = posenet_nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr).numpy()
        assert np.array_equal(D.nms(boxes, scores, thr), ref)
        assert np.array_equal(D.nms(boxes, scores, thr, max_keep=10), ref[:10])


@pytest.mark.parametrize("num_classes", [1, 2])
def test_detection_matches_the_retinanet_postprocess(num_classes):
    torch.manual_seed(num_classes)
    head = RetinaNetHead(in_channels=8, num_convs=0, num_classes=num_classes, anchor_sizes=[16, 32, 64, 128, 256])
    sizes = [(12, 10), (6, 5), (3, 3), (2, 2), (1, 1)]
    A = head.num_anchors
    cls = [torch.randn(1, A * num_classes, h, w) * 2 - 2 for h, w in sizes]
    box = [torch.randn(1, A * 4, h, w) * 0.5 for h, w in sizes]
    outputs = {"cls_logits": torch.cat([head._flatten(c, num_classes) for c in cls], 1),
               "box_deltas": torch.cat([head._flatten(b, 4) for b in box], 1),
               "anchors": head.anchor_generator(sizes)}
    options = dict(score_threshold=0.05, topk_per_level=50, nms_threshold=0.5, max_detections=40)
    ref = head.postprocess(outputs, [(90, 77)], **options)[0]
    gen = head.anchor_generator
    detection = {"num_classes": num_classes, "anchors": {"sizes": gen.sizes, "strides": gen.strides,
                                                         "ratios": gen.ratios, "scales": gen.scales},
                 "box_coder": {"std": head.box_coder.std, "clamp": head.box_coder.clamp}, "postprocess": options}
    boxes, scores = D.detect([c.numpy() for c in cls], [b.numpy() for b in box], detection, (90, 77))
    assert len(ref["scores"]) > 10
    assert np.array_equal(scores, ref["scores"].numpy())
    assert np.abs(boxes - ref["boxes"].numpy()).max() < 1e-4


def _scene_peaks(people=20, size=480, seed=0):
    keypoints, boxes = crowd_scene(people, size, seed)
    codec = KeypointHeatmapCodec((size, size), stride=4, sigma=7.0)
    peaks = codec.decode(torch.from_numpy(codec.encode(keypoints)))
    valid = peaks.valid.numpy()
    types = np.broadcast_to(np.arange(17)[:, None], valid.shape)[valid]
    return boxes, peaks.coords.numpy()[valid].astype(np.float64), types, peaks.scores.numpy()[valid].astype(np.float64)


@pytest.mark.parametrize("softmax,second,grid", [("channel", 0, "enlarged"), ("global", 24, "enlarged"),
                                                 ("channel", 0, "reference")])
def test_prn_grouping_matches_posenet(softmax, second, grid):
    boxes, xy, types, scores = _scene_peaks()
    torch.manual_seed(3)
    prn = PoseResidualNetwork(17, 56, 36, hidden=48, second_hidden=second, softmax=softmax).eval()
    with torch.no_grad():
        prn.mlp[-2].weight.mul_(20.0)  # a decisive output layer: varied assignments
    ref_kp, ref_sc = prn_assign(prn, boxes, xy, types, scores, 17, **EXACT, grid=grid)
    mlp = D.PoseResidualMLP(prn_layers(prn), prn.grid_shape, softmax, 1.0, grid)
    kp, sc = D.prn_assign(mlp, boxes, xy, types, scores, 17)
    assert (ref_sc > 0).sum() > 100
    assert np.array_equal(sc > 0, ref_sc > 0) and np.array_equal(sc, ref_sc)
    assert np.abs(kp - ref_kp).max() < 1e-4
    # the MLP itself, dense, against the network's forward pass (cells at the grid's edges too)
    cells = np.zeros((3, 17, 56, 36), np.float32)
    cells[:, :, 0:56:7, 0:36:5] = 1.0
    ref = prn(torch.from_numpy(D.blur(cells, 1.0, grid))).detach().numpy()
    assert np.allclose(mlp(cells), ref, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(D.blur(cells, 1.0, grid), blur(cells, 1.0, grid), atol=1e-6)


def test_prn_grouping_with_peak_input_one_matches_posenet():
    boxes, xy, types, _ = _scene_peaks()
    scores = np.random.default_rng(5).uniform(0.2, 1.0, len(xy))  # varied: "one" and "score" differ
    torch.manual_seed(3)
    prn = PoseResidualNetwork(17, 56, 36, hidden=48).eval()
    with torch.no_grad():
        prn.mlp[-2].weight.mul_(20.0)
    ref_kp, ref_sc = prn_assign(prn, boxes, xy, types, scores, 17, precision="exact", peak_input="one")
    mlp = D.PoseResidualMLP(prn_layers(prn), prn.grid_shape, "channel", 1.0)
    kp, sc = D.prn_assign(mlp, boxes, xy, types, scores, 17, peak_input="one")
    assert (ref_sc > 0).sum() > 100 and np.array_equal(sc, ref_sc) and np.abs(kp - ref_kp).max() < 1e-4
    score_kp, _ = D.prn_assign(mlp, boxes, xy, types, scores, 17, peak_input="score")
    assert np.abs(score_kp - kp).max() > 1  # the choice matters on this scene


def test_greedy_grouping_matches_posenet():
    boxes, xy, types, scores = _scene_peaks(seed=4)
    ref_kp, ref_sc = most_central_assign(boxes, xy, types, scores, 17)
    kp, sc = D.most_central_assign(boxes, xy, types, scores, 17)
    assert (sc > 0).sum() > 200 and np.array_equal(sc, ref_sc) and np.array_equal(kp, ref_kp)


@pytest.mark.parametrize("sampling", ["bilinear", "nearest"])
def test_paf_grouping_matches_the_paf_codec(sampling):
    keypoints, _ = crowd_scene(12, 368, seed=5)
    parts = OPENPOSE_18.encode(keypoints)
    paf_codec = PafCodec((368, 368), OPENPOSE_18.layout.skeleton, stride=8, sampling=sampling)
    noise = 0.1 * np.random.default_rng(0).standard_normal((38, 46, 46)).astype(np.float32)
    pafs = paf_codec.encode(parts) + noise
    heat_codec = KeypointHeatmapCodec((368, 368), stride=8, sigma=7.0)
    peaks = heat_codec.decode(torch.from_numpy(heat_codec.encode(parts)))
    ref = paf_codec.decode(peaks.coords.numpy(), peaks.scores.numpy(), peaks.valid.numpy(), pafs)
    coords, scores, valid = D.heatmap_peaks(heat_codec.encode(parts), 8, 7.0, 0.05, 20)
    grouping = D.PafGrouping((368, 368), OPENPOSE_18.layout.skeleton, 8, sampling=sampling)
    kps, person = grouping(coords, scores, valid, pafs)
    assert len(person) >= 10
    assert np.allclose(person, ref.scores) and np.abs(kps - ref.keypoints).max() < 1e-4


def test_unsupported_metadata_is_a_clear_error(posenet_setup):
    cfg, model = posenet_setup
    meta = metadata(cfg, model)
    for change, words in ((dict(format="other"), "not a posenet-onnx"), (dict(version=7), "version 7"),
                          (dict(family="pifpaf"), "family 'pifpaf'"),
                          (dict(grouping={"name": "cmu"}), "grouping 'cmu'")):
        with pytest.raises(ValueError, match=words):
            D.PoseModel({**meta, **change})
    with pytest.raises(ValueError, match="softmax"):
        D.PoseResidualMLP(prn_layers(model.prn), model.prn.grid_shape, "sparse")
    fixed = D.PoseModel({**meta, "input": {**meta["input"], "size": [96, 96]}}, session=TorchGraph(model))
    fixed.scales = (1.5,)
    with pytest.raises(ValueError, match="fixed size 96x96"):
        fixed.network(np.zeros((50, 60, 3), np.uint8))


# ----------------------------------------------------------------------------- the whole decode


def _compare_people(ours, theirs, tol=0.5):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert np.abs(a["keypoints"][:, :2] - b["keypoints"][:, :2]).max() < tol
        assert np.allclose(a["keypoints"][:, 2], b["keypoints"][:, 2], atol=1e-5)
        assert np.allclose(a["box"], b["box"], atol=1e-3)
        assert math.isclose(a["score"], b["score"], abs_tol=1e-5)


@pytest.mark.parametrize("grouping", ["prn", "greedy"])
def test_decode_of_network_outputs_matches_the_predictor(grouping):
    """Encoded heatmaps of a crowd and random detection outputs through both decodes."""
    cfg = load_config(CONFIG, [*TINY, f"infer.grouping={grouping}", "infer.peak_threshold=0.05",
                               "detection.max_detections=30", "detection.anchor_sizes=[16,32,64,128,256]"])
    torch.manual_seed(1)
    model = build.posenet_model(cfg, 17, detection=True, prn=True).eval()
    with torch.no_grad():
        model.prn.mlp[-2].weight.mul_(20.0)
    predictor = exact(Predictor.from_config(cfg, model))
    size = 256
    keypoints, _ = crowd_scene(12, size, seed=2)
    heat = KeypointHeatmapCodec((size, size), stride=4, sigma=7.0).encode(keypoints)
    gen = model.detection_head.anchor_generator
    feature = [(size // s, size // s) for s in gen.strides]
    A = gen.num_anchors
    rng = np.random.default_rng(0)
    outputs = {"heatmaps": heat[None]}
    for i, (h, w) in enumerate(feature):
        outputs[f"cls_logits_{i}"] = rng.normal(-1, 2, (1, A, h, w)).astype(np.float32)
        outputs[f"box_deltas_{i}"] = rng.normal(0, 0.5, (1, A * 4, h, w)).astype(np.float32)
    head = model.detection_head
    flat = {"cls_logits": torch.cat([head._flatten(torch.from_numpy(outputs[f"cls_logits_{i}"]), 1)
                                     for i in range(5)], 1),
            "box_deltas": torch.cat([head._flatten(torch.from_numpy(outputs[f"box_deltas_{i}"]), 4)
                                     for i in range(5)], 1),
            "anchors": gen(feature)}
    image_hw = (300, 200)
    matrix = fit_matrix(image_hw, (size, size))
    input_hw = (size, int(round(200 * size / 300)))
    det = head.postprocess(flat, [input_hw], **build.detection_options(cfg))[0]
    net = NetworkOutput(torch.from_numpy(heat[:, :-(-input_hw[0] // 4), :-(-input_hw[1] // 4)]), det["boxes"],
                        det["scores"], matrix, input_hw, image_hw)
    xy, types, scores = predictor.peaks(net)
    theirs, their_boxes = predictor.group(xy, types, scores, net.boxes, net.box_scores, matrix, image_hw)
    prn = D.PoseResidualMLP(prn_layers(model.prn), model.prn.grid_shape, cfg.prn.softmax, cfg.prn.input_sigma)
    ours = D.PoseModel(metadata(cfg, model), prn=prn).decode(outputs, matrix, input_hw, image_hw)
    assert len(theirs) == 30 and sum((p["keypoints"][:, 2] > 0).sum() for p in theirs) > 100
    assert np.allclose(ours["boxes"], their_boxes, atol=1e-3)
    _compare_people(ours["people"], theirs)


@pytest.fixture(scope="module")
def posenet_run():
    """A random small MultiPoseNet with flip and two scales: the Predictor's run and ours."""
    cfg = load_config(CONFIG, [*TINY, "infer.flip=true", "infer.scales=[1.0,0.75]", "infer.peak_threshold=0.05"])
    torch.manual_seed(0)
    model = build.posenet_model(cfg, 17, detection=True, prn=True).eval()
    _sharpen_heatmaps(model)
    rgb = np.random.default_rng(0).integers(0, 256, (70, 95, 3), dtype=np.uint8)
    rgb = np.ascontiguousarray(np.repeat(np.repeat(rgb[::7, ::7], 7, 0), 7, 1)[:70, :95])  # blobs, not noise
    theirs = exact(Predictor.from_config(cfg, model)).run(rgb)
    prn = D.PoseResidualMLP(prn_layers(model.prn), model.prn.grid_shape, cfg.prn.softmax, cfg.prn.input_sigma)
    return cfg, model, rgb, theirs, D.PoseModel(metadata(cfg, model), session=TorchGraph(model), prn=prn)


def test_run_with_flip_and_scales_matches_the_predictor(posenet_run):
    cfg, model, rgb, theirs, ours_model = posenet_run
    ours = ours_model.run(rgb)
    assert ours["heatmaps"].shape == theirs.heatmaps.shape
    assert np.abs(ours["heatmaps"] - theirs.heatmaps).max() < 2e-2 * np.abs(theirs.heatmaps).max()
    assert np.allclose(ours["matrix"], theirs.matrix) and ours["image_size"] == theirs.image_size
    assert len(theirs.people) == 6 and sum((p["keypoints"][:, 2] > 0).sum() for p in theirs.people) > 20
    # the inputs differ by the warp's rounding (a grey level here and there): the same people,
    # keypoints that moved by more than half a pixel only where two peaks nearly tie
    assert len(ours["people"]) == len(theirs.people)
    assert np.allclose(ours["box_scores"], theirs.box_scores, atol=1e-3)
    same = np.mean([np.abs(a["keypoints"][:, :2] - b["keypoints"][:, :2]).max(1) < 0.5
                    for a, b in zip(ours["people"], theirs.people)])
    assert same > 0.9


def test_the_order_of_the_scales_changes_nothing_in_the_decoder(posenet_run):
    cfg, model, rgb, theirs, ours_model = posenet_run
    first = ours_model.run(rgb)
    ours_model.scales = tuple(reversed(ours_model.scales))
    try:
        second = ours_model.run(rgb)
    finally:
        ours_model.scales = tuple(reversed(ours_model.scales))
    assert np.array_equal(first["heatmaps"], second["heatmaps"]) and np.array_equal(first["boxes"], second["boxes"])
    assert np.array_equal(first["matrix"], second["matrix"]) and len(first["people"]) == len(second["people"])


def test_run_on_exactly_the_predictors_input_matches_it(posenet_run, monkeypatch):
    """With the Predictor's own warp the two runs see one input: equal to within rounding."""
    cfg, model, rgb, theirs, ours_model = posenet_run
    monkeypatch.setattr(D.model, "warp_image", warp_image)  # where PoseModel finds it
    ours = ours_model.run(rgb)
    assert np.abs(ours["heatmaps"] - theirs.heatmaps).max() < 1e-4
    _compare_people(ours["people"], theirs.people, tol=1e-3)


def test_openpose_run_and_decode_match_the_paf_predictor(monkeypatch):
    cfg = load_config(OPENPOSE_CONFIG, ["openpose.channels=16", "infer.flip=true", "infer.scales=[1.0,0.6]",
                                        "infer.input_size=64"])
    torch.manual_seed(0)
    predictor = PafPredictor.from_config(cfg, build.paf_network(cfg))
    model = predictor.model
    meta = metadata(cfg, model)
    monkeypatch.setattr(D.model, "warp_image", warp_image)  # where PoseModel finds it
    rgb = np.random.default_rng(1).integers(0, 256, (50, 64, 3), dtype=np.uint8)
    maps, matrix, input_hw = predictor.network(rgb)
    outputs, m, hw = D.PoseModel(meta, session=TorchGraph(model)).network(rgb)
    P = OPENPOSE_18.layout.num_keypoints
    assert hw == input_hw and np.allclose(m, matrix)
    assert np.abs(np.concatenate([outputs["heatmaps"], outputs["pafs"]]) - maps.numpy()).max() < 1e-4
    # the decode, on perfect maps of separated people (mapped into a 300 x 400 image)
    keypoints, _ = crowd_scene(9, 184, seed=3)
    parts = OPENPOSE_18.encode(keypoints)
    heat = KeypointHeatmapCodec((184, 184), stride=4, sigma=7.0).encode(parts)
    pafs = PafCodec((184, 184), OPENPOSE_18.layout.skeleton, stride=4).encode(parts)
    image_hw = (300, 400)
    matrix = fit_matrix(image_hw, (184, 184))
    input_hw = (138, 184)
    maps = torch.from_numpy(np.concatenate([heat, 1 - heat.max(0, keepdims=True), pafs])[:, :35, :46])
    theirs = predictor.group(maps, matrix, input_hw, image_hw)
    ours = D.PoseModel(meta).decode({"heatmaps": maps[:P + 1].numpy(), "pafs": maps[P + 1:].numpy()}, matrix,
                                    input_hw, image_hw)
    assert len(theirs) >= 5
    _compare_people(ours["people"], theirs, tol=1e-3)
    assert ours["pafs"].shape == (38, 35, 46)


# ----------------------------------------------------------------------------- on its own


def test_the_module_runs_without_posenet_torch_or_cv2(tmp_path, posenet_run):
    cfg, model, rgb, theirs, ours_model = posenet_run
    export.ship_decoder(tmp_path)
    meta = dict(ours_model.meta)
    (tmp_path / "model.json").write_text(json.dumps(meta))
    export.save_prn(model.prn, tmp_path / "model.prn.npz")
    outputs, matrix, input_hw = ours_model.network(rgb)
    np.savez(tmp_path / "outputs.npz", matrix=matrix, **outputs)
    expected = ours_model.decode(outputs, matrix, input_hw, rgb.shape[:2])
    script = textwrap.dedent(f"""
        import json, sys
        for name in ("posenet", "torch", "cv2", "onnxruntime"):
            sys.modules[name] = None  # importing them raises ImportError
        sys.path.insert(0, {str(tmp_path)!r})
        import numpy as np
        import posenet_decoder as D
        model = D.load({str(tmp_path / 'model.json')!r})
        data = np.load({str(tmp_path / 'outputs.npz')!r})
        outputs = {{k: data[k] for k in data.files if k != "matrix"}}
        result = D.decode = model.decode(outputs, data["matrix"], {list(input_hw)!r}, {list(rgb.shape[:2])!r})
        try:
            model.network(np.zeros((8, 8, 3), np.uint8))
        except ValueError as exc:
            error = str(exc)
        print(json.dumps({{"people": [p["keypoints"].tolist() for p in result["people"]],
                           "scores": [p["score"] for p in result["people"]], "error": error,
                           "modules": sorted(m for m in ("posenet", "torch", "cv2") if sys.modules.get(m))}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout)
    assert got["modules"] == [] and "onnxruntime" in got["error"]
    assert len(got["people"]) == len(expected["people"]) == len(theirs.people)
    assert np.allclose(np.array(got["people"]), np.array([p["keypoints"] for p in expected["people"]]), atol=1e-6)
    assert np.allclose(got["scores"], [p["score"] for p in expected["people"]])


def test_the_command_line_reports_a_missing_graph_in_one_line(tmp_path, posenet_setup):
    cfg, model = posenet_setup
    export.ship_decoder(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps(metadata(cfg, model)))
    image = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(image)
    # the shipped folder run as a script, and as a module from the export folder
    for command in ([str(tmp_path / "posenet_decoder")], ["-m", "posenet_decoder"]):
        done = subprocess.run([sys.executable, *command, str(tmp_path / "model.json"), str(image)],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "model.onnx: the network file is missing" in lines[0], lines


def test_the_decode_benchmark_times_both_decoders_on_the_same_people():
    from posenet.bench.portable_decode import benchmark

    rows = benchmark(load_config(CONFIG, ["prn.hidden=32"]), people=4, input_size=128, repeats=2)
    for grouping in ("prn", "greedy"):
        row = rows[grouping]
        assert row["people"] == {"posenet": 4, "portable": 4}
        assert row["keypoints"]["posenet"] == row["keypoints"]["portable"] > 40
        assert row["posenet"][0] > 0 and row["portable"][0] > 0
