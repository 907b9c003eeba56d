"""One-to-one assignment of candidates to slots by score, best first (the PRN grouping's peaks
to boxes, the PAF grouping's part pairs), vectorised."""
from __future__ import annotations

import numpy as np


def best_first_matching(score: np.ndarray) -> np.ndarray:
    """Greedy assignment in (K, B, S) candidate scores (-inf: no candidate): best pairs first,
    each (k, b) row takes at most one slot s and each (k, s) at most one row. Returns the
    chosen slot per (k, b), -1 where none.

    The rounds accept every pair that is the best of its row and of its column at once: such a
    pair is the next one the one-by-one greedy pass would take in its row and column, so the
    result is the greedy pass's (ties broken by index), in a few vectorised rounds instead of
    one Python step per pair.
    """
    score = score.copy()
    K, B, S = score.shape
    chosen = np.full((K, B), -1, dtype=np.int64)
    if B == 0 or S == 0:
        return chosen
    boxes = np.arange(B)
    while True:
        row = score.argmax(2)  # (K, B): best slot of each row
        value = np.take_along_axis(score, row[..., None], 2)[..., 0]
        col = score.argmax(1)  # (K, S): best row of each slot
        mutual = np.isfinite(value) & (np.take_along_axis(col, row, 1) == boxes)
        if not mutual.any():
            return chosen
        k, b = np.nonzero(mutual)
        s = row[k, b]
        chosen[k, b] = s
        score[k, b, :] = -np.inf
        score[k, :, s] = -np.inf
