"""The test stage (scripts/test.py): a COCO evaluation-server submission from an image-info file
alone, here a synthetic split written without annotations. Its results are the ones the
end-to-end validation computes on the same images with the same predictor."""
from __future__ import annotations

import json
import zipfile

import pytest

from posenet.config import load_config
from posenet.errors import PosenetError
from posenet.inference.submission import predict_split, read_image_info, split_of
from posenet.stages import end_to_end

from _random_runs import TINY, save_random_run
from _scripts import REPO, run_script

CONFIG = REPO / "configs/synthetic_small.yaml"
TEST_TIME = ["infer.scales=[1.0,0.5]", "infer.flip=true"]


@pytest.fixture(scope="module")
def split(tiny_synthetic, tmp_path_factory):
    """A randomly initialised full model saved like a run, and an image-info file (images only,
    no annotations) listing the synthetic val split."""
    root = tmp_path_factory.mktemp("submission")
    cfg = load_config(CONFIG, [f"data.root={tiny_synthetic}", *TINY])
    checkpoint = save_random_run(cfg, root)
    annotations = json.loads((tiny_synthetic / "annotations" / "person_keypoints_val2017.json").read_text())
    info = {"info": {"description": "synthetic image info"}, "images": annotations["images"],
            "categories": annotations["categories"]}
    (root / "image_info_synthetic-dev.json").write_text(json.dumps(info))
    return cfg, checkpoint, root / "image_info_synthetic-dev.json", tiny_synthetic / "val2017"


def _key(results):
    return sorted((r["image_id"], round(r["score"], 4), tuple(round(v, 1) for v in r["keypoints"])) for r in results)


def test_the_script_writes_what_validation_computes(split, tmp_path):
    cfg, checkpoint, info, images = split
    result = run_script("test.py", "--checkpoint", checkpoint, "--image-info", info, "--images", images,
                        "--out", tmp_path, "--name", "tiny-r18", *TEST_TIME)
    name = "person_keypoints_synthetic-dev_tiny-r18_results.json"
    submitted = json.loads((tmp_path / name).read_text())
    with zipfile.ZipFile(tmp_path / name.replace(".json", ".zip")) as archive:
        assert archive.namelist() == [name] and json.loads(archive.read(name)) == submitted
    assert not (tmp_path / "missing_images.json").exists()
    assert "4 of 4 listed images" in result.stdout and "upload that" in result.stdout

    listed = {entry["id"] for entry in read_image_info(info)}
    assert submitted and {r["image_id"] for r in submitted} <= listed
    assert all(r["category_id"] == 1 and len(r["keypoints"]) == 51 for r in submitted)
    # the same people as the end-to-end validation of the same predictor on the same images
    vcfg = load_config(CONFIG, [f"data.root={cfg.data.root}", *TINY, *TEST_TIME, "eval.max_images=0"])
    _, evaluator = end_to_end.validate(vcfg, checkpoint, "end-to-end", log=lambda line: None)
    assert evaluator.protocol().count("flip on") == 1
    assert _key(submitted) == _key(evaluator.last_results)


def test_a_missing_image_is_named_and_leaves_no_zip(split, tmp_path):
    cfg, checkpoint, info, images = split
    entries = read_image_info(info)
    broken = json.loads(info.read_text())
    broken["images"] = entries + [dict(entries[0], id=999, file_name="not_there.jpg")]
    broken_info = tmp_path / "image_info_test-dev2017.json"
    broken_info.write_text(json.dumps(broken))
    zip_path = tmp_path / "out" / "person_keypoints_test-dev2017_m_results.zip"
    zip_path.parent.mkdir()
    zip_path.write_bytes(b"an older zip")  # from an earlier run: it must not survive
    result = run_script("test.py", "--checkpoint", checkpoint, "--image-info", broken_info, "--images", images,
                        "--out", tmp_path / "out", "--name", "m", check=False)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "1 of 5 listed images were not processed (not_there.jpg" in errors[0]
    assert "Traceback" not in result.stderr
    assert not zip_path.exists() and zip_path.with_suffix(".json").is_file()
    missing = json.loads((tmp_path / "out" / "missing_images.json").read_text())
    assert [m["id"] for m in missing] == [999] and "not_there.jpg" in missing[0]["reason"]

    # --allow-missing zips what there is
    run_script("test.py", "--checkpoint", checkpoint, "--image-info", broken_info, "--images", images,
               "--out", tmp_path / "out", "--name", "m", "--allow-missing")
    assert zipfile.ZipFile(zip_path).namelist() == [zip_path.with_suffix(".json").name]


def test_bad_inputs_are_one_clear_error(split, tmp_path):
    cfg, checkpoint, info, images = split
    assert split_of("annotations/image_info_test-dev2017.json") == "test-dev2017"
    assert split_of("my_list.json") == "my_list"
    with pytest.raises(PosenetError, match="letters, digits"):
        predict_split(None, info, images, tmp_path, "my_model")
    with pytest.raises(PosenetError, match="image-info file not found"):
        predict_split(None, tmp_path / "nope.json", images, tmp_path, "m")
    (tmp_path / "empty.json").write_text(json.dumps({"images": []}))
    with pytest.raises(PosenetError, match="lists no images"):
        predict_split(None, tmp_path / "empty.json", images, tmp_path, "m")
    (tmp_path / "dup.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}] * 2}))
    with pytest.raises(PosenetError, match="not unique"):
        predict_split(None, tmp_path / "dup.json", images, tmp_path, "m")
    with pytest.raises(PosenetError, match="image folder not found"):
        predict_split(None, info, tmp_path / "no_images", tmp_path, "m")
    result = run_script("test.py", "--checkpoint", checkpoint, "--image-info", tmp_path / "nope.json",
                        "--images", images, "--out", tmp_path / "o", "--name", "m", check=False)
    assert result.returncode == 2 and result.stderr.strip().startswith("error: image-info file not found")
