"""Rasterising the synthetic scenes: backgrounds, textures, clutter, figures and the label map.

Everything is painted in BGR ``uint8`` with OpenCV primitives at sub-pixel precision. Next to
the picture the renderer keeps a ``uint16`` label map that says what every pixel shows (0
background, ``OCCLUDER`` an object in front of people, ``CROWD`` a crowd figure, and
``base + part`` for the part of an annotated figure), drawn with exactly the same shapes and in
the same painter's order as the colours, so visibility and masks are read off the label map.
"""
from __future__ import annotations

import cv2
import numpy as np

from posenet.data.synthetic.figure import (
    L_FOOT, L_FOREARM, L_SHIN, L_THIGH, L_UPPER_ARM, PELVIS, R_FOOT, R_FOREARM, R_SHIN, R_THIGH,
    R_UPPER_ARM, TORSO, Capsule, Figure, Head, Hull,
)

BACKGROUND, OCCLUDER, CROWD = 0, 1, 2
LABEL_STRIDE = 32  # labels of figure i are LABEL_STRIDE * (i + 1) + part

_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_ONE = 1 << _SHIFT
_DISC = np.stack([np.cos(np.linspace(0, 2 * np.pi, 12, endpoint=False)),
                  np.sin(np.linspace(0, 2 * np.pi, 12, endpoint=False))], axis=1)
_LIGHT = np.array([-0.35, 0.55, 0.75]) / np.linalg.norm([-0.35, 0.55, 0.75])


def _fix(p) -> tuple[int, int]:
    return int(round(p[0] * _ONE)), int(round(p[1] * _ONE))


