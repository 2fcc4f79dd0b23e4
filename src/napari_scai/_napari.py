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


def get_reader(path: str | list[str]):
    """npe2 reader hook: claim Visium folders, SpatialData stores, ``.h5ad`` and 10x ``.h5``."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if detect_format(path) is None:
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
