"""The synthetic scene generator: one random image with its COCO person annotations."""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from posenet.data.keypoints import COCO_PERSON
from posenet.data.synthetic.annotate import mask_bbox, mask_to_polygons, rasterize_polygons, rle_counts
from posenet.data.synthetic.figure import (
    KEYPOINT_PARTS, PELVIS, POSE_KINDS, TORSO, VIEWS, Figure, sample_figure,
)
from posenet.data.synthetic.render import (
    CROWD, LABEL_STRIDE, NoiseField, Outfit, draw_background, draw_clutter, draw_figure, encode_jpeg, finish_image,
)

SPLIT_CODES = {"train": 0, "val": 1}
NUM_KEYPOINTS = COCO_PERSON.num_keypoints


@dataclass
class SyntheticImage:
    """One generated image and its annotations (without ``id``/``image_id``, which the writer
    assigns). ``image`` is BGR (H, W, 3) or, for grayscale images, (H, W) uint8.
    ``masks[i]`` is ``(x0, y0, window)``: the pixels annotation ``i`` covers as drawn (the
    person's visible pixels, or the crowd's), a bool window whose corner is at (x0, y0)."""

    image: np.ndarray
    annotations: list[dict]
    masks: list[tuple[int, int, np.ndarray]] = field(default_factory=list)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def is_grayscale(self) -> bool:
        return self.image.ndim == 2

    def visible_mask(self, i: int) -> np.ndarray:
        """Full-image bool mask of the drawn visible pixels of annotation ``i``."""
        x0, y0, win = self.masks[i]
        out = np.zeros((self.height, self.width), bool)
        out[y0:y0 + win.shape[0], x0:x0 + win.shape[1]] = win
        return out


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of image ``index`` of ``split``: a function of those three only,
    so the output does not depend on how images are spread over worker processes."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLIT_CODES[split], int(index)]))


