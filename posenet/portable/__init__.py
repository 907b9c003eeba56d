"""posenet's portable decoder: an exported network (``model.onnx`` + ``model.json``) to people,
with numpy alone (onnxruntime only to run the graph, imported when it first runs).

This package is the one source of the steps after the network that run in numpy: posenet's
own predictors, codecs and groupings import them from here, and ``scripts/export_onnx.py``
copies the package beside the graph as the folder ``posenet_decoder/``, all a deployment
needs. It imports nothing but numpy and its own modules (neither ``posenet`` nor ``torch``):

    geometry.py   the input warp and its inverse, flip and scale averaging of the maps
    peaks.py      heatmap peaks with sub-pixel refinement
    boxes.py      anchors, box decoding, NMS: RetinaNet's person boxes
    matching.py   one-to-one assignment, best first
    prn_grid.py   the Pose Residual Network's box grids and their blur
    prn.py        the PRN grouping (its MLP in numpy) and the greedy baseline; pose scores
    paf.py        the part-affinity-field grouping of the OpenPose family
    tracking.py   track ids across the frames of a video (OKS / box IoU, best first)
    smoothing.py  the One-Euro filter: smoothed keypoints of a track
    model.py      PoseModel: the graph (onnxruntime) and the steps below, from its metadata
    __main__.py   the command line

What it does after the network is what the PyTorch predictors do (``posenet.inference.Predictor``
for MultiPoseNet, ``posenet.inference.paf_predictor.PafPredictor`` for the OpenPose family), so
that its people are theirs: keypoints within a fraction of a pixel, the same people.

    import posenet_decoder                  # with the export folder on sys.path
    model = posenet_decoder.load("export/model.json")
    result = model.run(rgb)                 # (H, W, 3) uint8 RGB
    for person in result["people"]:         # best first
        person["keypoints"]                 # (K, 3) x, y, score in image pixels

    python export/posenet_decoder export/model.json photo.jpg [...] [--out results.json]

Steps (metadata keys in brackets)
---------------------------------
1. Input geometry per scale ``sc`` of [infer.scales]: the image side that [infer.input_side]
   names ("longer", the default; "height"; "shorter") becomes
   ``size = max(input.min_size, round(infer.input_size * sc))``, the aspect kept; the image -> input matrix puts
   pixel areas onto pixel areas (``x' = s (x + 0.5) - 0.5``, top-left aligned); the image is
   resampled bilinearly (as ``cv2.warpAffine`` INTER_LINEAR, border 0; an enlarged image is first
   extended by one replicated pixel per side) and padded at the bottom/right with
   [input.pad_value] (the mean colour: 0 once normalised, as the PyTorch models pad) to a
   multiple of [input.size_divisor] (or to the fixed [input.size]).
2. Flip test [infer.flip]: the input padded on the right to a multiple of the heatmap stride
   with the rounded mean colour, mirrored, run, and its maps mirrored back (channels swapped
   left/right, the PAFs' x negated), averaged with the unmirrored maps cell for cell.
   Scales: the reference scale is the listed scale nearest 1 (by ratio; the larger of two
   equally near); every other scale's maps are resampled onto its grid (cell centre to cell
   centre), summed in increasing order of scale after the reference's and averaged; boxes come
   from the reference scale, unflipped. The order of [infer.scales] changes nothing.
3. Peaks: 3x3 local maxima at or above [infer.peak_threshold], at most [infer.max_peaks] per
   channel, refined by a parabola through the log-values (exact for the training Gaussians of
   [heatmaps.sigma]), cell ``j`` being centred on input pixel ``stride * j + (stride - 1) / 2``.
4. MultiPoseNet: RetinaNet boxes ([detection]: sigmoid, score threshold, top-k per level,
   decoding against the anchors, clipping to the input, greedy NMS, max detections), those at
   or above [infer.box_threshold] scaled about their centres by [infer.box_scale]; the peaks
   grouped into the boxes by [grouping]: "prn" (the Pose Residual Network's MLP as numpy
   products, weights from ``model.prn.npz``; each peak, written into its input cell as its
   score or as 1 ([grouping.peak_input] "score" or "one"), scored by the PRN output summed in a
   window at its cell (times its score with "one"), assigned best first one-to-one; the grid
   over the enlarged box or, [grouping.grid] "reference", over the box itself with the margin's
   peaks clamped onto its border and the reference code's blur) or "greedy" (each peak to the enlarged
   box it is most central in). Pose score: box score times the mean of the keypoint scores
   above [infer.keypoint_threshold].
   OpenPose family: part peaks joined by the part affinity fields ([openpose.paf]: pair scores
   sampled along each candidate limb, the PAF read bilinearly or at the nearest cell
   ([openpose.paf.sampling]; "nearest" in exports before the key), one-to-one best first,
   merged limb by limb), the parts
   mapped back to the dataset's keypoints ([openpose.sources]); box = extent of the found
   keypoints; score = the grouping's person score.
5. Everything back to image pixels through the inverse of the reference scale's matrix.

Output of ``PoseModel.run`` / ``PoseModel.decode`` (the fields of posenet's ``Prediction``)
-------------------------------------------------------------------------------------------
``{"people": [person, ...]`` best first (stable sort on the score), each person
``{"keypoints": (K, 3) float64 x, y (image pixels, pixel centres at integers), score (0..1;
0: not found)``, ``"box": (4,) float64 x1, y1, x2, y2`` (image pixels, edges at integers,
clipped to the image), ``"box_score": float, "score": float}``;
``"boxes": (B, 4)`` all boxes (MultiPoseNet: above the box threshold; OpenPose: the people's),
``"box_scores": (B,)``, ``"heatmaps": (K or P, h, w) float32`` on the reference scale's grid (K
dataset keypoints for MultiPoseNet, P parts for OpenPose), ``"pafs": (2L, h, w)`` or None,
``"matrix": (2, 3)`` image -> input pixels, ``"image_size": (h, w)``, ``"stride": int``,
``"timing": {"network_ms", "decode_ms"}}``. The keypoint order is [keypoints.names].
"""
from __future__ import annotations

