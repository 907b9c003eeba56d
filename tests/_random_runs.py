"""A randomly initialised full MultiPoseNet (keypoint + detection + PRN) saved like a run, for
tests of what runs a checkpoint (inference, the test stage) without training one."""
from __future__ import annotations

from pathlib import Path

import torch

from posenet.config import build, save_config

# A tiny model; random weights score every box ~0.01: keep them so that grouping has work to do.
TINY = ["model.fpn_channels=16", "model.subnet_channels=16", "model.fuse_channels=16", "detection.fpn_channels=16",
        "detection.head_convs=1", "prn.hidden=32", "keypoint.val_input_size=96",
        "detection.score_threshold=0.0", "detection.max_detections=5", "infer.box_threshold=0.0"]


def save_random_run(cfg, run: Path) -> Path:
    """``run/best.pt`` (seed 0) and ``run/config.yaml`` of ``cfg``'s full model; the checkpoint's path."""
    torch.manual_seed(0)
    model = build.posenet_model(cfg, 17, detection=True, prn=True)
    torch.save({"format": "posenet-checkpoint", "model": model.state_dict()}, run / "best.pt")
    save_config(cfg, run)
    return run / "best.pt"
