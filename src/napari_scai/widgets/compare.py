"""The Compare tab of the "Annotate & compare" dock.

:class:`CompareWidget` compares a prediction with a reference (ARI, NMI, per-class scores,
confusion matrix, Hungarian matching, renaming) and draws the disagreeing spots, the
low-confidence spots and the outline of each predicted domain on the tissue. Compute is in
:mod:`napari_scai.tl`; layers in :mod:`napari_scai.viewer._annotations`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_scai._colors import MISSING_COLOR
from napari_scai.viewer._annotations import (
    ANNOTATION_KEY,
    HIGHLIGHT_COLOR,
    LOW_CONFIDENCE_COLOR,
    contour_layer,
    set_contour_visibility,
    spot_marker_layer,
)
from napari_scai.widgets._common import (
    notify_error,
    refill_combo,
    scai_point_layers,
    spot_size,
    swatch,
    unwrap_viewer,
)

CONFIDENCE_KEY = "scai_domain_confidence"


def label_columns(adata) -> list[str]:
    """obs columns that can be compared: categorical, text, bool or integers with few values."""
    out = []
    for c in adata.obs.columns:
        if c in ("region", "instance_id", "in_tissue", "array_row", "array_col"):
            continue  # link and Visium grid columns are not labellings
        col = adata.obs[c]
        if isinstance(col.dtype, pd.CategoricalDtype) or col.dtype == object or col.dtype == bool:
            out.append(c)
        elif pd.api.types.is_integer_dtype(col.dtype) and col.nunique() <= 100:
            out.append(c)
    return out


class CompareWidget(QWidget):
    """Compare a prediction with a reference and show where they differ on the tissue."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.viewer = unwrap_viewer(napari_viewer)
        self.report = None
        self.layer_combo = QComboBox()
        self.pred_combo = QComboBox()
        self.ref_combo = QComboBox()
        self.compare_button = QPushButton("Compare")
        self.scores = QLabel("")
        self.scores.setWordWrap(True)
        self.per_class = QTableWidget(0, 6)
        self.per_class.setHorizontalHeaderLabels(
            ["class", "matched", "precision", "recall", "F1", "support"]
        )
        self.per_class.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.matching = QTableWidget(0, 2)
        self.matching.setHorizontalHeaderLabels(["predicted", "reference"])
        self.matching.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.figure = Figure(figsize=(3.5, 3.0), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(260)
        self.rename_button = QPushButton("Rename predicted after matches")
        self.show_disagreement = QCheckBox("highlight disagreeing spots")
        self.show_disagreement.setChecked(True)
        self.confidence = QDoubleSpinBox()
        self.confidence.setRange(0.0, 1.0)
        self.confidence.setSingleStep(0.05)
        self.confidence.setValue(0.5)
        self.confidence.setKeyboardTracking(False)
        self.show_low_confidence = QCheckBox("mark low-confidence spots, below")
        self.show_low_confidence.setToolTip(
            f"needs obs['{CONFIDENCE_KEY}'] (written by the spatial-domains model)"
        )
        self.contour_combo = QComboBox()
        self.contour_button = QPushButton("Draw boundaries")
        self.domain_list = QListWidget()
        self.domain_list.setObjectName("contour_domains")
        self.domain_list.setMinimumHeight(120)
        self.per_class.setMinimumHeight(190)
        self.matching.setMinimumHeight(150)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Spots/cells layer", self.layer_combo)
        for combo in (self.pred_combo, self.ref_combo):
            combo.activated.connect(lambda _i, c=combo: c.setProperty("user_picked", True))
        form.addRow("Prediction", self.pred_combo)
        form.addRow("Reference", self.ref_combo)
        conf = QHBoxLayout()
        conf.addWidget(self.show_low_confidence)
        conf.addWidget(self.confidence)
        bounds = QGroupBox("Boundaries on the tissue")
        bl = QFormLayout(bounds)
        bl.addRow("Domains of", self.contour_combo)
        bl.addRow(self.contour_button)
        bl.addRow(self.domain_list)
        # long content (figure + two tables): scroll rather than squeeze
        content = QWidget()
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        layout = QVBoxLayout(content)
        layout.addLayout(form)
        layout.addWidget(self.compare_button)
        layout.addWidget(self.scores)
        layout.addWidget(self.canvas)
        layout.addWidget(QLabel("Per class (after matching)"))
        layout.addWidget(self.per_class)
        layout.addWidget(QLabel("Hungarian matching"))
        layout.addWidget(self.matching)
        layout.addWidget(self.rename_button)
        layout.addWidget(self.show_disagreement)
        layout.addLayout(conf)
        layout.addWidget(bounds)
        layout.addWidget(self.status)

        self.layer_combo.currentIndexChanged.connect(self._on_layer_changed)
        self.compare_button.clicked.connect(self.run_compare)
        self.rename_button.clicked.connect(self.rename_predicted)
        self.show_disagreement.toggled.connect(lambda _c: self.update_disagreement())
        self.show_low_confidence.toggled.connect(lambda _c: self.update_low_confidence())
        self.confidence.valueChanged.connect(lambda _v: self.update_low_confidence())
        self.contour_button.clicked.connect(lambda: self.draw_boundaries())
        self.domain_list.itemChanged.connect(self._on_domain_toggled)
        self.viewer.layers.events.inserted.connect(self.refresh_layers)
        self.viewer.layers.events.removed.connect(self.refresh_layers)
        self.rename_button.setEnabled(False)
        self.refresh_layers()

    # ------------------------------------------------------------------ choices
    @property
    def layer(self):
        name = self.layer_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    @property
    def adata(self):
        return None if self.layer is None else self.layer.metadata["adata"]

    def refresh_layers(self, *_args: Any) -> None:
        if refill_combo(self.layer_combo, [ly.name for ly in scai_point_layers(self.viewer)]):
            self._on_layer_changed()

    def refresh_columns(self) -> None:
        """Re-read the obs columns offered as prediction/reference/boundaries."""
        adata = self.adata
        cols = label_columns(adata) if adata is not None else []
        for combo, prefer in (
            (self.pred_combo, ("scai_domain", ANNOTATION_KEY)),
            (self.ref_combo, ("layer_manual", ANNOTATION_KEY)),
            (self.contour_combo, ("scai_domain",)),
        ):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(cols)
            preferred = next((p for p in prefer if p in cols), None)
            # The user's own pick stays; otherwise a preferred column that just appeared (e.g.
            # after a domains run) replaces the default one.
            keep = current in cols and (combo.property("user_picked") or preferred is None)
            pick = current if keep else preferred
            if pick:
                combo.setCurrentText(pick)
            combo.blockSignals(False)
        has_conf = adata is not None and CONFIDENCE_KEY in adata.obs.columns
        self.show_low_confidence.setEnabled(has_conf)
        self.confidence.setEnabled(has_conf)

    def _on_layer_changed(self, *_args: Any) -> None:
        self.refresh_columns()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        """Columns may have been added since (a model run, an annotation): offer them."""
        self.refresh_columns()
        super().showEvent(event)

    def _point_values(self, values: np.ndarray) -> np.ndarray:
        """Per-point values from per-row values of the layer's table."""
        rows = self.layer.metadata["scai"].extra.get("rows")
        if rows is None:
            return values
        rows = np.asarray(rows)
        out = (
            np.full(len(rows), None, dtype=object)
            if values.dtype == object
            else np.zeros(len(rows), dtype=values.dtype)
        )
        out[rows >= 0] = values[rows[rows >= 0]]
        return out

    # ------------------------------------------------------------------ compare
    def set_columns(self, pred: str, ref: str) -> None:
        """Choose the prediction and reference columns (re-reading the table first)."""
        self.refresh_columns()
        for combo, key in ((self.pred_combo, pred), (self.ref_combo, ref)):
            if combo.findText(key) < 0:
                raise KeyError(
                    f"'{key}' is not a label column of this table (columns: {label_columns(self.adata)})"
                )
            combo.setCurrentText(key)

    def run_compare(self):
        """Score prediction vs reference, fill the dock and draw the disagreement layer."""
        from napari_scai.tl import compare

        if self.adata is None:
            notify_error("no spots/cells layer. Fix: open a dataset with napari-scai first")
            return None
        pred, ref = self.pred_combo.currentText(), self.ref_combo.currentText()
        try:
            report = compare(self.adata, key_pred=pred, key_ref=ref)
        except (KeyError, ValueError) as err:
            notify_error(str(err.args[0]))
            return None
        self.report = report
        self.scores.setText(
            f"ARI {report.ari:.3f}   NMI {report.nmi:.3f}   matched accuracy {report.accuracy:.3f}   "
            f"macro F1 {report.macro_f1:.3f}\n{report.n_scored} scored, {report.n_dropped} without a label"
        )
        self._fill_per_class(report)
        self._fill_matching(report)
        self._plot_confusion(report)
        self.rename_button.setEnabled(True)
        if self.contour_combo.findText(pred) >= 0 and not self.contour_combo.currentText():
            self.contour_combo.setCurrentText(pred)
        self.update_disagreement()
        self.update_low_confidence()
        return report

    def _fill_per_class(self, report) -> None:
        df = report.per_class
        self.per_class.setRowCount(len(df))
        for i, row in enumerate(df.itertuples(index=False)):
            cells = [
                str(row[0]),
                "-" if row[1] is None else str(row[1]),
                *(f"{v:.3f}" if pd.notna(v) else "-" for v in row[2:5]),
                str(int(row[5])),
            ]
            for j, text in enumerate(cells):
                self.per_class.setItem(i, j, QTableWidgetItem(text))
        self.per_class.resizeColumnsToContents()

    def _fill_matching(self, report) -> None:
        self.matching.setRowCount(len(report.matching))
        for i, (p, r) in enumerate(report.matching.items()):
            self.matching.setItem(i, 0, QTableWidgetItem(str(p)))
            self.matching.setItem(i, 1, QTableWidgetItem(str(r)))

    def _plot_confusion(self, report) -> None:
        conf = report.confusion
        self.figure.clear()
        ax = self.figure.add_subplot(111)
        counts = conf.to_numpy(dtype=float)
        frac = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(conf.shape[1]), [str(c) for c in conf.columns], rotation=90, fontsize=7)
        ax.set_yticks(range(conf.shape[0]), [str(c) for c in conf.index], fontsize=7)
        ax.set_xlabel(f"reference ({report.key_ref})", fontsize=8)
        ax.set_ylabel(f"predicted ({report.key_pred})", fontsize=8)
        if counts.size <= 400:
            for (i, j), v in np.ndenumerate(counts):
                ax.text(
                    j,
                    i,
                    f"{int(v)}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if frac[i, j] > 0.5 else "black",
                )
        self.canvas.draw_idle()

    def rename_predicted(self) -> str | None:
        """Rename the predicted domains after their matched classes (reference colours)."""
        from napari_scai.tl import rename_by_matching
        from napari_scai.viewer import recolor

        if self.report is None:
            return None
        new_key = f"{self.report.key_pred}_matched"
        rename_by_matching(self.adata, report=self.report, key_added=new_key)
        recolor(self.layer, new_key)
        self.refresh_columns()
        self.status.setText(
            f"renamed domains into obs['{new_key}'] (colours of '{self.report.key_ref}')"
        )
        return new_key

    # ------------------------------------------------------------------ tissue overlays
    @property
    def disagreement_name(self) -> str:
        return f"{self.layer.name} disagreement"

    @property
    def low_confidence_name(self) -> str:
        return f"{self.layer.name} low confidence"

    def update_disagreement(self) -> None:
        """Draw (or remove) the layer marking spots where prediction and reference differ."""
        from napari_scai.tl import disagreement

        if self.layer is None or self.report is None:
            return
        name = self.disagreement_name
        if not self.show_disagreement.isChecked():
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            return
        rep = self.report
        mask_rows = disagreement(self.adata, report=rep)
        mask = self._point_values(mask_rows.astype(bool))
        spot_marker_layer(
            self.viewer, name, self.layer, mask, color=HIGHLIGHT_COLOR, size_factor=1.0
        )
        self.status.setText(
            f"{int(mask.sum())} spots where '{rep.key_pred}' and '{rep.key_ref}' disagree"
        )

    def update_low_confidence(self) -> None:
        """Mark spots whose model confidence is below the threshold (if the column exists)."""
        if self.layer is None:
            return
        name = self.low_confidence_name
        if not (self.show_low_confidence.isChecked() and CONFIDENCE_KEY in self.adata.obs.columns):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            return
        conf = self._point_values(self.adata.obs[CONFIDENCE_KEY].to_numpy(dtype=float))
        mask = np.isfinite(conf) & (conf < self.confidence.value())
        layer = spot_marker_layer(
            self.viewer,
            name,
            self.layer,
            mask,
            color=LOW_CONFIDENCE_COLOR,
            symbol="cross",
            size_factor=0.6,
        )
        layer.metadata["threshold"] = self.confidence.value()

    def draw_boundaries(self, key: str | None = None):
        """Outline every domain of ``key`` (default: the chosen column) over the tissue."""
        from napari_scai.tl._contours import domain_contours
        from napari_scai.viewer._layers import color_style

        if self.layer is None:
            return None
        key = key or self.contour_combo.currentText() or self.pred_combo.currentText()
        if not key:
            notify_error("choose the column whose domains to outline")
            return None
        if self.contour_combo.findText(key) >= 0:
            self.contour_combo.setCurrentText(key)
        rows = self.layer.metadata["scai"].extra.get("rows")
        style = color_style(self.adata, key, rows)
        if style.kind != "categorical":
            notify_error(f"'{key}' is not categorical. Fix: pick a column of domains or classes")
            return None
        values = pd.Categorical(style.values, categories=style.categories)
        contours = domain_contours(np.asarray(self.layer.data), values)
        colors = dict(zip(style.categories, style.category_colors, strict=True))
        name = f"{self.layer.name} boundaries"
        layer = contour_layer(
            self.viewer,
            name,
            contours,
            colors,
            edge_width=0.3 * spot_size(self.layer),
            units=self.layer.units,
        )
        layer.metadata["key"] = key
        self.domain_list.blockSignals(True)
        self.domain_list.clear()
        for cat in style.categories:
            item = QListWidgetItem(swatch(colors.get(cat, MISSING_COLOR)), str(cat))
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked)
            self.domain_list.addItem(item)
        self.domain_list.blockSignals(False)
        self.status.setText(
            f"{contours.n_paths()} outlines of {len(style.categories)} domains of '{key}'"
        )
        return layer

    def set_domain_visible(self, domain: str, visible: bool) -> None:
        """Show or hide one domain's outline."""
        for i in range(self.domain_list.count()):
            item = self.domain_list.item(i)
            if item.text() == str(domain):
                item.setCheckState(Qt.CheckState.Checked if visible else Qt.CheckState.Unchecked)
                return
        raise KeyError(f"no outlined domain '{domain}'")

    def _on_domain_toggled(self, _item) -> None:
        name = f"{self.layer.name} boundaries" if self.layer is not None else None
        if name not in self.viewer.layers:
            return
        hidden = {
            self.domain_list.item(i).text()
            for i in range(self.domain_list.count())
            if self.domain_list.item(i).checkState() != Qt.CheckState.Checked
        }
        set_contour_visibility(self.viewer.layers[name], hidden)
