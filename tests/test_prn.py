"""Pose Residual Network: grids and their exact inverse, the network and its loss, the scene
dataset, PRN grouping against the greedy baseline (a perfect PRN beats it), the GT-keypoints +
GT-boxes evaluator on coco-mini, and train_prn.py end to end on a keypoint-stage checkpoint."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from posenet.config import build, load_config
from posenet.data.coco import CocoPersons
from posenet.data.prn_samples import PrnSceneDataset
from posenet.engine.checkpoint import load_checkpoint
from posenet.models.prn import PoseResidualNetwork
from posenet.portable.matching import best_first_matching
from posenet.stages import prn as prn_stage
from posenet.stages.prn import PrnEvaluator
from posenet.codecs.prn_grid import (
    PrnGridCodec,
    blur,
    blur_matrix,
    box_grid,
    encode_peaks,
    encode_targets,
    grid_to_image,
    image_to_grid,
    peak_cells,
)
from posenet.inference.prn_grouping import (
    folded_first_layer,
    most_central_assign,
    pose_scores,
    prn_assign,
    window_sums,
)

from _scripts import REPO, run_script
from test_keypoint_stage import tiny_overrides

CONFIG = REPO / "configs/synthetic_small.yaml"
H, W, MARGIN = 56, 36, 0.21


def _argmax_to_image(grids: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(B, K, H, W) grids -> the centre of each channel's highest cell in image pixels (B, K, 2)."""
    best = grids.reshape(*grids.shape[:2], -1).argmax(-1)
    _, affine = box_grid(boxes, MARGIN, H, W)
    return grid_to_image(affine, np.stack([best % W, best // W], -1) + 0.5)


# ----------------------------------------------------------------------------- grids


def test_box_grid_inverse_is_exact_and_cells_are_where_documented():
    rng = np.random.default_rng(0)
    xy0 = rng.uniform(0, 500, (7, 2))
    boxes = np.concatenate([xy0, xy0 + rng.uniform(1, 300, (7, 2))], 1)
    enlarged, affine = box_grid(boxes, MARGIN, H, W)
    size = boxes[:, 2:] - boxes[:, :2]
    expected = np.concatenate([boxes[:, :2] - MARGIN * size, boxes[:, 2:] + MARGIN * size], 1)
    np.testing.assert_allclose(enlarged, expected)
    tiny, _ = box_grid([[10, 10, 10.5, 10]], MARGIN, H, W)  # widened to 1 pixel about its centre
    np.testing.assert_allclose(tiny, [[9.75 - MARGIN, 9.5 - MARGIN, 10.75 + MARGIN, 10.5 + MARGIN]])
    # the enlarged box's corners are the grid's corners
    np.testing.assert_allclose(image_to_grid(affine, enlarged[:, :2], per_box=True), 0, atol=1e-9)
    np.testing.assert_allclose(image_to_grid(affine, enlarged[:, 2:], per_box=True), np.tile([W, H], (7, 1)))
    points = rng.uniform(-100, 900, (11, 2))
    uv = image_to_grid(affine, points)
    assert uv.shape == (7, 11, 2)
    np.testing.assert_allclose(grid_to_image(affine, uv), np.broadcast_to(points, uv.shape), rtol=0, atol=1e-10)


def test_encoded_keypoints_decode_back_within_a_cell():
    rng = np.random.default_rng(1)
    B, K = 5, 17
    xy0 = rng.uniform(0, 400, (B, 2))
    boxes = np.concatenate([xy0, xy0 + rng.uniform(40, 300, (B, 2))], 1)
    kps = np.concatenate([boxes[:, None, :2] + rng.uniform(0, 1, (B, K, 2)) * (boxes[:, None, 2:] - boxes[:, None, :2]),
                          rng.integers(0, 3, (B, K, 1))], -1)
    enlarged, _ = box_grid(boxes, MARGIN, H, W)
    cell = (enlarged[:, 2:] - enlarged[:, :2]) / [W, H]  # (B, 2) pixels per cell
    target, weight = encode_targets(boxes, kps, MARGIN, H, W, sigma=2.0)
    assert target.shape == (B, K, H, W) and target.dtype == np.float32
    np.testing.assert_array_equal(weight, kps[..., 2] > 0)
    np.testing.assert_allclose(target.sum((2, 3)), weight, atol=1e-5)
    labelled = weight > 0
    err = np.abs(_argmax_to_image(target, boxes) - kps[..., :2]) / cell[:, None]
    assert (err[labelled] <= 0.5 + 1e-9).all()  # the centre of the keypoint's own cell

    # the input: one box, every peak of a type set at its cell, blurred with peak value 1
    types = np.tile(np.arange(K), B)
    grids = encode_peaks(boxes[:1], kps[..., :2].reshape(-1, 2), types, None, K, MARGIN, H, W, sigma=1.0)
    assert grids.shape == (1, K, H, W) and grids.max() == pytest.approx(1.0)
    own = np.abs(_argmax_to_image(grids, boxes[:1]) - kps[:1, :, :2]) / cell[:1, None]
    assert np.median(own) <= 0.5  # own peaks are in the box; some channels hold stronger foreign ones
    scored = encode_peaks(boxes[:1], kps[0, :, :2], np.arange(K), np.full(K, 0.25), K, MARGIN, H, W, sigma=0)
    assert scored.max() == pytest.approx(0.25) and (scored > 0).sum() == K


# ----------------------------------------------------------------------------- network


def test_prn_outputs_are_distributions_and_wrong_shapes_are_refused():
    x = torch.rand(3, 17, H, W)
    channel = PoseResidualNetwork(hidden=32, dropout=0.0).eval()
    out = channel(x)
    assert out.shape == (3, 17, H, W) and (out >= 0).all()
    torch.testing.assert_close(out.sum((2, 3)), torch.ones(3, 17))
    glob = PoseResidualNetwork(hidden=32, second_hidden=16, softmax="global").eval()
    torch.testing.assert_close(glob(x).sum((1, 2, 3)), torch.ones(3))
    with pytest.raises(ValueError, match=r"\(N, 17, 56, 36\)"):
        channel(torch.rand(3, 17, W, H))
    with pytest.raises(ValueError, match="softmax"):
        PoseResidualNetwork(softmax="pixel")


def _crowd(num_people: int = 6, seed: int = 0):
    """Persons side by side, arms stretched out to their box edges, boxes overlapping by 65%:
    every wrist lies nearer a neighbour's box centre than its own."""
    rng = np.random.default_rng(seed)
    template = np.array([
        [0.5, 0.06], [0.46, 0.04], [0.54, 0.04], [0.42, 0.06], [0.58, 0.06], [0.3, 0.2], [0.7, 0.2],
        [0.15, 0.22], [0.85, 0.22], [0.0, 0.24], [1.0, 0.24], [0.38, 0.55], [0.62, 0.55],
        [0.36, 0.75], [0.64, 0.75], [0.35, 0.97], [0.65, 0.97]])
    w, h = 120.0, 240.0
    origin = np.stack([50 + 0.35 * w * np.arange(num_people), 40 + rng.uniform(-8, 8, num_people)], 1)
    xy = origin[:, None] + (template + rng.uniform(-0.01, 0.01, (num_people, 17, 2))) * [w, h]
    kps = np.concatenate([xy, np.full((num_people, 17, 1), 2.0)], -1)
    boxes = np.concatenate([origin, origin + [w, h]], 1)
    return boxes, kps


class PerfectPrn(nn.Module):
    """Outputs the encoded targets it holds (one (B, K, H, W) array per call), whatever the input."""

    def __init__(self, targets=()):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.queue = list(targets)

    def forward(self, x):
        out = torch.from_numpy(self.queue.pop(0))
        assert x.shape == out.shape
        return out


def test_prn_loss_decreases_with_adam_on_a_fixed_batch():
    boxes, kps = _crowd()
    types = np.tile(np.arange(17), len(boxes))
    x = torch.from_numpy(encode_peaks(boxes, kps[..., :2].reshape(-1, 2), types, None, 17, MARGIN, H, W))
    target, weight = encode_targets(boxes, kps, MARGIN, H, W)
    targets = {"target": torch.from_numpy(target), "weight": torch.from_numpy(weight)}
    for softmax in ("channel", "global"):
        torch.manual_seed(0)
        prn = PoseResidualNetwork(hidden=64, dropout=0.0, softmax=softmax)
        # the least the loss can be: the targets themselves as the prediction
        ideal = torch.from_numpy(target / (weight.sum(1)[:, None, None, None] if softmax == "global" else 1))
        floor = prn.compute_loss(ideal, targets)["loss_prn"].item()
        opt = torch.optim.Adam(prn.parameters(), lr=1e-3)
        losses = []
        for _ in range(40):
            loss = prn.compute_loss(prn(x), targets)["loss_prn"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert floor < losses[-1] < losses[0] - 0.4 * (losses[0] - floor), (softmax, floor, losses)
    with pytest.raises(ValueError, match="weight"):
        prn.compute_loss(torch.from_numpy(target), {"target": targets["target"], "weight": torch.ones(6, 3)})


# ----------------------------------------------------------------------------- grouping


def test_a_perfect_prn_groups_a_crowd_that_greedy_grouping_mixes_up():
    boxes, kps = _crowd()
    B, K = kps.shape[:2]
    xy, types = kps[..., :2].reshape(-1, 2), np.tile(np.arange(K), B)
    owner = np.repeat(np.arange(B), K)
    order = np.random.default_rng(3).permutation(len(xy))  # peaks come in any order
    xy, types, owner = xy[order], types[order], owner[order]
    scores = np.random.default_rng(4).uniform(0.5, 1.0, len(xy))
    target, _ = encode_targets(boxes, kps, MARGIN, H, W, sigma=2.0)
    got, got_scores = prn_assign(PerfectPrn([target]), boxes, xy, types, scores, K, MARGIN, H, W, 1.0, window=15)
    assert got.shape == (B, K, 2) and got_scores.shape == (B, K)
    np.testing.assert_array_equal(got, kps[..., :2])  # every keypoint in its own box, exactly
    expected = np.zeros((B, K))
    expected[owner, types] = scores
    np.testing.assert_array_equal(got_scores, expected)

    greedy, greedy_scores = most_central_assign(boxes, xy, types, scores, K, MARGIN)
    wrong = np.abs(greedy - kps[..., :2]).max(-1) > 1e-6
    assert wrong.sum() >= B  # at least the stretched-out wrists go to the neighbours
    centre = np.repeat(((boxes[:, :2] + boxes[:, 2:]) / 2)[:, None], K, 1)
    unassigned = greedy_scores == 0
    assert unassigned.any() and np.array_equal(greedy[unassigned], centre[unassigned])

    # no peaks: PRN argmax locations with score 0; no boxes: empty outputs
    empty_xy, empty_scores = prn_assign(PerfectPrn([target]), boxes, np.zeros((0, 2)), [], [], K, MARGIN, H, W)
    assert (empty_scores == 0).all()
    assert np.abs(empty_xy - kps[..., :2]).max() <= (boxes[0, 2] - boxes[0, 0]) * (1 + 2 * MARGIN) / W
    assert prn_assign(PerfectPrn(), np.zeros((0, 4)), xy, types, scores, K)[0].shape == (0, K, 2)


class DensePrn(nn.Module):
    """A PRN seen through a plain module: prn_assign takes the dense first layer."""

    def __init__(self, prn):
        super().__init__()
        self.prn = prn

    def forward(self, x):
        return self.prn(x)


@pytest.mark.parametrize("sigma,grid", [(1.0, "enlarged"), (0.0, "enlarged"), (1.0, "reference")])
def test_folded_first_layer_is_the_dense_one_and_groups_the_same(sigma, grid):
    """Folding the input blur into the first layer (its adjoint: the reference grid's blur,
    replicating the edge, is not symmetric) gives the dense layer's output."""
    torch.manual_seed(0)
    prn = PoseResidualNetwork(hidden=48, second_hidden=16).eval()
    with torch.no_grad():  # a trained-looking network: outputs that depend on the input
        for m in prn.mlp:
            if isinstance(m, nn.Linear):
                m.weight.mul_(40.0)
    boxes, kps = _crowd()
    B, K = kps.shape[:2]
    rng = np.random.default_rng(7)
    xy = np.concatenate([kps[..., :2].reshape(-1, 2), rng.uniform(0, 400, (30, 2))])
    types = np.concatenate([np.tile(np.arange(K), B), rng.integers(0, K, 30)])
    xy[-1] = xy[-2]  # two peaks in one cell: the cell keeps the larger score
    types[-1] = types[-2]
    scores = rng.uniform(0.1, 1.0, len(xy))
    cells = peak_cells(boxes, xy, types, scores, K, MARGIN, H, W, grid)
    grids = torch.from_numpy(encode_peaks(boxes, xy, types, scores, K, MARGIN, H, W, sigma, grid))
    with torch.no_grad():
        dense = prn.first_layer(grids.flatten(1))
        flat = torch.from_numpy(cells.reshape(B, -1))
        folded = flat @ folded_first_layer(prn, sigma, "cpu", grid) + prn.first_layer.bias
    torch.testing.assert_close(folded, dense, rtol=1e-4, atol=1e-4)
    assert folded_first_layer(prn, sigma, "cpu", grid) is folded_first_layer(prn, sigma, "cpu", grid)  # cached
    with torch.no_grad():
        torch.testing.assert_close(prn(grids, first=folded), prn(grids), rtol=1e-3, atol=1e-4)
    # the scores written into the cells (peak_input "score"): the folding sees values other than 1
    fast = prn_assign(prn, boxes, xy, types, scores, K, MARGIN, H, W, sigma, precision="exact",
                      peak_input="score", grid=grid)  # folded, dense
    slow = prn_assign(DensePrn(prn), boxes, xy, types, scores, K, MARGIN, H, W, sigma, peak_input="score", grid=grid)
    # the same grouping but for near ties that rounding may break the other way
    same = (np.abs(fast[0] - slow[0]).max(-1) < 1e-6) & (fast[1] == slow[1])
    assert same.mean() >= 0.95, same.mean()
    assert (fast[1] > 0).sum() >= B * K // 2  # most keypoints were assigned, so the check compares something
    with torch.no_grad():  # new weights, new folding
        prn.first_layer.weight.mul_(-1.0)
    torch.testing.assert_close(flat @ folded_first_layer(prn, sigma, "cpu", grid), -(folded - prn.first_layer.bias))


def test_window_sums_are_the_sums_over_the_window():
    rng = np.random.default_rng(11)
    maps = rng.random((3, 4, 9, 7)).astype(np.float32)
    types = np.array([0, 3, 3, 1, 2])
    rows = rng.integers(0, 9, (3, 5))
    cols = rng.integers(0, 7, (3, 5))
    rows[0, 0], cols[0, 0] = 0, 6  # a corner: the window is cut by the grid
    for window in (1, 3, 5, 15):
        got = window_sums(maps, types, rows, cols, window)
        r = window // 2
        expected = np.array([[maps[b, types[p], max(rows[b, p] - r, 0):rows[b, p] + r + 1,
                                   max(cols[b, p] - r, 0):cols[b, p] + r + 1].sum() for p in range(5)]
                             for b in range(3)])
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)  # float32 integral image


def test_greedy_matching_is_the_one_by_one_greedy_pass():
    rng = np.random.default_rng(5)
    score = rng.random((3, 6, 9))
    score[rng.random(score.shape) < 0.5] = -np.inf
    chosen = best_first_matching(score)
    expected = np.full((3, 6), -1)
    for k in range(3):
        taken = set()
        pairs = sorted(((score[k, b, s], b, s) for b in range(6) for s in range(9) if np.isfinite(score[k, b, s])),
                       reverse=True)
        for _, b, s in pairs:
            if expected[k, b] < 0 and s not in taken:
                expected[k, b] = s
                taken.add(s)
    np.testing.assert_array_equal(chosen, expected)


def test_pose_scores():
    scores = pose_scores([1.0, 0.5, 0.9], [[0.9, 0.5, 0.01], [0.8, 0.8, 0.8], [0.0, 0.02, 0.04]], threshold=0.05)
    np.testing.assert_allclose(scores, [0.7, 0.4, 0.0])


# ----------------------------------------------------------------------------- data


def test_scene_dataset_is_deterministic_and_targets_the_boxs_own_person(coco_mini):
    persons = CocoPersons(coco_mini, "train2017")
    make = lambda seed, **kw: PrnSceneDataset(persons, samples_per_epoch=64, seed=seed, **kw)  # noqa: E731
    a, b, c = make(0), make(0), make(1)
    assert len(a) == 64 and len(a.poses) > 50 and a.real_scenes
    x, t = a[5]
    assert x.shape == (17, H, W) and t["target"].shape == (17, H, W) and t["weight"].shape == (17,)
    assert x.dtype == torch.float32
    y, u = b[5]
    assert torch.equal(x, y) and torch.equal(t["target"], u["target"]) and torch.equal(t["weight"], u["weight"])
    assert not torch.equal(x, c[5][0])
    kinds = set()
    for i in range(40):
        scene = a.scene(i)
        kinds.add(scene.real)
        x, t = a[i]
        own = scene.keypoints[scene.person]
        box = scene.boxes[scene.person][None]
        labelled = t["weight"].numpy() > 0
        assert labelled.sum() >= 1
        enlarged, _ = box_grid(box, MARGIN, H, W)
        cell = (enlarged[0, 2:] - enlarged[0, :2]) / [W, H]
        err = np.abs(_argmax_to_image(t["target"].numpy()[None], box)[0] - own[:, :2]) / cell
        assert (err[labelled] <= 0.5 + 1e-9).all()
        assert (x.numpy().reshape(17, -1).max(1)[labelled] >= 1 - 1e-6).all()  # its keypoints are in the input
        if not scene.real:
            assert a.min_people <= len(scene.boxes) <= a.max_people
            longer = (scene.boxes[:, 2:] - scene.boxes[:, :2]).max(1)
            assert (longer >= 0.5 * a.PERSON_SIZE - 1e-6).all() and (longer <= 2 * a.PERSON_SIZE + 1e-6).all()
    assert kinds == {True, False}
    # fresh scenes per epoch: the seed also takes one draw of numpy's global generator
    fresh = make(0, fresh_each_epoch=True)
    np.random.seed(1)
    first = fresh[3][0]
    np.random.seed(1)
    assert torch.equal(first, fresh[3][0])
    np.random.seed(2)
    assert not torch.equal(first, fresh[3][0])


# ----------------------------------------------------------------------------- evaluation and training


def test_gt_keypoints_and_gt_boxes_ap_perfect_prn_beats_greedy(coco_mini):
    cfg = load_config(REPO / "configs/coco-mini.yaml", [f"data.root={coco_mini}"])
    evaluator = PrnEvaluator.from_config(cfg, "prn", progress=False)
    targets = []
    for image_id in evaluator.image_ids:
        inputs = evaluator.image_inputs(image_id)
        if len(inputs["boxes"]):
            targets.append(encode_targets(inputs["boxes"], inputs["keypoints"], MARGIN, H, W, 2.0)[0])
    perfect = evaluator(PerfectPrn(targets))
    # a few labelled keypoints lie outside their person's enlarged box: no box-based grouping
    # can reach them
    assert perfect["AP"] > 0.95 and perfect["AP50"] == pytest.approx(1.0)
    assert "ground-truth keypoints" in evaluator.protocol()
    assert evaluator.last_results and len(evaluator.last_results[0]["keypoints"]) == 51
    greedy = PrnEvaluator.from_config(cfg, "greedy", progress=False)(None)
    assert greedy["AP"] < perfect["AP"] - 0.05


def test_train_prn_script_end_to_end_keeps_the_init_weights(coco_mini, tiny_synthetic, tmp_path):
    kp_dir, prn_dir = tmp_path / "kp", tmp_path / "prn"
    run_script("train_keypoint.py", "--config", str(CONFIG), *tiny_overrides(tiny_synthetic, kp_dir), "--out", str(kp_dir), "train.epochs=1",
               "model.frozen_bn=false")
    init = kp_dir / "last.pt"
    overrides = tiny_overrides(tiny_synthetic, prn_dir) + [
        f"data.root={coco_mini}", "model.frozen_bn=false", "prn.hidden=64", "prn.samples_per_epoch=256",
        "prn.epochs=2", "prn.batch_size=32", "prn.lr=1e-3", "eval.max_images=30"]
    result = run_script("train_prn.py", "--config", str(CONFIG), *overrides, "--init", str(init), "--out", str(prn_dir))
    out = result.stdout + result.stderr
    assert "frozen: keypoint, trunk" in out and "GT-keypoints + GT-boxes AP" in out
    for name in ("last.pt", "best.pt", "config.yaml", "metrics.jsonl"):
        assert (prn_dir / name).is_file(), name
    history = [json.loads(line) for line in (prn_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2 and all("AP" in r and "train_loss_prn" in r for r in history)
    before, after = load_checkpoint(init)["model"], load_checkpoint(prn_dir / "last.pt")["model"]
    assert any(k.startswith("prn.") for k in after) and not any(k.startswith("prn.") for k in before)
    assert before.keys() <= after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics, bitwise

    cfg = load_config(CONFIG, overrides)
    evaluator = PrnEvaluator.from_config(cfg, "prn", progress=False)
    metrics = evaluator(prn_stage.load_model(cfg, prn_dir / "best.pt"))
    assert {"AP", "AP50", "val_seconds"} <= set(metrics) and "PRN (window" in evaluator.protocol()
    with pytest.raises(Exception, match="no PRN"):
        prn_stage.load_model(cfg, init)


def test_prn_stage_without_init_warns_and_resumes_exactly(coco_mini, tiny_synthetic, tmp_path):
    def train(out, epochs, *extra):
        overrides = tiny_overrides(tiny_synthetic, out) + [
            f"data.root={coco_mini}", "prn.hidden=32", "prn.samples_per_epoch=96", f"prn.epochs={epochs}",
            "prn.batch_size=32", "train.schedule=none", "eval.max_images=5"]
        return run_script("train_prn.py", "--config", str(CONFIG), *overrides, "--out", str(out), *extra)

    result = train(tmp_path / "through", 2)
    assert "warning: no --init" in result.stdout
    train(tmp_path / "split", 1)
    train(tmp_path / "split", 2, "--resume")
    a, b = (load_checkpoint(tmp_path / run / "last.pt")["model"] for run in ("through", "split"))
    assert any(k.startswith("prn.") for k in a)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_prepare_model_on_a_detection_checkpoint_trains_the_prn_alone(tiny_synthetic, tmp_path):
    cfg = load_config(CONFIG, tiny_overrides(tiny_synthetic, tmp_path) + [
        "detection.fpn_channels=16", "detection.head_convs=1", "prn.hidden=16"])
    detector = build.posenet_model(cfg, 17, detection=True)
    torch.save({"format": "posenet-checkpoint", "model": detector.state_dict()}, tmp_path / "det.pt")
    model = prn_stage.prepare_model(cfg, 17, tmp_path / "det.pt")
    assert model.has_detection and model.has_prn and model.frozen == {"trunk", "keypoint", "detection"}
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {"prn"}
    model.train()
    assert model.prn.training and not model.trunk.training and not model.detection_head.training
    x, t = torch.rand(4, 17, H, W), {"target": torch.full((4, 17, H, W), 1 / (H * W)), "weight": torch.ones(4, 17)}
    losses = model(x, t)
    assert set(losses) == {"loss", "loss_prn"} and losses["loss"].requires_grad


def test_prn_grid_codec_decodes_its_targets_back_to_the_keypoints():
    """Round trip: encode_targets then decode gives each labelled keypoint back within half a
    cell (in image pixels); decode of torch grids equals decode of numpy grids."""
    codec = PrnGridCodec(MARGIN, H, W, 1.0, 2.0)
    rng = np.random.default_rng(3)
    boxes = np.array([[10, 20, 60, 140], [40, 10, 120, 90]], dtype=np.float64)
    kps = np.zeros((2, 17, 3))
    for b, (x1, y1, x2, y2) in enumerate(boxes):
        kps[b, :, 0] = rng.uniform(x1, x2, 17)
        kps[b, :, 1] = rng.uniform(y1, y2, 17)
        kps[b, :, 2] = 2
    kps[1, 3, 2] = 0  # unlabelled: weight 0
    target, weight = codec.encode_targets(boxes, kps)
    xy, value = codec.decode(boxes, target)
    cell = (boxes[:, 2:] - boxes[:, :2]) * (1 + 2 * MARGIN) / np.array([W, H])  # cell size in pixels
    error = np.abs(xy - kps[..., :2]) / cell[:, None]
    assert (error[weight > 0] <= 0.5 + 1e-9).all() and weight[1, 3] == 0
    assert (value[weight > 0] > 0).all()
    xy_t, _ = codec.decode(boxes, torch.from_numpy(target))
    np.testing.assert_array_equal(xy, xy_t)
    assert codec.decode(np.zeros((0, 4)), np.zeros((0, 17, H, W)))[0].shape == (0, 17, 2)


def test_reference_grid_covers_the_box_clamps_the_margin_and_blurs_as_the_reference():
    """prn.grid=reference: the grid covers the box itself; a keypoint in the margin (within
    ``margin`` of the box's size outside it) lands on the nearest border cell, one beyond it
    counts for nothing; the blur is a normalised Gaussian cut at 4 sigma (peak 0.159 at sigma
    1) with the edge cells replicated outside the grid (the reference's skimage gaussian)."""
    box = np.array([[100.0, 100.0, 136.0, 156.0]])  # 36 x 56 px: one pixel per cell
    xy = np.array([[110.5, 120.5], [95.0, 130.5], [140.0, 150.0], [90.0, 130.0], [118.0, 99.0]])
    types = np.arange(5)
    cells = peak_cells(box, xy, types, None, 17, MARGIN, H, W, "reference")[0]
    assert cells[0, 20, 10] == 1  # inside: the cell under it
    assert cells[1, 30, 0] == 1  # 5 px left of the box (margin 7.6 px): the left border cell
    assert cells[2, 50, 35] == 1  # 4 px right of the box: the right border cell
    assert cells[3].sum() == 0  # 10 px left: beyond the margin
    assert cells[4, 0, 18] == 1  # 1 px above: the top border cell
    assert cells.sum() == 4
    enlarged = peak_cells(box, xy, types, None, 17, MARGIN, H, W, "enlarged")[0]
    assert enlarged.sum() == 4 and enlarged[0, 22, 12] == 1  # the enlarged grid: 1.42 px per cell
    # the blur: edge-replicated convolution with the normalised kernel
    sigma, n = 1.0, 12
    d = np.arange(-4, 5)
    kernel = np.exp(-0.5 * d ** 2 / sigma ** 2)
    kernel /= kernel.sum()
    for at in (0, 1, 6, 11):
        x = np.zeros(n)
        x[at] = 1.0
        expected = np.convolve(np.pad(x, 4, mode="edge"), kernel, mode="valid")
        np.testing.assert_allclose(blur_matrix(n, sigma, "reference") @ x, expected, atol=1e-7)
    blurred = blur(cells[None, :1], sigma, "reference")[0, 0]
    assert abs(blurred.max() - 1 / (2 * np.pi)) < 1e-6 and abs(blurred.sum() - 1) < 1e-6
    # targets on the reference grid decode back to the box's keypoints within half a cell
    codec = PrnGridCodec(MARGIN, H, W, 1.0, 2.0, grid="reference")
    kps = np.zeros((1, 17, 3))
    kps[0, :, :2] = np.random.default_rng(0).uniform([100, 100], [136, 156], (17, 2))
    kps[0, :, 2] = 2
    target, weight = codec.encode_targets(box, kps)
    back, _ = codec.decode(box, target)
    assert weight.all() and np.abs(back - kps[0, :, :2]).max() <= 0.5 + 1e-9
    with pytest.raises(ValueError, match="prn.grid"):
        PrnGridCodec(grid="raw")

