"""Boxes <-> regression deltas relative to anchors (the R-CNN / RetinaNet parametrisation).

Boxes are float ``(x1, y1, x2, y2)`` in input pixels with pixel edges at integers, so a box
covering pixels 0..9 is ``(0, 0, 10, 10)`` and its width is ``x2 - x1``. For a box ``b`` and
an anchor ``a`` with centres ``(cx, cy)`` and sizes ``(w, h)``::

    dx = (cx_b - cx_a) / w_a / std[0]      dw = log(w_b / w_a) / std[2]
    dy = (cy_b - cy_a) / h_a / std[1]      dh = log(h_b / h_a) / std[3]

``decode`` is the exact inverse, except that ``dw`` and ``dh`` (after multiplying by the
standard deviations) are clamped at ``clamp`` before ``exp`` so that an untrained network
cannot produce infinite boxes. Boxes passed to ``encode`` must have positive width and
height (the matcher never pairs an anchor with an empty box, since their IoU is 0).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 when any input is float64, float32 otherwise (float16/bfloat16 included)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _centres_sizes(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x1, y1, x2, y2 = boxes.unbind(-1)
    w = x2 - x1
    h = y2 - y1
    return x1 + 0.5 * w, y1 + 0.5 * h, w, h


class BoxCoder:
    """Encodes boxes as normalised deltas from anchors and decodes them back.

    Args:
        std: divisors of (dx, dy, dw, dh); the defaults bring the deltas of matched anchors
            to roughly unit scale.
        clamp: upper bound of the scaled ``dw``/``dh`` before ``exp`` in ``decode``
            (the default limits a box to 1000/16 times its anchor's size).

    Both methods take (..., 4) tensors that broadcast against each other and return a
    (..., 4) tensor in float32 (float64 when an input is float64).
    """

    def __init__(self, std: Sequence[float] = (0.1, 0.1, 0.2, 0.2), clamp: float = math.log(1000 / 16)):
        if len(std) != 4 or min(std) <= 0:
            raise ValueError(f"std must be 4 positive numbers, got {tuple(std)}")
        self.std = tuple(float(s) for s in std)
        self.clamp = float(clamp)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(std={self.std}, clamp={self.clamp:.4g})"

    def encode(self, boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Deltas (..., 4) that turn ``anchors`` into ``boxes``."""
        dtype = _compute_dtype(boxes, anchors)
        bx, by, bw, bh = _centres_sizes(boxes.to(dtype))
        ax, ay, aw, ah = _centres_sizes(anchors.to(dtype))
        sx, sy, sw, sh = self.std
        return torch.stack(
            [
                (bx - ax) / aw / sx,
                (by - ay) / ah / sy,
                torch.log(bw / aw) / sw,
                torch.log(bh / ah) / sh,
            ],
            dim=-1,
        )

    def decode(self, deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Boxes (..., 4) obtained by applying ``deltas`` to ``anchors``."""
        dtype = _compute_dtype(deltas, anchors)
        dx, dy, dw, dh = deltas.to(dtype).unbind(-1)
        ax, ay, aw, ah = _centres_sizes(anchors.to(dtype))
        sx, sy, sw, sh = self.std
        cx = dx * sx * aw + ax
        cy = dy * sy * ah + ay
        w = torch.exp((dw * sw).clamp(max=self.clamp)) * aw
        h = torch.exp((dh * sh).clamp(max=self.clamp)) * ah
        return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
