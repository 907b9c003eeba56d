"""The quickstart's main job on the embedded default data (``make demo``).

Generate (or reuse) the synthetic COCO-format dataset of the config and print what it holds;
train the keypoint, detection and PRN stages one after the other (each resumes a finished or
interrupted run instead of starting over) and validate each beside its ceiling on that world
(``stages.pipeline``); then the ablation rows through the inference pipeline (ground truth in
place of each part, greedy grouping), ``infer.py``'s work over the synthetic val images and the
photos in ``extra/test_images/`` (labelled out of domain), and the table of every number with
its protocol (printed and written to OUTPUT_DIR/results.md).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from posenet.config import build, load_config, save_config
from posenet.data.coco import format_summary
from posenet.data.synthetic import write_synthetic_coco
from posenet.inference import Predictor, infer_folder
from posenet.inference.paf_predictor import PafPredictor
from posenet.stages import end_to_end, openpose
from posenet.stages.pipeline import format_ap, run_stages
from posenet.utils.io import write_json_atomic, write_text_atomic

MANIFEST = "synthetic.yaml"


def ensure_synthetic_dataset(cfg: DictConfig, log=print) -> Path:
    """Generate the synthetic dataset at ``data.root`` unless the same one is already there.

    The dataset's parameters are recorded in ``data.root/synthetic.yaml``; a dataset made with
    other parameters is replaced. Generation writes to a temporary folder that is renamed into
    place, so an interrupted run never leaves a half-written dataset behind.
    """

    root = Path(cfg.data.root)
    wanted = OmegaConf.to_container(cfg.synthetic, resolve=True)
    manifest = root / MANIFEST
    if manifest.is_file() and OmegaConf.to_container(OmegaConf.load(manifest)) == wanted:
        log(f"synthetic dataset: reusing {root} (same parameters as {MANIFEST})")
        return root
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    start = time.perf_counter()
    write_synthetic_coco(
        tmp,
        num_train=cfg.synthetic.num_train,
        num_val=cfg.synthetic.num_val,
        seed=cfg.synthetic.seed,
        workers=cfg.synthetic.workers,
        generator=build.synthetic_generator(cfg.synthetic),
    )
    OmegaConf.save(OmegaConf.create(wanted), tmp / MANIFEST)
    if root.exists():
        shutil.rmtree(root)
    os.replace(tmp, root)
    log(f"synthetic dataset: wrote {root} in {time.perf_counter() - start:.1f} s")
    return root


def _prepare(cfg: DictConfig, log) -> tuple[Path, dict]:
    """Save the config, make or reuse the dataset, print what its splits hold."""
    out_dir = Path(cfg.output_dir)
    save_config(cfg, out_dir)
    ensure_synthetic_dataset(cfg, log)
    summaries = {}
    for split in (cfg.data.train_split, cfg.data.val_split):
        summaries[split] = build.coco_split(cfg.data, split).summary()
        log(format_summary(summaries[split]))
    return out_dir, summaries


def _infer_folders(cfg: DictConfig, predictor, out_dir: Path, log) -> dict:
    """infer.py's work over the synthetic val images and the photos in extra/test_images."""

    pictures = {}
    for name, folder in (("synthetic_val", Path(cfg.data.root) / cfg.data.val_split),
                         ("test_images", Path(__file__).resolve().parents[1] / "extra" / "test_images")):
        if folder.is_dir():
            log(f"\n== infer.py over {folder}")
            if name == "test_images":
                log("note: real photos through a model trained only on synthetic figures, from scratch, for "
                    "minutes: this shows that infer.py runs on real images, not what a trained model finds there")
            pictures[name] = infer_folder(predictor, folder, out_dir / "infer" / name, log=log)["pictures"]
    return pictures


