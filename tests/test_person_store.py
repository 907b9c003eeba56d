"""The flat per-image annotation store (posenet/data/person_store.py) and the COCO-sized file.

The key test: samples from the flat store equal, bit for bit, those built from the
annotation dicts by the reference path (``image_persons`` and ``region_masks`` of pycocotools'
dicts, which the dataset read before the store), on the synthetic world and on coco-mini.
"""
import json
import pickle

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from posenet.bench.scale_file import uncompressed_rle
from posenet.data import COCO_PERSON
from posenet.data.coco import CocoPersons
from posenet.data.dataset import CocoKeypointDataset
from posenet.data.person_store import PersonStore, StoredPersons
from posenet.data.targets import image_persons, region_masks
from posenet.errors import DataError

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

K = COCO_PERSON.num_keypoints


class DictStore:
    """The reference path: what the dataset read before the flat store, from the annotation dicts."""

    def __init__(self, persons: CocoPersons):
        self.persons = persons

    def __len__(self):
        return len(self.persons.image_ids)

    def image_id(self, i):
        return self.persons.image_ids[i]

    def size(self, i):
        info = self.persons.image_info(self.image_id(i))
        return int(info["height"]), int(info["width"])

    def file_name(self, i):
        return self.persons.image_info(self.image_id(i))["file_name"]

    def people(self, i):
        p = image_persons(self.persons.annotations(self.image_id(i)), K)
        return StoredPersons(p.keypoints, p.boxes, p.num_keypoints, p.crowd_boxes)

    def region_masks(self, i):
        return region_masks(self.persons.annotations(self.image_id(i)), *self.size(i))


def _assert_same_sample(a, b):
    image_a, target_a = a
    image_b, target_b = b
    assert torch.equal(image_a, image_b)
    assert target_a.keys() == target_b.keys()
    for key, value in target_a.items():
        if key == "meta":
            assert value.keys() == target_b["meta"].keys()
            for m, v in value.items():
                w = target_b["meta"][m]
                assert type(v) is type(w) and np.array_equal(np.asarray(v), np.asarray(w)), m
        else:
            assert value.dtype == target_b[key].dtype and torch.equal(value, target_b[key]), key


def _assert_same_samples(persons, indices, input_size=160, **kwargs):
    for train in (True, False):
        flat = CocoKeypointDataset(persons, input_size=input_size, train=train, **kwargs)
        reference = CocoKeypointDataset(persons, input_size=input_size, train=train, **kwargs)
        reference.store = DictStore(persons)
        for i in indices:
            samples = []
            for dataset in (flat, reference):
                np.random.seed(7000 + i)
                samples.append(dataset[i])
            _assert_same_sample(*samples)


def _assert_same_annotations(persons):
    store, reference = persons.store, DictStore(persons)
    for i in range(len(store)):
        assert store.image_id(i) == reference.image_id(i) and store.size(i) == reference.size(i)
        assert store.file_name(i) == reference.file_name(i)
        for a, b in zip(store.people(i), reference.people(i)):
            assert a.dtype == b.dtype and np.array_equal(a, b)
        a, b = store.region_masks(i), reference.region_masks(i)
        assert (a is None and b is None) or np.array_equal(a, b)


# ------------------------------------------------------------------ equivalence


def test_synthetic_world_samples_equal_the_annotation_dicts(tiny_synthetic):
    persons = CocoPersons(tiny_synthetic, "train2017")
    _assert_same_annotations(persons)
    _assert_same_samples(persons, range(len(persons)))


def test_coco_mini_samples_equal_the_annotation_dicts(coco_mini):
    persons = CocoPersons(coco_mini, "train2017")
    _assert_same_annotations(persons)  # every image: persons, crowd boxes, both mask layers
    store = persons.store
    crowded = [i for i in range(len(store)) if store.crowd_offsets[i + 1] > store.crowd_offsets[i]]
    assert crowded, "coco-mini has crowd regions"
    _assert_same_samples(persons, sorted(set(range(12)) | set(crowded[:4])))


def test_openpose_targets_equal_the_annotation_dicts(coco_mini):
    from posenet.config import build, load_config

    cfg = load_config(None, [f"data.root={coco_mini}"])
    persons = CocoPersons(coco_mini, "val2017")
    _assert_same_samples(persons, range(4), input_size=128, stride=8, parts=build.openpose_parts(cfg),
                         background=True, paf_limb_width=1.0)


def _write(tmp_path, annotations, images=((1, 40, 60),), split="train2017"):
    (tmp_path / "annotations").mkdir(exist_ok=True)
    (tmp_path / split).mkdir(exist_ok=True)
    entries = []
    for image_id, h, w in images:
        name = f"{image_id:06d}.jpg"
        cv2.imwrite(str(tmp_path / split / name), np.full((h, w, 3), 90, np.uint8))
        entries.append({"id": image_id, "file_name": name, "height": h, "width": w})
    anns = [{"id": i + 1, "category_id": 1, "iscrowd": 0, **a} for i, a in enumerate(annotations)]
    data = {"images": entries, "annotations": anns, "categories": [COCO_PERSON.coco_category()]}
    (tmp_path / "annotations" / f"person_keypoints_{split}.json").write_text(json.dumps(data))
    return CocoPersons(tmp_path, split)


