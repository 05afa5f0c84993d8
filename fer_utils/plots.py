"""Plots for the course: image grids, landmarks, attention overlays, curves, confusion matrices."""

from __future__ import annotations

import math

import numpy as np


def set_style() -> None:
    """Apply the course's matplotlib defaults (readable sizes, no clutter)."""
    import matplotlib

    matplotlib.rcParams.update({
        "figure.figsize": (8, 4.5),
        "figure.dpi": 90,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "image.cmap": "gray",
        # Real pixels: no smoothing, no resampling blur when a 48-px face is drawn bigger.
        "image.interpolation": "nearest",
        "font.size": 10,
    })


def _as_display(image: np.ndarray) -> np.ndarray:
    """Squeeze a one-channel image so imshow draws it grey."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    return image


def show_pixels(ax, image, **kwargs):
    """Draw an image with its real pixel values: no per-image contrast stretch, no smoothing.

    uint8 (and other integer) images map 0..255 to black..white, floats 0..1 (or 0..255 when
    larger); every image pixel becomes a block of screen pixels of its own value
    ("nearest"), so a 48-px face drawn at the course's 90 dpi shows no resampling artefacts.
    """
    image = _as_display(image)
    top = 1.0 if np.issubdtype(image.dtype, np.floating) and image.size and \
        np.nanmax(image) <= 1.0 else 255
    options = dict(cmap="gray", vmin=0, vmax=top, interpolation="nearest",
                   interpolation_stage="rgba")
    options.update(kwargs)
    return ax.imshow(image, **options)


def show_images(images, titles=None, ncols: int = 8, landmarks=None, size: float = 1.6,
                suptitle: str | None = None, axes_off: bool = True):
    """Draw images in a grid, optionally with titles and (x, y) landmarks on top.

    Args:
        images: sequence or array of H×W[×C] images (uint8 or floats in [0, 1]).
        titles: optional one title per image.
        ncols: images per row.
        landmarks: optional sequence of K×2 (x, y) arrays, one per image.
        size: inches per image.
        suptitle: optional title over the grid.
        axes_off: hide the axes.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    images = list(images)
    if not images:
        raise ValueError("show_images needs at least one image")
    ncols = max(1, min(ncols, len(images)))
    nrows = math.ceil(len(images) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3 * bool(titles)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < len(images):
            show_pixels(ax, images[i])
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=8)
            if landmarks is not None and landmarks[i] is not None:
                plot_landmarks(landmarks[i], ax=ax)
        if axes_off or i >= len(images):
            ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def plot_landmarks(landmarks, ax=None, color: str = "lime", size: float = 4, numbers: bool = False):
    """Draw 68 (x, y) landmarks (or any K×2 points) on an axis."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    points = np.asarray(landmarks, dtype=float).reshape(-1, 2)
    ax.scatter(points[:, 0], points[:, 1], s=size, c=color, linewidths=0)
    if numbers:
        for k, (x, y) in enumerate(points):
            ax.annotate(str(k), (x, y), fontsize=5, color=color)
    return ax


def overlay_attention(image, attention, ax=None, alpha: float = 0.5, cmap: str = "jet",
                      centers=None, title: str | None = None):
    """Draw an H×W attention (or heat) map over an image, optionally with (x, y) centres."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    image = _as_display(image)
    h, w = image.shape[:2]
    show_pixels(ax, image)
    ax.imshow(np.asarray(attention, dtype=float), cmap=cmap, alpha=alpha, vmin=0, vmax=1,
              extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    if centers is not None:
        c = np.asarray(centers, dtype=float).reshape(-1, 2)
        ax.scatter(c[:, 0], c[:, 1], s=12, c="white", edgecolors="black", linewidths=0.5)
    if title:
        ax.set_title(title)
    ax.axis("off")
    return ax


def plot_history(history, metrics=("loss", "accuracy"), title: str | None = None):
    """Plot training curves (train and validation) from a Keras History or its `.history` dict.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    logs = getattr(history, "history", history)
    metrics = [m for m in metrics if m in logs]
    if not metrics:
        raise ValueError(f"none of the metrics to plot are in the history; it has {sorted(logs)}")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.2), squeeze=False)
    for ax, name in zip(axes.flat, metrics):
        epochs = np.arange(1, len(logs[name]) + 1)
        ax.plot(epochs, logs[name], "o-", label="train")
        if f"val_{name}" in logs:
            ax.plot(epochs, logs[f"val_{name}"], "s--", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_histories(histories: dict, metric: str = "val_accuracy", ax=None, title: str | None = None):
    """Compare one metric across several runs: {run name: History or dict}."""
    import matplotlib.pyplot as plt

    ax = ax or plt.figure(figsize=(6, 3.5)).gca()
    for name, history in histories.items():
        logs = getattr(history, "history", history)
        if metric not in logs:
            raise ValueError(f"run {name!r} has no {metric!r}; it has {sorted(logs)}")
        ax.plot(np.arange(1, len(logs[metric]) + 1), logs[metric], "o-", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.legend()
    if title:
        ax.set_title(title)
    return ax


def plot_confusion_matrix(cm, class_names, ax=None, normalize: bool = True,
                          title: str | None = None):
    """Draw a confusion matrix (rows: true class, columns: predicted), row-normalised by default."""
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, dtype=float)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    ax = ax or plt.figure(figsize=(4.8, 4.2)).gca()
    ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.grid(False)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(shown.shape[0]):
        for j in range(shown.shape[1]):
            text = f"{shown[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if shown[i, j] > 0.5 * shown.max() else "black")
    if title:
        ax.set_title(title)
    return ax


def plot_bars(values: dict, ax=None, ylabel: str = "", title: str | None = None):
    """Grouped bar chart: {series name: {category: value}} (e.g. per-AU F1 of several models)."""
    import matplotlib.pyplot as plt

    series = list(values)
    categories = list(dict.fromkeys(c for s in series for c in values[s]))
    ax = ax or plt.figure(figsize=(max(6, 0.6 * len(categories) * len(series)), 3.5)).gca()
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(categories))
    for k, name in enumerate(series):
        heights = [values[name].get(c, np.nan) for c in categories]
        ax.bar(x + (k - (len(series) - 1) / 2) * width, heights, width, label=name)
    ax.set_xticks(x, categories, rotation=45 if len(categories) > 8 else 0)
    ax.set_ylabel(ylabel)
    ax.legend()
    if title:
        ax.set_title(title)
    return ax


def show_image_grid(images, row_names, col_names, landmarks=None, size: float = 1.3,
                    suptitle: str | None = None):
    """Draw R×C images as a table with named rows and columns (e.g. pixel ops × poses).

    Args:
        images: R·C images in row-major order (or an R×C×H×W[×C] array).
        row_names: R row labels, written left of each row.
        col_names: C column labels, written above the first row.
        landmarks: optional R·C K×2 (x, y) point arrays drawn on the images.
        size: inches per image.
        suptitle: optional title over the grid.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    rows, cols = len(row_names), len(col_names)
    images = np.asarray(images)
    if images.ndim >= 4 and images.shape[:2] == (rows, cols):  # an R×C×H×W[×C] array
        images = images.reshape((rows * cols,) + images.shape[2:])
    if len(images) != rows * cols:
        raise ValueError(f"show_image_grid: {len(images)} images do not fill {rows} rows × "
                         f"{cols} columns")
    if landmarks is not None and len(landmarks) != rows * cols:
        raise ValueError(f"show_image_grid: {len(landmarks)} landmark sets for "
                         f"{rows * cols} images")
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols + 0.8, size * rows + 0.4),
                             squeeze=False)
    for k, ax in enumerate(axes.flat):
        show_pixels(ax, images[k])
        if landmarks is not None:
            plot_landmarks(landmarks[k], ax=ax, size=2)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        for spine in ax.spines.values():
            spine.set_visible(False)
        r, c = divmod(k, cols)
        if r == 0:
            ax.set_title(str(col_names[c]), fontsize=8)
        if c == 0:
            ax.set_ylabel(str(row_names[r]), fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def plot_learning_rates(schedules: dict, steps: int, ax=None, title: str | None = None):
    """Plot learning-rate schedules over training steps: {name: schedule, callable or float}."""
    import matplotlib.pyplot as plt

    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"plot_learning_rates: steps must be an int >= 1, got {steps!r}")
    ax = ax or plt.figure(figsize=(6.5, 3.5)).gca()
    x = np.arange(steps)
    for name, schedule in schedules.items():
        if callable(schedule):
            values = [float(np.asarray(schedule(int(step)))) for step in x]
        else:
            values = np.full(steps, float(schedule))
        ax.plot(x, values, label=name)
    ax.set_xlabel("training step")
    ax.set_ylabel("learning rate")
    ax.legend()
    if title:
        ax.set_title(title)
    return ax


