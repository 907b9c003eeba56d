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

``decode``: the part peaks (3x3 maxima above a threshold, sub-pixel, from the heatmap codec);
for every limb each candidate pair of peaks is scored by the PAF sampled at ``samples`` points
along the segment: the mean of PAF . direction plus ``min(0.5 * H / length - 1, 0)`` (H the
input height), accepted when more than ``min_inliers`` of the samples exceed
``paf_threshold`` and the score is positive; pairs are taken one-to-one, best first; the pairs
are merged into people limb by limb, in the limb order (neck outwards). People with fewer than
``min_parts`` parts or a mean score (peak and pair scores over parts) under ``min_mean_score``
are dropped. A person's score is the mean of its part and pair scores times the share of the
parts it has (the release multiplied its total score by its number of parts). Vectorised
over peaks and pairs: the only loops are over the limbs and over merges of two partial people.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from posenet.ops.matching import best_first_matching


class PafPeople(NamedTuple):
    """People found by ``PafCodec.decode``: ``keypoints`` (N, K, 3) x, y (input pixels), score
    (the part's peak value; 0 where the part was not found); ``scores`` (N,)."""

    keypoints: np.ndarray
    scores: np.ndarray


class PafCodec:
    """Part affinity fields of ``limbs`` (pairs of part indices) on a stride-``stride`` grid."""

    def __init__(self, input_size: Sequence[int], limbs: Sequence[Sequence[int]], stride: int = 8,
                 limb_width: float = 1.0, samples: int = 10, paf_threshold: float = 0.05,
                 min_inliers: float = 0.8, min_parts: int = 3, min_mean_score: float = 0.2):
        if len(input_size) != 2 or min(input_size) <= 0:
            raise ValueError(f"input_size must be (height, width), got {input_size}")
        if stride <= 0 or limb_width <= 0 or samples < 2:
            raise ValueError("stride and limb_width must be positive and samples at least 2")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.limbs = np.asarray(limbs, dtype=np.int64).reshape(-1, 2)
        self.stride, self.limb_width, self.samples = int(stride), float(limb_width), int(samples)
        self.paf_threshold, self.min_inliers = float(paf_threshold), float(min_inliers)
        self.min_parts, self.min_mean_score = int(min_parts), float(min_mean_score)

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
        """(L, M, M) scores of every candidate pair (peak i of the limb's first part, peak j of
        its second), -inf where not a candidate or not accepted; ``coords`` (K, M, 2) input
        pixels, ``valid`` (K, M). Only the pairs of valid peaks are sampled, as one flat batch."""
        L, M = len(self.limbs), coords.shape[1]
        h, w = pafs.shape[-2:]
        out = np.full((L, M, M), -np.inf)
        first, second = self.limbs[:, 0], self.limbs[:, 1]
        l, i, j = np.nonzero(valid[first][:, :, None] & valid[second][:, None, :])
        if not len(l):
            return out
        a = coords[first[l], i].astype(np.float32)  # (P, 2)
        vec = coords[second[l], j].astype(np.float32) - a
        length = np.sqrt((vec ** 2).sum(-1))
        unit = vec / np.maximum(length, 1e-6)[:, None]
        field_x = np.ascontiguousarray(pafs[0::2], dtype=np.float32).reshape(-1)  # (L * H * W,)
        field_y = np.ascontiguousarray(pafs[1::2], dtype=np.float32).reshape(-1)
        base = l * (h * w)
        t = np.linspace(0.0, 1.0, self.samples, dtype=np.float32)
        scale, offset = 1.0 / self.stride, 0.5 / self.stride - 0.5

        def dots(pairs, ts):
            """PAF . direction at the cells nearest to the sample points ``ts`` of ``pairs``."""
            gx = np.rint((a[pairs, 0, None] + ts * vec[pairs, 0, None]) * scale + offset)
            gy = np.rint((a[pairs, 1, None] + ts * vec[pairs, 1, None]) * scale + offset)
            index = (base[pairs, None] + np.clip(gy, 0, h - 1).astype(np.int64) * w
                     + np.clip(gx, 0, w - 1).astype(np.int64))
            return field_x[index] * unit[pairs, 0, None] + field_y[index] * unit[pairs, 1, None]

        # A pair needs more than min_inliers of its samples above the threshold: at most
        # `allowed` may fail. Three samples first: a pair failing more of them than allowed is
        # out (exact), which leaves the few plausible pairs for the full sampling.
        allowed = self.samples - int(np.floor(self.min_inliers * self.samples)) - 1
        probe = np.unique(np.linspace(0, self.samples - 1, 3).round().astype(np.int64))
        keep = np.arange(len(l))
        if allowed < len(probe):
            fails = (dots(keep, t[probe]) <= self.paf_threshold).sum(-1)
            keep = keep[fails <= allowed]
        dot = dots(keep, t)
        l, i, j, length = l[keep], i[keep], j[keep], length[keep]
        score = dot.mean(-1) + np.minimum(0.5 * self.input_size[0] / np.maximum(length, 1e-6) - 1.0, 0.0)
        ok = ((dot > self.paf_threshold).mean(-1) > self.min_inliers) & (score > 0) & (length > 1e-6)
        out[l[ok], i[ok], j[ok]] = score[ok]
        return out

    def decode(self, coords, scores, valid, pafs) -> PafPeople:
        """People from part peaks (``coords`` (K, M, 2) input pixels, ``scores`` (K, M),
        ``valid`` (K, M): e.g. ``KeypointHeatmapCodec.decode``'s ``Peaks``) and PAFs (2L, H, W)."""
        coords, scores = np.asarray(coords, np.float64), np.asarray(scores, np.float64)
        valid, pafs = np.asarray(valid, bool), np.asarray(pafs, np.float32)
        # keep only as many peak slots as the part with the most peaks uses (valid ones come
        # first only when sorted best first, as the heatmap codec returns them)
        used = int(valid.sum(1).max()) if valid.size else 0
        if used < valid.shape[1] and valid[:, :used].sum() == valid.sum():
            coords, scores, valid = coords[:, :used], scores[:, :used], valid[:, :used]
        K, M = scores.shape
        pair = self.pair_scores(coords, valid, pafs)
        chosen = best_first_matching(pair)  # (L, M): the second part's peak for each first-part peak
        owner = np.full((K, M), -1, dtype=np.int64)
        parts = np.zeros((0, K), dtype=np.int64)  # peak index of each person's parts, -1: none
        pair_total = np.zeros(0)
        for l, (a, b) in enumerate(self.limbs):
            ia = np.flatnonzero(chosen[l] >= 0)
            if not len(ia):
                continue
            ib = chosen[l][ia]
            s = pair[l, ia, ib]
            pa, pb = owner[a, ia], owner[b, ib]
            # a in a person that lacks b (or b in one that lacks a): the other joins it
            grow = (pa >= 0) & (pb < 0)
            grow &= parts[np.maximum(pa, 0), b] < 0 if len(parts) else False
            parts[pa[grow], b], owner[b, ib[grow]] = ib[grow], pa[grow]
            pair_total[pa[grow]] += s[grow]
            back = (pa < 0) & (pb >= 0)
            back &= parts[np.maximum(pb, 0), a] < 0 if len(parts) else False
            parts[pb[back], a], owner[a, ia[back]] = ia[back], pb[back]
            pair_total[pb[back]] += s[back]
            same = (pa >= 0) & (pa == pb)
            pair_total[pa[same]] += s[same]
            # neither in a person: a new one
            new = (pa < 0) & (pb < 0)
            if new.any():
                ids = len(parts) + np.arange(int(new.sum()))
                rows = np.full((len(ids), K), -1, dtype=np.int64)
                rows[:, a], rows[:, b] = ia[new], ib[new]
                parts = np.concatenate([parts, rows])
                pair_total = np.concatenate([pair_total, s[new]])
                owner[a, ia[new]], owner[b, ib[new]] = ids, ids
            # in two people: merge them when they share no part (rare: a loop over these only)
            for i in np.flatnonzero((pa >= 0) & (pb >= 0) & (pa != pb)):
                p, q = owner[a, ia[i]], owner[b, ib[i]]
                if p == q or ((parts[p] >= 0) & (parts[q] >= 0)).any():
                    continue
                taken = parts[q] >= 0
                parts[p, taken] = parts[q, taken]
                owner[np.flatnonzero(taken), parts[q, taken]] = p
                pair_total[p] += pair_total[q] + s[i]
                parts[q] = -1
                pair_total[q] = 0.0
        return self._people(parts, pair_total, coords, scores)

    def _people(self, parts, pair_total, coords, scores) -> PafPeople:
        K = scores.shape[0]
        found = parts >= 0
        n_parts = found.sum(1)
        peak = np.where(found, scores[np.arange(K)[None], np.maximum(parts, 0)], 0.0)
        total = peak.sum(1) + pair_total
        keep = (n_parts >= self.min_parts) & (total / np.maximum(n_parts, 1) >= self.min_mean_score)
        found, parts, peak, total = found[keep], parts[keep], peak[keep], total[keep]
        n_pairs = np.maximum(found.sum(1) - 1, 0)  # a tree of n parts has n - 1 pairs
        keypoints = np.zeros((len(parts), K, 3))
        xy = coords[np.arange(K)[None], np.maximum(parts, 0)]
        keypoints[..., :2] = np.where(found[..., None], xy, 0.0)
        keypoints[..., 2] = peak
        # the mean of its part and pair scores, times the share of the K parts it has: fragments
        # of a person (a limb tree cut where a part is missing) rank below whole people
        person = total / np.maximum(found.sum(1) + n_pairs, 1) * found.sum(1) / K
        order = np.argsort(-person, kind="stable")
        return PafPeople(keypoints[order], person[order])


__all__ = ["PafCodec", "PafPeople"]
