"""Peak resident memory of a whole run, measured in a fresh child process.

``tracemalloc`` sees only Python's allocator (not torch, not numpy's large buffers from C), so
memory tests run the code in a subprocess and read the kernel's peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, KiB on Linux) before and after the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

_SRC = str(Path(__file__).resolve().parents[1] / "src")

_TEMPLATE = """
import json, resource, sys
{imports}
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
n = int(sys.argv[1])
{body}
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RSS " + json.dumps({{"base_kib": base, "peak_kib": peak}}))
"""


def run_peak_rss(imports: str, body: str, n: int, timeout: float = 300) -> int:
    """Bytes the run ``body`` (with ``n`` bound) added to the child's peak RSS after ``imports``."""
    code = _TEMPLATE.format(imports=textwrap.dedent(imports), body=textwrap.dedent(body))
    env = dict(os.environ)
    env["PYTHONPATH"] = _SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MALLOC_ARENA_MAX", "2")  # fewer per-thread malloc arenas: less RSS noise
    out = subprocess.run(
        [sys.executable, "-c", code, str(n)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"child for n={n} failed:\n{out.stderr[-3000:]}")
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RSS "))
    r = json.loads(line[4:])
    return (r["peak_kib"] - r["base_kib"]) * 1024


def peaks_in_parallel(imports: str, body: str, sizes: list[int], timeout: float = 300) -> list[int]:
    """:func:`run_peak_rss` for each size, children running side by side (RSS is per process)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(sizes)) as pool:
        return list(pool.map(lambda n: run_peak_rss(imports, body, n, timeout), sizes))


def slopes(sizes: list[int], peaks: list[int]) -> np.ndarray:
    """Bytes per extra cell between consecutive sizes."""
    return np.diff(np.asarray(peaks, float)) / np.diff(np.asarray(sizes, float))
