"""Faces over time: one id per person (box overlap across frames) and smoothed probabilities.

- `FaceTracker` gives each detection of a frame the id of the face it overlaps most in the
  previous frames (intersection over union, IoU), solved for all faces at once with the
  Hungarian algorithm (`scipy.optimize.linear_sum_assignment`), so that two people who stand
  close never swap ids because of a greedy choice. A face unseen for longer than `max_gap`
  seconds is forgotten; when it comes back it gets a new id. New faces of a frame are
  numbered from left to right.
- `ProbabilitySmoother` averages each face's class probabilities over time with an
  exponential moving average whose time constant is given in seconds, so that it means the
  same at 5 or 30 predicted frames per second. It only looks back, so it also works live.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["iou_matrix", "FaceTracker", "ProbabilitySmoother", "smooth_table",
           "DEFAULT_MIN_IOU", "DEFAULT_MAX_GAP", "DEFAULT_SMOOTH"]

# Two boxes of consecutive predicted frames belong to one face when they overlap this much.
DEFAULT_MIN_IOU = 0.3
# A face unseen this many seconds is forgotten (a later face there gets a new id).
DEFAULT_MAX_GAP = 1.0
# Time constant of the probability smoothing, seconds: shorter than an expression change.
DEFAULT_SMOOTH = 0.3


def iou_matrix(boxes_a, boxes_b) -> np.ndarray:
    """Intersection over union of every box of `boxes_a` with every box of `boxes_b`.

    Args:
        boxes_a: (x, y, w, h[, ...]) boxes, N of them.
        boxes_b: M boxes.

    Returns:
        float N×M array in [0, 1].
    """
    a = np.asarray([b[:4] for b in boxes_a], dtype=np.float64).reshape(-1, 4)
    b = np.asarray([b[:4] for b in boxes_b], dtype=np.float64).reshape(-1, 4)
    ax0, ay0, ax1, ay1 = a[:, 0:1], a[:, 1:2], a[:, 0:1] + a[:, 2:3], a[:, 1:2] + a[:, 3:4]
    bx0, by0, bx1, by1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    inter = (np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None)
             * np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None))
    union = a[:, 2:3] * a[:, 3:4] + b[:, 2] * b[:, 3] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


class FaceTracker:
    """Give each face box of a frame the id of the same person in earlier frames."""

    def __init__(self, min_iou: float = DEFAULT_MIN_IOU, max_gap: float = DEFAULT_MAX_GAP):
        """Match boxes overlapping by at least `min_iou`; forget faces unseen `max_gap` s."""
        if not 0.0 < min_iou <= 1.0:
            raise ValueError(f"min_iou must lie in (0, 1], got {min_iou!r}")
        if not max_gap >= 0:
            raise ValueError(f"max_gap must be zero or more seconds, got {max_gap!r}")
        self.min_iou = float(min_iou)
        self.max_gap = float(max_gap)
        self.tracks: dict[int, tuple] = {}  # id → (last box, last time)
        self.next_id = 1
        self.forgotten: list[int] = []  # ids dropped by the last update

    def update(self, boxes, time: float) -> list[int]:
        """The id of each box (in the order given) of the frame at `time` seconds."""
        self.forgotten = [i for i, (_, seen) in self.tracks.items()
                          if time - seen > self.max_gap]
        for face_id in self.forgotten:
            del self.tracks[face_id]
        ids: list[int | None] = [None] * len(boxes)
        known = list(self.tracks)
        if known and len(boxes):
            from scipy.optimize import linear_sum_assignment

            overlap = iou_matrix(boxes, [self.tracks[i][0] for i in known])
            rows, cols = linear_sum_assignment(overlap, maximize=True)
            for row, col in zip(rows, cols):
                if overlap[row, col] >= self.min_iou:
                    ids[row] = known[col]
        for k in sorted(range(len(boxes)), key=lambda k: boxes[k][0]):  # new ids left to right
            if ids[k] is None:
                ids[k] = self.next_id
                self.next_id += 1
            self.tracks[ids[k]] = (tuple(boxes[k][:4]), float(time))
        return ids


class ProbabilitySmoother:
    """Exponential moving average of each face id's probabilities, time constant in seconds."""

    def __init__(self, seconds: float = DEFAULT_SMOOTH):
        """`seconds` = 0 turns smoothing off (each frame's own probabilities)."""
        if not seconds >= 0:
            raise ValueError(f"smoothing must be zero or more seconds, got {seconds!r}")
        self.seconds = float(seconds)
        self.state: dict = {}  # id → (smoothed probabilities, time)

    def update(self, face_id, probabilities, time: float) -> np.ndarray:
        """Smoothed probabilities of `face_id` after seeing `probabilities` at `time` s."""
        probs = np.asarray(probabilities, dtype=np.float64)
        previous = self.state.get(face_id)
        if previous is not None and self.seconds > 0:
            last, seen = previous
            weight = 1.0 - math.exp(-max(0.0, time - seen) / self.seconds)
            probs = last + weight * (probs - last)
        self.state[face_id] = (probs, float(time))
        return probs

    def forget(self, face_ids) -> None:
        """Drop the state of faces that are gone."""
        for face_id in face_ids:
            self.state.pop(face_id, None)


def smooth_table(table, class_names, seconds: float):
    """A copy of a `predict_video` table with its probabilities smoothed over `seconds`.

    Smooth a table predicted with `smooth=0` to see what other settings would give without
    predicting again. Rows without a face stay empty; labels follow the smoothed values.
    """
    smoother = ProbabilitySmoother(seconds)
    table = table.copy()
    names = list(class_names)
    faces = table["face_id"].notna()
    values = table.loc[faces, names].to_numpy(np.float64)
    ids, times = table.loc[faces, "face_id"].to_numpy(), table.loc[faces, "time"].to_numpy()
    smoothed = np.stack([smoother.update(i, p, t) for i, p, t in zip(ids, values, times)]) \
        if len(values) else values
    table.loc[faces, names] = smoothed
    table.loc[faces, "label"] = [names[k] for k in smoothed.argmax(axis=1)] if len(values) else []
    return table
