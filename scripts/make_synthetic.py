#!/usr/bin/env python
"""Write the deterministic synthetic COCO person-keypoint dataset (COCO 2017 layout).

Example:
    python scripts/make_synthetic.py --out data/synthetic --train 400 --val 100 --seed 0 --workers 2
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from posenet.data.synthetic import (  # noqa: E402
    SyntheticCocoGenerator, format_summary, write_synthetic_coco,
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="dataset root to write")
    ap.add_argument("--train", type=int, default=400, help="number of train2017 images")
    ap.add_argument("--val", type=int, default=100, help="number of val2017 images")
    ap.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    ap.add_argument("--workers", type=int, default=1, help="processes (output does not depend on it)")
    ap.add_argument("--min-people", type=int, default=0)
    ap.add_argument("--max-people", type=int, default=8)
    ap.add_argument("--min-size", type=int, default=256, help="smallest image side (px)")
    ap.add_argument("--max-size", type=int, default=640, help="largest image side (px)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    try:
        gen = SyntheticCocoGenerator(min_people=args.min_people, max_people=args.max_people,
                                     min_size=args.min_size, max_size=args.max_size)
        summary = write_synthetic_coco(args.out, args.train, args.val, seed=args.seed,
                                       workers=args.workers, generator=gen,
                                       progress=not args.no_progress)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
