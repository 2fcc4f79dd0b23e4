"""SpatialData ``.zarr`` stores: reading, atomic writing and atomic in-place updates.

A store is never modified piecemeal. ``write`` builds the whole store next to the target and
swaps it in with renames; ``update`` writes the changed elements into a staging store next to
the target, then swaps element folders one by one, keeping the old folders until every swap
and the new root metadata are in place, and rolls back on any error. Either way a failure
leaves the previous store readable and unchanged.
"""

from __future__ import annotations

import shutil
import uuid
import warnings
from collections.abc import Iterable
from pathlib import Path

from napari_scai.io._common import ReadError, check_exists

_ELEMENT_TYPES = ("images", "labels", "points", "shapes", "tables")
_ROOT_META = ("zarr.json", ".zattrs", ".zgroup", ".zmetadata")


def is_spatialdata_store(path: str | Path) -> bool:
    """True if ``path`` is a folder with zarr root metadata."""
    path = Path(path)
    return path.is_dir() and any((path / m).exists() for m in _ROOT_META)


def read_zarr(path: str | Path):
    """Read a SpatialData ``.zarr`` store (lazily: images stay on disk)."""
    import spatialdata as sd

    path = Path(path)
    check_exists(path, "the SpatialData store", "check the path of the .zarr folder")
    if not is_spatialdata_store(path):
        raise ReadError(
            path,
            "not a zarr store (no zarr.json/.zgroup at its root)",
            "pass a folder written by SpatialData.write or napari_scai.io.write",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sd.read_zarr(path)
    except Exception as err:  # noqa: BLE001 - zarr/ome-zarr raise many types
        raise ReadError(
            path,
            f"not a readable SpatialData store ({type(err).__name__}: {err})",
            "pass a store written by spatialdata >= 0.4",
        ) from err


def _sibling(path: Path, tag: str) -> Path:
    return path.parent / f".{path.name}.{tag}-{uuid.uuid4().hex[:8]}"


def _write_full(sdata, target: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata.write(target, overwrite=False, update_sdata_path=False)


def write(sdata, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``sdata`` to a new ``.zarr`` store, atomically.

    The store is written to a hidden sibling folder and renamed into place, so ``path`` either
    keeps its old content or has the complete new one. With ``overwrite=True`` an existing store
    is replaced; elements that ``sdata`` reads lazily from that same store are loaded first.

    Returns the path written.
    """
    path = Path(path).absolute()
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"'{path}' exists. Fix: pass overwrite=True, or use napari_scai.io.update to add results to it"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "new")
    if path.exists() and sdata.path is not None and Path(sdata.path).absolute() == path:
        _load_into_memory(sdata)
    try:
        _write_full(sdata, tmp)
        if path.exists():
            old = _sibling(path, "old")
            path.rename(old)
            try:
                tmp.rename(path)
            except BaseException:
                old.rename(path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    sdata.path = path
    return path


def _load_into_memory(sdata) -> None:
    from spatialdata import deepcopy

    # Elements read lazily from the store about to be replaced must be in memory first.
    for name in [*sdata.images, *sdata.labels, *sdata.points]:
        sdata[name] = deepcopy(sdata[name])


def update(
    sdata,
    path: str | Path | None = None,
    elements: Iterable[str] | None = None,
    *,
    remove: Iterable[str] = (),
) -> Path:
    """Write changed elements of ``sdata`` into an existing store, atomically.

    Parameters
    ----------
    sdata
        The SpatialData holding the new versions of the elements.
    path
        The store; default ``sdata.path``. If it does not exist yet, the whole object is written.
    elements
        Names of the elements to (re)write; default: every table and shapes element (the
        places where results and annotations live). Images are never rewritten by default.
    remove
        Names of elements to delete from the store (e.g. an annotation whose last polygon was
        erased), in the same atomic step.

    Returns the path of the store.
    """
    import spatialdata as sd

    if path is None:
        if sdata.path is None:
            raise ValueError(
                "this SpatialData has no store yet. Fix: pass path=... (a .zarr folder)"
            )
        path = sdata.path
    path = Path(path).absolute()
    if not path.exists():
        return write(sdata, path)
    if not is_spatialdata_store(path):
        raise ReadError(
            path, "not a zarr store", "pass the .zarr folder of a SpatialData, or a new path"
        )
    names = list(elements) if elements is not None else [*sdata.tables.keys(), *sdata.shapes.keys()]
    located = []
    for name in names:
        kind = next((t for t in _ELEMENT_TYPES if name in getattr(sdata, t)), None)
        if kind is None:
            raise KeyError(
                f"'{name}' is not an element of this SpatialData "
                f"(it has {[n for _, n, _ in sdata.gen_elements()]}). Fix: pass one of those names"
            )
        located.append((kind, name))

    removing = [
        (kind, name)
        for name in remove
        for kind in _ELEMENT_TYPES
        if (path / kind / name).exists() and (kind, name) not in located
    ]
    staging = _sibling(path, "stage")
    swapped: list[tuple[Path, Path | None]] = []  # (destination, backup or None)
    meta_backup = _sibling(path, "meta")
    try:
        # 1. Everything that can fail slowly happens away from the store.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tables whose regions are not in the subset
            subset = sd.SpatialData(
                **{k: {n: sdata[n] for kk, n in located if kk == k} for k in _ELEMENT_TYPES}
            )
        _write_full(subset, staging)
        meta_backup.mkdir()
        for m in _ROOT_META:
            if (path / m).exists():
                shutil.copy2(path / m, meta_backup / m)
        # 2. Swap element folders with renames (atomic each), remembering how to undo them.
        for kind, name in located:
            src = staging / kind / name
            dst = path / kind / name
            (path / kind).mkdir(exist_ok=True)
            if not (path / kind / "zarr.json").exists() and (staging / kind / "zarr.json").exists():
                shutil.copy2(staging / kind / "zarr.json", path / kind / "zarr.json")
            backup = None
            if dst.exists():
                # Backups live outside the store (same file system) so the metadata
                # consolidated below never lists them.
                backup = meta_backup / f"{kind}__{name}"
                dst.rename(backup)
            swapped.append((dst, backup))
            src.rename(dst)
        for kind, name in removing:
            dst = path / kind / name
            backup = meta_backup / f"{kind}__{name}"
            dst.rename(backup)
            swapped.append((dst, backup))
        # 3. New root metadata (consolidated listing of the elements).
        _consolidate(path)
    except BaseException:
        for dst, backup in reversed(swapped):
            if dst.exists():
                shutil.rmtree(dst, ignore_errors=True)
            if backup is not None and backup.exists():
                backup.rename(dst)
        if meta_backup.exists():
            for m in _ROOT_META:
                if (meta_backup / m).exists():
                    shutil.copy2(meta_backup / m, path / m)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(meta_backup, ignore_errors=True)
    sdata.path = path
    return path


def _consolidate(path: Path) -> None:
    """Rewrite the store's consolidated metadata so readers see added elements."""
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(path))
