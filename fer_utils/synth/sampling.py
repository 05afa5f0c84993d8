"""Sampling one data-set face: identity, expression AUs, pose and scene, all from one generator."""

from __future__ import annotations

import math

import numpy as np

from ..faceset import EXPRESSIONS
from .drawing import _shade
from .landmarks import _AU_INDEX, ALL_AUS

BACKGROUNDS = ("plain", "gradient", "texture")
OCCLUDERS = ("glasses", "sunglasses", "hand", "bar")

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

