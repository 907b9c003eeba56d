"""The portable decoder's command line: people in images with an exported model.

    python -m posenet_decoder export/model.json photo.jpg [...] [--out results.json]
    python export/posenet_decoder export/model.json photo.jpg     # the folder run as a script
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

if __package__:
    from .model import load, read_image, to_json
else:  # the folder run as a script: import it as the package it is
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[0] = os.path.dirname(_here)
    _package = importlib.import_module(os.path.basename(_here))
    load, read_image, to_json = _package.load, _package.read_image, _package.to_json


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="People in images with an exported posenet model "
                                                 "(numpy + onnxruntime only).")
    parser.add_argument("model", help="the model's metadata file (model.json)")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", help="write the results of all images to this JSON file")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    args = parser.parse_args(argv)
    try:
        model = load(args.model, threads=args.threads)
        results = {}
        for path in args.images:
            result = model.run(read_image(path))
            results[path] = to_json(result)
            t = result["timing"]
            print(f"{path}: {len(result['people'])} people, network {t['network_ms']:.1f} ms, "
                  f"decoding {t['decode_ms']:.1f} ms")
        if args.out:
            tmp = args.out + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(results, f)
            os.replace(tmp, args.out)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
