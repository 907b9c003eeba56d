"""Drawing helpers for annotations and predictions (BGR uint8 images in, new images out)."""

from posenet.vis.draw import (
    CROWD_COLOR, PALETTE, draw_boxes, draw_coco_annotations, draw_mask, draw_polygons, draw_skeleton,
    person_color, segmentation_to_mask,
)
from posenet.vis.heatmaps import heatmap_overlay, heatmap_panels, paf_overlay

__all__ = ["CROWD_COLOR", "PALETTE", "draw_boxes", "draw_coco_annotations", "draw_mask",
           "draw_polygons", "draw_skeleton", "heatmap_overlay", "heatmap_panels", "paf_overlay", "person_color", "segmentation_to_mask"]
