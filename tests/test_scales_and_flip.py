"""Test-time augmentation geometry: with the flip test (and several scales) on, the prediction
for a mirrored image is the mirrored prediction, left and right swapped, for input widths that
are and are not multiples of the output stride; resampling between scales maps cell centres."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from posenet.config import build, load_config
from posenet.data.keypoints import COCO_PERSON
from posenet.data.transforms import invert, transform_points
from posenet.inference import flip_back, to_grid_of
from posenet.inference.paf_predictor import PafPredictor
from posenet.inference.predictor import Predictor

from _stub_models import BACKGROUND, CODES, ColourCodedNet
from _scripts import REPO

CONFIG = REPO / "configs/synthetic_small.yaml"
FLIP = COCO_PERSON.flip_index
K = COCO_PERSON.num_keypoints
def scene(height: int, width: int, mirrored: bool) -> np.ndarray:
    """Dots of the coded colours at fixed places; ``mirrored``: the mirror image, in which each
    dot is the left/right partner's (what mirroring a person does to its keypoints)."""
    image = np.full((height, width, 3), BACKGROUND, np.uint8)
    rng = np.random.default_rng(1)
    for k in CODES:
        x, y = rng.uniform(8, width - 9), rng.uniform(8, height - 9)
        colour = CODES[FLIP[k]] if mirrored and FLIP[k] in CODES else CODES[k]
        if mirrored:
            x = width - 1 - x
        # drawn at 1/16 px precision so that the dot's centre is x, y exactly
        cv2.circle(image, (int(round(16 * x)), int(round(16 * y))), 3 * 16, colour, -1, cv2.LINE_AA, shift=4)
    return image


def image_peaks(predictor: Predictor, rgb: np.ndarray):
    net = predictor.network(rgb)
    xy, types, scores = predictor.peaks(net)
    return transform_points(invert(net.matrix), xy.numpy().astype(np.float64)), types.numpy()


def predictor(overrides) -> Predictor:
    cfg = load_config(CONFIG, ["infer.grouping=greedy", "infer.peak_threshold=0.1", *overrides])
    return Predictor.from_config(cfg, ColourCodedNet())


@pytest.mark.parametrize("width", [96, 91, 93, 94])
@pytest.mark.parametrize("scales", [[1.0], [1.0, 0.75], [1.0, 1.3]])
def test_mirrored_image_gives_the_mirrored_prediction(width, scales):
    height = 100
    p = predictor(["infer.flip=true", f"infer.input_size={max(height, width)}",
                   f"infer.scales=[{','.join(map(str, scales))}]"])
    xy, types = image_peaks(p, scene(height, width, mirrored=False))
    xy_m, types_m = image_peaks(p, scene(height, width, mirrored=True))
    # the flip test puts each dot in its own channel and, from the mirrored pass, in its partner's
    assert set(types.tolist()) == set(CODES) | {FLIP[k] for k in CODES} and len(xy) == len(xy_m)
    for (x, y), k in zip(xy, types):
        # the same peak in the mirrored image: partner channel, mirrored x (pixel centres)
        same = types_m == FLIP[k]
        assert same.any(), f"keypoint {k}: no peak of its partner in the mirrored image"
        d = np.hypot(xy_m[same, 0] - (width - 1 - x), xy_m[same, 1] - y).min()
        assert d < 0.5, f"width {width}, scales {scales}: keypoint {k} off by {d:.2f} px"


def test_flip_back_undoes_a_mirrored_prediction():
    heat = torch.rand(2, K, 5, 7)
    mirrored = torch.stack([heat[:, FLIP[k]].flip(-1) for k in range(K)], dim=1)  # channel by channel
    assert torch.equal(flip_back(mirrored, FLIP), heat)
    assert torch.equal(flip_back(mirrored[0], FLIP), heat[0])


