"""A split's per-image annotations as a few flat numpy arrays, for the data-loading workers.

A DataLoader worker is a fork of the main process: it shares the main process's memory until
a page is written. Reading a Python object writes its reference count, so per-image Python
annotations (pycocotools' dicts of dicts, lists of keypoints and polygons, file name strings)
are copied page by page into every worker as its samples touch them, and a full garbage
collection in a worker touches every container object it inherited. Over an epoch each
worker tends towards a private copy of the whole annotation set (about a gigabyte for COCO
train2017). Here everything a sample needs lives in arrays whose data no reference count
touches: a few dozen Python objects in all, whatever the number of images.

Image ``i`` (the split's order): ``image_ids[i]``, ``sizes[i]`` (height, width), its file
name (``names`` bytes ``name_offsets[i]:name_offsets[i + 1]``).

Persons: image ``i``'s non-crowd persons are rows ``person_offsets[i]:person_offsets[i + 1]``
of ``keypoints`` (P, K, 3), ``boxes`` (P, 4 x1 y1 x2 y2) and ``num_keypoints`` (P,); its crowd
boxes rows ``crowd_offsets[i]:crowd_offsets[i + 1]`` of ``crowd_boxes``: what
:func:`~posenet.data.targets.image_persons` makes of its annotation dicts. Keypoints are kept
as int16 or float32 where that is exact (COCO's are integer pixels), else float64, and handed
out as float64.

Mask regions: image ``i``'s annotations with a region (:func:`~posenet.data.targets.annotation_region`)
are entries ``region_offsets[i]:region_offsets[i + 1]``, in annotation order, each with its
``region_kind`` (polygons, RLE or box), ``region_channels`` (bit 0: a region to ignore, bit 1:
a person) and ``region_first`` / ``region_count``: its polygons (rows of ``polygon_offsets``
into ``coords``, x y x y ...), its RLE (``rles`` bytes ``rle_offsets[j]:rle_offsets[j + 1]``)
or its box (a row of ``region_boxes``, x y w h). Coordinates are stored as integer hundredths
(``coords`` int32, ``coord_scale`` 100) where that is exact, as for COCO's two-decimal
polygons (an integer divided by 100 is the double nearest to the decimal, which is what the
JSON parser gives), else as float64 (``coord_scale`` 1). A sample rasterises its regions as
before, from the same numbers (:func:`~posenet.data.targets.region_rle`), so the masks are
the same bit for bit; rasterising every image once at build time instead would cost about
50 microseconds a polygon, some 15 s for COCO train2017.

An image whose annotations those functions reject keeps the message (``person_errors``,
``region_errors``: a dict of the few such images, usually empty) and raises it when loaded,
as the annotation dicts did.
"""
from __future__ import annotations

from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from posenet.data.targets import annotation_region, decode_regions, has_keypoints, merged_rle, region_rle

POLYGONS, RLE, BOX = 0, 1, 2
IGNORE, PERSON = 1, 2  # region_channels bits
_KINDS = {"polygons": POLYGONS, "rle": RLE, "box": BOX}


class StoredPersons(NamedTuple):
    """One image's persons (as :class:`~posenet.data.targets.ImagePersons`, without the dicts):
    ``keypoints`` (P, K, 3) float64, ``boxes`` (P, 4) float64, ``num_keypoints`` (P,) int64,
    ``crowd_boxes`` (C, 4) float64."""

    keypoints: np.ndarray
    boxes: np.ndarray
    num_keypoints: np.ndarray
    crowd_boxes: np.ndarray


def _offsets(counts: Sequence[int]) -> np.ndarray:
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(np.asarray(counts, dtype=np.int64), out=out[1:])
    return out


def _xyxy(bboxes: np.ndarray) -> np.ndarray:
    """x y w h rows -> x1 y1 x2 y2, as :func:`~posenet.data.targets.xywh_to_xyxy` computes them."""
    out = bboxes.copy()
    out[:, 2] = bboxes[:, 0] + np.maximum(bboxes[:, 2], 0.0)
    out[:, 3] = bboxes[:, 1] + np.maximum(bboxes[:, 3], 0.0)
    return out


def _box_row(b) -> tuple:
    return tuple(float(v) for v in b) if b is not None and len(b) == 4 else (0.0, 0.0, 0.0, 0.0)


def _keypoint_rows(rows: list, K: int, offsets: np.ndarray, errors: dict[int, str]) -> np.ndarray:
    """(P, K, 3) float64 of the persons' keypoint lists, converted at once; where some list holds
    what is not a number, its image joins ``errors`` and its persons get zeros."""
    try:
        return np.asarray(rows, dtype=np.float64).reshape(-1, K, 3)
    except (ValueError, TypeError):
        pass
    out = np.zeros((len(rows), K, 3))
    for i in range(len(offsets) - 1):
        for r in range(offsets[i], offsets[i + 1]):
            try:
                out[r] = np.asarray(rows[r], dtype=np.float64).reshape(K, 3)
            except (ValueError, TypeError) as e:
                errors[i] = f"keypoints: {e}"
                out[offsets[i]:offsets[i + 1]] = 0
                break
    return out


