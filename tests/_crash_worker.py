"""Fork server for the SIGKILL trials of ``tests/test_io_crash.py``.

Imports everything once, builds the old (``a``) and new (``b``) versions of a small synthetic
section in memory, then for each request line ``{"op", "path", "delay"}`` forks a child that
runs ``io.write``/``io.update`` and kills it with SIGKILL after ``delay`` seconds (``None``:
let it finish), or has it SIGKILL itself just before its ``die_at_step``-th file-system step
(``count_steps``: exit with the number of steps instead). Replies one JSON line per request:
whether the child was killed (and its exit code, -9 for SIGKILL) and how long it ran.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.geometry import Polygon

ANNOTATION_ELEMENT = "scai_annotations"
ANNOTATION_KEY = "scai_annotation"


def make(version: str):
    """Old (``"a"``) or new (``"b"``) content: image, circles, table, annotation polygons."""
    import spatialdata as sd
    from anndata import AnnData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity

    n = 120
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (n, 2))
    circles = ShapesModel.parse(
        xy, geometry=0, radius=np.full(n, 2.0), transformations={"global": Identity()}
    )
    circles.index.name = "instance_id"
    obs = pd.DataFrame(
        {"region": pd.Categorical(["cells"] * n), "instance_id": np.arange(n)},
        index=[f"c{i}" for i in range(n)],
    )
    if version == "a":
        polys, classes = [Polygon([(0, 0), (50, 0), (50, 50)])], ["tumour"]
        labels = np.where(xy[:, 0] > xy[:, 1], "tumour", None)
    else:
        polys = [Polygon([(0, 0), (60, 0), (60, 60)]), Polygon([(0, 60), (40, 100), (0, 100)])]
        classes = ["tumour", "stroma"]
        labels = np.where(xy[:, 0] > 50, "tumour", "stroma")
        obs["scai_domain"] = pd.Categorical(np.arange(n) % 3)
    obs[ANNOTATION_KEY] = pd.Categorical(labels)
    table = TableModel.parse(
        AnnData(rng.poisson(2, (n, 8)).astype(np.float32), obs=obs),
        region="cells",
        region_key="region",
        instance_key="instance_id",
    )
    annotations = ShapesModel.parse(
        gpd.GeoDataFrame({"class": classes}, geometry=polys),
        transformations={"global": Identity()},
    )
    image = Image2DModel.parse(
        np.full((3, 24, 24), 7 if version == "a" else 9, dtype=np.uint8), dims=("c", "y", "x")
    )
    return sd.SpatialData(
        images={"he": image},
        shapes={"cells": circles, ANNOTATION_ELEMENT: annotations},
        tables={"rna": table},
    )


def _run(op: str, sdata, path: str) -> None:
    from napari_scai import io

    if op == "write":
        io.write(sdata, path, overwrite=True)
    else:  # what a Save in the Annotate dock does: new table and polygons, images untouched
        io.update(sdata, path, elements=["rna", ANNOTATION_ELEMENT])


def _kill_at_step(die_at: int | None) -> list[int]:
    """Count the file-system steps ``napari_scai/io/zarr.py`` takes (renames, replaces,
    deletions, copies, mkdirs); SIGKILL this process just before step ``die_at``."""
    import pathlib
    import shutil

    counter = [0]
    here = os.path.join("napari_scai", "io", "zarr.py")

    def wrap(owner, name):
        real = getattr(owner, name)

        def hooked(*args, **kwargs):
            if sys._getframe(1).f_code.co_filename.endswith(here):
                counter[0] += 1
                if counter[0] == die_at:
                    os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)

        setattr(owner, name, hooked)

    for owner, name in [
        (os, "replace"),
        (pathlib.Path, "rename"),
        (pathlib.Path, "unlink"),
        (pathlib.Path, "mkdir"),
        (shutil, "rmtree"),
        (shutil, "copy2"),
    ]:
        wrap(owner, name)
    return counter


def main() -> None:
    # Import what a write needs up front (no store I/O here: the children do that).
    import ome_zarr.writer  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import zarr  # noqa: F401

    import napari_scai.io  # noqa: F401

    new = make("b")
    # Warm up: one write and update in this process (zarr resets its event loop in a forked
    # child; dask computes with the synchronous scheduler in the children, see below).
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        _run("write", make("a"), f"{scratch}/w.zarr")
        _run("update", make("b"), f"{scratch}/w.zarr")
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # child
            try:
                import dask

                dask.config.set(scheduler="synchronous")  # no thread pool inherited from the parent
                counter = _kill_at_step(req.get("die_at_step"))
                _run(req["op"], new, req["path"])
                if req.get("count_steps"):
                    os._exit(min(counter[0], 255))
            except BaseException:  # noqa: BLE001
                import traceback

                traceback.print_exc()
                os._exit(1)
            os._exit(0)
        killed, status = False, None
        delay = req.get("delay")
        if delay is not None:
            deadline = start + delay
            while status is None and time.perf_counter() < deadline:
                done, st = os.waitpid(pid, os.WNOHANG)
                if done:
                    status = st
                else:
                    time.sleep(0.0005)
            if status is None:
                os.kill(pid, signal.SIGKILL)
                killed = True
        if status is None:
            _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        print(
            json.dumps({"killed": killed, "code": code, "seconds": time.perf_counter() - start}),
            flush=True,
        )


if __name__ == "__main__":
    main()
