"""Non-maximum suppression with torchvision's semantics.

``nms`` and ``batched_nms`` return the same kept indices as ``torchvision.ops.nms`` and
``torchvision.ops.batched_nms``:

* boxes are ``(x1, y1, x2, y2)``; scores are taken in decreasing order by a stable sort, as
  torchvision does (since 0.12): tied scores in increasing index order, so ties resolve the
  same way (and identically on CPU and GPU);
* IoU is ``inter / (area_i + area_j - inter)`` computed in the boxes' dtype, and a box is
  suppressed when ``IoU > iou_threshold``; float16/bfloat16 boxes are computed in float32
  (torchvision's CPU kernel refuses them), float64 boxes in float64;
* the result is an int64 tensor of kept indices in decreasing score order.

``batched_nms`` suppresses only within a class. It runs the greedy pass per class instead of
offsetting the coordinates by class (torchvision's trick for small inputs, whose float
rounding can change an IoU); kept boxes come out in the same global score order.

Backends. The compiled operators ``torch.ops.posenet.nms`` / ``batched_nms`` (built from
``lib/nms`` into ``posenet._C``) are used when they load. Otherwise a vectorised pure-torch
implementation gives the same answer, and one warning per process says so. The environment
variable ``POSENET_NMS_BACKEND`` (``auto``, the default; ``compiled``; ``torch``) or
:func:`set_nms_backend` forces a backend, e.g. ``POSENET_NMS_BACKEND=torch`` to test the
fallback; ``compiled`` makes a missing extension an error instead of a warning.
"""
from __future__ import annotations

import math
import numbers
import os
import warnings
from typing import Optional

import torch
from torch import Tensor

__all__ = [
    "nms",
    "batched_nms",
    "has_compiled_nms",
    "set_nms_backend",
    "get_nms_backend",
    "BACKEND_ENV",
]

BACKEND_ENV = "POSENET_NMS_BACKEND"
_BACKENDS = ("auto", "compiled", "torch")

_backend_override: Optional[str] = None
_compiled_loaded: Optional[bool] = None  # None until the first attempt
_compiled_error = ""
_device_kernels: dict = {}
_warned = False


# --------------------------------------------------------------------------- backends


def _load_compiled() -> bool:
    global _compiled_loaded, _compiled_error
    if _compiled_loaded is None:
        try:
            from posenet import _C  # noqa: F401  (loading it registers torch.ops.posenet.*)

            torch.ops.posenet.nms  # noqa: B018
            torch.ops.posenet.batched_nms  # noqa: B018
            _compiled_loaded = True
        except Exception as exc:  # ImportError, OSError (ABI mismatch), missing operator
            _compiled_loaded = False
            _compiled_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return _compiled_loaded


def has_compiled_nms() -> bool:
    """True when the compiled operators (``posenet._C``) are loaded and usable."""
    return _load_compiled()


def set_nms_backend(name: Optional[str]) -> Optional[str]:
    """Force a backend (``"auto"``, ``"compiled"``, ``"torch"``), or ``None`` to follow the
    ``POSENET_NMS_BACKEND`` environment variable again. Returns the previous override."""
    global _backend_override
    if name is not None and name not in _BACKENDS:
        raise ValueError(f"NMS backend must be one of {', '.join(_BACKENDS)}, got {name!r}")
    previous, _backend_override = _backend_override, name
    return previous


def get_nms_backend() -> str:
    """The requested backend: the override, else ``POSENET_NMS_BACKEND``, else ``"auto"``."""
    if _backend_override is not None:
        return _backend_override
    name = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if name not in _BACKENDS:
        raise ValueError(f"{BACKEND_ENV} must be one of {', '.join(_BACKENDS)}, got {name!r}")
    return name


def _has_device_kernel(device_type: str) -> bool:
    if device_type == "cpu":
        return True
    known = _device_kernels.get(device_type)
    if known is None:
        key = {"cuda": "CUDA"}.get(device_type)
        known = key is not None and all(
            torch._C._dispatch_has_kernel_for_dispatch_key(op, key)
            for op in ("posenet::nms", "posenet::batched_nms")
        )
        _device_kernels[device_type] = known
    return known