def _keypoints(x, y, v=2):
    kps = np.zeros((K, 3))
    kps[:3] = (x, y, v)
    return kps.ravel().tolist()


def test_every_kind_of_region_and_odd_values(tmp_path):
    """Polygons (one, two, too short), uncompressed and compressed RLE crowds, a box fallback, a
    person without keypoints, fractional keypoints and coordinates beyond two decimals."""
    mask = np.zeros((40, 60), np.uint8, order="F")
    mask[5:20, 30:50] = 1
    compressed = mask_utils.encode(np.asfortranarray(mask))
    compressed["counts"] = compressed["counts"].decode()
    anns = [
        {"image_id": 1, "bbox": [2, 3, 20, 30], "num_keypoints": 3, "keypoints": _keypoints(10.5, 12.25),
         "segmentation": [[2, 3, 22, 3, 22, 33, 2, 33]]},
        {"image_id": 1, "bbox": [30.1, 5.2, 10.3, 10.4], "num_keypoints": 0, "keypoints": [0] * (3 * K),
         "segmentation": [[30.123, 5.2, 40.4, 5.2, 40.4, 15.6], [31, 6, 35, 6, 35, 9], [1, 2]]},
        {"image_id": 1, "bbox": [40, 20, 10.7, 12.1], "num_keypoints": 1, "keypoints": _keypoints(44, 25, 1),
         "segmentation": []},
        {"image_id": 1, "bbox": [30, 5, 20, 15], "iscrowd": 1, "segmentation": compressed},
        {"image_id": 2, "bbox": [30, 5, 20, 15], "iscrowd": 1, "segmentation": uncompressed_rle(mask)},
        {"image_id": 2, "bbox": [1, 1, 5, 5], "keypoints": _keypoints(2, 2)},  # no num_keypoints, no segmentation
    ]
    persons = _write(tmp_path, anns, images=((1, 40, 60), (2, 40, 60), (3, 40, 60)))
    store = persons.store
    assert store.coord_scale == 1.0  # 30.123 is not a whole number of hundredths
    assert store.keypoints.dtype == np.float32  # 10.5 and 12.25 are exact in float32, not in int16
    _assert_same_annotations(persons)
    _assert_same_samples(persons, range(3), input_size=64)


def test_rejected_annotations_fail_their_sample_alone(tmp_path):
    anns = [
        {"image_id": 1, "bbox": [2, 3, 20, 30], "keypoints": [1, 2, 2] * 5, "num_keypoints": 5},
        {"image_id": 2, "bbox": [2, 3, 20, 30], "num_keypoints": 1, "keypoints": _keypoints(5, 5),
         "segmentation": {"counts": "abc", "size": [10, 10]}},
        {"image_id": 3, "bbox": [2, 3, 20, 30], "num_keypoints": 1, "keypoints": _keypoints(5, 5)},
    ]
    persons = _write(tmp_path, anns, images=((1, 40, 60), (2, 40, 60), (3, 40, 60)))
    dataset = CocoKeypointDataset(persons, input_size=64, train=False)
    with pytest.raises(DataError, match=r"image 1: annotation 1: 5 keypoints, the layout has 17"):
        dataset[0]
    with pytest.raises(DataError, match=r"image 2: bad segmentation: annotation 2: RLE size \[10, 10\]"):
        dataset[1]
    assert dataset[2][1]["boxes"].shape == (1, 4)
    assert dataset[-1][1]["meta"]["image_id"] == 3
    with pytest.raises(IndexError):
        dataset[3]


# ------------------------------------------------------------------ memory layout


def test_the_store_is_flat_arrays_and_pickles_small(coco_mini):
    persons = CocoPersons(coco_mini, "train2017")
    store = persons.store
    assert len(store) == len(persons)
    for key in PersonStore.ARRAYS:
        value = getattr(store, key)
        assert isinstance(value, np.ndarray) and value.dtype != object, key
    # no per-image Python objects: a dozen arrays, a scale and two (empty) error dicts
    assert all(isinstance(v, (np.ndarray, float)) or (isinstance(v, dict) and not v) for v in vars(store).values())
    assert persons._coco is None  # the pycocotools index is released after the build
    assert len(persons.coco.imgs) >= len(persons)  # and read again when evaluation asks for it

    dataset = CocoKeypointDataset(persons, input_size=128)
    blob = pickle.dumps(dataset)  # what a spawned loader worker receives
    annotation_bytes = persons.files.annotation_file.stat().st_size
    assert len(blob) < store.nbytes + 100_000 + 16 * len(persons)
    assert len(blob) < annotation_bytes / 2 and b"segmentation" not in blob
    clone = pickle.loads(blob)
    assert clone.persons._coco is None
    np.random.seed(3)
    a = dataset[5]
    np.random.seed(3)
    _assert_same_sample(a, clone[5])


