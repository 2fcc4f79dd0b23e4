"""From a notebook to napari and back: :func:`show`.

In Jupyter, run ``%gui qt`` once (IPython then runs Qt's event loop between cells), then::

    viewer = scai.viewer.show(sdata, color_by="scai_domain")

The window has napari-scai's docks. Whatever is annotated there is written into
``sdata.tables[...].obs['scai_annotation']`` at once (the Annotate dock works on the very
AnnData of the notebook's ``sdata``, not on a copy), and, when ``sdata`` is backed by a store
(``sdata.path``, e.g. after ``scai.io.read("x.zarr")`` or ``scai.io.write``), into the store:
by the dock's autosave, and once more when the window closes, so the last strokes are never
lost. Nothing to call when coming back to the notebook.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any

_current: weakref.ReferenceType | None = None  # the viewer show() opened last


def _alive(viewer) -> bool:
    try:
        window = viewer.window._qt_window
        return window is not None and window.isVisible()
    except (AttributeError, RuntimeError):  # closed: the Qt object is gone
        return False


def _warn_without_qt_event_loop() -> None:
    """In IPython without ``%gui qt`` the window would freeze: say so."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or getattr(shell, "active_eventloop", None) in ("qt", "qt5", "qt6"):
        return
    if type(shell).__name__ in ("ZMQInteractiveShell", "TerminalInteractiveShell"):
        warnings.warn(
            "napari needs Qt's event loop in this notebook: run `%gui qt` in a cell before "
            "scai.viewer.show(...), or the window will not respond.",
            RuntimeWarning,
            stacklevel=3,
        )


def annotate_docks(viewer) -> list:
    """The Annotate docks (widgets with the ``save``/``dirty`` protocol) of ``viewer``."""
    found = []
    for dock in list(getattr(viewer.window, "_dock_widgets", {}).values()):
        widget = dock.widget() if hasattr(dock, "widget") else dock
        inner = getattr(widget, "inner_widget", None) or widget
        for candidate in (inner, widget):
            if type(candidate).__name__ == "AnnotateWidget":
                found.append(candidate)
                break
    return found


def flush_annotations(viewer) -> list:
    """Write every Annotate dock's unsaved annotation to its store now; return the stores.

    Docks whose data has no store (``sdata.path is None``) keep their annotation in memory
    only (it is in ``obs`` already).
    """
    written = []
    for widget in annotate_docks(viewer):
        sdata = getattr(widget, "sdata", None)
        if sdata is None or getattr(sdata, "path", None) is None:
            continue
        widget._wait_for_background_save()  # a running autosave finishes first
        if widget.dirty and widget.save():
            written.append(sdata.path)
    return written


def _flush_on_close(viewer) -> None:
    """Save the annotations when the window closes (before napari tears the docks down)."""
    from qtpy.QtCore import QEvent, QObject

    window = viewer.window._qt_window

    class _CloseFilter(QObject):
        def eventFilter(self, obj, event):  # noqa: N802 - Qt's name
            if event.type() == QEvent.Type.Close:
                try:
                    flush_annotations(viewer)
                except Exception as err:  # noqa: BLE001 - a failed save must not block closing
                    warnings.warn(f"saving the annotations on close failed: {err}", stacklevel=1)
            return False

    filt = _CloseFilter(window)
    window.installEventFilter(filt)  # the window's close button, Ctrl+W ...
    window._scai_close_filter = filt  # keep it alive with the window

    # viewer.close() tears the docks down before the window's Close event: save first.
    napari_close = viewer.window.close

    def close() -> None:
        try:
            flush_annotations(viewer)
        finally:
            napari_close()

    viewer.window.close = close

    # viewer.close() (and a user deleting the layer) removes the layers first: save before
    # the spots or annotation layer of an Annotate dock goes.
    def removing(event) -> None:
        try:
            layer = viewer.layers[event.index]
        except (IndexError, TypeError):
            return
        for widget in annotate_docks(viewer):
            if layer is widget.spots or layer is widget.shapes_layer:
                flush_annotations(viewer)
                return

    viewer.layers.events.removing.connect(removing)


def _add_docks(viewer) -> list:
    from napari_scai.cli import dock_widget_names

    widgets = []
    for name in dock_widget_names():
        _dock, widget = viewer.window.add_plugin_dock_widget("napari-scai", name, tabify=True)
        widgets.append(widget)
    return widgets


def show(
    sdata: Any,
    *,
    color_by: str | None = None,
    viewer: Any = None,
    new: bool = False,
    docks: bool = True,
    title: str = "napari-scai",
) -> Any:
    """Open ``sdata`` in napari from a notebook (or reuse the window opened last).

    Run ``%gui qt`` in the notebook first. The call returns at once; the notebook and the
    window share ``sdata``: annotations drawn in the window appear in
    ``sdata.tables[...].obs['scai_annotation']`` as they are drawn, and in the store
    (``sdata.path``) through the Annotate dock's autosave and again when the window closes.

    Parameters
    ----------
    sdata
        One sample's SpatialData, as :func:`napari_scai.io.read` returns it.
    color_by
        Obs column, feature or ``"obsm_key:j"`` to colour the spots by (default: the first of
        ``scai_domain``, ``layer_manual``, ``scai_annotation`` the table has).
    viewer
        Draw into this ``napari.Viewer``; default: the window ``show`` opened last if it is
        still open, else a new one.
    new
        Always open a new window.
    docks
        Add napari-scai's docks (Tissue overlay, Spatial domains, Annotate, Compare).
    title
        Window title of a new viewer.

    Returns
    -------
    napari.Viewer
        The viewer (also ``napari.current_viewer()``).
    """
    global _current
    import napari

    from napari_scai._napari import _default_color
    from napari_scai.viewer._show import add_sdata, sdata_layers_in

    _warn_without_qt_event_loop()
    if viewer is None and not new and _current is not None:
        last = _current()
        viewer = last if last is not None and _alive(last) else None
    fresh = viewer is None
    if fresh:
        viewer = napari.Viewer(title=title)
    color_by = color_by or _default_color(sdata)
    shown = sdata_layers_in(viewer, sdata)
    if shown and color_by:
        from napari_scai.viewer._show import recolor

        for layer in shown:
            if layer.metadata.get("adata") is not None:
                recolor(layer, color_by)
    elif not shown:
        add_sdata(viewer, sdata, color_by=color_by)
    if fresh:
        if docks:
            _add_docks(viewer)
        _flush_on_close(viewer)
        spots = [ly for ly in viewer.layers if ly.metadata.get("adata") is not None]
        if spots:
            viewer.layers.selection.active = spots[0]
    _current = weakref.ref(viewer)
    return viewer
