"""The keypoint-stage dataset: COCO person images with every target, built on the fly.

A sample is ``(image, target)``:

* ``image``: uint8 RGB tensor (3, H, W). Normalisation is *not* done here: the training step
  calls :func:`posenet.models.backbone.normalize_image` on the collated batch, on the device.
  A uint8 image is a quarter of the bytes of a float one to copy between the loader workers
  and the main process and to the GPU, and normalising a batch there costs nothing, while on
  the two data-loading cores it would cost about 1 ms per sample.
* ``target``: a dict with
  ``heatmaps`` (K, H/4, W/4) float32, ``segmentation`` (1, H/4, W/4) float32 (0/1),
  ``ignore_mask`` (1, H/4, W/4) float32 (0 = ignore), ``boxes`` (P, 4) float32 x1, y1, x2, y2
  of the non-crowd persons in the crop (pixel-edge frame, see ``posenet.data.transforms``),
  ``keypoints`` (P, K, 3) float32, the same persons' keypoints in input pixels (v = 0 outside
  the crop), ``crowd_boxes`` (C, 4) float32, and ``meta`` (see :class:`CocoKeypointDataset`).
  With ``parts`` (a model whose keypoints are derived from the dataset's, e.g. OpenPose's 18)
  the heatmaps are of those parts, with ``background`` one more channel (1 - their maximum),
  and with ``paf_limb_width`` > 0 there are ``pafs`` (2L, H/s, W/s) float32 of the parts'
  limbs (``codecs/paf.py``); ``keypoints`` stay the dataset's.

:func:`collate` stacks the images and the dense targets and keeps lists of the rest; it
returns ``(images, targets)`` as the training engine expects.
"""
from __future__ import annotations

import gc
import math
import os
import time
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from posenet.codecs.heatmap import KeypointHeatmapCodec, with_background
from posenet.codecs.paf import PafCodec
from posenet.data.coco import CocoPersons
from posenet.data.images import read_image, reduction_factor
from posenet.data.keypoints import DerivedLayout, KeypointLayout
from posenet.data.targets import grid_masks
from posenet.data.transforms import (
    RandomAffine,
    compose,
    fit_matrix,
    invert,
    linear_scale,
    resampling,
    transform_boxes,
    transform_keypoints,
    warp_image,
)
from posenet.errors import DataError
from posenet.models.backbone import IMAGE_MEAN

# The padding colour of a crop: the ImageNet mean, which ``normalize_image`` maps to 0 (what
# the model pads with). BGR, because the warp runs before the channel swap.
_BORDER_BGR = tuple(255.0 * c for c in reversed(IMAGE_MEAN))
_fork_guard_installed = False
_parent_cv2_threads: int | None = None
_froze_for_fork = False
# Loader workers hand their freed heap back to the system every this many samples (glibc's
# malloc_trim): a sample's temporaries (decoded JPEG, warps, masks) are freed in an order that
# leaves the heap fragmented, and without it a worker's private memory creeps up over an epoch.
TRIM_EVERY = 64
_trim = None
_since_trim = 0


def _trim_worker_heap() -> None:
    global _trim, _since_trim
    _since_trim += 1
    if _since_trim < TRIM_EVERY or get_worker_info() is None:
        return
    _since_trim = 0
    if _trim is None:
        try:
            import ctypes

            _trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc: nothing to do
            _trim = False
    if _trim:
        _trim(0)


def _before_fork() -> None:
    global _parent_cv2_threads, _froze_for_fork
    _parent_cv2_threads = cv2.getNumThreads()
    if _parent_cv2_threads != 1:
        cv2.setNumThreads(1)
    # The child starts with every inherited object in the garbage collector's permanent
    # generation: its full collections would otherwise visit (and so write to, and copy) the
    # page of every container object of the parent. Left alone where someone froze already.
    _froze_for_fork = gc.get_freeze_count() == 0
    if _froze_for_fork:
        gc.freeze()


