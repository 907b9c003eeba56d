#!/usr/bin/env python
"""COCO keypoint AP (pycocotools) of a checkpoint on data.val_split, with its protocol, for the
config's model family (model.family).

MultiPoseNet modes: "end-to-end" (heatmap peaks + detected boxes + grouping: what infer.py
does) and its ablations "pred-keypoints-gt-boxes", "gt-keypoints-pred-boxes",
"gt-keypoints-gt-boxes", each with --grouping (any of posenet.inference.groupings: prn,
greedy); "auto" (default) is end-to-end when the checkpoint has a detection branch (greedy
grouping when it has no PRN), else the keypoint stage's own protocol (predicted keypoints in
ground-truth boxes, with the masked heatmap loss).

OpenPose modes: "auto" / "end-to-end" (the PAF network, peaks and PAF grouping: what infer.py
does), "gt-maps" (the ground truth's training targets instead of the network: the ceiling of
the protocol; no --checkpoint needed) and the branch ablations "gt-heatmaps" (the ground truth's
part heatmaps with the network's PAFs) and "gt-pafs" (the network's part heatmaps with the
ground truth's PAFs). Scales and flip: infer.scales, --flip; e.g. the release's protocol is
infer.scales=[0.5,1.0,1.5,2.0,2.5] --flip.

--runtime onnx --onnx MODEL.onnx: the end-to-end AP of an export of scripts/export_onnx.py
(onnxruntime and the numpy decoder, settings from its metadata; trailing infer.* overrides and
--flip apply to it) on the --config's data.val_split.
"""
from posenet import cli, families
from posenet.errors import ConfigError
from posenet.evaluation import write_results
from posenet.inference.groupings import GROUPINGS
from posenet.utils.io import write_json_atomic


def main():
    parser = cli.config_parser(__doc__)
    parser.add_argument("--checkpoint", help="a checkpoint (last.pt / best.pt), or the OpenPose release's "
                        "pose_model.pth / pose_model_scratch.pth with configs/openpose_vgg19.yaml; --runtime torch")
    parser.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                        help="torch: the checkpoint; onnx: an export (--onnx) end to end")
    parser.add_argument("--onnx", help="the exported model.onnx (its model.json beside it); --runtime onnx")
    modes = dict.fromkeys(m for family in families.FAMILIES.values() for m in family.modes)
    parser.add_argument("--mode", default="auto", choices=list(modes), help="what is evaluated (see above)")
    parser.add_argument("--grouping", choices=sorted(g for g in GROUPINGS if not GROUPINGS[g].bottom_up),
                        help="MultiPoseNet: how keypoints join boxes (default: infer.grouping)")
    parser.add_argument("--flip", action="store_true", help="average with the mirrored image's maps")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--metrics-out", help="write AP, AP50, AP75, APM, APL, AR (and the protocol) as JSON")
    parser.add_argument("--results-out", help="write the COCO-format results file")
    args, cfg = cli.parse_config_args(parser)
    if args.flip:
        cfg.eval.flip = cfg.infer.flip = True
    if args.grouping:
        cfg.infer.grouping = args.grouping
    if args.runtime == "onnx":
        if not args.onnx or args.checkpoint or args.grouping or args.mode not in ("auto", "end-to-end"):
            raise ConfigError("--runtime onnx takes --onnx MODEL.onnx and evaluates end to end with the export's "
                              "grouping (no --checkpoint, --grouping or other --mode)")
        overrides = [o for o in args.overrides if o.startswith("infer.")] + (["infer.flip=true"] if args.flip else [])
        metrics, evaluator, record = families.of(cfg).validate_export(cfg, args.onnx, overrides)
    else:
        if args.onnx or not (args.checkpoint or args.mode == "gt-maps"):
            raise ConfigError("--runtime torch takes --checkpoint (for an export: --runtime onnx --onnx MODEL.onnx; "
                              "--mode gt-maps needs none)")
        metrics, evaluator, record = families.of(cfg).validate(cfg, args.checkpoint, args.mode, device=args.device)
    if args.results_out:
        write_results(evaluator.last_results, args.results_out)
    if args.metrics_out:
        write_json_atomic(args.metrics_out, record, indent=2)


if __name__ == "__main__":
    cli.run(main)
