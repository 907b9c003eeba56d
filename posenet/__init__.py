"""posenet: MultiPoseNet (ECCV 2018) multi-person 2D pose estimation in modern PyTorch."""

__version__ = "0.1.0"
