"""The data pipeline's faster paths give what the plain ones give, bit for bit.

* masks: an image's regions rasterised in one pycocotools call and merged once per layer
  (``PersonStore.regions``), and the layers interleaved by ``cv2.transpose`` and ``cv2.merge``
  (``decode_regions``), against each annotation rasterised and merged alone and a strided copy;
* images: the RGB planes written by ``cv2.split`` against numpy's reversed transpose;
* whole samples of coco-mini and of a small COCO-sized file through both;
* the store's build: values converted in bulk against value by value, odd values included;
* collate in a loader worker (two blocks of shared memory) against collate in this process.
"""
import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from torch.utils.data import DataLoader

import posenet.data.dataset as dataset_module
from posenet.bench.scale_file import write_scale_coco
from posenet.data import COCO_PERSON
from posenet.data.coco import CocoPersons
from posenet.data.dataset import CocoKeypointDataset, collate
from posenet.data.person_store import BOX, IGNORE, PERSON, POLYGONS, RLE, PersonStore, _read_rows
from posenet.data.targets import decode_regions, merged_rle, region_rle
from posenet.engine.loader import SeededDataset

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

K = COCO_PERSON.num_keypoints


# ------------------------------------------------------------------ the plain paths


def _plain_decode(ignore, persons, height, width):
    if ignore is None and persons is None:
        return None
    out = np.zeros((height, width, 2), dtype=np.uint8)
    for channel, rle in ((0, ignore), (1, persons)):
        if rle is not None:
            out[..., channel] = mask_utils.decode(rle)
    out *= 255
    return out


def _plain_regions(store: PersonStore, i: int):
    """Each annotation's region rasterised (and its polygons merged) alone, then each layer merged."""
    height, width = store.size(i)
    ignore, persons = [], []
    for j in range(store.region_offsets[i], store.region_offsets[i + 1]):
        kind, first = store.region_kind[j], int(store.region_first[j])
        if kind == POLYGONS:
            bounds = store.polygon_offsets[first:first + int(store.region_count[j]) + 1]
            region = "polygons", [store.coords[s:e] / store.coord_scale for s, e in zip(bounds[:-1], bounds[1:])]
        elif kind == RLE:
            counts = store.rles[store.rle_offsets[first]:store.rle_offsets[first + 1]].tobytes()
            region = "rle", {"size": [height, width], "counts": counts}
        else:
            assert kind == BOX
            region = "box", tuple(float(v) for v in store.region_boxes[first])
        rle = region_rle(region, height, width)
        if store.region_channels[j] & IGNORE:
            ignore.append(rle)
        if store.region_channels[j] & PERSON:
            persons.append(rle)
    return merged_rle(ignore), merged_rle(persons)


class PlainStore:
    """``store`` with its masks made the plain way."""

    def __init__(self, store: PersonStore):
        self.store = store

    def __getattr__(self, name):
        return getattr(self.store, name)

    def __len__(self):
        return len(self.store)

    def region_masks(self, i):
        return _plain_decode(*_plain_regions(self.store, i), *self.store.size(i))


def _plain_rgb(bgr):
    return np.ascontiguousarray(bgr.transpose(2, 0, 1)[::-1])


@pytest.fixture(scope="module")
def scale_like(tmp_path_factory):
    """A small COCO-sized file: polygons of one or two outlines, persons without keypoints, crowd RLEs."""
    root = tmp_path_factory.mktemp("scale")
    write_scale_coco(root, images=24, keypoint_persons=60, other_persons=40, crowds=12, seed=2)
    return CocoPersons(root, "train2017")


def _assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    else:
        assert a == b


# ------------------------------------------------------------------ masks and images


def test_decode_regions_equals_the_strided_copy():
    rng = np.random.default_rng(0)
    for height, width in ((1, 7), (9, 1), (37, 53), (480, 640)):
        masks = [np.asfortranarray(rng.random((height, width)) < p).astype(np.uint8) for p in (0.3, 0.0)]
        rles = [mask_utils.encode(m) for m in masks]
        for ignore, persons in ((rles[0], None), (None, rles[0]), (rles[0], rles[1]), (rles[1], rles[0]), (None, None)):
            got = decode_regions(ignore, persons, height, width)
            want = _plain_decode(ignore, persons, height, width)
            if want is None:
                assert got is None
                continue
            assert got.shape == (height, width, 2) and got.flags.c_contiguous
            _assert_same(got, want)
    with pytest.raises(ValueError, match="RLE of size"):
        decode_regions(rles[0], None, 480, 641)