def _warn_fallback(reason: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"posenet NMS: {reason}; using the pure-torch implementation (same results, "
            f"slower). Rebuild with `pip install --no-build-isolation -e .`, or set "
            f"{BACKEND_ENV}=torch to silence this.",
            RuntimeWarning,
            stacklevel=4,
        )


def _use_compiled(device: torch.device) -> bool:
    backend = get_nms_backend()
    if backend == "torch":
        return False
    loaded = _load_compiled()
    if loaded and _has_device_kernel(device.type):
        return True
    if loaded:
        reason = f"the compiled extension has no {device.type} kernel"
    else:
        reason = f"the compiled extension posenet._C did not load ({_compiled_error})"
    if backend == "compiled":
        raise RuntimeError(f"{BACKEND_ENV}=compiled but {reason}")
    _warn_fallback(reason)
    return False


# --------------------------------------------------------------------------- checks


def _check(boxes, scores, idxs, iou_threshold, fn: str) -> float:
    for name, t in (("boxes", boxes), ("scores", scores)) + ((("idxs", idxs),) if fn == "batched_nms" else ()):
        if not isinstance(t, Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{fn}: boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    if scores.dim() != 1:
        raise ValueError(f"{fn}: scores must have shape (N,), got {tuple(scores.shape)}")
    if scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"{fn}: boxes and scores must have the same length, got {boxes.shape[0]} and {scores.shape[0]}"
        )
    if not boxes.is_floating_point():
        raise TypeError(f"{fn}: boxes must be a floating-point tensor, got {boxes.dtype}")
    if not scores.is_floating_point():
        raise TypeError(f"{fn}: scores must be a floating-point tensor, got {scores.dtype}")
    if scores.device != boxes.device:
        raise ValueError(
            f"{fn}: boxes and scores must be on the same device, got {boxes.device} and {scores.device}"
        )
    if idxs is not None:
        if idxs.dim() != 1:
            raise ValueError(f"{fn}: idxs must have shape (N,), got {tuple(idxs.shape)}")
        if idxs.shape[0] != boxes.shape[0]:
            raise ValueError(
                f"{fn}: boxes and idxs must have the same length, got {boxes.shape[0]} and {idxs.shape[0]}"
            )
        if idxs.is_floating_point() or idxs.is_complex() or idxs.dtype == torch.bool:
            raise TypeError(f"{fn}: idxs must be an integer tensor, got {idxs.dtype}")
        if idxs.device != boxes.device:
            raise ValueError(
                f"{fn}: boxes and idxs must be on the same device, got {boxes.device} and {idxs.device}"
            )
    if isinstance(iou_threshold, Tensor) and iou_threshold.numel() == 1:
        thr = float(iou_threshold)
    elif isinstance(iou_threshold, numbers.Real) and not isinstance(iou_threshold, bool):
        thr = float(iou_threshold)
    else:
        raise TypeError(
            f"{fn}: iou_threshold must be a number, got {type(iou_threshold).__name__}"
        )
    if not math.isfinite(thr):
        raise ValueError(f"{fn}: iou_threshold must be finite, got {thr}")
    return thr


def _empty(device: torch.device) -> Tensor:
    return torch.empty((0,), dtype=torch.int64, device=device)


# --------------------------------------------------------------------------- public API


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS; see the module docstring. Returns int64 indices of the kept boxes, in
    decreasing score order."""
    thr = _check(boxes, scores, None, iou_threshold, "nms")
    if boxes.shape[0] == 0:
        return _empty(boxes.device)
    if _use_compiled(boxes.device):
        return torch.ops.posenet.nms(boxes, scores, thr)
    return _torch_nms(boxes, scores, None, thr)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS within each class ``idxs[i]``; boxes of different classes never suppress
    each other. Returns int64 indices of the kept boxes, in decreasing score order."""
    thr = _check(boxes, scores, idxs, iou_threshold, "batched_nms")
    if boxes.shape[0] == 0:
        return _empty(boxes.device)
    if _use_compiled(boxes.device):
        return torch.ops.posenet.batched_nms(boxes, scores, idxs, thr)
    return _torch_nms(boxes, scores, idxs, thr)


# --------------------------------------------------------------------------- pure torch

# Boxes are processed in blocks of sorted candidates; within a block the suppression graph is
# a (block x block) boolean matrix, against earlier blocks a (kept x block) one.
_BLOCK = 512
_KEPT_CHUNK = 4096


