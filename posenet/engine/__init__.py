"""The training engine shared by the keypoint, detection and PRN stages."""

from posenet.engine.checkpoint import load_checkpoint, load_model_state, model_state_of, save_atomic
from posenet.engine.distributed import DistInfo, init_distributed
from posenet.engine.loader import derive_seed, seed_everything
from posenet.engine.schedules import LRSchedule, WarmupCosine, build_optimizer, build_scheduler
from posenet.engine.trainer import SkippedSampleWarning, Trainer

__all__ = [
    "DistInfo",
    "LRSchedule",
    "SkippedSampleWarning",
    "Trainer",
    "WarmupCosine",
    "build_optimizer",
    "build_scheduler",
    "derive_seed",
    "init_distributed",
    "load_checkpoint",
    "load_model_state",
    "model_state_of",
    "save_atomic",
    "seed_everything",
]
