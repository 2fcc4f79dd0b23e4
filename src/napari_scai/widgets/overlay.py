"""Tissue overlay dock: colour spots/cells by any key, legend, colorbar limits, screenshot export."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QComboBox,
    QCompleter,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_scai.viewer import coordinate_systems, recolor, set_coordinate_system
from napari_scai.viewer._export import save_figure
from napari_scai.widgets._common import notify_error, refill_combo
from napari_scai.widgets.legend import LegendWidget


def colourable_layers(viewer) -> list:
    """Layers drawn by napari-scai from a table: spots/cells Points, polygon Shapes, raster Labels."""
    return [
        ly
        for ly in viewer.layers
        if ly._type_string in ("points", "shapes", "labels")
        and ly.metadata.get("scai") is not None
        and ly.metadata.get("adata") is not None
    ]


def color_keys(adata) -> list[str]:
    """Keys offered for colouring: obs columns, then features (symbols where known), then obsm columns."""
    keys = [c for c in adata.obs.columns if c not in ("region", "instance_id")]
    if "gene_symbol" in adata.var.columns:
        keys += list(dict.fromkeys(adata.var["gene_symbol"].astype(str)))
    else:
        keys += list(adata.var_names.astype(str))
    for name, value in adata.obsm.items():
        if name == "spatial" or not hasattr(value, "shape") or len(value.shape) != 2:
            continue
        keys += [f"{name}:{j}" for j in range(min(value.shape[1], 50))]
    return keys


def colorbar_pixmap(colormap: str, width: int = 200, height: int = 12) -> QPixmap:
    from matplotlib import colormaps

    rgba = (colormaps[colormap](np.linspace(0, 1, width))[:, :3] * 255).astype(np.uint8)
    img = np.ascontiguousarray(np.repeat(rgba[None], height, axis=0))
    qimg = QImage(img.data, width, height, 3 * width, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(qimg.copy())


class OverlayWidget(QWidget):
    """Colour a spots/cells layer by an obs column, a gene/protein/peak, or an obsm column.

    Also picks the coordinate system the sample is drawn in, shows a legend (categorical:
    click to hide a class, double-click to recolour it, written to ``uns``) or a colorbar
    with editable limits (continuous), and saves the view with its legend as a PNG.
    """

    def __init__(
        self, napari_viewer, pick_color: Callable[[str], str | None] | None = None
    ) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.layer_combo = QComboBox()
        self.cs_combo = QComboBox()
        self.cs_combo.setToolTip("Coordinate system the sample is drawn in")
        self.key_combo = QComboBox()
        self.key_combo.setEditable(True)
        self.key_combo.lineEdit().setPlaceholderText("choose a column or gene")
        self.key_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.key_combo.completer().setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
        self.key_combo.completer().setFilterMode(Qt.MatchFlag.MatchContains)
        self.key_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.key_combo.setMinimumContentsLength(12)  # long names do not widen the dock
        self.key_label = QLabel()  # what is drawn, elided; the tooltip has the full name
        self.key_label.setObjectName("overlay_key_label")
        self.colorbar = QLabel()
        self.colorbar.setPixmap(colorbar_pixmap("viridis"))
        self.vmin = QDoubleSpinBox()
        self.vmax = QDoubleSpinBox()
        for box in (self.vmin, self.vmax):
            box.setDecimals(3)
            box.setRange(-1e12, 1e12)
            box.setKeyboardTracking(False)
        self.values_combo = QComboBox()
        self.values_combo.addItem("log-normalised", "lognorm")
        self.values_combo.addItem("raw", "raw")
        self.values_combo.setToolTip(
            "Gene values: log1p of counts per 10,000 (scanpy's normalize_total + log1p), or X "
            "as stored. Limits default to the 1st-99th percentiles."
        )
        self.values_label = QLabel("Values")
        self.legend = LegendWidget(pick_color=pick_color)
        self.export_button = QPushButton("Save view as PNG…")

        form = QFormLayout()
        form.addRow("Layer", self.layer_combo)
        form.addRow("Coordinates", self.cs_combo)
        form.addRow("Colour by", self.key_combo)
        form.addRow(self.values_label, self.values_combo)
        self.colorbar_row = QWidget()
        bar = QHBoxLayout(self.colorbar_row)
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addWidget(self.vmin)
        bar.addWidget(self.colorbar, 1)
        bar.addWidget(self.vmax)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.key_label)
        layout.addWidget(self.colorbar_row)
        layout.addWidget(self.legend, 1)
        layout.addWidget(self.export_button)

        self.style = None
        self.value_mode = "auto"  # gene values: "auto" until the user picks one
        self._show_style(None)
        self._busy = False  # True while this widget recolours (its own events are not news)
        self._watched = None
        self.layer_combo.currentIndexChanged.connect(self._on_layer_changed)
        self.cs_combo.activated.connect(
            lambda _i: self.set_coordinate_system(self.cs_combo.currentText())
        )
        self.key_combo.activated.connect(lambda _i: self.set_key(self.key_combo.currentText()))
        self.key_combo.lineEdit().returnPressed.connect(
            lambda: self.set_key(self.key_combo.currentText())
        )
        self.values_combo.activated.connect(lambda _i: self._on_values())
        self.vmin.valueChanged.connect(self._on_limits)
        self.vmax.valueChanged.connect(self._on_limits)
        self.legend.visibilityChanged.connect(lambda _h: self._apply())
        self.legend.colorChanged.connect(self.set_category_color)
        self.export_button.clicked.connect(self._on_export)
        self.viewer.layers.events.inserted.connect(self.refresh_layers)
        self.viewer.layers.events.removed.connect(self.refresh_layers)
        self.refresh_layers()

    # --- state -----------------------------------------------------------------------------
    @property
    def layer(self):
        name = self.layer_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def refresh_layers(self, *_args) -> None:
        refill_combo(self.layer_combo, [ly.name for ly in colourable_layers(self.viewer)])
        self._on_layer_changed()

    def _watch(self, layer) -> None:
        """Follow recolourings of ``layer`` made elsewhere (API, other widgets): keep legend in sync."""
        old = self._watched
        if old is layer:
            return
        if old is not None:
            old.events.features.disconnect(self._on_features)
        self._watched = layer
        if layer is not None:
            layer.events.features.connect(self._on_features)

    def _on_features(self, *_args) -> None:
        layer = self.layer
        if self._busy or layer is None or layer is not self._watched:
            return
        style = layer.metadata["scai"].extra.get("style")
        if style is not None and style is not self.style:
            self.key_combo.blockSignals(True)
            self.key_combo.setCurrentText(style.key)
            self.key_combo.blockSignals(False)
            self._show_style(style)

    def _on_layer_changed(self, *_args) -> None:
        layer = self.layer
        self._watch(layer)
        self.key_combo.blockSignals(True)
        self.key_combo.clear()
        self.cs_combo.blockSignals(True)
        self.cs_combo.clear()
        self.style = None
        if layer is not None:
            source = layer.metadata["scai"]
            self.key_combo.addItems(color_keys(layer.metadata["adata"]))
            sdata = layer.metadata.get("sdata")
            if sdata is not None:
                self.cs_combo.addItems(coordinate_systems(sdata))
                self.cs_combo.setCurrentText(source.coordinate_system)
            if source.color_key:
                self.key_combo.setCurrentText(source.color_key)
                self._show_style(source.extra.get("style"))
        if self.style is None:
            # nothing drawn by a key: say so, rather than show the first key over grey cells
            self.key_combo.setCurrentIndex(-1)
            self.key_combo.setEditText("")
            self._show_style(None)
        self.cs_combo.blockSignals(False)
        self.key_combo.blockSignals(False)

    # --- actions -----------------------------------------------------------------------------
    def _recolor(self, layer, key: str, **style_kwargs):
        self._busy = True
        try:
            return recolor(layer, key, **style_kwargs)
        finally:
            self._busy = False

    def set_key(self, key: str) -> None:
        """Colour the current layer by ``key``; updates layer, legend and colorbar in one step."""
        layer = self.layer
        if layer is None or not key:
            return
        try:
            style = self._recolor(layer, key, values=self.value_mode)
        except KeyError as err:
            notify_error(str(err.args[0]))
            return
        self.key_combo.setCurrentText(key)
        self._show_style(style)

    def set_coordinate_system(self, coordinate_system: str) -> None:
        """Redraw the current layer's sample in ``coordinate_system`` (colours and offsets kept)."""
        layer = self.layer
        if layer is None or layer.metadata.get("sdata") is None:
            return
        if coordinate_system == layer.metadata["scai"].coordinate_system:
            return
        name = layer.name
        try:
            set_coordinate_system(self.viewer, layer.metadata["sdata"], coordinate_system)
        except KeyError as err:
            notify_error(str(err.args[0]))
            return
        self.refresh_layers()
        if self.layer_combo.findText(name) >= 0:
            self.layer_combo.setCurrentText(name)
        self._on_layer_changed()

    def _show_key_label(self, style) -> None:
        if style is None:
            self.key_label.clear()
            self.key_label.setToolTip("")
            self.key_combo.setToolTip("")
            return
        full = style.key + (f" ({style.value_mode})" if style.value_mode else "")
        width = max(self.key_label.width(), 200)
        self.key_label.setText(
            self.key_label.fontMetrics().elidedText(full, Qt.TextElideMode.ElideMiddle, width)
        )
        self.key_label.setToolTip(full)
        self.key_combo.setToolTip(style.key)

    def _show_style(self, style) -> None:
        self.style = style
        self._show_key_label(style)
        self.values_label.setVisible(bool(style is not None and style.value_mode))
        self.values_combo.setVisible(bool(style is not None and style.value_mode))
        if style is None:
            self.legend.set_categories([], [], [], hidden=set())
            self.legend.setVisible(False)
            self.colorbar_row.setVisible(False)
            return
        if style.value_mode:
            self.values_combo.blockSignals(True)
            self.values_combo.setCurrentText(style.value_mode)
            self.values_combo.blockSignals(False)
        if style.kind == "categorical":
            self.colorbar_row.setVisible(False)
            self.legend.setVisible(True)
            self.legend.set_categories(
                style.categories,
                style.category_colors,
                style.counts,
                hidden=style.hidden,
                n_missing=style.n_missing,
            )
        else:
            self.legend.setVisible(False)
            self.colorbar_row.setVisible(True)
            self.colorbar.setPixmap(colorbar_pixmap(style.colormap))
            for box, value in ((self.vmin, style.limits[0]), (self.vmax, style.limits[1])):
                box.blockSignals(True)
                box.setValue(value)
                box.blockSignals(False)

    def _apply(self) -> None:
        if self.layer is None or self.style is None:
            return
        if self.style.kind == "categorical":
            self.style = self._recolor(self.layer, self.style.key, hidden=self.legend.hidden())
        else:
            self.style = self._recolor(
                self.layer,
                self.style.key,
                limits=(self.vmin.value(), self.vmax.value()),
                values=self.value_mode,
            )

    def set_values(self, mode: str) -> None:
        """Gene values ``"lognorm"`` or ``"raw"``; recolours with fresh percentile limits."""
        self.value_mode = mode
        i = self.values_combo.findData(mode)
        if i >= 0:
            self.values_combo.setCurrentIndex(i)
        if self.style is not None and self.style.value_mode and self.layer is not None:
            self._show_style(self._recolor(self.layer, self.style.key, values=mode))

    def _on_values(self) -> None:
        self.set_values(self.values_combo.currentData())

    def _on_limits(self, *_args) -> None:
        if self.style is not None and self.style.kind == "continuous":
            self._apply()

    def set_category_color(self, category: str, color: str) -> None:
        """Recolour one class; written to ``uns[f"{key}_colors"]`` so it survives save and reload."""
        if self.style is None or self.layer is None or self.style.kind != "categorical":
            return
        adata = self.layer.metadata["adata"]
        key = self.style.key
        colors = [str(c) for c in adata.uns[f"{key}_colors"]]
        cats = [str(c) for c in adata.obs[key].cat.categories]
        colors[cats.index(category)] = color
        adata.uns[f"{key}_colors"] = colors
        hidden = self.legend.hidden()
        self.style = self._recolor(self.layer, key, hidden=hidden)
        self.legend.set_categories(
            self.style.categories,
            self.style.category_colors,
            self.style.counts,
            hidden,
            n_missing=self.style.n_missing,
        )

    def _on_export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save view", "napari-scai-view.png", "PNG (*.png)"
        )
        if path:
            self.export(path)

    def export(self, path: str | Path) -> Path:
        """Save the current canvas with the legend/colorbar as a PNG figure."""
        return save_figure(self.viewer, path, style=self.style, hidden=self.legend.hidden())
