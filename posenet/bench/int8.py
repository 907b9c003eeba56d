"""The int8 export against the float one, on trained models (``scripts/benchmark.py int8``).

For each checkpoint given (a run's ``best.pt``, its ``config.yaml`` beside it): the export with
its int8 network (``export_checkpoint(..., int8=True)``: dynamic height and width, calibrated
on ``calibration_images`` images of the run's training split), then the end-to-end COCO
keypoint AP of both graphs on the run's ``data.val_split`` through the same decoder
(``Family.validate_export``: onnxruntime and the portable decoder, the run's inference
settings), with the network and decoding milliseconds per image of those validations (onnxruntime
with its default threads) and how far the int8 maps are from the float ones on the calibration
inputs. The verdict line says whether int8 is within ``TOLERANCE`` AP of float32 on every
model: the condition for it to be the export's default.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Sequence

from posenet import families
from posenet.bench.common import machine_info
from posenet.config import build
from posenet.deploy.export import export_checkpoint
from posenet.deploy.quantize import int8_paths

# int8 is a default only where its AP is within this of float32's on every measured model
TOLERANCE = 0.005


def measure(checkpoint: str | Path, out_dir: str | Path, *, calibration_images: int = 64, log=print) -> dict:
    """Float32 and int8 AP, timings and map differences of one checkpoint (module docstring)."""
    checkpoint = Path(checkpoint)
    cfg = build.run_config(checkpoint, None, [])
    family = families.of(cfg)
    out = Path(out_dir) / "model.onnx"
    start = time.perf_counter()
    summary = export_checkpoint(checkpoint, out, dynamic=True, int8=True, calibration_images=calibration_images,
                                log=log)
    seconds = time.perf_counter() - start
    graphs = {"float32": out, "int8": int8_paths(out.with_suffix(".json"))[0]}
    metrics, images = {}, 0
    for name, path in graphs.items():
        log(f"{checkpoint}: {name} export on {cfg.data.val_split} ...")
        metrics[name], evaluator, _ = family.validate_export(cfg, path, log=lambda line: None)
        images = len(evaluator.image_ids) - int(metrics[name].get("skipped_images", 0))
    return {"checkpoint": str(checkpoint), "family": family.name, "config": cfg.name,
            "val_split": cfg.data.val_split, "images": images,
            "metrics": metrics, "differences": summary["int8"]["differences"],
            "quantization": summary["int8"]["quantization"], "export_seconds": seconds}


def run(checkpoints: Sequence[str | Path], *, calibration_images: int = 64, log=print) -> list[dict]:
    """``measure`` of every checkpoint, each exported into a temporary folder."""
    import onnxruntime  # noqa: F401 - one clear ImportError before minutes of work

    rows = []
    for checkpoint in checkpoints:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(measure(checkpoint, tmp, calibration_images=calibration_images, log=log))
    return rows


def format_table(rows: Sequence[dict], command: str) -> str:
    info = machine_info("cpu")
    machine = "; ".join(f"{k} {v}" for k, v in info.items())
    lines = [
        "### int8 against float32, end to end",
        "",
        f"Command: `{command}`. Machine: {machine}.",
        "",
        "Protocol: each run's checkpoint exported with dynamic height and width and its int8 network "
        "(`export_onnx.py --dynamic --int8`: onnxruntime static quantisation, QDQ, int8 weights per output "
        "channel, uint8 activations per tensor with min-max ranges, the output layers in float32), calibrated "
        "on up to 64 images of the run's training split (the column says how many); both graphs "
        "validated end to end on the run's validation split through the same portable decoder and the run's "
        "inference settings (`val_keypoint.py --runtime onnx`); ms per image are those validations' means "
        "(onnxruntime's default threads). Map differences: int8 against float32 on the calibration inputs.",
        "",
        "| run (family) | val images | calibration images | float32 AP | int8 AP | Δ AP | float32 AP50 / AP75 | "
        "int8 AP50 / AP75 | network ms float32 → int8 | heatmaps max / mean \\|Δ\\| (largest) |",
        "|---|---:|---:|---:|---:|---:|---|---|---|---|",
    ]
    worst = 0.0
    for r in rows:
        f, q = r["metrics"]["float32"], r["metrics"]["int8"]
        delta = q["AP"] - f["AP"]
        worst = max(worst, -delta)
        d = r["differences"]["heatmaps"]
        lines.append(
            f"| {r['config']} ({r['family']}) | {r['images']} | {r['quantization']['calibration_images']} | "
            f"{f['AP']:.3f} | {q['AP']:.3f} | {delta:+.3f} | "
            f"{f['AP50']:.3f} / {f['AP75']:.3f} | {q['AP50']:.3f} / {q['AP75']:.3f} | "
            f"{f.get('network_ms', float('nan')):.1f} → {q.get('network_ms', float('nan')):.1f} | "
            f"{d['max_abs']:.3f} / {d['mean_abs']:.4f} ({d['largest']:.2f}) |")
    losses = {}  # family -> its runs' AP losses
    for r in rows:
        losses.setdefault(r["family"], []).append(r["metrics"]["float32"]["AP"] - r["metrics"]["int8"]["AP"])
    within = all(loss <= TOLERANCE for family in losses.values() for loss in family)
    by_family = "; ".join(f"{family} {'yes' if max(loss) <= TOLERANCE else 'no'} ({len(loss)} run(s), largest "
                          f"loss {max(loss):.3f})" for family, loss in sorted(losses.items()))
    lines += ["", f"int8 within {TOLERANCE} AP of float32 on every run: **{'yes' if within else 'no'}** "
                  f"(largest loss {worst:.3f}). By family: {by_family}."]
    return "\n".join(lines) + "\n"


__all__ = ["TOLERANCE", "format_table", "measure", "run"]