def random_color(rng: np.random.Generator, sat=(0.2, 1.0), val=(0.15, 1.0)) -> np.ndarray:
    """A BGR colour (float32, 0-255) from a random hue, saturation and value."""
    hsv = np.uint8([[[rng.integers(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def skin_color(rng: np.random.Generator) -> np.ndarray:
    tones = np.float32([[190, 215, 250], [150, 190, 235], [120, 165, 220], [90, 130, 190],
                        [60, 95, 150], [40, 65, 110]])
    i = rng.integers(0, len(tones) - 1)
    t = rng.random()
    return tones[i] * (1 - t) + tones[i + 1] * t


class NoiseField:
    """Image-sized smooth and fine noise in [-1, 1], shared by all textures of one image."""

    def __init__(self, rng: np.random.Generator, height: int, width: int):
        coarse = rng.standard_normal((max(2, height // 24), max(2, width // 24))).astype(np.float32)
        smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        self.smooth = np.clip(smooth * 0.6, -1, 1)
        tile = rng.uniform(-1, 1, (64, 64)).astype(np.float32)
        reps = (-(-height // 64), -(-width // 64))
        self.fine = np.tile(tile, reps)[:height, :width]


class Material:
    """A colour with an optional pattern: solid, stripes, checks, blotches or speckles.

    ``paint(x0, y0, x1, y1)`` returns the float32 BGR texture of that image window; patterns
    live in image coordinates, so neighbouring parts of one garment continue each other.
    """

    KINDS = ("solid", "stripes", "checks", "blotches", "speckles")

    def __init__(self, rng: np.random.Generator, color: np.ndarray, noise: NoiseField,
                 kind: str = "solid", scale: float = 8.0, contrast: float = 0.0,
                 second: np.ndarray | None = None):
        self.color = np.asarray(color, np.float32)
        self.kind = kind
        self.noise = noise
        if second is None:
            second = random_color(rng) if rng.random() < 0.6 else self.color * rng.uniform(0.4, 0.7)
        self.second = np.asarray(second, np.float32)
        self.period = max(2.0, scale * rng.uniform(0.6, 1.6))
        a = rng.uniform(0, np.pi)
        self.dir = (np.cos(a), np.sin(a))
        self.duty = rng.uniform(0.3, 0.6)
        self.offset = rng.uniform(0, 100, 2)
        self.grain = contrast

    @classmethod
    def random(cls, rng: np.random.Generator, noise: NoiseField, scale: float,
               color: np.ndarray | None = None, pattern_prob: float = 0.5) -> "Material":
        color = random_color(rng) if color is None else color
        kind = "solid" if rng.random() > pattern_prob else cls.KINDS[rng.integers(1, len(cls.KINDS))]
        return cls(rng, color, noise, kind, scale, contrast=rng.uniform(0.0, 0.12))

    def pattern(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray | None:
        if self.kind == "solid":
            return None
        xs = np.arange(x0, x1, dtype=np.float32)[None, :] + self.offset[0]
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] + self.offset[1]
        if self.kind == "stripes":
            t = (xs * self.dir[0] + ys * self.dir[1]) / self.period
            return ((t - np.floor(t)) < self.duty).astype(np.float32)
        if self.kind == "checks":
            u = np.floor((xs * self.dir[0] + ys * self.dir[1]) / self.period)
            v = np.floor((ys * self.dir[0] - xs * self.dir[1]) / self.period)
            return ((u + v) % 2).astype(np.float32)
        if self.kind == "blotches":
            return (self.noise.smooth[y0:y1, x0:x1] > 0.05).astype(np.float32)
        return (self.noise.fine[y0:y1, x0:x1] > 0.55).astype(np.float32)  # speckles

    def paint(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        h, w = y1 - y0, x1 - x0
        p = self.pattern(x0, y0, x1, y1)
        if p is None:
            out = np.empty((h, w, 3), np.float32)
            out[:] = self.color
        else:
            out = self.color + p[..., None] * (self.second - self.color)
        if self.grain > 0:
            out *= (1.0 + self.grain * self.noise.fine[y0:y1, x0:x1])[..., None]
        return out


class Outfit:
    """The materials of one person: skin, shirt, trousers, shoes, hair; sleeve and leg length."""

    def __init__(self, rng: np.random.Generator, noise: NoiseField, height: float):
        scale = max(2.0, height / 25)
        self.skin = Material(rng, skin_color(rng), noise, contrast=0.03)
        self.shirt = Material.random(rng, noise, scale, pattern_prob=0.55)
        self.pants = Material.random(rng, noise, scale, pattern_prob=0.3,
                                     color=random_color(rng, val=(0.1, 0.8)))
        self.shoes = Material(rng, random_color(rng, val=(0.05, 0.5)), noise)
        hair = np.float32([[20, 25, 30], [30, 50, 80], [40, 80, 130], [90, 160, 210], [160, 160, 165]])
        hair_color = hair[rng.integers(0, len(hair))] * rng.uniform(0.7, 1.2)
        self.hair = Material(rng, hair_color, noise, "blotches" if rng.random() < 0.3 else "solid",
                             contrast=0.15, second=hair_color * 0.7)
        self.hair_line = rng.uniform(0.25, 0.55)  # head-frame height where the hair starts
        self.hair_back = rng.uniform(-0.35, 0.1)  # hair covers the head behind this depth
        self.hair_low = rng.uniform(-0.9, -0.2)
        self.bald = rng.random() < 0.07
        self.long_sleeves = rng.random() < 0.45
        self.no_sleeves = not self.long_sleeves and rng.random() < 0.25
        self.shorts = rng.random() < 0.25

    def material(self, part: int) -> Material:
        if part in (TORSO,):
            return self.shirt
        if part in (L_UPPER_ARM, R_UPPER_ARM):
            return self.skin if self.no_sleeves else self.shirt
        if part in (L_FOREARM, R_FOREARM):
            return self.shirt if self.long_sleeves else self.skin
        if part in (PELVIS, L_THIGH, R_THIGH):
            return self.pants
        if part in (L_SHIN, R_SHIN):
            return self.skin if self.shorts else self.pants
        if part in (L_FOOT, R_FOOT):
            return self.shoes
        return self.skin  # neck, hands, head


def _part_window(p, height: int, width: int, pad: int = 2):
    if isinstance(p, Capsule):
        c = np.stack([p.p0, p.p1])
        r = p.radius
    elif isinstance(p, Hull):
        c, r = p.centers, p.radii.max()
    else:
        c, r = p.center[None], max(p.axes) * 1.35
    lo = np.floor(c.min(axis=0) - r) - pad
    hi = np.ceil(c.max(axis=0) + r) + pad + 1
    x0, y0 = max(0, int(lo[0])), max(0, int(lo[1]))
    x1, y1 = min(width, int(hi[0])), min(height, int(hi[1]))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def _hull_points(p: Hull) -> np.ndarray:
    pts = (p.centers[:, None, :] + p.radii[:, None, None] * _DISC[None]).reshape(-1, 2)
    return cv2.convexHull(np.round(pts * _ONE).astype(np.int32))


def _draw_shape(img: np.ndarray, p, value, origin=(0, 0)) -> None:
    """Draw a capsule or hull filled with ``value`` (a scalar or a colour)."""
    o = np.asarray(origin, float)
    if isinstance(p, Capsule):
        th = max(1, int(round(2 * p.radius)))
        cv2.line(img, _fix(p.p0 - o), _fix(p.p1 - o), value, th, cv2.LINE_8, _SHIFT)
    elif isinstance(p, Hull):
        pts = _hull_points(p) - np.round(o * _ONE).astype(np.int32)
        cv2.fillConvexPoly(img, pts, value, cv2.LINE_8, _SHIFT)
    else:
        axes = (max(1, int(round(p.axes[0] * _ONE))), max(1, int(round(p.axes[1] * _ONE))))
        cv2.ellipse(img, _fix(p.center - o), axes, p.angle, 0, 360, value, -1, cv2.LINE_8, _SHIFT)


def _shade_from_mask(mask: np.ndarray, radius: float) -> np.ndarray:
    """Rounded look: darker towards a part's outline (and so between overlapping parts)."""
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    t = np.minimum(dist * (1.0 / max(0.7 * radius, 1.0)), 1.0)
    return 0.55 + 0.45 * np.sqrt(t)


def _paint_masked(canvas, label, win, mask, colors, value) -> None:
    x0, y0, x1, y1 = win
    sel = mask.astype(bool)
    canvas[y0:y1, x0:x1][sel] = np.clip(colors[sel], 0, 255).astype(np.uint8)
    label[y0:y1, x0:x1][sel] = value


def _draw_head(canvas, label, p: Head, outfit: Outfit, value: int) -> None:
    h, w = label.shape
    win = _part_window(p, h, w)
    if win is None:
        return
    x0, y0, x1, y1 = win
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    _draw_shape(mask, p, 1, (x0, y0))
    rx = float(p.radii[0])
    nose_f = p.face_facing[0]
    if nose_f > -0.05:  # the nose sticks out of the silhouette in profile
        cv2.circle(mask, _fix(p.face_points[0] - (x0, y0)), max(1, int(0.2 * rx * _ONE)), 1, -1,
                   cv2.LINE_8, _SHIFT)
    ears = [k for k in (3, 4) if p.face_facing[k] > -0.3]
    ear_axes = (max(1, int(0.2 * rx * _ONE)), max(1, int(0.32 * p.radii[1] * _ONE)))
    for k in ears:
        cv2.ellipse(mask, _fix(p.face_points[k] - (x0, y0)), ear_axes, p.angle + 90, 0, 360, 1, -1,
                    cv2.LINE_8, _SHIFT)

    # Per pixel: the point of the head ellipsoid seen there (head frame), for hair and shading.
    ys, xs = np.nonzero(mask)
    cx, cy = p.center
    pc = np.stack([xs + x0 - cx, -(ys + y0 - cy)], axis=1).astype(np.float64)
    m, r = p.rotation, p.radii
    q_mat = (m / r ** 2) @ m.T  # ellipsoid: x^T Q x = 1 in camera pixels
    a = q_mat[2, 2]
    b = pc @ q_mat[:2, 2]
    c = np.einsum("ni,ij,nj->n", pc, q_mat[:2, :2], pc) - 1.0
    z = (-b + np.sqrt(np.maximum(b * b - a * c, 0.0))) / a
    pts = np.concatenate([pc, z[:, None]], axis=1)
    local = (pts @ m) / r  # head frame, unit sphere
    normal = pts @ q_mat
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-9
    shade = 0.5 + 0.5 * np.clip(normal @ _LIGHT, 0, 1)
    colors = outfit.skin.paint(x0, y0, x1, y1)[ys, xs]
    if not outfit.bald:
        back = (local[:, 2] < outfit.hair_back) & (local[:, 1] > outfit.hair_low)
        hair = (local[:, 1] > outfit.hair_line) | back
        colors[hair] = outfit.hair.paint(x0, y0, x1, y1)[ys[hair], xs[hair]]
    full = np.zeros(mask.shape + (3,), np.float32)
    full[ys, xs] = colors * shade[:, None]

    # Face features, drawn in the head window only where the head is.
    o = np.array([x0, y0], float)
    skin = outfit.skin.color
    for k in ears:
        cv2.ellipse(full, _fix(p.face_points[k] - o), ear_axes, p.angle + 90, 0, 360,
                    (skin * 0.8).tolist(), -1, cv2.LINE_8, _SHIFT)
    eye_r = max(0.6, 0.13 * rx)
    for k in (1, 2):
        if p.face_facing[k] > 0.2:
            c = _fix(p.face_points[k] - o)
            if rx > 9:
                cv2.ellipse(full, c, (int(eye_r * 1.6 * _ONE), int(eye_r * _ONE)), p.angle + 90, 0, 360,
                            (235, 235, 235), -1, cv2.LINE_AA, _SHIFT)
            cv2.circle(full, c, int(eye_r * _ONE), (40, 30, 20), -1, cv2.LINE_AA, _SHIFT)
    if nose_f > 0.15 and rx > 4:
        cv2.circle(full, _fix(p.face_points[0] - o), max(1, int(0.14 * rx * _ONE)),
                   (skin * 0.7).tolist(), -1, cv2.LINE_AA, _SHIFT)
    if p.mouth_facing > 0.3 and rx > 5:
        d = np.array([np.cos(np.deg2rad(p.angle + 90)), np.sin(np.deg2rad(p.angle + 90))]) * 0.25 * rx
        cv2.line(full, _fix(p.mouth - o - d), _fix(p.mouth - o + d), (60, 50, 150),
                 max(1, int(0.08 * rx)), cv2.LINE_AA, _SHIFT)
    _paint_masked(canvas, label, win, mask, full, value)


def draw_figure(canvas: np.ndarray, label: np.ndarray, fig: Figure, outfit: Outfit,
                base: int, detailed: bool = True, part_labels: bool = True) -> None:
    """Paint ``fig`` far part first and label its pixels ``base + part`` (``base`` alone when
    not ``part_labels``). Not ``detailed``: flat colours, no texture or face, for tiny figures."""
    h, w = label.shape
    for p in fig.parts:
        if not detailed:
            value = base + p.part if part_labels else base
            if isinstance(p, Head):
                back = p.face_facing[0] < 0
                color = outfit.hair.color if back and not outfit.bald else outfit.skin.color
            else:
                color = outfit.material(p.part).color
            _draw_shape(canvas, p, color.tolist())
            _draw_shape(label, p, value)
            continue
        value = base + p.part
        if isinstance(p, Head):
            _draw_head(canvas, label, p, outfit, value)
            continue
        win = _part_window(p, h, w)
        if win is None:
            continue
        x0, y0, x1, y1 = win
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        _draw_shape(mask, p, 1, (x0, y0))
        radius = p.radius if isinstance(p, Capsule) else float(p.radii.max()) * 1.5
        shade = _shade_from_mask(mask, radius)
        colors = outfit.material(p.part).paint(x0, y0, x1, y1) * shade[..., None]
        _paint_masked(canvas, label, win, mask, colors, value)


# ----------------------------------------------------------------------------- scenery

def draw_background(rng: np.random.Generator, height: int, width: int, noise: NoiseField) -> np.ndarray:
    """A wall-and-floor or plain gradient scene with smooth colour blotches (BGR uint8)."""
    lh, lw = max(2, height // 16), max(2, width // 16)
    ys, xs = np.mgrid[0:lh, 0:lw].astype(np.float32)

    def gradient():
        c1 = random_color(rng, sat=(0.0, 0.6), val=(0.2, 0.95))
        c2 = c1 * rng.uniform(0.6, 1.2) if rng.random() < 0.5 else random_color(rng, sat=(0.0, 0.6))
        a = rng.uniform(0, 2 * np.pi)
        t = (xs / lw - 0.5) * np.cos(a) + (ys / lh - 0.5) * np.sin(a) + 0.5
        t = np.clip(t, 0, 1)[..., None]
        return c1 * (1 - t) + c2 * t

    low = gradient()
    horizon = lh
    if rng.random() < 0.65:  # floor below a horizon
        horizon = int(rng.uniform(0.25, 0.75) * lh)
        low[horizon:] = gradient()[horizon:]
    blotch = rng.standard_normal((max(2, lh // 3), max(2, lw // 3), 3)).astype(np.float32)
    blotch = blotch[..., :1] + rng.uniform(0.1, 0.5) * blotch  # mostly brightness, a little hue
    low += rng.uniform(3, 25) * cv2.resize(blotch, (lw, lh), interpolation=cv2.INTER_CUBIC)
    low = np.clip(low, 0, 255).astype(np.uint8)
    img = cv2.resize(low, (width, height), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.35:  # wallpaper, bricks or tiles: a faint large pattern on the wall
        y1 = height if horizon >= lh else max(1, horizon * height // lh)
        mat = Material(rng, np.zeros(3, np.float32), noise, rng.choice(["stripes", "checks"]),
                       scale=rng.uniform(12, 60), second=np.ones(3, np.float32))
        pat = mat.pattern(0, 0, width, y1)
        gain = rng.uniform(-0.25, 0.25)
        img[:y1] = np.clip(img[:y1] * (1.0 + gain * pat[..., None]), 0, 255).astype(np.uint8)
    if rng.random() < 0.4:  # floor tiles or planks as perspective lines
        color = random_color(rng, val=(0.2, 0.9)).tolist()
        vx, vy = rng.uniform(-0.5, 1.5) * width, rng.uniform(-0.3, 0.4) * height
        for x in np.linspace(-width, 2 * width, int(rng.integers(6, 16))):
            cv2.line(img, _fix((vx, vy)), _fix((x, height * 1.5)), color, 1, cv2.LINE_AA, _SHIFT)
    return img


def _random_shape(rng: np.random.Generator, height: int, width: int, max_frac: float):
    """A random non-human shape: (draw(img, value, origin), window it lies in or None)."""
    size = min(height, width) * rng.uniform(0.04, max_frac)
    cx, cy = rng.uniform(-0.05, 1.05) * width, rng.uniform(-0.05, 1.05) * height
    reach = 2.6 * size + 3
    x0, y0 = max(0, int(cx - reach)), max(0, int(cy - reach))
    x1, y1 = min(width, int(cx + reach) + 1), min(height, int(cy + reach) + 1)
    window = (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None
    return _shape_drawer(rng, cx, cy, size), window


def _fixed(pts: np.ndarray, origin: np.ndarray) -> np.ndarray:
    return np.round((pts - origin) * _ONE).astype(np.int32)


def _shape_drawer(rng: np.random.Generator, cx: float, cy: float, size: float):
    """draw(img, value, origin) for a rectangle, ellipse, polygon, bar, ring or star."""
    centre = np.array([cx, cy])
    kind = rng.choice(["rect", "ellipse", "polygon", "bar", "ring", "star"])
    if kind == "ellipse":
        axes = (int(size * rng.uniform(0.3, 1) * _ONE), int(size * rng.uniform(0.3, 1) * _ONE))
        angle = rng.uniform(0, 180)

        def draw(img, v, o):
            cv2.ellipse(img, _fix(centre - o), axes, angle, 0, 360, v, -1, cv2.LINE_8, _SHIFT)
        return draw
    if kind == "bar":
        a = rng.uniform(0, np.pi)
        d = np.array([np.cos(a), np.sin(a)]) * size * rng.uniform(1, 2.5)
        th = max(2, int(size * rng.uniform(0.08, 0.3)))

        def draw(img, v, o):
            cv2.line(img, _fix(centre - d - o), _fix(centre + d - o), v, th, cv2.LINE_8, _SHIFT)
        return draw
    if kind == "ring":
        rad = int(size * rng.uniform(0.4, 1) * _ONE)
        th = max(2, int(size * rng.uniform(0.1, 0.3)))

        def draw(img, v, o):
            cv2.circle(img, _fix(centre - o), rad, v, th, cv2.LINE_8, _SHIFT)
        return draw
    if kind == "rect":
        w2, h2 = size * rng.uniform(0.3, 1.0), size * rng.uniform(0.3, 1.0)
        pts = cv2.boxPoints(((cx, cy), (2 * w2, 2 * h2), rng.uniform(-20, 20))).astype(np.float64)
    elif kind == "polygon":
        n = int(rng.integers(3, 8))
        pts = np.stack([cx + size * rng.uniform(-1, 1, n), cy + size * rng.uniform(-1, 1, n)], 1)
    else:  # star
        n = int(rng.integers(5, 9))
        ang = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False) + rng.uniform(0, np.pi)
        rad = np.where(np.arange(2 * n) % 2 == 0, size, size * rng.uniform(0.3, 0.6))
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)

    def draw(img, v, o):
        cv2.fillPoly(img, [_fixed(pts, o)], v, cv2.LINE_8, _SHIFT)
    return draw


def draw_clutter(rng: np.random.Generator, canvas: np.ndarray, label: np.ndarray | None,
                 noise: NoiseField, count: int, max_frac: float, value: int = OCCLUDER) -> None:
    """Paint ``count`` random shapes (textured, shaded); label them ``value`` if ``label``."""
    h, w = canvas.shape[:2]
    for _ in range(count):
        draw, window = _random_shape(rng, h, w, max_frac)
        mat = Material.random(rng, noise, scale=rng.uniform(3, 14), pattern_prob=0.5)
        shade = rng.random() < 0.6
        if window is None:
            continue
        x0, y0, x1, y1 = window
        m = np.zeros((y1 - y0, x1 - x0), np.uint8)
        draw(m, 1, np.array([x0, y0], float))
        bx, by, bw, bh = cv2.boundingRect(m)
        if bw == 0 or bh == 0:
            continue
        m = m[by:by + bh, bx:bx + bw]
        x0, y0, x1, y1 = x0 + bx, y0 + by, x0 + bx + bw, y0 + by + bh
        colors = mat.paint(x0, y0, x1, y1)
        if shade:
            colors *= _shade_from_mask(m, min(x1 - x0, y1 - y0) / 4)[..., None]
        sel = m.astype(bool)
        canvas[y0:y1, x0:x1][sel] = np.clip(colors[sel], 0, 255).astype(np.uint8)
        if label is not None:
            label[y0:y1, x0:x1][sel] = value


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of an image (single-channel JPEG for grayscale)."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def finish_image(rng: np.random.Generator, img: np.ndarray, noise_std: float,
                 blur_prob: float) -> np.ndarray:
    """Camera-like touches: exposure, optional blur, sensor noise."""
    alpha, beta = rng.uniform(0.8, 1.15), rng.uniform(-20, 20)
    img = cv2.convertScaleAbs(img, alpha=alpha, beta=beta)
    if rng.random() < blur_prob:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.1))
    if noise_std > 0:
        h, w = img.shape[:2]
        tile = np.round(rng.normal(0, noise_std, (96, 96, 3))).astype(np.int16)
        reps = (-(-h // 96), -(-w // 96), 1)
        noisy = img.astype(np.int16) + np.tile(tile, reps)[:h, :w]
        img = np.clip(noisy, 0, 255).astype(np.uint8)
    return img
