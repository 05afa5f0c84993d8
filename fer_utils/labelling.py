"""Notebook widgets: an AU explorer (a slider per action unit) and a minimal labelling tool.

Both are live ipywidgets in JupyterLab. Where no widget frontend can show them (nbval, a
headless `jupyter nbconvert --execute`, a plain Python script) they fall back to static
pictures, and the labelling tool is driven by calling its `label()` method.
`FER_WIDGETS=1` forces the live widgets, `FER_WIDGETS=0` the static fallback.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from .data.readers import IMAGE_EXTENSIONS
from .faceset import EXPRESSIONS

__all__ = ["widgets_live", "au_explorer", "au_grid", "LabellingTool", "EXPLORER_AUS"]

# The AUs the explorer offers: the 12 BP4D AUs plus those the prototypes of surprise, fear and
# disgust need (5 lid raiser, 9 nose wrinkler, 20 lip stretcher, 26 jaw drop).
EXPLORER_AUS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 24, 26)
AU_DESCRIPTIONS = {
    1: "inner brow raiser", 2: "outer brow raiser", 4: "brow lowerer", 5: "upper lid raiser",
    6: "cheek raiser", 7: "lid tightener", 9: "nose wrinkler", 10: "upper lip raiser",
    12: "lip corner puller", 14: "dimpler", 15: "lip corner depressor", 16: "lower lip depressor",
    17: "chin raiser", 20: "lip stretcher", 23: "lip tightener", 24: "lip pressor",
    25: "lips part", 26: "jaw drop",
}


def widgets_live() -> bool:
    """True when a widget frontend (JupyterLab, Notebook, VS Code) can display live widgets."""
    forced = os.environ.get("FER_WIDGETS", "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with the kit
        return False
    shell = get_ipython()
    if shell is None or type(shell).__name__ != "ZMQInteractiveShell":
        return False
    # jupyter_server (Lab/Notebook) sets JPY_SESSION_NAME for the kernels it starts; VS Code
    # sets VSCODE_PID. nbval and nbconvert start bare kernels without either.
    return bool(os.environ.get("JPY_SESSION_NAME") or os.environ.get("VSCODE_PID"))


def _render(aus: dict, identity_seed: int, size: int, channels: int):
    from . import synth

    return synth.render_face(aus={k: float(v) for k, v in aus.items() if v},
                             identity_seed=identity_seed, size=size, channels=channels)


def au_grid(aus=EXPLORER_AUS, level: float = 5.0, identity_seed: int = 0, size: int = 96,
            channels: int = 1, landmarks: bool = True, ncols: int = 6):
    """Static stand-in for the explorer: the neutral face, then each AU alone at `level`.

    Args:
        aus: AU numbers to show.
        level: FACS intensity (0-5) of each AU.
        identity_seed: which synthetic identity.
        size: pixels per face.
        channels: 1 (grey) or 3 (RGB).
        landmarks: draw the 68 landmarks on each face.
        ncols: faces per row.

    Returns:
        The matplotlib Figure.
    """
    from . import plots

    aus = tuple(int(a) for a in aus)
    if not aus:
        raise ValueError("au_grid needs at least one AU")
    if not 0 < float(level) <= 5:
        raise ValueError(f"au_grid: level must lie in (0, 5] (FACS intensity), got {level!r}")
    faces = [_render({}, identity_seed, size, channels)]
    faces += [_render({au: level}, identity_seed, size, channels) for au in aus]
    titles = ["neutral"] + [f"AU{au} {AU_DESCRIPTIONS.get(au, '')}" for au in aus]
    return plots.show_images([f[0] for f in faces], titles=titles, ncols=ncols,
                             landmarks=[f[1] for f in faces] if landmarks else None, size=1.7)


def au_explorer(aus=EXPLORER_AUS, identity_seed: int = 0, size: int = 160, channels: int = 3,
                live: bool | None = None):
    """A slider per AU → the face rendered from those AUs, with its 68 landmarks.

    Args:
        aus: AU numbers that get a slider.
        identity_seed: the synthetic identity to start from (a slider changes it).
        size: pixels of the rendered face.
        channels: 1 (grey) or 3 (RGB).
        live: force the live widget (True) or the static grid (False); default `widgets_live()`.

    Returns:
        The ipywidgets box (live; CSS class `fer-au-explorer`) or the static matplotlib
        Figure of `au_grid`.
    """
    aus = tuple(int(a) for a in aus)
    live = widgets_live() if live is None else live
    if not live:
        return au_grid(aus, identity_seed=identity_seed)

    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    sliders = {au: widgets.FloatSlider(value=0.0, min=0.0, max=5.0, step=0.5,
                                       description=f"AU{au}",
                                       tooltip=AU_DESCRIPTIONS.get(au, ""),
                                       continuous_update=False,
                                       layout=widgets.Layout(width="260px"))
               for au in aus}
    identity = widgets.IntSlider(value=identity_seed, min=0, max=99, description="identity",
                                 continuous_update=False)
    show_marks = widgets.Checkbox(value=True, description="landmarks")
    reset = widgets.Button(description="neutral", icon="refresh")
    output = widgets.Output()

    def redraw(*_):
        image, marks = _render({au: s.value for au, s in sliders.items()}, identity.value,
                               size, channels)
        with output:
            output.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(3.2, 3.2))
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray")
            if show_marks.value:
                ax.scatter(marks[:, 0], marks[:, 1], s=6, c="lime")
            active = [f"AU{au}={s.value:g}" for au, s in sliders.items() if s.value]
            ax.set_title(", ".join(active) or "neutral", fontsize=8)
            ax.axis("off")
            plt.show()

    def neutral(_):
        for s in sliders.values():
            s.value = 0.0

    for control in (*sliders.values(), identity, show_marks):
        control.observe(redraw, names="value")
    reset.on_click(neutral)
    columns = [widgets.VBox([s for au, s in sliders.items()][i::2]) for i in range(2)]
    redraw()
    box = widgets.HBox([widgets.VBox([*columns, widgets.HBox([identity, show_marks, reset])]),
                        output])
    box.add_class("fer-au-explorer")  # a handle for pages and browser tests
    return box


class LabellingTool:
    """Show the images of a folder one by one and append the chosen label to a CSV.

    The CSV (`image,expression`, image paths relative to the CSV's folder) is read back by
    `fer_utils.data.load_au_csv`. Already labelled images are skipped, so a session resumes.
    """

    def __init__(self, folder, csv_path, class_names=EXPRESSIONS, display_size: int = 192):
        """Collect the folder's images (recursively, sorted) that the CSV does not label yet."""
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise FileNotFoundError(f"LabellingTool: image folder not found: {self.folder}")
        self.csv_path = Path(csv_path).expanduser()
        self.class_names = tuple(class_names)
        if not self.class_names:
            raise ValueError("LabellingTool needs at least one class name")
        self.display_size = int(display_size)
        done = set(self._labelled())
        self.files = [p for p in sorted(self.folder.rglob("*"))
                      if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                      and self._relative(p) not in done]
        self.position = 0
        self._widget = None

    def _relative(self, file: Path) -> str:
        return Path(os.path.relpath(file, self.csv_path.parent)).as_posix()

    def _labelled(self) -> list:
        return list(self.labels())

    def labels(self) -> dict:
        """The labels in the CSV so far: {image path relative to the CSV's folder: class}."""
        if not self.csv_path.is_file():
            return {}
        with open(self.csv_path, newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None:  # an empty file: label() writes the header
                return {}
            if "image" not in reader.fieldnames:
                raise ValueError(f"LabellingTool: {self.csv_path} has no 'image' column (header "
                                 f"{reader.fieldnames}); expected 'image,expression'")
            return {row["image"]: row.get("expression") for row in reader}

    @property
    def current(self) -> Path | None:
        """The image waiting for a label, or None when every image is labelled or skipped."""
        return self.files[self.position] if self.position < len(self.files) else None

    @property
    def remaining(self) -> int:
        """How many images still wait for a label."""
        return len(self.files) - self.position

    def label(self, name) -> Path:
        """Give the current image the class `name` (or index), append it to the CSV, move on."""
        if self.current is None:
            raise IndexError("LabellingTool: every image is already labelled")
        if isinstance(name, (int, np.integer)):
            if not 0 <= name < len(self.class_names):
                raise ValueError(f"label index {name} is outside 0..{len(self.class_names) - 1}")
            name = self.class_names[name]
        if name not in self.class_names:
            raise ValueError(f"unknown label {name!r}; allowed: {self.class_names}")
        new = not self.csv_path.is_file() or self.csv_path.stat().st_size == 0
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.csv_path, "a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["image", "expression"])
            writer.writerow([self._relative(self.current), name])
        file = self.current
        self.position += 1
        self._refresh()
        return file

    def skip(self) -> None:
        """Leave the current image unlabelled (it comes back next session)."""
        if self.current is not None:
            self.position += 1
            self._refresh()

    def _picture(self) -> bytes:
        import cv2

        from .data.readers import read_image

        image = read_image(self.current, channels=3)
        image = cv2.resize(image, (self.display_size, self.display_size),
                           interpolation=cv2.INTER_NEAREST)
        return cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()

    def _refresh(self) -> None:
        if self._widget is None:
            return
        picture, status = self._widget
        if self.current is None:
            status.value = f"<b>All done.</b> Labels are in <code>{self.csv_path}</code>."
            picture.layout.visibility = "hidden"
            return
        picture.value = self._picture()
        status.value = (f"{self.current.name} — {self.remaining} left; labels go to "
                        f"<code>{self.csv_path}</code>")

    def widget(self):
        """The live labelling widget: the image, a button per class and a skip button.

        The box carries the CSS class `fer-labelling-tool` and each class button
        `fer-label-button`, so a page (or a browser test) can find them.
        """
        import ipywidgets as widgets

        picture = widgets.Image(format="png", width=self.display_size,
                                height=self.display_size)
        status = widgets.HTML()
        buttons = []
        for name in self.class_names:
            button = widgets.Button(description=name, tooltip=f"label this image '{name}'",
                                    layout=widgets.Layout(width="90px"))
            button.add_class("fer-label-button")
            button.on_click(lambda _, n=name: self.label(n))
            buttons.append(button)
        skip = widgets.Button(description="skip", button_style="warning",
                              layout=widgets.Layout(width="70px"))
        skip.on_click(lambda _: self.skip())
        self._widget = (picture, status)
        self._refresh()
        box = widgets.VBox([status, picture, widgets.HBox(buttons + [skip])])
        box.add_class("fer-labelling-tool")
        return box

    def show(self, live: bool | None = None):
        """The live widget when a frontend can show it, else a static grid of what is left."""
        live = widgets_live() if live is None else live
        if live:
            return self.widget()
        from . import plots
        from .data.readers import read_image

        left = self.files[self.position:self.position + 8]
        if not left:
            print(f"All {len(self.files)} images are labelled; labels in {self.csv_path}")
            return None
        return plots.show_images([read_image(p, channels=1) for p in left],
                                 titles=[p.name for p in left], ncols=8,
                                 suptitle=f"{self.remaining} image(s) to label")
