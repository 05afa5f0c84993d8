"""The built-in data set: faces rendered from FACS action units through dlib's 68 landmarks.

How a face is made (design.md §6):

1. An identity (face shape, eye spacing, nose/mouth proportions, skin tone, hair) deforms a
   neutral 68-point template in dlib's order (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47,
   mouth 48-67).
2. Action units move the landmarks (AU1 inner brows up, AU12 lip corners up and out, AU26 jaw
   drop, ...) and drive shading (forehead wrinkles, crow's feet, nasolabial folds, dimples...).
3. A pose (roll, mild yaw, scale, shift) maps the face into the image, which is drawn with
   OpenCV at 2-3× the output size and shrunk with INTER_AREA (anti-aliasing); then lighting,
   blur, noise, background and occluders (glasses, a hand or a bar) vary the picture.

The ground truth is exact: the expression label (FER2013 order, `fer_utils.data.EXPRESSIONS`),
the 12 BP4D AU intensities on FACS' 0-5 scale, the expression intensity in [0, 1] and the 68
landmarks in output pixel coordinates.

Framing (the crop convention, so that a detector-based crop at inference matches): before the
pose jitter, the image is the square centred on the centre of the bounding box of the
identity's *neutral* 68 landmarks, with side `FRAME_SCALE` (1.3) × the larger side of that box
(box = jaw 0-16 side to side, brow tops to chin): the face from the brows to just below the
chin fills most of the image, like the FER2013 crops. In terms of dlib's frontal face detector
(it finds all frontal 128-px renders, and 90-96 % of the varied data-set faces at 96-128 px),
the image is the detector's box grown to `DLIB_BOX_SCALE` (1.22) × its width, centred
`DLIB_BOX_SHIFT` (0.1) box widths below the box's centre: `crop_box_from_detection` does
that for a crop at inference. The pose then rolls
the face by up to ±15°, scales it by 0.9-1.1 and shifts it by up to 5 % of the image (always
keeping the 68 landmarks inside).
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from pathlib import Path

import numpy as np

from .faceset import BP4D_AUS, EXPRESSIONS, FaceSet

__all__ = ["EXPRESSION_AUS", "ALL_AUS", "SYNTH_VERSION", "FRAME_SCALE", "CLASS_BALANCES",
           "DLIB_BOX_SCALE", "DLIB_BOX_SHIFT", "make_dataset", "render_face", "neutral_landmarks",
           "cache_path", "sample_face_params", "crop_box_from_detection"]

# Bump when the rendering changes: it is part of the cache file name.
SYNTH_VERSION = 2
# Every AU the renderer understands (the 12 BP4D AUs plus those the prototypes need).
ALL_AUS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 16, 17, 20, 23, 24, 25, 26)
_AU_INDEX = {au: i for i, au in enumerate(ALL_AUS)}
_BP4D_INDEX = np.array([_AU_INDEX[au] for au in BP4D_AUS])
FRAME_SCALE = 1.3
# The frame in terms of dlib's frontal detector box (measured on frontal 128-px renders, see
# benchmarks/bench_synth.py --dlib): side = 1.22 × box width, centre 0.1 widths below.
DLIB_BOX_SCALE = 1.22
DLIB_BOX_SHIFT = 0.10
CLASS_BALANCES = ("uniform", "fer2013")
# FER2013's class counts (angry, disgust, fear, happy, sad, surprise, neutral), for class_balance.
FER2013_COUNTS = (4953, 547, 5121, 8989, 6077, 4002, 6198)
BACKGROUNDS = ("plain", "gradient", "texture")
OCCLUDERS = ("glasses", "sunglasses", "hand", "bar")
POSE_KEYS = ("roll", "yaw", "scale", "shift_x", "shift_y")

# Prototypical AU combinations with typical FACS intensities (0-5) at full expression intensity.
EXPRESSION_AUS = {
    "angry": {4: 4.0, 5: 2.5, 7: 3.5, 23: 3.5},
    "disgust": {9: 4.0, 15: 3.0, 16: 2.5, 10: 3.0},
    "fear": {1: 3.5, 2: 3.0, 4: 3.0, 5: 4.0, 20: 3.5, 26: 2.5},
    "happy": {6: 3.5, 12: 4.5},
    "sad": {1: 4.0, 4: 3.0, 15: 3.5},
    "surprise": {1: 4.0, 2: 4.0, 5: 3.5, 26: 4.0},
    "neutral": {},
}
# AUs of a prototype that are never dropped (the rest are dropped with _DROP_PROB each).
_KEY_AUS = {"angry": (4,), "disgust": (9,), "fear": (5, 20), "happy": (12,), "sad": (1, 15),
            "surprise": (2, 26), "neutral": ()}
# Optional AUs that often come with a prototype: (AU, probability, typical intensity).
_OPTIONAL_AUS = {"angry": ((17, 0.3, 2.5), (24, 0.3, 2.5)), "disgust": ((17, 0.3, 2.0),),
                 "fear": ((25, 0.5, 2.0),), "happy": ((25, 0.5, 2.5),),
                 "sad": ((17, 0.4, 2.5),), "surprise": ((25, 0.5, 2.0),), "neutral": ()}
_DROP_PROB = 0.15
_EXTRA_PROB = 0.07  # each non-prototypical AU appears with this probability (neutral: a fifth)
_SERIAL_BELOW = 2000  # make_dataset renders in one process below this many faces
_CHUNK = 500

# dlib's 68-point mean face (OpenFace's normalised template), x right, y down, in [0, 1].
_DLIB_TEMPLATE = (
    (0.0792, 0.3392), (0.0829, 0.4570), (0.0968, 0.5756), (0.1221, 0.6919), (0.1687, 0.8003),
    (0.2398, 0.8957), (0.3257, 0.9771), (0.4223, 1.0433), (0.5318, 1.0608), (0.6413, 1.0398),
    (0.7381, 0.9723), (0.8244, 0.8896), (0.8948, 0.7925), (0.9394, 0.6815), (0.9611, 0.5622),
    (0.9706, 0.4418), (0.9712, 0.3221), (0.1638, 0.2492), (0.2178, 0.2043), (0.2913, 0.1924),
    (0.3675, 0.2036), (0.4393, 0.2331), (0.5864, 0.2281), (0.6602, 0.1959), (0.7375, 0.1824),
    (0.8132, 0.1928), (0.8708, 0.2353), (0.5153, 0.3186), (0.5162, 0.3962), (0.5171, 0.4738),
    (0.5182, 0.5532), (0.4337, 0.6041), (0.4755, 0.6208), (0.5207, 0.6343), (0.5659, 0.6188),
    (0.6071, 0.6016), (0.2524, 0.3311), (0.2987, 0.3026), (0.3557, 0.3030), (0.4037, 0.3387),
    (0.3525, 0.3500), (0.2968, 0.3505), (0.6313, 0.3341), (0.6791, 0.2965), (0.7360, 0.2947),
    (0.7829, 0.3213), (0.7403, 0.3418), (0.6850, 0.3437), (0.3532, 0.7462), (0.4146, 0.7191),
    (0.4777, 0.7068), (0.5227, 0.7171), (0.5698, 0.7054), (0.6352, 0.7157), (0.6995, 0.7394),
    (0.6394, 0.8052), (0.5764, 0.8354), (0.5254, 0.8417), (0.4764, 0.8375), (0.4138, 0.8100),
    (0.3801, 0.7500), (0.4780, 0.7451), (0.5234, 0.7489), (0.5711, 0.7433), (0.6724, 0.7442),
    (0.5725, 0.7766), (0.5240, 0.7834), (0.4776, 0.7785))
# The left/right partner of each landmark (dlib order).
_MIRROR = (list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30]
           + [35, 34, 33, 32, 31] + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
           + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])

# Landmark groups.
_JAW = np.arange(0, 17)
_BROWS = np.arange(17, 27)
_INNER_BROW = np.array([20, 21, 22, 23])
_OUTER_BROW = np.array([17, 18, 25, 26])
_MID_BROW = np.array([19, 24])
_UPPER_LID = np.array([37, 38, 43, 44])
_LOWER_LID = np.array([40, 41, 46, 47])
_NOSE_BASE = np.arange(31, 36)
_CORNERS = np.array([48, 54, 60, 64])
_UPPER_LIP_OUT = np.array([49, 50, 51, 52, 53])
_UPPER_LIP_IN = np.array([61, 62, 63])
_LOWER_LIP_OUT = np.array([55, 56, 57, 58, 59])
_LOWER_LIP_IN = np.array([65, 66, 67])


# =============================================================================================
# Geometry: template, identity, action units, pose
# =============================================================================================

@functools.lru_cache(maxsize=1)
def _face_template() -> np.ndarray:
    """The symmetric neutral template in face units (eye line y = 0, half face width 1)."""
    t = np.array(_DLIB_TEMPLATE, dtype=np.float64)
    mirrored = t[_MIRROR].copy()
    mirrored[:, 0] = 1.0 - mirrored[:, 0]
    t = (t + mirrored) / 2  # average each point with its mirrored partner: a symmetric face
    centre_x = (t[0, 0] + t[16, 0]) / 2
    half_width = (t[16, 0] - t[0, 0]) / 2
    eye_y = t[36:48, 1].mean()
    face = np.empty_like(t)
    face[:, 0] = (t[:, 0] - centre_x) / half_width
    face[:, 1] = (t[:, 1] - eye_y) / half_width
    face[:, 0] -= (face[:, 0] + face[_MIRROR, 0]) / 2  # exact symmetry
    # The neutral mouth is closed: inner lower lip on the inner upper lip.
    face[[67, 66, 65], 1] = face[[61, 62, 63], 1]
    return face


@functools.lru_cache(maxsize=1)
def _depth() -> np.ndarray:
    """A rough depth per landmark (towards the camera), for the mild yaw (do not modify)."""
    t = _face_template()
    z = 0.6 * np.sqrt(np.clip(1.0 - t[:, 0] ** 2, 0.0, 1.0)) - 0.25
    z[27:31] += np.array([0.05, 0.15, 0.28, 0.4])
    z[31:36] += np.array([0.12, 0.2, 0.25, 0.2, 0.12])
    return z


def neutral_landmarks() -> np.ndarray:
    """The neutral 68-point template (dlib order) in a unit frame.

    The unit frame is the square image of a frontal, unjittered average face: (0, 0) is the top
    left and (1, 1) the bottom right corner, x right, y down (multiply by the image size for
    pixels). The face follows the module's crop convention (`FRAME_SCALE` × the landmark box).

    Returns:
        float32 array 68×2 of (x, y).
    """
    t = _face_template()
    lo, hi = t.min(axis=0), t.max(axis=0)
    centre, side = (lo + hi) / 2, FRAME_SCALE * float((hi - lo).max())
    return ((t - centre) / side + 0.5).astype(np.float32)


def _sample_identity(rng: np.random.Generator) -> dict:
    """Random identity: shape parameters, colours and hair style."""
    u = rng.uniform
    skin_light = u(0.0, 1.0)
    skin = np.array([110, 75, 55]) + skin_light * (np.array([240, 205, 180]) - [110, 75, 55])
    skin = skin * u(0.95, 1.05, 3)
    hair_colours = ((25, 20, 18), (60, 40, 25), (100, 70, 40), (190, 160, 105), (140, 65, 30),
                    (150, 150, 150), (45, 35, 30))
    hair = np.array(hair_colours[rng.integers(len(hair_colours))]) * u(0.85, 1.15)
    iris_colours = ((70, 45, 25), (40, 30, 25), (70, 110, 150), (80, 110, 70), (110, 80, 50))
    return {
        "face_w": u(0.9, 1.08), "jaw_len": u(0.9, 1.1), "chin_w": u(0.8, 1.2),
        "eye_sep": u(0.92, 1.08), "eye_size": u(0.85, 1.15), "eye_open": u(0.8, 1.2),
        "brow_y": u(-0.05, 0.04), "brow_thick": u(0.06, 0.11), "brow_arch": u(-0.03, 0.04),
        "nose_len": u(0.9, 1.1), "nose_w": u(0.85, 1.2), "mouth_w": u(0.85, 1.15),
        "mouth_y": u(-0.05, 0.05), "lip_thick": u(0.7, 1.3),
        "jitter": rng.normal(0.0, 0.008, (68, 2)),
        "skin": _shade(skin, 1.0), "hair": _shade(hair, 1.0),
        "iris": iris_colours[rng.integers(len(iris_colours))],
        "lip": u(0.3, 0.6),
        "hair_style": int(rng.integers(5)), "hairline": u(-0.85, -0.5),
        "hair_part": u(-0.4, 0.4), "gaze": u(-0.02, 0.02, 2),
    }


def _identity_landmarks(ident: dict) -> np.ndarray:
    """The identity's neutral landmarks in face units."""
    p = _face_template().copy()
    # Face outline: width, chin width, jaw length (below the eye line).
    p[_JAW, 0] *= ident["face_w"]
    chin = np.abs(np.arange(17) - 8) <= 3
    p[_JAW[chin], 0] *= ident["chin_w"]
    low_jaw = _JAW[p[_JAW, 1] > 0.4]
    p[low_jaw, 1] = 0.4 + (p[low_jaw, 1] - 0.4) * ident["jaw_len"]
    # Eyes and brows: spacing and size.
    for eye in (np.arange(36, 42), np.arange(42, 48)):
        centre = p[eye].mean(axis=0)
        p[eye] = centre + (p[eye] - centre) * ident["eye_size"]
        p[eye, 1] = centre[1] + (p[eye, 1] - centre[1]) * ident["eye_open"]
    p[36:48, 0] *= ident["eye_sep"]
    p[17:27, 0] *= 0.5 + 0.5 * ident["eye_sep"]
    p[_BROWS, 1] += ident["brow_y"]
    p[[18, 19, 24, 25], 1] -= ident["brow_arch"]
    # Nose: length and width.
    p[27:36, 1] *= ident["nose_len"]
    p[31:36, 0] *= ident["nose_w"]
    # Mouth: width, height, lip thickness.
    mouth = np.arange(48, 68)
    centre = p[mouth].mean(axis=0)
    p[mouth, 0] = centre[0] + (p[mouth, 0] - centre[0]) * ident["mouth_w"]
    p[mouth, 1] += ident["mouth_y"] + (ident["nose_len"] - 1.0) * 0.3
    line = p[[61, 62, 63], 1].mean()
    for outer in (_UPPER_LIP_OUT, _LOWER_LIP_OUT):
        p[outer, 1] = line + (p[outer, 1] - line) * ident["lip_thick"]
    p += ident["jitter"]  # a little asymmetry, as in real faces
    return p


