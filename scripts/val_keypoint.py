#!/usr/bin/env python
"""COCO keypoint AP (pycocotools) and the masked heatmap loss of a checkpoint on data.val_split."""
from posenet import cli
from posenet.evaluation import write_results
from posenet.utils.io import write_json_atomic
from posenet.stages import keypoint


def main():
    parser = cli.config_parser(__doc__)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint (last.pt / best.pt)")
    parser.add_argument("--flip", action="store_true", help="average with the mirrored image's heatmaps")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--metrics-out", help="write AP, AP50, AP75, APM, APL, AR and the loss as JSON")
    parser.add_argument("--results-out", help="write the COCO-format results file")
    args, cfg = cli.parse_config_args(parser)
    if args.flip:
        cfg.eval.flip = True
    metrics, evaluator = keypoint.validate(cfg, args.checkpoint, device=args.device)
    if args.results_out:
        write_results(evaluator.last_results, args.results_out)
    if args.metrics_out:
        write_json_atomic(args.metrics_out, keypoint.metrics_record(metrics, evaluator, args.checkpoint), indent=2)


if __name__ == "__main__":
    cli.run(main)