def _threshold_as(thr: float, dtype: torch.dtype) -> float:
    """The largest value of ``dtype`` not above ``thr`` (as a Python float): comparing a
    ``dtype`` IoU with it by ``>`` equals torchvision's comparison of the IoU promoted to
    double with the double threshold."""
    if dtype == torch.float64:
        return thr
    t = torch.tensor(thr, dtype=torch.float64).to(dtype)
    if t.item() > thr:
        t = torch.nextafter(t, torch.tensor(-math.inf, dtype=dtype))
    return t.item()


def _iou_above(a: Tensor, area_a: Tensor, b: Tensor, area_b: Tensor, thr: float) -> Tensor:
    """(len(a), len(b)) boolean matrix of IoU > thr, with the compiled kernel's arithmetic.
    ``a`` and ``b`` are (4, n) coordinate rows (contiguous, so the broadcasts vectorise)."""
    ax1, ay1, ax2, ay2 = (c[:, None] for c in a)
    bx1, by1, bx2, by2 = (c[None, :] for c in b)
    w = torch.minimum(ax2, bx2).sub_(torch.maximum(ax1, bx1)).clamp_(min=0)
    h = torch.minimum(ay2, by2).sub_(torch.maximum(ay1, by1)).clamp_(min=0)
    inter = w.mul_(h)
    union = (area_a[:, None] + area_b[None, :]).sub_(inter)
    return inter.div_(union) > thr


def _torch_nms(boxes: Tensor, scores: Tensor, idxs: Optional[Tensor], thr: float) -> Tensor:
    """Exact greedy NMS without a Python loop per box.

    Candidates are taken in blocks of sorted order. Each block first drops the boxes that an
    already kept box (from earlier blocks) suppresses. Inside the block, greedy NMS is the
    fixed point of ``keep[j] = not any(over[i, j] and keep[i] for i < j)`` ("Cluster-NMS"):
    iterating it from all-True makes the first t boxes final after t rounds, and a fixed
    point is the greedy result (by induction on j), so it ends with exactly greedy NMS.
    """
    n = boxes.shape[0]
    if not bool(torch.isfinite(boxes).all()):
        raise ValueError("nms: boxes contain NaN or infinite values")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("nms: scores contain NaN or infinite values")
    compute = torch.float64 if boxes.dtype == torch.float64 else torch.float32
    if scores.dtype not in (torch.float32, torch.float64):
        scores = scores.float()
    order = torch.sort(scores, dim=0, descending=True, stable=True)[1]
    b = boxes.to(compute)[order].t().contiguous()  # (4, n): x1, y1, x2, y2 rows
    area = (b[2] - b[0]) * (b[3] - b[1])
    cls = idxs.to(torch.int64)[order] if idxs is not None else None
    thr = _threshold_as(thr, compute)

    keep = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    kept_pos = torch.empty(0, dtype=torch.int64, device=boxes.device)
    for start in range(0, n, _BLOCK):
        end = min(n, start + _BLOCK)
        blk, blk_area = b[:, start:end], area[start:end]
        alive = torch.ones(end - start, dtype=torch.bool, device=boxes.device)
        for k0 in range(0, kept_pos.numel(), _KEPT_CHUNK):
            kp = kept_pos[k0 : k0 + _KEPT_CHUNK]
            over = _iou_above(b[:, kp], area[kp], blk, blk_area, thr)
            if cls is not None:
                over &= cls[kp, None] == cls[None, start:end]
            alive &= ~over.any(0)
        cand = alive.nonzero().squeeze(1)
        if cand.numel() == 0:
            continue
        cb, ca = blk[:, cand], blk_area[cand]
        over = _iou_above(cb, ca, cb, ca, thr).triu_(1)
        if cls is not None:
            cc = cls[start + cand]
            over &= cc[:, None] == cc[None, :]
        k = torch.ones(cand.numel(), dtype=torch.bool, device=boxes.device)
        while True:
            k_next = ~(over & k[:, None]).any(0)
            if torch.equal(k_next, k):
                break
            k = k_next
        new = start + cand[k]
        keep[new] = True
        kept_pos = torch.cat([kept_pos, new])
    return order[keep]
