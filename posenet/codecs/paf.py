"""Part affinity fields (Cao et al., CVPR 2017): limbs <-> vector fields on the heatmap grid,
and the grouping of part peaks into people that decodes them.

Grid: the heatmap codec's (``codecs/heatmap.py``): cell ``j`` is centred on input pixel
``stride * j + (stride - 1) / 2``, so PAFs and part heatmaps share one grid (the release's PAF
grid was offset from its heatmap grid by about half a cell).

``encode``: for limb l from part a to part b of a person, every cell whose centre lies within
``limb_width`` cells of the segment's line and along it from ``limb_width`` cells before a to
``limb_width`` cells past b (the release's limb box, grown by the same margin, so that the cells
nearest to the ends are covered) holds the unit vector a -> b in channels (2l, 2l + 1); where
limbs of one type of several people overlap the vectors are averaged.

``decode``: the part peaks (3x3 maxima above a threshold, sub-pixel, from the heatmap codec)
joined into people by ``posenet.portable.paf.PafGrouping`` (numpy, shared with the portable
decoder; its docstring gives the pair scores, the matching and the merging).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from posenet.portable.paf import PAF_SAMPLING, PafGrouping, PafPeople


class PafCodec:
    """Part affinity fields of ``limbs`` (pairs of part indices) on a stride-``stride`` grid."""

    def __init__(self, input_size: Sequence[int], limbs: Sequence[Sequence[int]], stride: int = 8,
                 limb_width: float = 1.0, samples: int = 10, paf_threshold: float = 0.05,
                 min_inliers: float = 0.8, min_parts: int = 3, min_mean_score: float = 0.2,
                 sampling: str = "bilinear"):
        if limb_width <= 0:
            raise ValueError("limb_width must be positive")
        self.grouping = PafGrouping(input_size, limbs, stride, samples, paf_threshold, min_inliers, min_parts,
                                    min_mean_score, sampling)
        self.input_size, self.limbs, self.stride = self.grouping.input_size, self.grouping.limbs, self.grouping.stride
        self.limb_width = float(limb_width)

    @property
    def heatmap_size(self) -> tuple[int, int]:
        h, w = self.input_size
        return -(-h // self.stride), -(-w // self.stride)

    def _centres(self) -> tuple[np.ndarray, np.ndarray]:
        h, w = self.heatmap_size
        s = self.stride
        return s * np.arange(w) + (s - 1) / 2.0, s * np.arange(h) + (s - 1) / 2.0

    # ------------------------------------------------------------------ encode

    def encode(self, keypoints) -> np.ndarray:
        """PAFs (2L, H, W) float32 of people's parts (P, K, 3) x, y, v in input pixels (v > 0:
        labelled)."""
        kps = np.asarray(keypoints, dtype=np.float64).reshape(-1, *np.shape(keypoints)[-2:])
        h, w = self.heatmap_size
        xs, ys = self._centres()
        out = np.zeros((2 * len(self.limbs), h, w), dtype=np.float32)
        width = self.limb_width * self.stride
        for l, (a, b) in enumerate(self.limbs):
            pa, pb = kps[:, a], kps[:, b]
            vec = pb[:, :2] - pa[:, :2]
            length = np.linalg.norm(vec, axis=1)
            ok = (pa[:, 2] > 0) & (pb[:, 2] > 0) & (length > 1e-6)
            if not ok.any():
                continue
            pa, vec, length = pa[ok], vec[ok], length[ok]
            unit = vec / length[:, None]  # (P, 2)
            dx = xs[None, None, :] - pa[:, 0, None, None]  # (P, 1, W)
            dy = ys[None, :, None] - pa[:, 1, None, None]  # (P, H, 1)
            along = dx * unit[:, 0, None, None] + dy * unit[:, 1, None, None]
            across = np.abs(dx * unit[:, 1, None, None] - dy * unit[:, 0, None, None])
            on = (along >= -width) & (along <= length[:, None, None] + width) & (across <= width)  # (P, H, W)
            count = on.sum(0)
            field = np.einsum("phw,pc->chw", on.astype(np.float64), unit)
            out[2 * l:2 * l + 2] = np.where(count > 0, field / np.maximum(count, 1), 0.0)
        return out

    # ------------------------------------------------------------------ decode

    def pair_scores(self, coords: np.ndarray, valid: np.ndarray, pafs: np.ndarray) -> np.ndarray:
        """(L, M, M) scores of every candidate pair (``PafGrouping.pair_scores``)."""
        return self.grouping.pair_scores(coords, valid, pafs)

    def decode(self, coords, scores, valid, pafs) -> PafPeople:
        """People from part peaks (``coords`` (K, M, 2) input pixels, ``scores`` (K, M),
        ``valid`` (K, M): e.g. ``KeypointHeatmapCodec.decode``'s ``Peaks``) and PAFs (2L, H, W)."""
        return self.grouping(coords, scores, valid, pafs)


__all__ = ["PAF_SAMPLING", "PafCodec", "PafPeople"]
