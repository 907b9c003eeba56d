"""Human-like figures: body proportions, pose sampling, and the posed body seen by a camera.

A figure is a small 3-D skeleton (units of standing height, pelvis at the origin; X is the
person's left, Y is up, Z is the direction the person faces) that is posed with joint angles,
turned by a yaw (front, back, profile views), tilted by a camera elevation and an image-plane
roll, and projected orthographically. Projecting one 3-D skeleton keeps left and right
consistent with the view for free: a person who faces the camera has its left side on the
image right, a person seen from the back has it on the image left.

The projected figure is a list of drawable parts (capsules for limbs, convex hulls of discs for
chest and pelvis, an ellipsoid for the head) with a depth each, the 17 COCO keypoints, and for
every keypoint the parts it may be seen on and whether the body itself turns it away from the
camera (the far shoulder in profile, the eyes of a person seen from the back).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Drawable parts. Label values in the renderer are ``base + part``.
(TORSO, PELVIS, NECK, HEAD, L_UPPER_ARM, R_UPPER_ARM, L_FOREARM, R_FOREARM, L_HAND, R_HAND,
 L_THIGH, R_THIGH, L_SHIN, R_SHIN, L_FOOT, R_FOOT) = range(16)
PART_NAMES = (
    "torso", "pelvis", "neck", "head", "left_upper_arm", "right_upper_arm", "left_forearm",
    "right_forearm", "left_hand", "right_hand", "left_thigh", "right_thigh", "left_shin",
    "right_shin", "left_foot", "right_foot",
)
NUM_PARTS = len(PART_NAMES)

# For each COCO keypoint, the parts on which it counts as seen: a keypoint whose pixel shows
# any other part (of this or another figure, or an occluding object) is occluded.
KEYPOINT_PARTS = (
    (HEAD,), (HEAD,), (HEAD,), (HEAD,), (HEAD,),
    (TORSO, L_UPPER_ARM), (TORSO, R_UPPER_ARM),
    (L_UPPER_ARM, L_FOREARM), (R_UPPER_ARM, R_FOREARM),
    (L_FOREARM, L_HAND), (R_FOREARM, R_HAND),
    (PELVIS, TORSO, L_THIGH), (PELVIS, TORSO, R_THIGH),
    (L_THIGH, L_SHIN), (R_THIGH, R_SHIN),
    (L_SHIN, L_FOOT), (R_SHIN, R_FOOT),
)

# Unit directions of the face keypoints on the head ellipsoid (head frame), and the smallest
# camera-facing component of the surface normal at which each is still seen.
_FACE_DIRS = np.array([
    [0.0, -0.12, 1.0],                                       # nose
    [np.sin(0.5), 0.16, np.cos(0.5)],                        # left eye
    [-np.sin(0.5), 0.16, np.cos(0.5)],                       # right eye
    [np.sin(1.48), -0.02, np.cos(1.48)],                     # left ear
    [-np.sin(1.48), -0.02, np.cos(1.48)],                    # right ear
])
_FACE_DIRS /= np.linalg.norm(_FACE_DIRS, axis=1, keepdims=True)
_FACE_MIN_FACING = np.array([0.15, 0.2, 0.2, -0.3, -0.3])
# Mouth, drawn but not a keypoint.
_MOUTH_DIR = np.array([0.0, -0.55, 0.84]) / np.linalg.norm([0.0, -0.55, 0.84])


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


@dataclass
class BodyShape:
    """Proportions in units of standing height (an adult is about 7.5 heads tall)."""

    hip_height: float = 0.52
    torso_length: float = 0.29  # hip joints to shoulder joints
    neck_length: float = 0.045
    shoulder_half: float = 0.10
    hip_half: float = 0.06
    waist_half: float = 0.075
    chest_depth: float = 0.065
    head_rx: float = 0.052  # head ellipsoid half-width
    head_ry: float = 0.066  # half-height
    head_rz: float = 0.06  # half-depth
    upper_arm: float = 0.17
    forearm: float = 0.15
    hand: float = 0.055
    thigh: float = 0.245
    shin: float = 0.235
    foot: float = 0.1
    r_shoulder: float = 0.042
    r_hip: float = 0.05
    r_neck: float = 0.026
    r_upper_arm: float = 0.03
    r_forearm: float = 0.024
    r_hand: float = 0.024
    r_thigh: float = 0.046
    r_shin: float = 0.034
    r_foot: float = 0.022

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "BodyShape":
        """A random build: limb-length jitter, slim to broad, sometimes a child's big head."""
        b = cls()
        width = rng.uniform(0.85, 1.25)
        for name in ("shoulder_half", "hip_half", "waist_half", "chest_depth", "r_shoulder",
                     "r_hip", "r_upper_arm", "r_forearm", "r_thigh", "r_shin"):
            setattr(b, name, getattr(b, name) * width * rng.uniform(0.93, 1.07))
        for name in ("upper_arm", "forearm", "thigh", "shin", "torso_length"):
            setattr(b, name, getattr(b, name) * rng.uniform(0.93, 1.07))
        head = rng.uniform(0.95, 1.1) if rng.random() > 0.1 else rng.uniform(1.2, 1.45)
        b.head_rx *= head
        b.head_ry *= head
        b.head_rz *= head
        return b


