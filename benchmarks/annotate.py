"""Benchmark: point-in-polygon annotation of 1,000,000 cells with 20 irregular polygons.

Compares the engines behind :func:`napari_scai.tl._annotate.annotate_from_shapes`:

- ``shapely, no prefilter``: prepared geometry + ``shapely.contains_xy`` on every point;
- ``shapely + bbox``: the same on the points inside the polygon's bounding box (default);
- ``matplotlib + bbox``: ``matplotlib.path.Path.contains_points`` on the bounding-box points;
- ``annotate_from_shapes``: the full call on a 1M-observation AnnData (writes a Categorical
  column and colours).

Timings are the best of 3. Prints a table and appends it to ``benchmarks/RESULTS.md`` under
"Annotation". Run: ``python benchmarks/annotate.py [--no-write]``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import provenance_line  # noqa: E402
from napari_scai.tl._annotate import annotate_from_shapes, points_in_polygons

N_CELLS = 1_000_000
N_POLYGONS = 20
SIDE_PX = 20_000.0
TARGET_S = 5.0
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def irregular_polygons(rng: np.random.Generator) -> list[shapely.Polygon]:
    """Star-shaped outlines with a wobbly radius, 50-200 vertices, radius 1,500-4,000 px."""
    polys = []
    for _ in range(N_POLYGONS):
        n_vert = int(rng.integers(50, 201))
        theta = np.sort(rng.uniform(0, 2 * np.pi, n_vert))
        radius = rng.uniform(1500, 4000)
        wobble = np.zeros(n_vert)
        for k in range(1, 6):  # low-frequency lobes make it concave and irregular
            wobble += rng.normal(0, 0.12 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        r = radius * np.clip(1 + wobble + rng.normal(0, 0.03, n_vert), 0.3, None)
        cx, cy = rng.uniform(0, SIDE_PX, 2)
        xy = np.column_stack([cx + r * np.cos(theta), cy + r * np.sin(theta)])
        poly = shapely.Polygon(xy)
        if not poly.is_valid:
            poly = shapely.make_valid(poly)
        polys.append(poly)
    return polys


def best_of(fn: Callable[[], object], repeats: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    """The commit and clean/dirty state of the tree, computed (``benchmarks/_provenance.py``)."""
    return provenance_line()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()

    import anndata as ad

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, SIDE_PX, size=(N_CELLS, 2))
    polys = irregular_polygons(rng)
    n_vertices = [len(shapely.get_coordinates(p)) for p in polys]
    x, y = np.ascontiguousarray(xy[:, 0]), np.ascontiguousarray(xy[:, 1])

    def shapely_no_prefilter() -> np.ndarray:
        owner = np.full(N_CELLS, -1, dtype=np.int64)
        for i, p in enumerate(polys):
            shapely.prepare(p)
            owner[shapely.contains_xy(p, x, y)] = i
        return owner

    def with_method(method: str) -> Callable[[], np.ndarray]:
        return lambda: points_in_polygons(xy, polys, method=method)  # type: ignore[arg-type]

    adata = ad.AnnData(obs=pd.DataFrame(index=pd.RangeIndex(N_CELLS).astype(str)))
    adata.obsm["spatial"] = xy
    classes = [f"region_{i % 7}" for i in range(N_POLYGONS)]

    rows = []
    reference = None
    for name, fn in [
        ("shapely, no prefilter", shapely_no_prefilter),
        ("shapely + bbox (default)", with_method("shapely")),
        ("matplotlib + bbox", with_method("matplotlib")),
        (
            "annotate_from_shapes (AnnData)",
            lambda: annotate_from_shapes(adata, shapes=polys, classes=classes),
        ),
    ]:
        seconds, out = best_of(fn)
        if isinstance(out, np.ndarray):
            if reference is None:
                reference = out
            mismatches = int((out != reference).sum())
        else:
            # classes are first-seen ordered, so polygon i has category code i % 7
            expected = np.where(reference >= 0, reference % 7, -1)
            mismatches = int((out.cat.codes.to_numpy() != expected).sum())
        rows.append((name, seconds, mismatches))
    inside = int((reference >= 0).sum())

    device = f"{cpu_model()}, {os_cpu_count()} cores visible (2-core shared machine)"
    header = (
        f"{N_CELLS:,} cells x {N_POLYGONS} polygons ({min(n_vertices)}-{max(n_vertices)} "
        f"vertices) in a {SIDE_PX:,.0f} px square; {inside:,} cells inside a polygon."
    )
    lines = [
        "| method | best of 3 (s) | cells/s | differs from first row | target <= 5 s |",
        "|---|---:|---:|---:|---|",
    ]
    for name, seconds, mismatches in rows:
        ok = "yes" if seconds <= TARGET_S else "NO"
        lines.append(f"| {name} | {seconds:.3f} | {N_CELLS / seconds:,.0f} | {mismatches} | {ok} |")
    table = "\n".join(lines)
    print(header)
    print(f"device: {device}")
    print(table)

    if not args.no_write:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        block = (
            f"\n## Annotation\n\n"
            f"`python benchmarks/annotate.py` — {stamp}; device: {device}; "
            f"numpy {np.__version__}, shapely {shapely.__version__}; "
            f"{git_commit()}.\n\n{header}\n\n{table}\n"
        )
        if not RESULTS.exists():
            block = "# Benchmark results\n" + block
        with RESULTS.open("a", encoding="utf-8") as fh:
            fh.write(block)
        print(f"appended to {RESULTS}")


def os_cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


if __name__ == "__main__":
    main()
