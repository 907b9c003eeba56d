"""Heatmaps over images: for TensorBoard grids during training and for inference pictures."""
from __future__ import annotations

import cv2
import numpy as np
import torch


def heatmap_overlay(image: np.ndarray, heatmaps: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    """Colour the per-pixel maximum of ``heatmaps`` (K, h, w) over ``image`` (H, W, 3 uint8).

    The heatmaps are resized to the image (they may be at a lower resolution, e.g. stride 4),
    clipped to [0, 1] and drawn with the JET colour map; where they are near zero the image shows
    through. Returns a new image in the channel order of ``image`` (RGB in, RGB out).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    heat = np.asarray(heatmaps, dtype=np.float32)
    if heat.ndim == 3:
        heat = heat.max(axis=0) if heat.shape[0] else np.zeros(heat.shape[1:], np.float32)
    if heat.ndim != 2:
        raise ValueError(f"expected (K, h, w) or (h, w) heatmaps, got {heatmaps.shape}")
    H, W = image.shape[:2]
    heat = np.clip(cv2.resize(heat, (W, H), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]  # BGR -> RGB
    weight = (alpha * heat)[..., None]
    out = image.astype(np.float32) * (1 - weight) + colour.astype(np.float32) * weight
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def heatmap_panels(images: torch.Tensor, predicted: torch.Tensor, target: torch.Tensor | None = None,
                   max_images: int = 4) -> torch.Tensor:
    """One row per image: the input, the predicted heatmaps over it and (if given) the targets.

    ``images`` (N, 3, H, W) uint8 RGB; heatmaps (N, K, h, w). Returns (n, 3, H, cols * W) uint8,
    ready for ``torchvision.utils.make_grid`` / TensorBoard.
    """
    n = min(max_images, images.shape[0])
    rows = []
    for i in range(n):
        img = images[i].detach().cpu().permute(1, 2, 0).contiguous().numpy()
        panels = [img, heatmap_overlay(img, predicted[i].detach().float().cpu().numpy())]
        if target is not None:
            panels.append(heatmap_overlay(img, target[i].detach().float().cpu().numpy()))
        rows.append(torch.from_numpy(np.concatenate(panels, axis=1)).permute(2, 0, 1))
    return torch.stack(rows) if rows else torch.zeros(0, 3, *images.shape[-2:], dtype=torch.uint8)


def paf_overlay(bgr: np.ndarray, vectors: np.ndarray, alpha: float = 0.8) -> np.ndarray:
    """Vector field ``vectors`` (H, W, 2) over ``bgr`` (H, W, 3 uint8) as a colour wheel: the
    direction is the hue, the length (clipped at 1) the brightness; BGR out."""
    import cv2

    v = np.asarray(vectors, dtype=np.float32)
    magnitude = np.clip(np.sqrt((v ** 2).sum(-1)), 0.0, 1.0)
    hue = ((np.degrees(np.arctan2(v[..., 1], v[..., 0])) % 360.0) / 2.0).astype(np.uint8)
    hsv = np.stack([hue, np.full_like(hue, 255), (255 * magnitude).astype(np.uint8)], axis=-1)
    colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR).astype(np.float32)
    weight = (alpha * magnitude)[..., None]
    return np.clip((1 - weight) * bgr.astype(np.float32) + weight * colour, 0, 255).astype(np.uint8)