def _move(p: np.ndarray, idx, out: float = 0.0, dy: float = 0.0) -> None:
    """Move landmarks `idx` away from the midline by `out` and down by `dy` (face units)."""
    idx = np.asarray(idx)
    p[idx, 0] += np.sign(np.round(_face_template()[idx, 0], 6)) * out
    p[idx, 1] += dy


@functools.lru_cache(maxsize=1)
def _au_basis() -> np.ndarray:
    """Landmark displacement per unit of each AU (len(ALL_AUS)×68×2): the AUs act linearly."""
    basis = np.zeros((len(ALL_AUS), 68, 2))
    for k in range(len(ALL_AUS)):
        unit = np.zeros(len(ALL_AUS))
        unit[k] = 1.0
        basis[k] = _au_displacement(unit)
    return basis


def _au_displacement(v: np.ndarray) -> np.ndarray:
    """Displacement of the 68 landmarks for AU intensities `v` (over ALL_AUS, scaled to 0-1)."""
    p = np.zeros((68, 2))
    a = dict(zip(ALL_AUS, v))
    # Brows.
    _move(p, _INNER_BROW, dy=-0.17 * a[1])
    _move(p, _MID_BROW, dy=-0.08 * a[1] - 0.1 * a[2])
    _move(p, _OUTER_BROW, dy=-0.15 * a[2])
    _move(p, _BROWS, dy=0.06 * a[4] + 0.03 * a[9])
    _move(p, _INNER_BROW, out=-0.08 * a[4], dy=0.05 * a[4])
    _move(p, [19, 24], out=-0.03 * a[4])
    # Lids: AU5 raises the upper lid, AU6/AU7 raise the lower lid, AU7/AU4 lower the upper lid.
    lid = 0.06 * a[5] - 0.025 * a[7] - 0.015 * a[4] - 0.01 * a[6]
    _move(p, _UPPER_LID, dy=-lid)
    _move(p, _LOWER_LID, dy=-0.03 * a[6] - 0.035 * a[7] - 0.01 * a[9])
    _move(p, [36, 45], dy=-0.012 * a[6])
    # Nose: AU9 wrinkles (raises nose base), AU10 raises it a little.
    _move(p, _NOSE_BASE, out=0.02 * a[9], dy=-0.05 * a[9] - 0.015 * a[10])
    _move(p, [29, 30], dy=-0.03 * a[9])
    # Upper lip: AU10 raises it (most in the centre), AU9 a little.
    _move(p, _UPPER_LIP_OUT, dy=-0.09 * a[10] - 0.04 * a[9])
    _move(p, [50, 52], dy=-0.02 * a[10])
    _move(p, _UPPER_LIP_IN, dy=-0.07 * a[10] - 0.03 * a[9])
    # Lip corners: AU12 up/out, AU14 dimpler, AU15 down, AU20 stretch, AU23 tighten.
    _move(p, _CORNERS, out=0.12 * a[12] + 0.03 * a[14] + 0.12 * a[20] - 0.06 * a[23]
          - 0.02 * a[24],
          dy=-0.17 * a[12] - 0.02 * a[14] + 0.12 * a[15] + 0.02 * a[20])
    _move(p, [49, 53, 61, 63], out=0.04 * a[12] + 0.05 * a[20] - 0.03 * a[23],
          dy=-0.05 * a[12] + 0.04 * a[15])
    _move(p, [59, 55, 67, 65], out=0.04 * a[12] + 0.05 * a[20] - 0.03 * a[23],
          dy=-0.05 * a[12] + 0.05 * a[15])
    # Lip shapes: AU23 tightens (thin, narrow), AU24 presses (thin), AU17 pushes the lower lip up.
    thin = 0.035 * a[23] + 0.04 * a[24]
    _move(p, _UPPER_LIP_OUT, dy=thin)
    _move(p, _LOWER_LIP_OUT, dy=-thin - 0.03 * a[17])
    _move(p, _LOWER_LIP_IN, dy=-0.02 * a[17])
    _move(p, [6, 7, 8, 9, 10], dy=-0.04 * a[17])
    # Lower lip depressor, lips part, jaw drop.
    _move(p, _LOWER_LIP_OUT, dy=0.07 * a[16])
    _move(p, _LOWER_LIP_IN, dy=0.06 * a[16])
    _move(p, [56, 57, 58], dy=0.02 * a[16])
    part = 0.07 * a[25]
    _move(p, _UPPER_LIP_IN, dy=-0.02 * a[25])
    _move(p, _LOWER_LIP_IN, dy=part)
    _move(p, _LOWER_LIP_OUT, dy=part * 0.9)
    drop = 0.38 * a[26]
    jaw_weight = np.clip(1.0 - np.abs(np.arange(17) - 8) / 6.5, 0.0, 1.0) ** 1.3
    p[_JAW, 1] += drop * jaw_weight
    _move(p, _LOWER_LIP_IN, dy=drop * 0.9)
    _move(p, _LOWER_LIP_OUT, dy=drop * 0.92)
    _move(p, [55, 59, 65, 67], out=-0.03 * a[26], dy=-0.03 * a[26])
    _move(p, _CORNERS, out=-0.07 * a[26], dy=0.12 * a[26])
    _move(p, [49, 53, 61, 63], dy=0.01 * a[26])
    return p


