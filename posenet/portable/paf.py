"""The OpenPose family's grouping in numpy: part peaks joined into people by the part affinity
fields (Cao et al., CVPR 2017).

For every limb each candidate pair of peaks is scored by the PAF sampled at ``samples`` points
along the segment (bilinearly or at the nearest cell, ``sampling``): the mean of PAF . direction
plus ``min(0.5 * H / length - 1, 0)`` (H the input height), accepted when more than
``min_inliers`` of the samples exceed ``paf_threshold`` and the score is positive; pairs are
taken one-to-one, best first; the pairs are merged into people limb by limb, in the limb order
(neck outwards). People with fewer than ``min_parts`` parts or a mean score (peak and pair
scores over parts) under ``min_mean_score`` are dropped. A person's score is the mean of its
part and pair scores times the share of the parts it has (the release multiplied its total
score by its number of parts). The pair scores are vectorised over all pairs (most are dropped
after a few samples, see ``PafGrouping.pair_scores``); the merging is a plain loop over the
chosen pairs (a few hundred).

The PAFs share the part heatmaps' grid: cell ``j`` is centred on input pixel
``stride * j + (stride - 1) / 2``. ``posenet.codecs.paf.PafCodec`` encodes the fields and
decodes with this grouping."""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from .matching import best_first_matching

# How the grouping reads a PAF at a sample point: "bilinear" between the four cells around it,
# or the "nearest" cell's value.
PAF_SAMPLING = ("bilinear", "nearest")


class PafPeople(NamedTuple):
    """People found by ``PafGrouping``: ``keypoints`` (N, K, 3) x, y (input pixels), score
    (the part's peak value; 0 where the part was not found); ``scores`` (N,), best first."""

    keypoints: np.ndarray
    scores: np.ndarray


