"""The affine geometry of the data pipeline (posenet/data/transforms.py) and the mask warp."""
import math

import cv2
import numpy as np
import pytest

from posenet.codecs.heatmap import KeypointHeatmapCodec
from posenet.data import COCO_PERSON
from posenet.data.targets import grid_masks
from posenet.data.transforms import (
    RandomAffine,
    compose,
    crop_matrix,
    fit_matrix,
    grid_matrix,
    hflip,
    invert,
    linear_scale,
    resampling,
    rotation,
    scaling,
    transform_boxes,
    transform_keypoints,
    transform_points,
    translation,
    warp_image,
)


def _random_matrix(rng):
    return crop_matrix(
        rng.uniform(0, 600, 2), rng.uniform(0.2, 3.0), rng.uniform(-180, 180), (480, 320),
        rng.uniform(-40, 40, 2), bool(rng.integers(2)),
    )


def test_invert_is_exact():
    rng = np.random.default_rng(0)
    for _ in range(50):
        m = _random_matrix(rng)
        inv = invert(m)
        np.testing.assert_allclose(compose(m, inv), np.eye(3)[:2], atol=1e-12)
        np.testing.assert_allclose(compose(inv, m), np.eye(3)[:2], atol=1e-12)
        pts = rng.uniform(-100, 700, (20, 2))
        np.testing.assert_allclose(transform_points(inv, transform_points(m, pts)), pts, atol=1e-9)
        np.testing.assert_allclose(inv, cv2.invertAffineTransform(m), atol=1e-12)
    with pytest.raises(ValueError, match="not invertible"):
        invert(np.zeros((2, 3)))


def test_compose_applies_the_last_matrix_first():
    m = compose(translation(10, 20), scaling(2.0))
    np.testing.assert_allclose(transform_points(m, [[1.0, 1.0]]), [[12.0, 22.0]])
    assert linear_scale(compose(scaling(2.0), rotation(33.0))) == pytest.approx(2.0)


def test_crop_matrix_puts_the_centre_at_the_crop_centre_and_flip_mirrors():
    H, W = 480, 320
    m = crop_matrix((100.0, 50.0), 1.5, 30.0, (H, W), jitter=(7.0, -3.0))
    np.testing.assert_allclose(transform_points(m, [[100.0, 50.0]]), [[(W - 1) / 2 + 7, (H - 1) / 2 - 3]])
    assert linear_scale(m) == pytest.approx(1.5)
    flipped = crop_matrix((100.0, 50.0), 1.5, 30.0, (H, W), jitter=(7.0, -3.0), flip=True)
    np.testing.assert_allclose(flipped, compose(hflip(W), m))
    p = np.array([[120.0, 80.0]])
    a, b = transform_points(m, p)[0], transform_points(flipped, p)[0]
    assert b[0] == pytest.approx(W - 1 - a[0]) and b[1] == pytest.approx(a[1])


def test_fit_matrix_maps_the_image_area_onto_the_input():
    m = fit_matrix((480, 640), (480, 480))  # height, width
    assert linear_scale(m) == pytest.approx(0.75)
    # The image spans [-0.5, w - 0.5) in the point frame; its edges land on the input's edges.
    np.testing.assert_allclose(transform_points(m, [[-0.5, -0.5], [639.5, 479.5]]), [[-0.5, -0.5], [479.5, 359.5]])
    tall = fit_matrix((800, 200), (480, 480))
    np.testing.assert_allclose(transform_points(tall, [[199.5, 799.5]]), [[119.5, 479.5]])


def test_grid_matrix_uses_the_codec_grid():
    codec = KeypointHeatmapCodec((480, 480), stride=4)
    m = crop_matrix((300.0, 200.0), 0.9, 12.0, (480, 480))
    pts = np.random.default_rng(1).uniform(0, 640, (10, 2))
    np.testing.assert_allclose(
        transform_points(grid_matrix(m, 4), pts), codec.to_grid(transform_points(m, pts)), atol=1e-9
    )
    # Reduced decoding: pixel i of a 1/2-size image is centred between full pixels 2i and 2i+1.
    np.testing.assert_allclose(transform_points(resampling(2), [[0.0, 3.0]]), [[0.5, 6.5]])


