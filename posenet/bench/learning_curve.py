"""Learning curves (``scripts/benchmark.py learning``): keypoint AP (GT boxes) and PCK@0.1
against training samples and minutes, for the quickstart's world and for the hard world.

For each world the keypoint stage of the config is trained as it is (its own recipe and
schedule) for as many epochs as fit in ``budget_minutes`` at the speed measured on a few
warm-up steps, and validated ``points`` times on the world's val split; each validation is a
point of the curve. The hard world is the generator's defaults (crowds, occluders, unannotated
people, clutter, blur, noise, grayscale, 0-8 people from 28 px), written beside the
quickstart's data with the same image counts and seed.
"""
from __future__ import annotations

import dataclasses
import math
import textwrap
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from posenet.bench.training import time_training
from posenet.config import build
from posenet.config.schema import SyntheticConfig
from posenet.quickstart import ensure_synthetic_dataset
from posenet.stages.keypoint import KeypointEvaluator
from posenet.utils.io import write_json_atomic

# The generator parameters that make a world: every synthetic setting but the image counts,
# the seed and the workers, which stay the config's.
_WORLD_KEYS = tuple(f.name for f in dataclasses.fields(SyntheticConfig)
                    if f.name not in ("num_train", "num_val", "seed", "workers"))


def world_configs(cfg: DictConfig) -> dict[str, DictConfig]:
    """The config's own world ("quickstart") and the hard world (the generator's defaults)."""
    defaults = SyntheticConfig()
    hard = {key: getattr(defaults, key) for key in _WORLD_KEYS}
    root = Path(cfg.data.root)
    return {
        "quickstart": cfg,
        "hard": OmegaConf.merge(cfg, {"synthetic": hard, "data": {"root": str(root.with_name(root.name + "_hard"))},
                                      "name": f"{cfg.name}_hard"}),
    }


def run_world(cfg: DictConfig, family, budget_minutes: float, out_dir: Path, points: int = 6, log=print) -> dict:
    """Train ``cfg``'s keypoint stage (the network of ``family``, a ``posenet.families.Family``)
    for about ``budget_minutes``; returns the curve."""

    ensure_synthetic_dataset(cfg, log)
    train_size = len(build.coco_split(cfg.data, cfg.data.train_split))
    speed = time_training(cfg, family, steps=4, warmup=2)["samples_per_s"]
    epochs = max(1, int(budget_minutes * 60 * speed / train_size))
    eval_every = max(1, math.ceil(epochs / points))
    run_cfg = OmegaConf.merge(cfg, {"train": {"epochs": epochs, "eval_every": eval_every}})
    log(f"learning curve: {cfg.name}: {epochs} epochs of {train_size} images "
        f"(measured {speed:.1f} samples/s), validation every {eval_every} epochs")
    start = time.perf_counter()
    history = family.train(run_cfg, out_dir=out_dir, resume=False, log=log)
    minutes, curve = 0.0, []
    for record in history:
        minutes += (record["time_s"] + record.get("eval_s", 0.0)) / 60.0
        if "AP" in record:
            curve.append({"epoch": record["epoch"], "samples": record["epoch"] * train_size,
                          "minutes": minutes, "AP": record["AP"], "PCK": record.get("PCK", float("nan"))})
    return {"name": cfg.name, "epochs": epochs, "train_images": train_size, "samples_per_s": speed,
            "minutes": (time.perf_counter() - start) / 60.0, "curve": curve,
            "protocol": KeypointEvaluator.from_config(run_cfg, progress=False).protocol()}


def run(cfg: DictConfig, family, budget_minutes: float, out_dir: str | Path, worlds=("quickstart", "hard"),
        log=print) -> dict:
    """The learning curve of ``family``'s first stage in each of ``worlds`` (``world_configs``)."""

    configs = world_configs(cfg)
    out_dir = Path(out_dir)
    result = {world: run_world(configs[world], family, budget_minutes, out_dir / world, log=log) for world in worlds}
    write_json_atomic(out_dir / "curves.json", result, indent=2)  # to re-plot or compare later
    return result


def format_table(result: dict, machine: str, command: str) -> str:
    lines = [f"`{command}` on {machine}.", "",
             "| world | epoch | training samples | minutes | keypoint AP | PCK@0.1 |", "|---|---:|---:|---:|---:|---:|"]
    for world, r in result.items():
        for p in r["curve"]:
            lines.append(f"| {world} | {p['epoch']} | {p['samples']} | {p['minutes']:.1f} | {p['AP']:.3f} | "
                         f"{p['PCK']:.3f} |")
    lines.append("")
    for world, r in result.items():
        lines.append(f"- {world}: `{r['name']}`, {r['train_images']} training images, {r['epochs']} epochs "
                     f"({r['samples_per_s']:.1f} samples/s measured before training); validation: {r['protocol']}")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: str | Path, title: str) -> Path:
    """AP and PCK against training samples, one line per world, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for world, r in result.items():
        samples = [p["samples"] for p in r["curve"]]
        for ax, key in zip(axes, ("AP", "PCK")):
            ax.plot(samples, [p[key] for p in r["curve"]], marker="o", label=world)
    for ax, label in zip(axes, ("keypoint AP (GT boxes)", "PCK@0.1")):
        ax.set_xlabel("training samples")
        ax.set_ylabel(label)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("\n".join(textwrap.wrap(title, 120)), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


__all__ = ["format_table", "plot", "run", "run_world", "world_configs"]
