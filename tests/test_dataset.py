"""The keypoint-stage dataset (posenet/data/dataset.py) on coco-mini and on hand-written COCO files."""
import json

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from _codec_helpers import highest_peak
from posenet.codecs.heatmap import KeypointHeatmapCodec
from posenet.data import COCO_PERSON
from posenet.data.coco import CocoPersons
from posenet.data.dataset import CocoKeypointDataset, collate
from posenet.data.transforms import fit_matrix, grid_matrix, invert, transform_boxes, transform_points
from posenet.engine.loader import BadSample, SeededDataset
from posenet.errors import DataError
from posenet.models.keypoint_head import KeypointSubnet

# pycocotools' compiled decode (annToMask) trips a numpy 2 deprecation warning on every call.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

K = COCO_PERSON.num_keypoints
FLIP = COCO_PERSON.flip_index
MEAN_RGB = (124, 116, 104)  # round(255 * ImageNet mean): the padding colour


# ------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def mini_train(coco_mini):
    return CocoPersons(coco_mini, "train2017")


@pytest.fixture(scope="module")
def mini_val(coco_mini):
    return CocoPersons(coco_mini, "val2017")


def _indices(persons, keep):
    return [i for i, image_id in enumerate(persons.image_ids) if keep(persons.annotations(image_id))]


def _single_person(anns):
    return sum(1 for a in anns if not a["iscrowd"] and a["num_keypoints"] > 0) == 1


def _has_ignored_region(anns):
    return any(a["iscrowd"] or a["num_keypoints"] == 0 for a in anns)


def _sample(dataset, index, seed):
    np.random.seed(seed)
    return dataset[index]


def _cell_reference(mask, matrix, grid_size, stride=4, margin=0.0):
    """``mask`` (full resolution) at the nearest pixel of each cell centre of the crop's grid;
    0 where the centre is outside the image, or more than ``margin`` pixels beyond its edge."""
    h, w = grid_size
    H, W = mask.shape
    ys, xs = np.mgrid[:h, :w]
    src = transform_points(invert(grid_matrix(matrix, stride)), np.stack([xs, ys], -1).astype(float))
    x, y = src[..., 0], src[..., 1]
    lo = -0.5 - margin
    inside = (x >= lo) & (x < W - 0.5 + margin) & (y >= lo) & (y < H - 0.5 + margin)
    ix = np.round(x[inside]).astype(int).clip(0, W - 1)
    iy = np.round(y[inside]).astype(int).clip(0, H - 1)
    out = np.zeros((h, w), np.uint8)
    out[inside] = mask[iy, ix]
    return out


def _dilate(m):
    return cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8))


def _erode(m):
    return cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)


