"""The Pose Residual Network's box grids in numpy: points of a person box to grid cells and
back, and the Gaussian blur of the grids.

The grid of a box (``grid`` "enlarged", the default): the box is enlarged by ``margin`` of its
width (height) on each side, then split into ``height`` x ``width`` cells; a point counts for
the box when it lies in the grid. ``grid`` "reference" (the PRN reference code's): the box
itself is split into the cells, and a point counts when it lies in the box enlarged by
``margin``, the points of the margin being clamped onto the border cells. Grid coordinates are
continuous: ``u = (x - X1) * width / (X2 - X1)`` and ``v = (y - Y1) * height / (Y2 - Y1)`` for
the enlarged box (X1, Y1, X2, Y2), so cell (i, j) covers u in [j, j + 1), v in [i, i + 1) and
its centre is (j + 0.5, i + 0.5); a point belongs to cell (floor(v), floor(u)). ``box_grid``
returns this map as one 2x3 affine matrix per box and ``grid_to_image`` its exact inverse.

The blur (``blur_matrix``): "enlarged", centre weight 1, truncated at 3 sigma, zero outside the
grid; "reference", normalised to sum 1, truncated at 4 sigma, the edge cells replicated outside
the grid (the reference's ``skimage.filters.gaussian``). The PRN's input and target grids
(``posenet.codecs.prn_grid``) and both PRN groupings (``posenet.inference.prn_grouping``, the
portable decoder's ``prn``) are built on these."""
from __future__ import annotations

from functools import lru_cache

import numpy as np


