"""fer_utils.labelling: the labelling tool writes a CSV the loaders read; the widgets' fallbacks."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_utils import data, labelling


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(folder / f"p{i}.png"), rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_labelling_tool_writes_a_csv_the_loader_reads_and_resumes(tmp_path, photos):
    csv_path = tmp_path / "labels" / "labels.csv"
    tool = labelling.LabellingTool(photos, csv_path)
    assert tool.remaining == 4 and tool.current.name == "p0.png"
    tool.label("happy")
    tool.skip()
    tool.label(4)  # an index: "sad"
    with pytest.raises(ValueError, match="bored"):
        tool.label("bored")
    assert tool.remaining == 1
    fs = data.load_au_csv(csv_path, class_names=data.EXPRESSIONS, size=32)
    assert [fs.class_names[k] for k in fs.labels] == ["happy", "sad"]
    assert fs.image_shape == (32, 32, 1)
    again = labelling.LabellingTool(photos, csv_path)  # a new session skips labelled images
    assert [p.name for p in again.files] == ["p1.png", "p3.png"]
    again.label("fear")
    again.label("neutral")
    assert again.current is None and again.remaining == 0
    with pytest.raises(IndexError):
        again.label("fear")
    assert len(data.load_au_csv(csv_path)) == 4


def test_labelling_tool_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        labelling.LabellingTool(tmp_path / "nowhere", tmp_path / "l.csv")


def test_labelling_tool_empty_or_foreign_csv(tmp_path, photos):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("")  # e.g. created by `touch`: the header must still be written
    tool = labelling.LabellingTool(photos, csv_path)
    tool.label("happy")
    assert csv_path.read_text().splitlines()[0] == "image,expression"
    assert len(data.load_au_csv(csv_path)) == 1
    other = tmp_path / "other.csv"
    other.write_text("path,label\nphotos/p0.png,happy\n")
    with pytest.raises(ValueError, match="other.csv has no 'image' column"):
        labelling.LabellingTool(photos, other)


def test_widgets_live_follows_the_environment(monkeypatch):
    monkeypatch.setenv("FER_WIDGETS", "1")
    assert labelling.widgets_live()
    monkeypatch.setenv("FER_WIDGETS", "0")
    assert not labelling.widgets_live()
    monkeypatch.delenv("FER_WIDGETS")
    assert not labelling.widgets_live()  # plain Python: no kernel, no frontend


def test_live_widgets_build(tmp_path, photos, monkeypatch):
    pytest.importorskip("ipywidgets")
    box = labelling.au_explorer(aus=(12,), live=True, size=48)
    assert type(box).__name__ == "HBox"
    tool = labelling.LabellingTool(photos, tmp_path / "l.csv")
    widget = tool.show(live=True)
    assert type(widget).__name__ == "VBox"
    picture = widget.children[1]
    first = bytes(picture.value)
    tool.label("angry")  # what a button click does
    assert bytes(picture.value) != first and "3 left" in widget.children[0].value


def test_labels_reads_the_csv_back(tmp_path, photos):
    csv_path = tmp_path / "labels.csv"
    tool = labelling.LabellingTool(photos, csv_path)
    assert tool.labels() == {}  # no CSV yet
    tool.label("happy")
    tool.skip()
    tool.label("fear")
    assert tool.labels() == {"photos/p0.png": "happy", "photos/p2.png": "fear"}


def test_a_click_on_a_class_button_appends_the_row(tmp_path, photos):
    """The live widget's buttons are what a learner clicks: each writes one CSV row."""
    csv_path = tmp_path / "labels.csv"
    tool = labelling.LabellingTool(photos, csv_path)
    box = tool.widget()
    assert "fer-labelling-tool" in box._dom_classes
    status, _, row = box.children
    buttons = {b.description: b for b in row.children}
    assert list(buttons) == [*data.EXPRESSIONS, "skip"]
    assert all("fer-label-button" in buttons[name]._dom_classes for name in data.EXPRESSIONS)
    assert status.value.startswith("p0.png — 4 left") and str(csv_path) in status.value
    buttons["surprise"].click()  # ipywidgets runs the on_click handlers, as a browser click does
    buttons["skip"].click()
    buttons["angry"].click()
    assert csv_path.read_text().splitlines() == ["image,expression", "photos/p0.png,surprise",
                                                 "photos/p2.png,angry"]
    assert status.value.startswith("p3.png — 1 left")


def test_au_explorer_has_a_slider_per_au():
    box = labelling.au_explorer(aus=(1, 12, 26), live=True, size=48)
    assert "fer-au-explorer" in box._dom_classes
    controls, _ = box.children
    sliders = [w for column in controls.children[:2] for w in column.children]
    assert sorted(s.description for s in sliders) == ["AU1", "AU12", "AU26"]


@pytest.mark.slow
def test_notebook_00_runs_all_cells_with_live_widgets_and_no_clicks(tmp_path, monkeypatch):
    """Run All in JupyterLab: live widgets that nobody clicks; later cells still have labels."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("FER_WIDGETS", "1")  # the kernel takes the JupyterLab path
    monkeypatch.setenv("FER_DATA_DIR", str(tmp_path))
    notebook = nbformat.read(root / "notebooks" / "00_setup_and_data.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(root / "notebooks")}}).execute()
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    # the first cell that makes the tool shows the live widget, not the static grid (a later
    # one makes a second tool on the same CSV to show that a new session resumes)
    shown = [c for c in code if "labelling.LabellingTool(" in c.source]
    assert shown
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
               for o in shown[0].outputs)
    rows = (tmp_path / "nb00_files" / "my_labels.csv").read_text().splitlines()
    assert rows[0] == "image,expression" and len(rows) == 1 + 4  # labelled from code
