#!/usr/bin/env python
"""Poses for every image in a folder: a COCO-format results file, one JSON per image, and
pictures (heatmaps over the image, person boxes, skeletons, and a panel with all three). With
--runtime onnx an export of scripts/export_onnx.py runs instead of a checkpoint: the same outputs."""
import argparse

from posenet import cli


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     epilog="Trailing key.sub=value arguments override config keys, e.g. infer.box_threshold=0.5.")
    parser.add_argument("--checkpoint", help="a full checkpoint (detection or PRN stage); --runtime torch")
    parser.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                        help="torch: the checkpoint with PyTorch; onnx: an export of scripts/export_onnx.py on "
                             "onnxruntime with its numpy decoder (settings from its metadata)")
    parser.add_argument("--onnx", help="the exported model.onnx (its model.json beside it); --runtime onnx")
    parser.add_argument("--images", required=True, help="folder of images (jpg, png, bmp)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--config", help="config (default: config.yaml beside the checkpoint); --runtime torch")
    parser.add_argument("--flip", action="store_true", help="average with the mirrored image's heatmaps")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (--runtime torch)")
    parser.add_argument("--no-pictures", action="store_true", help="write only the JSON files")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args()

    from posenet.errors import ConfigError
    from posenet.inference import infer_folder, load_predictor

    overrides = list(args.overrides) + (["infer.flip=true"] if args.flip else [])
    if args.runtime == "onnx":
        from posenet.deploy.onnx_predictor import OnnxPredictor

        if not args.onnx or args.checkpoint or args.config:
            raise ConfigError("--runtime onnx takes --onnx MODEL.onnx (the export's metadata gives the settings), "
                              "not --checkpoint or --config")
        predictor = OnnxPredictor(args.onnx, overrides)
    else:
        if not args.checkpoint or args.onnx:
            raise ConfigError("--runtime torch takes --checkpoint (for an export: --runtime onnx --onnx MODEL.onnx)")
        predictor = load_predictor(args.checkpoint, args.config, overrides, device=args.device)
    infer_folder(predictor, args.images, args.out, pictures=not args.no_pictures)


if __name__ == "__main__":
    cli.run(main)