class SyntheticCocoGenerator:
    """Random images of human-like figures with COCO person-keypoint annotations.

    Every figure is a posed 3-D stick body (front, back and profile views) drawn as shaded,
    textured capsules, hulls and a head with a face (eyes, nose, mouth, ears) and hair, so
    the person's left and right can be told apart. Visibility of each keypoint, boxes and
    polygons are read off a label map painted with the figures.

    Keyword arguments (all optional):
        min_people, max_people: persons per image, drawn uniformly from this range (inclusive);
            0 gives negative images with no person at all. Default 0 and 8.
        min_size, max_size: image width and height, each drawn uniformly in this range (px).
        grayscale_prob: chance that an image is grayscale (written as single-channel JPEG).
        crowd_prob: chance that an image with people also holds a crowd: a cluster of small
            flat-coloured figures annotated as one ``iscrowd`` RLE region.
        min_crowd_people, max_crowd_people: figures in a crowd.
        min_crowd_height, max_crowd_height: standing height of crowd figures (px).
        unannotated_prob: chance that a person is drawn but its keypoints not annotated
            (``num_keypoints`` 0, keypoints all zero; box and polygons are still given).
        min_person_height: smallest standing height of a person (px).
        max_person_height: largest standing height as a fraction of the image height
            (above 1, people are cut by the frame). Heights are log-uniform in between.
        group_prob: chance that a person is placed next to the previous one (overlaps).
        placement: "random" (anywhere, ``group_prob`` groups) or "row" (side by side across the
            image, one slot each, no overlap beyond the slot's jitter; ``group_prob`` unused).
        views: "any" (front, back and profile) or "front" (facing the camera within 35 degrees).
        pose_kinds: the poses drawn (names of ``figure.POSE_KINDS``); default all of them.
        max_clutter: up to this many random non-human background shapes.
        occluder_prob: chance of objects in front of the people.
        max_occluders: up to this many of them.
        blur_prob: chance of a slight Gaussian blur of the whole image.
        noise_std: standard deviation of the added sensor noise (grey levels).
        jpeg_quality: JPEG quality of the written images.
        min_visible_area: persons with fewer visible pixels get no annotation at all.
        min_fragment_area: polygon pieces smaller than this (pixels) are dropped.
        detail_min_height: persons shorter than this (px) are drawn flat (no texture or face).
    """

    def __init__(
        self,
        *,
        min_people: int = 0,
        max_people: int = 8,
        min_size: int = 256,
        max_size: int = 640,
        grayscale_prob: float = 0.1,
        crowd_prob: float = 0.15,
        min_crowd_people: int = 6,
        max_crowd_people: int = 18,
        min_crowd_height: float = 14.0,
        max_crowd_height: float = 40.0,
        unannotated_prob: float = 0.08,
        min_person_height: float = 28.0,
        max_person_height: float = 1.15,
        group_prob: float = 0.35,
        placement: str = "random",
        views: str = "any",
        pose_kinds: tuple[str, ...] | None = None,
        max_clutter: int = 12,
        occluder_prob: float = 0.3,
        max_occluders: int = 2,
        blur_prob: float = 0.3,
        noise_std: float = 4.0,
        jpeg_quality: int = 90,
        min_visible_area: int = 16,
        min_fragment_area: float = 4.0,
        detail_min_height: float = 36.0,
    ):
        if not 0 <= min_people <= max_people:
            raise ValueError(f"need 0 <= min_people <= max_people, got {min_people}, {max_people}")
        if not 16 <= min_size <= max_size:
            raise ValueError(f"need 16 <= min_size <= max_size, got {min_size}, {max_size}")
        if not 0 < min_crowd_people <= max_crowd_people:
            raise ValueError(f"need 0 < min_crowd_people <= max_crowd_people, got "
                             f"{min_crowd_people}, {max_crowd_people}")
        for name, p in (("grayscale_prob", grayscale_prob), ("crowd_prob", crowd_prob),
                        ("unannotated_prob", unannotated_prob), ("group_prob", group_prob),
                        ("occluder_prob", occluder_prob), ("blur_prob", blur_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        if placement not in ("random", "row"):
            raise ValueError(f"placement must be 'random' or 'row', got {placement!r}")
        if views not in VIEWS:
            raise ValueError(f"views must be one of {VIEWS}, got {views!r}")
        if pose_kinds is not None:
            pose_kinds = tuple(str(k) for k in pose_kinds)
            unknown = [k for k in pose_kinds if k not in POSE_KINDS]
            if not pose_kinds or unknown:
                raise ValueError(f"pose_kinds must be a non-empty subset of {POSE_KINDS}, got {list(pose_kinds)}")
        if not 1 <= jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {jpeg_quality}")
        self.min_people, self.max_people = int(min_people), int(max_people)
        self.min_size, self.max_size = int(min_size), int(max_size)
        self.grayscale_prob = float(grayscale_prob)
        self.crowd_prob = float(crowd_prob)
        self.min_crowd_people, self.max_crowd_people = int(min_crowd_people), int(max_crowd_people)
        self.min_crowd_height, self.max_crowd_height = float(min_crowd_height), float(max_crowd_height)
        self.unannotated_prob = float(unannotated_prob)
        self.min_person_height = float(min_person_height)
        self.max_person_height = float(max_person_height)
        self.group_prob = float(group_prob)
        self.placement, self.views, self.pose_kinds = placement, views, pose_kinds
        self.max_clutter = int(max_clutter)
        self.occluder_prob, self.max_occluders = float(occluder_prob), int(max_occluders)
        self.blur_prob, self.noise_std = float(blur_prob), float(noise_std)
        self.jpeg_quality = int(jpeg_quality)
        self.min_visible_area = int(min_visible_area)
        self.min_fragment_area = float(min_fragment_area)
        self.detail_min_height = float(detail_min_height)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ public

    def sample(self, seed: int, split: str, index: int) -> SyntheticImage:
        """Image ``index`` of ``split`` ('train' or 'val') for ``seed``."""
        return self.generate(image_rng(seed, split, index))

    def generate(self, rng: np.random.Generator) -> SyntheticImage:
        width, height = (int(v) for v in rng.integers(self.min_size, self.max_size + 1, size=2))
        grayscale = rng.random() < self.grayscale_prob
        num_people = int(rng.integers(self.min_people, self.max_people + 1))
        noise = NoiseField(rng, height, width)

        canvas = draw_background(rng, height, width, noise)
        label = np.zeros((height, width), np.uint16)
        draw_clutter(rng, canvas, None, noise, int(rng.integers(0, self.max_clutter + 1)), 0.35)

        crowd = num_people > 0 and rng.random() < self.crowd_prob
        if crowd:
            self._draw_crowd(rng, canvas, label, noise)

        figures = self._place_people(rng, num_people, height, width)
        annotated = []
        for i, fig in enumerate(figures):
            outfit = Outfit(rng, noise, fig.height)
            draw_figure(canvas, label, fig, outfit, LABEL_STRIDE * (i + 1),
                        detailed=fig.height >= self.detail_min_height)
            annotated.append(rng.random() >= self.unannotated_prob)

        if num_people > 0 and rng.random() < self.occluder_prob:
            draw_clutter(rng, canvas, label, noise, int(rng.integers(1, self.max_occluders + 1)), 0.22)

        annotations, masks = [], []
        if crowd:
            self._annotate_crowd(label, annotations, masks)
        for i, fig in enumerate(figures):
            self._annotate_person(fig, LABEL_STRIDE * (i + 1), label, annotated[i], annotations, masks)

        image = finish_image(rng, canvas, self.noise_std, self.blur_prob)
        if grayscale:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        return SyntheticImage(image, annotations, masks)

    def encode(self, image: np.ndarray) -> bytes:
        """JPEG bytes of an image (single-channel JPEG for grayscale)."""
        return encode_jpeg(image, self.jpeg_quality)

    # ------------------------------------------------------------------ scene

    def _person_height(self, rng: np.random.Generator, image_height: int) -> float:
        lo = self.min_person_height
        hi = max(lo, self.max_person_height * image_height)
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))

    def _place_people(self, rng: np.random.Generator, n: int, height: int, width: int) -> list[Figure]:
        figures = []
        for i in range(n):
            h = self._person_height(rng, height)
            if self.placement == "row":  # slot i of n across the width, jittered within it
                cx = (i + 0.5 + rng.uniform(-0.2, 0.2)) * width / n
                cy = rng.uniform(0.45, 0.55) * height
            elif figures and rng.random() < self.group_prob:
                prev = figures[-1]
                px = (prev.bbox[0] + prev.bbox[2]) / 2
                py = (prev.bbox[1] + prev.bbox[3]) / 2
                cx = px + rng.choice([-1, 1]) * rng.uniform(0.1, 0.45) * max(h, prev.height)
                cy = py + rng.uniform(-0.15, 0.15) * max(h, prev.height)
            else:
                cx, cy = rng.uniform(0.03, 0.97) * width, rng.uniform(0.1, 0.9) * height
            figures.append(sample_figure(rng, h, (cx, cy), self.views, self.pose_kinds))
        figures.sort(key=lambda f: f.bottom)  # lower in the picture = nearer = drawn later
        return figures

    def _draw_crowd(self, rng, canvas, label, noise) -> None:
        height, width = label.shape
        n = int(rng.integers(self.min_crowd_people, self.max_crowd_people + 1))
        fh = rng.uniform(self.min_crowd_height, self.max_crowd_height)
        band_w = min(0.8 * width, n * fh * rng.uniform(0.15, 0.3))  # dense: figures overlap
        x0 = rng.uniform(0, width - band_w)
        cy = rng.uniform(0.2, 0.75) * height
        figs = []
        for _ in range(n):
            h = fh * rng.uniform(0.85, 1.15)
            centre = (x0 + rng.uniform(0, band_w), cy + rng.uniform(-0.3, 0.3) * fh)
            figs.append(sample_figure(rng, h, centre))
        figs.sort(key=lambda f: f.bottom)
        for fig in figs:
            draw_figure(canvas, label, fig, Outfit(rng, noise, fig.height), CROWD,
                        detailed=False, part_labels=False)

    # ------------------------------------------------------------------ annotations

    def _annotate_crowd(self, label, annotations, masks) -> None:
        mask = label == CROWD
        area = int(mask.sum())
        if area < self.min_visible_area:
            return
        h, w = mask.shape
        annotations.append({
            "segmentation": {"counts": rle_counts(mask), "size": [h, w]},
            "area": area,
            "iscrowd": 1,
            "bbox": mask_bbox(mask),
            "category_id": 1,
            "keypoints": [0] * (3 * NUM_KEYPOINTS),
            "num_keypoints": 0,
        })
        masks.append((0, 0, mask))

    def _annotate_person(self, fig: Figure, base: int, label: np.ndarray, with_keypoints: bool,
                         annotations: list, masks: list) -> None:
        height, width = label.shape
        x0, y0 = max(0, int(np.floor(fig.bbox[0])) - 2), max(0, int(np.floor(fig.bbox[1])) - 2)
        x1, y1 = min(width, int(np.ceil(fig.bbox[2])) + 3), min(height, int(np.ceil(fig.bbox[3])) + 3)
        if x1 <= x0 or y1 <= y0:
            return
        window = (x0, y0, x1, y1)
        lab = label[y0:y1, x0:x1]
        visible = (lab >= base) & (lab < base + LABEL_STRIDE)
        if int(visible.sum()) < self.min_visible_area:
            return
        polys = mask_to_polygons(visible, (x0, y0), self.min_fragment_area)
        if not polys:
            return
        raster = rasterize_polygons(polys, window)
        area = int(raster.sum())
        if area == 0:
            return

        keypoints = [0] * (3 * NUM_KEYPOINTS)
        num = 0
        if with_keypoints:
            for k, (x, y) in enumerate(fig.keypoints):
                ix, iy = int(round(float(x))), int(round(float(y)))
                if not (0 <= ix < width and 0 <= iy < height):
                    continue  # outside the image: v=0 at (0, 0), as COCO
                value = int(label[iy, ix])
                part = value - base
                seen = (
                    0 <= part < LABEL_STRIDE
                    and part in KEYPOINT_PARTS[k]
                    and not fig.self_hidden[k]
                    and not (fig.torso_hides[k] and part in (TORSO, PELVIS))
                    and x0 <= ix < x1 and y0 <= iy < y1
                    and raster[iy - y0, ix - x0] > 0
                )
                keypoints[3 * k:3 * k + 3] = [ix, iy, 2 if seen else 1]
                num += 1
        annotations.append({
            "segmentation": polys,
            "area": area,
            "iscrowd": 0,
            "bbox": mask_bbox(raster, (x0, y0)),
            "category_id": 1,
            "keypoints": keypoints,
            "num_keypoints": num,
        })
        masks.append((x0, y0, visible))