def _uncompressed_rle(mask):
    """COCO's uncompressed RLE (as crowd annotations store it): column-major run lengths from 0s."""
    flat = np.asarray(mask, np.uint8).flatten(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v != value:
            counts.append(run)
            value, run = v, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def _write_coco(root, images, annotations, split="val2017"):
    """A COCO person-keypoint dataset: ``images`` are (id, file name, array or bytes[, (h, w)])."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(exist_ok=True)
    entries = []
    for image_id, name, content, *size in images:
        path = root / split / name
        if isinstance(content, bytes):
            path.write_bytes(content)
            h, w = size[0]
        else:
            assert cv2.imwrite(str(path), content)
            h, w = size[0] if size else content.shape[:2]
        entries.append({"id": image_id, "file_name": name, "width": w, "height": h})
    anns = [{"id": i + 1, "category_id": 1, "iscrowd": 0, **a} for i, a in enumerate(annotations)]
    data = {"images": entries, "annotations": anns, "categories": [COCO_PERSON.coco_category()]}
    (root / "annotations" / f"person_keypoints_{split}.json").write_text(json.dumps(data))
    return CocoPersons(root, split)


def _person(image_id, points, bbox, segmentation=None):
    kps = np.zeros((K, 3))
    for k, (x, y) in points.items():
        kps[k] = (x, y, 2)
    x, y, w, h = bbox
    seg = segmentation or [[x, y, x + w, y, x + w, y + h, x, y + h]]
    return {"image_id": image_id, "keypoints": kps.ravel().tolist(), "num_keypoints": len(points),
            "bbox": list(bbox), "area": w * h, "segmentation": seg}


# ------------------------------------------------------------------ training geometry


def test_training_keypoints_decode_back_to_the_annotations(mini_train):
    """Random augmentation, heatmap targets, codec decode, inverse matrix: within 2 px."""
    ds = CocoKeypointDataset(mini_train, 480, train=True)
    codec = ds.codec
    indices = _indices(mini_train, _single_person)
    assert len(indices) >= 10
    checked, flips = 0, 0
    for seed in range(3):
        for index in indices:
            image, target = _sample(ds, index, 1000 * seed + index)
            meta = target["meta"]
            ann = next(a for a in mini_train.annotations(meta["image_id"]) if not a["iscrowd"] and a["num_keypoints"])
            kps = np.asarray(ann["keypoints"], float).reshape(K, 3)
            coords, _ = highest_peak(codec, target["heatmaps"])
            back = transform_points(meta["inverse"], coords.numpy().astype(float))
            at = transform_points(meta["matrix"], kps[:, :2])
            flips += meta["flipped"]
            for k in range(K):
                channel = FLIP[k] if meta["flipped"] else k
                x, y = at[k]
                if kps[k, 2] == 0 or not (8 <= x <= 471 and 8 <= y <= 471):
                    assert kps[k, 2] > 0 or target["heatmaps"][channel].max() == 0
                    continue
                assert np.hypot(*(back[channel] - kps[k, :2])) < 2.0, (meta["image_id"], k)
                checked += 1
            # The keypoints target is exact: it maps back to the annotation.
            rows = [r for r in target["keypoints"] if (r[:, 2] > 0).any()]
            if not rows:
                continue
            (row,) = rows
            v = row[:, 2].numpy() > 0
            src = transform_points(meta["inverse"], row[:, :2].numpy().astype(float))[v]
            expected = kps[FLIP if meta["flipped"] else np.arange(K)][v, :2]
            np.testing.assert_allclose(src, expected, atol=1e-3)
    assert checked > 200 and 0 < flips < 3 * len(indices)


def test_flip_moves_left_keypoints_to_the_right_channels(mini_train):
    left_wrist, right_wrist = COCO_PERSON.names.index("left_wrist"), COCO_PERSON.names.index("right_wrist")
    plain = CocoKeypointDataset(mini_train, 480, train=True, flip_prob=0.0)
    mirrored = CocoKeypointDataset(mini_train, 480, train=True, flip_prob=1.0)
    codec = plain.codec
    tested = 0
    for index in _indices(mini_train, _single_person):
        for seed in range(4):
            image_a, a = _sample(plain, index, seed)
            image_b, b = _sample(mirrored, index, seed)
            if a["heatmaps"][left_wrist].max() < 0.99:
                continue
            xy_a, _ = highest_peak(codec, a["heatmaps"][left_wrist : left_wrist + 1])
            xy_b, _ = highest_peak(codec, b["heatmaps"][right_wrist : right_wrist + 1])
            assert xy_b[0, 0] == pytest.approx(479 - xy_a[0, 0], abs=0.05)
            assert xy_b[0, 1] == pytest.approx(xy_a[0, 1], abs=0.05)
            # The whole sample is the mirror image, with left and right channels swapped.
            torch.testing.assert_close(b["heatmaps"][FLIP], a["heatmaps"].flip(-1), atol=1e-5, rtol=0)
            assert (image_b.float() - image_a.flip(-1).float()).abs().mean() < 1.0
            for key in ("segmentation", "ignore_mask"):
                assert (b[key] != a[key].flip(-1)).float().mean() < 0.01
            tested += 1
            break
    assert tested >= 5


def test_boxes_move_with_the_keypoints(mini_train):
    ds = CocoKeypointDataset(mini_train, 480, train=True)
    straight = CocoKeypointDataset(mini_train, 480, train=True, max_rotation=0.0)
    indices = _indices(mini_train, lambda anns: any(not a["iscrowd"] for a in anns))
    inside_checked = 0
    for dataset in (ds, straight):
        for index in indices:
            _, target = _sample(dataset, index, index)
            meta = target["meta"]
            anns = [a for a in mini_train.annotations(meta["image_id"]) if not a["iscrowd"]]
            boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)])
            expected, keep = transform_boxes(meta["matrix"], boxes, (480, 480))
            np.testing.assert_allclose(target["boxes"].numpy(), expected, atol=1e-4)
            assert len(target["keypoints"]) == len(target["boxes"])
            kept = [a for a, k in zip(anns, keep) if k]
            for ann, box, kps_t in zip(kept, target["boxes"].numpy(), target["keypoints"].numpy()):
                kps = np.asarray(ann["keypoints"], float).reshape(K, 3)
                x1, y1, w, h = ann["bbox"]
                src = kps[FLIP] if meta["flipped"] else kps
                for (x, y, v), (xs, ys, vs) in zip(kps_t, src):
                    # A keypoint inside its person's box stays inside the transformed box.
                    if v > 0 and x1 <= xs + 0.5 <= x1 + w and y1 <= ys + 0.5 <= y1 + h:
                        assert box[0] - 1e-3 <= x + 0.5 <= box[2] + 1e-3 and box[1] - 1e-3 <= y + 0.5 <= box[3] + 1e-3
                        inside_checked += 1
                        if dataset is straight:  # without rotation, relative positions are kept
                            fx = (xs + 0.5 - x1) / w
                            if meta["flipped"]:
                                fx = 1 - fx
                            if box[0] > 0 and box[2] < 480:
                                assert (x + 0.5 - box[0]) / (box[2] - box[0]) == pytest.approx(fx, abs=1e-3)
    assert inside_checked > 200


# ------------------------------------------------------------------ masks


@pytest.mark.parametrize("train", [False, True])
def test_ignore_mask_and_segmentation_follow_the_annotations(mini_train, train):
    ds = CocoKeypointDataset(mini_train, 480, train=train)
    coco = mini_train.coco
    indices = _indices(mini_train, _has_ignored_region)
    assert any(any(a["iscrowd"] for a in mini_train.annotations(mini_train.image_ids[i])) for i in indices)
    ignored_cells = 0
    for index in indices:
        _, target = _sample(ds, index, index)
        meta = target["meta"]
        anns = mini_train.annotations(meta["image_id"])
        h, w = meta["original_size"]
        ignored = np.zeros((h, w), np.uint8)
        persons = np.zeros((h, w), np.uint8)
        for a in anns:
            m = coco.annToMask(a)
            if a["iscrowd"] or a["num_keypoints"] == 0:
                ignored |= m
            if not a["iscrowd"]:
                persons |= m
        def cells(m, margin=0.0):
            return _cell_reference(m, meta["matrix"], (120, 120), margin=margin)

        ref_ignore, ref_person = cells(ignored), cells(persons)
        ignore = target["ignore_mask"][0].numpy()
        seg = target["segmentation"][0].numpy()
        assert set(np.unique(ignore)) <= {0.0, 1.0} and set(np.unique(seg)) <= {0.0, 1.0}
        # The bilinear warp reads the pixels within one pixel of a cell centre (the 3x3 around
        # its nearest pixel, up to half a pixel beyond the image's edge): 0 on every cell of a
        # crowd region or unannotated person, 1 where none of those is that near.
        assert (ignore[ref_ignore == 1] == 0).all()
        assert (cells(_dilate(ignored), margin=0.5)[ignore == 0] == 1).all()
        ignored_cells += int((ignore == 0).sum())
        # The segmentation is the union of the persons, except where its border is near.
        border = cells(_dilate(persons), margin=0.5) != cells(_erode(persons))
        assert ((seg != ref_person) <= border).all()
        if ref_person.sum() > 50:
            assert (seg * ref_person).sum() / max(ref_person.sum(), 1) > 0.8
    assert ignored_cells > 500


@pytest.mark.parametrize("compressed", [False, True])
def test_handwritten_crowd_rle_and_unannotated_person(tmp_path, compressed):
    """Known regions on a 64x48 image, identity geometry (48x64 input): the exact cells."""
    image = np.full((48, 64, 3), 90, np.uint8)
    crowd = np.zeros((48, 64), np.uint8)
    crowd[8:24, 8:24] = 1
    if compressed:
        rle = mask_utils.encode(np.asfortranarray(crowd))
        rle = {"size": rle["size"], "counts": rle["counts"].decode()}
    else:
        rle = _uncompressed_rle(crowd)
    anns = [
        _person(1, {0: (20, 38), 9: (50, 40)}, (8, 32, 48, 12)),
        {**_person(1, {}, (40, 8, 16, 16)), "num_keypoints": 0},
        {"image_id": 1, "iscrowd": 1, "bbox": [8, 8, 16, 16], "area": 256, "segmentation": rle,
         "keypoints": [0] * 3 * K, "num_keypoints": 0},
    ]
    persons = _write_coco(tmp_path, [(1, "a.png", image)], anns)
    ds = CocoKeypointDataset(persons, (48, 64), train=False)
    image_t, target = ds[0]
    np.testing.assert_allclose(target["meta"]["matrix"], np.eye(3)[:2], atol=1e-12)
    # Cell j samples pixels 4j+1 and 4j+2: the region [8, 24) covers cells 2..5.
    expected_ignore = np.ones((12, 16), np.float32)
    expected_ignore[2:6, 2:6] = 0  # crowd
    expected_ignore[2:6, 10:14] = 0  # person without keypoints, x in [40, 56)
    np.testing.assert_array_equal(target["ignore_mask"][0].numpy(), expected_ignore)
    expected_seg = np.zeros((12, 16), np.float32)
    expected_seg[8:11, 2:14] = 1  # the person with keypoints, y in [32, 44)
    expected_seg[2:6, 10:14] = 1  # the person without keypoints is a person too
    np.testing.assert_array_equal(target["segmentation"][0].numpy(), expected_seg)
    np.testing.assert_allclose(target["boxes"].numpy(), [[8, 32, 56, 44], [40, 8, 56, 24]])
    np.testing.assert_allclose(target["crowd_boxes"].numpy(), [[8, 8, 24, 24]])
    coords, scores = highest_peak(ds.codec, target["heatmaps"])
    assert scores[0] > 0.9 and scores[9] > 0.9 and scores[1] == 0
    np.testing.assert_allclose(coords[[0, 9]].numpy(), [[20, 38], [50, 40]], atol=0.05)
    assert (image_t[:, :48, :64] == 90).all()


# ------------------------------------------------------------------ validation


def test_validation_is_deterministic_and_its_inverse_is_exact(mini_val):
    ds = CocoKeypointDataset(mini_val, 480, train=False)
    indices = _indices(mini_val, lambda anns: any(a["num_keypoints"] for a in anns))[:12]
    checked = 0
    for index in indices:
        image_a, a = _sample(ds, index, 1)
        image_b, b = _sample(ds, index, 2)
        assert torch.equal(image_a, image_b)
        for key in ("heatmaps", "segmentation", "ignore_mask", "boxes", "keypoints", "crowd_boxes"):
            assert torch.equal(a[key], b[key]), key
        meta = a["meta"]
        h, w = meta["original_size"]
        assert not meta["flipped"]
        np.testing.assert_allclose(meta["matrix"], fit_matrix((h, w), (480, 480)))
        np.testing.assert_allclose(meta["inverse"], invert(meta["matrix"]))
        s = 480 / max(h, w)
        # Exactly the annotations, back through the inverse.
        anns = [x for x in mini_val.annotations(meta["image_id"]) if not x["iscrowd"]]
        kps_t = a["keypoints"].numpy()
        assert len(kps_t) == len(anns)
        for ann, row in zip(anns, kps_t):
            kps = np.asarray(ann["keypoints"], float).reshape(K, 3)
            v = row[:, 2] > 0
            np.testing.assert_array_equal(v, kps[:, 2] > 0)
            back = transform_points(meta["inverse"], row[v, :2].astype(float))
            np.testing.assert_allclose(back, kps[v, :2], atol=1e-3)
            checked += int(v.sum())
        # Padding at the bottom or right, in the mean colour.
        pad_rows, pad_cols = int(np.ceil(s * h)) + 1, int(np.ceil(s * w)) + 1
        rgb = torch.tensor(MEAN_RGB, dtype=torch.uint8).view(3, 1, 1)
        assert (image_a[:, pad_rows:, :] == rgb).all() and (image_a[:, :, pad_cols:] == rgb).all()
    assert checked > 50


def test_reduced_decode_keeps_the_geometry(tmp_path):
    """A 1600x1200 JPEG decoded at 1/4 (validation) or 1/2 (training) resolution lands where
    the matrix says: a white disc's centroid is at the matrix image of its centre."""
    centre = np.array([1000.25, 700.5])
    image = np.zeros((1200, 1600, 3), np.uint8)
    cv2.circle(image, tuple(int(round(c * 16)) for c in centre), 16 * 40, (255, 255, 255), -1, cv2.LINE_AA, shift=4)
    ann = _person(1, {0: tuple(centre)}, (600, 400, 800, 600))
    persons = _write_coco(tmp_path, [(1, "big.jpg", image)], [ann])

    def disc_centroid(image_t, at):
        gray = image_t.float().mean(0).numpy()
        x0, y0 = (int(round(v)) - 20 for v in at)
        win = gray[y0 : y0 + 41, x0 : x0 + 41]
        win = np.where(win > 128, win, 0.0)
        ys, xs = np.mgrid[y0 : y0 + 41, x0 : x0 + 41]
        return np.array([(win * xs).sum(), (win * ys).sum()]) / win.sum()

    for train, size, factor in ((False, 256, 4), (True, 480, 2)):
        images = []
        for reduced in (True, False):
            ds = CocoKeypointDataset(persons, size, train=train, reduced_decode=reduced)
            image_t, target = _sample(ds, 0, 7)
            meta = target["meta"]
            assert meta["decode_factor"] == (factor if reduced else 1)
            at = transform_points(meta["matrix"], centre[None])[0]
            np.testing.assert_allclose(disc_centroid(image_t, at), at, atol=0.3)
            coords, _ = highest_peak(ds.codec, target["heatmaps"])
            channel = FLIP[0] if meta["flipped"] else 0
            back = transform_points(meta["inverse"], coords[channel].numpy().astype(float)[None])[0]
            assert np.hypot(*(back - centre)) < 2.0
            images.append(image_t.float())
        assert (images[0] - images[1]).abs().mean() < 3.0


# ------------------------------------------------------------------ odd images, bad files, batches


def test_grayscale_rgba_and_tiny_images(tmp_path):
    gray = np.tile(np.linspace(0, 255, 80).astype(np.uint8), (60, 1))
    rgba = np.zeros((40, 50, 4), np.uint8)
    rgba[..., 1] = 200
    rgba[..., 3] = 255
    tiny = np.full((2, 3, 3), 50, np.uint8)
    images = [(1, "gray.jpg", gray), (2, "rgba.png", rgba), (3, "tiny.png", tiny), (4, "empty.jpg", gray)]
    anns = [
        _person(1, {0: (40, 30), 5: (20, 50)}, (10, 10, 50, 45)),
        _person(2, {0: (25, 20)}, (5, 5, 40, 30)),
        _person(3, {0: (1, 1)}, (0, 0, 3, 2)),
    ]
    persons = _write_coco(tmp_path, images, anns)
    for train in (True, False):
        ds = CocoKeypointDataset(persons, 96, train=train)
        for index in range(len(ds)):
            image_t, target = _sample(ds, index, index)
            assert image_t.shape == (3, 96, 96) and image_t.dtype == torch.uint8
            assert target["heatmaps"].shape == (K, 24, 24)
            assert torch.isfinite(target["heatmaps"]).all()
    # Validation: the grayscale image (80x60, scaled by 1.2) becomes three equal channels.
    ds = CocoKeypointDataset(persons, 96, train=False)
    gray_t, _ = ds[0]
    content = gray_t[:, 1:70, 1:95]  # the outermost rows and columns blend with the padding
    assert torch.equal(content[0], content[1]) and torch.equal(content[1], content[2])
    assert content[0, :, 0].float().mean() < 10 and content[0, :, -1].float().mean() > 245
    # The tiny image is enlarged to fill the input; its keypoint decodes back.
    image_t, target = ds[2]
    assert (image_t[:, :60, :90].float() - 50).abs().max() <= 1
    coords, _ = highest_peak(ds.codec, target["heatmaps"])
    back = transform_points(target["meta"]["inverse"], coords[0].numpy().astype(float)[None])[0]
    np.testing.assert_allclose(back, [1, 1], atol=0.1)
    # The RGBA image's green survives as green (RGB order).
    rgba_t, _ = ds[1]
    assert rgba_t[1, 5, 5] == 200 and rgba_t[0, 5, 5] == 0 and rgba_t[2, 5, 5] == 0


def test_bad_image_files_raise_data_error_naming_the_file(tmp_path):
    good = np.zeros((20, 30, 3), np.uint8)
    images = [
        (1, "corrupt.jpg", b"\xff\xd8 this is not a JPEG", (20, 30)),
        (2, "missing.jpg", good),
        (3, "wrong_size.png", good, (40, 30)),
    ]
    persons = _write_coco(tmp_path, images, [])
    (tmp_path / "val2017" / "missing.jpg").unlink()
    ds = CocoKeypointDataset(persons, 64, train=True)
    for index, name in enumerate(["corrupt.jpg", "missing.jpg", "wrong_size.png"]):
        with pytest.raises(DataError, match=name):
            ds[index]
    # The engine turns them into counted bad samples.
    bad = SeededDataset(ds, seed=0)[(0, 0)]
    assert isinstance(bad, BadSample) and "corrupt.jpg" in bad.message


def test_collate_shapes_and_dtypes_fit_the_model_loss(mini_train):
    ds = CocoKeypointDataset(mini_train, (256, 320), train=True)
    indices = _indices(mini_train, lambda anns: any(a["num_keypoints"] for a in anns))[:4]
    samples = [_sample(ds, i, i) for i in indices]
    images, targets = collate(samples)
    assert images.shape == (4, 3, 256, 320) and images.dtype == torch.uint8
    assert targets["heatmaps"].shape == (4, K, 64, 80) and targets["heatmaps"].dtype == torch.float32
    for key in ("segmentation", "ignore_mask"):
        assert targets[key].shape == (4, 1, 64, 80) and targets[key].dtype == torch.float32
    for key, width in (("boxes", (4,)), ("crowd_boxes", (4,)), ("keypoints", (K, 3))):
        assert isinstance(targets[key], list) and len(targets[key]) == 4
        assert all(t.dtype == torch.float32 and t.shape[1:] == width for t in targets[key])
    assert [m["image_id"] for m in targets["meta"]] == [mini_train.image_ids[i] for i in indices]
    assert sum(len(b) for b in targets["boxes"]) > 0
    # The dense targets are what the keypoint subnet's loss takes.
    subnet = KeypointSubnet(num_keypoints=K, in_channels=8, level_channels=8, fuse_channels=8)
    outputs = {"heatmaps": torch.zeros(4, K, 64, 80), "segmentation": torch.zeros(4, 1, 64, 80)}
    losses = subnet.compute_loss(outputs, targets)
    assert torch.isfinite(losses["loss"]) and losses["loss_heatmap"] > 0 and losses["loss_segmentation"] > 0


def test_the_engine_reseeds_augmentation_per_sample(mini_train):
    ds = SeededDataset(CocoKeypointDataset(mini_train, 128, train=True), seed=5)
    index = _indices(mini_train, _single_person)[0]
    a, b, c = ds[(0, index)], ds[(0, index)], ds[(1, index)]
    np.testing.assert_array_equal(a[1]["meta"]["matrix"], b[1]["meta"]["matrix"])
    assert torch.equal(a[0], b[0])
    assert not np.array_equal(a[1]["meta"]["matrix"], c[1]["meta"]["matrix"])
    assert KeypointHeatmapCodec((128, 128)).heatmap_size == tuple(a[1]["heatmaps"].shape[-2:])


_LOADER_SCRIPT = r"""
import json, sys, time
import cv2, numpy as np, torch
from torch.utils.data import DataLoader, Dataset
from posenet.bench.data_loading import benchmark_data, format_data_benchmark
from posenet.data.coco import CocoPersons
from posenet.data.dataset import CocoKeypointDataset

# OpenCV's pool runs, then idles: forking now and setting the thread count in the child hangs.
image = np.zeros((1500, 1500, 3), np.uint8)
cv2.warpAffine(image, np.array([[0.9, 0.1, 0.0], [-0.1, 0.9, 0.0]]), (1200, 1200))
time.sleep(0.5)
threads = cv2.getNumThreads()
dataset = CocoKeypointDataset(CocoPersons(sys.argv[1], "train2017"), 128)

class WorkerThreads(Dataset):
    def __len__(self):
        return 4
    def __getitem__(self, i):
        dataset[i]
        return cv2.getNumThreads()

seen = [t for batch in DataLoader(WorkerThreads(), batch_size=1, num_workers=2, collate_fn=list) for t in batch]
result = benchmark_data(sys.argv[1], input_size=128, workers=2, num_samples=40, batch_size=8, profile_samples=8)
result["table"] = format_data_benchmark(result)
print(json.dumps({"parent": threads, "parent_after": cv2.getNumThreads(), "workers": seen, "result": result}, default=str))
"""


def test_loader_workers_run_single_threaded_opencv_and_the_benchmark_runs(coco_mini, repo_root):
    """In a fresh interpreter (a hang must not hang the suite): workers forked after OpenCV's
    pool has run get one OpenCV thread, the parent keeps its own, and the benchmark runs."""
    import json
    import os
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", _LOADER_SCRIPT, str(coco_mini)], cwd=repo_root,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the interpreter and its loader workers
        proc.communicate()
        pytest.fail("the DataLoader with OpenCV in its workers hung")
    assert proc.returncode == 0, stderr[-3000:]
    out = json.loads(stdout.strip().splitlines()[-1])
    assert out["workers"] == [1, 1, 1, 1]
    assert out["parent_after"] == out["parent"]
    result = out["result"]
    assert result["num_samples"] == 40 and result["bad_samples"] == 0
    assert result["samples_per_s"] > 0 and result["decode_ms"] > 0 and result["targets_ms"] > 0
    assert "samples/s, DataLoader with 2 workers" in result["table"] and "| &nbsp;&nbsp;decode |" in result["table"]
    rows = [line.split("|")[1] for line in result["table"].splitlines() if line.startswith("| ")]
    assert len(rows) == len(set(rows)), rows  # each measure once
