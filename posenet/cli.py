"""What every script shares: ``--config FILE`` plus trailing ``key.sub=value`` overrides, and
one-line errors instead of tracebacks for problems the user can fix."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from omegaconf import DictConfig

from posenet import families
from posenet.config import load_config
from posenet.deploy.onnx_predictor import OnnxPredictor
from posenet.errors import ConfigError, PosenetError
from posenet.families import load_predictor


def config_parser(description: str, config_required: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Trailing key.sub=value arguments override config keys, e.g. synthetic.seed=3.",
    )
    parser.add_argument("--config", required=config_required, help="YAML config file (may use _base_ inheritance)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser


def parse_config_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None,
                      stage: str | None = None) -> tuple[argparse.Namespace, DictConfig]:
    """The arguments and the config; with ``stage``, a clear error when the config's model
    family has no such stage (e.g. detection for the OpenPose family)."""
    # Intermixed: key=value overrides may come before, between or after the options.
    args = parser.parse_intermixed_args(argv)
    cfg = load_config(args.config, args.overrides)
    if stage is not None:

        families.of(cfg).check_stage(stage)
    return args, cfg


# What --checkpoint takes where a predictor runs (infer.py, video.py).
CHECKPOINT_HELP = ("a checkpoint: MultiPoseNet's with person boxes (detection or PRN stage), OpenPose's keypoint "
                   "stage, or the OpenPose release's pose_model.pth / pose_model_scratch.pth (with --config "
                   "configs/openpose_vgg19.yaml)")


def add_predictor_args(parser: argparse.ArgumentParser, what: str = CHECKPOINT_HELP) -> None:
    """The options that choose a predictor: a checkpoint on PyTorch, or an ONNX export
    (``scripts/export_onnx.py``) on onnxruntime with its numpy decoder (``predictor_from_args``)."""
    parser.add_argument("--checkpoint", help=f"{what}; --runtime torch")
    parser.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                        help="torch: the checkpoint with PyTorch; onnx: an export of scripts/export_onnx.py on "
                             "onnxruntime with its numpy decoder (settings from its metadata)")
    parser.add_argument("--onnx", help="the exported model.onnx (its model.json beside it); --runtime onnx")
    parser.add_argument("--config", help="config (default: config.yaml beside the checkpoint); --runtime torch")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (--runtime torch)")


def predictor_from_args(args: argparse.Namespace, overrides: Sequence[str] = ()):
    """The predictor ``add_predictor_args``' options name, with ``overrides`` (key=value; an
    export takes ``infer.*`` ones only); ConfigError for a mix of the two runtimes' options."""

    if args.runtime == "onnx":

        if not args.onnx or args.checkpoint or args.config:
            raise ConfigError("--runtime onnx takes --onnx MODEL.onnx (the export's metadata gives the settings), "
                              "not --checkpoint or --config")
        return OnnxPredictor(args.onnx, overrides)
    if not args.checkpoint or args.onnx:
        raise ConfigError("--runtime torch takes --checkpoint (for an export: --runtime onnx --onnx MODEL.onnx)")

    return load_predictor(args.checkpoint, args.config, overrides, device=args.device)


def run(main: Callable[[], int | None]) -> None:
    """Run a script's ``main``; a :class:`PosenetError` becomes one line on stderr and exit 2."""
    try:
        code = main()
    except PosenetError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
