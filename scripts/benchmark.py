#!/usr/bin/env python
"""posenet benchmarks. One subcommand per benchmark; the logic lives in posenet.utils.benchmark.

    python scripts/benchmark.py nms [--device cuda] [--threads 1] [--markdown-out FILE] [--update-readme]
    python scripts/benchmark.py data [--root DIR] [--workers 2] [--input-size 480]
    python scripts/benchmark.py decode [--config FILE] [--checkpoint CKPT] [--input-size 480] [--people 20]

To add a benchmark, write ``add_<name>_parser(subparsers)`` that registers its options and a
``run`` function (``parser.set_defaults(run=...)``), and list it in SUBCOMMANDS.
"""
from __future__ import annotations

import argparse
import os
import sys

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _emit(markdown: str, args: argparse.Namespace) -> None:
    from posenet.utils.benchmark import replace_readme_section

    print(markdown, end="")
    if args.markdown_out:
        tmp = f"{args.markdown_out}.tmp"
        with open(tmp, "w") as f:
            f.write(markdown)
        os.replace(tmp, args.markdown_out)
        print(f"\nwritten to {args.markdown_out}")
    if args.update_readme:
        replace_readme_section(README, args.command, markdown)
        print(f"\nREADME.md section '{args.command}' updated")


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--markdown-out", metavar="FILE", help="also write the table to FILE")
    p.add_argument("--update-readme", action="store_true",
                   help="replace this benchmark's table in README.md (between its benchmark markers)")


# --------------------------------------------------------------------------- nms


def run_nms(args: argparse.Namespace) -> int:
    import torch

    from posenet.utils import benchmark as bench

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("benchmark nms: --device cuda needs a CUDA GPU, and none is available", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    timing = dict(
        warmup=args.warmup, repeats=args.repeats, min_repeats=min(5, args.repeats), budget_s=args.budget
    )
    rows = bench.benchmark_nms(
        args.sizes,
        args.distributions,
        iou_threshold=args.iou,
        device=args.device,
        fallback=not args.no_fallback,
        seed=args.seed,
        **timing,
    )
    protocol = bench.nms_protocol(iou_threshold=args.iou, device=args.device, **timing)
    _emit(bench.format_nms_table(rows, bench.machine_info(args.device), protocol), args)
    return 0


def add_nms_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "nms",
        help="posenet's compiled NMS vs torchvision.ops.nms vs the pure-torch fallback",
        description="Compare posenet.ops.nms (compiled), torchvision.ops.nms and posenet's "
        "pure-torch fallback on clustered and scattered boxes; prints a markdown table.",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="numbers of boxes")
    p.add_argument(
        "--distributions", nargs="+", default=["clustered", "scattered"],
        choices=["clustered", "scattered"],
    )
    p.add_argument("--iou", type=float, default=0.5, help="IoU threshold (default: 0.5)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default: 1)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per cell (default: 2)")
    p.add_argument("--repeats", type=int, default=25, help="timed calls per cell, at most (default: 25)")
    p.add_argument("--budget", type=float, default=5.0,
                   help="seconds per cell after which timing stops, once 5 calls are done (default: 5)")
    p.add_argument("--no-fallback", action="store_true", help="skip the slow pure-torch fallback")
    p.add_argument("--seed", type=int, default=0)
    _add_output_options(p)
    p.set_defaults(run=run_nms)


# --------------------------------------------------------------------------- data


def run_data(args: argparse.Namespace) -> int:
    from posenet.data.bench import benchmark_data, format_data_benchmark

    result = benchmark_data(
        args.root, split=args.split, input_size=args.input_size, workers=args.workers,
        num_samples=args.samples, batch_size=args.batch_size, train=not args.val, seed=args.seed,
    )
    _emit(format_data_benchmark(result), args)
    return 0


def add_data_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "data",
        help="keypoint-stage training samples per second (decode, augment, targets)",
        description="Samples per second of the keypoint-stage data pipeline through a DataLoader, "
        "plus a single-process split of the time into decode, augmentation and targets.",
    )
    p.add_argument("--root", default=os.path.normpath(os.path.join(os.path.dirname(README), "..", "shared", "data", "coco-mini")),
                   help="COCO-layout dataset root (default: ../shared/data/coco-mini)")
    p.add_argument("--split", default="train2017")
    p.add_argument("--input-size", type=int, default=480)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--samples", type=int, default=960, help="samples timed through the DataLoader")
    p.add_argument("--val", action="store_true", help="validation samples (no augmentation)")
    p.add_argument("--seed", type=int, default=0)
    _add_output_options(p)
    p.set_defaults(run=run_data)


# --------------------------------------------------------------------------- decode


def run_decode(args: argparse.Namespace) -> int:
    from posenet.config import load_config
    from posenet.inference.bench import benchmark_decode, format_decode_table

    cfg = load_config(args.config, args.overrides)
    result = benchmark_decode(cfg, input_size=args.input_size, people=args.people, checkpoint=args.checkpoint,
                              threads=args.threads)
    _emit(format_decode_table(result), args)
    return 0


def add_decode_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "decode",
        help="inference time per image: the network, and decoding (peaks + PRN/greedy grouping) separately",
        description="Network time on a random image and decoding time (peaks, grouping, mapping back) on a "
        "crowded scene, per image, on the CPU.",
    )
    p.add_argument("--config", default=os.path.join(os.path.dirname(README), "configs", "synthetic_small.yaml"))
    p.add_argument("--checkpoint", help="weights to time (default: random initialisation)")
    p.add_argument("--input-size", type=int, default=480)
    p.add_argument("--people", type=int, default=20)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default: 1)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    _add_output_options(p)
    p.set_defaults(run=run_decode)


SUBCOMMANDS = [add_nms_parser, add_data_parser, add_decode_parser]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="posenet benchmarks")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