@pytest.mark.parametrize("which", ["coco_mini_train", "coco_mini_val", "scale_like"])
def test_region_masks_equal_each_annotation_rasterised_alone(which, request):
    if which == "scale_like":
        persons = request.getfixturevalue("scale_like")
    else:
        persons = CocoPersons(request.getfixturevalue("coco_mini"), which.split("_")[-1] + "2017")
    store = persons.store
    kinds = set(store.region_kind.tolist())
    assert POLYGONS in kinds and (which == "coco_mini_val" or RLE in kinds)
    for i in range(len(store)):
        assert store.regions(i) == _plain_regions(store, i)  # the same RLEs, not only the same masks
        got, want = store.region_masks(i), PlainStore(store).region_masks(i)
        assert (got is None and want is None) or (got.flags.c_contiguous and np.array_equal(got, want)
                                                   and got.dtype == want.dtype)


def test_rgb_planes_equal_the_reversed_transpose():
    rng = np.random.default_rng(1)
    for shape in ((480, 480, 3), (1, 5, 3), (7, 1, 3), (33, 65, 3)):
        bgr = rng.integers(0, 256, shape, dtype=np.uint8)
        got = dataset_module._rgb_planes(bgr)
        assert got.flags.c_contiguous
        _assert_same(got, _plain_rgb(bgr))
        _assert_same(got, _plain_rgb(bgr[:, ::-1])[:, :, ::-1])  # a strided input, the same planes mirrored


@pytest.mark.parametrize("which", ["coco_mini", "scale_like"])
def test_samples_equal_the_plain_paths(which, request, monkeypatch):
    persons = (request.getfixturevalue("scale_like") if which == "scale_like"
               else CocoPersons(request.getfixturevalue("coco_mini"), "train2017"))
    indices = range(len(persons)) if which == "scale_like" else range(0, len(persons), 4)
    for train in (True, False):
        fast = CocoKeypointDataset(persons, input_size=480, train=train)
        plain = CocoKeypointDataset(persons, input_size=480, train=train)
        plain.store = PlainStore(persons.store)
        for i in indices:
            np.random.seed(100 + i)
            a = fast[i]
            with monkeypatch.context() as m:
                m.setattr(dataset_module, "_rgb_planes", _plain_rgb)
                np.random.seed(100 + i)
                b = plain[i]
            _assert_same(a, b)


# ------------------------------------------------------------------ the store's build


def _build(annotations, careful=False):
    """The store of ``annotations`` (image id -> dicts); ``careful``: every image converted value by value."""
    images = {i: {"id": i, "file_name": f"{i}.jpg", "height": 40, "width": 60} for i in annotations}
    ids = list(annotations)
    if not careful:
        return PersonStore.build(ids, images, annotations.get, K)
    rows = _read_rows(ids, images, annotations.get, K, set(range(len(ids))))
    arrays, bad = rows.arrays()
    assert not bad
    arrays["image_ids"] = np.asarray(ids, dtype=np.int64)
    return PersonStore(arrays, arrays.pop("coord_scale"), rows.person_errors, rows.region_errors)


def _person(i, bbox=(2, 3, 20, 30), keypoints=None, segmentation=None, **more):
    kps = np.zeros((K, 3))
    kps[:2] = (5 + i, 6, 2)
    return {"id": i, "image_id": 0, "category_id": 1, "iscrowd": 0, "num_keypoints": 2,
            "bbox": list(bbox) if isinstance(bbox, tuple) else bbox,
            "keypoints": kps.ravel().tolist() if keypoints is None else keypoints,
            "segmentation": [[2, 3, 22, 3, 22, 33.25, 2, 33]] if segmentation is None else segmentation, **more}


ODD = {  # image id -> its annotations; every kind of value the bulk conversion must hand back
    1: [_person(1), _person(2, bbox=(1.5, 2, 3, 4), segmentation=[[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]])],
    2: [_person(3, bbox=(1, None, 3, 4))],  # float() rejects None, numpy would make it NaN
    3: [_person(4, bbox=("1", "2.5", 3, 4)), _person(5, bbox="1234")],  # strings float() reads
    4: [_person(6, bbox=(1, "x", 3, 4)), _person(7, keypoints=[1, 2, 2] * 5)],  # the first error is the box's
    5: [_person(8, segmentation=[[1, 2, "x", 4, 5, 6]]), _person(9, segmentation={"counts": "a", "size": [9, 9]})],
    6: [_person(10, segmentation=[[1, 2, None, 4, 5, 6, 7, 8]])],  # NaN, as numpy converts None
    7: [_person(11, segmentation=[[[1, 2], [3, 4], [5, 6]] * 2])],  # nested pairs: not a flat polygon
    8: [_person(12, bbox=(1, 2, float("nan"), 4)), _person(13, bbox=None), _person(14, bbox=(1, 2))],
    9: [_person(15, keypoints=[None] + [0] * (3 * K - 1)), _person(16, keypoints="x" * (3 * K))],
    10: [{**_person(17), "iscrowd": 1, "segmentation": {"counts": [0, 5, 10], "size": [40, 60]}}],
    11: [],
}


