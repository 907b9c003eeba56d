#!/usr/bin/env python
"""Poses for every image in a folder: a COCO-format results file, one JSON per image, and
pictures (heatmaps over the image, person boxes, skeletons, and a panel with all three). With
--runtime onnx an export of scripts/export_onnx.py runs instead of a checkpoint: the same outputs."""
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
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args()

    from posenet.inference import infer_folder

    overrides = list(args.overrides) + (["infer.flip=true"] if args.flip else [])
    predictor = cli.predictor_from_args(args, overrides)
    infer_folder(predictor, args.images, args.out, pictures=not args.no_pictures)


if __name__ == "__main__":
    cli.run(main)
