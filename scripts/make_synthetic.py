#!/usr/bin/env python
"""Write the deterministic synthetic COCO person-keypoint dataset (COCO 2017 layout), or with
--video a synthetic video with ground-truth track ids (OUT/frames/*.jpg, OUT/annotations.json).

Examples:
    python scripts/make_synthetic.py --out data/synthetic --train 400 --val 100 --seed 0 --workers 2
    python scripts/make_synthetic.py --video --out data/synthetic_video --frames 60 --walkers 4
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from posenet.data.synthetic import (  # noqa: E402
    SyntheticCocoGenerator, SyntheticVideo, format_summary, write_synthetic_coco, write_synthetic_video,
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
    video = ap.add_argument_group("--video: people walking across a scene, a track id on every annotation")
    video.add_argument("--video", action="store_true", help="write a video instead of the image dataset")
    video.add_argument("--frames", type=int, default=60)
    video.add_argument("--walkers", type=int, default=4, help="people walking across, crossing in pairs")
    video.add_argument("--still", type=int, default=1, help="people standing still")
    video.add_argument("--width", type=int, default=256)
    video.add_argument("--height", type=int, default=160)
    video.add_argument("--fps", type=float, default=10.0, help="frame rate of the time stamps")
    args = ap.parse_args(argv)
    if args.video:
        try:
            world = SyntheticVideo(width=args.width, height=args.height, frames=args.frames, fps=args.fps,
                                   walkers=args.walkers, still=args.still)
            summary = write_synthetic_video(args.out, seed=args.seed, video=world, progress=not args.no_progress)
        except (ValueError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"wrote {summary['out_dir']} (seed {summary['seed']}): {summary['frames']} frames, "
              f"{summary['persons']} persons of {summary['tracks']} tracks in {summary['seconds']:.1f} s")
        return 0
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
