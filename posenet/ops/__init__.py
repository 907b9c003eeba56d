"""Compiled operators of posenet (NMS), with a pure-torch fallback. See posenet.ops.nms."""
from .nms import (
    BACKEND_ENV,
    batched_nms,
    get_nms_backend,
    has_compiled_nms,
    nms,
    set_nms_backend,
)

__all__ = [
    "BACKEND_ENV",
    "batched_nms",
    "get_nms_backend",
    "has_compiled_nms",
    "nms",
    "set_nms_backend",
]
