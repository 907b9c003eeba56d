"""Official COCO metrics (pycocotools) and the results format."""

from posenet.evaluation.coco_eval import (
    KEYPOINT_METRICS,
    evaluate_boxes,
    evaluate_keypoints,
    format_metrics,
    keypoint_results,
    write_results,
)

__all__ = ["KEYPOINT_METRICS", "evaluate_boxes", "evaluate_keypoints", "format_metrics",
           "keypoint_results", "write_results"]
