"""The Pose Residual Network's grid codec: keypoints and peaks of person boxes to PRN grids
(``encode``, ``encode_targets``) and PRN output grids back to image pixels (``decode``).

The grid of a box (``grid`` "enlarged", the default): the box is enlarged by ``margin`` of its
width (height) on each side, then split into ``height`` x ``width`` cells; a point counts for
the box when it lies in the grid. ``grid`` "reference" (the PRN reference code's): the box
itself is split into the cells, and a point counts when it lies in the box enlarged by
``margin``, the points of the margin being clamped onto the border cells. Grid coordinates are continuous: ``u = (x - X1) *
width / (X2 - X1)`` and ``v = (y - Y1) * height / (Y2 - Y1)`` for the enlarged box (X1, Y1,
X2, Y2), so cell (i, j) covers u in [j, j + 1), v in [i, i + 1) and its centre is (j + 0.5,
i + 0.5); a point belongs to cell (floor(v), floor(u)). ``box_grid`` returns this map as one
2x3 affine matrix per box and ``grid_to_image`` its exact inverse.

* ``encode_peaks``: the PRN input. Every peak of type k inside a box sets its cell of channel
  k (to 1, or to the peak's score; the larger where two share a cell), then each channel is
  blurred with a Gaussian of ``sigma`` cells, as separable matrix products over all boxes at
  once (``blur_matrix``): "enlarged", centre weight 1, truncated at 3 sigma, zero outside the
  grid; "reference", normalised to sum 1, truncated at 4 sigma, the edge cells replicated
  outside the grid (the reference's ``skimage.filters.gaussian``).
* ``encode_targets``: the PRN target. The same for the box's own person's labelled keypoints,
  blurred with ``target_sigma`` and normalised to sum 1 per channel; ``weight`` is 1 for the
  keypoints that are labelled and inside the grid.
* ``PrnGridCodec.decode``: per box and channel, the centre of the highest cell, in image
  pixels: the inverse of ``encode_targets`` to within half a cell.

The PRN grouping (``posenet.inference.prn_grouping``) scores peaks on the decoded grids; the
PRN's training samples (``posenet.data.prn_samples``) are encoded here.
"""
from __future__ import annotations

import numpy as np

from posenet.portable.prn_grid import (GRIDS, blur, blur_adjoint, blur_matrix, blur_radius, box_grid, check_grid,
                                      gaussian_matrix, grid_margin, grid_to_image, image_to_grid, point_cells,
                                      scatter_cells)
from posenet.portable.prn import as_peaks


# ----------------------------------------------------------------------------- grids


def _scatter(boxes, xy, types, values, num_keypoints: int, margin: float, height: int, width: int,
             grid: str = "enlarged"):
    """(B, K, H, W) grids with ``values`` (P,) at the cells of points ``xy`` (P, 2) of ``types``
    (P,) in each box (the maximum where two share a cell), and whether each point counts for
    each box, (B, P)."""
    _, affine = box_grid(boxes, grid_margin(margin, grid), height, width)
    grids, _, inside, _ = scatter_cells(affine, xy, types, values, num_keypoints, margin, height, width, grid)
    return grids, inside


def peak_cells(boxes, peaks_xy, peaks_type, peaks_score=None, num_keypoints: int = 17, margin: float = 0.21,
               height: int = 56, width: int = 36, grid: str = "enlarged") -> np.ndarray:
    """The PRN input grids before their blur, (B, K, H, W) float32: each peak's score (None: 1)
    at its cell of its type's channel in every box it lies in; arguments as ``encode_peaks``."""
    xy, types, values = as_peaks(peaks_xy, peaks_type, peaks_score)
    if len(types) and (types.min() < 0 or types.max() >= num_keypoints):
        raise ValueError(f"peak types must lie in 0..{num_keypoints - 1}")
    return _scatter(boxes, xy, types, values, num_keypoints, margin, height, width, grid)[0]


def encode_peaks(boxes, peaks_xy, peaks_type, peaks_score=None, num_keypoints: int = 17, margin: float = 0.21,
                 height: int = 56, width: int = 36, sigma: float = 1.0, grid: str = "enlarged") -> np.ndarray:
    """PRN input grids (B, K, H, W) float32 of boxes (B, 4) x1 y1 x2 y2 from peaks (P, 2) in
    image pixels, their keypoint types (P,) and scores (P,) (None: 1 each); see the module
    docstring."""
    return blur(peak_cells(boxes, peaks_xy, peaks_type, peaks_score, num_keypoints, margin, height, width, grid),
                sigma, grid)


