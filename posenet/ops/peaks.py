"""Heatmap peak cells on the CPU: the compiled ``torch.ops.posenet.peak_cells`` (``lib/nms``,
built into ``posenet._C`` with the NMS) when it loads, else the portable decoder's numpy
``posenet.portable.peaks.peak_cells``. Both give the same cells (``tests/test_heatmap_codec.py``);
the compiled one is one pass over the maps instead of a maximum filter and a few full-size
numpy passes."""
from __future__ import annotations

import torch

from posenet.ops.nms import has_compiled_nms
from posenet.portable import peaks as portable_peaks

_compiled: bool | None = None


def has_compiled_peaks() -> bool:
    """True when the compiled ``torch.ops.posenet.peak_cells`` is loaded (an extension built
    before it existed has only the NMS)."""
    global _compiled
    if _compiled is None:
        _compiled = False
        if has_compiled_nms():
            try:
                torch.ops.posenet.peak_cells  # noqa: B018
                _compiled = True
            except (AttributeError, RuntimeError):
                pass
    return _compiled


def peak_cells(heat: torch.Tensor, threshold: float, max_peaks: int, compiled: bool | None = None):
    """``posenet.portable.peaks.peak_cells`` of CPU maps (..., H, W) as tensors: flat cell
    indices (..., M) int64 (-1 past a map's peaks) and values (..., M) float32. ``compiled``:
    None, the compiled kernel when it is there; True or False to choose."""
    heat = heat.detach().float().contiguous()
    if compiled is None:
        compiled = has_compiled_peaks()
    if compiled:
        return torch.ops.posenet.peak_cells(heat, float(threshold), int(max_peaks))
    index, values = portable_peaks.peak_cells(heat.numpy(), threshold, max_peaks)
    return torch.from_numpy(index), torch.from_numpy(values)


__all__ = ["has_compiled_peaks", "peak_cells"]
