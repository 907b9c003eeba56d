#!/usr/bin/env python
"""Poses for every image in a folder: a COCO-format results file, one JSON per image, and
pictures (heatmaps over the image, person boxes, skeletons, and a panel with all three). With
--runtime onnx an export of scripts/export_onnx.py runs instead of a checkpoint: the same outputs.
--batch N runs the images through the network N at a time (images of the same input size
together: the same people as one at a time); --workers W reads and prepares them in W processes
while the network runs."""
import argparse

from posenet import cli


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     epilog="Trailing key.sub=value arguments override config keys, e.g. infer.box_threshold=0.5.")
    cli.add_predictor_args(parser)
    parser.add_argument("--images", required=True, help="folder of images (jpg, png, bmp)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--flip", action="store_true", help="average with the mirrored image's heatmaps")
    parser.add_argument("--no-pictures", action="store_true", help="write only the JSON files")
    parser.add_argument("--batch", type=int, default=1,
                        help="images per network pass, grouped by input size (default: 1; --runtime onnx: 1 only)")
    parser.add_argument("--workers", type=int, default=0,
                        help="loader processes reading and preparing images ahead of the network (default: 0)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args()

    from posenet.inference import infer_folder
    from posenet.inference.folder import check_loader

    check_loader(args.batch, args.workers, batches=args.runtime != "onnx")  # before loading anything
    overrides = list(args.overrides) + (["infer.flip=true"] if args.flip else [])
    predictor = cli.predictor_from_args(args, overrides)
    infer_folder(predictor, args.images, args.out, pictures=not args.no_pictures, batch_size=args.batch,
                 workers=args.workers)


if __name__ == "__main__":
    cli.run(main)
