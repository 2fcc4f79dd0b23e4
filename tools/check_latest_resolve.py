#!/usr/bin/env python3
"""Try today's unpinned resolve of the project in a throwaway venv and report the drift.

CI installs from ``constraints.txt`` (a resolved set known to pass). This script shows what a
user who installs without it gets today: it creates a fresh virtual environment, installs
``torch==2.13.0`` and then ``-e ".[test]"`` with no constraints file, and reports

* every package whose resolved version differs from ``constraints.txt`` (and new/missing ones),
* whether ``import napari_scai`` (and its io/tl modules) works,
* whether a smoke test passes: the CLI on the bundled sample, and a few fast pytest files.

Exit code 0 when the import and the smoke test pass (drift alone is reported, not an error),
1 when they fail: then the constraints file is what keeps installs working, and the failure
shown is what to fix (or to cap in pyproject.toml) before it reaches users.

Usage: python tools/check_latest_resolve.py [--python PY] [--keep] [--report FILE]
       [--pytest "tests/test_io_errors.py tests/test_cli.py"]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOKE_TESTS = "tests/test_io_errors.py tests/test_io_write.py tests/test_cli.py"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_pins(text: str) -> dict[str, str]:
    """``name==version`` lines (comments and other lines ignored) -> {normalised name: version}."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^;\s]+)", line)
        if m:
            pins[_norm(m.group(1))] = m.group(2).split("+", 1)[0]
    return pins


def compare(pinned: dict[str, str], latest: dict[str, str]) -> list[tuple[str, str, str]]:
    """(package, pinned version or '-', latest version or '-') for every difference."""
    rows = []
    for name in sorted(set(pinned) | set(latest)):
        a, b = pinned.get(name, "-"), latest.get(name, "-")
        if a != b:
            rows.append((name, a, b))
    return rows


def _run(cmd: list[str], log: list[str], cwd: Path = ROOT, timeout: int = 3600) -> bool:
    log.append(f"$ {' '.join(cmd)}")
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
    log.extend("    " + line for line in tail)
    return proc.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter for the venv")
    parser.add_argument("--keep", action="store_true", help="keep the venv (path is printed)")
    parser.add_argument("--report", help="also write the report to this file")
    parser.add_argument("--pytest", default=SMOKE_TESTS, help="pytest files for the smoke test")
    args = parser.parse_args(argv)

    venv = Path(tempfile.mkdtemp(prefix="scai-latest-"))
    log: list[str] = []
    try:
        subprocess.run([args.python, "-m", "venv", str(venv)], check=True)
        py = str(venv / "bin" / "python")
        pip = [py, "-m", "pip", "install", "-q"]
        installed = _run([*pip, "--upgrade", "pip"], log) and _run([*pip, "torch==2.13.0"], log)
        installed = installed and _run([*pip, "-e", ".[test]"], log)
        if not installed:
            print("\n".join(["# latest resolve: the install itself FAILED", *log]))
            return 1
        freeze = subprocess.run(
            [py, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True, text=True
        ).stdout
        latest = parse_pins(freeze)
        constraints = ROOT / "constraints.txt"
        pinned = parse_pins(constraints.read_text()) if constraints.exists() else {}
        for tool in ("pip", "setuptools", "wheel"):
            latest.pop(tool, None)
            pinned.pop(tool, None)
        diffs = compare(pinned, latest)

        imports = _run(
            [py, "-c", "import napari_scai, napari_scai.io, napari_scai.tl; print('import ok')"],
            log,
        )
        smoke = imports and _run(
            [py, "-m", "napari_scai.cli", "info", "--sample", "dlpfc_151673"], log
        )
        smoke = smoke and _run(
            [py, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *args.pytest.split()],
            log,
        )
        lines = [
            "# latest unpinned resolve vs constraints.txt",
            "",
            f"{len(latest)} packages resolved; {len(diffs)} differ from constraints.txt.",
            "",
            "| package | constraints.txt | latest |",
            "|---|---|---|",
            *[f"| {n} | {a} | {b} |" for n, a, b in diffs],
            "",
            f"import napari_scai: {'ok' if imports else 'FAILED'}",
            f"smoke test (CLI info on the sample; pytest {args.pytest}): "
            f"{'ok' if smoke else 'FAILED'}",
            "",
            "## log",
            *log,
        ]
        report = "\n".join(lines)
        print(report)
        if args.report:
            Path(args.report).write_text(report + "\n")
        return 0 if smoke else 1
    finally:
        if args.keep:
            print(f"venv kept: {venv}")
        else:
            shutil.rmtree(venv, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
