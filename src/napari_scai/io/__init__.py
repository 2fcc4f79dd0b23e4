"""Readers and writers: every format opens as one :class:`spatialdata.SpatialData` per sample.

=====================  =================================================================
``read``               any supported path (dispatches on what it finds)
``read_visium``        Space Ranger ``outs/`` (v1/v2 positions, parquet, lowres/hires)
``read_10x_h5``        10x HDF5 with several feature types (RNA, CITE-seq ADT, ATAC peaks)
``read_h5ad``          AnnData with ``obsm['spatial']`` (and images in ``uns``), CITE-seq
``read_zarr``          SpatialData ``.zarr`` store
``write``              new store, atomic
``update``             add/replace tables and shapes in a store, atomic
``recover``            finish or undo a write/update a crash interrupted (automatic)
=====================  =================================================================
"""

from __future__ import annotations

from pathlib import Path

from napari_scai.io._common import (
    COORDINATE_SYSTEM,
    INSTANCE_KEY,
    REGION_KEY,
    ReadError,
    ScaiWarning,
)
from napari_scai.io.h5ad import read_h5ad
from napari_scai.io.tenx import read_10x_h5
from napari_scai.io.visium import is_visium_folder, read_visium
from napari_scai.io.zarr import is_spatialdata_store, read_zarr, recover, update, write

__all__ = [
    "COORDINATE_SYSTEM",
    "INSTANCE_KEY",
    "REGION_KEY",
    "ReadError",
    "ScaiWarning",
    "detect_format",
    "read",
    "read_10x_h5",
    "read_h5ad",
    "read_visium",
    "read_zarr",
    "recover",
    "update",
    "write",
]


def detect_format(path: str | Path) -> str | None:
    """Return ``'visium'``, ``'zarr'``, ``'h5ad'``, ``'10x_h5'`` or None for a path."""
    path = Path(path)
    if path.is_dir():
        if is_spatialdata_store(path):
            return "zarr"
        if is_visium_folder(path) or is_visium_folder(path / "outs"):
            return "visium"
        return None
    name = path.name.lower()
    if name.endswith(".h5ad"):
        return "h5ad"
    if name.endswith(".h5"):
        return "10x_h5"
    return None


def read(path: str | Path, **kwargs):
    """Open any supported path as a SpatialData (see the module docstring for formats)."""
    path = Path(path)
    recover(path)  # a write/update a crash interrupted is finished or undone first
    if not path.exists():
        raise ReadError(
            path, "the path does not exist", "check the spelling, or give the full path"
        )
    fmt = detect_format(path)
    if fmt == "zarr":
        return read_zarr(path)
    if fmt == "visium":
        return read_visium(path if is_visium_folder(path) else path / "outs", **kwargs)
    if fmt == "h5ad":
        return read_h5ad(path, **kwargs)
    if fmt == "10x_h5":
        return read_10x_h5(path, **kwargs)
    if path.is_dir():
        h5ads = sorted(p.name for p in path.glob("*.h5ad"))
        if len(h5ads) > 1:
            raise ReadError(
                path,
                f"the folder holds {len(h5ads)} .h5ad files ({', '.join(h5ads)}), so which to open "
                "is not clear",
                "pass one of those files",
            )
        if len(h5ads) == 1:
            return read_h5ad(path / h5ads[0], **kwargs)
    raise ReadError(
        path,
        "unknown format",
        "pass a Space Ranger 'outs' folder, a SpatialData .zarr folder, an AnnData .h5ad or a 10x .h5 file",
    )
