"""Benchmark headers state the commit and whether the tree was clean, computed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _provenance import provenance  # noqa: E402


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_clean_and_dirty_trees(tmp_path, monkeypatch):
    monkeypatch.delenv("SCAI_COMMIT", raising=False)
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "commit", "-qm", "one")
    sha = _git(tmp_path, "rev-parse", "--short", "HEAD").strip()
    p = provenance(tmp_path)
    assert (p.commit, p.clean) == (sha, True)
    assert p.line() == f"commit {sha} (clean tree)"
    (tmp_path / "a.py").write_text("x = 2\n")
    (tmp_path / "new.py").write_text("")
    p = provenance(tmp_path)
    assert p.clean is False and sorted(p.changed) == ["a.py", "new.py"]
    assert p.line().startswith(f"commit {sha} (dirty tree: 2 changed/untracked path(s)")


def test_copy_without_git_uses_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.delenv("SCAI_COMMIT", raising=False)
    assert provenance(tmp_path).line() == "commit unknown (tree state unknown, from none)"
    monkeypatch.setenv("SCAI_COMMIT", "abc1234")
    monkeypatch.setenv("SCAI_TREE", "dirty")
    assert provenance(tmp_path).line() == "commit abc1234 (dirty tree, from SCAI_COMMIT)"


@pytest.mark.parametrize(
    "name", ["viewer.py", "domains.py", "annotate.py", "domains_guided.py", "integration.py"]
)
def test_benchmark_headers_use_computed_provenance(name):
    text = (ROOT / "benchmarks" / name).read_text()
    assert re.search(r"from _provenance import [\w, ]*\bprovenance_line\b", text)
    assert "provenance_line()" in text
    assert "uncommitted viewer work" not in text and "rev-parse" not in text


def test_export_src_unpacks_that_commit(tmp_path):
    from _provenance import export_src

    _git(tmp_path, "init", "-q")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "m.py").write_text("V = 1\n")
    _git(tmp_path, "add", "src/m.py")
    _git(tmp_path, "commit", "-qm", "one")
    sha = _git(tmp_path, "rev-parse", "--short", "HEAD").strip()
    (tmp_path / "src" / "m.py").write_text("V = 2\n")  # uncommitted: not exported
    got, src = export_src("HEAD", tmp_path)
    assert got == sha and (src / "m.py").read_text() == "V = 1\n"
    with pytest.raises(ValueError, match="not a commit"):
        export_src("no-such-ref", tmp_path)


def test_machine_line_states_the_measured_load(monkeypatch):
    import _provenance

    monkeypatch.setattr(_provenance.os, "getloadavg", lambda: (7.25, 1.0, 1.0))
    assert "load average 7.2 at start: other jobs running" in _provenance.machine_line()
    monkeypatch.setattr(_provenance.os, "getloadavg", lambda: (0.3, 1.0, 1.0))
    assert "load average 0.3 at start: otherwise idle" in _provenance.machine_line()
