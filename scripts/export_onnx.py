#!/usr/bin/env python
"""Export a checkpoint's network to ONNX for deployment without PyTorch: MODEL.onnx (RGB 0..255
in, normalisation in the graph, raw heatmaps / detection maps / PAFs out), MODEL.json (what the
decoder needs besides the graph: input geometry, keypoints, anchors, thresholds, grouping),
MODEL.prn.npz (the PRN's weights, MultiPoseNet) and posenet_decoder/ (the numpy decoder) in
the folder of --out; with --int8 also MODEL.int8.onnx + MODEL.int8.json, the network quantised to
int8 (onnxruntime static quantisation calibrated on the run's training images). The graph is
checked with onnx.checker and compared with PyTorch on onnxruntime; the outputs, the check and
the max abs differences are printed. Run the export with scripts/infer.py --runtime onnx --onnx
MODEL.onnx (or MODEL.int8.onnx), or python FOLDER/posenet_decoder MODEL.json IMAGE."""
import argparse

from posenet import cli


def main():
    parser = argparse.ArgumentParser(description=__doc__, epilog="Trailing key.sub=value arguments override "
                                     "config keys, e.g. infer.box_threshold=0.5 (written into MODEL.json).")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint (MultiPoseNet: with the detection branch), "
                        "or the OpenPose release's pose_model.pth with --config configs/openpose_vgg19.yaml")
    parser.add_argument("--out", required=True, help="the .onnx file to write (the other files go beside it)")
    parser.add_argument("--config", help="config (default: config.yaml beside the checkpoint)")
    parser.add_argument("--input-size", type=int, help="longer image side (infer.input_size); the fixed graph's "
                        "side is it (times the largest infer.scales) rounded up to the model's divisor")
    parser.add_argument("--dynamic", action="store_true", help="free input height and width (multiples of the "
                        "divisor) instead of a fixed square graph")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (17 or newer; default 18)")
    parser.add_argument("--int8", action="store_true", help="also write the int8 export beside it (MODEL.int8.onnx + "
                        "MODEL.int8.json): onnxruntime static quantisation, calibrated on training images")
    parser.add_argument("--calibration-images", type=int, default=64, metavar="N",
                        help="with --int8: how many images calibrate the activations (default 64, evenly spaced over "
                        "the run's training split)")
    parser.add_argument("--calibration-dir", metavar="DIR", help="with --int8: calibrate on the images of DIR instead")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_intermixed_args()

    from posenet.deploy.export import export_checkpoint

    summary = export_checkpoint(args.checkpoint, args.out, config=args.config, overrides=args.overrides,
                                input_size=args.input_size, dynamic=args.dynamic, opset=args.opset, int8=args.int8,
                                calibration_images=args.calibration_images, calibration_dir=args.calibration_dir)
    size = summary["input_size"]
    print(f"{summary['family']} -> {summary['files']['onnx']} "
          f"({'dynamic height and width' if summary['dynamic'] else f'fixed input {size[0]}x{size[1]}'})")
    print(f"outputs: {', '.join(summary['outputs'])}")
    check = summary["check"]
    print(f"onnx.checker: ok (opset {check['opset']}, input {', '.join(check['inputs'])})")
    diffs = summary["max_abs_diff"]
    print("max abs difference onnxruntime vs PyTorch: "
          + ", ".join(f"{name} {value:.2e}" for name, value in diffs.items())
          + f" (worst {max(diffs.values()):.2e})")
    print("files: " + ", ".join(summary["files"].values()))
    if "int8" in summary:
        q, files = summary["int8"]["quantization"], summary["int8"]["files"]
        print(f"int8: {files['onnx']} + {files['metadata']} ({q['weights']} weights, {q['activations']} activations, "
              f"{q['method']} calibration on {q['calibration_source']}, {q['seconds']:.0f} s)")
        for name, d in summary["int8"]["differences"].items():
            print(f"int8 {name} vs float32 on {d['inputs']} calibration inputs: max |diff| {d['max_abs']:.3g}, "
                  f"mean {d['mean_abs']:.2g} (largest value {d['largest']:.3g}); its AP: scripts/val_keypoint.py "
                  f"--runtime onnx --onnx {files['onnx']}")


if __name__ == "__main__":
    cli.run(main)
