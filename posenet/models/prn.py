"""The Pose Residual Network (PRN) of MultiPoseNet and its loss (docs/design.md §2).

The PRN looks at one person box at a time: its input is a (K, H, W) grid of every detected
keypoint peak inside the (enlarged) box, one channel per keypoint type, blurred
(``posenet.codecs.prn_grid.encode_peaks``); its output, of the same shape, says where in the
box the keypoints of the box's own person are. An MLP over the flattened grid, a residual
connection from the input, then a softmax.

Softmax: "channel" normalises each keypoint channel over its H x W cells (the paper: each
channel is a distribution over where that keypoint lies); "global" normalises over all
K x H x W values at once (the official PyTorch code). ``compute_loss`` takes the same targets
for both: each labelled channel sums to 1, and under "global" the loss divides them by the
number of labelled channels of the sample, so a target is a distribution over the whole grid.

Loss scale: binary cross-entropy summed over the cells of each labelled channel, summed over
the channels, averaged over the batch. A channel costs about 8.6 under a uniform prediction
(log(56 * 36) + 1) and about 5.2 under a perfect one (the entropy of a sigma-2 target plus the
(1 - t) log(1 - p) terms), so a sample of ~10 labelled keypoints starts near 90 with a floor
near 55 ("global": roughly that divided by the number of labelled channels, as its targets
are). Adam does not care about a constant factor; this scale keeps the value independent
of the batch size and weighs a person by its labelled keypoints. With it, Adam at 1e-3 (the
port's rate) trains the default network from the first step: on coco-mini scenes, batches of
64, it falls from ~90 to ~63 within 250 steps.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

SOFTMAX_MODES = ("channel", "global")


class PoseResidualNetwork(nn.Module):
    """(N, K, H, W) input grids -> (N, K, H, W) probabilities (see the module docstring).

    flatten -> Linear(K*H*W, hidden) + ReLU -> Dropout -> [Linear(hidden, second_hidden) + ReLU
    -> Dropout] -> Linear(., K*H*W) + ReLU -> + input -> softmax.
    """

    eps = 1e-6  # probabilities are clamped to [eps, 1 - eps] in the loss

    def __init__(self, num_keypoints: int = 17, height: int = 56, width: int = 36, hidden: int = 1024,
                 second_hidden: int = 0, dropout: float = 0.5, softmax: str = "channel"):
        super().__init__()
        if softmax not in SOFTMAX_MODES:
            raise ValueError(f"softmax must be one of {', '.join(SOFTMAX_MODES)}, not {softmax!r}")
        if min(num_keypoints, height, width, hidden) < 1 or second_hidden < 0:
            raise ValueError("num_keypoints, height, width and hidden must be positive, second_hidden >= 0")
        self.num_keypoints, self.height, self.width = int(num_keypoints), int(height), int(width)
        self.softmax = softmax
        size = self.num_keypoints * self.height * self.width
        layers: list[nn.Module] = [nn.Linear(size, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        last = hidden
        if second_hidden:
            layers += [nn.Linear(hidden, second_hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            last = second_hidden
        layers += [nn.Linear(last, size), nn.ReLU(inplace=True)]
        self.mlp = nn.Sequential(*layers)

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        return self.num_keypoints, self.height, self.width

    def _check(self, x: torch.Tensor, name: str) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.grid_shape:
            raise ValueError(f"{name} must be (N, {', '.join(map(str, self.grid_shape))}) "
                             f"(N, num_keypoints, height, width), got {tuple(x.shape)}")

    @property
    def first_layer(self) -> nn.Linear:
        return self.mlp[0]

    def forward(self, x: torch.Tensor, first: torch.Tensor | None = None) -> torch.Tensor:
        """Probabilities for input grids ``x``. ``first``: the first linear layer's output for
        ``x``, (N, hidden), when the caller has it more cheaply than the dense product (the
        inference pipeline computes it from the few peak cells of each grid); that layer is
        then skipped."""
        self._check(x, "PRN input")
        n = x.shape[0]
        flat = x.reshape(n, -1).float()
        if first is None:
            first = self.first_layer(flat)
        elif tuple(first.shape) != (n, self.first_layer.out_features):
            raise ValueError(f"first must be (N, hidden) = ({n}, {self.first_layer.out_features}), "
                             f"got {tuple(first.shape)}")
        else:
            first = first.float().clone()  # the in-place ReLU after it must not change the caller's tensor
        logits = self.mlp[1:](first) + flat
        if self.softmax == "channel":
            probs = logits.reshape(n, self.num_keypoints, -1).softmax(-1)
        else:
            probs = logits.softmax(-1)
        return probs.reshape(n, *self.grid_shape)

    def compute_loss(self, probs: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> dict:
        """{"loss_prn": weighted BCE} for ``targets`` {"target": (N, K, H, W), each labelled
        channel summing to 1; "weight": (N, K), 1 on the labelled channels}."""
        self._check(probs, "PRN output")
        probs = probs.float()
        target = targets["target"].to(probs)
        weight = targets["weight"].to(probs)
        self._check(target, "target")
        if tuple(weight.shape) != tuple(probs.shape[:2]):
            raise ValueError(f"weight must be (N, K) = {tuple(probs.shape[:2])}, got {tuple(weight.shape)}")
        if self.softmax == "global":
            target = target / weight.sum(1).clamp_min(1.0)[:, None, None, None]
        p = probs.clamp(self.eps, 1.0 - self.eps)
        bce = -(target * p.log() + (1.0 - target) * (1.0 - p).log())  # (N, K, H, W)
        per_channel = bce.flatten(2).sum(-1)
        return {"loss_prn": (per_channel * weight).sum() / max(probs.shape[0], 1)}


__all__ = ["PoseResidualNetwork", "SOFTMAX_MODES"]
