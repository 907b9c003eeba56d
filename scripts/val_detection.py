#!/usr/bin/env python
"""Official COCO person box AP (pycocotools) of a detection-stage checkpoint on data.val_split."""
from posenet import cli
from posenet.evaluation import write_results
from posenet.stages import detection
from posenet.utils.io import write_json_atomic


def main():
    parser = cli.config_parser(__doc__)
    parser.add_argument("--checkpoint", required=True, help="a detection-stage checkpoint (last.pt / best.pt)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--metrics-out", help="write AP, AP50, AP75, APS, APM, APL as JSON")
    parser.add_argument("--results-out", help="write the COCO-format box results file")
    args, cfg = cli.parse_config_args(parser, stage="detection")
    metrics, evaluator = detection.validate(cfg, args.checkpoint, device=args.device)
    if args.results_out:
        write_results(evaluator.last_results, args.results_out)
    if args.metrics_out:
        write_json_atomic(args.metrics_out, evaluator.metrics_record(metrics, args.checkpoint), indent=2)


if __name__ == "__main__":
    cli.run(main)