def _apply_aus(p0: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Move the neutral landmarks by AU intensities `v` (over ALL_AUS, scaled to 0-1)."""
    p = p0 + np.tensordot(v, _au_basis(), axes=1)
    # The inner lower lip never rises above the inner upper lip.
    p[[67, 66, 65], 1] = np.maximum(p[[67, 66, 65], 1], p[[61, 62, 63], 1])
    return p


def _pose_matrix(p_neutral: np.ndarray, pose: dict, canvas: int):
    """A 2×3 affine from face units (after yaw) to canvas pixels, per the crop convention."""
    lo, hi = p_neutral.min(axis=0), p_neutral.max(axis=0)
    centre, side = (lo + hi) / 2, FRAME_SCALE * float((hi - lo).max())
    k = canvas * pose["scale"] / side
    angle = math.radians(pose["roll"])
    c, s = math.cos(angle) * k, math.sin(angle) * k
    rot = np.array([[c, -s], [s, c]])
    offset = np.array([canvas * (0.5 + pose["shift_x"]), canvas * (0.5 + pose["shift_y"])])
    return rot, offset - rot @ centre


class _Projector:
    """Maps face-unit points (with a depth for yaw) to canvas pixels."""

    def __init__(self, p_neutral, pose, canvas, min_px: int = 1):
        """Set up the transform of a face with neutral landmarks `p_neutral` in a pose."""
        self.min_px = min_px
        rot, offset = _pose_matrix(p_neutral, pose, canvas)
        yaw = math.radians(pose["yaw"])
        self.rot = rot
        # x' = x·cos(yaw) + z·sin(yaw), then the similarity: fold the cos into the matrix.
        self.matrix_t = (rot @ np.diag([math.cos(yaw), 1.0])).T.copy()
        self.z_dir = rot[:, 0] * math.sin(yaw)
        self.offset = offset
        self.unit = canvas * pose["scale"] / (FRAME_SCALE * float(
            (p_neutral.max(axis=0) - p_neutral.min(axis=0)).max()))

    def __call__(self, pts, z=0.0) -> np.ndarray:
        """Project N×2 face-unit points with depth z (scalar or N) to N×2 canvas pixels."""
        out = np.asarray(pts, dtype=np.float64).reshape(-1, 2) @ self.matrix_t
        if isinstance(z, (float, int)):
            out += self.offset + float(z) * self.z_dir
        else:
            out += self.offset
            out += np.multiply.outer(np.asarray(z, dtype=np.float64), self.z_dir)
        return out

    def px(self, length: float) -> int:
        """A thickness in face units → integer canvas pixels (at least 1)."""
        return max(self.min_px, int(round(length * self.unit)))


# =============================================================================================
# Sampling the faces of the data set
# =============================================================================================

def _expression_aus(rng: np.random.Generator, label: int) -> tuple[np.ndarray, float]:
    """Sample the AU intensities (over ALL_AUS, 0-5) and the intensity of one expression."""
    name = EXPRESSIONS[label]
    v = np.zeros(len(ALL_AUS))
    if name == "neutral":
        t = 0.0
        extra_p = _EXTRA_PROB / 5
    else:
        t = float(rng.uniform(0.15, 1.0))
        extra_p = _EXTRA_PROB
        for au, typical in EXPRESSION_AUS[name].items():
            if au not in _KEY_AUS[name] and rng.random() < _DROP_PROB:
                continue
            v[_AU_INDEX[au]] = typical * t * rng.uniform(0.75, 1.3)
        for au, prob, typical in _OPTIONAL_AUS[name]:
            if rng.random() < prob:
                v[_AU_INDEX[au]] = typical * t * rng.uniform(0.6, 1.3)
    protos = set(EXPRESSION_AUS[name]) | {au for au, _, _ in _OPTIONAL_AUS[name]}
    for au in ALL_AUS:
        if au not in protos and au not in (25, 26) and rng.random() < extra_p:
            v[_AU_INDEX[au]] = rng.uniform(1.0, 3.0 if name != "neutral" else 1.8)
    present = v > 0
    v[present] = np.clip(v[present], 1.0, 5.0)  # a present AU is at least FACS level A
    return v, t


def _sample_pose(rng: np.random.Generator) -> dict:
    """Random mild pose."""
    return {"roll": float(np.clip(rng.normal(0.0, 6.0), -15.0, 15.0)),
            "yaw": float(rng.uniform(-18.0, 18.0)), "scale": float(rng.uniform(0.9, 1.1)),
            "shift_x": float(rng.uniform(-0.05, 0.05)), "shift_y": float(rng.uniform(-0.05, 0.05))}


def _sample_scene(rng: np.random.Generator) -> dict:
    """Random background, lighting, camera and occluder."""
    r = rng.random()
    kind = BACKGROUNDS[0 if r < 0.35 else 1 if r < 0.7 else 2]
    occluder = None
    r = rng.random()
    if r < 0.10:
        occluder = "glasses"
    elif r < 0.13:
        occluder = "sunglasses"
    elif r < 0.17:
        occluder = "hand"
    elif r < 0.21:
        occluder = "bar"
    return {
        "background": kind,
        "bg_colours": np.clip(rng.uniform(25, 230, (1, 3)) + rng.normal(0, 1, (25, 1))
                              * rng.uniform(15, 45) + rng.normal(0, 12, (25, 3)), 0, 255),
        "light_dir": float(rng.uniform(0, 2 * math.pi)), "light": float(rng.uniform(0.0, 0.45)),
        "contrast": float(rng.uniform(0.85, 1.2)), "brightness": float(rng.uniform(-25, 25)),
        "blur": float(rng.uniform(0.2, 0.75)) if rng.random() < 0.4 else 0.0,
        "noise": float(rng.uniform(0.0, 7.0)),
        "occluder": occluder, "occ": rng.uniform(0, 1, 8),
    }


def sample_face_params(rng: np.random.Generator, label: int) -> dict:
    """Everything random about one data-set face of expression `label` (an index)."""
    ident = _sample_identity(rng)
    v, t = _expression_aus(rng, label)
    return {"identity": ident, "aus": v, "intensity": t, "label": int(label),
            "pose": _sample_pose(rng), "scene": _sample_scene(rng)}


# =============================================================================================
# Drawing
# =============================================================================================

_SHIFT = 3  # sub-pixel bits for OpenCV drawing
_ONE = 1 << _SHIFT


def _ipts(pts: np.ndarray) -> np.ndarray:
    """Canvas float points → int32 fixed-point for cv2 drawing with shift=_SHIFT."""
    return np.rint(pts * _ONE).astype(np.int32).reshape(-1, 1, 2)


class _Painter:
    """Draws colours on a grey or RGB canvas (grey: luminance of the RGB colour)."""

    def __init__(self, canvas: np.ndarray, line_type: int):
        """Paint on `canvas` (H×W×1 or H×W×3 uint8) with an OpenCV line type."""
        import cv2

        self.cv2 = cv2
        self.canvas = canvas
        self.grey = canvas.shape[2] == 1
        self.lt = line_type

    def col(self, rgb) -> tuple:
        """An OpenCV colour for this canvas."""
        r, g, b = (min(255.0, max(0.0, float(c))) for c in rgb)
        if self.grey:
            return (0.299 * r + 0.587 * g + 0.114 * b,)
        return (r, g, b)

    def poly(self, pts, rgb) -> None:
        """Fill a polygon."""
        self.cv2.fillPoly(self.canvas, [_ipts(pts)], self.col(rgb), self.lt, _SHIFT)

    def line(self, pts, rgb, thickness: int, closed: bool = False) -> None:
        """Draw a polyline."""
        self.cv2.polylines(self.canvas, [_ipts(pts)], closed, self.col(rgb), thickness, self.lt,
                           _SHIFT)

    def ellipse(self, centre, axes, angle, rgb, thickness=-1) -> None:
        """Fill (or outline) an ellipse, centre/axes in canvas pixels."""
        c = (int(round(centre[0] * _ONE)), int(round(centre[1] * _ONE)))
        ax = (max(1, int(round(axes[0] * _ONE))), max(1, int(round(axes[1] * _ONE))))
        self.cv2.ellipse(self.canvas, c, ax, angle, 0, 360, self.col(rgb), thickness, self.lt,
                         _SHIFT)

    def clipped(self, clip_pts, draw) -> None:
        """Run draw(painter) but keep only the pixels inside polygon `clip_pts`."""
        cv2 = self.cv2
        h, w = self.canvas.shape[:2]
        x0, y0 = np.floor(clip_pts.min(axis=0)).astype(int) - 1
        x1, y1 = np.ceil(clip_pts.max(axis=0)).astype(int) + 2
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            return
        roi = self.canvas[y0:y1, x0:x1]
        sub = roi.copy()
        mask = np.zeros(roi.shape[:2], np.uint8)
        cv2.fillPoly(mask, [_ipts(clip_pts - (x0, y0))], 255, self.lt, _SHIFT)
        painter = _Painter(sub, self.lt)
        draw(painter, np.array([x0, y0], dtype=np.float64))
        alpha = (mask.astype(np.float32) / 255.0)[..., None]
        roi[...] = (roi * (1 - alpha) + sub * alpha + 0.5).astype(np.uint8)


@functools.lru_cache(maxsize=256)
def _unit_arc(t0: float, t1: float, n: int) -> np.ndarray:
    """cos/sin of n angles from t0 to t1 (n×2), cached."""
    t = np.linspace(t0, t1, n)
    return np.stack([np.cos(t), -np.sin(t)], axis=1)


def _arc(cx, cy, ax, ay, t0, t1, n=12) -> np.ndarray:
    """Points on an ellipse arc (angles in radians, y down: t=π/2 is the top)."""
    return _unit_arc(float(t0), float(t1), int(n)) * (ax, ay) + (cx, cy)


def _shade(rgb, factor) -> tuple:
    """A colour darkened (factor < 1) or lightened (> 1)."""
    return tuple(min(255.0, max(0.0, float(c) * factor)) for c in rgb)


def _mix(rgb1, rgb2, w: float) -> tuple:
    """(1 - w)·rgb1 + w·rgb2."""
    return tuple(min(255.0, max(0.0, (1 - w) * float(a) + w * float(b)))
                 for a, b in zip(rgb1, rgb2))


def _background(scene: dict, canvas: int, channels: int) -> np.ndarray:
    """The background at canvas size: plain, gradient or low-frequency texture."""
    import cv2

    cols = scene["bg_colours"]
    if channels == 1:
        cols = cols @ np.array([0.299, 0.587, 0.114])
        cols = cols[:, None]
    kind = scene["background"]
    if kind == "plain":
        grid = cols[:1].reshape(1, 1, -1)
    elif kind == "gradient":
        grid = cols[:4].reshape(2, 2, -1)
    else:
        grid = cols[:25].reshape(5, 5, -1)
    if kind == "plain":
        img = np.broadcast_to(grid, (canvas, canvas, grid.shape[-1]))
    else:
        img = cv2.resize(grid.astype(np.float32), (canvas, canvas), interpolation=cv2.INTER_CUBIC
                         if kind == "texture" else cv2.INTER_LINEAR)
        img = img.reshape(canvas, canvas, -1)
    return np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8))


# The forehead's top, in face units (the hair's outline starts there too).
_TOP_Y = -1.45


def _draw_face(paint: _Painter, proj: _Projector, p: np.ndarray, p0: np.ndarray, ident: dict,
               v: np.ndarray, scene: dict, z: np.ndarray, blur_base) -> None:
    """Draw the whole head from the moved landmarks `p` (face units), back to front."""
    a = dict(zip(ALL_AUS, v))
    _draw_head(paint, proj, p, ident, scene, z, a)
    blur_base()
    _draw_hair(paint, proj, p, ident)
    _draw_wrinkles(paint, proj, p, ident["skin"], a)
    _draw_nose(paint, proj, p, ident["skin"], z, a)
    _draw_folds(paint, proj, p, ident["skin"], a)
    _draw_eyes(paint, proj, p, p0, ident, z, a)
    _draw_brows(paint, proj, p, ident, z)
    _draw_mouth(paint, proj, p, ident, z, a)


def _draw_head(paint: _Painter, proj: _Projector, p: np.ndarray, ident: dict, scene: dict,
               z: np.ndarray, a: dict) -> None:
    """Hair behind the head, neck and clothes, ears, the face's skin, cheeks, eye sockets."""
    skin, hair = ident["skin"], ident["hair"]
    fw = ident["face_w"]
    style = ident["hair_style"]
    top_y = _TOP_Y
    # Hair behind the head (long styles).
    if style in (2, 3):
        back = np.concatenate([[[-1.25 * fw, 2.3]], _arc(0, 0.1, 1.2 * fw, 1.65, math.pi, 0, 16),
                               [[1.25 * fw, 2.3]]])
        paint.poly(proj(back, -0.5), _shade(hair, 0.8))
    # Neck and clothes.
    neck = np.array([[-0.48, 1.1], [0.48, 1.1], [0.55, 2.6], [-0.55, 2.6]])
    paint.poly(proj(neck, -0.2), _shade(skin, 0.78))
    shirt = np.concatenate([[[-0.5, 2.05]], _arc(0, 2.05, 0.5, 0.12, math.pi, 2 * math.pi, 6),
                            [[0.5, 2.05], [1.6, 2.35], [1.6, 3.0], [-1.6, 3.0], [-1.6, 2.35]]])
    paint.poly(proj(shirt, -0.2), scene["bg_colours"][24] * 0.6)
    # Ears.
    for side in (-1, 1):
        c = proj([[side * (abs(p[0, 0]) + 0.03), 0.3]], -0.6)[0]
        r = 0.13 * proj.unit
        paint.ellipse(c, (r, 2.1 * r), _proj_angle(proj), _shade(skin, 0.85))
    # Face: outline = jaw + forehead arc; darker rim, lighter centre, blurred below.
    jaw = p[_JAW]
    forehead = _arc(0, jaw[0, 1] * 0.5 + jaw[16, 1] * 0.5, (jaw[16, 0] - jaw[0, 0]) / 2 * 0.99,
                    -top_y, 0.0, math.pi, 14)
    outline = np.concatenate([jaw, forehead[1:-1]])
    z_out = np.concatenate([z[_JAW], np.full(len(forehead) - 2, -0.1)])
    paint.poly(proj(outline, z_out), _shade(skin, 0.88))
    inner = np.concatenate([jaw[1:16] * [0.88, 0.97],
                            _arc(0, jaw[0, 1], (jaw[16, 0] - jaw[0, 0]) / 2 * 0.86, 1.3, 0.0,
                                 math.pi, 10)[1:-1]])
    paint.poly(proj(inner, 0.1), skin)
    # Cheeks: AU6 raises a rounded highlight, with a shadow under it.
    for side in (-1, 1):
        cheek = np.array([side * 0.5, 0.45 - 0.08 * a[6]])
        c = proj([cheek], 0.1)[0]
        paint.ellipse(c + [0, 0.12 * proj.unit], (0.3 * proj.unit, 0.14 * proj.unit),
                      _proj_angle(proj), _shade(skin, 0.96 - 0.08 * a[6]))
        paint.ellipse(c, (0.27 * proj.unit, (0.17 + 0.03 * a[6]) * proj.unit), _proj_angle(proj),
                      _shade(skin, 1.0 + 0.06 * a[6]))
    # Eye sockets: a soft shadow around each eye.
    for eye in (np.arange(36, 42), np.arange(42, 48)):
        c = proj([p[eye].mean(axis=0) + [0, -0.04]], 0.1)[0]
        paint.ellipse(c, (0.22 * proj.unit, 0.12 * proj.unit), _proj_angle(proj),
                      _shade(skin, 0.93))


def _draw_hair(paint: _Painter, proj: _Projector, p: np.ndarray, ident: dict) -> None:
    """Hair on top of the head (every style but bald), in front of the blurred base."""
    style, hair, top_y = ident["hair_style"], ident["hair"], _TOP_Y
    jaw = p[_JAW]
    if style != 4:
        hl = ident["hairline"] if style != 1 else max(ident["hairline"], -0.62) + 0.1
        part = ident["hair_part"] if style == 3 else 0.0
        half = (jaw[16, 0] - jaw[0, 0]) / 2
        outer = _arc(0, jaw[0, 1], half * 1.08, -top_y + 0.12, -0.12, math.pi + 0.12, 16)
        xs = np.linspace(-1, 1, 11)
        line_y = hl + 0.25 * np.abs(xs) ** 3 * (1 + 0.5 * (style == 1)) + 0.12 * part * xs
        if style == 1:
            line_y = line_y + 0.04 * np.sin(xs * 17.0)
        hairline = np.stack([xs * half * 1.02, line_y], axis=1)
        temple = np.array([[-half * 1.02, jaw[0, 1] - 0.05], [half * 1.02, jaw[0, 1] - 0.05]])
        poly = np.concatenate([outer, temple[:1], hairline, temple[1:]])
        paint.poly(proj(poly, -0.1), hair)


def _draw_wrinkles(paint: _Painter, proj: _Projector, p: np.ndarray, skin, a: dict) -> None:
    """Forehead wrinkles (AU1/AU2) and glabella lines (AU4)."""
    brow_y = p[_BROWS, 1].mean()
    fw_k = max(a[1], a[2])
    if fw_k > 0.1:
        col = _shade(skin, 1.0 - 0.35 * fw_k)
        for k, dy in enumerate((0.16, 0.25, 0.34)):
            width = 0.25 + 0.25 * a[2] - 0.04 * k
            arc = _arc(0, brow_y - dy + 0.25, width, 0.05 + 0.25, 0.5 * math.pi - width,
                       0.5 * math.pi + width, 7)
            arc[:, 1] = brow_y - dy - 0.05 * np.cos((arc[:, 0] / max(width, 1e-3)) * 1.2)
            paint.line(proj(arc, 0.2), col, proj.px(0.025))
    if a[4] > 0.1:
        col = _shade(skin, 1.0 - 0.4 * a[4])
        for side in (-1, 1):
            x = side * (abs(p[21, 0]) - 0.05)
            seg = np.array([[x, p[21, 1] + 0.03], [x * 0.8, p[21, 1] - 0.14]])
            paint.line(proj(seg, 0.3), col, proj.px(0.025))


def _draw_nose(paint: _Painter, proj: _Projector, p: np.ndarray, skin, z: np.ndarray,
               a: dict) -> None:
    """Nose bridge, base, wings and nostrils; nose wrinkles (AU9)."""
    nose_col = _shade(skin, 0.72)
    paint.line(proj(p[[27, 28, 29]] + [0.07, 0], z[[27, 28, 29]]), _shade(skin, 0.94),
               proj.px(0.025))
    paint.line(proj(p[31:36], z[31:36]), nose_col, proj.px(0.025))
    for side, i in ((-1, 31), (1, 35)):
        wing = np.array([p[i], p[i] + [side * 0.05, -0.04], p[i] + [side * 0.03, -0.11]])
        paint.line(proj(wing, z[i]), nose_col, proj.px(0.025))
    for i in (32, 34):
        c = proj([p[i] + [0, -0.015]], z[i])[0]
        paint.ellipse(c, (0.04 * proj.unit, 0.022 * proj.unit), _proj_angle(proj),
                      _shade(skin, 0.4))
    if a[9] > 0.1:
        col = _shade(skin, 1.0 - 0.45 * a[9])
        for i in (27, 28):
            seg = np.array([p[i] + [-0.09, 0.02], p[i] + [0, -0.01], p[i] + [0.09, 0.02]])
            paint.line(proj(seg, z[i]), col, proj.px(0.025))


def _draw_folds(paint: _Painter, proj: _Projector, p: np.ndarray, skin, a: dict) -> None:
    """Nasolabial folds (AU6/9/10/12), dimples (AU14), marionette lines (AU15), chin (AU17)."""
    fold = 0.04 + 0.55 * max(0.6 * a[6], a[9], a[10], a[12])
    for side, wing, corner in ((-1, 31, 48), (1, 35, 54)):
        start = p[wing] + [side * 0.08, -0.03]
        end = p[corner] + [side * (0.1 + 0.03 * a[12]), 0.1 - 0.03 * a[12]]
        mid = (start + end) / 2 + [side * (0.07 + 0.05 * a[12]), 0]
        curve = np.array([start, (start + mid) / 2 + [side * 0.01, 0], mid, (mid + end) / 2, end])
        paint.line(proj(curve, 0.2), _shade(skin, 1.0 - 0.4 * fold), proj.px(0.03))
        if a[14] > 0.1:
            seg = np.array([p[corner] + [side * 0.07, -0.05], p[corner] + [side * 0.09, 0.0],
                            p[corner] + [side * 0.07, 0.05]])
            paint.line(proj(seg, 0.2), _shade(skin, 1.0 - 0.5 * a[14]), proj.px(0.025))
        if a[15] > 0.1:
            seg = np.array([p[corner] + [side * 0.02, 0.04], p[corner] + [side * 0.07, 0.2]])
            paint.line(proj(seg, 0.2), _shade(skin, 1.0 - 0.4 * a[15]), proj.px(0.025))
    chin = np.array([p[58] + [-0.03, 0.09], p[57] + [0, 0.11 - 0.02 * a[17]],
                     p[56] + [0.03, 0.09]])
    paint.line(proj(chin, 0.3), _shade(skin, 0.92 - 0.3 * a[17]), proj.px(0.035))


def _draw_eyes(paint: _Painter, proj: _Projector, p: np.ndarray, p0: np.ndarray, ident: dict,
               z: np.ndarray, a: dict) -> None:
    """Sclera, iris clipped by the lids, lid lines, crease, crow's feet (AU6)."""
    skin, hair = ident["skin"], ident["hair"]
    for eye, outer_i in ((np.arange(36, 42), 36), (np.arange(42, 48), 45)):
        pts = proj(p[eye], z[eye])
        paint.poly(pts, (225, 222, 215))
        p0eye = p0[eye]
        width = np.linalg.norm(p0eye[3] - p0eye[0])
        centre = (p[eye[0]] + p[eye[3]]) / 2 + ident["gaze"]
        c = proj([centre], z[eye].mean())[0]
        r_iris = 0.3 * width * proj.unit
        iris = ident["iris"]

        def draw(sub, origin, c=c, r=r_iris, iris=iris):
            """Iris, pupil and catch light (clipped to the eye by the caller)."""
            sub.ellipse(c - origin, (r, r), 0, iris)
            sub.ellipse(c - origin, (0.45 * r, 0.45 * r), 0, (15, 12, 10))
            sub.ellipse(c - origin + [0.3 * r, -0.35 * r], (0.18 * r, 0.18 * r), 0,
                        (240, 240, 240))

        paint.clipped(pts, draw)
        paint.line(pts[[0, 1, 2, 3]], _shade(hair, 0.4), proj.px(0.04))
        paint.line(pts[[3, 4, 5, 0]], _shade(skin, 0.6), proj.px(0.015))
        crease = p[eye[[0, 1, 2, 3]]] + [[0, -0.035], [0, -0.06], [0, -0.06], [0, -0.035]]
        crease[:, 1] -= 0.02 * a[5]
        paint.line(proj(crease, z[eye[[0, 1, 2, 3]]]), _shade(skin, 0.75 + 0.1 * a[7]),
                   proj.px(0.02))
        if a[6] > 0.1:
            side = -1 if outer_i == 36 else 1
            col = _shade(skin, 1.0 - 0.4 * a[6])
            o = p[outer_i]
            for k, dy in enumerate((-0.05, 0.0, 0.05)):
                seg = np.array([o + [side * 0.04, dy * 0.5], o + [side * 0.13, dy * 1.6]])
                paint.line(proj(seg, 0.0), col, proj.px(0.02))
        under = p[eye[[3, 4, 5, 0]]] + [0, 0.07]
        paint.line(proj(under, z[eye[[3, 4, 5, 0]]]),
                   _shade(skin, 0.93 - 0.25 * max(a[6], a[7])), proj.px(0.025))


def _draw_brows(paint: _Painter, proj: _Projector, p: np.ndarray, ident: dict,
                z: np.ndarray) -> None:
    """Brows: tapered polygons along the brow landmarks."""
    skin, hair = ident["skin"], ident["hair"]
    brow_col = _shade(_mix(hair, skin, 0.2), 0.9)
    for brow in (np.arange(17, 22), np.arange(26, 21, -1)):
        centre_line = p[brow]
        th = ident["brow_thick"] * np.array([0.55, 0.8, 0.95, 1.0, 1.0])
        upper = centre_line - np.stack([np.zeros(5), th / 2], axis=1)
        lower = centre_line + np.stack([np.zeros(5), th / 2], axis=1)
        poly = np.concatenate([upper, lower[::-1]])
        paint.poly(proj(poly, np.concatenate([z[brow], z[brow[::-1]]])), brow_col)


def _draw_mouth(paint: _Painter, proj: _Projector, p: np.ndarray, ident: dict, z: np.ndarray,
                a: dict) -> None:
    """Lips, the open mouth with teeth (clipped to the inner lips) or the closed seam; AU24."""
    skin = ident["skin"]
    lip = _mix(skin, (175, 60, 70), ident["lip"])
    outer = proj(p[48:60], z[48:60])
    paint.poly(outer, lip)
    inner_pts = p[[60, 61, 62, 63, 64, 65, 66, 67]]
    opening = float(np.mean(p[[67, 66, 65], 1] - p[[61, 62, 63], 1]))
    inner = proj(inner_pts, z[[60, 61, 62, 63, 64, 65, 66, 67]])
    if opening > 0.015:
        def draw_mouth(sub, origin, p=p, z=z):
            """Dark mouth inside and teeth (clipped to the inner lips by the caller)."""
            sub.poly(inner - origin, (55, 25, 30))
            teeth_h = min(0.07, opening * 0.6)
            upper = p[[60, 61, 62, 63, 64]]
            teeth = np.concatenate([upper + [0, -0.02], (upper + [0, teeth_h])[::-1]])
            sub.poly(proj(teeth, 0.3) - origin, (235, 232, 220))
            if opening > 0.12:
                lower = p[[64, 65, 66, 67, 60]]
                teeth = np.concatenate([lower + [0, 0.02], (lower + [0, -0.04])[::-1]])
                sub.poly(proj(teeth, 0.3) - origin, (215, 212, 200))
        paint.clipped(inner, draw_mouth)
        paint.line(inner, _shade(lip, 0.6), proj.px(0.015), closed=True)
    else:
        seam = proj(p[[48, 60, 61, 62, 63, 64, 54]], z[[48, 60, 61, 62, 63, 64, 54]])
        paint.line(seam, _shade(lip, 0.45), proj.px(0.03))
    if a[24] > 0.1:
        seg = p[[49, 50, 51, 52, 53]] + [0, -0.05]
        paint.line(proj(seg, 0.3), _shade(skin, 1.0 - 0.3 * a[24]), proj.px(0.02))


def _proj_angle(proj: _Projector) -> float:
    """The roll angle in degrees of a projector (for ellipses)."""
    return math.degrees(math.atan2(proj.rot[1, 0], proj.rot[0, 0]))


def _draw_occluder(paint: _Painter, proj: _Projector, p: np.ndarray, scene: dict, canvas: int,
                   skin) -> None:
    """Glasses, sunglasses, a hand or a bar in front of the face."""
    kind, o = scene["occluder"], scene["occ"]
    if kind in ("glasses", "sunglasses"):
        frame_col = np.array((20, 20, 20)) + o[0] * np.array((120, 80, 60))
        rims = []
        for eye in (np.arange(36, 42), np.arange(42, 48)):
            c = p[eye].mean(axis=0)
            rim = _arc(c[0], c[1] + 0.02, 0.25 + 0.05 * o[1], 0.17 + 0.04 * o[2], 0,
                       2 * math.pi, 20)
            rims.append(rim)
            pts = proj(rim, 0.3)
            if kind == "sunglasses":
                paint.poly(pts, (30 + 30 * o[3],) * 3)
            paint.line(pts, frame_col, proj.px(0.035 + 0.02 * o[4]), closed=True)
        bridge = np.array([rims[0][0], [0, rims[0][0, 1] - 0.04], rims[1][10]])
        paint.line(proj(bridge, 0.35), frame_col, proj.px(0.035))
        for rim, side in ((rims[0], -1), (rims[1], 1)):
            end = rim[10] if side == -1 else rim[0]
            arm = np.array([end, [side * 1.05, end[1] + 0.02]])
            paint.line(proj(arm, 0.0), frame_col, proj.px(0.03))
    elif kind in ("hand", "bar"):
        import cv2

        centre = (canvas * (0.2 + 0.6 * o[0]), canvas * (0.55 + 0.4 * o[1]))
        box = ((centre[0], centre[1]), (canvas * (0.25 + 0.3 * o[2]), canvas * (0.12 + 0.2 * o[3])),
               float(o[4] * 180))
        pts = cv2.boxPoints(box)
        colour = _shade(skin, 0.9 + 0.2 * o[5]) if kind == "hand" else tuple(o[5:8] * 230 + 10)
        paint.poly(pts, colour)
        if kind == "hand":
            a, b = pts[0], pts[1]
            for k in (0.25, 0.5, 0.75):
                start = a + (b - a) * k
                paint.line(np.array([start, start + (pts[3] - pts[0]) * 0.6]),
                           _shade(colour, 0.75), max(1, canvas // 100))


def _finish(img: np.ndarray, scene: dict, size: int, rng_noise: np.random.Generator | None):
    """Output-size lighting gradient, contrast, blur and noise → uint8."""
    import cv2

    out = img.astype(np.float32)
    if scene["light"] > 0:
        ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
        gx = math.cos(scene["light_dir"]) * ramp[None, :]
        gy = math.sin(scene["light_dir"]) * ramp[:, None]
        out *= (1.0 + scene["light"] * (gx + gy) / 1.4)[..., None] if out.ndim == 3 else 1.0
    mean = float(out.mean())
    out = (out - mean) * scene["contrast"] + mean + scene["brightness"]
    if scene["blur"] > 0.05:
        out = cv2.GaussianBlur(out, (0, 0), scene["blur"] * size / 48.0)
        out = out.reshape(img.shape)
    if scene["noise"] > 0 and rng_noise is not None:
        out += rng_noise.normal(0.0, scene["noise"], out.shape).astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8).reshape(img.shape)


def _supersample(size: int) -> int:
    """Supersampling factor for an output size."""
    return 3 if size <= 64 else 2


def _render(params: dict, size: int, channels: int, rng_noise=None):
    """Render one face from sampled params → (uint8 size×size×channels, float32 68×2)."""
    import cv2

    ss = _supersample(size)
    canvas = size * ss
    ident, scene = params["identity"], params["scene"]
    p0 = _identity_landmarks(ident)
    p = _apply_aus(p0, np.asarray(params["aus"], dtype=np.float64) / 5.0)
    z = _depth()
    min_px = max(1, round(0.7 * ss))  # lines stay ≥ ~0.7 output pixels thick
    proj = _Projector(p0, params["pose"], canvas, min_px)
    # Keep every landmark inside the image: zoom out if the face is too big (a strong jaw
    # drop at a big scale), then undo as much of the pose shift as needed.
    pts = proj(p, z)
    margin = 0.02 * canvas
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    extent = float((hi - lo).max())
    if extent > canvas - 2 * margin:
        pose = dict(params["pose"])
        pose["scale"] *= (canvas - 2 * margin) / extent
        proj = _Projector(p0, pose, canvas, min_px)
        pts = proj(p, z)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
    proj.offset = (proj.offset + np.maximum(0.0, margin - lo)
                   - np.maximum(0.0, hi - (canvas - margin)))
    img = _background(scene, canvas, channels)
    paint = _Painter(img, cv2.LINE_AA if size >= 80 else cv2.LINE_8)

    def blur_base():
        """Soften the skin shading drawn so far (two box blurs ≈ a Gaussian)."""
        k = max(3, int(0.14 * proj.unit) | 1)
        blurred = cv2.blur(cv2.blur(paint.canvas, (k, k)), (k, k))
        paint.canvas[...] = blurred.reshape(paint.canvas.shape)

    _draw_face(paint, proj, p, p0, ident, params["aus"] / 5.0, scene, z, blur_base)
    if scene["occluder"] is not None:
        _draw_occluder(paint, proj, p, scene, canvas, ident["skin"])
    small = cv2.resize(paint.canvas, (size, size), interpolation=cv2.INTER_AREA)
    small = small.reshape(size, size, channels)
    image = _finish(small, scene, size, rng_noise)
    landmarks = (proj(p, z) + 0.5) / ss - 0.5
    return image, landmarks.astype(np.float32)


# =============================================================================================
# Public API
# =============================================================================================

def _check_size_channels(size, channels) -> None:
    """Validate size and channels, echoing bad values."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size must be an integer ≥ 16 (pixels), got {size!r}")
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")


def _au_vector(aus) -> np.ndarray:
    """AUs given as {AU: intensity} or an array over the 12 BP4D AUs → vector over ALL_AUS."""
    v = np.zeros(len(ALL_AUS))
    if aus is None:
        return v
    if isinstance(aus, dict):
        items = aus.items()
    else:
        arr = np.asarray(aus, dtype=np.float64).reshape(-1)
        if arr.shape[0] != len(BP4D_AUS):
            raise ValueError(f"aus as an array must have {len(BP4D_AUS)} values (BP4D AUs "
                             f"{BP4D_AUS}), got {arr.shape[0]}")
        items = zip(BP4D_AUS, arr)
    for au, value in items:
        key = au
        if isinstance(au, str):
            key = au.upper().removeprefix("AU")
        try:
            key = int(key)
        except (TypeError, ValueError):
            key = None
        if key not in _AU_INDEX:
            raise ValueError(f"unknown action unit {au!r}; the renderer knows AUs {ALL_AUS}")
        value = float(value)
        if not (0.0 <= value <= 5.0):
            raise ValueError(f"AU{key} intensity must lie in 0..5 (FACS), got {value!r}")
        v[_AU_INDEX[key]] = value
    return v


def _check_pose(pose) -> dict:
    """A full pose dict from None or a partial dict, with clear errors."""
    full = {"roll": 0.0, "yaw": 0.0, "scale": 1.0, "shift_x": 0.0, "shift_y": 0.0}
    if pose is None:
        return full
    if not isinstance(pose, dict):
        raise ValueError(f"pose must be None or a dict with keys {POSE_KEYS}, got {pose!r}")
    for key, value in pose.items():
        if key not in full:
            raise ValueError(f"unknown pose key {key!r}; allowed: {POSE_KEYS}")
        full[key] = float(value)
    if not 0.3 <= full["scale"] <= 3.0:
        raise ValueError(f"pose scale must lie in 0.3..3, got {full['scale']!r}")
    if abs(full["yaw"]) > 45:
        raise ValueError(f"pose yaw must lie in -45..45 degrees, got {full['yaw']!r}")
    return full


def render_face(aus=None, expression: str | None = None, identity_seed: int = 0, size: int = 48,
                channels: int = 1, pose: dict | None = None, intensity: float = 1.0,
                background: str = "plain", lighting: float = 0.0, blur: float = 0.0,
                noise: float = 0.0, occluder: str | None = None):
    """Render one face from action units (for the AU explorer and for figures).

    Args:
        aus: {AU number: FACS intensity 0-5} (any AU of `ALL_AUS`; keys may be "AU12"), or an
            array over the 12 BP4D AUs; added on top of `expression`'s AUs (overriding them).
        expression: optional expression name (`EXPRESSIONS`); its `EXPRESSION_AUS` are scaled
            by `intensity`.
        identity_seed: which identity (face shape, skin, hair, background colour).
        size: output width = height in pixels (≥ 16).
        channels: 1 (grey) or 3 (RGB).
        pose: optional {"roll": degrees, "yaw": degrees, "scale": 1.0, "shift_x": fraction,
            "shift_y": fraction}; default frontal and centred.
        intensity: expression intensity in [0, 1].
        background: "plain", "gradient" or "texture".
        lighting: strength of a left-to-right lighting gradient (0 = even, ~0.5 strong).
        blur: Gaussian blur sigma in pixels of a 48-px image (scaled with size).
        noise: Gaussian noise sigma in grey levels.
        occluder: None, "glasses", "sunglasses", "hand" or "bar".

    Returns:
        (image uint8 size×size×channels, landmarks float32 68×2 (x, y) in pixels). The same
        arguments always give the same bytes.
    """
    _check_size_channels(size, channels)
    if expression is not None and expression not in EXPRESSIONS:
        raise ValueError(f"unknown expression {expression!r}; allowed: {EXPRESSIONS}")
    if not 0.0 <= float(intensity) <= 1.0:
        raise ValueError(f"intensity must lie in 0..1, got {intensity!r}")
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; allowed: {BACKGROUNDS}")
    if occluder is not None and occluder not in OCCLUDERS:
        raise ValueError(f"unknown occluder {occluder!r}; allowed: None, {OCCLUDERS}")
    for name, value, hi in (("lighting", lighting, 1.0), ("blur", blur, 5.0),
                            ("noise", noise, 100)):
        if not 0.0 <= float(value) <= hi:
            raise ValueError(f"{name} must lie in 0..{hi}, got {value!r}")
    v = np.zeros(len(ALL_AUS))
    if expression is not None:
        for au, typical in EXPRESSION_AUS[expression].items():
            v[_AU_INDEX[au]] = typical * float(intensity)
    given = _au_vector(aus)
    if aus is not None:
        keys = (list(aus.keys()) if isinstance(aus, dict) else list(BP4D_AUS))
        for key in keys:
            au = int(str(key).upper().removeprefix("AU"))
            v[_AU_INDEX[au]] = given[_AU_INDEX[au]]
    rng = np.random.default_rng([int(identity_seed), 1])
    ident = _sample_identity(rng)
    scene = _sample_scene(rng)
    scene.update(background=background, light=float(lighting), light_dir=0.0, contrast=1.0,
                 brightness=0.0, blur=float(blur), noise=float(noise), occluder=occluder)
    params = {"identity": ident, "aus": v, "pose": _check_pose(pose), "scene": scene}
    noise_rng = np.random.default_rng([int(identity_seed), 2]) if noise > 0 else None
    return _render(params, size, channels, noise_rng)


def crop_box_from_detection(x: float, y: float, w: float, h: float) -> tuple:
    """The square crop that frames a detected face like the built-in set frames its faces.

    Args:
        x, y, w, h: a face detector's box (dlib's frontal detector: left, top, width, height).

    Returns:
        (x0, y0, side) of the square crop in the same pixel units (it may extend past the
        photo's border: pad before cropping).
    """
    if not (w > 0 and h > 0):
        raise ValueError(f"the detection box needs a positive width and height, got w={w!r}, "
                         f"h={h!r}")
    side = DLIB_BOX_SCALE * w
    cx, cy = x + w / 2, y + h / 2 + DLIB_BOX_SHIFT * w
    return cx - side / 2, cy - side / 2, side


def _labels(n: int, seed: int, class_balance: str) -> np.ndarray:
    """Expression labels: exact quotas per class (uniform or FER2013 shares), shuffled by seed."""
    if class_balance == "uniform":
        share = np.ones(len(EXPRESSIONS))
    else:
        share = np.array(FER2013_COUNTS, dtype=float)
    share = share / share.sum()
    counts = np.floor(share * n).astype(int)
    remainder = share * n - counts
    for k in np.argsort(-remainder, kind="stable")[: n - counts.sum()]:
        counts[k] += 1
    labels = np.repeat(np.arange(len(EXPRESSIONS)), counts)
    return np.random.default_rng([int(seed), 0]).permutation(labels)


def _pool_context():
    """A multiprocessing context whose workers start fresh: forkserver, else spawn.

    Not fork: a forked copy of a process that has loaded TensorFlow (or any library with
    running threads) can deadlock. Fresh workers import only this module (NumPy, OpenCV); a
    script that renders must keep its own code under `if __name__ == "__main__":`, as Python's
    multiprocessing asks (notebooks need nothing).
    """
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _worker_init() -> None:
    """Worker process set-up: OpenCV without its own thread pool (the pool is the parallelism)."""
    import cv2

    cv2.setNumThreads(0)


def _render_chunk(args):
    """Render faces start..start+len(labels) of a data set (a worker's unit of work)."""
    seed, start, labels, size, channels = args
    n = len(labels)
    images = np.empty((n, size, size, channels), np.uint8)
    aus = np.empty((n, len(BP4D_AUS)), np.float32)
    landmarks = np.empty((n, 68, 2), np.float32)
    intensity = np.empty(n, np.float32)
    for j, label in enumerate(labels):
        rng = np.random.default_rng([int(seed), int(start + j) + 1, 7])
        params = sample_face_params(rng, int(label))
        images[j], landmarks[j] = _render(params, size, channels, rng)
        aus[j] = params["aus"][_BP4D_INDEX]
        intensity[j] = params["intensity"]
    return images, aus, landmarks, intensity


def cache_path(n: int, seed: int = 0, size: int = 48, channels: int = 1,
               class_balance: str = "uniform", data_dir=None) -> Path:
    """Where make_dataset caches a set with these arguments (data_dir/synthetic/...npz)."""
    if data_dir is None:
        from .config import get_settings

        data_dir = get_settings().data_dir
    name = f"synth_v{SYNTH_VERSION}_n{n}_seed{seed}_{size}px_c{channels}_{class_balance}.npz"
    return Path(data_dir) / "synthetic" / name


def _read_cache(path: Path, n: int, size: int, channels: int, source: str):
    """The cached FaceSet at `path` when it matches (n, size, channels), else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            fs = FaceSet(images=z["images"], labels=z["labels"], aus=z["aus"],
                         landmarks=z["landmarks"], intensity=z["intensity"], source=source)
        if len(fs) == n and fs.image_shape == (size, size, channels):
            return fs
    except Exception as err:  # a damaged cache is rendered again
        warnings.warn(f"ignoring unreadable synthetic cache {path}: {err}", stacklevel=3)
    return None


def _write_cache(path: Path, fs: FaceSet) -> None:
    """Save `fs` at `path` (atomically); a folder that cannot be written only warns."""
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, images=fs.images, labels=fs.labels, aus=fs.aus,
                 landmarks=fs.landmarks, intensity=fs.intensity)
        os.replace(tmp, path)
    except OSError as err:  # the cache only saves time: a read-only data folder is fine
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        warnings.warn(f"cannot write the synthetic cache {path} ({err}); the faces are "
                      f"rendered again next time", stacklevel=3)


def _render_jobs(jobs: list, n: int, size: int, channels: int, workers: int, progress: bool):
    """Render every job (in a pool of fresh worker processes when workers > 1), with a bar."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"rendering {n} synthetic faces", unit="face")
    results = []
    try:
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                for k in range(0, len(job[2]), 50):  # small steps so the bar moves smoothly
                    sub = (job[0], job[1] + k, job[2][k:k + 50], job[3], job[4])
                    results.append(_render_chunk(sub))
                    if bar is not None:
                        bar.update(len(sub[2]))
        else:
            with _pool_context().Pool(workers, initializer=_worker_init) as pool:
                for res in pool.imap(_render_chunk, jobs):
                    results.append(res)
                    if bar is not None:
                        bar.update(len(res[0]))
    finally:
        if bar is not None:
            bar.close()
    if results:
        return tuple(np.concatenate(parts) for parts in zip(*results))
    return (np.zeros((0, size, size, channels), np.uint8),
            np.zeros((0, len(BP4D_AUS)), np.float32), np.zeros((0, 68, 2), np.float32),
            np.zeros(0, np.float32))


def make_dataset(n: int, seed: int = 0, size: int = 48, channels: int = 1, cache: bool = True,
                 data_dir=None, progress: bool = True, class_balance: str = "uniform",
                 workers: int | None = None) -> FaceSet:
    """Render (or load from the cache) the built-in FACS face set.

    Each face has a random identity, expression (prototypical AUs at a random intensity, some
    dropped, extra AUs sprinkled in), pose, lighting, blur, noise, background and sometimes an
    occluder; the crop convention is in the module docstring. About 2.4 ms of CPU per 48-px
    face: a FER2013-sized set (35,887 faces) takes about 45 s on 2 idle cores.

    Args:
        n: number of faces (0 allowed).
        seed: the set's seed; face i uses its own generator seeded by (seed, i), so the bytes
            are the same for the same arguments whatever the number of worker processes.
        size: width = height in pixels (≥ 16); 48 like FER2013.
        channels: 1 (grey, like FER2013) or 3 (RGB).
        cache: reuse / write `cache_path(...)` (an .npz under `data_dir`/synthetic/).
        data_dir: folder of the cache; default `get_settings().data_dir`.
        progress: show a tqdm progress bar.
        class_balance: "uniform" (equal classes) or "fer2013" (FER2013's class shares).
        workers: processes; default: one below 2,000 faces, else one per CPU core (at most 4).

    Returns:
        A FaceSet with images, labels (FER2013 order), aus (N×12 BP4D intensities 0-5),
        landmarks (N×68×2 output pixels), intensity (N in [0, 1]) and
        source "synthetic (seed=...)".
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer (number of faces), got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    _check_size_channels(size, channels)
    if class_balance not in CLASS_BALANCES:
        raise ValueError(f"unknown class_balance {class_balance!r}; allowed: {CLASS_BALANCES}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ValueError(f"workers must be None or a positive integer, got {workers!r}")
    n, seed, size = int(n), int(seed), int(size)
    source = f"synthetic (seed={seed})"
    path = cache_path(n, seed, size, channels, class_balance, data_dir) if cache else None
    cached = _read_cache(path, n, size, channels, source) if path is not None else None
    if cached is not None:
        return cached
    labels = _labels(n, seed, class_balance)
    jobs = [(seed, s, labels[s:s + _CHUNK], size, channels) for s in range(0, n, _CHUNK)]
    if workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        workers = 1 if n < _SERIAL_BELOW else max(1, min(4, cores or 1))
    images, aus, landmarks, intensity = _render_jobs(jobs, n, size, channels, workers, progress)
    fs = FaceSet(images=images, labels=labels, aus=aus, landmarks=landmarks, intensity=intensity,
                 source=source)
    if path is not None:
        _write_cache(path, fs)
    return fs