def run_openpose(cfg: DictConfig, log=print) -> dict:
    """The OpenPose family's quickstart: train its network on the synthetic world, validate it
    end to end beside the ceiling (the ground truth's own training targets through the same
    grouping), pictures; the table has the network and decoding times beside the AP."""

    total_start = time.perf_counter()
    out_dir, summaries = _prepare(cfg, log)
    stage = openpose.run_stages(cfg, out_dir, log)
    seconds, checkpoint, result, top = stage["seconds"], stage["checkpoint"], stage["end_to_end"], stage["ceiling"]
    start = time.perf_counter()
    predictor = PafPredictor.from_config(cfg, build.paf_network_from_checkpoint(cfg, checkpoint))
    pictures = _infer_folders(cfg, predictor, out_dir, log)
    seconds["infer"] = time.perf_counter() - start
    table = family_table(cfg, result, top, stage["protocol"], multiposenet_beside(cfg, log))
    write_text_atomic(out_dir / "results.md", table)
    seconds["total"] = time.perf_counter() - total_start
    log("\n" + table)
    log("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    for name, folder in pictures.items():
        log(f"pictures ({name}): {folder}  (*_panel.jpg: heatmaps | PAFs | skeletons)")
    return {"datasets": summaries, "metrics": {"end_to_end_ap": result["AP"], "end_to_end_ap_ceiling": top["AP"],
                                               "network_ms": result.get("network_ms"),
                                               "decode_ms": result.get("decode_ms")},
            "seconds": seconds, "pictures": pictures}


def multiposenet_beside(cfg: DictConfig, log=print) -> dict | None:
    """The MultiPoseNet quickstart's full model (``configs/synthetic_small.yaml``'s run), when it
    has been trained, validated end to end on ``cfg``'s data with ``cfg``'s input size: the
    first row of the family table. None when there is no such checkpoint."""

    other = load_config(Path(__file__).resolve().parents[1] / "configs" / "synthetic_small.yaml")
    checkpoint = Path(other.output_dir) / "prn" / "best.pt"
    if not checkpoint.is_file():
        log(f"no MultiPoseNet quickstart model at {checkpoint} (make demo): its row is left out")
        return None
    other = OmegaConf.merge(other, {"data": OmegaConf.to_container(cfg.data),
                                    "infer": {"input_size": int(cfg.infer.input_size or cfg.keypoint.val_input_size)}})
    result, evaluator = end_to_end.validate(other, checkpoint, "end-to-end", log=log)
    top, _ = end_to_end.validate(other, checkpoint, "gt-keypoints-gt-boxes", log=log)
    return {"result": result, "ceiling": top, "protocol": evaluator.protocol(), "checkpoint": str(checkpoint),
            "network": f"ResNet-{other.model.backbone_depth} FPN + RetinaNet + PRN"}


def family_table(cfg: DictConfig, result: dict, ceiling: dict, protocol: str, beside: dict | None = None) -> str:
    """The quickstart's rows per model family: end-to-end AP beside its ceiling, network and
    decode ms; the MultiPoseNet row (``beside``) when its model exists."""

    def row(family, network, r, top, what):
        return (f"| {family} | {network} | {format_ap(r['AP'])} | {format_ap(r['AP50'])} | {format_ap(r['AP75'])} | "
                f"{format_ap(top['AP'])} ({what}) | {r.get('network_ms', 0):.1f} | {r.get('decode_ms', 0):.2f} |")

    lines = ["| family | network | end-to-end AP | AP50 | AP75 | ceiling | network ms | decode ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    if beside:
        lines.append(row("multiposenet", beside["network"], beside["result"], beside["ceiling"], "GT keypoints + boxes"))
    lines.append(row("openpose", cfg.openpose.network, result, ceiling, "GT maps"))
    lines += ["", f"- openpose: {protocol}"]
    if beside:
        lines.append(f"- multiposenet ({beside['checkpoint']}): {beside['protocol']}")
    lines.append("- network and decode ms: mean per image on this machine; network incl. resizing (and, for "
                 "MultiPoseNet, the box post-processing), decode = peaks + grouping + mapping back.")
    return "\n".join(lines) + "\n"


def run_multiposenet(cfg: DictConfig, log=print) -> dict:

    total_start = time.perf_counter()
    out_dir, summaries = _prepare(cfg, log)
    stages = run_stages(cfg, out_dir, log)
    rows, seconds, full = stages["rows"], stages["seconds"], stages["checkpoint"]

    log(f"\n== the ablations: {full} with ground truth in place of each part, and the greedy grouping")
    start = time.perf_counter()
    records = {}
    for mode, grouping in (("end-to-end", "greedy"), ("pred-keypoints-gt-boxes", "prn"),
                           ("gt-keypoints-pred-boxes", "prn"), ("gt-keypoints-gt-boxes", "greedy")):
        run_cfg = OmegaConf.merge(cfg, {"infer": {"grouping": grouping}})
        m, e = end_to_end.validate(run_cfg, full, mode, log=log)
        records[f"{mode}/{grouping}"] = e.metrics_record(m, full)
        rows.append((f"ablation: {mode}, {grouping} grouping", "keypoint AP", m, e.protocol()))
    write_json_atomic(out_dir / "end_to_end_metrics.json", {"stages": stages["metrics"], "ablations": records},
                      indent=2)
    seconds["ablations"] = time.perf_counter() - start

    start = time.perf_counter()
    pictures = _infer_folders(cfg, Predictor.from_config(cfg, full), out_dir, log)
    seconds["infer"] = time.perf_counter() - start
    table = results_table(rows, stages["metrics"])
    write_text_atomic(out_dir / "results.md", table)
    seconds["total"] = time.perf_counter() - total_start
    log("\n" + table)
    log("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    for name, folder in pictures.items():
        what = " - real photos, out of the synthetic model's domain" if name == "test_images" else ""
        log(f"pictures ({name}): {folder}  (*_panel.jpg: heatmaps | boxes | skeletons){what}")
    log(f"results table: {out_dir / 'results.md'}; resolved config: {out_dir / 'config.yaml'}; "
        f"TensorBoard: tensorboard --logdir {out_dir}")
    return {"datasets": summaries, "metrics": stages["metrics"], "ablations": records, "seconds": seconds,
            "pictures": pictures}



def results_table(rows, metrics: dict | None = None) -> str:
    """A markdown table of (what, metric, metrics, protocol) rows, then (given the pipeline's
    ``metrics``) each headline result beside its ceiling and the quickstart's aims, then the
    protocols."""
    lines = ["| what | metric | AP | AP50 | AP75 | APM | APL |", "|---|---|---:|---:|---:|---:|---:|"]
    for what, metric, m, _ in rows:
        lines.append(f"| {what} | {metric} | " + " | ".join(format_ap(m.get(k)) for k in ("AP", "AP50", "AP75", "APM", "APL"))
                     + " |")
    lines.append("")
    if metrics:
        lines += [
            f"- keypoint AP (GT boxes) {metrics['keypoint_ap_gt_boxes']:.3f} of ceiling "
            f"{metrics['keypoint_ap_gt_boxes_ceiling']:.3f} (aim >= 0.5);",
            f"- person box AP {metrics['box_ap']:.3f} of ceiling {metrics['box_ap_ceiling']:.3f} (aim >= 0.6);",
            f"- end-to-end AP {metrics['end_to_end_ap']:.3f} of ceiling {metrics['end_to_end_ap_ceiling']:.3f} "
            "(aim >= 0.4).",
            "",
        ]
    lines += [f"- {what}: {protocol}" for what, _, _, protocol in rows if not what.startswith("  ceiling")]
    return "\n".join(lines) + "\n"
