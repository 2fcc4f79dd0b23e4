"""Multimodal-integration dock: pick a dataset, its tables and options; Run in a worker; Cancel.

Results come from :func:`napari_scai.tl.integrate` (written into the first table) and are drawn:

- spatial data (the first table annotates a spots/cells layer): the layer is coloured by the
  joint clusters, and one layer per modality shows its weight on the tissue;
- non-spatial data (CITE-seq, scATAC): a UMAP of the joint space (computed in the worker,
  stored in ``obsm['X_<key>_umap']``) as a Points layer coloured by the joint clusters with the
  colours of ``uns['<key>_cluster_colors']``, plus one (hidden) weight layer per modality.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_scai.widgets._common import (
    ModelRunner,
    ProgressRelay,
    notify_error,
    refill_combo,
    scai_point_layers,
)
from napari_scai.widgets.domains import available_devices

NO_BATCH = "(none)"
KEY = "scai_joint"


def _weight_prefix(key: str) -> str:
    return key[: -len("_joint")] if key.endswith("_joint") else key


def _batch_candidates(adata) -> list[str]:
    """obs columns that look like a batch: categorical/text with 2..n/2 distinct values."""
    out = []
    n = adata.n_obs
    for col in adata.obs.columns:
        s = adata.obs[col]
        if col in ("region", "instance_id") or str(col).startswith("scai_"):
            continue
        if isinstance(s.dtype, pd.CategoricalDtype) or s.dtype == object or s.dtype == bool:
            k = s.nunique(dropna=True)
            if 2 <= k <= max(2, n // 2):
                out.append(str(col))
    return out


class IntegrationWidget(QWidget, ModelRunner):
    """Integrate RNA, protein, ATAC and histology of the same cells into one embedding."""

    task_name = "Integration"

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._datasets: dict[str, Any] = {}  # name -> SpatialData (opened here or from layers)
        self.data_combo = QComboBox()
        self.open_button = QPushButton("Open…")
        self.table_list = QListWidget()
        self.table_list.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.table_list.setToolTip(
            "Tick the tables to integrate; drag to reorder. Results go into the first ticked table."
        )
        self.table_list.setMaximumHeight(110)
        self.histology = QCheckBox("add H&E features of the spots (table 'histology')")
        self.histology.setToolTip(
            "Colour and texture statistics of the H&E around each spot, as one more view. "
            "On Visium DLPFC 151673 they lowered the joint domains' agreement with the manual "
            "layers (ARI 0.44 against 0.57 for RNA alone, benchmarks/RESULTS.md) while taking "
            "over half the weight: run once with and once without, and compare."
        )
        self.batch_combo = QComboBox()
        self.spatial = QCheckBox("use the spatial neighbour graph")
        self.n_clusters = QSpinBox()
        self.n_clusters.setRange(0, 100)
        self.n_clusters.setValue(8)
        self.n_clusters.setSpecialValueText("no clustering")
        self.device_combo = QComboBox()
        for name, usable in available_devices():
            self.device_combo.addItem(name)
            if not usable:
                self.device_combo.model().item(self.device_combo.count() - 1).setEnabled(False)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.n_steps = QSpinBox()
        self.n_steps.setRange(0, 1_000_000)
        self.n_steps.setSpecialValueText("default")
        self.n_steps.setToolTip("Training steps (0 = the model's default)")
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        data_row = QHBoxLayout()
        data_row.addWidget(self.data_combo, 1)
        data_row.addWidget(self.open_button)
        form = QFormLayout()
        form.addRow("Dataset", data_row)
        form.addRow("Tables", self.table_list)
        form.addRow("", self.histology)
        form.addRow("Batch key", self.batch_combo)
        form.addRow("", self.spatial)
        form.addRow("Joint clusters", self.n_clusters)
        form.addRow("Device", self.device_combo)
        form.addRow("Seed", self.seed)
        form.addRow("Steps", self.n_steps)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self._relay = ProgressRelay()
        self._relay.progress.connect(self._on_progress)
        self._cancel: threading.Event | None = None
        self.worker = None
        self.result = None
        self.result_layers: list = []
        self.data_combo.currentIndexChanged.connect(self._refresh_tables)
        self.table_list.itemChanged.connect(self._refresh_options)
        self.table_list.model().rowsMoved.connect(self._refresh_options)
        self.open_button.clicked.connect(self._open_dialog)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.viewer.layers.events.inserted.connect(self.refresh_datasets)
        self.viewer.layers.events.removed.connect(self.refresh_datasets)
        self.refresh_datasets()

    # --- datasets and tables ----------------------------------------------------------------------
    def add_data(self, sdata, name: str | None = None) -> str:
        """Offer a SpatialData (e.g. a non-spatial CITE-seq file) in the dataset list; select it."""
        name = name or f"dataset {len(self._datasets) + 1}"
        self._datasets[name] = sdata
        self.refresh_datasets()
        self.data_combo.setCurrentText(name)
        self._refresh_tables()
        return name

    def open_path(self, path: str | Path) -> str:
        """Read a file or folder with :func:`napari_scai.io.read` (coordinates optional)."""
        from napari_scai.io import read

        path = Path(path)
        return self.add_data(read(path), path.name)

    def _open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open multimodal data", "", "Data (*.h5ad *.h5 *.zarr);;All files (*)"
        )
        if path:
            try:
                self.open_path(path)
            except Exception as err:  # noqa: BLE001 - shown to the user, not raised in Qt
                notify_error(str(err))

    def _layer_datasets(self) -> dict[str, Any]:
        out = {}
        for layer in scai_point_layers(self.viewer):
            if layer.metadata["scai"].extra.get("derived"):
                continue
            sdata = layer.metadata["sdata"]
            if all(sdata is not s for s in out.values()):
                out[layer.name] = sdata
        return out

    def refresh_datasets(self, *_args) -> None:
        datasets = {**self._layer_datasets(), **self._datasets}
        self._all = datasets
        if refill_combo(self.data_combo, list(datasets)):
            self._refresh_tables()

    @property
    def sdata(self):
        return getattr(self, "_all", {}).get(self.data_combo.currentText())

    def _refresh_tables(self, *_args) -> None:
        self.table_list.blockSignals(True)
        self.table_list.clear()
        sdata = self.sdata
        if sdata is not None:
            names = list(sdata.tables)
            preferred = [t for t in ("rna", "protein", "atac", "histology") if t in names]
            default = set(preferred[:2]) if len(preferred) >= 2 else set(names[:2])
            for t in preferred + [t for t in names if t not in preferred]:
                item = QListWidgetItem(t)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(
                    Qt.CheckState.Checked if t in default else Qt.CheckState.Unchecked
                )
                self.table_list.addItem(item)
        self.table_list.blockSignals(False)
        self._refresh_options()

    def set_tables(self, tables: list[str]) -> None:
        """Tick exactly ``tables``, in this order (first = where results are written)."""
        self.table_list.blockSignals(True)
        names = [self.table_list.item(i).text() for i in range(self.table_list.count())]
        missing = [t for t in tables if t not in names]
        if missing:
            self.table_list.blockSignals(False)
            raise KeyError(f"no table {missing} in this dataset (tables: {names})")
        order = list(tables) + [t for t in names if t not in tables]
        self.table_list.clear()
        for t in order:
            item = QListWidgetItem(t)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if t in tables else Qt.CheckState.Unchecked)
            self.table_list.addItem(item)
        self.table_list.blockSignals(False)
        self._refresh_options()

    def tables(self) -> list[str]:
        """Ticked tables in list order."""
        return [
            self.table_list.item(i).text()
            for i in range(self.table_list.count())
            if self.table_list.item(i).checkState() == Qt.CheckState.Checked
        ]

    def _spot_layer(self, table: str | None = None):
        """The spots/cells layer drawing the first ticked table, or None (non-spatial data)."""
        sdata = self.sdata
        tables = self.tables()
        table = table or (tables[0] if tables else None)
        if sdata is None or table is None:
            return None
        for layer in scai_point_layers(self.viewer):
            src = layer.metadata["scai"]
            if (
                layer.metadata["sdata"] is sdata
                and src.table == table
                and not src.extra.get("derived")
            ):
                return layer
        return None

    def _refresh_options(self, *_args) -> None:
        sdata = self.sdata
        tables = self.tables()
        first = sdata.tables[tables[0]] if sdata is not None and tables else None
        refill_combo(
            self.batch_combo, [NO_BATCH] + (_batch_candidates(first) if first is not None else [])
        )
        has_xy = first is not None and (
            "spatial" in first.obsm or {"array_row", "array_col"} <= set(first.obs.columns)
        )
        self.spatial.setEnabled(has_xy)
        if not has_xy:
            self.spatial.setChecked(False)
        can_he = bool(sdata is not None and sdata.images and has_xy and "histology" not in tables)
        self.histology.setEnabled(can_he)
        if not can_he:
            self.histology.setChecked(False)

    # --- running ---------------------------------------------------------------------------------
    def parameters(self) -> dict[str, Any]:
        """Keyword arguments for :func:`napari_scai.tl.integrate`."""
        batch = self.batch_combo.currentText()
        params: dict[str, Any] = {
            "tables": tuple(self.tables()),
            "batch_key": None if batch in ("", NO_BATCH) else batch,
            "spatial": self.spatial.isChecked(),
            "n_clusters": self.n_clusters.value() or None,
            "device": self.device_combo.currentText(),
            "seed": self.seed.value(),
        }
        if self.n_steps.value() > 0:
            params["n_steps"] = self.n_steps.value()
        return params

    def run(self) -> None:
        """Start the integration in a worker thread (progress bar and Cancel stay responsive)."""
        from napari_scai.pl._integration import joint_umap
        from napari_scai.preprocess import histology_table
        from napari_scai.tl._integrate import integrate

        sdata = self.sdata
        if sdata is None:
            notify_error("No dataset. Fix: open one with 'Open…' or draw a sample in the viewer")
            return
        params = self.parameters()
        with_he = self.histology.isChecked()
        if len(params["tables"]) + int(with_he) < 2:
            notify_error("Tick at least two tables (or one table and the H&E features)")
            return
        spatial_layer = self._spot_layer(params["tables"][0])
        self._cancel = threading.Event()
        cancel = self._cancel
        relay = self._relay

        def job():
            if with_he:
                relay.progress.emit(0, 100, "H&E features of the spots")
                histology_table(sdata, params["tables"][0], key_added="histology")
                params["tables"] = (*params["tables"], "histology")
            integrate(
                sdata,
                progress=lambda i, n, msg: relay.progress.emit(i, n, msg),
                cancel=cancel,
                **params,
            )
            adata = sdata.tables[params["tables"][0]]
            if spatial_layer is None:
                relay.progress.emit(100, 100, "UMAP of the joint space")
                joint_umap(adata, basis=f"X_{KEY}", seed=params["seed"])
            return adata

        self.result = None
        self._params = params
        self._run_sdata = sdata
        self._spatial_layer = spatial_layer
        self._start(job, params["device"])

    # --- drawing ---------------------------------------------------------------------------------
    def _on_done(self, adata) -> None:
        self.result = adata
        tables = list(self._params["tables"])
        if self.histology.isChecked() and "histology" not in tables:
            tables.append("histology")
        cluster_key = f"{KEY}_cluster" if f"{KEY}_cluster" in adata.obs else None
        prefix = _weight_prefix(KEY)
        weights = [f"{prefix}_weight_{t}" for t in tables if f"{prefix}_weight_{t}" in adata.obs]
        layer = self._spatial_layer
        if layer is not None:
            self.result_layers = self._draw_spatial(layer, adata, cluster_key, weights)
        else:
            self.result_layers = self._draw_embedding(adata, cluster_key, weights)
        mean_w = ", ".join(
            f"{w.rsplit('_weight_', 1)[1]} {adata.obs[w].mean():.2f}" for w in weights
        )
        k = adata.obs[cluster_key].nunique() if cluster_key else 0
        self.status.setText(
            f"done: obsm['X_{KEY}']"
            + (f", {k} joint clusters" if k else "")
            + f"; mean weights: {mean_w}"
        )

    def _draw_spatial(self, layer, adata, cluster_key, weights) -> list:
        from napari_scai.viewer import recolor

        layer.metadata["adata"] = adata  # the table integrate wrote into
        if cluster_key:
            recolor(layer, cluster_key)
        out = [layer]
        for w in weights:
            name = f"{layer.name} {w}"
            if name in self.viewer.layers:
                recolor(self.viewer.layers[name], w, limits=(0.0, 1.0), colormap="magma")
                out.append(self.viewer.layers[name])
                continue
            wl = self.viewer.add_points(
                layer.data,
                size=layer.size,
                border_width=0,
                name=name,
                visible=False,
                features=layer.features[["id"]].copy() if "id" in layer.features else None,
                metadata={**layer.metadata, "scai": _derived_source(layer.metadata["scai"])},
                **{k: getattr(layer, k) for k in ("scale", "translate")},
            )
            recolor(wl, w, limits=(0.0, 1.0), colormap="magma")
            out.append(wl)
        self.viewer.layers.selection.active = layer
        return out

    def _draw_embedding(self, adata, cluster_key, weights) -> list:
        from napari_scai.viewer import LayerSource, recolor
        from napari_scai.viewer._layers import _metadata

        sdata = self._run_sdata
        table = self._params["tables"][0]
        xy = np.asarray(adata.obsm[f"X_{KEY}_umap"], dtype=float)
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        span = float(np.max(hi - lo)) or 1.0
        yx = np.column_stack([-(xy[:, 1] - lo[1]), xy[:, 0] - lo[0]]) * (1000.0 / span)
        size = float(np.clip(1000.0 / np.sqrt(len(xy)) * 0.5, 4.0, 30.0))
        features = pd.DataFrame({"id": np.asarray(adata.obs_names)})
        out = []
        keys = ([cluster_key] if cluster_key else []) + weights
        for i, key in enumerate(keys):
            name = f"{table} joint UMAP" + ("" if i == 0 else f" {key}")
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            source = LayerSource(
                element=name, table=table, extra={"rows": None, "derived": True, "embedding": True}
            )
            layer = self.viewer.add_points(
                yx,
                size=size,
                border_width=0,
                name=name,
                visible=i == 0,
                features=features.copy(),
                metadata=_metadata(sdata, source, adata),
            )
            if key == cluster_key:
                recolor(layer, key)
            else:
                recolor(layer, key, limits=(0.0, 1.0), colormap="magma")
            out.append(layer)
        self.viewer.reset_view()
        return out


def _derived_source(source):
    from dataclasses import replace

    return replace(source, color_key=None, extra={**source.extra, "derived": True})
