"""The quickstart's main job on the embedded default data (``make demo``).

Generate (or reuse) the synthetic COCO-format dataset of the config and print what it holds;
train the keypoint, detection and PRN stages one after the other (each resumes a finished or
interrupted run instead of starting over) and validate each; then the end-to-end keypoint AP
and its ablation rows through the inference pipeline, ``infer.py``'s work over the synthetic
val images and the photos in ``extra/test_images/``, and the table of every number with its
protocol (printed and written to OUTPUT_DIR/results.md).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from posenet.config import build, save_config
from posenet.data.coco import format_summary
from posenet.utils.io import write_json_atomic, write_text_atomic

MANIFEST = "synthetic.yaml"


def ensure_synthetic_dataset(cfg: DictConfig, log=print) -> Path:
    """Generate the synthetic dataset at ``data.root`` unless the same one is already there.

    The dataset's parameters are recorded in ``data.root/synthetic.yaml``; a dataset made with
    other parameters is replaced. Generation writes to a temporary folder that is renamed into
    place, so an interrupted run never leaves a half-written dataset behind.
    """
    from posenet.data.synthetic import write_synthetic_coco

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


def run(cfg: DictConfig, log=print) -> dict:
    from posenet.stages import detection, end_to_end, keypoint, prn

    out_dir = Path(cfg.output_dir)
    save_config(cfg, out_dir)
    total_start = time.perf_counter()
    ensure_synthetic_dataset(cfg, log)
    summaries = {}
    for split in (cfg.data.train_split, cfg.data.val_split):
        summaries[split] = build.coco_split(cfg.data, split).summary()
        log(format_summary(summaries[split]))
    rows, seconds = [], {}

    keypoint_dir = out_dir / "keypoint"
    log(f"\n== keypoint stage: training into {keypoint_dir} (runs again only what is not done yet)")
    start = time.perf_counter()
    keypoint.train(cfg, out_dir=keypoint_dir, resume=True, log=log)
    seconds["keypoint"] = time.perf_counter() - start
    checkpoint = keypoint_dir / "best.pt"
    log(f"\n== keypoint stage: validation of {checkpoint}")
    metrics, evaluator = keypoint.validate(cfg, checkpoint, log=log)
    write_json_atomic(keypoint_dir / "val_metrics.json", keypoint.metrics_record(metrics, evaluator, checkpoint),
                      indent=2)
    rows.append(("keypoint stage: predicted keypoints in GT boxes (heatmap grouping)", "keypoint AP", metrics,
                 evaluator.protocol()))

    detection_dir = out_dir / "detection"
    log(f"\n== detection stage: training into {detection_dir} from {checkpoint}")
    start = time.perf_counter()
    detection.train(cfg, init=checkpoint, out_dir=detection_dir, resume=True, log=log)
    seconds["detection"] = time.perf_counter() - start
    checkpoint = detection_dir / "best.pt"
    log(f"\n== detection stage: validation of {checkpoint}")
    box_metrics, box_evaluator = detection.validate(cfg, checkpoint, log=log)
    write_json_atomic(detection_dir / "val_metrics.json", detection.metrics_record(box_metrics, box_evaluator, checkpoint),
                      indent=2)
    rows.append(("detection stage: person boxes", "box AP", box_metrics, box_evaluator.protocol()))

    prn_dir = out_dir / "prn"
    log(f"\n== PRN stage: training into {prn_dir} from {checkpoint}")
    start = time.perf_counter()
    prn.train(cfg, init=checkpoint, out_dir=prn_dir, resume=True, log=log)
    seconds["prn"] = time.perf_counter() - start
    full = prn_dir / "best.pt"

    log(f"\n== end to end: {full} through the inference pipeline, and the ablations")
    start = time.perf_counter()
    records = {}
    for mode, grouping in (("end-to-end", "prn"), ("end-to-end", "greedy"), ("pred-keypoints-gt-boxes", "prn"),
                           ("gt-keypoints-pred-boxes", "prn"), ("gt-keypoints-gt-boxes", "prn"),
                           ("gt-keypoints-gt-boxes", "greedy")):
        run_cfg = OmegaConf.merge(cfg, {"infer": {"grouping": grouping}})
        m, e = end_to_end.validate(run_cfg, full, mode, log=log)
        records[f"{mode}/{grouping}"] = end_to_end.metrics_record(m, e, full)
        rows.append((f"{mode}, {grouping} grouping", "keypoint AP", m, e.protocol()))
    write_json_atomic(out_dir / "end_to_end_metrics.json", records, indent=2)
    seconds["validation"] = time.perf_counter() - start

    from posenet.inference import Predictor, infer_folder

    start = time.perf_counter()
    predictor = Predictor.from_config(cfg, full)
    pictures = {}
    for name, folder in (("synthetic_val", Path(cfg.data.root) / cfg.data.val_split),
                         ("test_images", Path(__file__).resolve().parents[1] / "extra" / "test_images")):
        if folder.is_dir():
            log(f"\n== infer.py over {folder}")
            if name == "test_images":
                log("note: real photos through a model trained only on synthetic figures, from scratch, for "
                    "minutes: this shows that infer.py runs on real images, not what a trained model finds there")
            summary = infer_folder(predictor, folder, out_dir / "infer" / name, log=log)
            pictures[name] = summary["pictures"]

    seconds["infer"] = time.perf_counter() - start
    table = results_table(rows)
    write_text_atomic(out_dir / "results.md", table)
    seconds["total"] = time.perf_counter() - total_start
    log("\n" + table)
    log("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    for name, folder in pictures.items():
        what = " - real photos, out of the synthetic model's domain" if name == "test_images" else ""
        log(f"pictures ({name}): {folder}  (*_panel.jpg: heatmaps | boxes | skeletons){what}")
    log(f"results table: {out_dir / 'results.md'}; resolved config: {out_dir / 'config.yaml'}; "
        f"TensorBoard: tensorboard --logdir {out_dir}")
    return {"datasets": summaries, "keypoint": metrics, "detection": box_metrics, "end_to_end": records,
            "seconds": seconds, "pictures": pictures}


def results_table(rows) -> str:
    """A markdown table of (what, metric, metrics, protocol) rows."""
    lines = ["| what | metric | AP | AP50 | AP75 | APM | APL |", "|---|---|---:|---:|---:|---:|---:|"]
    for what, metric, m, _ in rows:
        lines.append(f"| {what} | {metric} | " + " | ".join(f"{m.get(k, float('nan')):.3f}"
                                                              for k in ("AP", "AP50", "AP75", "APM", "APL")) + " |")
    lines.append("")
    lines += [f"- {what}: {protocol}" for what, _, _, protocol in rows]
    return "\n".join(lines) + "\n"
