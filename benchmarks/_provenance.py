"""Where a benchmark's numbers come from: the commit and whether the tree was clean, computed.

Every benchmark header states :func:`provenance_line`, never a typed-in commit. On a copy
without ``.git`` (e.g. the GPU machine) the commit comes from ``SCAI_COMMIT`` and
``SCAI_TREE`` ("clean"/"dirty", as ``benchmarks/gpu/fetch.sh`` computes them before copying);
missing, the header says the state is unknown.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Provenance:
    """The commit a run used and the state of the working tree."""

    commit: str  # short sha, or "unknown"
    clean: bool | None  # None: could not be checked
    changed: list[str] = field(default_factory=list)  # paths from `git status --porcelain`
    source: str = "git"  # "git", "SCAI_COMMIT" or "none"

    def line(self) -> str:
        """One line for a benchmark header, e.g. ``commit 1a2b3c4 (clean tree)``."""
        if self.clean is True:
            state = "clean tree"
        elif self.clean is False and not self.changed:
            state = "dirty tree"
        elif self.clean is False:
            shown = ", ".join(self.changed[:5]) + (" ..." if len(self.changed) > 5 else "")
            state = f"dirty tree: {len(self.changed)} changed/untracked path(s): {shown}"
        else:
            state = "tree state unknown"
        via = "" if self.source == "git" else f", from {self.source}"
        return f"commit {self.commit} ({state}{via})"


def _git(*args: str, cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=cwd, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def provenance(cwd: str | Path = ROOT) -> Provenance:
    """Compute the commit (``git rev-parse --short HEAD``) and ``git status --porcelain``."""
    cwd = Path(cwd)
    head = _git("rev-parse", "--short", "HEAD", cwd=cwd)
    if head is not None and head.strip():
        status = _git("status", "--porcelain", cwd=cwd)
        if status is None:
            return Provenance(head.strip(), None)
        changed = [ln[3:] for ln in status.splitlines() if ln.strip()]
        return Provenance(head.strip(), not changed, changed)
    env_commit = os.environ.get("SCAI_COMMIT", "").strip()
    if env_commit and env_commit != "unknown":
        tree = os.environ.get("SCAI_TREE", "").strip().lower()
        clean = {"clean": True, "dirty": False}.get(tree)
        return Provenance(env_commit, clean, [], "SCAI_COMMIT")
    return Provenance("unknown", None, [], "none")


def provenance_line(cwd: str | Path = ROOT) -> str:
    """:meth:`Provenance.line` of :func:`provenance`."""
    return provenance(cwd).line()


def machine_line() -> str:
    """CPU model, cores and the load average now, e.g. for a benchmark header.

    The load says whether other jobs shared the machine; it is measured, never typed.
    """
    cpu = "unknown CPU"
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()[0]
        busy = "other jobs running" if load > 1.5 else "otherwise idle"
        state = f"load average {load:.1f} at start: {busy}"
    except OSError:
        state = "load unknown"
    return f"{cpu}, {os.cpu_count()} cores ({state})"


def export_src(ref: str, cwd: str | Path = ROOT) -> tuple[str, Path]:
    """``src/`` of commit ``ref`` unpacked in a new temporary folder: (short sha, its src).

    For benchmarks that run a previous commit's code next to the current one in the same run.
    """
    import io
    import tarfile
    import tempfile

    sha = (_git("rev-parse", "--short", ref, cwd=Path(cwd)) or "").strip()
    if not sha:
        raise ValueError(f"{ref!r} is not a commit of the repository at {cwd}")
    blob = subprocess.run(
        ["git", "archive", sha, "src"], capture_output=True, check=True, cwd=cwd
    ).stdout
    out = Path(tempfile.mkdtemp(prefix=f"scai-{sha}-"))
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(out, filter="data")
    return sha, out / "src"


if __name__ == "__main__":
    print(provenance_line())