@dataclass
class PoseAngles:
    """Joint angles in radians. Limbs are (elevation, azimuth, bend): elevation from hanging
    straight down (0) to straight up (pi), azimuth of the swing from forward (0) over sideways
    (pi/2) to backward (pi), bend of the elbow or knee."""

    torso_pitch: float = 0.0
    torso_roll: float = 0.0
    torso_twist: float = 0.0
    head_yaw: float = 0.0
    head_pitch: float = 0.0
    head_roll: float = 0.0
    left_arm: tuple = (0.1, 1.4, 0.1)
    right_arm: tuple = (0.1, 1.4, 0.1)
    left_leg: tuple = (0.03, 1.5, 0.05)
    right_leg: tuple = (0.03, 1.5, 0.05)
    left_hand_flex: float = 0.0
    right_hand_flex: float = 0.0
    toe_out: float = 0.2


POSE_KINDS = ("stand", "walk", "run", "arms_up", "gesture", "sit", "crouch", "free")
POSE_WEIGHTS = (0.22, 0.2, 0.1, 0.1, 0.16, 0.07, 0.05, 0.1)


def sample_pose(rng: np.random.Generator, kind: str | None = None,
                kinds: tuple[str, ...] | None = None) -> PoseAngles:
    """Angles of one of a few everyday poses (``POSE_KINDS``) or of a free random pose.

    ``kind`` fixes the pose; otherwise it is drawn from ``kinds`` (default all of
    ``POSE_KINDS``) with their ``POSE_WEIGHTS``, renormalised."""
    d = np.deg2rad
    u = rng.uniform
    if kind is None:
        if kinds is None:
            kind = POSE_KINDS[rng.choice(len(POSE_KINDS), p=POSE_WEIGHTS)]
        else:
            w = np.array([POSE_WEIGHTS[POSE_KINDS.index(k)] for k in kinds])
            kind = kinds[rng.choice(len(kinds), p=w / w.sum())]

    def rest_arm():
        return (d(u(4, 22)), d(u(55, 115)), d(u(0, 30)))

    def rest_leg():
        return (d(u(0, 8)), d(u(50, 130)), d(u(0, 10)))

    p = PoseAngles(
        torso_pitch=d(u(-5, 8)), torso_roll=d(u(-5, 5)), torso_twist=d(u(-10, 10)),
        head_yaw=d(u(-25, 25)), head_pitch=d(u(-15, 15)), head_roll=d(u(-10, 10)),
        left_arm=rest_arm(), right_arm=rest_arm(), left_leg=rest_leg(), right_leg=rest_leg(),
        left_hand_flex=d(u(-15, 30)), right_hand_flex=d(u(-15, 30)), toe_out=d(u(5, 25)),
    )
    if kind == "walk" or kind == "run":
        big = kind == "run"
        fl, bl = (u(30, 60), u(15, 35)) if big else (u(10, 30), u(8, 25))
        fk, bk = (u(40, 90), u(60, 110)) if big else (u(0, 20), u(10, 45))
        front, back = (d(fl), d(u(-5, 10)), d(fk)), (d(bl), d(u(170, 185)), d(bk))
        af = (d(u(20, 50) if big else u(8, 30)), d(u(-10, 20)), d(u(70, 100) if big else u(10, 45)))
        ab = (d(u(15, 40) if big else u(8, 25)), d(u(160, 180)), d(u(60, 100) if big else u(5, 30)))
        if rng.random() < 0.5:
            p.left_leg, p.right_leg, p.left_arm, p.right_arm = front, back, ab, af
        else:
            p.left_leg, p.right_leg, p.left_arm, p.right_arm = back, front, af, ab
        if big:
            p.torso_pitch = d(u(5, 18))
    elif kind == "arms_up":
        up = lambda: (d(u(95, 175)), d(u(0, 110)), d(u(0, 60)))  # noqa: E731
        p.left_arm = up()
        p.right_arm = up() if rng.random() < 0.6 else rest_arm()
    elif kind == "gesture":
        p.left_arm = (d(u(35, 130)), d(u(-10, 110)), d(u(0, 120)))
        if rng.random() < 0.4:
            p.right_arm = (d(u(20, 110)), d(u(-10, 100)), d(u(0, 130)))
    elif kind == "sit":
        p.left_leg = (d(u(70, 100)), d(u(-5, 25)), d(u(70, 110)))
        p.right_leg = (d(u(70, 100)), d(u(-5, 25)), d(u(70, 110)))
        p.left_arm = (d(u(15, 50)), d(u(0, 40)), d(u(30, 90)))
        p.right_arm = (d(u(15, 50)), d(u(0, 40)), d(u(30, 90)))
        p.torso_pitch = d(u(-12, 10))
    elif kind == "crouch":
        p.left_leg = (d(u(45, 80)), d(u(0, 45)), d(u(90, 135)))
        p.right_leg = (d(u(45, 80)), d(u(0, 45)), d(u(90, 135)))
        p.left_arm = (d(u(25, 80)), d(u(0, 60)), d(u(10, 80)))
        p.right_arm = (d(u(25, 80)), d(u(0, 60)), d(u(10, 80)))
        p.torso_pitch = d(u(20, 45))
    elif kind == "free":
        p.left_arm = (d(u(0, 170)), d(u(-20, 180)), d(u(0, 140)))
        p.right_arm = (d(u(0, 170)), d(u(-20, 180)), d(u(0, 140)))
        for side in ("left_leg", "right_leg"):
            az = u(-10, 180)
            el = u(0, 75) if az < 100 else u(0, 35)
            setattr(p, side, (d(el), d(az), d(u(0, 120))))
        p.torso_pitch = d(u(-10, 30))
        p.torso_roll = d(u(-15, 15))
    if kind in ("gesture", "arms_up") and rng.random() < 0.5:
        p.left_arm, p.right_arm = p.right_arm, p.left_arm
    return p