def plot_batch_sizes(frame, title: str | None = None):
    """Speed and memory against batch size, from `fer_utils.train.measure_batch_sizes`."""
    import matplotlib.pyplot as plt

    sizes = np.asarray(frame.index, dtype=float)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].plot(sizes, frame["images per second"], "o-")
    axes[0].set_ylabel("images per second (measured)")
    memory = frame["activation MB"] + frame["weights + Adam MB"]
    axes[1].plot(sizes, memory, "o-", label="activations + weights (computed)")
    if "peak GPU MB" in frame and np.isfinite(frame["peak GPU MB"]).any():
        axes[1].plot(sizes, frame["peak GPU MB"], "s--", label="peak GPU memory (measured)")
    axes[1].set_ylabel("memory (MB)")
    axes[1].legend()
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(int(s)) for s in sizes])
        ax.set_xlabel("batch size")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_seed_runs(runs, metrics, arm: str = "arm", seed: str = "seed", baselines=None,
                   title: str | None = None):
    """One panel per metric: a dot per seed and a bar at the mean ± sd for every arm.

    Args:
        runs: a DataFrame (or list of dicts) with one row per (arm, seed) and the metric columns.
        metrics: a column name or several (one panel each).
        arm, seed: the names of the arm and seed columns.
        baselines: optional {metric: value} drawn as a dashed line (e.g. the majority class).
        title: the figure's title.
    """
    import matplotlib.pyplot as plt
    import pandas as pd

    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    frame = runs if isinstance(runs, pd.DataFrame) else pd.DataFrame(list(runs))
    missing = [c for c in (arm, seed, *metrics) if c not in frame.columns]
    if missing:
        raise ValueError(f"plot_seed_runs: runs have no column(s) {missing}")
    arms = list(dict.fromkeys(frame[arm]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(3.2, 1.1 * len(arms) + 1.4)
                                                       * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for k, name in enumerate(arms):
            values = frame.loc[frame[arm] == name, metric].dropna().to_numpy(dtype=float)
            offsets = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else [0.0]
            ax.plot(k + np.asarray(offsets), values, "o", color=f"C{k}", alpha=0.7)
            if len(values):
                sd = values.std(ddof=1) if len(values) > 1 else 0.0
                ax.errorbar(k + 0.3, values.mean(), yerr=sd, fmt="_", color=f"C{k}",
                            markersize=14, capsize=4, lw=1.5)
        if baselines and metric in baselines:
            ax.axhline(baselines[metric], color="grey", ls="--", lw=1, label="baseline")
            ax.legend(loc="best", fontsize=8)
        ax.set_xticks(range(len(arms)), arms, rotation=20 if len(arms) > 2 else 0,
                      ha="right" if len(arms) > 2 else "center")
        ax.set_xlim(-0.5, len(arms) - 0.3)
        ax.set_ylabel(metric)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# --- add new plot functions above this line ---
