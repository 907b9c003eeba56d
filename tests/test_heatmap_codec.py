import numpy as np
import pytest
import torch

from _codec_helpers import highest_peak
from posenet.bench.decode import crowd_scene
from posenet.codecs import KeypointHeatmapCodec
from posenet.data.keypoints import COCO_PERSON
from posenet.ops.peaks import has_compiled_peaks, peak_cells
from posenet.portable import peaks as portable_peaks

K = COCO_PERSON.num_keypoints


def full_frame_reference(keypoints, codec):
    """Slow, obvious version of ``encode``: one full-frame Gaussian per keypoint."""
    H, W = codec.heatmap_size
    ys, xs = np.mgrid[0:H, 0:W]
    cx = (xs + 0.5) * codec.stride - 0.5
    cy = (ys + 0.5) * codec.stride - 0.5
    out = np.zeros((keypoints.shape[1], H, W), np.float32)
    for person in keypoints:
        for k, (x, y, v) in enumerate(person):
            if v <= 0:
                continue
            g = np.exp(-((cx - x) ** 2 + (cy - y) ** 2) / (2 * codec.sigma**2))
            g[g < codec.truncate] = 0
            out[k] = np.maximum(out[k], g) if codec.combine == "max" else np.minimum(out[k] + g, 1)
    return out


def separated_people(rng, num_people, height, width, min_dist=32.0):
    """People whose same-type keypoints are at least ``min_dist`` apart, some on the borders."""
    kps = np.zeros((num_people, K, 3))
    kps[..., 2] = 2
    border = [(-0.5, -0.5), (width - 0.51, height - 0.51), (0.0, height / 2), (width - 1.0, 3.0)]
    for k in range(K):
        placed = []
        while len(placed) < num_people:
            if len(placed) < len(border) and k % 3 == 0:
                xy = np.array(border[len(placed)])
            else:
                xy = rng.uniform([-0.5, -0.5], [width - 0.5, height - 0.5])
            if all(np.hypot(*(xy - p)) >= min_dist for p in placed):
                placed.append(xy)
        kps[:, k, :2] = placed
    return kps