def _after_fork_in_parent() -> None:
    if _froze_for_fork:
        gc.unfreeze()
    if _parent_cv2_threads is not None and _parent_cv2_threads != 1:
        cv2.setNumThreads(_parent_cv2_threads)


def install_cv2_fork_guard() -> None:
    """Make forked processes (DataLoader workers) start with single-threaded OpenCV.

    Each loader worker should own one core, so OpenCV's own thread pool would only contend
    (about 6% fewer samples/s with 2 workers on 2 cores). Calling ``cv2.setNumThreads(1)``
    inside a worker is not safe: if the parent's pool has run and gone idle, the child
    inherits its condition variables with waiters that do not exist in the child, and
    OpenCV's pool teardown blocks forever. So the pool is shrunk to one thread in the parent
    just before each fork (its threads exit cleanly), the child starts with that, and the
    parent's setting is restored right after. Installed once per process; later forks of any
    kind (e.g. a multiprocessing pool) get the same safe start.

    The same hooks freeze the garbage collector's objects around the fork (``gc.freeze``,
    undone in the parent right after), so that a worker's collections leave the pages it
    shares with the parent alone.
    """
    global _fork_guard_installed
    if not _fork_guard_installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent)
        _fork_guard_installed = True


def _single_threaded_cv2_in_spawned_worker() -> None:
    # A worker started by "spawn" or "forkserver" has fresh module state (no fork guard) and
    # no inherited pool, so setting the thread count there is safe. A forked worker inherits
    # ``_fork_guard_installed`` from its parent and was started single-threaded by the guard.
    if not _fork_guard_installed and get_worker_info() is not None:
        cv2.setNumThreads(1)
        install_cv2_fork_guard()


def _rgb_planes(bgr: np.ndarray) -> np.ndarray:
    """A BGR (H, W, 3) image as RGB planes (3, H, W): cv2.split writes the planes straight into
    the output where this OpenCV does so (half the time of numpy's strided copy in a sample, or
    less), else the strided copy."""
    out = np.empty((3,) + bgr.shape[:2], np.uint8)
    planes = cv2.split(bgr, [out[2], out[1], out[0]])
    if all(np.shares_memory(p, q) for p, q in zip(planes, (out[2], out[1], out[0]))):
        return out
    return np.ascontiguousarray(bgr.transpose(2, 0, 1)[::-1])


