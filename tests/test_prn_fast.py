"""The PRN grouping's fast paths (``precision`` "float32" and "int8", posenet.inference.prn_fast)
against the exact dense path on crowded scenes: the same assignments, the differences allowed
being the ones the module documents (windows below the float32 integral image's noise floor,
int8 near ties), each checked against float64 window sums of the dense network."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from posenet.bench.decode import _POSE, crowd_scene
from posenet.codecs.prn_grid import PrnGridCodec, encode_peaks, image_to_grid
from posenet.config import build, load_config
from posenet.inference.groupings import PrnGrouping, grouping_from_config
from posenet.inference.prn_fast import contested
from posenet.inference.prn_grouping import prn_assign
from posenet.models.prn import PoseResidualNetwork

from _scripts import REPO

pytestmark = pytest.mark.usefixtures("single_thread")

H, W, K, MARGIN = 56, 36, 17, 0.21
NOISE_FLOOR = 1e-4  # window masses the reference's float32 integral image cannot tell from 0
INT8_LOGIT_ERROR = 0.01  # int8 logits' error, relative to the channel's largest logit


def _prn(kind: str, seed: int, softmax: str = "channel", hidden: int = 64) -> PoseResidualNetwork:
    """A PRN whose outputs depend on its input: "random" weights scaled up, or "structured":
    each channel's output bias a bump where a standing person's keypoint lies in its box, so
    boxes compete for the peaks the way a trained network makes them."""
    torch.manual_seed(seed)
    prn = PoseResidualNetwork(hidden=hidden, softmax=softmax).eval()
    with torch.no_grad():
        if kind == "random":
            for m in prn.mlp:
                if isinstance(m, nn.Linear):
                    m.weight.mul_(40.0)
        else:
            prn.first_layer.weight.mul_(20.0)
            u = (_POSE[:, 0] + MARGIN) / (1 + 2 * MARGIN) * W
            v = (_POSE[:, 1] + MARGIN) / (1 + 2 * MARGIN) * H
            yy, xx = np.mgrid[0:H, 0:W] + 0.5
            bump = np.exp(-((xx[None] - u[:, None, None]) ** 2 + (yy[None] - v[:, None, None]) ** 2) / 18.0)
            prn.mlp[-2].bias.copy_(torch.from_numpy(6.0 * bump.reshape(-1)).float())
            prn.mlp[-2].weight.mul_(8.0)
    return prn


def _scene(seed: int, people: int = 20):
    """The benchmark's crowd (``crowd_scene``): every keypoint a peak, plus 40 stray peaks."""
    kps, boxes = crowd_scene(people, 480, seed)
    rng = np.random.default_rng(seed)
    xy = np.concatenate([kps[..., :2].reshape(-1, 2), rng.uniform(0, 480, (40, 2))])
    types = np.concatenate([np.tile(np.arange(K), people), rng.integers(0, K, 40)])
    return boxes, xy, types, rng.uniform(0.2, 1.0, len(xy))


