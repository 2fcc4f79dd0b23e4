"""Spatial-domains dock: pick table, K, device and seed; Run off the main thread; Cancel.

"Guide with annotations" runs the guided (semi-supervised) mode on the Annotate dock's column
(``obs['scai_annotation']``): paint more strokes, press Run again, and the map updates.
"Transfer labels" carries an annotated section's labels (another spots layer) onto this one.
"""

from __future__ import annotations

import threading
from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_scai.widgets._common import (
    ModelRunner,
    ProgressRelay,
    SourceLayerChoice,
    notify_error,
    refill_combo,
    scai_point_layers,
)

#: The column the Annotate dock writes.
ANNOTATION_COLUMN = "scai_annotation"


def available_devices() -> list[tuple[str, bool]]:
    """(device name, usable) pairs: ``auto``, ``cpu`` and every CUDA device torch can see."""
    import torch

    devices = [("auto", True), ("cpu", True)]
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    devices += [(f"cuda:{i}", True) for i in range(n)] or [("cuda (not available)", False)]
    return devices


class DomainsWidget(QWidget, SourceLayerChoice, ModelRunner):
    """Find spatial domains with the GNN and draw them (and their confidence) on the tissue."""

    task_name = "Spatial domains"

    def _run_buttons(self) -> list:
        return [self.run_button, self.transfer_button]

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.layer_combo = QComboBox()
        self.table_combo = QComboBox()
        self.n_domains = QSpinBox()
        self.n_domains.setRange(2, 50)
        self.n_domains.setValue(7)
        self.auto_k = QCheckBox("choose K automatically (stability)")
        self.device_combo = QComboBox()
        for name, usable in available_devices():
            self.device_combo.addItem(name)
            if not usable:
                self.device_combo.model().item(self.device_combo.count() - 1).setEnabled(False)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.guided = QCheckBox("guide with annotations")
        self.guided.setToolTip(
            "Use the classes painted in the Annotate dock (obs['scai_annotation']): every spot "
            "gets one of them, with a calibrated confidence. Paint more and Run again to update."
        )
        self.annotation_combo = QComboBox()
        self.annotation_combo.setEnabled(False)
        self.transfer_box = QGroupBox("Transfer labels from another section")
        self.reference_combo = QComboBox()
        self.labels_combo = QComboBox()
        self.transfer_button = QPushButton("Transfer")
        tf = QFormLayout(self.transfer_box)
        tf.addRow("Reference layer", self.reference_combo)
        tf.addRow("Reference labels", self.labels_combo)
        tf.addRow(self.transfer_button)
        self.advanced = QGroupBox("Advanced")
        self.advanced.setCheckable(True)
        self.advanced.setChecked(False)
        self.epochs = QSpinBox()
        self.epochs.setRange(0, 100000)
        self.epochs.setSpecialValueText("default")
        self.refine = QCheckBox("neighbour-majority refinement")
        adv = QFormLayout(self.advanced)
        adv.addRow("Epochs", self.epochs)
        adv.addRow(self.refine)
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Spots/cells layer", self.layer_combo)
        form.addRow("Table", self.table_combo)
        form.addRow("Domains (K)", self.n_domains)
        form.addRow("", self.auto_k)
        form.addRow("Device", self.device_combo)
        form.addRow("Seed", self.seed)
        form.addRow(self.guided)
        form.addRow("Annotation column", self.annotation_combo)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.advanced)
        layout.addLayout(buttons)
        layout.addWidget(self.transfer_box)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self._relay = ProgressRelay()
        self._relay.progress.connect(self._on_progress)
        self._cancel: threading.Event | None = None
        self.worker = None
        self.result = None
        self.mode = "domains"
        self.auto_k.toggled.connect(lambda on: self.n_domains.setEnabled(not on))
        self.guided.toggled.connect(self._on_guided_toggled)
        self.reference_combo.currentIndexChanged.connect(self._refresh_reference_labels)
        self.transfer_button.clicked.connect(self.transfer)
        self.layer_combo.currentIndexChanged.connect(self._refresh_tables)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.viewer.layers.events.inserted.connect(self.refresh_layers)
        self.viewer.layers.events.removed.connect(self.refresh_layers)
        self.refresh_layers()

    # --- layer/table selection ------------------------------------------------------------------
    def _refresh_tables(self, *_args) -> None:
        self.table_combo.clear()
        layer = self.layer
        if layer is not None:
            source = layer.metadata["scai"]
            sdata = layer.metadata["sdata"]
            tables = [t for t in sdata.tables if sdata.tables[t].n_obs == len(layer.data)] or list(
                sdata.tables
            )
            self.table_combo.addItems(tables)
            if source.table in tables:
                self.table_combo.setCurrentText(source.table)
        self._refresh_annotation_columns()
        self._refresh_references()

    def _label_columns(self, layer) -> list[str]:
        if layer is None:
            return []
        from napari_scai.widgets.annotate import label_columns

        return label_columns(layer.metadata["adata"])

    def _refresh_annotation_columns(self, *_args) -> None:
        cols = self._label_columns(self.layer)
        current = self.annotation_combo.currentText()
        self.annotation_combo.clear()
        # the Annotate dock's column first (it may appear only after the first stroke)
        self.annotation_combo.addItems(
            [ANNOTATION_COLUMN] + [c for c in cols if c != ANNOTATION_COLUMN]
        )
        if current:
            self.annotation_combo.setCurrentText(current)

    def _on_guided_toggled(self, on: bool) -> None:
        self._refresh_annotation_columns()
        self.annotation_combo.setEnabled(on)
        self.n_domains.setEnabled(not on and not self.auto_k.isChecked())
        self.auto_k.setEnabled(not on)

    def _refresh_references(self, *_args) -> None:
        names = [
            ly.name
            for ly in scai_point_layers(self.viewer)
            if not ly.metadata["scai"].extra.get("derived") and ly is not self.layer
        ]
        refill_combo(self.reference_combo, names)
        self._refresh_reference_labels()

    @property
    def reference_layer(self):
        name = self.reference_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _refresh_reference_labels(self, *_args) -> None:
        current = self.labels_combo.currentText()
        self.labels_combo.clear()
        self.labels_combo.addItems(self._label_columns(self.reference_layer))
        if current:
            self.labels_combo.setCurrentText(current)

    # --- running ---------------------------------------------------------------------------------
    def parameters(self) -> dict[str, Any]:
        """The keyword arguments passed to :func:`napari_scai.tl.spatial_domains`."""
        device = self.device_combo.currentText()
        params: dict[str, Any] = {
            "table": self.table_combo.currentText(),
            "n_domains": None if self.auto_k.isChecked() else self.n_domains.value(),
            "device": device,
            "seed": self.seed.value(),
        }
        if self.guided.isChecked():
            params["annotation_key"] = self.annotation_combo.currentText() or ANNOTATION_COLUMN
            params.pop("n_domains")
        if self.advanced.isChecked():
            if self.epochs.value() > 0:
                params["epochs"] = self.epochs.value()
            if not self.guided.isChecked():
                params["refine"] = self.refine.isChecked()
        return params

    def transfer_parameters(self) -> dict[str, Any]:
        """The keyword arguments passed to :func:`napari_scai.tl.transfer_labels`."""
        params: dict[str, Any] = {
            "labels_key": self.labels_combo.currentText(),
            "table": self.table_combo.currentText(),
            "device": self.device_combo.currentText(),
            "seed": self.seed.value(),
        }
        if self.advanced.isChecked() and self.epochs.value() > 0:
            params["epochs"] = self.epochs.value()
        return params

    def run(self) -> None:
        """Start the model in a worker thread (progress bar + Cancel stay responsive)."""
        from napari_scai.tl import spatial_domains

        layer = self.layer
        if layer is None:
            notify_error("No spots/cells layer. Fix: open a dataset with napari-scai first")
            return
        sdata = layer.metadata["sdata"]
        params = self.parameters()
        key = params.get("annotation_key")
        if key is not None:
            col = layer.metadata["adata"].obs.get(key)
            if col is None or col.notna().sum() == 0:
                notify_error(
                    f"No annotation in obs['{key}']. Fix: paint strokes of at least two "
                    "classes in the Annotate dock, then Run"
                )
                return
        self._cancel = threading.Event()
        relay = self._relay
        cancel = self._cancel

        def job():
            spatial_domains(
                sdata,
                progress=lambda i, n, msg: relay.progress.emit(i, n, msg),
                cancel=cancel,
                **params,
            )
            return sdata.tables[params["table"]]

        self.mode = "guided" if key is not None else "domains"
        self.result = None
        self._start(job, params["device"])

    def transfer(self) -> None:
        """Transfer the reference layer's labels onto this layer's table (worker thread)."""
        from napari_scai.tl import transfer_labels

        layer, ref_layer = self.layer, self.reference_layer
        if layer is None or ref_layer is None:
            notify_error(
                "Transfer needs two sections: open the annotated reference as another layer"
            )
            return
        params = self.transfer_parameters()
        if not params["labels_key"]:
            notify_error("The reference layer has no label column. Fix: annotate it first")
            return
        sdata, reference = layer.metadata["sdata"], ref_layer.metadata["sdata"]
        ref_table = ref_layer.metadata["scai"].table
        self._cancel = threading.Event()
        relay, cancel = self._relay, self._cancel

        def job():
            p = dict(params)
            labels_key = p.pop("labels_key")
            table = p.pop("table")
            ref = reference.tables[ref_table] if ref_table in reference.tables else reference
            transfer_labels(
                ref,
                sdata.tables[table],
                labels_key,
                progress=lambda i, n, msg: relay.progress.emit(i, n, msg),
                cancel=cancel,
                **p,
            )
            return sdata.tables[table]

        self.mode = "transfer"
        self.result = None
        self._start(job, params["device"])

    def _on_done(self, adata) -> None:
        from napari_scai.viewer import recolor

        self.result = adata
        layer = self.layer
        key = "scai_transfer" if self.mode == "transfer" else "scai_domain"
        recolor(layer, key)
        self._show_confidence(layer, key)
        k = adata.obs[key].nunique()
        what = {
            "domains": "domains",
            "guided": "annotated classes",
            "transfer": "reference classes",
        }
        self.status.setText(
            f"done: {k} {what[self.mode]} in obs['{key}'] (confidence in obs['{key}_confidence'])"
        )

    def _show_confidence(self, layer, key: str = "scai_domain") -> None:
        from napari_scai.viewer import recolor

        name = f"{layer.name} confidence"
        if name in self.viewer.layers:
            recolor(self.viewer.layers[name], f"{key}_confidence", limits=(0.0, 1.0))
            return
        conf = self.viewer.add_points(
            layer.data,
            size=layer.size,
            border_width=0,
            name=name,
            visible=False,
            features=layer.features[["id"]].copy(),
            metadata={**layer.metadata, "scai": _derived_source(layer.metadata["scai"])},
            **{k: getattr(layer, k) for k in ("scale", "translate", "units")},
        )
        recolor(conf, f"{key}_confidence", limits=(0.0, 1.0), colormap="magma")


def _derived_source(source):
    from dataclasses import replace

    return replace(source, color_key=None, extra={**source.extra, "derived": True})