def _limb_direction(elevation: float, azimuth: float, side: float) -> np.ndarray:
    se = np.sin(elevation)
    return np.array([side * se * np.sin(azimuth), -np.cos(elevation), se * np.cos(azimuth)])


def _bend(direction: np.ndarray, target: np.ndarray, angle: float, fallback: np.ndarray) -> np.ndarray:
    """Rotate ``direction`` by ``angle`` towards ``target`` (in their common plane)."""
    b = target - float(target @ direction) * direction
    if np.linalg.norm(b) < 1e-3:
        b = fallback - float(fallback @ direction) * direction
    b = _unit(b)
    return np.cos(angle) * direction + np.sin(angle) * b


@dataclass
class Capsule:
    part: int
    p0: np.ndarray  # (2,) image coordinates
    p1: np.ndarray
    radius: float  # pixels
    depth: float


@dataclass
class Hull:
    part: int
    centers: np.ndarray  # (n, 2) image coordinates of discs
    radii: np.ndarray  # (n,) pixels
    depth: float


@dataclass
class Head:
    part: int
    center: np.ndarray  # (2,) image coordinates
    axes: tuple  # ellipse half-axes in pixels
    angle: float  # degrees, cv2.ellipse convention
    rotation: np.ndarray  # head frame -> camera frame (3x3)
    radii: np.ndarray  # (3,) ellipsoid radii in pixels
    face_points: np.ndarray  # (5, 2) nose, eyes, ears in image coordinates
    face_facing: np.ndarray  # (5,) camera component of the unit surface normal
    mouth: np.ndarray  # (2,)
    mouth_facing: float
    depth: float


