"""Reading image files: one clear error for every file that cannot give an image.

Training reads the stored pixels (COCO's annotations refer to them, whatever a file's EXIF
orientation says); inference reads images upright (``upright=True``), as a phone or a viewer
shows them, so that a rotated photo's people come out standing and their coordinates are in the
upright frame.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from posenet.errors import DataError

_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                  8: cv2.IMREAD_REDUCED_COLOR_8}
# The end of a JPEG is looked for in this many last bytes (files may carry data after it).
_JPEG_TAIL = 1 << 16


def check_readable(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it is a non-empty file this process may read; DataError naming the
    file and the reason otherwise."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not an image file")
    if not path.exists():
        raise DataError(f"image not found: {path}")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: no permission to read the file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    return path


def _check_complete_jpeg(path: Path) -> None:
    """DataError for a JPEG cut short (no end-of-image marker): libjpeg would decode its first
    part, fill the rest with grey and only print a warning."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(2) != b"\xff\xd8":
            return  # not a JPEG
        f.seek(max(0, size - 2))
        if f.read(2) == b"\xff\xd9":  # the usual case: two bytes read, nothing more
            return
        f.seek(max(0, size - _JPEG_TAIL))
        if b"\xff\xd9" in f.read():
            return
    # Data after a complete JPEG (e.g. a motion photo's video) hides the marker from the tail:
    # let a full decode decide.
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    except OSError as e:
        raise DataError(f"{path}: truncated or corrupt JPEG ({e})") from None


def read_image(path: str | os.PathLike, size: Sequence[int] | None = None, factor: int = 1,
               upright: bool = False) -> np.ndarray:
    """Decode an image as 3-channel BGR uint8 (grayscale and palette images are expanded, alpha
    dropped, 16-bit scaled, CMYK converted), at 1/``factor`` resolution (1, 2, 4 or 8; JPEG
    decodes that directly, cheaper).

    ``upright=False``: the stored pixels, EXIF orientation ignored (training: COCO's annotations
    refer to them). ``upright=True``: turned as the EXIF orientation says (inference). ``size``
    (height, width), the annotation's, is checked. Raises DataError naming the file and why.
    """
    path = check_readable(path)
    _check_complete_jpeg(path)
    flags = _REDUCED_FLAGS[factor] | (0 if upright else cv2.IMREAD_IGNORE_ORIENTATION)
    try:
        image = cv2.imread(str(path), flags)
    except cv2.error as e:
        raise DataError(f"{path}: cannot decode the image ({str(e).strip().splitlines()[-1]})") from None
    if image is None or image.size == 0:
        raise DataError(f"{path}: cannot decode the image (not an image, or a format OpenCV cannot read)")
    if size is not None:
        h, w = int(size[0]), int(size[1])
        ih, iw = image.shape[:2]
        if abs(ih * factor - h) >= factor or abs(iw * factor - w) >= factor:
            raise DataError(
                f"{path}: the image is {iw * factor}x{ih * factor} (width x height) but the annotation "
                f"file says {w}x{h}"
            )
    return image


def reduction_factor(scale: float, enabled: bool = True) -> int:
    """The largest JPEG decode reduction (1, 2, 4, 8) that keeps at least one decoded pixel per
    output pixel for a warp that scales by ``scale``."""
    if not enabled:
        return 1
    for factor in (8, 4, 2):
        if scale * factor <= 1.0:
            return factor
    return 1


__all__ = ["check_readable", "read_image", "reduction_factor"]
