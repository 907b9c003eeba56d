#!/usr/bin/env python
"""The test stage: a results file for the COCO evaluation server (test-dev2017, whose
annotations are not public), from a checkpoint of either family or an ONNX export.

  python scripts/test.py --checkpoint RUN/best.pt --image-info COCO/annotations/image_info_test-dev2017.json \\
      --images COCO/test2017 --out submission --name mymodel [--flip] [infer.scales=[1.0,0.5]]

writes submission/person_keypoints_test-dev2017_mymodel_results.json and its zip (the file to
upload), with the config's test-time scales and flip. Every listed image must be processed: a
missing or unreadable one is named (missing_images.json) and the zip is not written unless
--allow-missing.
"""
import argparse

from posenet import cli


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Trailing key.sub=value arguments override config keys, e.g. infer.scales=[1.0,0.5].")
    cli.add_predictor_args(parser)
    parser.add_argument("--image-info", required=True,
                        help="COCO image-info file listing the images (annotations/image_info_test-dev2017.json)")
    parser.add_argument("--images", required=True, help="folder holding the listed images (test2017/)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--name", required=True, help="the method's name in the results file name (letters, digits, '-')")
    parser.add_argument("--split", help="the split in the file name (default: from --image-info, e.g. test-dev2017)")
    parser.add_argument("--flip", action="store_true", help="average with the mirrored image's maps")
    parser.add_argument("--allow-missing", action="store_true", help="zip the results even if listed images failed")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args()

    from posenet.inference.submission import predict_split

    predictor = cli.predictor_from_args(args, list(args.overrides) + (["infer.flip=true"] if args.flip else []))
    predict_split(predictor, args.image_info, args.images, args.out, args.name, split=args.split,
                  allow_missing=args.allow_missing)


if __name__ == "__main__":
    cli.run(main)
