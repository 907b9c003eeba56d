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
JSON parser gives), else as float64 (``coord_scale`` 1). A sample rasterises its regions
from the same numbers as pycocotools rasterises the annotation dicts (all of an image's
polygons in one call, :meth:`PersonStore.regions`), so the masks are the same bit for bit;
rasterising every image once at build time instead would cost about 50 microseconds a
polygon, some 15 s for COCO train2017.

Building reads each annotation's values once and converts each kind (keypoints, boxes,
polygon coordinates) to an array in one call: a numpy call per polygon and a float() per box
value had cost more than the rest of the build. The values convert as before, and an image
whose values do not is read again value by value, so it keeps the message of its first bad
annotation.

An image whose annotations those functions reject keeps the message (``person_errors``,
``region_errors``: a dict of the few such images, usually empty) and raises it when loaded,
as the annotation dicts did.
"""
from __future__ import annotations

from itertools import chain
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from posenet.data.targets import annotation_region, decode_regions, has_keypoints, merged_rle

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


_NO_BOX = (0.0, 0.0, 0.0, 0.0)


def _flat_values(rows: list, width: int) -> np.ndarray | None:
    """``rows`` (lists or tuples of ``width`` values each) as one flat float64 array, each value
    converted as ``np.asarray(rows, dtype=np.float64)`` converts it (np.fromiter, without the
    shape discovery of a nested list: about twice as fast); None where a row is something else
    or a value does not convert."""
    if not all(type(r) in (list, tuple) and len(r) == width for r in rows):
        return None
    try:
        return np.fromiter(chain.from_iterable(rows), np.float64, count=len(rows) * width)
    except (ValueError, TypeError):
        return None


def _keypoint_rows(rows: list, K: int, offsets: np.ndarray, errors: dict[int, str]) -> np.ndarray:
    """(P, K, 3) float64 of the persons' keypoint lists, converted at once; where some list holds
    what is not a number, its image joins ``errors`` and its persons get zeros."""
    values = _flat_values(rows, 3 * K)
    if values is not None:
        return values.reshape(-1, K, 3)
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


def _narrowest(values: np.ndarray, types) -> np.ndarray:
    """``values`` as the first of ``types`` that holds them exactly, else as they are."""
    for t in types:
        with np.errstate(invalid="ignore"):  # NaN or out of range: not equal, so not narrowed
            narrow = values.astype(t)
        if np.array_equal(narrow, values):
            return narrow
    return values


def _hundredths(coords: np.ndarray, block: int = 1 << 16) -> np.ndarray | None:
    """``coords`` as int32 hundredths where each is a whole number of them (``h / 100 == c``
    for ``h = round(100 c)`` within int32), else None. In blocks that stay in the cache."""
    out = np.empty(len(coords), np.int32)
    scaled = np.empty(min(block, len(coords)))
    for start in range(0, len(coords), block):
        c = coords[start:start + block]
        h = scaled[:len(c)]
        np.multiply(c, 100, out=h)
        np.round(h, out=h)
        if not (np.abs(h).max() < 2**31 and np.array_equal(h / 100, c)):
            return None
        out[start:start + len(c)] = h
    return out


def _polygon_values(p, annotation: dict) -> list:
    """One polygon's coordinates as floats, converted as the store converts them all at once."""
    values = np.asarray(p, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"annotation {annotation.get('id')}: a polygon is not a flat list of numbers")
    return values.tolist()