class CocoKeypointDataset(Dataset):
    """COCO person keypoint samples for the keypoint stage (format in the module docstring).

    Training (``train=True``) draws one affine matrix per sample (:class:`RandomAffine`: scale
    around a person-size reference, rotation, crop around a random person with centre jitter,
    horizontal flip with the layout's left/right swap) and applies it to the image, the masks
    (warped from full resolution straight onto the stride-4 grid), the keypoints and the boxes.
    Validation (``train=False``) is never augmented: the image is scaled so its longer side
    (relative to ``input_size``) fills the input, keeping its aspect ratio, and padded at the
    bottom and right to the full ``input_size`` (every sample has the same shape, so batches
    stack; the model pads further to a multiple of 32 by itself).

    ``target["meta"]``: ``image_id``, ``file`` (path), ``original_size`` (height, width),
    ``input_size`` (H, W), ``matrix`` (2x3 float64, original image pixels -> input pixels,
    pixel centres at integers), ``inverse`` (input -> original), ``flipped`` (keypoint channels
    were swapped by the layout's ``flip_index``: apply it again to map predictions back),
    ``decode_factor`` (the JPEG was decoded at 1/factor resolution; already folded into the
    image warp, ``matrix`` always refers to the original pixels).

    Args:
        persons: the split's annotations.
        input_size: network input (height, width), or one int for a square.
        train: augment (training) or fit-and-pad (validation).
        layout: keypoint layout; default the annotation file's.
        stride, sigma, truncate, combine: of the :class:`KeypointHeatmapCodec`.
        scale_range, max_rotation, center_jitter, flip_prob, person_fraction, zoom_limits:
            of :class:`RandomAffine` (see there for the person-size scale reference).
        min_keypoints: a person needs this many labelled keypoints to be a crop centre.
        min_box_size: boxes narrower or lower than this (input pixels) after clipping are dropped.
        reduced_decode: decode JPEGs at 1/2, 1/4 or 1/8 resolution when the warp shrinks them
            at least that much (no visible loss, less decoding).
        parts: the model's keypoints as a :class:`DerivedLayout` of the dataset's (None: the
            dataset's own); heatmaps (and PAFs) are of these.
        background: add a background heatmap channel, 1 - the maximum of the others.
        paf_limb_width: > 0: PAF targets of the parts' skeleton (limb width in grid cells).
    """

    def __init__(
        self,
        persons: CocoPersons,
        input_size: int | Sequence[int] = (480, 480),
        train: bool = True,
        layout: KeypointLayout | None = None,
        stride: int = 4,
        sigma: float = 7.0,
        truncate: float = 0.01,
        combine: str = "max",
        scale_range: Sequence[float] = (0.8, 1.2),
        max_rotation: float = 40.0,
        center_jitter: float = 40.0,
        flip_prob: float = 0.5,
        person_fraction: float = 0.6,
        zoom_limits: Sequence[float] = (0.5, 4.0),
        min_keypoints: int = 1,
        min_box_size: float = 1.0,
        reduced_decode: bool = True,
        parts: DerivedLayout | None = None,
        background: bool = False,
        paf_limb_width: float = 0.0,
    ):
        if isinstance(input_size, int):
            input_size = (input_size, input_size)
        self.persons = persons
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.train = bool(train)
        self.layout = layout or persons.keypoint_layout
        if self.layout.num_keypoints != persons.keypoint_layout.num_keypoints:
            raise DataError(
                f"{persons.files.annotation_file}: {persons.keypoint_layout.num_keypoints} keypoints per "
                f"person, the layout has {self.layout.num_keypoints}"
            )
        self.codec = KeypointHeatmapCodec(
            self.input_size, stride=stride, sigma=sigma, truncate=truncate, combine=combine
        )
        self.augmentation = RandomAffine(
            output_size=self.input_size,
            scale_range=tuple(scale_range),
            max_rotation=max_rotation,
            center_jitter=center_jitter,
            flip_prob=flip_prob,
            person_fraction=person_fraction,
            zoom_limits=tuple(zoom_limits),
        )
        if parts is not None and parts.source.num_keypoints != self.layout.num_keypoints:
            raise DataError(f"the model's parts are derived from {parts.source.num_keypoints} keypoints, "
                            f"the dataset has {self.layout.num_keypoints}")
        self.parts = parts
        self.background = bool(background)
        model_layout = parts.layout if parts is not None else self.layout
        self.paf_codec = (PafCodec(self.input_size, model_layout.skeleton, stride=stride, limb_width=paf_limb_width)
                          if paf_limb_width > 0 else None)
        install_cv2_fork_guard()
        # What __getitem__ reads: the flat per-image store (posenet.data.person_store) and two
        # strings, never ``persons``' Python objects, which a loader worker would copy page by page.
        self.store = persons.store
        self._image_dir = str(persons.files.image_dir)
        self._annotation_file = str(persons.files.annotation_file)
        self.min_keypoints = int(min_keypoints)
        self.min_box_size = float(min_box_size)
        self.reduced_decode = bool(reduced_decode)
        self._flip_index = self.layout.flip_index
        # Seconds spent per stage ("decode", "augment", "targets"; of the targets "masks": the
        # regions rasterised, decoded and warped onto the grid, and "heatmaps") when set to a dict.
        self.timings: dict[str, float] | None = None

    @property
    def image_ids(self) -> list[int]:
        return self.persons.image_ids

    def __len__(self) -> int:
        return len(self.persons)

    def __getitem__(self, index: int):
        _single_threaded_cv2_in_spawned_worker()
        clock = time.perf_counter
        t0 = clock()
        store = self.store
        index = range(len(store))[index]  # IndexError out of range; a negative index counts from the end
        image_id = store.image_id(index)
        path = Path(self._image_dir, store.file_name(index))
        height, width = store.size(index)
        try:
            people = store.people(index)
        except ValueError as e:
            raise DataError(f"{self._annotation_file}: image {image_id}: {e}") from None

        # Geometry first: the matrix decides how small the JPEG may be decoded.
        flipped = False
        if self.train:
            valid_box = (people.boxes[:, 2] > people.boxes[:, 0]) & (people.boxes[:, 3] > people.boxes[:, 1])
            candidates = people.boxes[(people.num_keypoints >= self.min_keypoints) & valid_box]
            drawn = self.augmentation.sample((height, width), candidates)
            matrix, flipped = drawn.matrix, drawn.flipped
        else:
            matrix = fit_matrix((height, width), self.input_size)
        factor = reduction_factor(linear_scale(matrix), self.reduced_decode)
        t1 = clock()
        bgr = read_image(path, (height, width), factor)
        t2 = clock()

        image_matrix = compose(matrix, resampling(factor)) if factor > 1 else matrix
        crop = warp_image(bgr, image_matrix, self.input_size, _BORDER_BGR)
        image = torch.from_numpy(_rgb_planes(crop))  # BGR HWC -> RGB CHW
        t3 = clock()

        try:
            regions = store.region_masks(index)
        except (ValueError, TypeError) as e:
            raise DataError(f"{self._annotation_file}: image {image_id}: bad segmentation: {e}") from None
        ignore, segmentation = grid_masks(regions, matrix, self.codec.heatmap_size, self.codec.stride)
        t_masks = clock()
        flip_index = self._flip_index if flipped else None
        keypoints = transform_keypoints(matrix, people.keypoints, self.input_size, flip_index)
        model_keypoints = self.parts.encode(keypoints) if self.parts is not None else keypoints
        heatmaps = self.codec.encode(model_keypoints)
        if self.background:
            heatmaps = with_background(heatmaps)
        t_heatmaps = clock()
        boxes, keep = transform_boxes(matrix, people.boxes, self.input_size, self.min_box_size)
        crowd_boxes, _ = transform_boxes(matrix, people.crowd_boxes, self.input_size, self.min_box_size)
        target = {
            "heatmaps": torch.from_numpy(np.ascontiguousarray(heatmaps, dtype=np.float32)),
            "segmentation": torch.from_numpy(segmentation),
            "ignore_mask": torch.from_numpy(ignore),
            "boxes": torch.from_numpy(boxes),
            "keypoints": torch.from_numpy(np.ascontiguousarray(keypoints[keep])),
            "crowd_boxes": torch.from_numpy(crowd_boxes),
            "meta": {
                "image_id": image_id,
                "file": str(path),
                "original_size": (height, width),
                "input_size": self.input_size,
                "matrix": matrix,
                "inverse": invert(matrix),
                "flipped": flipped,
                "decode_factor": factor,
            },
        }
        if self.paf_codec is not None:
            target["pafs"] = torch.from_numpy(self.paf_codec.encode(model_keypoints))
        if self.timings is not None:
            t4 = clock()
            for key, dt in (("decode", t2 - t1), ("augment", (t1 - t0) + (t3 - t2)), ("targets", t4 - t3),
                            ("masks", t_masks - t3), ("heatmaps", t_heatmaps - t_masks)):
                self.timings[key] = self.timings.get(key, 0.0) + dt
        _trim_worker_heap()
        return image, target


