"""The README's Python block runs as written on the bundled sample."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python_api_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README's Python API section has no ```python block"
    return blocks[0]


def test_readme_python_block_runs_as_written(tmp_path: Path) -> None:
    code = _python_api_block()
    assert "path/to" not in code.replace('scai.io.read("path/to/outs")', "")  # no placeholders
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    script = tmp_path / "readme_block.py"
    script.write_text(code, encoding="utf-8")
    run = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ARI" in run.stdout and "Per class" in run.stdout
    ari = float(re.search(r"ARI: ([0-9.]+)", run.stdout).group(1))
    assert ari > 0.35, f"README example ARI {ari}"
    for name in ("domains.png", "compare.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    from napari_scai import io

    saved = io.read(tmp_path / "dlpfc.zarr").tables["rna"]
    assert {"scai_domain", "scai_domain_matched", "layer_manual"} <= set(saved.obs.columns)