def box_grid(boxes, margin: float, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The enlarged boxes (B, 4) x1 y1 x2 y2 and the affine matrices (B, 2, 3) that map image
    pixels (x, y) to continuous grid coordinates (u, v) (module docstring). Boxes narrower or
    shorter than 1 pixel are widened to 1 pixel about their centre."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    centre = (b[:, :2] + b[:, 2:]) / 2
    size = np.maximum(b[:, 2:] - b[:, :2], 1.0)
    half = size * (0.5 + margin)
    enlarged = np.concatenate([centre - half, centre + half], axis=1)
    scale = np.array([width, height], dtype=np.float64) / (2 * half)  # (B, 2) cells per pixel
    affine = np.zeros((len(b), 2, 3))
    affine[:, 0, 0], affine[:, 1, 1] = scale[:, 0], scale[:, 1]
    affine[:, :, 2] = -enlarged[:, :2] * scale
    return enlarged, affine


def affine_parts(affine: np.ndarray, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """The per-box scale and offset (box grids are axis-aligned), shaped (B, 1.., 2)."""
    shape = (len(affine),) + (1,) * (ndim - 2) + (2,)
    return affine[:, [0, 1], [0, 1]].reshape(shape), affine[:, :, 2].reshape(shape)


def image_to_grid(affine: np.ndarray, xy, per_box: bool = False) -> np.ndarray:
    """Image pixels -> grid coordinates: points (P, 2) into every box's grid, (B, P, 2); or,
    with ``per_box``, points (B, ..., 2) each into its own box's grid."""
    xy = np.asarray(xy, dtype=np.float64)
    if not per_box:
        xy = np.broadcast_to(xy.reshape(1, -1, 2), (len(affine), xy.size // 2, 2))
    scale, offset = affine_parts(affine, xy.ndim)
    return xy * scale + offset


def grid_to_image(affine: np.ndarray, uv) -> np.ndarray:
    """Grid coordinates (B, ..., 2), each in its own box's grid -> image pixels: the exact
    inverse of ``image_to_grid``, x = (u - tx) / sx."""
    uv = np.asarray(uv, dtype=np.float64)
    scale, offset = affine_parts(affine, uv.ndim)
    return (uv - offset) / scale


# The two grids (module docstring): "enlarged" is posenet's, "reference" the PRN reference code's.
GRIDS = ("enlarged", "reference")


def check_grid(grid: str) -> str:
    if grid not in GRIDS:
        raise ValueError(f"prn.grid must be one of {', '.join(GRIDS)}, got {grid!r}")
    return grid


def grid_margin(margin: float, grid: str) -> float:
    """How far the grid reaches past the box, per side: ``margin`` ("enlarged") or 0."""
    return float(margin) if check_grid(grid) == "enlarged" else 0.0


def point_cells(affine: np.ndarray, xy, margin: float, height: int, width: int, grid: str = "enlarged",
                per_box: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The cell (column, row) of points in each box's grid (``affine`` from ``box_grid`` with
    ``grid_margin``) and whether they count for the box: (B, P, 2) int64 and (B, P) bool, or
    with ``per_box`` each point (B, ..., 2) in its own box. "enlarged": the cell under the
    point, counting when inside the grid; "reference": counting when inside the box enlarged by
    ``margin``, the cell clamped onto the grid."""
    uv = image_to_grid(affine, xy, per_box)
    cell = np.floor(uv).astype(np.int64)
    if check_grid(grid) == "enlarged":
        inside = (cell[..., 0] >= 0) & (cell[..., 0] < width) & (cell[..., 1] >= 0) & (cell[..., 1] < height)
        return cell, inside
    size = np.array([width, height])
    inside = ((uv >= -margin * size) & (uv < (1 + margin) * size)).all(-1)
    return np.clip(cell, 0, size - 1), inside


def scatter_cells(affine: np.ndarray, xy, types, values, num_keypoints: int, margin: float, height: int, width: int,
                  grid: str = "enlarged"):
    """(B, K, H, W) float32 grids with ``values`` (P,) at the cells (``point_cells``) of points
    ``xy`` (P, 2) of ``types`` (P,) in each box's grid (``affine`` (B, 2, 3)), the maximum where
    two share a cell; the cells (B, P, 2), whether each point counts for each box (B, P), and the
    sorted flat indices of the grids' nonzero cells."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    B, P = len(affine), len(xy)
    grids = np.zeros((B, num_keypoints, height, width), dtype=np.float32)
    cell, inside = point_cells(affine, xy, margin, height, width, grid)  # (B, P, 2): column, row
    flat = np.zeros(0, dtype=np.int64)
    if P and B:
        b, p = np.nonzero(inside)
        flat = ((b * num_keypoints + types[p]) * height + cell[b, p, 1]) * width + cell[b, p, 0]
        np.maximum.at(grids.reshape(-1), flat, np.asarray(values)[p].astype(np.float32))
        flat = np.unique(flat)
        flat = flat[grids.reshape(-1)[flat] != 0]
    return grids, cell, inside, flat


@lru_cache(maxsize=32)
def blur_matrix(n: int, sigma: float, grid: str = "enlarged") -> np.ndarray:
    """(n, n) blur along one axis of ``grid`` (module docstring); blurred = M @ cells. Read-only
    and shared."""
    if check_grid(grid) == "enlarged":
        return gaussian_matrix(n, sigma)
    if sigma <= 0:
        m = np.eye(n, dtype=np.float32)
    else:
        r = blur_radius(sigma, grid)
        d = np.arange(-r, r + 1)
        g = np.exp(-0.5 * (d / sigma) ** 2)
        g /= g.sum()
        m = np.zeros((n, n))
        rows = np.repeat(np.arange(n), len(d))
        np.add.at(m, (rows, np.clip(rows + np.tile(d, n), 0, n - 1)), np.tile(g, n))  # the edge replicated
        m = m.astype(np.float32)
    m.flags.writeable = False
    return m


def blur_radius(sigma: float, grid: str = "enlarged") -> int:
    """How many cells a blurred cell reaches on each side."""
    if sigma <= 0:
        return 0
    # "reference": scipy's truncate=4.0, as skimage's gaussian
    return int(np.ceil(3 * sigma)) if check_grid(grid) == "enlarged" else int(4 * sigma + 0.5)


@lru_cache(maxsize=16)
def gaussian_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) blur along one axis: exp(-d^2 / (2 sigma^2)) for |d| <= ceil(3 sigma), else 0
    (the identity for sigma 0). Read-only: one array per (n, sigma), shared by every call."""
    d = np.arange(n)[:, None] - np.arange(n)[None]
    if sigma <= 0:
        g = (d == 0).astype(np.float32)
    else:
        g = np.exp(-0.5 * (d / sigma) ** 2)
        g[np.abs(d) > np.ceil(3 * sigma)] = 0.0
        g = g.astype(np.float32)
    g.flags.writeable = False
    return g


def separable(grids: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``rows @ g @ cols.T`` for every (H, W) grid g of (..., H, W), as two large products
    (a batch of small ones is many times slower)."""
    shape = grids.shape
    h, w = shape[-2:]
    x = np.ascontiguousarray(grids, dtype=np.float32).reshape(-1, w) @ cols.T
    x = np.tensordot(rows, x.reshape(-1, h, w), axes=([1], [1]))  # (H, N, W)
    return np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(shape)


def blur(grids: np.ndarray, sigma: float, grid: str = "enlarged") -> np.ndarray:
    """(..., H, W) grids blurred with the separable Gaussian of ``blur_matrix``."""
    h, w = grids.shape[-2:]
    return blur_matrix(h, sigma, grid) @ grids.astype(np.float32) @ blur_matrix(w, sigma, grid).T


def blur_adjoint(weights: np.ndarray, sigma: float, grid: str = "enlarged") -> np.ndarray:
    """(..., H, W) weights through the adjoint of ``blur``: ``<w, blur(s)> = <blur_adjoint(w), s>``
    (the same as ``blur`` where its matrices are symmetric: "enlarged")."""
    h, w = weights.shape[-2:]
    return blur_matrix(h, sigma, grid).T @ weights.astype(np.float32) @ blur_matrix(w, sigma, grid)


def box_matrix(n: int, window: int) -> np.ndarray:
    """(n, n) float32: 1 where |i - j| <= window // 2 (a window sum along one axis, zero outside)."""
    d = np.arange(n)[:, None] - np.arange(n)[None]
    return (np.abs(d) <= window // 2).astype(np.float32)


@lru_cache(maxsize=16)
def _patch_tables(height: int, width: int, sigma: float, grid: str):
    """For each cell of a ``height`` x ``width`` grid (rows of flat cell index), its blur patch
    (``blurred_cells``): the flat indices of the n x n cells it reaches (n = 2 * blur_radius + 1,
    row by row; those off the grid hold anything) and whether they lie in the grid, (H*W, n*n);
    the blur matrices' weights along each axis, (H*W, n) float32, and their products (the patch
    of a cell of value 1), (H*W, n*n). Read-only and shared."""
    d = np.arange(-blur_radius(sigma, grid), blur_radius(sigma, grid) + 1)
    i, j = np.divmod(np.arange(height * width), width)
    rows, cols = i[:, None] + d, j[:, None] + d
    wy = blur_matrix(height, sigma, grid)[rows.clip(0, height - 1), i[:, None]]
    wx = blur_matrix(width, sigma, grid)[cols.clip(0, width - 1), j[:, None]]
    n = len(d)
    index = (rows[:, :, None] * width + cols[:, None, :]).reshape(-1, n * n)
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
    inside = inside.reshape(-1, n * n)
    ones = (np.float32(1.0) * wy[:, :, None] * wx[:, None, :]).reshape(-1, n * n)
    tables = index, inside, wy, wx, ones
    for t in tables:
        t.flags.writeable = False
    return tables


def blurred_cells(flat: np.ndarray, values: np.ndarray, height: int, width: int, sigma: float,
                  grid: str = "enlarged") -> tuple[np.ndarray, np.ndarray]:
    """The blur (``blur``) of grids that are zero but for ``values`` at the flat indices
    ``flat`` into (N, H, W): the flat indices into (N, H, W) that each set cell's patch (the
    columns of the blur matrices at its cell) reaches inside its grid and the blurred values
    there (value x row weight x column weight, float32), patch by patch, each patch row by
    row."""
    flat = np.asarray(flat, dtype=np.int64)
    values = np.asarray(values, dtype=np.float32)
    index, inside, wy, wx, ones = _patch_tables(int(height), int(width), float(sigma), grid)
    channel, cell = np.divmod(flat, height * width)
    ok = inside[cell]
    where = index[cell]
    where += (channel * (height * width))[:, None]
    if (values == 1).all():
        weight = ones[cell]
    else:
        weight = ((values[:, None, None] * wy[cell][:, :, None]) * wx[cell][:, None, :]).reshape(len(flat), -1)
    return where[ok], weight[ok]


def add_blurred_cells(out: np.ndarray, flat: np.ndarray, values: np.ndarray, height: int, width: int,
                      sigma: float, grid: str = "enlarged") -> None:
    """Add to ``out`` (N, K*H*W) the blur (``blur``) of grids that are zero but for ``values`` at
    the flat indices ``flat`` into (N, K, H, W) (``blurred_cells``)."""
    if len(flat):
        np.add.at(out.reshape(-1), *blurred_cells(flat, values, height, width, sigma, grid))
