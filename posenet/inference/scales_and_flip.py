"""Test-time augmentation of the heatmaps: the flip test and multi-scale averaging, with exact
geometry.

The network's output cell ``j`` is centred on input pixel ``stride * j + (stride - 1) / 2``.
Mirroring an input of width ``w`` maps pixel ``x`` to ``w - 1 - x``, which takes cell centres
to cell centres only when ``w`` is a multiple of the stride; ``flip_test`` therefore mirrors
the input padded on the right to that multiple (the padding lands on the left of the mirrored
image), so that mirroring the output grid back is exact for any width. ``to_grid_of`` resamples
the heatmaps of another input scale onto the reference scale's grid (``reference_scale``: the
listed scale nearest 1) by the cell-centre mapping, not by the grids' extents (which differ by
the rounding of each scale's size). ``input_geometry`` sizes each scale's input: the image side
that ``infer.input_side`` names becomes ``input_size * scale``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from posenet.errors import ConfigError
from posenet.models.backbone import IMAGE_MEAN
from posenet.portable.geometry import INPUT_SIDES, input_geometry, paf_flip_index, reference_scale, scale_order


def side_words(side: str) -> str:
    """How protocol lines name ``side``: "longer side", "height" or "shorter side"."""
    return "height" if side == "height" else f"{side} side"


def check_input_side(side: str) -> str:

    if side not in INPUT_SIDES:
        raise ConfigError(f"infer.input_side must be one of {', '.join(INPUT_SIDES)}, got {side!r}")
    return side


def flip_back(heatmaps: torch.Tensor, flip_index: Sequence[int], sign: Sequence[float] | None = None) -> torch.Tensor:
    """Heatmaps of a horizontally mirrored input, mapped back to the unmirrored image:
    mirror the maps and swap left/right channels; ``sign`` (one per channel) multiplies each
    output channel (-1 for the x component of vector fields). (N, K, h, w) or (K, h, w)."""
    index = torch.as_tensor(flip_index, device=heatmaps.device, dtype=torch.long)
    out = heatmaps.flip(-1).index_select(-3, index)
    if sign is not None:
        out = out * torch.as_tensor(sign, device=out.device, dtype=out.dtype).view(-1, 1, 1)
    return out


def pad_width(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """(N, 3, H, W) images padded on the right to a width that is a multiple of ``multiple``,
    with the mean colour (what the model's own padding becomes once normalised)."""
    pad = (-images.shape[-1]) % multiple
    if pad == 0:
        return images
    mean = torch.tensor(IMAGE_MEAN, device=images.device) * 255.0
    fill = mean.view(1, 3, 1, 1).expand(*images.shape[:-1], pad)
    return torch.cat([images, fill.round().to(images.dtype)], dim=-1)


def flip_test(heatmaps_of: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
              heatmaps: torch.Tensor, flip_index: Sequence[int], stride: int,
              sign: Sequence[float] | None = None) -> torch.Tensor:
    """The average of ``heatmaps`` (the network's for ``images``, (N, K, h, w)) and the
    heatmaps of the mirrored images mapped back (``flip_back``), cell for cell.

    ``heatmaps_of`` runs the network on a batch and returns its heatmaps. The mirrored batch
    is ``images`` padded to a width multiple of ``stride`` and then mirrored, so that its
    output grid mirrors exactly onto the unmirrored one (see the module's note). ``sign`` as in
    ``flip_back`` (vector fields)."""
    padded = pad_width(images, stride)
    flipped = flip_back(heatmaps_of(padded.flip(-1)).float(), flip_index, sign)
    return 0.5 * (heatmaps + flipped[..., : heatmaps.shape[-2], : heatmaps.shape[-1]])


def to_grid_of(heatmaps: torch.Tensor, ratio: float, size: tuple[int, int]) -> torch.Tensor:
    """Heatmaps (N, K, h, w) of an input scaled by ``ratio`` relative to a reference input
    (same image, same top-left origin), resampled bilinearly onto the reference input's output
    grid of ``size`` (h, w) cells: reference cell ``j`` is read at the cell of the same image
    point, ``ratio * j + (ratio - 1) / 2`` (pixel areas map to pixel areas at both
    scales, and cell centres sit at ``stride * j + (stride - 1) / 2``). Points outside the scaled grid read 0."""
    n, k, h, w = heatmaps.shape
    out_h, out_w = size
    offset = (ratio - 1.0) / 2.0
    gy = ratio * torch.arange(out_h, dtype=torch.float32, device=heatmaps.device) + offset
    gx = ratio * torch.arange(out_w, dtype=torch.float32, device=heatmaps.device) + offset
    # grid_sample with align_corners=True: -1 and 1 are the centres of the first and last cell
    ny = 2.0 * gy / max(h - 1, 1) - 1.0 if h > 1 else torch.zeros_like(gy)
    nx = 2.0 * gx / max(w - 1, 1) - 1.0 if w > 1 else torch.zeros_like(gx)
    grid = torch.stack(torch.meshgrid(ny, nx, indexing="ij")[::-1], dim=-1)  # (out_h, out_w, 2): x, y
    grid = grid[None].expand(n, out_h, out_w, 2)
    return F.grid_sample(heatmaps.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)


__all__ = ["INPUT_SIDES", "flip_back", "flip_test", "input_geometry", "side_words", "check_input_side", "pad_width", "paf_flip_index", "reference_scale", "scale_order", "to_grid_of"]
