"""npe2 entry points: reader and sample data (thin wrappers around io and viewer)."""

from __future__ import annotations

from pathlib import Path

from napari_scai.io import ReadError, detect_format, read
from napari_scai.viewer import sdata_layers


def _default_color(sdata) -> str | None:
    for table in sdata.tables.values():
        for key in ("scai_domain", "layer_manual", "scai_annotation"):
            if key in table.obs.columns:
                return key
    return None


def read_layers(path: str | Path) -> list:
    """Read ``path`` and return napari layer tuples (raises :class:`ReadError` on bad input)."""
    fmt = detect_format(path)
    kwargs = {"require_spatial": True} if fmt == "h5ad" else {}
    sdata = read(path, **kwargs)
    if not sdata.shapes and not sdata.images:
        raise ReadError(
            path,
            "no images and no spatial coordinates to draw",
            "open it in Python with napari_scai.io.read, or add obsm['spatial']",
        )
    return sdata_layers(sdata, color_by=_default_color(sdata))


def _is_10x_h5(path: Path) -> bool:
    """A 10x feature-barcode HDF5 (v3 ``matrix/`` group or v2 per-genome groups)?"""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "matrix" in f:
                return True
            return any(isinstance(g, h5py.Group) and "barcodes" in g for g in f.values())
    except OSError:
        return False


def _is_spatialdata_zarr(path: Path) -> bool:
    """A SpatialData store: zarr root metadata and at least one element group."""
    return any(
        (path / kind).is_dir() for kind in ("images", "labels", "points", "shapes", "tables")
    )


def _claims(path: Path) -> bool:
    """Whether we read ``path``; answers from names and a few ``stat`` calls (one HDF5 peek)."""
    fmt = detect_format(path)
    if fmt == "zarr":
        return _is_spatialdata_zarr(path)
    if fmt == "10x_h5":
        return _is_10x_h5(path)
    return fmt is not None


def get_reader(path: str | list[str]):
    """npe2 reader hook: claim Visium folders, SpatialData stores, ``.h5ad`` and 10x ``.h5``.

    Anything else (an image, a CSV, a folder of TIFFs, a plain OME-Zarr image, a non-10x HDF5)
    is declined at once, so napari's own reader or another plugin takes it.
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, str | Path) or not _claims(Path(path)):
        return None

    def reader(p):
        p = p[0] if isinstance(p, list) else p
        try:
            return read_layers(p)
        except ReadError as err:
            # A napari notification (no traceback dialog); napari then reports "no data".
            from napari.utils.notifications import show_error

            show_error(str(err))
            raise

    return reader


def sample_dlpfc_151673() -> list:
    """npe2 sample data: DLPFC 151673 H&E + spots coloured by the manual layers."""
    from napari_scai.datasets import dlpfc_151673

    return sdata_layers(dlpfc_151673(), color_by="layer_manual")