class Figure:
    """A posed body projected into an image.

    Attributes: ``keypoints`` (17, 2) float image coordinates (pixel centres are integers,
    like OpenCV), ``self_hidden`` (17,) bool, true where the body itself turns the keypoint
    away from the camera, ``parts`` (drawable parts sorted far to near), ``head``,
    ``torso_hides`` (17,) bool, true for a shoulder or hip on the side turned away from the
    camera (hidden when its pixel shows the chest or pelvis), ``bbox`` (x0, y0, x1, y1) around
    everything drawn, ``height`` (pixels), ``bottom`` (lowest image row, for depth order).
    """

    def __init__(self, body: BodyShape, pose: PoseAngles, yaw: float, elevation: float,
                 roll: float, height: float, center: tuple[float, float]):
        b = body
        cam = rot_z(roll) @ rot_x(elevation) @ rot_y(yaw)
        rt = rot_x(pose.torso_pitch) @ rot_z(pose.torso_roll) @ rot_y(pose.torso_twist)
        rh = rt @ rot_y(pose.head_yaw) @ rot_x(-pose.head_pitch) @ rot_z(pose.head_roll)

        P = {}  # 3-D points in the body frame
        P["l_hip"] = np.array([b.hip_half, 0.0, 0.0])
        P["r_hip"] = np.array([-b.hip_half, 0.0, 0.0])
        shoulder_mid = rt @ np.array([0.0, b.torso_length, 0.0])
        P["l_sh"] = shoulder_mid + rt @ np.array([b.shoulder_half, 0.0, 0.0])
        P["r_sh"] = shoulder_mid + rt @ np.array([-b.shoulder_half, 0.0, 0.0])
        P["neck0"] = shoulder_mid + rt @ np.array([0.0, 0.01, 0.0])
        neck_top = shoulder_mid + rt @ np.array([0.0, b.neck_length, 0.0])
        head_c = neck_top + rh @ np.array([0.0, b.head_ry * 0.8, 0.008])
        P["head"] = head_c

        arms = {}
        for side, name, (el, az, bend), flex in ((1.0, "l", pose.left_arm, pose.left_hand_flex),
                                                 (-1.0, "r", pose.right_arm, pose.right_hand_flex)):
            up = rt @ _limb_direction(el, az, side)
            target = rt @ _unit(np.array([-side * 0.35, 0.25, 1.0]))
            fore = _bend(up, target, bend, rt @ np.array([-side, 0.0, 0.0]))
            hand = _bend(fore, target, flex, rt @ np.array([-side, 0.0, 0.0]))
            P[name + "_elb"] = P[name + "_sh"] + b.upper_arm * up
            P[name + "_wr"] = P[name + "_elb"] + b.forearm * fore
            P[name + "_hand"] = P[name + "_wr"] + b.hand * 0.55 * hand
            arms[name] = up
        for side, name, (el, az, bend) in ((1.0, "l", pose.left_leg), (-1.0, "r", pose.right_leg)):
            thigh = _limb_direction(el, az, side)
            shin = _bend(thigh, _unit(np.array([0.0, -0.3, -1.0])), bend, np.array([0.0, -1.0, 0.0]))
            P[name + "_knee"] = P[name + "_hip"] + b.thigh * thigh
            P[name + "_ank"] = P[name + "_knee"] + b.shin * shin
            fwd = np.array([side * np.sin(pose.toe_out), 0.0, np.cos(pose.toe_out)])
            foot = _unit(fwd - 0.8 * float(fwd @ shin) * shin + np.array([0.0, -0.15, 0.0]))
            P[name + "_toe"] = P[name + "_ank"] + b.foot * foot

        # Discs whose hull is the chest (shirt) and the pelvis (trousers).
        waist_h = 0.09
        chest = [
            (P["l_sh"], b.r_shoulder), (P["r_sh"], b.r_shoulder),
            (rt @ np.array([0.0, b.torso_length - 0.07, b.chest_depth]), 0.02),
            (rt @ np.array([0.0, b.torso_length - 0.07, -b.chest_depth * 0.8]), 0.02),
            (rt @ np.array([b.waist_half, waist_h, 0.0]), 0.02),
            (rt @ np.array([-b.waist_half, waist_h, 0.0]), 0.02),
            (rt @ np.array([0.0, waist_h, b.chest_depth * 0.85]), 0.02),
            (rt @ np.array([0.0, waist_h, -b.chest_depth * 0.75]), 0.02),
        ]
        pelvis = [
            (P["l_hip"], b.r_hip), (P["r_hip"], b.r_hip),
            (rt @ np.array([b.waist_half, waist_h + 0.01, 0.0]), 0.02),
            (rt @ np.array([-b.waist_half, waist_h + 0.01, 0.0]), 0.02),
            (np.array([0.0, 0.0, b.chest_depth * 0.8]), 0.03),
            (np.array([0.0, 0.0, -b.chest_depth * 0.9]), 0.035),
        ]

        # Camera frame, then pixels. The figure's bbox centre goes to ``center``.
        names = list(P)
        pts = np.array([P[n] for n in names]) @ cam.T
        chest_c = np.array([c for c, _ in chest]) @ cam.T
        pelvis_c = np.array([c for c, _ in pelvis]) @ cam.T
        scale = height  # body units are fractions of the standing height

        def to_px(q):
            q = np.atleast_2d(q)
            return np.stack([q[:, 0] * scale, -q[:, 1] * scale], axis=1)

        idx = {n: i for i, n in enumerate(names)}
        px = to_px(pts)
        depth = pts[:, 2]

        # Head ellipsoid and face points.
        m = cam @ rh
        radii3 = np.array([b.head_rx, b.head_ry, b.head_rz])
        face3 = head_c + (_FACE_DIRS * radii3) @ rh.T
        normals = (_FACE_DIRS / radii3) @ m.T
        face_facing = normals[:, 2] / np.linalg.norm(normals, axis=1)
        face_px = to_px(face3 @ cam.T)
        mouth3 = head_c + rh @ (_MOUTH_DIR * radii3)
        mouth_n = m @ (_MOUTH_DIR / radii3)
        mouth_px = to_px(mouth3 @ cam.T)[0]
        cov = (m * radii3 ** 2) @ m.T  # projected ellipse: the 2x2 block, y flipped
        cov2 = cov[:2, :2] * np.array([[1.0, -1.0], [-1.0, 1.0]]) * scale ** 2
        evals, evecs = np.linalg.eigh(cov2)
        axes = np.sqrt(np.maximum(evals, 1e-6))
        angle = float(np.degrees(np.arctan2(evecs[1, 1], evecs[0, 1])))

        # Keypoints in COCO order.
        kp_names = ["l_sh", "r_sh", "l_elb", "r_elb", "l_wr", "r_wr", "l_hip", "r_hip",
                    "l_knee", "r_knee", "l_ank", "r_ank"]
        kps = np.concatenate([face_px, px[[idx[n] for n in kp_names]]], axis=0)
        hidden = np.zeros(17, bool)
        hidden[:5] = face_facing < _FACE_MIN_FACING
        # A shoulder or hip whose side of the body is turned away from the camera sits behind
        # the chest or pelvis: hidden when that part is what its pixel shows.
        lateral_t = (cam @ rt @ np.array([1.0, 0.0, 0.0]))[2]
        lateral_p = cam[2, 0]
        hidden[5], hidden[6] = lateral_t < -0.75, -lateral_t < -0.75
        hidden[11], hidden[12] = lateral_p < -0.75, -lateral_p < -0.75
        self.torso_hides = hidden.copy()  # hidden only when the chest/pelvis covers the point
        self.torso_hides[:5] = False
        hidden[5:] = False

        # Drawable parts.
        s = scale
        parts: list = []
        parts.append(Hull(TORSO, to_px(chest_c), np.array([r for _, r in chest]) * s,
                          float(chest_c[:, 2].mean()) - 0.012))
        parts.append(Hull(PELVIS, to_px(pelvis_c), np.array([r for _, r in pelvis]) * s,
                          float(pelvis_c[:, 2].mean()) - 0.02))
        neck_px = to_px(np.array([P["neck0"], neck_top + rh @ np.array([0, 0.02, 0])]) @ cam.T)
        parts.append(Capsule(NECK, neck_px[0], neck_px[1], b.r_neck * s,
                             float(((P["neck0"] + neck_top) / 2 @ cam.T)[2]) - 0.015))

        def cap(part, a, c, r, bias=0.0):
            parts.append(Capsule(part, px[idx[a]], px[idx[c]], r * s,
                                 float(depth[idx[a]] + depth[idx[c]]) / 2 + bias))

        cap(L_UPPER_ARM, "l_sh", "l_elb", b.r_upper_arm)
        cap(R_UPPER_ARM, "r_sh", "r_elb", b.r_upper_arm)
        cap(L_FOREARM, "l_elb", "l_wr", b.r_forearm, 0.001)
        cap(R_FOREARM, "r_elb", "r_wr", b.r_forearm, 0.001)
        cap(L_HAND, "l_wr", "l_hand", b.r_hand, 0.002)
        cap(R_HAND, "r_wr", "r_hand", b.r_hand, 0.002)
        cap(L_THIGH, "l_hip", "l_knee", b.r_thigh, -0.005)
        cap(R_THIGH, "r_hip", "r_knee", b.r_thigh, -0.005)
        cap(L_SHIN, "l_knee", "l_ank", b.r_shin)
        cap(R_SHIN, "r_knee", "r_ank", b.r_shin)
        cap(L_FOOT, "l_ank", "l_toe", b.r_foot, 0.001)
        cap(R_FOOT, "r_ank", "r_toe", b.r_foot, 0.001)
        head_depth = float((head_c @ cam.T)[2])
        parts.append(Head(HEAD, to_px(head_c @ cam.T)[0], (float(axes[1]), float(axes[0])), angle,
                          m, radii3 * s, face_px, face_facing, mouth_px,
                          float(mouth_n[2] / np.linalg.norm(mouth_n)), head_depth + 0.01))
        parts.sort(key=lambda p: p.depth)

        # Extent of everything drawn, then translate so that its centre lands on ``center``.
        lo, hi = _extent(parts)
        shift = np.asarray(center, float) - (lo + hi) / 2
        for p in parts:
            if isinstance(p, Capsule):
                p.p0 = p.p0 + shift
                p.p1 = p.p1 + shift
            elif isinstance(p, Hull):
                p.centers = p.centers + shift
            else:
                p.center = p.center + shift
                p.face_points = p.face_points + shift
                p.mouth = p.mouth + shift
        self.parts = parts
        self.head = next(p for p in parts if isinstance(p, Head))
        self.keypoints = kps + shift
        self.self_hidden = hidden
        self.bbox = (*(lo + shift), *(hi + shift))
        self.height = float(hi[1] - lo[1])
        self.bottom = float(hi[1] + shift[1])


