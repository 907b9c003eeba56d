#!/usr/bin/env python
"""Poses for every image in a folder: a COCO-format results file, one JSON per image, and
pictures (heatmaps over the image, person boxes, skeletons, and a panel with all three)."""
import argparse

from posenet import cli


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     epilog="Trailing key.sub=value arguments override config keys, e.g. infer.box_threshold=0.5.")
    parser.add_argument("--checkpoint", required=True, help="a full checkpoint (detection or PRN stage)")
    parser.add_argument("--images", required=True, help="folder of images (jpg, png, bmp)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--config", help="config (default: config.yaml beside the checkpoint)")
    parser.add_argument("--flip", action="store_true", help="average with the mirrored image's heatmaps")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--no-pictures", action="store_true", help="write only the JSON files")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args()

    from posenet.inference import infer_folder, load_predictor

    overrides = list(args.overrides) + (["infer.flip=true"] if args.flip else [])
    predictor = load_predictor(args.checkpoint, args.config, overrides, device=args.device)
    infer_folder(predictor, args.images, args.out, pictures=not args.no_pictures)


if __name__ == "__main__":
    cli.run(main)
