"""One face on demand (the AU explorer, figures): `render_face` and its argument checks."""

from __future__ import annotations

import numpy as np

from ..faceset import BP4D_AUS, EXPRESSIONS
from .drawing import _render
from .landmarks import _AU_INDEX, ALL_AUS, POSE_KEYS
from .sampling import BACKGROUNDS, EXPRESSION_AUS, OCCLUDERS, _sample_identity, _sample_scene


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
