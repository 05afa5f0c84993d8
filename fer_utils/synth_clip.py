"""Rendered video clips with exact ground truth: built-in faces that move and change expression.

Each person of a clip is a built-in face (`fer_utils.synth.render_face`) with a script of
expressions, e.g. neutral 4 s → happy 5 s → surprise 5 s. Between two steps the action units
blend linearly over `transition` seconds; the true label switches at the blend's midpoint.
The head moves all the time (roll, yaw, a slow sway and bob), and each face is rendered with
its whole head and shoulders at a realistic size (dlib's box about 120 px) and pasted on a
room-like background by its own silhouette, so that `predict` has to find it like a face in a
home video. The ground truth table gives, per frame and person, the label, the blend and the
face box (the box of the 68 rendered landmarks).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from .faceset import EXPRESSIONS
from .synth import EXPRESSION_AUS, render_face

__all__ = ["Person", "DEFAULT_PEOPLE", "expression_at", "clip_frames", "render_clip",
           "truth_columns", "match_truth", "frame_accuracy"]

# The head and shoulders fill this share of a person's render (pose scale of render_face).
HEAD_SCALE = 0.5


@dataclasses.dataclass(frozen=True)
class Person:
    """One face of a clip: who (identity), what it shows when (script), where it stands."""

    identity_seed: int
    script: tuple  # ((expression, seconds), ...), played in order, the last step held
    x: float = 0.5  # centre of the head, as a fraction of the frame width
    motion_seed: int = 0  # phases of the head motion

    def __post_init__(self):
        """Check the script: known expressions, positive durations."""
        if not self.script:
            raise ValueError("a Person needs a script of (expression, seconds) steps")
        for step in self.script:
            if len(step) != 2 or step[0] not in EXPRESSIONS or not float(step[1]) > 0:
                raise ValueError(f"a script step is (expression, seconds > 0) with an expression "
                                 f"from {EXPRESSIONS}, got {step!r}")
        if not 0.0 <= self.x <= 1.0:
            raise ValueError(f"x is a fraction of the frame width (0-1), got {self.x!r}")

    @property
    def seconds(self) -> float:
        """The length of the script."""
        return float(sum(seconds for _, seconds in self.script))


# The notebook's and the benchmark's clip: two people side by side, 20 s.
DEFAULT_PEOPLE = (
    Person(identity_seed=10, x=0.27, motion_seed=1,
           script=(("neutral", 4), ("happy", 5), ("surprise", 5), ("neutral", 6))),
    Person(identity_seed=20, x=0.73, motion_seed=2,
           script=(("neutral", 3), ("surprise", 5), ("happy", 4), ("sad", 4), ("neutral", 4))),
)


def expression_at(script, t: float, transition: float = 0.5) -> tuple[dict, str]:
    """The expression mix and the true label at time `t` of a script.

    Args:
        script: ((expression, seconds), ...).
        t: seconds from the start.
        transition: each step blends into the next over this many seconds, centred on the
            step's end; the label switches at the centre.

    Returns:
        ({expression: weight} summing to 1, label).
    """
    ends = np.cumsum([float(seconds) for _, seconds in script])
    step = int(np.searchsorted(ends, t, side="right"))
    if step >= len(script):
        return {script[-1][0]: 1.0}, script[-1][0]
    name = script[step][0]
    half = transition / 2.0
    if step + 1 < len(script) and t > ends[step] - half:  # blending into the next step
        weight = 0.5 * (t - (ends[step] - half)) / half
        return _mix(name, script[step + 1][0], weight), name
    if step > 0 and t < ends[step - 1] + half:  # finishing the blend from the previous step
        weight = 0.5 + 0.5 * (t - ends[step - 1]) / half
        return _mix(script[step - 1][0], name, weight), name
    return {name: 1.0}, name


def _mix(first: str, second: str, weight: float) -> dict:
    """{first: 1 - weight, second: weight}, merged when both are the same expression."""
    mix = {first: 1.0 - weight}
    mix[second] = mix.get(second, 0.0) + weight
    return mix


def _aus(mix: dict) -> dict:
    """The action units {AU: FACS intensity} of an expression mix."""
    aus = {}
    for name, weight in mix.items():
        for au, typical in EXPRESSION_AUS[name].items():
            aus[au] = aus.get(au, 0.0) + weight * typical
    return {au: min(5.0, value) for au, value in aus.items()}


def _motion(person: Person, t: float) -> tuple[dict, float, float]:
    """Head pose and sway (fractions of the frame) at time t: slow, smooth, never repeating."""
    phases = np.random.default_rng([person.motion_seed, 3]).uniform(0, 2 * math.pi, 5)
    pose = {"scale": HEAD_SCALE,
            "roll": 7.0 * math.sin(2 * math.pi * t / 5.3 + phases[0]),
            "yaw": 12.0 * math.sin(2 * math.pi * t / 7.1 + phases[1])}
    sway = 0.04 * math.sin(2 * math.pi * t / 9.7 + phases[2])
    bob = 0.02 * (1 + math.sin(2 * math.pi * t / 3.1 + phases[3]))
    return pose, sway, bob


def _background(height: int, width: int, seed: int) -> np.ndarray:
    """A plain room: a lit wall, a window, a picture and a floor (RGB uint8)."""
    import cv2

    rng = np.random.default_rng([seed, 4])
    wall = rng.uniform(150, 215, 3)
    ramp = np.linspace(1.05, 0.8, width)[None, :, None] * np.linspace(1.0, 0.9, height)[:, None,
                                                                                           None]
    image = np.clip(wall * ramp, 0, 255).astype(np.uint8)
    floor = int(0.85 * height)
    image[floor:] = np.clip(wall * 0.55, 0, 255).astype(np.uint8)
    x0 = int(rng.uniform(0.42, 0.5) * width)
    cv2.rectangle(image, (x0, int(0.1 * height)), (x0 + int(0.1 * width), int(0.45 * height)),
                  tuple(int(v) for v in np.clip(wall * 1.15, 0, 255)), cv2.FILLED)
    cv2.rectangle(image, (int(0.86 * width), int(0.15 * height)),
                  (int(0.96 * width), int(0.35 * height)),
                  tuple(int(v) for v in rng.uniform(60, 120, 3)), cv2.FILLED)
    return image


def _silhouette(render: np.ndarray) -> np.ndarray:
    """Float32 alpha H×W of a render on its plain background: 0 outside the person, 1 inside.

    The renderer softens the skin shading with a blur that also bleeds the background colour
    into a thin band around the head; the band is eroded away and the edge feathered.
    """
    import cv2

    height, width = render.shape[:2]
    colour = render[0, 0]
    background = cv2.inRange(render, colour, colour)
    outside = np.zeros((height + 2, width + 2), np.uint8)
    for seed in ((0, 0), (width - 1, 0), (0, height - 1), (width - 1, height - 1)):
        if background[seed[1], seed[0]] and not outside[seed[1] + 1, seed[0] + 1]:
            cv2.floodFill(background, outside, seed, 2, flags=4 | cv2.FLOODFILL_MASK_ONLY)
    inside = (outside[1:-1, 1:-1] == 0).astype(np.uint8)
    band = 2 * max(1, int(round(0.022 * height))) + 1
    inside = cv2.erode(inside, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (band, band)))
    return cv2.GaussianBlur(inside.astype(np.float32), (5, 5), 0)


def _paste(frame: np.ndarray, render: np.ndarray, x0: int, y0: int) -> None:
    """Blend `render` into `frame` at (x0, y0) by its silhouette, clipped to the frame."""
    import cv2

    height, width = frame.shape[:2]
    size = render.shape[0]
    fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(width, x0 + size), min(height, y0 + size)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    alpha = np.ascontiguousarray(_silhouette(render)[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0])
    part = np.ascontiguousarray(render[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0])
    region = np.ascontiguousarray(frame[fy0:fy1, fx0:fx1])
    frame[fy0:fy1, fx0:fx1] = cv2.blendLinear(part, region, alpha, 1.0 - alpha)


def _noise_frames(height: int, width: int, sigma: float, seed: int, count: int = 16):
    """`count` pairs of uint8 (positive, negative) camera-noise fields, reused in turn."""
    rng = np.random.default_rng([seed, 5])
    fields = []
    for _ in range(count):
        noise = np.round(rng.normal(0.0, sigma, (height, width, 3)))
        fields.append((np.clip(noise, 0, 255).astype(np.uint8),
                       np.clip(-noise, 0, 255).astype(np.uint8)))
    return fields


def truth_columns() -> list[str]:
    """The columns of a ground-truth table."""
    return ["frame", "time", "person", "label", "x", "y", "w", "h"]


def clip_frames(people=DEFAULT_PEOPLE, seconds: float | None = None, fps: float = 25.0,
                size=(640, 360), transition: float = 0.5, render_size: int | None = None,
                noise: float = 2.0, seed: int = 0):
    """Yield the frames of a rendered clip one at a time, with their ground truth.

    Args:
        people: `Person`s (default: two people, 20 s).
        seconds: length (default: the longest script).
        fps: frames per second.
        size: (width, height) of the frames.
        transition: seconds over which one expression blends into the next.
        render_size: side of each person's render (head and shoulders; default 0.9 × height,
            which gives dlib boxes of about 0.35 × height).
        noise: camera noise, grey levels (Gaussian sigma).
        seed: background and noise.

    Yields:
        (RGB uint8 frame height×width×3, [truth row per person: frame, time, person, label,
        x, y, w, h]).
    """
    import cv2

    people = tuple(people)
    if not people:
        raise ValueError("a clip needs at least one Person")
    width, height = (int(v) for v in size)
    if width < 64 or height < 64:
        raise ValueError(f"size must be at least 64×64 pixels, got {size!r}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    seconds = max(p.seconds for p in people) if seconds is None else float(seconds)
    render_size = int(render_size or round(0.9 * height))
    background = _background(height, width, seed)
    noise_fields = _noise_frames(height, width, noise, seed) if noise > 0 else None
    for index in range(int(round(seconds * fps))):
        t = index / fps
        frame = background.copy()
        rows = []
        for number, person in enumerate(people, start=1):
            mix, label = expression_at(person.script, t, transition)
            pose, sway, bob = _motion(person, t)
            render, landmarks = render_face(aus=_aus(mix), identity_seed=person.identity_seed,
                                            size=render_size, channels=3, pose=pose)
            x0 = int(round((person.x + sway) * width - render_size / 2))
            y0 = int(round(height - render_size + bob * height))
            _paste(frame, render, x0, y0)
            lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
            rows.append([index, round(t, 4), number, label, round(float(lo[0]) + x0, 1),
                         round(float(lo[1]) + y0, 1), round(float(hi[0] - lo[0]), 1),
                         round(float(hi[1] - lo[1]), 1)])
        if noise_fields:
            positive, negative = noise_fields[index % len(noise_fields)]
            frame = cv2.subtract(cv2.add(frame, positive), negative)
        yield frame, rows


def render_clip(path, people=DEFAULT_PEOPLE, seconds: float | None = None, fps: float = 25.0,
                size=(640, 360), transition: float = 0.5, seed: int = 0, progress: bool = False,
                **frame_options):
    """Write a rendered clip (streamed: one frame in memory) and its ground-truth table.

    Args:
        path: the video to write (.mp4 or .avi; MPEG-4 Part 2 or Motion-JPEG through OpenCV).
        people, seconds, fps, size, transition, seed, **frame_options: see `clip_frames`.
        progress: show a progress bar.

    Returns:
        The ground truth as a pandas DataFrame (`truth_columns()`), also written next to the
        clip as NAME_truth.csv.
    """
    import cv2
    import pandas as pd
    from tqdm.auto import tqdm

    path = Path(path)
    codecs = {".mp4": "mp4v", ".avi": "MJPG"}
    if path.suffix.lower() not in codecs:
        raise ValueError(f"render_clip writes .mp4 or .avi files, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = (int(v) for v in size)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codecs[path.suffix.lower()]),
                             float(fps), (width, height))
    if not writer.isOpened():
        raise ValueError(f"OpenCV cannot write {path}")
    rows = []
    frames = clip_frames(people, seconds, fps, size, transition, seed=seed, **frame_options)
    total = int(round((seconds or max(p.seconds for p in people)) * fps))
    try:
        for frame, truth in tqdm(frames, total=total, unit="frame", disable=not progress,
                                 desc=f"rendering {path.name}"):
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            rows.extend(truth)
    finally:
        writer.release()
    table = pd.DataFrame(rows, columns=truth_columns())
    table.to_csv(path.with_name(f"{path.stem}_truth.csv"), index=False)
    return table


def match_truth(table, truth, min_iou: float = 0.3):
    """Pair each person of each predicted frame with the predicted face on it (box overlap).

    Args:
        table: a `video.predict_video` table.
        truth: the clip's ground truth (`render_clip`).
        min_iou: a face belongs to a person when their boxes overlap this much.

    Returns:
        A DataFrame, one row per predicted frame and person: frame, time, person, label (the
        truth), face_id and predicted (empty when no face was found on the person).
    """
    import pandas as pd

    from .tracking import iou_matrix

    rows = []
    faces = table.dropna(subset=["face_id"])
    by_frame = {frame: group for frame, group in faces.groupby("frame")}
    for frame in sorted(table["frame"].unique()):
        people = truth[truth["frame"] == frame]
        found = by_frame.get(frame)
        overlap = iou_matrix(people[["x", "y", "w", "h"]].to_numpy(),
                             found[["x", "y", "w", "h"]].to_numpy()) if found is not None \
            else np.zeros((len(people), 0))
        for k, person in enumerate(people.itertuples()):
            best = int(np.argmax(overlap[k])) if overlap.shape[1] else -1
            hit = best >= 0 and overlap[k, best] >= min_iou
            rows.append([frame, person.time, person.person, person.label,
                         int(found.iloc[best]["face_id"]) if hit else None,
                         found.iloc[best]["label"] if hit else None])
    return pd.DataFrame(rows, columns=["frame", "time", "person", "label", "face_id",
                                       "predicted"])


def frame_accuracy(matched) -> float:
    """The share of (frame, person) pairs whose predicted label is the true one (a person
    without a detected face counts as wrong)."""
    return float((matched["predicted"] == matched["label"]).mean()) if len(matched) else 0.0