class _Rows:
    """A split's rows while building, kept as the parsed Python values and converted to arrays
    in bulk at the end (a numpy call per polygon or box cost more than the rest of the build).

    Images in ``careful`` are converted value by value instead, as they go, so that each of
    their errors is the message of the first bad annotation in file order: the images whose
    values did not convert in bulk (:meth:`arrays` names them), read again.
    """

    def __init__(self, n: int, num_keypoints: int, careful: set):
        self.K = num_keypoints
        self.no_keypoints = (0.0,) * (3 * num_keypoints)
        self.careful = careful
        self.sizes: list = []
        self.names: list[bytes] = []
        self.person_counts, self.crowd_counts, self.region_counts = ([0] * n for _ in range(3))
        self.keypoints, self.boxes, self.crowd_boxes = [], [], []
        self.box_images, self.crowd_images = [], []
        self.kinds, self.channels, self.firsts, self.counts = [], [], [], []
        self.coords: list = []  # every polygon's values, one after the other
        self.polygon_lengths: list[int] = []
        self.rles: list[bytes] = []
        self.region_boxes: list[tuple] = []
        self.person_errors: dict[int, str] = {}
        self.region_errors: dict[int, str] = {}

    def add(self, i: int, info: dict, annotations: list) -> None:
        """Image ``i``: its COCO entry and person annotation dicts."""
        height, width = int(info["height"]), int(info["width"])
        self.sizes.append((height, width))
        self.names.append(str(info["file_name"]).encode())
        careful = i in self.careful
        rows = self._read(annotations, height, width, careful)
        if not careful and (rows[4] is not None or rows[5] is not None):
            # an earlier annotation's values, not converted yet, may be what fails first
            rows = self._read(annotations, height, width, True)
        self._commit(i, *rows)

    def _read(self, annotations: list, height: int, width: int, careful: bool) -> tuple:
        """An image's persons' keypoints, boxes, crowd boxes, regions, person error and region error."""
        K = self.K
        box = _box_row if careful else (lambda b: b if b is not None and len(b) == 4 else _NO_BOX)
        keypoints, boxes, crowd, regions = [], [], [], []
        person_error = region_error = None
        for a in annotations:
            is_crowd = bool(a.get("iscrowd", 0))
            if person_error is None:
                try:
                    if is_crowd:
                        crowd.append(box(a.get("bbox")))
                    else:
                        values = a.get("keypoints") or ()
                        if values and len(values) != 3 * K:
                            raise ValueError(f"annotation {a.get('id')}: {len(values) // 3} keypoints, "
                                             f"the layout has {K}")
                        keypoints.append(values if values else self.no_keypoints)
                        boxes.append(box(a.get("bbox")))
                except (ValueError, TypeError) as e:
                    person_error = str(e)
            if region_error is None:
                try:
                    region = annotation_region(a, height, width)
                    if region is not None:
                        kind, data = region
                        if kind == "polygons" and careful:
                            data = [_polygon_values(p, a) for p in data]
                        elif kind == "rle":
                            if not isinstance(data["counts"], (bytes, bytearray)):
                                raise TypeError(f"annotation {a.get('id')}: RLE counts are neither a list "
                                                f"nor a string")
                            data = bytes(data["counts"])
                        regions.append((kind, data, IGNORE * (is_crowd or not has_keypoints(a))
                                        | PERSON * (not is_crowd)))
                except (ValueError, TypeError) as e:
                    region_error = str(e)
        return keypoints, boxes, crowd, regions, person_error, region_error

    def _commit(self, i: int, keypoints: list, boxes: list, crowd: list, regions: list,
                person_error: str | None, region_error: str | None) -> None:
        if person_error is not None:
            self.person_errors[i] = person_error
        else:
            self.keypoints.extend(keypoints)
            self.boxes.extend(boxes)
            self.crowd_boxes.extend(crowd)
            self.box_images.extend([i] * len(boxes))
            self.crowd_images.extend([i] * len(crowd))
            self.person_counts[i], self.crowd_counts[i] = len(boxes), len(crowd)
        if region_error is not None:
            self.region_errors[i] = region_error
            return
        self.region_counts[i] = len(regions)
        for kind, data, bits in regions:
            self.kinds.append(_KINDS[kind])
            self.channels.append(bits)
            if kind == "polygons":
                self.firsts.append(len(self.polygon_lengths))
                self.counts.append(len(data))
                for polygon in data:
                    self.coords.extend(polygon)
                    self.polygon_lengths.append(len(polygon))
            elif kind == "rle":
                self.firsts.append(len(self.rles))
                self.counts.append(1)
                self.rles.append(data)
            else:
                self.firsts.append(len(self.region_boxes))
                self.counts.append(1)
                self.region_boxes.append(data)

    def _box_array(self, rows: list, images: list) -> tuple[np.ndarray | None, set]:
        """``rows`` (``images[r]`` is row r's image) as (N, 4) float64, or None and the images
        (not yet careful) whose rows float() does not convert; numpy makes None a NaN where
        float() raises, so a NaN sends its image to be read again too."""
        out = _flat_values(rows, 4)
        if out is not None and not np.isnan(out).any():
            return out.reshape(-1, 4), set()
        bad = set()
        for row, i in zip(rows, images):
            try:
                if any(v != v for v in _box_row(row)):  # NaN
                    bad.add(i)
            except (ValueError, TypeError):
                bad.add(i)
        bad -= self.careful
        if not bad:  # NaN the file holds as such (careful images): kept, as float() keeps it
            return np.array([_box_row(row) for row in rows], dtype=np.float64).reshape(-1, 4), set()
        return None, bad

    def _polygon_images(self) -> np.ndarray:
        """The image of each polygon."""
        region_image = np.repeat(np.arange(len(self.region_counts)), self.region_counts)
        polygons = np.asarray(self.kinds, dtype=np.uint8) == POLYGONS
        return np.repeat(region_image[polygons], np.asarray(self.counts, dtype=np.int64)[polygons])

    def _coords(self) -> tuple[np.ndarray | None, set]:
        """Every polygon's coordinates (float64), or None and the images whose polygons did not
        convert."""
        try:  # np.fromiter converts each value as np.asarray(polygon, dtype=np.float64) did
            return np.fromiter(self.coords, np.float64, count=len(self.coords)), set()
        except (ValueError, TypeError):
            pass
        bad, start = set(), 0
        for length, i in zip(self.polygon_lengths, self._polygon_images().tolist()):
            try:
                _polygon_values(self.coords[start:start + length], {})
            except (ValueError, TypeError):
                bad.add(i)
            start += length
        return None, bad - self.careful

    def arrays(self) -> tuple[dict | None, set]:
        """The store's arrays and its coordinate scale, or None and the images to read again carefully."""
        boxes, bad_boxes = self._box_array(self.boxes, self.box_images)
        crowd_boxes, bad_crowd = self._box_array(self.crowd_boxes, self.crowd_images)
        coords, bad_coords = self._coords()
        bad = bad_boxes | bad_crowd | bad_coords
        if bad:
            return None, bad
        n = len(self.sizes)
        person_offsets = _offsets(self.person_counts)
        kps = _keypoint_rows(self.keypoints, self.K, person_offsets, self.person_errors)
        kps[..., 2] = np.where(kps[..., 2] > 0, kps[..., 2], 0.0)
        narrow = _narrowest(kps, (np.int16, np.float32))
        hundredths = _hundredths(coords)
        arrays = {
            "sizes": np.asarray(self.sizes, dtype=np.int64).reshape(n, 2),
            "names": np.frombuffer(b"".join(self.names), dtype=np.uint8).copy(),
            "name_offsets": _offsets([len(s) for s in self.names]),
            "person_offsets": person_offsets,
            "keypoints": narrow,
            "boxes": _xyxy(boxes),
            "num_keypoints": (kps[..., 2] > 0).sum(axis=1),
            "crowd_offsets": _offsets(self.crowd_counts),
            "crowd_boxes": _xyxy(crowd_boxes),
            "region_offsets": _offsets(self.region_counts),
            "region_kind": np.asarray(self.kinds, dtype=np.uint8),
            "region_channels": np.asarray(self.channels, dtype=np.uint8),
            "region_first": np.asarray(self.firsts, dtype=np.int64),
            "region_count": np.asarray(self.counts, dtype=np.int32),
            "polygon_offsets": _offsets(self.polygon_lengths),
            "coords": coords if hundredths is None else hundredths,
            "coord_scale": 1.0 if hundredths is None else 100.0,
            "rle_offsets": _offsets([len(r) for r in self.rles]),
            "rles": np.frombuffer(b"".join(self.rles), dtype=np.uint8).copy(),
            "region_boxes": np.asarray(self.region_boxes, dtype=np.float64).reshape(-1, 4),
        }
        return arrays, set()