def test_bulk_conversion_equals_converting_value_by_value():
    bulk, careful = _build(ODD), _build(ODD, careful=True)
    for key in PersonStore.ARRAYS:
        a, b = getattr(bulk, key), getattr(careful, key)
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True), key
    assert bulk.coord_scale == careful.coord_scale == 1.0  # the NaN coordinate keeps float64
    assert bulk.person_errors == careful.person_errors and bulk.region_errors == careful.region_errors
    position = {image_id: i for i, image_id in enumerate(ODD)}
    assert set(bulk.person_errors) == {position[2], position[4], position[9]}
    assert "could not convert string to float: 'x'" in bulk.person_errors[position[4]]
    assert "keypoints" in bulk.person_errors[position[9]]
    assert set(bulk.region_errors) == {position[5], position[7]}
    assert "not a flat list of numbers" in bulk.region_errors[position[7]]
    assert bulk.size(position[11]) == (40, 60) and len(bulk.people(position[11]).boxes) == 0
    np.testing.assert_array_equal(bulk.people(position[3]).boxes, [[1, 2.5, 4, 6.5], [1, 2, 4, 6]])
    assert np.isnan(bulk.people(position[8]).boxes[0]).any()


def test_clean_files_convert_in_bulk_as_value_by_value(scale_like):
    data = json.loads(scale_like.files.annotation_file.read_text())
    annotations = {img["id"]: [] for img in data["images"]}
    for a in data["annotations"]:
        annotations[a["image_id"]].append(a)
    bulk, careful = _build(annotations), _build(annotations, careful=True)
    assert bulk.coord_scale == 100.0 and bulk.keypoints.dtype == np.int16
    for key in PersonStore.ARRAYS:
        a, b = getattr(bulk, key), getattr(careful, key)
        assert a.dtype == b.dtype and np.array_equal(a, b), key


# ------------------------------------------------------------------ collate in a worker


@pytest.mark.parametrize("family", ["multiposenet", "openpose"])
def test_collate_in_a_loader_worker_equals_collate_here(coco_mini, family):
    if family == "openpose":  # pafs among the stacked targets, a background channel
        from posenet.config import build, load_config

        parts = build.openpose_parts(load_config(None, [f"data.root={coco_mini}"]))
        kwargs = dict(stride=8, parts=parts, background=True, paf_limb_width=1.0)
    else:
        kwargs = {}
    persons = CocoPersons(coco_mini, "train2017")
    dataset = SeededDataset(CocoKeypointDataset(persons, input_size=96, train=True, **kwargs), seed=3)
    keys = [(0, i) for i in range(10)]
    batches = list(DataLoader(dataset, batch_size=5, sampler=keys, num_workers=1, collate_fn=collate))
    assert len(batches) == 2
    for batch, chunk in zip(batches, (keys[:5], keys[5:])):
        here = collate([dataset[k] for k in chunk])
        _assert_same(batch[0], here[0])
        targets = batch[1]
        assert list(targets) == list(here[1])
        for key, value in here[1].items():
            if key == "meta":
                for m, n in zip(value, targets[key]):
                    assert m.keys() == n.keys() and m["image_id"] == n["image_id"]
                    np.testing.assert_array_equal(m["matrix"], n["matrix"])
            else:
                _assert_same(targets[key], value)
        stacked = ("heatmaps", "pafs", "segmentation", "ignore_mask")
        dense = [batch[0], *(targets[key] for key in stacked if key in targets)]
        assert ("pafs" in targets) == (family == "openpose")
        assert all(t.is_contiguous() for t in dense)
        # two blocks of memory came from the worker: the dense tensors and the per-image ones
        assert len({t.untyped_storage().data_ptr() for t in dense}) == 1
        per_image = [t for key in ("boxes", "keypoints", "crowd_boxes") for t in targets[key] if t.numel()]
        assert len({t.untyped_storage().data_ptr() for t in per_image}) <= 1