from .boxes import anchors, decode_boxes, detect, nms
from .geometry import (FLIP_FILL, INPUT_SIDES, flip_back, input_geometry, invert, paf_flip_index, scale_order,
                       to_grid_of, transform_points, warp_image)
from .matching import best_first_matching
from .model import FAMILIES, FORMAT, GROUPINGS, VERSION, PoseModel, as_rgb, check_metadata, load, read_image, to_json
from .paf import PafGrouping, PafPeople, people_boxes
from .peaks import heatmap_peaks, max_filter_3x3
from .prn import PoseResidualMLP, most_central_assign, pose_scores, prn_assign
from .prn_grid import blur, blur_adjoint, blur_matrix, box_grid
from .smoothing import OneEuroFilter
from .tracking import Tracker, box_iou, keypoint_similarity

__all__ = ["FAMILIES", "FLIP_FILL", "FORMAT", "GROUPINGS", "INPUT_SIDES", "OneEuroFilter", "PafGrouping", "PafPeople",
           "PoseModel", "PoseResidualMLP", "Tracker", "VERSION", "anchors", "as_rgb", "best_first_matching", "blur",
           "blur_adjoint", "blur_matrix", "box_grid", "box_iou", "check_metadata", "decode_boxes", "detect",
           "flip_back", "heatmap_peaks", "input_geometry", "invert", "keypoint_similarity", "load", "max_filter_3x3",
           "most_central_assign", "nms", "paf_flip_index", "people_boxes", "pose_scores", "prn_assign", "read_image",
           "scale_order", "to_grid_of", "to_json", "transform_points", "warp_image"]
