"""Small helpers shared by the dock widgets."""

from __future__ import annotations


def scai_point_layers(viewer) -> list:
    """Spots/cells layers drawn by napari-scai (they carry ``metadata['scai']`` and a table)."""
    return [
        ly
        for ly in viewer.layers
        if ly._type_string == "points"
        and ly.metadata.get("scai") is not None
        and ly.metadata.get("adata") is not None
    ]


def notify_error(message: str) -> None:
    """Show an error as a napari notification (never a traceback dialog)."""
    from napari.utils.notifications import show_error

    show_error(message)