def encode_targets(boxes, keypoints, margin: float = 0.21, height: int = 56, width: int = 36,
                   sigma: float = 2.0, grid: str = "enlarged") -> tuple[np.ndarray, np.ndarray]:
    """PRN targets of boxes (B, 4) from each box's own person's keypoints (B, K, 3) (x, y,
    flag; flag > 0 is labelled): (target (B, K, H, W) float32, each channel with a labelled
    keypoint that counts for the box (``point_cells``) blurred with ``sigma`` and normalised to
    sum 1, else 0; weight (B, K) float32, 1 on those channels)."""
    kps = np.asarray(keypoints, dtype=np.float64)
    if kps.ndim != 3 or kps.shape[-1] != 3:
        raise ValueError(f"keypoints must be (B, K, 3), got {kps.shape}")
    B, K = kps.shape[:2]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) != B:
        raise ValueError(f"{len(boxes)} boxes for the keypoints of {B} persons")
    grids = np.zeros((B, K, height, width), dtype=np.float32)
    for_box = np.zeros((B, K), dtype=bool)
    if B:
        _, affine = box_grid(boxes, grid_margin(margin, grid), height, width)
        cell, inside = point_cells(affine, kps[..., :2], margin, height, width, grid, per_box=True)
        for_box = (kps[..., 2] > 0) & inside
        b, k = np.nonzero(for_box)
        grids[b, k, cell[b, k, 1], cell[b, k, 0]] = 1.0
    target = blur(grids, sigma, grid)
    total = target.sum(axis=(2, 3), keepdims=True)
    target = np.where(total > 0, target / np.maximum(total, 1e-12), 0.0).astype(np.float32)
    return target, for_box.astype(np.float32)


class PrnGridCodec:
    """The grid settings of one PRN (``prn.box_margin``, ``prn.height``, ``prn.width``,
    ``prn.input_sigma``, ``prn.target_sigma``, ``prn.grid``) with symmetric encode and decode."""

    def __init__(self, margin: float = 0.21, height: int = 56, width: int = 36, input_sigma: float = 1.0,
                 target_sigma: float = 2.0, grid: str = "enlarged"):
        self.margin, self.height, self.width = float(margin), int(height), int(width)
        self.input_sigma, self.target_sigma = float(input_sigma), float(target_sigma)
        self.grid = check_grid(grid)

    def affine(self, boxes) -> np.ndarray:
        """(B, 2, 3) image pixels -> grid coordinates of each box."""
        return box_grid(boxes, grid_margin(self.margin, self.grid), self.height, self.width)[1]

    def point_cells(self, affine: np.ndarray, xy) -> tuple[np.ndarray, np.ndarray]:
        """Each point's cell in each box's grid and whether it counts (``point_cells``)."""
        return point_cells(affine, xy, self.margin, self.height, self.width, self.grid)

    def blur(self, grids: np.ndarray) -> np.ndarray:
        """Input grids blurred (``blur`` with ``input_sigma``)."""
        return blur(grids, self.input_sigma, self.grid)

    def cells(self, boxes, peaks_xy, peaks_type, peaks_score=None, num_keypoints: int = 17) -> np.ndarray:
        """The unblurred input grids (``peak_cells``)."""
        return peak_cells(boxes, peaks_xy, peaks_type, peaks_score, num_keypoints, self.margin, self.height,
                          self.width, self.grid)

    def encode(self, boxes, peaks_xy, peaks_type, peaks_score=None, num_keypoints: int = 17) -> np.ndarray:
        """The PRN input grids (B, K, H, W) of one image's peaks (``encode_peaks``)."""
        return encode_peaks(boxes, peaks_xy, peaks_type, peaks_score, num_keypoints, self.margin, self.height,
                            self.width, self.input_sigma, self.grid)

    def encode_targets(self, boxes, keypoints) -> tuple[np.ndarray, np.ndarray]:
        """The PRN targets and weights of boxes and their persons' keypoints (``encode_targets``)."""
        return encode_targets(boxes, keypoints, self.margin, self.height, self.width, self.target_sigma, self.grid)

    def decode(self, boxes, grids) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints (B, K, 2) in image pixels, the centre of each channel's highest cell, and
        that cell's value (B, K), from grids (B, K, H, W) (numpy or torch) of boxes (B, 4)."""
        g = grids.detach().float().cpu().numpy() if hasattr(grids, "detach") else np.asarray(grids, np.float32)
        B, K = g.shape[:2]
        if B == 0:
            return np.zeros((0, K, 2)), np.zeros((0, K))
        flat = g.reshape(B, K, -1)
        best = flat.argmax(2)
        centre = np.stack([best % self.width, best // self.width], axis=-1) + 0.5
        return grid_to_image(self.affine(boxes), centre), np.take_along_axis(flat, best[..., None], 2)[..., 0]


__all__ = ["GRIDS", "PrnGridCodec", "blur", "blur_adjoint", "blur_matrix", "blur_radius", "box_grid", "check_grid",
           "encode_peaks", "encode_targets", "gaussian_matrix", "grid_margin", "grid_to_image", "image_to_grid",
           "peak_cells", "point_cells"]
