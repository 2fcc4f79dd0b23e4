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


def refill_combo(combo, names: list[str]) -> bool:
    """Replace a combo box's items with ``names``, keeping the current choice when still offered.

    Signals are blocked while refilling; returns True if the items changed.
    """
    old = [combo.itemText(i) for i in range(combo.count())]
    if old == list(names):
        return False
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(list(names))
    if current in names:
        combo.setCurrentText(current)
    combo.blockSignals(False)
    return True
