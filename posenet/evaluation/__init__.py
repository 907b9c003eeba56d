"""Official COCO metrics (pycocotools) and the results format."""

from posenet.evaluation.coco_eval import (
    BOX_METRICS,
    KEYPOINT_METRICS,
    box_results,
    evaluate_boxes,
    evaluate_keypoints,
    format_metrics,
    keypoint_results,
    write_results,
)

__all__ = ["BOX_METRICS", "KEYPOINT_METRICS", "box_results", "evaluate_boxes", "evaluate_keypoints", "format_metrics",
           "keypoint_results", "write_results"]