def test_transform_boxes_enclose_clip_and_drop():
    boxes = np.array([[10, 20, 50, 100], [0, 0, 10, 10], [300, 300, 320, 320], [95, 5, 140, 30]], float)
    m = translation(-5, 0)
    out, keep = transform_boxes(m, boxes, (100, 100))
    assert keep.tolist() == [True, True, False, True]
    np.testing.assert_allclose(out, [[5, 20, 45, 100], [0, 0, 5, 10], [90, 5, 100, 30]])
    # Mirroring a width-100 crop: [x1, x2] -> [100 - x2, 100 - x1] in the pixel-edge frame.
    out, _ = transform_boxes(hflip(100), boxes[:1], (100, 100))
    np.testing.assert_allclose(out, [[50, 20, 90, 100]])
    # A 90-degree turn about the centre of a 101x101 crop maps the box onto its rotated copy.
    m = compose(translation(50, 50), rotation(90), translation(-50, -50))
    out, _ = transform_boxes(m, [[40.5, 30.5, 60.5, 40.5]], (101, 101))
    np.testing.assert_allclose(out, [[30.5, 40.5, 40.5, 60.5]], atol=1e-9)
    # A 45-degree turn: the enclosing box of the turned corners.
    m = compose(translation(50, 50), rotation(45), translation(-50, -50))
    out, _ = transform_boxes(m, [[40.5, 40.5, 60.5, 60.5]], (101, 101))
    half = 10 * math.sqrt(2)
    np.testing.assert_allclose(out, [[50.5 - half, 50.5 - half, 50.5 + half, 50.5 + half]], atol=1e-9)
    # A box that shrinks below min_size after clipping is dropped.
    out, keep = transform_boxes(np.eye(3)[:2], [[99.5, 0, 120, 50]], (100, 100), min_size=1.0)
    assert out.shape == (0, 4) and keep.tolist() == [False]


def test_transform_keypoints_swaps_left_and_right_and_zeroes_the_outside():
    kps = np.zeros((1, 17, 3))
    kps[0, 9] = (10, 20, 2)  # left_wrist
    kps[0, 10] = (30, 20, 1)  # right_wrist
    kps[0, 0] = (150, 20, 2)  # nose, leaves a 100-wide crop
    out = transform_keypoints(hflip(100), kps, (100, 100), COCO_PERSON.flip_index)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 10], (89, 20, 2))  # left wrist mirrored -> right_wrist
    np.testing.assert_allclose(out[0, 9], (69, 20, 1))
    assert out[0, 0, 2] == 0
    assert (out[0, 1:9, 2] == 0).all()
    # Without a flip index the channels stay, only the coordinates move.
    out = transform_keypoints(hflip(100), kps, (100, 100))
    np.testing.assert_allclose(out[0, 9], (89, 20, 2))


def test_random_affine_draws_are_reproducible_and_flip_only_mirrors():
    aug = RandomAffine((480, 480), flip_prob=0.0)
    boxes = np.array([[100, 50, 200, 350], [300, 300, 340, 380]], float)
    np.random.seed(3)
    a = aug.sample((480, 640), boxes)
    np.random.seed(3)
    b = aug.sample((480, 640), boxes)
    np.testing.assert_array_equal(a.matrix, b.matrix)
    np.random.seed(3)
    c = RandomAffine((480, 480), flip_prob=1.0).sample((480, 640), boxes)
    assert not a.flipped and c.flipped
    np.testing.assert_allclose(c.matrix, compose(hflip(480), a.matrix))


