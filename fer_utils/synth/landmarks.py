"""Face geometry: dlib's 68-landmark template, identity shapes, action units, pose and framing."""

from __future__ import annotations

import functools
import math

import numpy as np

from ..faceset import BP4D_AUS

# Every AU the renderer understands (the 12 BP4D AUs plus those the prototypes need).
ALL_AUS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 16, 17, 20, 23, 24, 25, 26)
_AU_INDEX = {au: i for i, au in enumerate(ALL_AUS)}
_BP4D_INDEX = np.array([_AU_INDEX[au] for au in BP4D_AUS])
FRAME_SCALE = 1.3
# The frame in terms of dlib's frontal detector box (measured on frontal 128-px renders, see
# benchmarks/bench_synth.py --dlib): side = 1.22 × box width, centre 0.1 widths below.
DLIB_BOX_SCALE = 1.22
DLIB_BOX_SHIFT = 0.10
POSE_KEYS = ("roll", "yaw", "scale", "shift_x", "shift_y")

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
