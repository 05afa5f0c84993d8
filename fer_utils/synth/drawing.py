"""Drawing one face with OpenCV: skin, hair, eyes, brows, nose, mouth, wrinkles, occluders."""

from __future__ import annotations

import functools
import math

import numpy as np

from .landmarks import (_BROWS, _JAW, ALL_AUS, _apply_aus, _depth, _identity_landmarks,
                        _Projector)

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

