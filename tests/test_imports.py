"""The static import graph of fer_utils has no cycle (imports inside functions count too)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fer_utils"


def module_name(path: Path) -> str:
    """fer_utils/data/readers.py → fer_utils.data.readers; a package's __init__ → the package."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imported_names(path: Path, modules: set, me: str | None = None) -> set:
    """Every fer_utils module `path` imports, anywhere in the file (relative or absolute).

    `from .x import y` counts as an import of `x.y` when that is a module, else of `x`.
    Importing `a.b.c` also runs the packages `a.b` (their __init__): they count too, except
    the importer's own enclosing packages, which are already running when it is imported.
    """
    me = module_name(path) if me is None else me
    here = me if is_package(path) else me.rpartition(".")[0]  # the package `.` refers to
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[:len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in modules else stem
                       for alias in node.names]
        for target in targets:
            parts = target.split(".")
            for k in range(len(parts), 0, -1):
                name = ".".join(parts[:k])
                own_ancestor = me == name or me.startswith(name + ".")
                if name in modules and name != me and not own_ancestor:
                    found.add(name)
    return found


def import_graph() -> dict:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imported_names(f, modules) for f in files}


def find_cycle(graph: dict):
    """One cycle as a list of modules (first == last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_relative_absolute_and_function_level_imports(tmp_path):
    graph = import_graph()
    assert "fer_utils.faceset" in graph["fer_utils.synth.dataset"]  # top-level, `..` relative
    assert "fer_utils.faceset" in graph["fer_utils.augment.geometry"]  # inside a function
    assert "fer_utils.data.readers" in graph["fer_utils.labelling"]
    assert "fer_utils.data" in graph["fer_utils.labelling"]  # the package's __init__ runs too
    assert "fer_utils.faces" in graph["fer_utils.inference"]


def test_absolute_imports_and_parent_packages_count(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("import numpy\nimport fer_utils.config\n\n\ndef f():\n"
                      "    from fer_utils.data import readers\n    from ..faceset import FaceSet\n")
    modules = set(import_graph())
    found = imported_names(source, modules, me="fer_utils.models.probe")
    assert found == {"fer_utils.config", "fer_utils.data", "fer_utils.data.readers",
                     "fer_utils.faceset"}


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_faceset_is_a_leaf():
    assert import_graph()["fer_utils.faceset"] == set()


def test_no_import_cycle_among_fer_utils_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def reachable(graph: dict, start: str) -> set:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_loaders_do_not_import_inference_or_models():
    """fit='face' crops through fer_utils.faces, the module predict uses, not via inference."""
    graph = import_graph()
    assert "fer_utils.faces" in reachable(graph, "fer_utils.data")
    assert not {"fer_utils.inference", "fer_utils.models", "fer_utils.train"} & \
        reachable(graph, "fer_utils.data")


def test_a_native_failure_while_tensorflow_loads_stays_visible(tmp_path):
    """fu.setup() holds TensorFlow's import chatter back, but not an import that fails."""
    import os
    import subprocess
    import sys

    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import os\nos.write(2, b'native: libtensorflow_framework.so.2 cannot be opened\\n')\n"
        "raise ImportError('the TensorFlow library failed to load')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(PACKAGE.parent)]),
               FER_DATA_DIR=str(tmp_path / "data"), FER_LOG_DIR=str(tmp_path / "logs"))
    result = subprocess.run([sys.executable, "-c", "import fer_utils as fu; fu.setup()"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    assert "libtensorflow_framework.so.2 cannot be opened" in result.stderr
    assert "the TensorFlow library failed to load" in result.stderr