_STACKED = ("heatmaps", "pafs", "segmentation", "ignore_mask")
_PACKED = ("boxes", "keypoints", "crowd_boxes")
_ALIGN = 64  # bytes: where each tensor of a block starts


def _block(specs: Sequence[tuple[torch.dtype, tuple]]) -> list[torch.Tensor]:
    """Uninitialised contiguous tensors of the given (dtype, shape), all in one block of shared
    memory (one file descriptor when a loader worker sends them)."""
    starts, nbytes = [], 0
    for dtype, shape in specs:
        starts.append(nbytes)
        nbytes += -(-math.prod(shape) * dtype.itemsize // _ALIGN) * _ALIGN
    storage = torch.UntypedStorage._new_shared(nbytes) if nbytes else torch.UntypedStorage(0)
    return [torch.empty(0, dtype=dtype).set_(storage, start // dtype.itemsize, shape)
            for (dtype, shape), start in zip(specs, starts)]


def _uniform(tensors: Sequence[torch.Tensor], same_shape: bool) -> bool:
    first = tensors[0]
    return all(isinstance(t, torch.Tensor) and t.dtype == first.dtype and (not same_shape or t.shape == first.shape)
               for t in tensors)


def _collate_in_worker(samples: Sequence, stacked: list, packed: list) -> tuple[torch.Tensor, dict]:
    """:func:`collate` in a loader worker, for samples whose stacked keys agree in type and
    shape: the stacked tensors in one block of shared memory, the per-image tensors of
    ``packed`` in another (views into one flat tensor per key)."""
    columns = {key: [s[1][key] for s in samples] for key in stacked + packed}
    images = [s[0] for s in samples]
    first = [images[0]] + [columns[key][0] for key in stacked]
    dense = _block([(t.dtype, (len(samples), *t.shape)) for t in first])
    for out, tensors in zip(dense, [images] + [columns[key] for key in stacked]):
        torch.stack(tensors, out=out)
    flats = _block([(columns[key][0].dtype, (sum(t.numel() for t in columns[key]),)) for key in packed])
    targets = dict(zip(stacked, dense[1:]))
    for key, flat in zip(packed, flats):
        torch.cat([t.reshape(-1) for t in columns[key]], out=flat)
        views, start = [], 0
        for t in columns[key]:
            views.append(flat[start:start + t.numel()].view(t.shape))
            start += t.numel()
        targets[key] = views
    for key in samples[0][1]:
        if key not in targets:
            targets[key] = [s[1][key] for s in samples]
    order = stacked + [key for key in samples[0][1] if key not in stacked]  # as collate's own
    return dense[0], {key: targets[key] for key in order}


def collate(samples: Sequence) -> tuple[torch.Tensor, dict]:
    """``(image, target)`` samples -> ``(images (N, 3, H, W) uint8, targets)``.

    ``heatmaps``, ``pafs`` (where present), ``segmentation`` and ``ignore_mask`` are stacked along a new batch
    dimension; ``boxes``, ``keypoints``, ``crowd_boxes`` and ``meta`` become lists, one entry
    per image (their lengths differ between images).

    In a loader worker the same tensors are built in two blocks of shared memory, one for the
    images and the stacked targets and one that the per-image boxes and keypoints view: the
    worker hands the main process each block of memory as a file descriptor of its own, each
    a socket connection and an authentication (about 0.2 ms of CPU time in either process on
    the 2-core benchmark machine), and a batch of 8 held some 20 of them.
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    first = samples[0][1]
    stacked = [key for key in _STACKED if key in first]
    if get_worker_info() is not None and _uniform([s[0] for s in samples], True) and all(
            _uniform([s[1][key] for s in samples], True) for key in stacked):
        packed = [key for key in _PACKED if key in first and _uniform([s[1][key] for s in samples], False)]
        return _collate_in_worker(samples, stacked, packed)
    images = torch.stack([s[0] for s in samples])
    targets = {key: torch.stack([s[1][key] for s in samples]) for key in stacked}
    for key in first:
        if key not in targets:
            targets[key] = [s[1][key] for s in samples]
    return images, targets