class PafGrouping:
    """Part peaks of an input of ``input_size`` (height, width) joined into people along
    ``limbs`` (pairs of part indices) by PAFs on a stride-``stride`` grid (module docstring)."""

    def __init__(self, input_size: Sequence[int], limbs: Sequence[Sequence[int]], stride: int = 8,
                 samples: int = 10, paf_threshold: float = 0.05, min_inliers: float = 0.8, min_parts: int = 3,
                 min_mean_score: float = 0.2, sampling: str = "bilinear"):
        if sampling not in PAF_SAMPLING:
            raise ValueError(f"openpose.paf.sampling must be one of {', '.join(PAF_SAMPLING)}, got {sampling!r}")
        if len(input_size) != 2 or min(input_size) <= 0:
            raise ValueError(f"input_size must be (height, width), got {input_size}")
        if stride <= 0 or samples < 2:
            raise ValueError("openpose.paf: stride must be positive and samples at least 2")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.limbs = np.asarray(limbs, dtype=np.int64).reshape(-1, 2)
        self.stride, self.samples = int(stride), int(samples)
        self.paf_threshold, self.min_inliers = float(paf_threshold), float(min_inliers)
        self.min_parts, self.min_mean_score = int(min_parts), float(min_mean_score)
        self.sampling = sampling
        # decoding constants: the sample points along a pair, how many of them a pair may fail,
        # and the middle samples tried one by one before the full sampling (each the farthest
        # from those already tried) while more than _probe_min pairs are left
        self._t = np.linspace(0.0, 1.0, self.samples, dtype=np.float32)
        self._allowed = self.samples - int(np.floor(self.min_inliers * self.samples)) - 1
        tried, rest = [0, self.samples - 1], list(range(1, self.samples - 1))
        while rest:
            k = max(rest, key=lambda r: (min(abs(r - c) for c in tried), -r))
            tried.append(k)
            rest.remove(k)
        self._probe = tried[2:5]
        self._probe_min = 64

    def pair_scores(self, coords: np.ndarray, valid: np.ndarray, pafs: np.ndarray) -> np.ndarray:
        """(L, M, M) scores of every candidate pair (peak i of the limb's first part, peak j of
        its second), -inf where not a candidate or not accepted; ``coords`` (K, M, 2) input
        pixels, ``valid`` (K, M).

        A pair needs more than ``min_inliers`` of its samples above the threshold: at most
        ``allowed`` of them may fail. The samples are taken in rounds, each on the pairs that
        have not failed too many yet: both ends for all pairs at once (the first end's cell is
        one per peak), then middle samples (``_probe``) on fewer and fewer pairs, which leaves
        the few plausible pairs for the full sampling. Every sample is computed as the full
        sampling computes it, so the rounds drop only pairs that it would reject."""
        L, M = len(self.limbs), coords.shape[1]
        h, w = pafs.shape[-2:]
        hw = h * w
        out = np.full((L, M, M), -np.inf)
        first, second = self.limbs[:, 0], self.limbs[:, 1]
        candidate = valid[first][:, :, None] & valid[second][:, None, :]  # (L, M, M)
        if not candidate.any():
            return out
        field = np.ascontiguousarray(pafs, dtype=np.float32).reshape(-1)  # x of limb l at 2l * hw, y at (2l + 1) * hw
        # (2, K, M); the slots of no peak at 0 (all pairs are computed, only candidates kept)
        xy = np.moveaxis(np.where(valid[..., None], coords, 0.0).astype(np.float32), -1, 0)
        a = xy[:, first]  # (2, L, M)
        pair = np.empty((6, L, M, M), dtype=np.float32)  # per pair: a (x, y), v = b - a, v / |v|
        pair[0:2] = a[..., None]
        np.subtract(xy[:, second, None, :], pair[0:2], out=pair[2:4])
        length = np.sqrt(pair[2] * pair[2] + pair[3] * pair[3])
        np.divide(pair[2:4], np.maximum(length, 1e-6), out=pair[4:6])
        t, thr, allowed = self._t, self.paf_threshold, self._allowed
        scale, offset = 1.0 / self.stride, 0.5 / self.stride - 0.5
        limit = np.array([w - 1, h - 1], dtype=np.float32)
        bilinear = self.sampling == "bilinear"

        def sample(base, p):
            """The PAF (x, y) of the limbs at ``base`` at the points ``p`` (2, ...) in input
            pixels: the nearest cell's, or bilinear between the four around the point."""
            g = p * scale + offset
            g = np.clip(g, 0, limit.reshape((2,) + (1,) * (g.ndim - 1)))
            if not bilinear:
                g = np.rint(g).astype(np.int64)
                index = base + g[1] * w + g[0]
                return at(index), at(index + hw)
            g0 = np.floor(g)
            fx, fy = g[0] - g0[0], g[1] - g0[1]
            g0 = g0.astype(np.int64)
            step_x = (g0[0] < w - 1).astype(np.int64)
            step_y = (g0[1] < h - 1) * w
            i00 = base + g0[1] * w + g0[0]
            i01, i10 = i00 + step_x, i00 + step_y
            i11 = i10 + step_x
            w00, w01, w10, w11 = (1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy
            return tuple(at(i00 + o) * w00 + at(i01 + o) * w01 + at(i10 + o) * w10 + at(i11 + o) * w11
                         for o in (0, hw))

        # both ends of every pair: a + 0 * v is a (one sample per peak), a + 1 * v is a + v
        base = (2 * hw) * np.arange(L)
        unit = pair[4:6]
        at = field.take
        sx, sy = sample(base[:, None], a)  # (L, M)
        fails = (sx[:, :, None] * unit[0] + sy[:, :, None] * unit[1] <= thr).view(np.int8)
        ex, ey = sample(base[:, None, None], pair[0:2] + pair[2:4])  # (L, M, M)
        fails = fails + (ex * unit[0] + ey * unit[1] <= thr).view(np.int8)
        pairs = np.flatnonzero(candidate & (fails <= allowed))  # into the (L, M, M) arrays
        pair, base, fails = pair.reshape(6, -1).take(pairs, 1), base.take(pairs // (M * M)), fails.take(pairs)

        def dots(ts):
            """PAF . direction at the sample points ``ts`` of the pairs."""
            vx, vy = sample(base[:, None], pair[0:2, :, None] + ts * pair[2:4, :, None])
            return vx * pair[4, :, None] + vy * pair[5, :, None]

        for k in self._probe:
            if len(pairs) <= self._probe_min:
                break
            fails = fails + (dots(t[k:k + 1])[:, 0] <= thr)
            keep = np.flatnonzero(fails <= allowed)
            pairs, pair, base, fails = pairs.take(keep), pair.take(keep, 1), base.take(keep), fails.take(keep)
        dot = dots(t)
        length = length.take(pairs)
        score = dot.mean(-1) + np.minimum(0.5 * self.input_size[0] / np.maximum(length, 1e-6) - 1.0, 0.0)
        ok = ((dot > thr).mean(-1) > self.min_inliers) & (score > 0) & (length > 1e-6)
        out.reshape(-1)[pairs[ok]] = score[ok]
        return out

    def __call__(self, coords, scores, valid, pafs) -> PafPeople:
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
        limb, ia = np.nonzero(chosen >= 0)
        ib = chosen[limb, ia]
        # Limb by limb, each chosen pair in turn (plain Python on lists: a few hundred pairs).
        # The pairs of a limb share no peak and a person holds one peak of each part, so no two
        # of them change the same person (the second finds the part taken): one pair at a time
        # is the same as the whole limb at once.
        owner = [[-1] * M for _ in range(K)]  # the person of each peak, -1: none
        parts: list[list[int]] = []  # peak index of each person's parts, -1: none
        pair_total: list[float] = []
        ends = self.limbs.tolist()
        for l, i, j, s in zip(limb.tolist(), ia.tolist(), ib.tolist(), pair[limb, ia, ib].tolist()):
            a, b = ends[l]
            p, q = owner[a][i], owner[b][j]
            if p >= 0 and q < 0:  # a in a person that lacks b: b joins it
                if parts[p][b] < 0:
                    parts[p][b], owner[b][j] = j, p
                    pair_total[p] += s
            elif p < 0 and q >= 0:  # b in a person that lacks a: a joins it
                if parts[q][a] < 0:
                    parts[q][a], owner[a][i] = i, q
                    pair_total[q] += s
            elif p < 0:  # neither in a person: a new one
                row = [-1] * K
                row[a], row[b] = i, j
                owner[a][i] = owner[b][j] = len(parts)
                parts.append(row)
                pair_total.append(s)
            elif p == q:
                pair_total[p] += s
            else:  # in two people: merge them when they share no part
                mine, theirs = parts[p], parts[q]
                if any(x >= 0 and y >= 0 for x, y in zip(mine, theirs)):
                    continue
                for k, y in enumerate(theirs):
                    if y >= 0:
                        mine[k], owner[k][y] = y, p
                pair_total[p] += pair_total[q] + s
                parts[q] = [-1] * K
                pair_total[q] = 0.0
        return self._people(np.array(parts, dtype=np.int64).reshape(-1, K), np.array(pair_total, dtype=np.float64),
                            coords, scores)

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


def people_boxes(keypoints: np.ndarray, image_size) -> np.ndarray:
    """(N, 4) boxes x1, y1, x2, y2 of people (N, K, 3) x, y, score in image pixels: the extent
    of their found keypoints (score > 0; a person with none at (0, 0, 0, 0)), clipped to the
    image (height, width)."""
    kps = np.asarray(keypoints, dtype=np.float64).reshape(len(keypoints), -1, 3)
    have = kps[..., 2] > 0
    big = np.where(have, 0.0, np.inf)[..., None]
    lo, hi = np.min(kps[..., :2] + big, axis=1), np.max(kps[..., :2] - big, axis=1)
    none = ~have.any(1)
    lo[none], hi[none] = 0.0, 0.0
    boxes = np.concatenate([lo, hi], axis=1)
    h, w = image_size
    boxes[:, 0::2], boxes[:, 1::2] = boxes[:, 0::2].clip(0, w), boxes[:, 1::2].clip(0, h)
    return boxes
