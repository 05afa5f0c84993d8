"""Files the project's sources and docs name exist in the project (no dead references)."""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("fer_utils", "tests", "benchmarks", "notebooks", "docker")
TEXT = {".py", ".ipynb", ".md", ".txt", ".toml", ".yml", ".yaml", ".sh", ".cfg", ""}
MARKDOWN = re.compile(r"(?<![\w/.-])([\w-]+\.md)\b")
PROJECT_PATH = re.compile(rf"(?<![\w/.-])((?:{'|'.join(FOLDERS)})/[\w./-]*[\w/])")
# Stale references in files that other helpers own, reported to them. Remove an entry when its
# file is fixed: the test also fails on an entry that is no longer found, so the list stays true.


def project_files() -> list:
    """The project's text files: top-level ones and those in FOLDERS (not caches, not this
    file, whose examples name missing files on purpose)."""
    files = [p for p in ROOT.iterdir() if p.is_file()]
    for folder in FOLDERS:
        files += [p for p in (ROOT / folder).rglob("*") if p.is_file()]
    return [p for p in files if p.suffix in TEXT and p != Path(__file__).resolve() and not any(
        part in ("__pycache__", ".ipynb_checkpoints") for part in p.parts)]


def dead_references() -> set:
    """(file, name) for every Markdown file or project path a file names that does not exist."""
    files = project_files()
    names = {p.name for p in files}
    dead = set()
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        where = path.relative_to(ROOT).as_posix()
        dead |= {(where, m[1]) for m in MARKDOWN.finditer(text) if m[1] not in names}
        dead |= {(where, m[1]) for m in PROJECT_PATH.finditer(text)
                 if not (ROOT / m[1].rstrip("/.")).exists()}
    return dead


def test_every_file_the_project_names_exists():
    dead = dead_references()
    assert not dead, f"names of files that are not in the project: {sorted(dead)}"


def test_the_check_finds_a_dead_reference(tmp_path, monkeypatch):
    (tmp_path / "tests").mkdir()
    (tmp_path / "README.md").write_text("See tests/test_gone.py and design.md; README.md is here.")
    (tmp_path / "tests" / "test_here.py").write_text('"""Runs tests/test_here.py."""')
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert dead_references() == {("README.md", "tests/test_gone.py"), ("README.md", "design.md")}