class _Image:
    """One image's rows while building: committed to the store only when all of them convert."""

    __slots__ = ("keypoints", "boxes", "crowd", "regions")

    def __init__(self):
        self.keypoints, self.boxes, self.crowd, self.regions = [], [], [], []


class PersonStore:
    """The per-image annotations of a split in flat arrays (module docstring); build with
    :meth:`build`."""

    ARRAYS = ("image_ids", "sizes", "names", "name_offsets", "person_offsets", "keypoints", "boxes",
              "num_keypoints", "crowd_offsets", "crowd_boxes", "region_offsets", "region_kind", "region_channels",
              "region_first", "region_count", "polygon_offsets", "coords", "rle_offsets", "rles", "region_boxes")

    def __init__(self, arrays: Mapping[str, np.ndarray], coord_scale: float = 1.0,
                 person_errors: Mapping[int, str] | None = None, region_errors: Mapping[int, str] | None = None):
        missing = [k for k in self.ARRAYS if k not in arrays]
        if missing:
            raise ValueError(f"PersonStore needs the arrays {', '.join(missing)}")
        for key in self.ARRAYS:
            setattr(self, key, np.asarray(arrays[key]))
        self.coord_scale = float(coord_scale)
        self.person_errors = dict(person_errors or {})
        self.region_errors = dict(region_errors or {})

    # ------------------------------------------------------------------ building

    @classmethod
    def build(cls, image_ids: Sequence[int], images: Mapping[int, dict], annotations: Callable[[int], list],
              num_keypoints: int) -> "PersonStore":
        """The store of ``image_ids`` (in that order): ``images[id]`` is the image's COCO entry
        (height, width, file_name), ``annotations(id)`` its person annotation dicts."""
        K = int(num_keypoints)
        n = len(image_ids)
        no_keypoints = (0.0,) * (3 * K)
        sizes = np.zeros((n, 2), dtype=np.int64)
        names: list[bytes] = []
        person_counts, crowd_counts, region_counts = (np.zeros(n, np.int64) for _ in range(3))
        keypoints, boxes, crowd_boxes = [], [], []
        kinds, channels, firsts, counts = [], [], [], []
        polygons: list = []
        rles: list[bytes] = []
        region_boxes: list[tuple] = []
        person_errors: dict[int, str] = {}
        region_errors: dict[int, str] = {}
        for i, image_id in enumerate(image_ids):
            info = images[image_id]
            height, width = int(info["height"]), int(info["width"])
            sizes[i] = height, width
            names.append(str(info["file_name"]).encode())
            rows = _Image()
            person_error = region_error = None
            for a in annotations(image_id):
                crowd = bool(a.get("iscrowd", 0))
                if person_error is None:
                    try:
                        if crowd:
                            rows.crowd.append(_box_row(a.get("bbox")))
                        else:
                            values = a.get("keypoints") or ()
                            if values and len(values) != 3 * K:
                                raise ValueError(f"annotation {a.get('id')}: {len(values) // 3} keypoints, "
                                                 f"the layout has {K}")
                            rows.keypoints.append(values if values else no_keypoints)
                            rows.boxes.append(_box_row(a.get("bbox")))
                    except (ValueError, TypeError) as e:
                        person_error = str(e)
                if region_error is None:
                    try:
                        region = annotation_region(a, height, width)
                        if region is not None:
                            kind, data = region
                            if kind == "polygons":
                                data = [np.asarray(p, dtype=np.float64) for p in data]
                            elif kind == "rle":
                                if not isinstance(data["counts"], (bytes, bytearray)):
                                    raise TypeError(f"annotation {a.get('id')}: RLE counts are neither a list "
                                                    f"nor a string")
                                data = bytes(data["counts"])
                            rows.regions.append((kind, data, IGNORE * (crowd or not has_keypoints(a))
                                                 | PERSON * (not crowd)))
                    except (ValueError, TypeError) as e:
                        region_error = str(e)
            if person_error is not None:
                person_errors[i] = person_error
            else:
                keypoints.extend(rows.keypoints)
                boxes.extend(rows.boxes)
                crowd_boxes.extend(rows.crowd)
                person_counts[i], crowd_counts[i] = len(rows.boxes), len(rows.crowd)
            if region_error is not None:
                region_errors[i] = region_error
                continue
            region_counts[i] = len(rows.regions)
            for kind, data, bits in rows.regions:
                kinds.append(_KINDS[kind])
                channels.append(bits)
                if kind == "polygons":
                    firsts.append(len(polygons))
                    counts.append(len(data))
                    polygons.extend(data)
                elif kind == "rle":
                    firsts.append(len(rles))
                    counts.append(1)
                    rles.append(data)
                else:
                    firsts.append(len(region_boxes))
                    counts.append(1)
                    region_boxes.append(data)

        person_offsets = _offsets(person_counts)
        kps = _keypoint_rows(keypoints, K, person_offsets, person_errors)
        kps[..., 2] = np.where(kps[..., 2] > 0, kps[..., 2], 0.0)
        narrow = next((kps.astype(t) for t in (np.int16, np.float32) if np.array_equal(kps.astype(t), kps)), kps)
        coords = np.concatenate(polygons) if polygons else np.zeros(0)
        hundredths = np.round(coords * 100)
        exact = bool(np.all(np.abs(hundredths) < 2**31) and np.array_equal(hundredths / 100, coords))
        arrays = {
            "image_ids": np.asarray(image_ids, dtype=np.int64).reshape(n),
            "sizes": sizes,
            "names": np.frombuffer(b"".join(names), dtype=np.uint8).copy(),
            "name_offsets": _offsets([len(s) for s in names]),
            "person_offsets": person_offsets,
            "keypoints": narrow,
            "boxes": _xyxy(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)),
            "num_keypoints": (kps[..., 2] > 0).sum(axis=1),
            "crowd_offsets": _offsets(crowd_counts),
            "crowd_boxes": _xyxy(np.asarray(crowd_boxes, dtype=np.float64).reshape(-1, 4)),
            "region_offsets": _offsets(region_counts),
            "region_kind": np.asarray(kinds, dtype=np.uint8),
            "region_channels": np.asarray(channels, dtype=np.uint8),
            "region_first": np.asarray(firsts, dtype=np.int64),
            "region_count": np.asarray(counts, dtype=np.int32),
            "polygon_offsets": _offsets([len(p) for p in polygons]),
            "coords": hundredths.astype(np.int32) if exact else coords,
            "rle_offsets": _offsets([len(r) for r in rles]),
            "rles": np.frombuffer(b"".join(rles), dtype=np.uint8).copy(),
            "region_boxes": np.asarray(region_boxes, dtype=np.float64).reshape(-1, 4),
        }
        return cls(arrays, 100.0 if exact else 1.0, person_errors, region_errors)

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        return sum(getattr(self, k).nbytes for k in self.ARRAYS)

    def image_id(self, i: int) -> int:
        return int(self.image_ids[i])

    def size(self, i: int) -> tuple[int, int]:
        """(height, width) of image ``i``."""
        return int(self.sizes[i, 0]), int(self.sizes[i, 1])

    def file_name(self, i: int) -> str:
        return self.names[self.name_offsets[i]:self.name_offsets[i + 1]].tobytes().decode()

    def people(self, i: int) -> StoredPersons:
        """Image ``i``'s persons; ValueError with the message of an image whose annotations were rejected."""
        if self.person_errors and i in self.person_errors:
            raise ValueError(self.person_errors[i])
        a, b = self.person_offsets[i], self.person_offsets[i + 1]
        c, d = self.crowd_offsets[i], self.crowd_offsets[i + 1]
        return StoredPersons(self.keypoints[a:b].astype(np.float64), self.boxes[a:b].copy(),
                             self.num_keypoints[a:b].copy(), self.crowd_boxes[c:d].copy())

    def _region(self, j: int, height: int, width: int) -> tuple:
        kind, first = self.region_kind[j], int(self.region_first[j])
        if kind == POLYGONS:
            bounds = self.polygon_offsets[first:first + int(self.region_count[j]) + 1]
            polygons = [self.coords[s:e] / self.coord_scale if self.coord_scale != 1 else self.coords[s:e].copy()
                        for s, e in zip(bounds[:-1], bounds[1:])]
            return "polygons", polygons
        if kind == RLE:
            counts = self.rles[self.rle_offsets[first]:self.rle_offsets[first + 1]].tobytes()
            return "rle", {"size": [height, width], "counts": counts}
        return "box", tuple(float(v) for v in self.region_boxes[first])

    def regions(self, i: int) -> tuple[dict | None, dict | None]:
        """Image ``i``'s two regions as RLEs (:func:`~posenet.data.targets.region_rles` of its
        annotations); ValueError with the message of an image whose segmentations were rejected."""
        if self.region_errors and i in self.region_errors:
            raise ValueError(self.region_errors[i])
        height, width = self.size(i)
        ignore, persons = [], []
        for j in range(self.region_offsets[i], self.region_offsets[i + 1]):
            rle = region_rle(self._region(j, height, width), height, width)
            bits = self.region_channels[j]
            if bits & IGNORE:
                ignore.append(rle)
            if bits & PERSON:
                persons.append(rle)
        return merged_rle(ignore), merged_rle(persons)

    def region_masks(self, i: int) -> np.ndarray | None:
        """Image ``i``'s full-resolution mask layers, as :func:`~posenet.data.targets.region_masks`."""
        height, width = self.size(i)
        return decode_regions(*self.regions(i), height, width)


__all__ = ["PersonStore", "StoredPersons"]
