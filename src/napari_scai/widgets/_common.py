"""Small helpers shared by the dock widgets."""

from __future__ import annotations

from qtpy.QtCore import QObject, Signal


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


class ProgressRelay(QObject):
    """Carries progress from the worker thread to the GUI thread (queued signal)."""

    progress = Signal(int, int, str)


class SourceLayerChoice:
    """The dock's choice of a napari-scai spots/cells layer (``layer_combo``).

    Derived layers (a confidence map, a joint-cluster map) are not offered. A dock that mixes
    this in has ``viewer`` and ``layer_combo`` and implements ``_refresh_tables()``.
    """

    @property
    def layer(self):
        name = self.layer_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def refresh_layers(self, *_args) -> None:
        layers = scai_point_layers(self.viewer)
        refill_combo(
            self.layer_combo,
            [ly.name for ly in layers if not ly.metadata["scai"].extra.get("derived")],
        )
        self._refresh_tables()


class ModelRunner:
    """Run / Cancel / progress wiring shared by the docks that run a model in a worker thread.

    A dock that mixes this in has ``progress`` (QProgressBar), ``status`` (QLabel),
    ``cancel_button`` and the buttons that start a run (:meth:`_run_buttons`, disabled while
    one runs), sets ``self._cancel`` to a ``threading.Event`` handed to the model, and
    implements ``_on_done(result)``. ``task_name`` names the task in error notifications.
    """

    task_name = "The computation"
    _cancel = None
    _succeeded = False

    def _run_buttons(self) -> list:
        return [self.run_button]

    def _start(self, job, device: str) -> None:
        """Run ``job()`` off the main thread; its return value goes to ``_on_done``."""
        from napari.qt.threading import create_worker

        self._succeeded = False
        # Errors are handled in _on_error (Cancelled included), not re-raised in the GUI thread.
        self.worker = create_worker(job, _start_thread=False, _ignore_errors=True)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        for button in self._run_buttons():
            button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.status.setText(f"running on {device}…")
        self.worker.start()

    def cancel(self) -> None:
        """Ask the running model to stop at its next check."""
        if self._cancel is not None:
            self._cancel.set()
            self.status.setText("cancelling…")

    def _on_progress(self, step: int, total: int, message: str) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(min(step, max(total, 1)))
        if message:
            self.status.setText(message)

    def _on_returned(self, result) -> None:
        self._succeeded = True
        self._on_done(result)

    def _on_done(self, result) -> None:  # pragma: no cover - every dock overrides it
        raise NotImplementedError

    def _on_error(self, err: Exception) -> None:
        from napari_scai.models import Cancelled

        if isinstance(err, Cancelled):
            self.status.setText("cancelled: nothing was written")
        else:
            self.status.setText(f"failed: {err}")
            notify_error(f"{self.task_name} failed: {err}")

    def _on_finished(self) -> None:
        for button in self._run_buttons():
            button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if self._succeeded else 0)
        self._cancel = None
