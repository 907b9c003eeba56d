#!/usr/bin/env python
"""COCO keypoint AP (pycocotools) of a checkpoint on data.val_split, with its protocol.

Modes: "end-to-end" (heatmap peaks + detected boxes + grouping: what infer.py does) and its
ablations "pred-keypoints-gt-boxes", "gt-keypoints-pred-boxes", "gt-keypoints-gt-boxes", each
with --grouping (any of posenet.inference.groupings: prn, greedy); "auto" (default) is end-to-end when the checkpoint has a detection
branch (greedy grouping when it has no PRN), else the keypoint stage's own protocol (predicted
keypoints in ground-truth boxes, with the masked heatmap loss).
"""
from posenet import cli
from posenet.config import build
from posenet.evaluation import write_results
from posenet.inference.groupings import GROUPINGS
from posenet.models import PoseNet
from posenet.stages import end_to_end, keypoint
from posenet.utils.io import write_json_atomic


def main():
    parser = cli.config_parser(__doc__)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint (last.pt / best.pt)")
    parser.add_argument("--mode", default="auto", choices=["auto", *end_to_end.MODES])
    parser.add_argument("--grouping", choices=sorted(GROUPINGS), help="how keypoints join boxes (default: infer.grouping)")
    parser.add_argument("--flip", action="store_true", help="average with the mirrored image's heatmaps")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--metrics-out", help="write AP, AP50, AP75, APM, APL, AR (and the protocol) as JSON")
    parser.add_argument("--results-out", help="write the COCO-format results file")
    args, cfg = cli.parse_config_args(parser)
    if args.flip:
        cfg.eval.flip = cfg.infer.flip = True
    if args.grouping:
        cfg.infer.grouping = args.grouping
    mode = args.mode
    if mode == "auto":
        parts = PoseNet.parts_in(build.checkpoint_state(args.checkpoint))
        mode = "end-to-end" if "detection" in parts else "keypoint-stage"
        if mode == "end-to-end" and not args.grouping and "prn" not in parts and GROUPINGS[cfg.infer.grouping].needs_prn:
            print("the checkpoint has no PRN (yet): grouping greedy")
            cfg.infer.grouping = "greedy"
    if mode == "keypoint-stage":
        metrics, evaluator = keypoint.validate(cfg, args.checkpoint, device=args.device)
        record = keypoint.metrics_record(metrics, evaluator, args.checkpoint)
    else:
        metrics, evaluator = end_to_end.validate(cfg, args.checkpoint, mode, device=args.device)
        record = end_to_end.metrics_record(metrics, evaluator, args.checkpoint)
    if args.results_out:
        write_results(evaluator.last_results, args.results_out)
    if args.metrics_out:
        write_json_atomic(args.metrics_out, record, indent=2)


if __name__ == "__main__":
    cli.run(main)
