#!/usr/bin/env python
"""posenet benchmarks. One subcommand per benchmark; the logic lives in posenet.bench, one module each.

    python scripts/benchmark.py nms [--device cuda] [--threads 1] [--markdown-out FILE] [--update-readme]
    python scripts/benchmark.py data [--root DIR] [--workers 2] [--input-size 480]
    python scripts/benchmark.py data --scale [--workers 2] [--samples N] [--scale-dir DIR] [--update-readme]
    python scripts/benchmark.py decode [--family multiposenet|openpose] [--config FILE] [--checkpoint CKPT]
                                       [--input-size N] [--people 20] [--threads 1] [--prn-widths 1024]
                                       [--update-readme]
    python scripts/benchmark.py network [--config FILE | --port-equal] [--input-size 480] [--threads 2]
                                        [--skip compile ...] [--update-readme]
    python scripts/benchmark.py int8 CKPT [CKPT ...] [--calibration-images 64] [--update-readme]
    python scripts/benchmark.py overfit [--images 16] [--metrics-out FILE] [--update-readme]
    python scripts/benchmark.py train [--config FILE] [--steps N] [--update-readme]
    python scripts/benchmark.py learning [--config FILE] [--budget-minutes M] [--update-readme]
    python scripts/benchmark.py memory [--config FILE] [--batch N] [--skip bf16] [--device cuda] [--update-readme]
    python scripts/benchmark.py gpu --out DIR [--quick] [--device cpu] [--budget 420] [--skip PART ...] [--update-readme]
    python scripts/benchmark.py track [--checkpoint CKPT] [--seeds 0 1 2] [--rounds 3] [video.key=value ...] [--update-readme]

To add a benchmark, write ``add_<name>_parser(subparsers)`` that registers its options and a
``run`` function (``parser.set_defaults(run=...)``), and list it in SUBCOMMANDS.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
REPO = os.path.dirname(README)


def _emit(markdown: str, args: argparse.Namespace, section: str | None = None) -> None:
    """Print the table; write it to --markdown-out and into its generated block ``section``
    (default: the subcommand's name; README.md or the page of docs/ that holds the block) as
    the options say."""
    from posenet.bench.common import update_generated_block

    section = section or args.command
    print(markdown, end="")
    if args.markdown_out:
        tmp = f"{args.markdown_out}.tmp"
        with open(tmp, "w") as f:
            f.write(markdown)
        os.replace(tmp, args.markdown_out)
        print(f"\nwritten to {args.markdown_out}")
    if args.update_readme:
        home = update_generated_block(section, markdown, root=REPO)
        print(f"\n{os.path.relpath(home, REPO)}: generated block '{section}' updated")


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--markdown-out", metavar="FILE", help="also write the table to FILE")
    p.add_argument("--update-readme", action="store_true",
                   help="rewrite this table's block in README.md or docs/ (between its benchmark markers)")


# --------------------------------------------------------------------------- nms


def run_nms(args: argparse.Namespace) -> int:
    import torch

    from posenet.bench import common
    from posenet.bench import nms as bench

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
    # one block per device type: "nms" (CPU), "nms-cuda" (GPU)
    device_type = torch.device(args.device).type
    section, title = ("nms", "NMS benchmark") if device_type == "cpu" else \
        (f"nms-{device_type}", f"NMS benchmark on a GPU ({device_type})")
    _emit(bench.format_nms_table(rows, common.machine_info(args.device), protocol, title=title), args, section=section)
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
    if args.scale:
        return run_data_scale(args)
    from posenet.bench.data_loading import benchmark_data, format_data_benchmark

    result = benchmark_data(
        args.root, split=args.split, input_size=args.input_size, workers=args.workers,
        num_samples=args.samples or 960, batch_size=args.batch_size, train=not args.val, seed=args.seed,
    )
    _emit(format_data_benchmark(result), args)
    return 0


def run_data_scale(args: argparse.Namespace) -> int:
    """``data --scale``: build time and memory on a COCO-sized file (README section 'data-scale')."""
    from posenet.bench.data_scale import benchmark_data_scale, format_data_scale

    result = benchmark_data_scale(args.scale_config, workers=args.workers, num_samples=args.samples,
                                  batch_size=args.batch_size, seed=args.seed, scale_dir=args.scale_dir)
    _emit(format_data_scale(result), args, section="data-scale")
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
    p.add_argument("--samples", type=int,
                   help="samples timed through the DataLoader (default: 960; with --scale the whole epoch)")
    p.add_argument("--val", action="store_true", help="validation samples (no augmentation)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", action="store_true",
                   help="COCO scale: write a COCO-sized annotation file, report the dataset's build time, the main "
                   "process's RSS and each worker's PSS over an epoch (README section data-scale)")
    p.add_argument("--scale-config", default=os.path.join(os.path.dirname(README), "configs", "coco2017_r50.yaml"),
                   help="with --scale: the config whose data and keypoint settings build the dataset")
    p.add_argument("--scale-dir", help="with --scale: write the file here, or reuse the one written there before "
                   "(default: a temporary folder)")
    _add_output_options(p)
    p.set_defaults(run=run_data)


# --------------------------------------------------------------------------- decode


def run_decode(args: argparse.Namespace) -> int:
    """The decode benchmark of the model family (--family, default the config's): each family
    names its own (``Family.decode_benchmark``)."""
    from posenet import families
    from posenet.config import load_config

    cfg = load_config(args.config, args.overrides)
    family = families.FAMILIES[args.family]() if args.family else families.of(cfg)
    bench = importlib.import_module(f"posenet.bench.{family.decode_benchmark}")
    table = bench.run(cfg, family, input_size=args.input_size, people=args.people, checkpoint=args.checkpoint,
                      threads=args.threads, repeats=args.repeats, prn_widths=args.prn_widths)
    _emit(table, args, section=family.block("decode"))
    return 0


def add_decode_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "decode",
        help="inference time per image: the network, and decoding (peaks + grouping) separately",
        description="MultiPoseNet (default): network time on a random image and decoding time (peaks, "
        "PRN/greedy grouping, mapping back) on a crowded scene. OpenPose (--family openpose): peaks and PAF "
        "grouping on the perfect targets of separated people. Per image, on the CPU.",
    )
    p.add_argument("--family", metavar="NAME",
                   help="model family whose decoding is timed: multiposenet or openpose (default: the config's model.family)")
    p.add_argument("--config", default=os.path.join(os.path.dirname(README), "configs", "synthetic_small.yaml"))
    p.add_argument("--checkpoint", help="weights to time (default: random initialisation)")
    p.add_argument("--input-size", type=int, help="square input side (default: 480; openpose: 368)")
    p.add_argument("--people", type=int, default=20)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default: 1)")
    p.add_argument("--repeats", type=int, help="timed calls (default: the benchmark's own)")
    p.add_argument("--prn-widths", type=int, nargs="+", default=[1024], metavar="HIDDEN",
                   help="PRN widths timed besides the config's prn.hidden, each output-layer precision (default: 1024)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    _add_output_options(p)
    p.set_defaults(run=run_decode)


# --------------------------------------------------------------------------- network


PORT_EQUAL = os.path.join(os.path.dirname(README), "configs", "port_equal_r50.yaml")


def run_network(args: argparse.Namespace) -> int:
    from posenet.config import load_config
    from posenet.bench.network import benchmark_network, format_network_table

    config = PORT_EQUAL if args.port_equal else args.config
    cfg = load_config(config, args.overrides)
    result = benchmark_network(cfg, input_size=args.input_size, threads=args.threads, people=args.people,
                               skip=args.skip, repeats=args.repeats)
    command = " ".join(["python scripts/benchmark.py network",
                        "--port-equal" if args.port_equal else f"--config {os.path.relpath(config, REPO)}",
                        f"--input-size {args.input_size} --threads {args.threads}",
                        *([f"--skip {' '.join(args.skip)}"] if args.skip else []), *args.overrides])
    _emit(format_network_table(result, command, args.note), args)
    return 0


def add_network_parser(subparsers) -> None:
    from posenet.bench.network import VARIANTS

    p = subparsers.add_parser(
        "network",
        help="network time per CPU inference option (BN folding, channels_last, bf16, compile, onnxruntime), "
             "decoding, end to end, against the original port's design",
        description="Median ms of forward + detection post-processing for each inference option, with the "
        "heatmaps' difference from eager fp32; our decoding and the port's reconstructed decoding on a crowded "
        "scene; end to end and the ratio to the port's design (eager fp32 + box-by-box PRN).",
    )
    p.add_argument("--config", default=PORT_EQUAL, help="config of the network (default: configs/port_equal_r50.yaml)")
    p.add_argument("--port-equal", action="store_true",
                   help="the original port's design (configs/port_equal_r50.yaml), whatever --config says")
    p.add_argument("--input-size", type=int, default=480, help="square input side (default: 480)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default: 2)")
    p.add_argument("--people", type=int, default=20, help="people in the decoding scene (default: 20)")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per row, at most (default: 10)")
    p.add_argument("--skip", nargs="*", default=[], choices=[*VARIANTS, "port"],
                   help="rows to leave out (eager is always timed: it is the reference)")
    p.add_argument("--note", default="", help="a sentence for the table header (e.g. the machine's load)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    _add_output_options(p)
    p.set_defaults(run=run_network)


# --------------------------------------------------------------------------- int8


def run_int8(args: argparse.Namespace) -> int:
    from posenet.bench import int8

    rows = int8.run(args.checkpoints, calibration_images=args.calibration_images)
    command = "python scripts/benchmark.py int8 " + " ".join(os.path.relpath(c, REPO) for c in args.checkpoints)
    _emit(int8.format_table(rows, command), args)
    return 0


def add_int8_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "int8",
        help="end-to-end AP and network time of trained runs' int8 exports beside their float32 ones",
        description="Export each checkpoint with its int8 network (export_onnx.py --dynamic --int8, calibrated on "
        "its run's training images) and validate both graphs end to end on the run's validation split; prints "
        "AP, the difference, network and decoding ms per image and the int8 maps' difference.",
    )
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help="trained runs' checkpoints (config.yaml beside each)")
    p.add_argument("--calibration-images", type=int, default=64, help="calibration images per run (default 64)")
    _add_output_options(p)
    p.set_defaults(run=run_int8)


# --------------------------------------------------------------------------- overfit


def _machine_line() -> str:
    """The machine in one line for the learning benchmarks' table headers."""
    from posenet.bench.common import machine_info

    info = machine_info("cpu")
    gpu = f", gpu {info['gpu']}" if "gpu" in info else ""
    return f"{info['cpu']}, torch {info['torch']}, bf16 {'native' if info['bf16'] == 'native' else 'not native'}{gpu}"


COCO_MINI = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "coco-mini"))