@pytest.mark.parametrize("size", [(480, 480), (333, 517)])
def test_encode_matches_full_frame_gaussians(size):
    rng = np.random.default_rng(0)
    codec = KeypointHeatmapCodec(size)
    kps = np.concatenate([rng.uniform(-40, max(size) + 40, (12, K, 2)), rng.integers(0, 3, (12, K, 1))], -1)
    heat = codec.encode(kps)
    assert heat.dtype == np.float32
    assert heat.shape == (K, -(-size[0] // 4), -(-size[1] // 4))
    np.testing.assert_allclose(heat, full_frame_reference(kps, codec), atol=1e-6)


def test_keypoint_at_a_cell_centre_peaks_at_one_in_that_cell():
    codec = KeypointHeatmapCodec((64, 64))
    j, i = 5, 9
    kps = np.zeros((1, K, 3))
    kps[0, 3] = [(j + 0.5) * 4 - 0.5, (i + 0.5) * 4 - 0.5, 1]
    heat = codec.encode(kps)
    assert heat[3, i, j] == pytest.approx(1.0)
    assert np.unravel_index(heat[3].argmax(), heat[3].shape) == (i, j)
    assert heat[3, i, j + 1] == pytest.approx(np.exp(-16 / (2 * 7.0**2)), rel=1e-5)
    assert heat.sum() == heat[3].sum()


def test_truncation():
    codec = KeypointHeatmapCodec((128, 128), truncate=0.05)
    kps = np.array([[[60.0, 61.0, 2.0]]])
    heat = codec.encode(kps)[0]
    nonzero = heat[heat > 0]
    assert nonzero.min() >= 0.05
    # Radius where the Gaussian falls to 0.05: sigma * sqrt(-2 ln 0.05) ~ 17.3 px.
    i, j = np.nonzero(heat)
    dist = np.hypot((j + 0.5) * 4 - 0.5 - 60.0, (i + 0.5) * 4 - 0.5 - 61.0)
    assert dist.max() <= 7.0 * np.sqrt(-2 * np.log(0.05)) + 1e-6
    assert (heat == 0).sum() > 0.9 * heat.size


def test_people_combine_by_max_and_sum_clips():
    size = (96, 96)
    a = np.array([[[40.0, 40.0, 1.0]]])
    b = np.array([[[50.0, 44.0, 1.0]]])
    both = np.concatenate([a, b])
    codec = KeypointHeatmapCodec(size)
    np.testing.assert_allclose(codec.encode(both), np.maximum(codec.encode(a), codec.encode(b)))
    summed = KeypointHeatmapCodec(size, combine="sum").encode(both)
    assert summed.max() == 1.0
    np.testing.assert_allclose(summed, full_frame_reference(both, KeypointHeatmapCodec(size, combine="sum")), atol=1e-6)


def test_two_close_people_give_two_peaks():
    codec = KeypointHeatmapCodec((128, 128))
    kps = np.zeros((2, K, 3))
    kps[0, 0] = [50.3, 60.0, 2]
    kps[1, 0] = [62.1, 61.7, 2]  # 12 px (3 cells) away, well inside each other's Gaussian
    peaks = codec.decode(torch.from_numpy(codec.encode(kps)))
    assert peaks.valid[0].sum() == 2 and peaks.valid[1:].sum() == 0
    found = peaks.coords[0][peaks.valid[0]].numpy()
    for xy in kps[:, 0, :2]:
        assert np.hypot(*(found - xy).T).min() < 1.0
    # The port's sum-and-clip merges them into one flat plateau of ones.
    summed = KeypointHeatmapCodec((128, 128), combine="sum").encode(kps)[0]
    assert (summed == 1.0).sum() >= 4


@pytest.mark.parametrize("size", [(480, 480), (333, 517), (96, 160)])
def test_round_trip_within_one_pixel(size):
    rng = np.random.default_rng(sum(size))
    codec = KeypointHeatmapCodec(size)
    for num_people in (1, 6):
        kps = separated_people(rng, num_people, *size)
        peaks = codec.decode(torch.from_numpy(codec.encode(kps)))
        assert torch.equal(peaks.valid.sum(-1), torch.full((K,), num_people))
        errors = []
        for k in range(K):
            found = peaks.coords[k][peaks.valid[k]].numpy()
            dist = np.linalg.norm(found[None] - kps[:, k, None, :2], axis=-1)  # (gt, found)
            errors.append(dist.min(axis=1))
        errors = np.concatenate(errors)
        assert errors.max() < 1.0 and errors.mean() < 0.1

        one = kps[:1]
        coords, scores = highest_peak(codec, torch.from_numpy(codec.encode(one)))
        assert np.linalg.norm(coords.numpy() - one[0, :, :2], axis=-1).max() < 1.0
        assert (scores > 0.5).all()


def test_unlabelled_and_far_away_keypoints_give_nothing():
    codec = KeypointHeatmapCodec((64, 80))
    kps = np.zeros((3, K, 3))
    kps[0, :, :2] = 30.0  # inside, but v = 0
    kps[1, :, :] = [-200.0, 30.0, 2.0]  # labelled, far outside
    kps[2, :, :] = [np.nan, np.nan, 2.0]
    assert not codec.encode(kps).any()
    empty = codec.encode(np.zeros((0, K, 3)))
    assert empty.shape == (K, 16, 20) and not empty.any()
    with pytest.raises(ValueError):
        codec.encode(np.zeros((K, 3)))


def test_decode_shapes_threshold_and_batch():
    codec = KeypointHeatmapCodec((64, 64), max_peaks=5)
    rng = np.random.default_rng(3)
    batch = np.stack([codec.encode(separated_people(rng, 2, 64, 64, min_dist=30)) for _ in range(3)])
    heat = torch.from_numpy(batch)
    peaks = codec.decode(heat)
    assert peaks.coords.shape == (3, K, 5, 2)
    assert peaks.scores.shape == peaks.valid.shape == (3, K, 5)
    assert torch.equal(peaks.valid.sum(-1), torch.full((3, K), 2))
    assert (peaks.scores[~peaks.valid] == 0).all()
    # Best first, and the same result image by image.
    assert (peaks.scores[..., :-1] >= peaks.scores[..., 1:]).all()
    single = codec.decode(heat[1])
    assert single.coords.shape == (K, 5, 2)
    torch.testing.assert_close(single.coords, peaks.coords[1])
    # A threshold above every peak leaves none; more peaks than cells is fine.
    assert not codec.decode(heat, threshold=1.01).valid.any()
    assert codec.decode(heat, max_peaks=10_000).scores.shape == (3, K, 16 * 16)
    coords, scores = highest_peak(codec, heat)
    assert coords.shape == (3, K, 2) and scores.shape == (3, K)
    coords, scores = highest_peak(codec, heat[0])
    assert coords.shape == (K, 2) and scores.shape == (K,)


def test_decode_accepts_network_like_output():
    """Noisy, negative, half-precision values decode without NaNs."""
    codec = KeypointHeatmapCodec((96, 96))
    torch.manual_seed(0)
    heat = (torch.randn(2, K, 24, 24) * 0.3).to(torch.bfloat16)
    peaks = codec.decode(heat)
    coords, _ = highest_peak(codec, heat)
    for c in (peaks.coords, coords):
        assert torch.isfinite(c).all()
        assert (c >= -0.5).all() and (c <= 95.5).all()


@pytest.mark.parametrize("refine", ["quarter", "none"])
def test_other_refinements_stay_within_a_cell(refine):
    codec = KeypointHeatmapCodec((128, 128), refine=refine)
    kps = separated_people(np.random.default_rng(5), 3, 128, 128)
    peaks = codec.decode(torch.from_numpy(codec.encode(kps)))
    found = peaks.coords[peaks.valid].view(K, 3, 2).numpy()
    dist = np.linalg.norm(found[:, :, None] - kps.transpose(1, 0, 2)[:, None, :, :2], axis=-1)
    assert dist.min(axis=1).max() < 4 * np.sqrt(2)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        KeypointHeatmapCodec((64, 64), combine="mean")
    with pytest.raises(ValueError):
        KeypointHeatmapCodec((64, 64), refine="dark")
    with pytest.raises(ValueError):
        KeypointHeatmapCodec((64,))
    with pytest.raises(ValueError):
        KeypointHeatmapCodec((64, 64)).decode(torch.zeros(64, 64))


def _peak_cells_by_hand(heat, threshold, max_peaks):
    """The definition, one map and one cell at a time: at or above the threshold, no NaN and
    nothing higher among the neighbours on the map; best first, equal values by index."""
    *lead, H, W = heat.shape
    maps = heat.reshape(-1, H, W)
    M = min(max_peaks, H * W)
    index, values = np.full((len(maps), M), -1), np.zeros((len(maps), M), np.float32)
    for c, m in enumerate(maps):
        found = []
        for y in range(H):
            for x in range(W):
                around = m[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2]
                if m[y, x] >= np.float32(threshold) and not np.isnan(around).any() and (around <= m[y, x]).all():
                    found.append((-m[y, x], y * W + x))
        for i, (v, cell) in enumerate(sorted(found)[:M]):
            index[c, i], values[c, i] = cell, -v
    return index.reshape(*lead, M), values.reshape(*lead, M)


def _peak_maps(seed):
    """Maps that stress the peak rule: noise, plateaus and ties (a few levels), NaN and
    infinities, one-cell-wide and one-cell-high maps."""
    rng = np.random.default_rng(seed)
    for shape in ((3, 9, 11), (2, 1, 7), (2, 6, 1), (1, 1, 1), (2, 2, 3, 4), (1, 16, 16)):
        yield rng.random(shape, dtype=np.float32)
        yield rng.integers(0, 3, shape).astype(np.float32) / 2
        special = rng.random(shape, dtype=np.float32)
        special.reshape(-1)[rng.random(special.size) < 0.15] = np.nan
        special.reshape(-1)[rng.random(special.size) < 0.1] = np.inf
        special.reshape(-1)[rng.random(special.size) < 0.1] = -np.inf
        yield special
        yield np.zeros(shape, np.float32)


def test_peak_cells_follow_the_definition_compiled_and_in_numpy():
    """The portable numpy peak finder and the compiled one (posenet._C, when built) find the
    same cells as the definition, in the same order, on random, plateau, tie, NaN and edge maps,
    at several thresholds and max_peaks."""
    finders = [lambda h, t, m: peak_cells(torch.from_numpy(h), t, m, compiled=False)]
    if has_compiled_peaks():
        finders.append(lambda h, t, m: peak_cells(torch.from_numpy(h), t, m, compiled=True))
    checked = 0
    for heat in _peak_maps(0):
        for threshold, max_peaks in ((0.0, 100), (0.5, 3), (-np.inf, 1), (0.7000000001, 1000), (2.0, 5), (0.5, 0)):
            index, values = portable_peaks.peak_cells(heat, threshold, max_peaks)
            want = _peak_cells_by_hand(heat, threshold, max_peaks)
            np.testing.assert_array_equal(index, want[0])
            np.testing.assert_array_equal(values, want[1])
            for find in finders:
                got = find(heat, threshold, max_peaks)
                np.testing.assert_array_equal(got[0].numpy(), want[0])
                np.testing.assert_array_equal(got[1].numpy(), want[1])
            checked += (index >= 0).sum()
    assert checked > 500


@pytest.mark.skipif(not has_compiled_peaks(), reason="the compiled extension (posenet._C) is not built")
def test_compiled_peak_cells_equal_numpy_on_network_like_maps():
    """Noisy crowds at every instruction set of the compiled kernel; bad input is one clear error."""
    from posenet import _C

    codec = KeypointHeatmapCodec((480, 480))
    rng = np.random.default_rng(1)
    heat = codec.encode(crowd_scene(20, 480)[0])[None] + rng.normal(0, 0.03, (2, K, 120, 120)).astype(np.float32)
    previous = _C.cpu_isa()
    try:
        for isa in ("baseline", "avx2", "avx512"):
            try:
                _C.set_cpu_isa(isa)
            except ValueError:  # this CPU lacks it
                continue
            for threshold, max_peaks in ((0.05, 20), (0.0, 500), (0.3, 2)):
                want = portable_peaks.peak_cells(heat, threshold, max_peaks)
                got = peak_cells(torch.from_numpy(heat), threshold, max_peaks, compiled=True)
                assert (want[0] >= 0).sum() > 40
                np.testing.assert_array_equal(got[0].numpy(), want[0])
                np.testing.assert_array_equal(got[1].numpy(), want[1])
    finally:
        _C.set_cpu_isa(previous)
    with pytest.raises(TypeError, match="float32"):
        torch.ops.posenet.peak_cells(torch.zeros(3, 3, dtype=torch.float64), 0.1, 2)
    with pytest.raises(ValueError, match="max_peaks"):
        torch.ops.posenet.peak_cells(torch.zeros(3, 3), 0.1, -1)
    with pytest.raises(ValueError, match="H, W"):
        torch.ops.posenet.peak_cells(torch.zeros(3), 0.1, 2)


def test_decode_on_the_cpu_is_the_portable_decoders_peaks():
    """On the CPU the codec's peaks are the portable decoder's (``heatmap_peaks``), bit for bit."""
    codec = KeypointHeatmapCodec((480, 480))
    heat = codec.encode(crowd_scene(20, 480, seed=2)[0])
    heat += np.random.default_rng(2).normal(0, 0.01, heat.shape).astype(np.float32)
    peaks = codec.decode(torch.from_numpy(heat))
    coords, scores, valid = portable_peaks.heatmap_peaks(heat, codec.stride, codec.sigma, codec.peak_threshold,
                                                         codec.max_peaks)
    assert valid.sum() > 300
    np.testing.assert_array_equal(peaks.valid.numpy(), valid)
    np.testing.assert_array_equal(peaks.scores.numpy(), scores)
    np.testing.assert_array_equal(peaks.coords.numpy(), coords)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.cuda
def test_decode_on_gpu_matches_cpu():
    codec = KeypointHeatmapCodec((128, 128))
    heat = torch.from_numpy(codec.encode(separated_people(np.random.default_rng(7), 3, 128, 128)))
    cpu = codec.decode(heat)
    gpu = codec.decode(heat.cuda())
    torch.testing.assert_close(gpu.coords.cpu(), cpu.coords)
    torch.testing.assert_close(gpu.scores.cpu(), cpu.scores)
