"""Compiled operators of posenet (NMS, heatmap peak cells), each with a fallback. See
posenet.ops.nms and posenet.ops.peaks."""
from .nms import (
    BACKEND_ENV,
    batched_nms,
    get_nms_backend,
    has_compiled_nms,
    nms,
    set_nms_backend,
)
from .peaks import has_compiled_peaks, peak_cells

__all__ = [
    "BACKEND_ENV",
    "batched_nms",
    "get_nms_backend",
    "has_compiled_nms",
    "has_compiled_peaks",
    "nms",
    "peak_cells",
    "set_nms_backend",
]