def _extent(parts) -> tuple[np.ndarray, np.ndarray]:
    lo = np.full(2, np.inf)
    hi = np.full(2, -np.inf)
    for p in parts:
        if isinstance(p, Capsule):
            c = np.stack([p.p0, p.p1])
            r = p.radius
        elif isinstance(p, Hull):
            c, r = p.centers, p.radii[:, None]
        else:
            c, r = p.center[None], max(p.axes)
        lo = np.minimum(lo, (c - r).min(axis=0))
        hi = np.maximum(hi, (c + r).max(axis=0))
    return lo, hi


VIEWS = ("any", "front")


def sample_view(rng: np.random.Generator, views: str = "any") -> tuple[float, float, float]:
    """(yaw, elevation, roll). ``views="any"``: mostly front-ish views, often back or profile,
    small tilts. ``"front"``: facing the camera within 35 degrees, small tilts only."""
    if views == "front":
        yaw, elevation, roll = rng.uniform(-35, 35), rng.uniform(-5, 15), rng.normal(0, 4)
        return float(np.deg2rad(yaw)), float(np.deg2rad(elevation)), float(np.deg2rad(roll))
    r = rng.random()
    if r < 0.4:
        yaw = rng.uniform(-35, 35)
    elif r < 0.6:
        yaw = 180 + rng.uniform(-35, 35)
    else:
        yaw = rng.uniform(-180, 180)
    elevation = rng.uniform(-5, 20)
    roll = rng.normal(0, 4) if rng.random() > 0.05 else rng.uniform(-35, 35)
    return float(np.deg2rad(yaw)), float(np.deg2rad(elevation)), float(np.deg2rad(roll))


def sample_figure(rng: np.random.Generator, height: float, center: tuple[float, float],
                  views: str = "any", pose_kinds: tuple[str, ...] | None = None) -> Figure:
    """A random person of about ``height`` pixels (standing height) centred on ``center``
    (``views`` and ``pose_kinds`` as ``sample_view`` and ``sample_pose``)."""
    body = BodyShape.sample(rng)
    pose = sample_pose(rng, kinds=pose_kinds)
    yaw, elevation, roll = sample_view(rng, views)
    return Figure(body, pose, yaw, elevation, roll, height, center)
