#!/usr/bin/env python
"""Poses in a video: a camera (its index: 0, 1, ...), a video file or a folder of frames, every
frame drawn with its skeletons and a line of network ms, decoding ms and frames per second;
written as an mp4 (--out) and/or shown in a window (--show; q or Esc quits, as does Ctrl-C,
which still finishes the video). With --runtime onnx an export of scripts/export_onnx.py runs
instead of a checkpoint."""
import argparse

from posenet import cli


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     epilog="Trailing key.sub=value arguments override config keys, e.g. infer.flip=true.")
    cli.add_predictor_args(parser)
    parser.add_argument("--source", required=True,
                        help="camera index (0, 1, ...), video file, or folder of frames (jpg, png, bmp; sorted by name)")
    parser.add_argument("--out", help="annotated video to write (.mp4, mp4v codec)")
    parser.add_argument("--show", action="store_true",
                        help="show the frames in a window (needs a display and an OpenCV with GUI support)")
    parser.add_argument("--fps", type=float, help="frame rate of the written video (default: the source's, else 25)")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_intermixed_args()

    from posenet.inference.video import VideoDemo

    # the source and the outputs are checked before the model loads
    with VideoDemo(args.source, out=args.out, show=args.show, fps=args.fps, max_frames=args.max_frames) as demo:
        predictor = cli.predictor_from_args(args, args.overrides)
        demo.run(predictor)


if __name__ == "__main__":
    cli.run(main)
