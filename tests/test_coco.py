import json
from pathlib import Path

import pytest

from posenet.data import COCO_PERSON
from posenet.data.coco import CocoPersons, split_files
from posenet.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def test_coco_mini_counts_match_its_readme(coco_mini):
    """The counts stated in ../shared/data/coco-mini/README.md."""
    expected = {
        "train2017": dict(images=80, persons=172, persons_with_keypoints=86, crowd_regions=5),
        "val2017": dict(images=79, persons=118, persons_with_keypoints=68, crowd_regions=1),
    }
    for split, counts in expected.items():
        data = CocoPersons(coco_mini, split)
        summary = data.summary()
        for key, value in counts.items():
            assert summary[key] == value, (split, key)
        assert data.keypoint_layout == COCO_PERSON
        # About half of the images hold no person at all.
        assert 0.3 < summary["images_without_persons"] / summary["images"] < 0.7
        for image_id in data.image_ids:
            assert data.image_path(image_id).is_file()


def _write_coco(path, n_images):
    images = [{"id": 100 + i, "file_name": f"{i}.jpg", "width": 10, "height": 10} for i in range(n_images)]
    anns = [{"id": i + 1, "image_id": 100 + i, "category_id": 1, "iscrowd": 0, "num_keypoints": 0,
             "keypoints": [0] * 51, "bbox": [0, 0, 1, 1], "area": 1} for i in range(n_images)]
    data = {"images": images, "annotations": anns, "categories": [COCO_PERSON.coco_category()]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_coco2014_minival_is_the_first_images_of_val2014(tmp_path):
    _write_coco(tmp_path / "annotations" / "person_keypoints_val2014.json", 10)
    (tmp_path / "val2014").mkdir()
    minival = CocoPersons(tmp_path, "minival2014", folders="coco2014", minival_size=4)
    rest = CocoPersons(tmp_path, "valminusminival2014", folders="coco2014", minival_size=4)
    assert minival.image_ids == [100, 101, 102, 103]
    assert rest.image_ids == list(range(104, 110))
    assert split_files(tmp_path, "train2014", "coco2014").image_dir == tmp_path / "train2014"


def test_the_rtpose_split_is_the_release_list_in_its_order(tmp_path):
    from posenet.data.coco import LISTED_SPLITS

    listed = [int(x) for x in LISTED_SPLITS["val2014-rtpose1160"][1].read_text().split()]
    assert len(listed) == len(set(listed)) == 1160 and (listed[0], max(listed)) == (136, 71209)
    shared = REPO.parent / "shared" / "data" / "rtpose-val2014-1160" / "image_ids.txt"
    if shared.is_file():  # the shipped copy is the shared list
        assert [int(x) for x in shared.read_text().split()] == listed
    # a val2014 annotation file holding those images (and others): the split is the list
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 10, "height": 10} for i in sorted(listed + [1, 2])]
    data = {"images": images, "annotations": [], "categories": [COCO_PERSON.coco_category()]}
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "person_keypoints_val2014.json").write_text(json.dumps(data))
    (tmp_path / "val2014").mkdir()
    assert CocoPersons(tmp_path, "val2014-rtpose1160", folders="coco2014").image_ids == listed
    data["images"] = images[:-1]
    (tmp_path / "annotations" / "person_keypoints_val2014.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="lacks 1 of the 1160 images"):
        CocoPersons(tmp_path, "val2014-rtpose1160", folders="coco2014")


def test_clear_errors(tmp_path):
    with pytest.raises(DataError, match="dataset root not found"):
        CocoPersons(tmp_path / "nope", "val2017")
    with pytest.raises(DataError, match="annotation file not found"):
        CocoPersons(tmp_path, "val2017")
    with pytest.raises(DataError, match="unknown split 'val2014' for the coco2017 folder scheme"):
        CocoPersons(tmp_path, "val2014")
    ann = tmp_path / "annotations" / "person_keypoints_val2017.json"
    ann.parent.mkdir()
    ann.write_text("{not json")
    with pytest.raises(DataError, match="invalid JSON"):
        CocoPersons(tmp_path, "val2017")
    ann.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DataError, match="no 'categories' list"):
        CocoPersons(tmp_path, "val2017")
    _write_coco(ann, 2)
    with pytest.raises(DataError, match="image folder not found"):
        CocoPersons(tmp_path, "val2017")


def test_first_images_keeps_the_first_images_with_annotated_persons(coco_mini):
    everything = CocoPersons(coco_mini, "train2017")
    first = CocoPersons(coco_mini, "train2017", first_images=5)
    assert len(first) == 5
    with_keypoints = [i for i in everything.image_ids
                      if any(not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0 for a in everything.annotations(i))]
    assert first.image_ids == with_keypoints[:5]
    assert first.summary()["images"] == 5 and first.summary()["images_without_persons"] == 0
    with pytest.raises(DataError, match="asked for the first 1000 images"):
        CocoPersons(coco_mini, "train2017", first_images=1000)
