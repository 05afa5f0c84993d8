"""Notebooks are committed without outputs and follow the course's shape (README, "The course")."""

import json
import pathlib
import re

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found under notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs; strip them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_course_shape(path):
    nb = json.loads(path.read_text())
    text = "\n".join("".join(c["source"]) for c in nb["cells"])
    for section in ("What you will learn", "Summary", "Exercises"):
        assert section in text, f"{path.name} has no '{section}' section"
    assert "import fer_utils as fu" in text and "fu.setup(" in text, \
        f"{path.name} must import fer_utils as fu and call fu.setup()"


# Words of the test machinery that lesson text must not use (profiles differ by their numbers,
# set in fu.setup() and the notebook's setup cell, not by branches or verdicts in the text).
MACHINERY = re.compile(r"nbval|VERDICT|\bci profile\b|\bissue \d+", re.IGNORECASE)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_lesson_text_has_no_test_machinery(path):
    nb = json.loads(path.read_text())
    found = {i: sorted(set(MACHINERY.findall("".join(c["source"]))))
             for i, c in enumerate(nb["cells"]) if c["cell_type"] == "markdown"}
    found = {i: words for i, words in found.items() if words}
    assert not found, f"{path.name}: markdown cells {found} talk about the test machinery"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_learner_text_prerequisites_solutions_references(path):
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    intro = "".join(cells[0]["source"])
    assert "Prerequisites" in intro and "Time:" in intro, \
        f"{path.name}: the first cell should state the prerequisites and the time it takes"
    text = ["".join(c["source"]) for c in cells]
    start = next(i for i, t in enumerate(text) if "## Exercises" in t)
    hidden = [i for i, c in enumerate(cells[start:], start)
              if c.get("metadata", {}).get("jupyter", {}).get("source_hidden")]
    hints = sum(t.count("*Hint:*") for t in text[start:])
    assert hints and len(hidden) >= hints, \
        f"{path.name}: {hints} exercise hint(s) but {len(hidden)} collapsed solution cell(s)"
    assert any(t.lstrip().startswith("## References") for t in text[start:]), \
        f"{path.name}: no '## References' section after the exercises"


FIGURE = re.compile(r"plt\.show\(\)|\bshow_images\(|\bshow_image_grid\(|\bplot_\w+\(")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_what_you_should_see_after_each_figure(path):
    cells = json.loads(path.read_text())["cells"]
    missing = []
    for i, cell in enumerate(cells):
        hidden = cell.get("metadata", {}).get("jupyter", {}).get("source_hidden")
        if cell["cell_type"] != "code" or hidden or not FIGURE.search("".join(cell["source"])):
            continue
        after = ["".join(c["source"]) for c in cells[i + 1:i + 4] if c["cell_type"] == "markdown"]
        if not any("What you should see" in text for text in after):
            missing.append(i)
    assert not missing, f"{path.name}: figure cells {missing} have no 'What you should see' after them"
