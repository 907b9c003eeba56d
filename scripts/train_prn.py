#!/usr/bin/env python
"""Stage 3: train the Pose Residual Network on ground-truth annotations (no images), on top of
a keypoint- or detection-stage checkpoint whose parts stay frozen; validated as GT keypoints
grouped into GT boxes."""
from posenet import cli
from posenet.stages import prn


def main():
    parser = cli.config_parser(__doc__)
    parser.add_argument("--init", help="a keypoint- or detection-stage checkpoint (without it only the PRN is of use)")
    parser.add_argument("--out", help="run directory (default: OUTPUT_DIR/prn)")
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    args, cfg = cli.parse_config_args(parser, stage="prn")
    records = prn.train(cfg, init=args.init, out_dir=args.out, resume=args.resume)
    if records:
        last = records[-1]
        print(f"finished: epoch {last.get('epoch')}, GT-keypoints + GT-boxes AP {last.get('AP', float('nan')):.4f}")


if __name__ == "__main__":
    cli.run(main)
