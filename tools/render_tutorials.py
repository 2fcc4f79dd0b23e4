"""Execute the tutorials (``docs/tutorials/*.py``, jupytext percent format) into notebooks.

    PYTHONPATH=src python tools/render_tutorials.py            # every tutorial
    PYTHONPATH=src python tools/render_tutorials.py 01_visium_domains.py

Each ``NN_name.py`` becomes ``NN_name.ipynb`` beside it, with its outputs (tables, figures):
those rendered notebooks are what the docs show. The kernel is ``python3``, its working
folder the tutorial folder; ``PYTHONPATH`` and ``SCAI_SHARED_DATA`` pass through, and the
files a tutorial writes (``SCAI_TUTORIAL_OUT``) go to a temporary folder, not the repository.
``tests/test_tutorials.py`` runs the same :func:`execute`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "docs" / "tutorials"
PASSED_THROUGH = ("PYTHONPATH", "SCAI_SHARED_DATA")


def kernel_env(out_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Environment of the tutorial kernel: ours, with ``src/`` first on PYTHONPATH."""
    env = dict(os.environ)
    paths = [str(ROOT / "src"), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    for name in PASSED_THROUGH:
        if name in os.environ and name != "PYTHONPATH":
            env[name] = os.environ[name]
    env["SCAI_TUTORIAL_OUT"] = str(out_dir)
    env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    return env


def execute(path: str | os.PathLike[str], out_dir: str | os.PathLike[str], timeout: int = 300):
    """Run one jupytext ``.py`` tutorial; return the executed ``nbformat`` notebook.

    Raises ``nbclient.exceptions.CellExecutionError`` (naming the cell and the error) when a
    cell fails, e.g. one of the tutorial's closing assertions.
    """
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=timeout,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute(cwd=str(path.parent), env=kernel_env(out_dir))
    nbformat.validate(nb)
    return nb


def render(path: Path) -> Path:
    """Execute ``path`` and write ``path.with_suffix('.ipynb')`` with its outputs."""
    import nbformat

    with tempfile.TemporaryDirectory(prefix="scai-tutorial-") as out:
        nb = execute(path, out)
    target = path.with_suffix(".ipynb")
    nbformat.write(nb, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="tutorial files (default: all)")
    args = parser.parse_args(argv)
    paths = [TUTORIALS / n for n in args.names] or sorted(TUTORIALS.glob("[0-9]*.py"))
    failed = []
    for path in paths:
        try:
            print(f"wrote {render(path).relative_to(ROOT)}")
        except Exception as err:  # report every tutorial, then fail
            print(f"FAILED {path.name}: {type(err).__name__}: {str(err)[-2000:]}", file=sys.stderr)
            failed.append(path.name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
