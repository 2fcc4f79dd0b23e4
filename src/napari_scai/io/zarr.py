"""SpatialData ``.zarr`` stores: reading, crash-proof writing and crash-proof in-place updates.

Design (crash-proof at any instant, SIGKILL and power loss included): every change is staged
beside the store, then a small journal file ``.NAME.zarr.journal.json``, itself replaced
atomically, names the staged folders and the renames to make; the renames follow, and a second
atomic journal write marks the commit. Whoever next opens or writes the store (under a lock on
its parent folder) finds the journal and rolls the change back (not yet committed) or forward
(committed), and removes any stale ``.NAME.zarr.*`` staging folder, so the store always holds
exactly the old or the new content.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from napari_scai.io._common import (
    ReadError,
    check_exists,
    restore_uns_images,
    tables_without_uns_images,
)

_ELEMENT_TYPES = ("images", "labels", "points", "shapes", "tables")
_ROOT_META = ("zarr.json", ".zattrs", ".zgroup", ".zmetadata")
_META_FILES = ("zarr.json", ".zattrs", ".zgroup", ".zarray", ".zmetadata")


def is_spatialdata_store(path: str | Path) -> bool:
    """True if ``path`` is a folder with zarr root metadata."""
    path = Path(path)
    return path.is_dir() and any((path / m).exists() for m in _ROOT_META)


def _broken_metadata_file(path: Path) -> tuple[Path, str] | None:
    """The first zarr metadata file inside ``path`` that is not valid JSON, and why."""
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            if name in _META_FILES:
                file = Path(root) / name
                try:
                    json.loads(file.read_bytes())
                except (ValueError, OSError) as err:
                    return file, f"{type(err).__name__}: {err}"
    return None


def read_zarr(path: str | Path):
    """Read a SpatialData ``.zarr`` store (lazily: images stay on disk).

    An interrupted :func:`write` or :func:`update` is finished or undone first (see the module
    docstring), so the store read is always a complete one.
    """
    import spatialdata as sd

    path = Path(path)
    recover(path)
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
            sdata = sd.read_zarr(path)
    except Exception as err:  # noqa: BLE001 - zarr/ome-zarr raise many types
        broken = _broken_metadata_file(path)
        if broken is not None:
            file, why = broken
            raise ReadError(
                path,
                f"the metadata file '{file.relative_to(path)}' inside the store is corrupted ({why})",
                "restore that file from a backup copy of the store, or write the store again",
            ) from err
        raise ReadError(
            path,
            f"not a readable SpatialData store ({type(err).__name__}: {err})",
            "pass a store written by spatialdata >= 0.4",
        ) from err
    restore_uns_images(sdata)
    return sdata


# ---------------------------------------------------------------------------------------------
# Crash safety: lock, journal, staging folders, recovery


def _sibling(path: Path, tag: str) -> Path:
    return path.parent / f".{path.name}.{tag}-{uuid.uuid4().hex[:8]}"


def _journal_path(path: Path) -> Path:
    return path.parent / f".{path.name}.journal.json"


def _stale_pattern(path: Path) -> re.Pattern:
    return re.compile(
        rf"^\.{re.escape(path.name)}\.(new|old|stage|meta|trash|journal)"
        r"(-[0-9a-f]{8})?(\.json)?(\.tmp-[0-9a-f]{8})?$"
    )


def _stale_siblings(path: Path) -> list[Path]:
    if not path.parent.is_dir():
        return []
    pattern = _stale_pattern(path)
    return sorted(p for p in path.parent.iterdir() if pattern.match(p.name))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the store's parent folder (serialises writers and recovery)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, one writer assumed
        yield
        return
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _fsync_enabled() -> bool:
    # fsync guards against power loss only (a killed process loses nothing the kernel holds);
    # NAPARI_SCAI_FSYNC=0 turns it off, e.g. for the SIGKILL trials in the tests.
    return os.environ.get("NAPARI_SCAI_FSYNC", "1") != "0"


def _fsync_dir(path: Path) -> None:
    if not _fsync_enabled():
        return
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_tree(path: Path) -> None:
    """Flush every file and folder below ``path`` to disk (so a commit survives power loss)."""
    if not path.exists() or not _fsync_enabled():
        return
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                fd = os.open(Path(root) / name, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        _fsync_dir(Path(root))


def _atomic_write_bytes(target: Path, data: bytes) -> None:
    """Replace ``target`` by ``data`` in one rename (readers see the old or the new file)."""
    tmp = target.parent / f"{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        if _fsync_enabled():
            os.fsync(fh.fileno())
    os.replace(tmp, target)
    _fsync_dir(target.parent)


def _write_journal(path: Path, journal: dict) -> None:
    _atomic_write_bytes(_journal_path(path), json.dumps(journal, indent=1).encode())


def _rmtree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        with contextlib.suppress(OSError):
            path.unlink()


def _rollback_write(path: Path, journal: dict) -> None:
    staging = path.parent / journal["staging"]
    backup = path.parent / journal["backup"]
    if not staging.exists():  # the staged store was renamed into place: committed
        _rmtree(backup)
        return
    if not path.exists() and backup.exists():
        backup.rename(path)
        _fsync_dir(path.parent)
    _rmtree(staging)


def _rollback_update(path: Path, journal: dict) -> None:
    backup = path.parent / journal["backup"]
    for swap in reversed(journal["swaps"]):
        dst = path / swap["kind"] / swap["name"]
        saved = backup / f"{swap['kind']}__{swap['name']}"
        trash = backup / f"{swap['kind']}__{swap['name']}.trash"
        if swap["had_old"]:
            if saved.exists():
                if dst.exists():
                    _rmtree(trash)
                    dst.rename(trash)
                saved.rename(dst)
        elif dst.exists():
            _rmtree(trash)
            dst.rename(trash)
    for m in _ROOT_META:
        if m in journal["root_meta"]:
            if (backup / m).exists():
                _atomic_write_bytes(path / m, (backup / m).read_bytes())
        elif (path / m).exists():
            (path / m).unlink()
    for kind in journal["created_groups"]:
        group = path / kind
        if group.is_dir() and all(p.name in _META_FILES for p in group.iterdir()):
            _rmtree(group)
    _fsync_dir(path)


def _recover_locked(path: Path) -> None:
    """Finish or undo an interrupted change, then remove stale staging folders (lock held)."""
    jpath = _journal_path(path)
    if jpath.exists():
        try:
            journal = json.loads(jpath.read_bytes())
        except ValueError:
            journal = None  # a torn journal cannot exist (atomic replace); be safe anyway
        if journal is not None:
            if journal.get("phase") != "committed":
                if journal["op"] == "write":
                    _rollback_write(path, journal)
                else:
                    _rollback_update(path, journal)
            elif journal["op"] == "write":
                _rmtree(path.parent / journal["backup"])
    for stale in _stale_siblings(path):
        if stale != jpath:
            _rmtree(stale)
    if jpath.exists():
        jpath.unlink()
    _fsync_dir(path.parent)


def recover(path: str | Path) -> bool:
    """Finish or undo a write/update of ``path`` that a crash interrupted; True if one was.

    Also removes stale hidden ``.NAME.zarr.*`` staging folders beside the store. Called by
    :func:`read_zarr`, :func:`write` and :func:`update`; cheap when there is nothing to do.
    """
    path = Path(path).absolute()
    if not _stale_siblings(path):
        return False
    try:
        with _locked(path):
            found = bool(_stale_siblings(path))
            if found:
                _recover_locked(path)
            return found
    except PermissionError:  # read-only folder: read what is there
        return False


def _for_store(sdata, stored_images):
    """``sdata`` with tables whose scanpy-style ``uns`` images are left out when the store
    holds the same pixels as image elements (:func:`restore_uns_images` refills them)."""
    import spatialdata as sd

    tables = tables_without_uns_images(dict(sdata.tables), stored_images)
    if all(tables[n] is sdata.tables[n] for n in tables):
        return sdata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sd.SpatialData(
            images=dict(sdata.images),
            labels=dict(sdata.labels),
            points=dict(sdata.points),
            shapes=dict(sdata.shapes),
            tables=tables,
            attrs=dict(sdata.attrs),
        )


def _write_full(sdata, target: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata.write(target, overwrite=False, update_sdata_path=False)


def write(sdata, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``sdata`` to a new ``.zarr`` store, crash-proof.

    The store is written to a hidden sibling folder and renamed into place under a journal (see
    the module docstring), so ``path`` either keeps its old content or has the complete new one,
    even if the process is killed. With ``overwrite=True`` an existing store is replaced;
    elements that ``sdata`` reads lazily from that same store are loaded first.

    Returns the path written.
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    recover(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"'{path}' exists. Fix: pass overwrite=True, or use napari_scai.io.update to add results to it"
        )
    if path.exists() and sdata.path is not None and Path(sdata.path).absolute() == path:
        _load_into_memory(sdata)
    with _locked(path):
        _recover_locked(path)
        _write_locked(sdata, path)
    sdata.path = path
    return path


def _write_locked(sdata, path: Path) -> None:
    staging = _sibling(path, "new")
    backup = _sibling(path, "old")
    journal = {"op": "write", "phase": "prepared", "staging": staging.name, "backup": backup.name}
    _write_journal(path, journal)
    try:
        _write_full(_for_store(sdata, sdata.images), staging)
        _fsync_tree(staging)
        if path.exists():
            path.rename(backup)
        staging.rename(path)  # the commit point: the staged store no longer exists
        _fsync_dir(path.parent)
    except BaseException:
        _rollback_write(path, journal)
        _journal_path(path).unlink(missing_ok=True)
        raise
    _rmtree(backup)
    _journal_path(path).unlink(missing_ok=True)


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
    """Write changed elements of ``sdata`` into an existing store, crash-proof.

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

    Returns the path of the store. After a crash at any moment the store holds either its
    previous content or the complete update (see the module docstring).
    """
    import spatialdata as sd

    if path is None:
        if sdata.path is None:
            raise ValueError(
                "this SpatialData has no store yet. Fix: pass path=... (a .zarr folder)"
            )
        path = sdata.path
    path = Path(path).absolute()
    recover(path)
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
    remove = list(remove)
    with _locked(path):
        _recover_locked(path)
        _update_locked(sd, sdata, path, located, remove)
    sdata.path = path
    return path


def _update_locked(sd, sdata, path: Path, located: list, remove: list) -> None:
    removing = [
        (kind, name)
        for name in remove
        for kind in _ELEMENT_TYPES
        if (path / kind / name).exists() and (kind, name) not in located
    ]
    staging = _sibling(path, "stage")
    backup = _sibling(path, "meta")
    journal = None
    try:
        # 1. Everything that can fail slowly happens away from the store (a crash here leaves
        #    only a stale staging folder, removed on the next open or write).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tables whose regions are not in the subset
            subset = sd.SpatialData(
                **{k: {n: sdata[n] for kk, n in located if kk == k} for k in _ELEMENT_TYPES}
            )
        in_store = {n for n in sdata.images if (path / "images" / n).exists()}
        _write_full(
            _for_store(subset, in_store | {n for k, n in located if k == "images"}), staging
        )
        _fsync_tree(staging)
        backup.mkdir()
        root_meta = [m for m in _ROOT_META if (path / m).exists()]
        for m in root_meta:
            shutil.copy2(path / m, backup / m)
        _fsync_tree(backup)
        swaps = [{"kind": k, "name": n, "had_old": (path / k / n).exists()} for k, n in located] + [
            {"kind": k, "name": n, "had_old": True} for k, n in removing
        ]
        created = sorted({k for k, _ in located if not (path / k).exists()})
        journal = {
            "op": "update",
            "phase": "prepared",
            "staging": staging.name,
            "backup": backup.name,
            "swaps": swaps,
            "root_meta": root_meta,
            "created_groups": created,
        }
        _write_journal(path, journal)
        # 2. Swap element folders with renames (atomic each); the journal says how to undo them.
        for kind in created:
            (path / kind).mkdir()
            if (staging / kind / "zarr.json").exists():
                shutil.copy2(staging / kind / "zarr.json", path / kind / "zarr.json")
        for swap in swaps:
            kind, name = swap["kind"], swap["name"]
            dst = path / kind / name
            if swap["had_old"]:
                # Backups live outside the store (same file system) so the metadata
                # consolidated below never lists them.
                dst.rename(backup / f"{kind}__{name}")
            if (staging / kind / name).exists():
                (staging / kind / name).rename(dst)
        # 3. New root metadata (consolidated listing of the elements), then the commit.
        _consolidate(path)
        for m in _ROOT_META:
            if (path / m).exists() and _fsync_enabled():
                with open(path / m, "rb") as fh:
                    os.fsync(fh.fileno())
        _fsync_dir(path)
        journal["phase"] = "committed"
        _write_journal(path, journal)
    except BaseException:
        if journal is not None:
            _rollback_update(path, journal)
        _rmtree(staging)
        _rmtree(backup)
        _journal_path(path).unlink(missing_ok=True)
        raise
    _rmtree(staging)
    _rmtree(backup)
    _journal_path(path).unlink(missing_ok=True)


def _consolidate(path: Path) -> None:
    """Rewrite the store's consolidated metadata so readers see added elements."""
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(path))
