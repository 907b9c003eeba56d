import numpy as np

from posenet.data.coco import CocoPersons
from posenet.evaluation import evaluate_boxes, evaluate_keypoints, keypoint_results, write_results


def _gt_as_results(data: CocoPersons):
    """Ground-truth persons with keypoints written through the results writer."""
    anns = [a for i in data.image_ids for a in data.annotations(i)
            if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0]
    kps = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(len(anns), -1, 3)
    return keypoint_results([a["image_id"] for a in anns], kps[..., :2], kps[..., 2] > 0, np.ones(len(anns))), anns


def test_ground_truth_keypoints_score_ap_one_on_coco_mini(coco_mini, tmp_path):
    data = CocoPersons(coco_mini, "val2017")
    results, anns = _gt_as_results(data)
    assert len(results) == 68
    path = write_results(results, tmp_path / "results.json")
    assert path.is_file() and not list(tmp_path.glob("*.tmp"))
    metrics = evaluate_keypoints(data.coco, results)
    assert metrics["AP"] == 1.0 and metrics["AP50"] == 1.0 and metrics["AR"] == 1.0


def test_perturbed_keypoints_score_less(coco_mini):
    data = CocoPersons(coco_mini, "val2017")
    results, _ = _gt_as_results(data)
    rng = np.random.default_rng(0)
    for r in results:
        kp = np.array(r["keypoints"]).reshape(-1, 3)
        kp[:, :2] += rng.normal(0, 8, size=(len(kp), 2))
        r["keypoints"] = kp.ravel().tolist()
    metrics = evaluate_keypoints(data.coco, results)
    assert 0.0 < metrics["AP"] < 0.9


def test_ground_truth_boxes_score_box_ap_one(coco_mini):
    data = CocoPersons(coco_mini, "val2017")
    results = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 1.0}
               for i in data.image_ids for a in data.annotations(i) if not a.get("iscrowd", 0)]
    assert evaluate_boxes(data.coco, results)["AP"] == 1.0


def test_empty_results_score_zero(coco_mini):
    data = CocoPersons(coco_mini, "val2017")
    assert evaluate_keypoints(data.coco, [])["AP"] == 0.0


def test_medium_large_box_ap_counts_only_persons_of_at_least_32_px(coco_mini):
    data = CocoPersons(coco_mini, "val2017")
    persons = [a for i in data.image_ids for a in data.annotations(i) if not a.get("iscrowd", 0)]
    results = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 1.0} for a in persons]
    assert evaluate_boxes(data.coco, results)["APML"] == 1.0
    # Finding only the small persons scores nothing on medium + large; finding only the medium and
    # large ones scores all of it there, and less over all sizes.
    small = [r for r, a in zip(results, persons) if a["area"] < 32 ** 2]
    big = [r for r, a in zip(results, persons) if a["area"] >= 32 ** 2]
    assert small and big
    assert evaluate_boxes(data.coco, small)["APML"] == 0.0
    only_big = evaluate_boxes(data.coco, big)
    assert only_big["APML"] == 1.0 and only_big["AP"] < 1.0
    assert evaluate_boxes(data.coco, [])["APML"] == 0.0
