"""The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) over arrays of points, vectorised.

Each point is low-pass filtered with a cutoff that rises with its speed: still points are
smoothed hard (``min_cutoff``, Hz: less jitter), fast ones little (``beta``: more cutoff per
pixel per second of speed, less lag). For one point with samples ``x_i`` at times ``t_i``:

    a(fc, dt)  = 1 / (1 + 1 / (2 pi fc dt))
    dx_i       = a(d_cutoff, dt) (x_i - y_{i-1}) / dt + (1 - a(d_cutoff, dt)) dx_{i-1}
    y_i        = a(min_cutoff + beta |dx_i|, dt) x_i + (1 - a(...)) y_{i-1}

with ``y_0 = x_0`` and ``dx_0 = 0``; ``|dx|`` is the length of the point's velocity (pixels per
second), so both coordinates of a point share one cutoff. A point that is not valid in a frame
(not found) is passed through unchanged and its filter restarts: its next valid sample is
returned as it is. A constant input is returned exactly from its first sample on.
"""
from __future__ import annotations

import math

import numpy as np


def smoothing_factor(cutoff, dt: float):
    """``a = 1 / (1 + tau / dt)`` with ``tau = 1 / (2 pi cutoff)``: the exponential smoothing
    factor of a first-order low-pass filter at ``cutoff`` Hz sampled every ``dt`` seconds."""
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One-Euro filters for an array of points, (N, D) (D coordinates per point, e.g. (K, 2)
    keypoints), each point with its own state.

    ``min_cutoff`` (Hz): the cutoff of a still point; lower smooths more. ``beta`` (per pixel):
    how fast the cutoff rises with speed; higher lags less. ``d_cutoff`` (Hz): the cutoff of the
    speed estimate (1 Hz, the paper's).
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0):
        if not (min_cutoff > 0 and d_cutoff > 0 and beta >= 0):
            raise ValueError(f"need min_cutoff > 0, d_cutoff > 0 and beta >= 0, got {min_cutoff}, {d_cutoff}, {beta}")
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        """Forget every point: the next sample of each is returned as it is."""
        self.value: np.ndarray | None = None   # (N, D) last output
        self.speed: np.ndarray | None = None   # (N, D) last filtered velocity
        self.alive: np.ndarray | None = None   # (N,) whether the point has a state
        self.time: float | None = None

    def __call__(self, x, t: float, valid=None) -> np.ndarray:
        """The filtered points of ``x`` (N, D) at time ``t`` (seconds, increasing). ``valid``
        (N,) bool, default all: an invalid point is returned unchanged and its filter restarts."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        n = len(x)
        valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool).reshape(n)
        if self.value is None or self.value.shape != x.shape:
            self.value, self.speed = x.copy(), np.zeros_like(x)
            self.alive = np.zeros(n, bool)
        dt = None if self.time is None else float(t) - self.time
        out = x.copy()
        going = valid & self.alive
        if dt is not None and dt > 0 and going.any():
            raw = (x[going] - self.value[going]) / dt
            a_d = smoothing_factor(self.d_cutoff, dt)
            speed = a_d * raw + (1.0 - a_d) * self.speed[going]
            cutoff = self.min_cutoff + self.beta * np.linalg.norm(speed, axis=1, keepdims=True)
            a = smoothing_factor(cutoff, dt)
            out[going] = a * x[going] + (1.0 - a) * self.value[going]
            self.speed[going] = speed
        elif dt is not None and dt <= 0:
            out[going] = self.value[going]  # a repeated time stamp: the last output
        fresh = valid & ~self.alive
        self.speed[fresh] = 0.0
        self.value[valid] = out[valid]
        self.alive = valid.copy()
        self.time = float(t)
        return out


__all__ = ["OneEuroFilter", "smoothing_factor"]
