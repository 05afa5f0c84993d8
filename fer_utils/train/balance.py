"""Class balance: class weights for rare classes ("balanced" or their square roots)."""

from __future__ import annotations

import numpy as np

__all__ = ["CLASS_WEIGHTS", "class_weights"]

# class weights: "balanced" n / (K·count), "sqrt" its square root (halfway to no weights)
CLASS_WEIGHTS = ("balanced", "sqrt")


def class_weights(labels, num_classes: int | None = None, kind: str = "balanced") -> dict:
    """"Balanced" class weights n_samples / (n_classes * count) as {class: weight} for `fit`.

    Computed by scikit-learn's `compute_class_weight("balanced")`; a class absent from
    `labels` (possible when `num_classes` is given) gets weight 1.0. kind="sqrt" gives the
    square roots of the balanced weights: rare classes count more, but less than "balanced"
    (FER2013's "disgust" gets ×2.5 instead of ×6.6).
    """
    from sklearn.utils.class_weight import compute_class_weight

    if kind not in CLASS_WEIGHTS:
        raise ValueError(f"class_weights: kind={kind!r} is not supported; allowed: "
                         f"{', '.join(CLASS_WEIGHTS)}")

    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] > 1:
        y = y.argmax(axis=1)
    y = y.reshape(-1)
    if y.size == 0:
        raise ValueError("class_weights: no labels given")
    if not np.all(np.equal(np.mod(y.astype(float), 1), 0)) or y.min() < 0:
        raise ValueError(f"class_weights: labels must be class indices >= 0, got values "
                         f"such as {np.unique(y)[:5].tolist()}")
    y = y.astype(np.int64)
    present = np.unique(y)
    if num_classes is not None and present.max() >= num_classes:
        raise ValueError(f"class_weights: label {present.max()} >= num_classes={num_classes}")
    weights = compute_class_weight("balanced", classes=present, y=y)
    if kind == "sqrt":
        weights = np.sqrt(weights)
    out = {int(c): float(w) for c, w in zip(present, weights)}
    for c in range(int(num_classes or 0)):
        out.setdefault(c, 1.0)
    return dict(sorted(out.items()))
