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


def unwrap_viewer(viewer):
    """The real viewer behind npe2's public-only proxy (layer identity checks need it)."""
    return getattr(viewer, "__wrapped__", viewer)


def swatch(color: str):
    """A 14 px square icon of ``color`` (legends, class lists)."""
    from qtpy.QtGui import QColor, QIcon, QPixmap

    pix = QPixmap(14, 14)
    pix.fill(QColor(color))
    return QIcon(pix)


def spot_size(layer) -> float:
    """Median point size of a Points layer (its spot diameter in world units)."""
    import numpy as np

    return float(
        np.median(np.broadcast_to(np.asarray(layer.size, dtype=float), (max(len(layer.data), 1),)))
    )


def qt_text(text: str) -> str:
    """``text`` with ``&`` doubled, so Qt shows it instead of taking it as a mnemonic."""
    return text.replace("&", "&&")


def fix_dock_title(widget) -> None:
    """Give the dock holding ``widget`` a mnemonic-safe title (``&`` shown, not eaten).

    napari names a plugin dock by its display name; QMainWindow's tab bar of tabified docks
    reads that title as a mnemonic, so "Annotate & compare" showed as "Annotate _compare".
    The dock's own title bar (a QLabel, no mnemonics) keeps the plain name.
    """
    from qtpy.QtWidgets import QDockWidget

    try:
        parent = widget.parent()
        while parent is not None and not isinstance(parent, QDockWidget):
            parent = parent.parent()
    except RuntimeError:  # the Qt object is gone (viewer closed): nothing to fix
        return
    if parent is None:
        return
    title = parent.windowTitle()
    if "&" in title and "&&" not in title:
        parent.setWindowTitle(qt_text(title))