def test_random_affine_ranges_and_person_size_reference():
    aug = RandomAffine((480, 480), scale_range=(0.8, 1.2), max_rotation=40, center_jitter=40, flip_prob=0.5)
    box = np.array([[100.0, 50.0, 200.0, 350.0]])  # longer side 300 px
    ref = 0.6 * 480 / 300
    np.random.seed(0)
    draws = [aug.sample((480, 640), box) for _ in range(400)]
    scales = np.array([d.scale for d in draws]) / ref
    rots = np.array([d.rotation for d in draws])
    assert 0.8 <= scales.min() < 0.85 and 1.15 < scales.max() <= 1.2
    assert -40 <= rots.min() < -35 and 35 < rots.max() <= 40
    assert 0.4 < np.mean([d.flipped for d in draws]) < 0.6
    for d in draws:  # the box centre lands within the jitter of the crop centre
        centre = transform_points(d.matrix, [[149.5, 199.5]])[0]
        if d.flipped:
            centre[0] = 479 - centre[0]
        assert np.all(np.abs(centre - 239.5) <= 40 + 1e-9)
    # No person: the image centre at the scale that fits the image into the crop.
    assert aug.reference((480, 640)) == ((319.5, 239.5), 0.75)
    # A tiny person is enlarged at most zoom_limits[1] times the fitting scale, a huge one
    # shrunk to no less than zoom_limits[0] times it.
    assert aug.reference((480, 640), [0, 0, 5, 10])[1] == pytest.approx(0.75 * 4.0)
    assert aug.reference((480, 640), [0, 0, 2000, 100])[1] == pytest.approx(0.75 * 0.5)


def test_warp_image_agrees_with_transform_points():
    """A bright disc's centroid after the warp is where the matrix sends its centre."""
    image = np.zeros((300, 400), np.uint8)
    centre = np.array([237.25, 141.5])
    cv2.circle(image, (int(round(centre[0] * 16)), int(round(centre[1] * 16))), 16 * 12, 255, -1,
               lineType=cv2.LINE_AA, shift=4)
    m = crop_matrix((200.0, 150.0), 0.7, 25.0, (256, 256), jitter=(5.0, -9.0), flip=True)
    out = warp_image(image, m, (256, 256)).astype(np.float64)
    ys, xs = np.mgrid[: out.shape[0], : out.shape[1]]
    found = np.array([(out * xs).sum(), (out * ys).sum()]) / out.sum()
    np.testing.assert_allclose(found, transform_points(m, centre[None])[0], atol=0.1)


def test_warp_image_keeps_an_enlarged_image_exact_up_to_its_edge():
    tiny = np.full((2, 3), 50, np.uint8)
    m = fit_matrix((2, 3), (96, 96))  # x 32: the image covers rows 0..63 of the output
    out = warp_image(tiny, m, (96, 96), border_value=200)
    assert (out[:64] == 50).all()
    # Beyond the edge: the replicated pixel's half, then the blend into the border over one
    # source pixel (32 output pixels).
    assert (out[64:80] == 50).all() and (np.diff(out[80:, 0].astype(int)) > 0).all() and out[95, 0] < 200
    # Shrinking needs no extension: the edge blends within one output pixel.
    big = np.full((200, 300), 50, np.uint8)
    out = warp_image(big, fit_matrix((200, 300), (96, 96)), (96, 96), border_value=200)
    assert (out[:63] == 50).all() and (out[65:] == 200).all()


def test_grid_masks_sample_the_cell_centres():
    regions = np.zeros((48, 64, 2), np.uint8)
    regions[8:24, 8:24, 0] = 255  # an ignored block
    regions[8:40, 32:48, 1] = 255  # a person
    ignore, seg = grid_masks(regions, np.eye(3)[:2], (12, 16), stride=4)
    assert ignore.shape == seg.shape == (1, 12, 16) and ignore.dtype == seg.dtype == np.float32
    expected_ignore = np.ones((12, 16), np.float32)
    expected_ignore[2:6, 2:6] = 0  # cells whose centres 4j + 1.5 lie in [8, 24)
    np.testing.assert_array_equal(ignore[0], expected_ignore)
    expected_seg = np.zeros((12, 16), np.float32)
    expected_seg[2:10, 8:12] = 1
    np.testing.assert_array_equal(seg[0], expected_seg)
    ignore, seg = grid_masks(None, np.eye(3)[:2], (12, 16))
    assert ignore.min() == 1 and seg.max() == 0