def _float64_pair_scores(prn, boxes, xy, types, scores, window: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """(B, P) window sums of the dense network run in float64 (-inf: peak outside the box),
    and its logits (B, K, H, W)."""
    grids = torch.from_numpy(encode_peaks(boxes, xy, types, scores, K, MARGIN, H, W, 1.0)).double().flatten(1)
    mlp = [m.double() if isinstance(m, nn.Linear) else m for m in prn.mlp]
    with torch.no_grad():
        logits = nn.Sequential(*mlp)(grids) + grids
    prn.float()
    n = len(boxes)
    if prn.softmax == "global":
        probs = logits.softmax(-1).reshape(n, K, H, W).numpy()
    else:
        probs = logits.reshape(n, K, -1).softmax(-1).reshape(n, K, H, W).numpy()
    cell = np.floor(image_to_grid(PrnGridCodec(MARGIN, H, W).affine(boxes), xy)).astype(np.int64)
    pair = np.full((n, len(xy)), -np.inf)
    r = window // 2
    for b in range(n):
        for p in range(len(xy)):
            x, y = cell[b, p]
            if 0 <= x < W and 0 <= y < H:
                pair[b, p] = probs[b, types[p], max(y - r, 0):y + r + 1, max(x - r, 0):x + r + 1].sum()
    return pair, logits.reshape(n, K, H, W).numpy()


def _unexplained(fast, exact, pair, logits, boxes, xy, types, logit_error: float) -> list:
    """The keypoints (b, k) where the two groupings differ for a reason the fast path does not
    document. Allowed: every candidate of the channel below the noise floor; two competing pair
    scores closer than logit errors of ``logit_error`` times the channels' largest logit can
    make them (relative gap < exp(2 * error) - 1); for a keypoint unassigned by both, a fallback
    cell whose logit is that close to the channel's largest."""
    def peak_of(result, b, k):
        if result[1][b, k] == 0:
            return -1
        return int(np.flatnonzero((types == k) & (np.abs(xy - result[0][b, k]).max(1) < 1e-9))[0])

    def error(*boxes_):  # the logit error allowed in the channels of type k of these boxes
        return logit_error * max(np.abs(logits[b_, k]).max() for b_ in boxes_)

    bad = []
    for b, k in zip(*np.nonzero((fast[1] != exact[1]) | (np.abs(fast[0] - exact[0]).max(-1) > 1e-6))):
        candidates = np.flatnonzero(np.isfinite(pair[b]) & (types == k))
        if len(candidates) and pair[b, candidates].max() < NOISE_FLOOR:
            continue
        pf, pe = peak_of(fast, b, k), peak_of(exact, b, k)
        if pf < 0 and pe < 0:  # both fall back to the highest cell: a tie of two cells
            u, v = image_to_grid(PrnGridCodec(MARGIN, H, W).affine(boxes[b:b + 1]), fast[0][b, k][None])[0, 0]
            if logits[b, k].max() - logits[b, k, int(v), int(u)] <= 2 * error(b):
                continue
        ties = []
        if pf >= 0 and pe >= 0:
            gap = abs(pair[b, pf] - pair[b, pe]) / max(pair[b, pf], pair[b, pe])
            ties.append(gap <= np.expm1(2 * error(b)))
        for p in (pf, pe):  # the peak went to another box in the other grouping
            if p >= 0:
                for rival in np.flatnonzero(np.isfinite(pair[:, p])):
                    if rival != b:
                        gap = abs(pair[rival, p] - pair[b, p]) / max(pair[rival, p], pair[b, p])
                        ties.append(gap <= np.expm1(2 * error(b, rival)))
        if not any(ties):
            bad.append((int(b), int(k)))
    return bad


@pytest.mark.parametrize("softmax", ["channel", "global"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_paths_group_a_structured_crowd_exactly_as_the_dense_path(seed, softmax):
    prn = _prn("structured", seed, softmax)
    boxes, xy, types, scores = _scene(seed)
    exact = prn_assign(prn, boxes, xy, types, scores, K, MARGIN, H, W, precision="exact")
    assert (exact[1] > 0).sum() >= 0.9 * exact[1].size  # the scene is crowded and the check compares something
    assert contested(*_inside_and_types(boxes, xy, types)).sum() > len(boxes) * 5  # boxes compete for peaks
    for precision in ("float32", "int8"):
        fast = prn_assign(prn, boxes, xy, types, scores, K, MARGIN, H, W, precision=precision)
        np.testing.assert_array_equal(fast[1], exact[1])
        np.testing.assert_allclose(fast[0], exact[0], rtol=0, atol=1e-9)


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_fast_paths_group_as_the_dense_path_on_the_reference_grid(precision):
    """prn.grid=reference (the box itself, margin keypoints clamped onto the border cells, a
    normalised blur that replicates the edge): the fast paths' patches and folded weights
    follow that grid, so they group a crowd as the dense path does."""
    prn = _prn("structured", 2)
    for seed in (0, 1):
        boxes, xy, types, scores = _scene(seed)
        exact = prn_assign(prn, boxes, xy, types, scores, K, MARGIN, H, W, precision="exact", grid="reference")
        assert (exact[1] > 0).sum() >= 0.9 * exact[1].size
        fast = prn_assign(prn, boxes, xy, types, scores, K, MARGIN, H, W, precision=precision, grid="reference")
        np.testing.assert_array_equal(fast[1], exact[1])
        np.testing.assert_allclose(fast[0], exact[0], rtol=0, atol=1e-9)
        enlarged = prn_assign(prn, boxes, xy, types, scores, K, MARGIN, H, W, precision="exact")
        assert not np.array_equal(enlarged[0], exact[0])  # the grid matters


def _inside_and_types(boxes, xy, types):
    cell = np.floor(image_to_grid(PrnGridCodec(MARGIN, H, W).affine(boxes), xy))
    inside = (cell[..., 0] >= 0) & (cell[..., 0] < W) & (cell[..., 1] >= 0) & (cell[..., 1] < H)
    return inside, types, K


@pytest.mark.parametrize("softmax", ["channel", "global"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_paths_differ_from_the_dense_path_only_where_documented(seed, softmax):
    prn = _prn("random", seed, softmax)
    boxes, xy, types, scores = _scene(seed)
    # peak_input "score": the float64 reference below scores pairs by the window sums alone
    exact = prn_assign(prn, boxes, xy, types, scores, K, MARGIN, H, W, precision="exact", peak_input="score")
    pair, logits = _float64_pair_scores(prn, boxes, xy, types, scores)
    for precision, logit_error in (("float32", 1e-5), ("int8", INT8_LOGIT_ERROR)):
        fast = prn_assign(prn, boxes, xy, types, scores, K, MARGIN, H, W, precision=precision, peak_input="score")
        assert _unexplained(fast, exact, pair, logits, boxes, xy, types, logit_error) == []
        same = (fast[1] == exact[1]) & (np.abs(fast[0] - exact[0]).max(-1) < 1e-6)
        assert same.mean() >= 0.97, (precision, same.mean())


def test_int8_logits_and_pair_scores_are_within_the_documented_error():
    """The bound behind INT8_LOGIT_ERROR: on the candidate channels of a crowd, int8 logits are
    within 1% of the channel's largest logit of the float64 ones, so the window sums are within
    exp(2 * that) of theirs; float32 within rounding."""
    from posenet.inference import prn_fast

    for kind in ("structured", "random"):
        prn = _prn(kind, 0)
        boxes, xy, types, scores = _scene(0)
        pair, logits = _float64_pair_scores(prn, boxes, xy, types, scores)
        inside, _, _ = _inside_and_types(boxes, xy, types)
        cell = np.floor(image_to_grid(PrnGridCodec(MARGIN, H, W).affine(boxes), xy)).astype(np.int64)
        flat, values = prn_fast.peak_entries(cell, inside, types, scores, K, H, W)
        b, p = np.nonzero(inside)
        needed = np.zeros((len(boxes), K), dtype=bool)
        needed[b, types[p]] = True
        with torch.no_grad():
            hidden = prn_fast.hidden_activations(prn, flat, values, len(boxes), 1.0)
            for int8, bound in ((True, INT8_LOGIT_ERROR), (False, 1e-5)):
                out = prn_fast.ChannelOutputs(prn, hidden, needed, flat, values, 1.0,
                                              prn_fast.output_layer(prn, int8))
                largest = np.abs(logits[b, types[p]]).reshape(len(b), -1).max(1)
                got = torch.log(out.probs).numpy()[out.rows[b, types[p]]].reshape(len(b), -1)
                want = logits[b, types[p]].reshape(len(b), -1)
                # log-probabilities are logits up to each channel's constant: compare the spreads
                got, want = got - got.max(1, keepdims=True), want - want.max(1, keepdims=True)
                visible = want > -20  # cells whose probability float32 holds
                err = (np.abs(got - want) * visible).max(1) / largest
                assert err.max() <= 2 * bound, (kind, int8, err.max())
                sums = out.window_sums(b, types[p], cell[b, p, 1], cell[b, p, 0], 15)
                seen = pair[b, p] > 1e-3
                assert seen.sum() > 50
                rel = np.abs(sums - pair[b, p])[seen] / pair[b, p][seen]
                assert (rel <= np.expm1(4 * bound * largest[seen]) + 1e-5).all(), (kind, int8, rel.max())
        if kind == "structured":
            assert np.median(largest) < 15  # a trained-looking range: int8 moves its scores by a few %


def test_fast_path_edge_cases_follow_the_dense_path():
    prn = _prn("structured", 3)
    boxes, xy, types, scores = _scene(3, people=6)
    # no peaks: every keypoint at its channel's highest cell, score 0
    for args in ((np.zeros((0, 2)), [], []), (xy[:5], types[:5], scores[:5])):
        exact = prn_assign(prn, boxes, *args, K, MARGIN, H, W, precision="exact")
        fast = prn_assign(prn, boxes, *args, K, MARGIN, H, W, precision="float32")
        np.testing.assert_array_equal(fast[1], exact[1])
        np.testing.assert_allclose(fast[0], exact[0], atol=1e-9)
    # a score threshold: every candidate is scored, uncontested ones too
    pair, _ = _float64_pair_scores(prn, boxes, xy, types, scores)
    threshold = float(np.median(pair[np.isfinite(pair)]))
    exact = prn_assign(prn, boxes, xy, types, scores, K, MARGIN, H, W, min_score=threshold, precision="exact")
    fast = prn_assign(prn, boxes, xy, types, scores, K, MARGIN, H, W, min_score=threshold, precision="float32")
    assert 0 < (exact[1] > 0).sum() < exact[1].size
    np.testing.assert_array_equal(fast[1], exact[1])
    # no input blur; peaks sharing a cell (the larger score counts)
    xy2, types2 = np.concatenate([xy, xy[:3]]), np.concatenate([types, types[:3]])
    scores2 = np.concatenate([scores, scores[:3] + 0.1])
    exact = prn_assign(prn, boxes, xy2, types2, scores2, K, MARGIN, H, W, 0.0, precision="exact")
    fast = prn_assign(prn, boxes, xy2, types2, scores2, K, MARGIN, H, W, 0.0, precision="float32")
    np.testing.assert_array_equal(fast[1], exact[1])
    assert prn_assign(prn, np.zeros((0, 4)), xy, types, scores, K)[0].shape == (0, K, 2)
    with pytest.raises(ValueError, match="precision"):
        prn_assign(prn, boxes, xy, types, scores, K, precision="bf16")
    with pytest.raises(ValueError, match="peak types"):
        prn_assign(prn, boxes, xy, types + K, scores, K)
    from posenet.inference.prn_fast import output_layer

    int8 = output_layer(prn, True)
    assert output_layer(prn, False) is not int8 and output_layer(prn, True) is int8  # both kept, built once
    with torch.no_grad():  # new weights, new layer
        prn.mlp[-2].weight.mul_(0.5)
    assert output_layer(prn, True) is not int8
    assert prn.training is False
    prn.train()
    prn_assign(prn, boxes, xy, types, scores, K)
    assert prn.training  # the call puts the network back as it found it


def test_the_default_grouping_is_the_int8_fast_path_and_the_exact_one_is_a_config_choice():
    cfg = load_config(REPO / "configs/synthetic_small.yaml")
    assert cfg.prn.precision == "int8" and grouping_from_config(cfg, "prn").precision == "int8"
    exact = grouping_from_config(load_config(REPO / "configs/synthetic_small.yaml", ["prn.precision=exact"]), "prn")
    assert isinstance(exact, PrnGrouping) and exact.precision == "exact" and "exact" in exact.describe()
    prn = _prn("structured", 1)
    boxes, xy, types, scores = _scene(1, people=8)
    np.testing.assert_array_equal(exact(boxes, xy, types, scores, K, prn)[1],
                                  prn_assign(prn, boxes, xy, types, scores, K, precision="exact")[1])
    with pytest.raises(Exception, match="precision"):
        load_config(REPO / "configs/synthetic_small.yaml", ["prn.precision=half"])


class _Recorder(nn.Module):
    """A stand-in PRN (any module takes the dense path) that records its input grids and
    answers with a fixed output."""

    def __init__(self, output: torch.Tensor):
        super().__init__()
        self.output, self.seen = output, []
        self.p = nn.Parameter(torch.zeros(()))  # the grouping reads the device off a parameter

    def forward(self, grids):
        self.seen.append(grids.clone())
        return self.output[: len(grids)]


def test_peak_input_one_feeds_the_prn_what_training_feeds_it():
    """With prn.peak_input=one a peak writes 1 into its cell whatever its score: the input
    grids are the training samples' (ground-truth keypoints, written as 1), and the pair scores
    are the window sums times the peak scores, so scaling every score changes no assignment."""
    boxes, xy, types, scores = _scene(0, people=6)
    output = torch.rand(len(boxes), K, H, W, generator=torch.Generator().manual_seed(0))
    training = encode_peaks(boxes, xy, types, None, K, MARGIN, H, W, 1.0)
    for peak_input, expected in (("one", training), ("score", encode_peaks(boxes, xy, types, scores, K, MARGIN, H, W, 1.0))):
        recorder = _Recorder(output)
        prn_assign(recorder, boxes, xy, types, scores, K, precision="exact", peak_input=peak_input)
        np.testing.assert_allclose(recorder.seen[0].numpy(), expected, atol=1e-6)
    assert not np.allclose(training, encode_peaks(boxes, xy, types, scores, K, MARGIN, H, W, 1.0))

    prn = _prn("structured", 0)
    kp, sc = prn_assign(prn, boxes, xy, types, scores, K, precision="exact", peak_input="one")
    kp_half, sc_half = prn_assign(prn, boxes, xy, types, 0.5 * scores, K, precision="exact", peak_input="one")
    np.testing.assert_array_equal(kp, kp_half)
    np.testing.assert_allclose(sc_half, 0.5 * sc)
    with pytest.raises(ValueError, match="peak_input"):
        prn_assign(prn, boxes, xy, types, scores, K, peak_input="half")


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_fast_paths_follow_the_dense_path_with_peak_input_one(precision):
    prn = _prn("structured", 1)
    for seed in (0, 1):
        boxes, xy, types, scores = _scene(seed)
        ref_kp, ref_sc = prn_assign(prn, boxes, xy, types, scores, K, precision="exact", peak_input="one")
        kp, sc = prn_assign(prn, boxes, xy, types, scores, K, precision=precision, peak_input="one")
        assigned = ref_sc > 0
        assert (sc > 0).sum() == assigned.sum()
        agree = (np.abs(kp - ref_kp).max(-1) < 1e-6) | ~assigned
        assert agree.mean() > 0.99, agree.mean()


@pytest.mark.parametrize("grid", ["enlarged", "reference"])
def test_hidden_activations_are_the_first_layers_in_the_order_index_add_takes(grid):
    """The fast path's first layer sums a grid's folded rows after the bias (one embedding_bag
    where the cells hold 1): the same floats as the bias plus each row in turn (``index_add_``),
    and the dense layers on the blurred grids to within rounding."""
    from posenet.inference import prn_fast

    prn = _prn("random", 4, hidden=48)
    boxes, xy, types, scores = _scene(4, people=8)
    codec = PrnGridCodec(MARGIN, H, W, grid=grid)
    cell, inside = codec.point_cells(codec.affine(boxes), xy)
    for values in (np.ones(len(xy)), scores):
        flat, cells = prn_fast.peak_entries(cell, inside, types, values, K, H, W)
        with torch.no_grad():
            got = prn_fast.hidden_activations(prn, flat, cells, len(boxes), 1.0, grid)
            folded = prn_fast.folded_first_layer(prn, 1.0, "cpu", grid)
            b, i = np.divmod(flat, K * H * W)
            rows = folded[torch.from_numpy(i)] * torch.from_numpy(cells)[:, None]
            first = prn.first_layer.bias.detach().expand(len(boxes), -1).clone()
            first.index_add_(0, torch.from_numpy(b), rows)
            assert torch.equal(got, prn.mlp[1:-2](first))
            grids = torch.from_numpy(codec.encode(boxes, xy, types, values if values is scores else None, K))
            torch.testing.assert_close(got, prn.mlp[:-2](grids.flatten(1)), rtol=1e-4, atol=1e-3)
        assert len(flat) > 100 and (np.bincount(b, minlength=len(boxes)) > 0).all()


def test_timed_parts_split_the_fast_path_and_cost_nothing_outside():
    from posenet.inference.prn_fast import PARTS, timed_parts

    prn = _prn("structured", 0)
    boxes, xy, types, scores = _scene(0)
    some = types > 1  # no peak of types 0 and 1: those keypoints fall back
    xy, types, scores = xy[some], types[some], scores[some]
    plain = prn_assign(prn, boxes, xy, types, scores, K)
    assert (plain[1][:, :2] == 0).all() and (plain[1] > 0).any()
    with timed_parts() as times:
        timed = prn_assign(prn, boxes, xy, types, scores, K)
        once = dict(times)
        prn_assign(prn, boxes, xy, types, scores, K)
    assert set(times) == set(PARTS) and all(once[part] > 0 for part in PARTS), once
    assert all(times[part] > once[part] for part in PARTS)  # summed over the calls in the block
    np.testing.assert_array_equal(timed[0], plain[0])
    np.testing.assert_array_equal(timed[1], plain[1])
    after = dict(times)
    prn_assign(prn, boxes, xy, types, scores, K)
    assert times == after  # the block is over: nothing more is added


def test_the_decode_benchmark_splits_the_default_decoding():
    """``decode_parts``: every part of one crowd's decoding is timed, the PRN's int8 path."""
    from posenet.bench.decode import SPLIT, crowd_network_output, decode_parts
    from posenet.inference.predictor import Predictor

    cfg = load_config(REPO / "configs/synthetic_small.yaml",
                      ["model.pretrained=none", "model.fpn_channels=16", "model.subnet_channels=16",
                       "model.fuse_channels=16", "detection.fpn_channels=16", "prn.hidden=32"])
    torch.manual_seed(0)
    predictor = Predictor.from_config(cfg, build.posenet_model(cfg, K, detection=True, prn=True))
    assert grouping_from_config(cfg, "prn").precision == "int8"
    parts = decode_parts(predictor, crowd_network_output(predictor, 12, 256), repeats=3, warmup=1)
    assert parts["runs"] == 3 and set(SPLIT) <= set(parts)
    assert all(parts[part] > 0 for part in SPLIT if part != "rest") and parts["total"] > parts["products"]
    assert 0 < parts["cpu"] <= 1.05 * parts["total"] + 0.1
