"""Every tutorial (docs/tutorials/*.py) executes as a notebook, closing assertions included."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("[0-9]*.py"))


def _render_module():
    spec = importlib.util.spec_from_file_location(
        "render_tutorials", ROOT / "tools" / "render_tutorials.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_tutorials() -> None:
    names = [p.name for p in TUTORIALS]
    assert "01_visium_domains.py" in names and "02_annotate_guided.py" in names


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_executes(path: Path, tmp_path: Path) -> None:
    nb = _render_module().execute(path, tmp_path, timeout=240)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code)  # every cell ran
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    figures = [o for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert figures, "a tutorial shows its figures inline"
    assert "assert " in code[-1].source, "a tutorial ends with assertions on its results"