def test_to_grid_of_maps_cell_centres_of_another_scale():
    """A heatmap that is a linear function of the image x coordinate at one scale resamples to
    the same function of the image coordinate at the reference scale."""
    stride, ratio = 4, 0.75
    ref_w, w = 24, 18
    # cell j of the scaled input is at scaled pixel 4j + 1.5, image pixel (4j + 2) / ratio - 0.5
    image_x = (stride * torch.arange(w, dtype=torch.float32) + 2.0) / ratio - 0.5
    heat = image_x.view(1, 1, 1, w).expand(1, 1, 3, w)
    out = to_grid_of(heat, ratio, (3, ref_w))
    ref_x = stride * torch.arange(ref_w, dtype=torch.float32) + 1.5  # ratio 1 at the reference
    inside = (ref_x >= image_x[0]) & (ref_x <= image_x[-1])
    torch.testing.assert_close(out[0, 0, 1, inside], ref_x[inside], atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- scales


def test_the_reference_scale_is_the_listed_scale_nearest_one():
    from posenet.inference.scales_and_flip import reference_scale, scale_order

    assert scale_order([0.5, 1.0, 1.5, 2.0, 2.5]) == (1.0, [0.5, 1.5, 2.0, 2.5])  # the OpenPose release's list
    assert scale_order([2.5, 2.0, 1.5, 1.0, 0.5]) == (1.0, [0.5, 1.5, 2.0, 2.5])
    assert reference_scale([0.5, 1.5]) == 1.5 and reference_scale([0.5, 2.1]) == 0.5  # by ratio, not difference
    assert reference_scale([0.8, 1.25]) == reference_scale([1.25, 0.8]) == 1.25  # equally near: the larger
    assert scale_order([1.0, 1.0, 0.5]) == (1.0, [0.5, 1.0])  # a repeated scale counts twice
    for bad in ([], [1.0, 0.0], [-1.0]):
        with pytest.raises(ValueError, match="positive"):
            reference_scale(bad)


@pytest.mark.parametrize("flip,boxes", [(False, "reference"), (True, "reference"), (False, "all")])
def test_the_order_of_the_scales_changes_nothing(flip, boxes):
    """The same maps, boxes and geometry, bit for bit, whatever the order of infer.scales; the
    geometry and grid are those of scale 1 when it is listed (the release's 0.5-first list
    used to put every map on the 0.5 grid). With infer.boxes=all every scale's whole-image box
    lands on the reference input and NMS keeps one: the reference scale's, listed first."""
    rgb = scene(100, 94, mirrored=False)
    runs = []
    for scales in ([1.0, 0.5, 1.5], [0.5, 1.0, 1.5], [1.5, 0.5, 1.0]):
        p = predictor([f"infer.flip={str(flip).lower()}", "infer.input_size=100", f"infer.boxes={boxes}",
                       f"infer.scales=[{','.join(map(str, scales))}]"])
        p.model = ColourCodedNet(whole_image_box=True)
        runs.append(p.network(scene(100, 94, mirrored=False)))
    single = predictor(["infer.input_size=100"])
    single.model = ColourCodedNet(whole_image_box=True)
    one = single.network(rgb)
    for net in runs:
        assert torch.equal(net.heatmaps, runs[0].heatmaps) and torch.equal(net.boxes, runs[0].boxes)
        assert np.array_equal(net.matrix, one.matrix) and net.input_size == one.input_size
        assert net.heatmaps.shape == one.heatmaps.shape and torch.equal(net.boxes, one.boxes)


def test_the_paf_predictor_ignores_the_order_of_the_scales():
    cfg = load_config(REPO / "configs/openpose_synthetic_small.yaml",
                      ["openpose.network=hourglass", "openpose.stacks=1", "openpose.channels=16", "infer.input_size=64"])
    torch.manual_seed(0)
    network = build.paf_network(cfg).eval()
    rgb = np.random.default_rng(1).integers(0, 256, (50, 64, 3), dtype=np.uint8)
    runs = []
    for scales in ([1.0, 0.6, 1.4], [0.6, 1.4, 1.0]):
        p = PafPredictor.from_config(load_config(REPO / "configs/openpose_synthetic_small.yaml", [
            "openpose.network=hourglass", "openpose.stacks=1", "openpose.channels=16", "infer.input_size=64",
            "infer.flip=true", f"infer.scales=[{','.join(map(str, scales))}]"]), network)
        runs.append(p.network(rgb))
    one = PafPredictor.from_config(cfg, network).network(rgb)
    (a, m_a, hw_a), (b, m_b, hw_b) = runs
    assert torch.equal(a, b) and np.array_equal(m_a, m_b) and hw_a == hw_b == one[2]
    assert a.shape == one[0].shape and np.array_equal(m_a, one[1])


@pytest.mark.parametrize("image_hw", [(300, 400), (400, 300), (123, 457), (64, 64)])
def test_the_input_side_rule_sizes_the_side_it_names(image_hw):
    from posenet.data.transforms import fit_matrix
    from posenet.inference.scales_and_flip import input_geometry

    h, w = image_hw
    for scale in (0.5, 1.0, 1.7):
        size = round(368 * scale)
        longer, s, hw = input_geometry(image_hw, 368, scale, 8, "longer")
        assert max(hw) == size and np.array_equal(longer, fit_matrix(image_hw, (size, size)))  # the old rule
        m, s, hw = input_geometry(image_hw, 368, scale, 8, "height")
        assert hw[0] == size and abs(hw[1] - w * size / h) <= 0.5 and s == size / h
        m, s, hw = input_geometry(image_hw, 368, scale, 8, "shorter")
        assert min(hw) == size and s == size / min(h, w)
        # the image's corners land on the input's: pixel areas onto pixel areas, top left aligned
        corners = transform_points(m, np.array([[-0.5, -0.5], [w - 0.5, h - 0.5]]))
        np.testing.assert_allclose(corners, [[-0.5, -0.5], [w * s - 0.5, h * s - 0.5]], atol=1e-9)
    with pytest.raises(ValueError, match="longer, height, shorter"):
        input_geometry(image_hw, 368, 1.0, 8, "width")


def test_the_paf_predictor_sizes_the_height_under_the_release_rule():
    overrides = ["openpose.network=hourglass", "openpose.stacks=1", "openpose.channels=16", "infer.input_size=64"]
    torch.manual_seed(0)
    network = build.paf_network(load_config(REPO / "configs/openpose_synthetic_small.yaml", overrides)).eval()
    wide = np.random.default_rng(1).integers(0, 256, (40, 100, 3), dtype=np.uint8)
    longer = PafPredictor.from_config(load_config(REPO / "configs/openpose_synthetic_small.yaml", overrides), network)
    height = PafPredictor.from_config(load_config(REPO / "configs/openpose_synthetic_small.yaml",
                                             [*overrides, "infer.input_side=height"]), network)
    assert longer.network(wide)[2] == (26, 64) and height.network(wide)[2] == (64, 160)
    assert "height 64 px" in height.describe() and "longer side 64 px" in longer.describe()
    with pytest.raises(Exception, match="input_side"):
        load_config(REPO / "configs/openpose_synthetic_small.yaml", ["infer.input_side=width"])


def test_boxes_of_every_scale_merge_by_nms_on_the_reference_input():
    from posenet.inference.predictor import merge_boxes

    options = {"nms_threshold": 0.5, "max_detections": 2}
    reference = (torch.tensor([[10.0, 10.0, 50.0, 90.0]]), torch.tensor([0.6]))
    half = (torch.tensor([[11.0, 9.0, 49.0, 91.0], [60.0, 10.0, 90.0, 70.0]]), torch.tensor([0.8, 0.4]))
    double = (torch.tensor([[0.0, 0.0, 5.0, 5.0]]), torch.tensor([0.1]))
    boxes, scores = merge_boxes([reference, half, double], options)
    # the same person at two scales: one box, the better scored; a person only one scale found
    # stays; at most max_detections, best first
    assert torch.equal(boxes, torch.tensor([[11.0, 9.0, 49.0, 91.0], [60.0, 10.0, 90.0, 70.0]]))
    assert torch.equal(scores, torch.tensor([0.8, 0.4]))
    with pytest.raises(Exception, match="infer.boxes"):
        predictor(["infer.boxes=union"])
