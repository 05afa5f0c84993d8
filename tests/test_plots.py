"""Image grids draw the real pixels: no per-image contrast stretch, no resampling artefacts."""

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fer_utils import plots  # noqa: E402


def rendered_faces(figure, count):
    """(screen pixels, the source pixel each one should show) inside the first `count` axes.

    Returns a list of (region, rows, cols): the red channel of the screen pixels inside each
    axes (one pixel in from its edges) and, for each of them, the row and column of the
    48×48 source pixel its centre falls on.
    """
    figure.canvas.draw()
    buffer = np.asarray(figure.canvas.buffer_rgba())[..., 0]
    height = buffer.shape[0]
    out = []
    for ax in figure.axes[:count]:
        box = ax.get_window_extent()  # in pixels, origin at the bottom left
        top_f, left_f = height - box.y1, box.x0  # from the top left
        top, bottom = int(np.floor(top_f)) + 1, int(np.ceil(height - box.y0)) - 1
        left, right = int(np.floor(left_f)) + 1, int(np.ceil(box.x1)) - 1
        centres_y = np.arange(top, bottom) + 0.5
        centres_x = np.arange(left, right) + 0.5
        rows = np.clip(((centres_y - top_f) / box.height * 48).astype(int), 0, 47)
        cols = np.clip(((centres_x - left_f) / box.width * 48).astype(int), 0, 47)
        out.append((buffer[top:bottom, left:right], rows, cols))
    return out


def sharp_face(seed=0):
    """A 48×48 uint8 'face' with hard edges and a top value of 200 (not 255)."""
    rng = np.random.default_rng(seed)
    face = np.full((48, 48), 30, np.uint8)
    face[8:40, 8:40] = 200
    face[14:18, 12:36:2] = 0  # thin dark stripes next to the brightest pixels
    face[28:32, 16:32] = rng.integers(0, 201, (4, 16), dtype=np.uint8)
    return face


def test_show_images_draws_the_real_pixels_at_the_course_dpi():
    plots.set_style()  # the course's 90 dpi
    faces = np.stack([sharp_face(k) for k in range(4)])[..., None]
    figure = plots.show_images(faces, titles=list("abcd"), ncols=4)
    try:
        assert figure.dpi == 90
        for face, (region, rows, cols) in zip(faces[..., 0], rendered_faces(figure, 4)):
            assert region.max() <= face.max() and region.min() >= face.min()
            # Every screen pixel shows one source pixel (the colour map may round by 1 level),
            # none a blend of neighbours.
            values = np.unique(face).astype(int)
            nearest = np.abs(np.unique(region).astype(int)[:, None] - values[None]).min(axis=1)
            assert nearest.max() <= 1, np.unique(region)[nearest > 1]
            expected = face[rows][:, cols].astype(int)
            same = np.abs(region.astype(int) - expected) <= 1
            assert same.mean() > 0.95  # the source pixel under each screen pixel
    finally:
        plt.close(figure)


def test_float_images_in_0_1_are_not_stretched():
    face = sharp_face() / 255.0
    figure, ax = plt.subplots(figsize=(2, 2), dpi=90)
    try:
        plots.show_pixels(ax, face)
        ((region, _, _),) = rendered_faces(figure, 1)
        assert region.max() <= 200 and region.min() >= 0
    finally:
        plt.close(figure)


def test_plot_seed_runs_draws_every_seed_and_a_panel_per_metric():
    runs = [{"arm": arm, "seed": s, "accuracy": 0.5 + 0.1 * k + 0.01 * s, "f1": 0.4 + 0.01 * s}
            for k, arm in enumerate(["plain", "augmented"]) for s in (1, 2, 3)]
    fig = plots.plot_seed_runs(runs, ["accuracy", "f1"], baselines={"accuracy": 0.14})
    assert len(fig.axes) == 2
    dots = [line for line in fig.axes[0].lines if line.get_marker() == "o"]
    assert [len(line.get_ydata()) for line in dots] == [3, 3]
    np.testing.assert_allclose(sorted(dots[1].get_ydata()), [0.61, 0.62, 0.63])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["plain", "augmented"]
    assert any(line.get_linestyle() == "--" for line in fig.axes[0].lines)  # the baseline
    plt.close(fig)