def _read_rows(image_ids: Sequence[int], images: Mapping[int, dict], annotations: Callable[[int], list],
               num_keypoints: int, careful: set) -> _Rows:
    rows = _Rows(len(image_ids), num_keypoints, careful)
    for i, image_id in enumerate(image_ids):
        rows.add(i, images[image_id], annotations(image_id))
    return rows


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
        (height, width, file_name), ``annotations(id)`` its person annotation dicts.

        One pass over the annotations collects their values; each kind (boxes, keypoints,
        polygon coordinates) is then converted to an array at once. Where that fails, the
        images at fault are read again value by value (:class:`_Rows`), which gives each its
        message as before.
        """
        careful: set = set()
        while True:
            rows = _read_rows(image_ids, images, annotations, int(num_keypoints), careful)
            arrays, bad = rows.arrays()
            if arrays is not None:
                break
            careful = careful | bad
        arrays["image_ids"] = np.asarray(image_ids, dtype=np.int64).reshape(len(image_ids))
        coord_scale = arrays.pop("coord_scale")
        return cls(arrays, coord_scale, rows.person_errors, rows.region_errors)

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

    def regions(self, i: int) -> tuple[dict | None, dict | None]:
        """Image ``i``'s two regions as RLEs (:func:`~posenet.data.targets.region_rles` of its
        annotations); ValueError with the message of an image whose segmentations were rejected.

        Every polygon of the image (a box region as its polygon) is rasterised in one pycocotools
        call, and each layer is one merge of its regions' RLEs in annotation order: the same
        sequence of unions as merging each annotation's polygons first, so the same RLEs.
        """
        if self.region_errors and i in self.region_errors:
            raise ValueError(self.region_errors[i])
        a, b = int(self.region_offsets[i]), int(self.region_offsets[i + 1])
        if a == b:
            return None, None
        height, width = self.size(i)
        polygons: list = []  # rasterised together below
        members = []  # per region: its polygons polygons[start:stop], or its RLE
        for j in range(a, b):
            kind, first = self.region_kind[j], int(self.region_first[j])
            if kind == POLYGONS:
                bounds = self.polygon_offsets[first:first + int(self.region_count[j]) + 1].tolist()
                coords = self.coords[bounds[0]:bounds[-1]]
                coords = coords / self.coord_scale if self.coord_scale != 1 else coords.copy()
                start = len(polygons)
                polygons.extend(coords[s - bounds[0]:e - bounds[0]] for s, e in zip(bounds[:-1], bounds[1:]))
                members.append((start, len(polygons)))
            elif kind == RLE:
                counts = self.rles[self.rle_offsets[first]:self.rle_offsets[first + 1]].tobytes()
                members.append({"size": [height, width], "counts": counts})
            else:
                x, y, w, h = (float(v) for v in self.region_boxes[first])
                polygons.append([x, y, x + w, y, x + w, y + h, x, y + h])
                members.append((len(polygons) - 1, len(polygons)))
        rasterised = mask_utils.frPyObjects(polygons, height, width) if polygons else []
        ignore, persons = [], []
        for j, member in zip(range(a, b), members):
            rles = [member] if isinstance(member, dict) else rasterised[member[0]:member[1]]
            bits = self.region_channels[j]
            if bits & IGNORE:
                ignore.extend(rles)
            if bits & PERSON:
                persons.extend(rles)
        return merged_rle(ignore), merged_rle(persons)

    def region_masks(self, i: int) -> np.ndarray | None:
        """Image ``i``'s full-resolution mask layers, as :func:`~posenet.data.targets.region_masks`."""
        height, width = self.size(i)
        return decode_regions(*self.regions(i), height, width)


__all__ = ["PersonStore", "StoredPersons"]
