"""Anchor boxes of the RetinaNet person detector on the pyramid levels P3..P7.

Each level has one base size (32..512 input pixels) and one stride (8..128). At every
feature-map location there are ``len(ratios) * len(scales)`` anchors (9 by default), centred
on the cell centre ``((x + 0.5) * stride, (y + 0.5) * stride)``. An anchor of base size ``s``,
scale ``c`` and aspect ratio ``r = h / w`` has area ``(s * c) ** 2``, width
``s * c / sqrt(r)`` and height ``s * c * sqrt(r)``.

Order of the anchors of a level (and of the head's flattened outputs): locations row-major
(y, then x), and at each location the anchors ratio-major, scale-minor. Boxes are
``(x1, y1, x2, y2)`` in input pixels with pixel edges at integers.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch


class AnchorGenerator:
    """Anchors per pyramid level for given feature-map sizes, cached per (sizes, device).

    Args:
        sizes: base anchor size of each level in input pixels.
        strides: input pixels per feature-map cell of each level.
        ratios: aspect ratios ``h / w``.
        scales: multipliers of the base size.
        cache_size: number of (feature sizes, device) entries kept; the oldest is dropped.

    Calling it returns one (h * w * num_anchors, 4) float32 tensor per level. Repeated calls
    with the same sizes and device return the same (cached) tensors, which must therefore not
    be modified in place.
    """

    def __init__(
        self,
        sizes: Sequence[float] = (32, 64, 128, 256, 512),
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        ratios: Sequence[float] = (0.5, 1.0, 2.0),
        scales: Sequence[float] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3)),
        cache_size: int = 16,
    ):
        if len(sizes) != len(strides) or not sizes:
            raise ValueError(f"need one stride per anchor size, got sizes {tuple(sizes)} and strides {tuple(strides)}")
        if not ratios or not scales:
            raise ValueError("ratios and scales must not be empty")
        self.sizes = tuple(float(s) for s in sizes)
        self.strides = tuple(int(s) for s in strides)
        self.ratios = tuple(float(r) for r in ratios)
        self.scales = tuple(float(c) for c in scales)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict = OrderedDict()
        self._base = [self._base_anchors(size) for size in self.sizes]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(sizes={self.sizes}, strides={self.strides}, "
            f"ratios={self.ratios}, scales={tuple(round(c, 4) for c in self.scales)})"
        )

    @property
    def num_levels(self) -> int:
        return len(self.sizes)

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map location."""
        return len(self.ratios) * len(self.scales)

    def _base_anchors(self, size: float) -> torch.Tensor:
        """(A, 4) float64 anchors of one level centred on the origin, ratio-major."""
        ratios = torch.tensor(self.ratios, dtype=torch.float64)[:, None]
        sides = size * torch.tensor(self.scales, dtype=torch.float64)[None, :]
        w = (sides / ratios.sqrt()).reshape(-1)
        h = (sides * ratios.sqrt()).reshape(-1)
        return torch.stack([-w, -h, w, h], dim=1) / 2

    def _level(self, level: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        stride = self.strides[level]
        ys = (torch.arange(height, dtype=torch.float64) + 0.5) * stride
        xs = (torch.arange(width, dtype=torch.float64) + 0.5) * stride
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)
        anchors = (centres + self._base[level][None]).reshape(-1, 4)
        return anchors.to(device=device, dtype=torch.float32)

    def __call__(
        self, feature_sizes: Sequence[Sequence[int]], device: torch.device | str = "cpu"
    ) -> list[torch.Tensor]:
        """Anchors of every level for feature maps of the given (height, width) sizes."""
        sizes = tuple((int(h), int(w)) for h, w in feature_sizes)
        if len(sizes) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} feature-map sizes (one per level), got {len(sizes)}")
        device = torch.device(device)
        key = (sizes, device)
        cached = self._cache.get(key)
        if cached is None:
            cached = [self._level(i, h, w, device) for i, (h, w) in enumerate(sizes)]
            self._cache[key] = cached
            while len(self._cache) > max(self.cache_size, 1):
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return list(cached)
