"""Poses in a video: a camera (its index: 0, 1, ...), a video file or a folder of frames. Each
person gets a track id that persists across frames (video.* config keys: docs/video.md). Written
as JSON lines, one per frame (--json), and/or drawn as skeletons coloured by track id with a line
of network ms, decoding ms and frames per second, as an mp4 (--out) and/or in a window (--show;
q or Esc quits, as does Ctrl-C, which still finishes both files). With --runtime onnx an export
of scripts/export_onnx.py runs instead of a checkpoint."""
import argparse

from posenet import cli


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     epilog="Trailing key.sub=value arguments override config keys, e.g. infer.flip=true "
                                            "video.smooth=true.")
    cli.add_predictor_args(parser)
    parser.add_argument("--source", required=True,
                        help="camera index (0, 1, ...), video file, or folder of frames (jpg, png, bmp; sorted by name)")
    parser.add_argument("--out", help="annotated video to write (.mp4, mp4v codec)")
    parser.add_argument("--json", metavar="FILE",
                        help="the people of every frame as JSON lines (frame, time, people with track_id, score, box, "
                             "keypoints); with --json alone nothing is drawn")
    parser.add_argument("--show", action="store_true",
                        help="show the frames in a window (needs a display and an OpenCV with GUI support)")
    parser.add_argument("--fps", type=float,
                        help="frame rate of the written video and the time stamps (default: the source's, else 25)")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")
    parser.add_argument("--serial", action="store_true",
                        help="read, run and write each frame before the next (default: the three overlap in threads)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_intermixed_args()

    from posenet.inference.video import VideoDemo, video_section

    # an export takes infer.* overrides only: the video.* ones are read apart
    video_overrides = [o for o in args.overrides if o.startswith("video.")]
    predictor_overrides = [o for o in args.overrides if not o.startswith("video.")] \
        if args.runtime == "onnx" else args.overrides
    # the source and the outputs are checked before the model loads
    with VideoDemo(args.source, out=args.out, show=args.show, json=args.json, fps=args.fps,
                   max_frames=args.max_frames, pipeline=not args.serial) as demo:
        predictor = cli.predictor_from_args(args, predictor_overrides)
        if args.runtime == "torch":
            from posenet.config.build import run_config

            demo.tracking = run_config(args.checkpoint, args.config, args.overrides).video
        else:
            demo.tracking = video_section(video_overrides)
        demo.run(predictor)


if __name__ == "__main__":
    cli.run(main)
