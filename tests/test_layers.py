"""The layers import only downward: datasets <- draw <- benchmark <- cli.py.

Every ``import`` and ``from ... import`` of our own packages (at any depth, lazy imports
inside functions included) is read from the source with ``ast``; an edge that points up a
layer fails the test with the file, the line and the edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"datasets": 0, "draw": 1, "benchmark": 2, "cli": 3}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import of one of our layers in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, n.split(".")[0]) for n in names if n.split(".")[0] in LAYERS]
    return found


def _sources() -> list[tuple[Path, int]]:
    files = [(ROOT / "cli.py", LAYERS["cli"])]
    for package in ("datasets", "draw", "benchmark"):
        files += [(p, LAYERS[package]) for p in sorted((ROOT / package).rglob("*.py"))]
    return files


def test_no_layer_imports_a_layer_above_it():
    upward = [f"{path.relative_to(ROOT)}:{line} imports {target} ({LAYERS[target]} > {level})"
              for path, level in _sources() for line, target in _imports(path) if LAYERS[target] > level]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_check_sees_lazy_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import os\n\ndef f():\n    from benchmark.report import read_results\n    import cli\n")
    assert _imports(src) == [(4, "benchmark"), (5, "cli")]
