#!/usr/bin/env python
"""Stage 2: train the detection FPN and RetinaNet person heads on a keypoint-stage checkpoint
(trunk and keypoint branch frozen by default; single process or torchrun)."""
from posenet import cli
from posenet.stages import detection


def main():
    parser = cli.config_parser(__doc__)
    parser.add_argument("--init", help="the keypoint stage's checkpoint (not needed to --resume a run)")
    parser.add_argument("--out", help="run directory (default: OUTPUT_DIR/detection)")
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    args, cfg = cli.parse_config_args(parser, stage="detection")
    records = detection.train(cfg, init=args.init, out_dir=args.out, resume=args.resume)
    if records:
        last = records[-1]
        print(f"finished: epoch {last.get('epoch')}, box AP {last.get('AP', float('nan')):.4f}")


if __name__ == "__main__":
    cli.run(main)
