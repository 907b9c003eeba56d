"""The quickstart's main job on the embedded default data (``make demo``).

Generate (or reuse) the synthetic COCO-format dataset of the config and print what it holds,
train the keypoint stage (resuming a finished or interrupted run instead of starting over),
then validate its best checkpoint: COCO keypoint AP with ground-truth boxes on the synthetic
val split, with the protocol printed.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from posenet.config import build, save_config
from posenet.data.coco import format_summary
from posenet.utils.io import write_json_atomic

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
    from posenet.stages import keypoint

    out_dir = Path(cfg.output_dir)
    save_config(cfg, out_dir)
    ensure_synthetic_dataset(cfg, log)
    summaries = {}
    for split in (cfg.data.train_split, cfg.data.val_split):
        summaries[split] = build.coco_split(cfg.data, split).summary()
        log(format_summary(summaries[split]))

    keypoint_dir = out_dir / "keypoint"
    log(f"\n== keypoint stage: training into {keypoint_dir} (runs again only what is not done yet)")
    start = time.perf_counter()
    keypoint.train(cfg, out_dir=keypoint_dir, resume=True, log=log)
    log(f"keypoint stage: {time.perf_counter() - start:.0f} s")

    checkpoint = keypoint_dir / "best.pt"
    log(f"\n== keypoint stage: validation of {checkpoint}")
    metrics, evaluator = keypoint.validate(cfg, checkpoint, log=log)
    write_json_atomic(keypoint_dir / "val_metrics.json", keypoint.metrics_record(metrics, evaluator, checkpoint),
                      indent=2)
    log(f"\nresolved config: {out_dir / 'config.yaml'}; TensorBoard: tensorboard --logdir {out_dir}")
    return {"datasets": summaries, "keypoint": metrics}
