"""The architecture runs one way: capture -> dump -> load -> analyze -> model -> render.

Renderers draw the model; they import no pandas, no regular expressions, no loader and no
analysis. The model and the capture side import without pandas.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

RENDERERS = [
    *sorted((REPO / "postmortem" / "report").glob("*.py")),
    *sorted((REPO / "postmortem" / "exports").glob("*.py")),
    *sorted((REPO / "postmortem" / "render").glob("*.py")),
]
FORBIDDEN = ("pandas", "numpy", "re", "postmortem.loading", "postmortem.analysis")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", RENDERERS, ids=lambda p: str(p.relative_to(REPO)))
def test_renderers_read_the_model_only(path: Path) -> None:
    bad = {m for m in imported_modules(path) for f in FORBIDDEN if m == f or m.startswith(f + ".")}
    assert not bad, f"{path.name} imports {bad}"


def test_the_model_and_the_capture_side_import_without_pandas() -> None:
    code = (
        "import sys, postmortem.model, postmortem.serialize, collectors.capture, "
        "collectors.layout; assert 'pandas' not in sys.modules, 'pandas was imported'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr


def test_only_the_layout_module_spells_dump_paths() -> None:
    # The dump's file names appear in code only where the layout is defined.
    spelled = []
    for path in [*REPO.glob("postmortem/**/*.py"), *REPO.glob("collectors/*.py")]:
        if path.name == "layout.py":
            continue
        text = path.read_text()
        names = ('"procfs.json"', '"pyspy.json"', '"process.json"', "round-{", '"processes/')
        spelled += [f"{path.relative_to(REPO)}: {name}" for name in names if name in text]
    assert spelled == []