def run_overfit(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from posenet.config import load_config
    from posenet.bench import overfit
    from posenet import families
    from posenet.utils.io import write_json_atomic
    cfg = load_config(args.config, [f"data.root={args.root}", f"data.first_images={args.images}", *args.overrides])
    out = Path(args.out or cfg.output_dir)
    if not args.resume:
        for stage in families.of(cfg).stages:
            shutil.rmtree(out / stage, ignore_errors=True)
    family = families.of(cfg)
    result = overfit.run(cfg, family, out)
    machine = _machine_line()
    # each family's table has its own block in docs/results.md
    _emit(overfit.format_table(result, cfg, family, machine), args, section=family.block("overfit"))
    if args.metrics_out:
        write_json_atomic(args.metrics_out, result["metrics"], indent=2)
        print(f"metrics written to {args.metrics_out}")
    return 0


def add_overfit_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "overfit",
        help="memorise N real COCO images through every stage; AP beside each metric's ceiling",
        description="Train every stage of the config's model family on the first N images of coco-mini "
        "train2017 that hold annotated persons, on the evaluation's own inputs, and evaluate on the same images, "
        "each metric beside its ceiling: MultiPoseNet (keypoint, detection, PRN) keypoint AP (GT boxes), person "
        "box AP, end-to-end AP; OpenPose (--config configs/overfit_openpose_coco_mini.yaml) end-to-end AP "
        "beside the ground truth's maps through the same PAF grouping.",
    )
    p.add_argument("--images", type=int, default=16, help="how many images (default: 16)")
    p.add_argument("--root", default=COCO_MINI, help="COCO-layout dataset root (default: ../shared/data/coco-mini)")
    p.add_argument("--config", default=os.path.join(REPO, "configs", "overfit_coco_mini.yaml"),
                   help="the recipe (default: configs/overfit_coco_mini.yaml, MultiPoseNet; the OpenPose "
                   "family's: configs/overfit_openpose_coco_mini.yaml)")
    p.add_argument("--out", help="run directory (default: the config's output_dir)")
    p.add_argument("--resume", action="store_true",
                   help="reuse the finished stages of an earlier run in --out (default: train afresh)")
    p.add_argument("--metrics-out", metavar="FILE", help="write the metrics as JSON")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    _add_output_options(p)
    p.set_defaults(run=run_overfit)


