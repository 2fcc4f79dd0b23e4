"""tools/check_latest_resolve.py: reading pins and reporting drift (no network here)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from check_latest_resolve import compare, parse_pins  # noqa: E402


def test_parse_pins_normalises_names_and_drops_local_labels():
    text = "# comment\nTorch==2.13.0+cpu\nscikit_learn==1.5.0  # why\nnapari @ file:///x\n\n"
    assert parse_pins(text) == {"torch": "2.13.0", "scikit-learn": "1.5.0"}


def test_compare_lists_changed_new_and_missing():
    pinned = {"a": "1", "b": "2", "c": "3"}
    latest = {"a": "1", "b": "2.1", "d": "4"}
    assert compare(pinned, latest) == [("b", "2", "2.1"), ("c", "3", "-"), ("d", "-", "4")]


def test_constraints_file_is_the_generated_one():
    text = (ROOT / "constraints.txt").read_text()
    assert text.startswith("# Resolved set known to pass, written by tools/make_constraints.sh")
    pins = parse_pins(text)
    assert pins["torch"] == "2.13.0" and "napari-scai" not in pins
    assert not any("+" in line for line in text.splitlines() if "==" in line)
    for dep in ("spatialdata", "anndata", "napari", "squidpy", "pytest", "pyqt6"):
        assert dep in pins, dep