# ------------------------------------------------------------------ the COCO-sized file


def test_scale_file_at_tiny_size(tmp_path):
    from posenet.bench.scale_file import IMAGE_SIZE, write_scale_coco

    path = write_scale_coco(tmp_path, images=12, keypoint_persons=30, other_persons=9, crowds=3, seed=1)
    data = json.loads(path.read_text())
    summary = CocoPersons(tmp_path, "train2017").summary()
    assert (summary["images"], summary["images_without_persons"]) == (12, 0)
    assert (summary["persons_with_keypoints"], summary["crowd_regions"], summary["persons"]) == (30, 3, 42)
    links = sorted((tmp_path / "train2017").iterdir())
    assert len(links) == 12 and all(p.is_symlink() and p.resolve() == links[0].resolve() for p in links)
    assert cv2.imread(str(links[0])).shape[:2] == IMAGE_SIZE
    H, W = IMAGE_SIZE
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        assert 0 <= x and 0 <= y and x + w <= W and y + h <= H and a["area"] > 0
        kps = np.asarray(a["keypoints"]).reshape(K, 3)
        assert a["num_keypoints"] == (kps[:, 2] > 0).sum()
        if a["iscrowd"]:
            rle = mask_utils.frPyObjects(a["segmentation"], H, W)
            assert mask_utils.area(rle) == a["area"] and tuple(mask_utils.toBbox(rle)) == tuple(a["bbox"])
        else:
            for polygon in a["segmentation"]:
                p = np.asarray(polygon).reshape(-1, 2)
                assert len(p) >= 8 and (p >= 0).all() and (p[:, 0] <= x + w).all() and (p[:, 1] <= y + h).all()
            if a["num_keypoints"]:
                labelled = kps[kps[:, 2] > 0]
                assert ((labelled[:, 0] >= 0) & (labelled[:, 0] < W) & (labelled[:, 1] < H)).all()
    with pytest.raises(ValueError, match="keypoint_persons"):
        write_scale_coco(tmp_path / "bad", images=5, keypoint_persons=4)


def test_scale_benchmark_reads_worker_memory(tmp_path):
    from posenet.bench.data_scale import benchmark_data_scale, format_data_scale

    result = benchmark_data_scale(workers=1, num_samples=None, batch_size=4, points=2, scale_dir=tmp_path,
                                  images=8, keypoint_persons=10, other_persons=2, crowds=1, log=None)
    assert result["num_samples"] == 8 and result["images"] == 8 and result["input_size"] == (480, 480)
    assert [r["samples"] for r in result["readings"]] == [4, 8]
    for reading in result["readings"]:
        (worker,) = reading["workers"]
        assert 0 < worker["pss_mb"] <= worker["rss_mb"]
    assert result["main_rss_mb"] > 0 and result["store_mb"] > 0
    table = format_data_scale(result)
    assert "| dataset build" in table and "8 samples (the whole epoch)" in table
    # the file is reused, not written again
    again = benchmark_data_scale(workers=1, num_samples=4, batch_size=4, points=2, scale_dir=tmp_path,
                                 images=8, keypoint_persons=10, other_persons=2, crowds=1, log=None)
    assert again["write_s"] == 0.0 and again["num_samples"] == 4


def test_a_large_file_is_parsed_in_a_child_process_with_the_same_store(coco_mini, tmp_path, monkeypatch):
    import posenet.data.coco as coco

    here = CocoPersons(coco_mini, "val2017")
    monkeypatch.setattr(coco, "CHILD_PARSE_BYTES", 0)  # every file counts as large
    child = CocoPersons(coco_mini, "val2017")
    assert child.image_ids == here.image_ids and child.keypoint_layout == here.keypoint_layout
    for key in PersonStore.ARRAYS:
        a, b = getattr(here.store, key), getattr(child.store, key)
        assert a.dtype == b.dtype and np.array_equal(a, b), key
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    (tmp_path / "annotations" / "person_keypoints_val2017.json").write_text('{"images": 3}')
    with pytest.raises(DataError, match="no 'images' list"):  # the child's error, raised here
        CocoPersons(tmp_path, "val2017")


def test_a_forked_child_starts_with_the_parents_objects_frozen():
    import gc
    import os

    from posenet.data.dataset import install_cv2_fork_guard

    install_cv2_fork_guard()
    assert gc.get_freeze_count() == 0
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report how many objects its collections leave alone
        os.write(write, str(gc.get_freeze_count()).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    frozen = int(os.read(read, 64))
    os.close(read)
    assert frozen > 10_000 and gc.get_freeze_count() == 0  # the parent collects as before