# --------------------------------------------------------------------------- train


def run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from posenet.config import load_config
    from posenet import families
    from posenet.bench.training import benchmark_training, format_training_table
    from posenet.bench.common import machine_info

    cfg = load_config(args.config, args.overrides)
    if "synthetic" in Path(cfg.data.root).parts and not Path(cfg.data.root).is_dir():
        from posenet.quickstart import ensure_synthetic_dataset

        ensure_synthetic_dataset(cfg)  # the quickstart's data, made as make demo makes it
    result = benchmark_training(cfg, families.of(cfg), steps=args.steps, warmup=args.warmup, threads=args.threads)
    info = machine_info("cpu")
    info.pop("torch threads", None)
    _emit(format_training_table(result, cfg, os.path.relpath(args.config, REPO), info), args)
    return 0


def add_train_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="training samples per second of a config: fp32 and each speed option (amp, channels_last, threads)",
        description="Times steady-state keypoint-stage training steps of a config (data loading included) for "
        "fp32 and each speed option; the last line is the config's own setting against fp32.",
    )
    p.add_argument("--config", default=os.path.join(REPO, "configs", "synthetic_small.yaml"))
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant (default: 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per variant first (default: 5)")
    p.add_argument("--threads", type=int, nargs="*", default=[1],
                   help="also time fp32 with these torch thread counts (default: 1)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    _add_output_options(p)
    p.set_defaults(run=run_train)


# --------------------------------------------------------------------------- learning


def run_learning(args: argparse.Namespace) -> int:
    from posenet.config import load_config
    from posenet import families
    from posenet.bench import learning_curve

    cfg = load_config(args.config, args.overrides)
    result = learning_curve.run(cfg, families.of(cfg), args.budget_minutes, args.out, worlds=args.worlds)
    machine = _machine_line()
    command = (f"python scripts/benchmark.py learning --config {os.path.relpath(args.config, REPO)} "
               f"--budget-minutes {args.budget_minutes:g}" + "".join(f" {o}" for o in args.overrides))
    markdown = learning_curve.format_table(result, machine, command)
    if args.plot:
        learning_curve.plot(result, args.plot, f"{command} ({machine})")
        # the picture's link is relative to the page that holds the block (README.md or docs/)
        from posenet.bench.common import GeneratedBlockError, find_generated_block

        try:
            page_dir = find_generated_block(args.command, REPO).parent
        except GeneratedBlockError:
            page_dir = REPO
        markdown += f"\n![learning curves]({os.path.relpath(args.plot, page_dir)})\n"
    _emit(markdown, args)
    return 0


def add_learning_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "learning",
        help="keypoint AP and PCK@0.1 against training samples and minutes, quickstart world and hard world",
        description="Trains the keypoint stage of a config on its synthetic world and on the hard world for a "
        "time budget each, validating along the way; prints a table and draws a PNG plot.",
    )
    p.add_argument("--config", default=os.path.join(REPO, "configs", "synthetic_small.yaml"))
    p.add_argument("--budget-minutes", type=float, default=10.0, help="training minutes per world (default: 10)")
    p.add_argument("--worlds", nargs="+", default=["quickstart", "hard"], choices=["quickstart", "hard"])
    p.add_argument("--out", default=os.path.join(REPO, "runs", "learning"), help="run directories")
    p.add_argument("--plot", default=os.path.join(REPO, "extra", "learning_curves.png"),
                   help="PNG plot to write (default: extra/learning_curves.png; empty: none)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    _add_output_options(p)
    p.set_defaults(run=run_learning)


# --------------------------------------------------------------------------- memory


def run_memory(args: argparse.Namespace) -> int:
    import torch

    from posenet.config import load_config
    from posenet import families
    from posenet.bench.memory import benchmark_memory, format_memory_table
    from posenet.bench.common import machine_info

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("benchmark memory: --device cuda needs a CUDA GPU, and none is available", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    result = benchmark_memory(cfg, families.of(cfg), batch=args.batch, skip=args.skip, device=args.device)
    command = " ".join(["python scripts/benchmark.py memory", f"--config {os.path.relpath(args.config, REPO)}",
                        *([f"--batch {args.batch}"] if args.batch else []),
                        *(f"--skip {name}" for name in dict.fromkeys(args.skip)),
                        *([f"--device {args.device}"] if args.device != "cpu" else []), *args.overrides])
    _emit(format_memory_table(result, machine_info(args.device), command), args)
    return 0


def add_memory_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "memory",
        help="training memory per GPU of each stage of a config: activations per image (fp32, bf16), weights, "
             "gradients and optimizer state, the estimated peak at the per-GPU batch",
        description="Builds each training stage's model from the config (random weights) and counts the bytes "
        "autograd saves for backward on batches of 1 and 2 training samples at the configured input size, fp32 and "
        "under bf16 autocast; per image = the difference. Estimated on the CPU unless --device cuda, which also "
        "measures torch.cuda.max_memory_allocated of a training step. Needs no COCO: the samples are synthetic.",
    )
    p.add_argument("--config", default=os.path.join(REPO, "configs", "coco2017_r101.yaml"),
                   help="config whose stages are measured (default: configs/coco2017_r101.yaml)")
    p.add_argument("--batch", type=int, help="per-GPU batch of the peak estimate (default: each stage's own, "
                   "train.batch_size or its stage override)")
    p.add_argument("--skip", action="append", default=[], choices=["bf16"],
                   help="leave out bf16 autocast (repeatable; the only choice so far)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default: 1)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    _add_output_options(p)
    p.set_defaults(run=run_memory)


def run_prn_grid(args: argparse.Namespace) -> int:
    from pathlib import Path

    from posenet.config import load_config
    from posenet.bench import prn_grid as prn

    cfg = load_config(args.config, [f"data.root={args.root}", *args.overrides])
    out = Path(args.out or Path(cfg.output_dir) / "prn_grids")
    result = prn.compare_grids(cfg, args.grids, out, scenes=args.scenes)
    command = "python scripts/benchmark.py prn-grid " + " ".join(
        [*(["--config " + os.path.relpath(args.config, REPO)] if args.config != PRN_GRID_CONFIG else []),
         *([f"--scenes {args.scenes}"] if args.scenes != 200 else []), *args.overrides])
    _emit(prn.format_grid_table(result, cfg, _machine_line(), command.strip()), args)
    return 0


PRN_GRID_CONFIG = os.path.join(REPO, "configs", "coco-mini.yaml")


def add_prn_grid_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "prn-grid",
        help="train a PRN on each grid (prn.grid) and compare them on ground-truth keypoints and boxes",
        description="Trains one PRN per grid (the enlarged box, posenet's; the box itself, the reference "
        "code's) on data.train_split and evaluates each, and the greedy baseline, on the ground truth of "
        "data.val_split and of crowds composed from its poses: COCO keypoint AP and the share of the keypoints "
        "given to their own person.",
    )
    p.add_argument("--config", default=PRN_GRID_CONFIG, help="default: configs/coco-mini.yaml")
    p.add_argument("--root", default=COCO_MINI, help="COCO-layout dataset root (default: ../shared/data/coco-mini)")
    p.add_argument("--grids", nargs="+", default=["enlarged", "reference"], choices=["enlarged", "reference"])
    p.add_argument("--scenes", type=int, default=200, help="composed crowds (default: 200)")
    p.add_argument("--out", help="run directory (default: OUTPUT_DIR/prn_grids)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides (the recipe: prn.epochs, prn.samples_per_epoch, prn.hidden, ...)")
    _add_output_options(p)
    p.set_defaults(run=run_prn_grid)


# --------------------------------------------------------------------------- gpu


def run_gpu(args: argparse.Namespace) -> int:
    """``gpu``: the unattended check of a lent CUDA machine (posenet.bench.gpu); the table is the
    docs block 'gpu', and OUT/gpu.json and OUT/gpu.md are written whatever happens."""
    import json

    import torch

    if args.from_json:  # the table of a run made elsewhere (the GPU machine's OUT/gpu.json), e.g. into the docs
        from posenet.bench.gpu import format_table

        with open(args.from_json) as f:
            result = json.load(f)
        if args.update_readme and not str(result["settings"]["device"]).startswith("cuda"):
            print(f"benchmark gpu: --update-readme needs a GPU run; {args.from_json} is a run on "
                  f"{result['settings']['device']}", file=sys.stderr)
            return 2
        _emit(format_table(result), args)
        return 0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("benchmark gpu: no CUDA GPU is available here; run it on a machine with one, or check the command "
              "on the CPU with --device cpu --quick", file=sys.stderr)
        return 2
    if args.update_readme and device.type != "cuda":
        print("benchmark gpu: --update-readme needs --device cuda (the docs block holds GPU figures only)", file=sys.stderr)
        return 2
    from posenet.bench import gpu

    settings = (gpu.quick_settings if args.quick else gpu.gpu_settings)(
        device=args.device, budget_s=args.budget, skip=tuple(args.skip), data_root=args.data_root, steps=args.steps,
        input_size=args.input_size, batches=tuple(args.batches) if args.batches else None)
    result = gpu.run_check(settings, args.out)
    print(f"benchmark gpu: results in {os.path.join(args.out, 'gpu.json')} and {os.path.join(args.out, 'gpu.md')}")
    _emit(gpu.format_table(result), args)
    return 0 if all(p["status"] in ("ok", "skipped") for p in result["parts"].values()) else 1


def add_gpu_parser(subparsers) -> None:
    from posenet.bench.gpu import PARTS

    parts = list(PARTS)
    p = subparsers.add_parser(
        "gpu",
        help="the check of a lent CUDA machine: build the extension, pytest -m cuda, training and inference speed",
        description="In order, each part recorded and the next one run whatever happens, within a time budget: "
        "build posenet._C for this GPU and probe its CUDA kernel; pytest -m cuda; 100 keypoint-stage training steps "
        "of configs/coco2017_r50.yaml (bf16, channels_last) on coco-mini beside the repository (synthetic images "
        "without it): samples/s and peak memory; MultiPoseNet and OpenPose (VGG19) inference at 512 px, batch 1 "
        "and batched, fp32 and bf16; decoding per image on the CPU. Random weights. Writes OUT/gpu.json and "
        "OUT/gpu.md after every part.",
    )
    p.add_argument("--out", default=os.path.join(REPO, "runs", "gpu"), help="results folder (default: runs/gpu)")
    p.add_argument("--device", default="cuda", help="cuda[:N] (default), or cpu to check the command's path")
    p.add_argument("--quick", action="store_true",
                   help="tiny settings (the small synthetic configs with 16 channels at 64 px, 3 training steps, "
                   "inference batches 1 and 2)")
    p.add_argument("--budget", type=float, help="seconds for the whole run (default: 420; parts get less once spent)")
    p.add_argument("--skip", nargs="*", default=[], choices=parts, metavar="PART",
                   help=f"parts to leave out: {', '.join(parts)}")
    p.add_argument("--data-root", help="COCO 2017-layout training data (default: ../shared/data/coco-mini; "
                   "synthetic images where it is absent, or with 'synthetic')")
    p.add_argument("--steps", type=int, help="timed training steps (default: 100; --quick 3)")
    p.add_argument("--input-size", type=int, help="inference input side (default: 512; --quick 64)")
    p.add_argument("--batches", type=int, nargs="+", help="inference batches (default: 1 8 32; --quick 1 2)")
    p.add_argument("--from-json", metavar="FILE", help="run nothing: the table of an earlier run's gpu.json (the GPU "
                   "machine's, copied back), with --update-readme into the docs")
    _add_output_options(p)
    p.set_defaults(run=run_gpu)


# --------------------------------------------------------------------------- folder


def run_folder(args: argparse.Namespace) -> int:
    from pathlib import Path

    from posenet import families
    from posenet.bench import folder_inference as bench
    from posenet.config import build, load_config

    if args.checkpoint:
        cfg = build.run_config(args.checkpoint, args.config, args.overrides)
    else:
        cfg = load_config(args.config or FOLDER_CONFIG, ["model.pretrained=none", *args.overrides])
    family = families.of(cfg)
    cfg = bench.config_for(cfg, family, args.checkpoint, args.input_size)
    result = bench.benchmark_folder(cfg, family, images=args.images, batches=args.batch, workers=args.workers,
                                    threads=args.threads, rounds=args.rounds, checkpoint=args.checkpoint,
                                    source=Path(args.source), device=args.device)
    if result["source"] and os.path.abspath(result["source"]).startswith(os.path.dirname(REPO) + os.sep):
        result["source"] = os.path.relpath(result["source"], REPO)  # beside the repository: no machine's path
    config = (os.path.relpath(args.config, REPO) if args.config else
              "the config beside the checkpoint" if args.checkpoint else "configs/synthetic_small.yaml")
    command = " ".join(["python scripts/benchmark.py folder",
                        *([f"--config {os.path.relpath(args.config, REPO)}"] if args.config else []),
                        *([f"--checkpoint {args.checkpoint}"] if args.checkpoint else []),
                        f"--images {args.images} --batch {' '.join(map(str, args.batch))}",
                        f"--workers {' '.join(map(str, args.workers))} --threads {args.threads}",
                        f"--input-size {args.input_size} --rounds {args.rounds}",
                        *([f"--device {args.device}"] if args.device != "cpu" else []), *args.overrides])
    _emit(bench.format_folder_table(result, config, command, args.note), args)
    return 0


FOLDER_CONFIG = os.path.join(REPO, "configs", "synthetic_small.yaml")


def add_folder_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "folder",
        help="images/s of infer.py's folder inference: one image at a time against batches and loader workers",
        description="Writes a temporary folder of 640x480 / 480x640 JPEGs (from coco-mini's val2017 photos, else "
        "synthetic) and times infer_folder without pictures at each --batch and --workers, interleaved in rounds: "
        "images/s of the whole run and steady, network and decoding ms per image, and whether the people equal "
        "one image at a time's.",
    )
    p.add_argument("--config", help="config of the model (default: configs/synthetic_small.yaml, random "
                   "initialisation; with --checkpoint: the config.yaml beside it)")
    p.add_argument("--checkpoint", help="a checkpoint to run instead of a random initialisation")
    p.add_argument("--images", type=int, default=100, help="images in the folder (default: 100)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4, 8], help="batch sizes (default: 1 4 8)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="loader workers (default: 0 2)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default: 2)")
    p.add_argument("--input-size", type=int, default=480, help="infer.input_size, the longer side (default: 480)")
    p.add_argument("--rounds", type=int, default=3, help="timed runs of each setting, interleaved (default: 3)")
    p.add_argument("--source", default=os.path.join(COCO_MINI, "val2017"),
                   help="folder of photos to make the images from (default: ../shared/data/coco-mini/val2017; "
                   "synthetic pictures where it is absent)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--note", default="", help="a sentence for the table header (e.g. the machine's load)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    _add_output_options(p)
    p.set_defaults(run=run_folder)


# --------------------------------------------------------------------------- track


def run_track(args: argparse.Namespace) -> int:
    from posenet.bench import common
    from posenet.bench import tracking as bench
    from posenet.inference.video import video_section

    section = video_section([o for o in args.overrides if o.startswith("video.")])
    smoothing = [tuple(float(v) for v in pair.split(",")) for pair in args.smoothing]
    result = bench.run(section, args.checkpoint, [o for o in args.overrides if not o.startswith("video.")],
                       seeds=args.seeds, rounds=args.rounds if args.checkpoint else 0, smoothing=smoothing)
    machine = common.machine_info() if args.checkpoint else None
    if machine and args.note:
        machine["note"] = args.note
    _emit(bench.format_table(result, machine), args)
    return 0


def add_track_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "track",
        help="tracking and smoothing on synthetic videos with known identities, and the video loop's frames/s",
        description="Writes synthetic videos (people walking across a scene, crossing, entering and leaving, one "
        "standing still; ground-truth track ids) and tracks them with the video.* settings: ID switches and the "
        "ground-truth persons with the right id, given the ground-truth poses (the tracker's ceiling) and, with "
        "--checkpoint, the model's people; the still person's keypoint jitter with and without One-Euro smoothing; "
        "frames/s of video.py's loop serial, pipelined and (on the CPU) pipelined with the decoding beside the "
        "network (posenet/bench/tracking.py gives the protocol).",
    )
    p.add_argument("--checkpoint", help="a model to track the people of (e.g. runs/synthetic_small/prn/best.pt); "
                   "without it, the ground-truth poses only")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the videos (default: 0 1 2)")
    p.add_argument("--rounds", type=int, default=3, help="timed runs of each loop, interleaved (default: 3; 0: none)")
    p.add_argument("--smoothing", nargs="*", default=["0.5,0.05", "2,0.05", "1,0"], metavar="MIN_CUTOFF,BETA",
                   help="One-Euro settings to compare beside video.min_cutoff, video.beta (default: 0.5,0.05 2,0.05 1,0)")
    p.add_argument("--note", default="", help="a sentence for the table's machine line (e.g. the machine's load)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="video.* and infer.* overrides")
    _add_output_options(p)
    p.set_defaults(run=run_track)


SUBCOMMANDS = [add_nms_parser, add_data_parser, add_decode_parser, add_network_parser, add_int8_parser, add_overfit_parser,
               add_train_parser, add_learning_parser, add_memory_parser, add_prn_grid_parser, add_gpu_parser,
               add_folder_parser, add_track_parser]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="posenet benchmarks")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    args = parser.parse_args(argv)
    from posenet.errors import PosenetError

    try:
        return args.run(args)
    except PosenetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
