#!/usr/bin/env python
"""Stage 1 of the config's model family (single process or torchrun): MultiPoseNet's trunk,
keypoint FPN and keypoint subnet, or the OpenPose family's PAF network (model.family)."""
from posenet import cli, families


def main():
    parser = cli.config_parser(__doc__)
    parser.add_argument("--out", help="run directory (default: OUTPUT_DIR/keypoint, as the other stages' OUTPUT_DIR/<stage>)")
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    args, cfg = cli.parse_config_args(parser)
    records = families.of(cfg).train(cfg, out_dir=args.out, resume=args.resume)
    if records:
        last = records[-1]
        print(f"finished: epoch {last.get('epoch')}, AP {last.get('AP', float('nan')):.4f}")


if __name__ == "__main__":
    cli.run(main)
