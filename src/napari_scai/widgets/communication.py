"""Cell–cell communication dock: run ``tl.communication`` in a worker, explore pairs on the tissue.

Thin: collects parameters, runs :func:`napari_scai.tl.communication` off the GUI thread with a
progress bar and Cancel, then shows the ranked pair table; choosing a pair draws its sender and
receiver maps and its strongest flows (``viewer._communication``); the group × group heatmap
(``pl.communication_heatmap`` on a Qt canvas) answers clicks with the group pair's top LR pairs.
"""

from __future__ import annotations

import threading
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
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_scai.widgets._common import (
    ModelRunner,
    ProgressRelay,
    SourceLayerChoice,
    notify_error,
    refill_combo,
)
from napari_scai.widgets.domains import available_devices

NO_GROUPS = "(none)"
PAIR_COLUMNS = ["interaction", "statistic", "pvalue", "fdr", "n_local_sig"]
GROUP_PAIR_COLUMNS = ["interaction", "score", "zscore", "fdr"]


def _fmt(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{v:.3g}"
    return str(v)


def _fill_table(table: QTableWidget, df: pd.DataFrame, columns: list[str]) -> None:
    cols = [c for c in columns if c in df.columns]
    table.clearContents()
    table.setColumnCount(len(cols))
    table.setHorizontalHeaderLabels(cols)
    table.setRowCount(len(df))
    for i, row in enumerate(df[cols].itertuples(index=False)):
        for j, v in enumerate(row):
            item = QTableWidgetItem(_fmt(v))
            item.setFlags(item.flags() & ~Qt.ItemIsEditable)
            table.setItem(i, j, item)
    table.resizeColumnsToContents()


class CommunicationWidget(QWidget, SourceLayerChoice, ModelRunner):
    """Which ligand–receptor pairs signal, where, and between which groups."""

    task_name = "Cell–cell communication"

    key_added = "scai_communication"

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.viewer = napari_viewer
        self.layer_combo = QComboBox()
        self.table_combo = QComboBox()
        self.groupby_combo = QComboBox()
        self.bandwidth = QDoubleSpinBox()
        self.bandwidth.setRange(0.0, 10_000.0)
        self.bandwidth.setDecimals(1)
        self.bandwidth.setSuffix(" µm")
        self.bandwidth.setSpecialValueText("auto (Visium 100 µm, cells 30 µm)")
        self.n_perms = QSpinBox()
        self.n_perms.setRange(0, 100_000)
        self.n_perms.setValue(1000)
        self.device_combo = QComboBox()
        for name, usable in available_devices():
            self.device_combo.addItem(name)
            if not usable:
                self.device_combo.model().item(self.device_combo.count() - 1).setEnabled(False)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.gnn = QCheckBox("also fit the GNN (learned pair strengths)")
        self.top_flows = QSpinBox()
        self.top_flows.setRange(1, 100_000)
        self.top_flows.setValue(300)
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.pair_table = QTableWidget(0, len(PAIR_COLUMNS))
        self.pair_table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.pair_table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.pair_table.setMinimumHeight(140)
        self.figure = Figure(figsize=(4.5, 4.0), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setFixedHeight(280)
        self.heat_pair_only = QCheckBox("heatmap of the chosen pair only")
        self.group_box = QGroupBox("Click a heatmap cell: its top LR pairs")
        self.group_table = QTableWidget(0, len(GROUP_PAIR_COLUMNS))
        self.group_table.setMinimumHeight(130)
        QVBoxLayout(self.group_box).addWidget(self.group_table)

        form = QFormLayout()
        form.addRow("Spots/cells layer", self.layer_combo)
        form.addRow("Table", self.table_combo)
        form.addRow("Group by", self.groupby_combo)
        form.addRow("Bandwidth", self.bandwidth)
        form.addRow("Permutations", self.n_perms)
        form.addRow("Device", self.device_combo)
        form.addRow("Seed", self.seed)
        form.addRow("", self.gnn)
        form.addRow("Flows shown", self.top_flows)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        inner = QWidget()
        layout = QVBoxLayout(inner)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(QLabel("Ranked LR pairs (choose one to draw it)"))
        layout.addWidget(self.pair_table)
        layout.addWidget(self.canvas)
        layout.addWidget(self.heat_pair_only)
        layout.addWidget(self.group_box)
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(inner)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

        self._relay = ProgressRelay()
        self._relay.progress.connect(self._on_progress)
        self._cancel: threading.Event | None = None
        self.worker = None
        self.report = None
        self.pair: str | None = None
        self.group_pair: tuple[str, str] | None = None
        self._heat_ax = None
        self._sdata = None
        self._table = None
        self.layer_combo.currentIndexChanged.connect(self._refresh_tables)
        self.table_combo.currentIndexChanged.connect(self._refresh_groupby)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.pair_table.itemSelectionChanged.connect(self._on_pair_selected)
        self.canvas.mpl_connect("button_press_event", self._on_heatmap_click)
        self.heat_pair_only.toggled.connect(lambda _on: self.draw_heatmap())
        self.viewer.layers.events.inserted.connect(self.refresh_layers)
        self.viewer.layers.events.removed.connect(self.refresh_layers)
        self.refresh_layers()

    # --- layer/table selection ------------------------------------------------------------------
    def _refresh_tables(self, *_args) -> None:
        layer = self.layer
        names: list[str] = []
        if layer is not None:
            sdata = layer.metadata["sdata"]
            names = [
                t
                for t in sdata.tables
                if sdata.tables[t].n_obs == len(layer.data) and t != self.key_added
            ] or [t for t in sdata.tables if t != self.key_added]
        refill_combo(self.table_combo, names)
        if layer is not None and layer.metadata["scai"].table in names:
            self.table_combo.setCurrentText(layer.metadata["scai"].table)
        self._refresh_groupby()

    def _refresh_groupby(self, *_args) -> None:
        layer = self.layer
        cols = [NO_GROUPS]
        table = self.table_combo.currentText()
        if layer is not None and table in layer.metadata["sdata"].tables:
            obs = layer.metadata["sdata"].tables[table].obs
            for c in obs.columns:
                col = obs[c]
                if isinstance(col.dtype, pd.CategoricalDtype) or col.dtype == object:
                    if 1 < col.nunique() <= 60:
                        cols.append(str(c))
        refill_combo(self.groupby_combo, cols)

    # --- running ---------------------------------------------------------------------------------
    def parameters(self) -> dict[str, Any]:
        """The keyword arguments passed to :func:`napari_scai.tl.communication`."""
        group = self.groupby_combo.currentText()
        params: dict[str, Any] = {
            "table": self.table_combo.currentText(),
            "groupby": None if group in ("", NO_GROUPS) else group,
            "bandwidth_um": self.bandwidth.value() or None,
            "n_perms": self.n_perms.value(),
            "device": self.device_combo.currentText(),
            "seed": self.seed.value(),
            "key_added": self.key_added,
        }
        if self.gnn.isChecked():
            params["gnn"] = True
        return params

    def run(self) -> None:
        """Start ``tl.communication`` in a worker thread (progress bar + Cancel stay responsive)."""
        from napari_scai.tl._communication import communication

        layer = self.layer
        if layer is None:
            notify_error("No spots/cells layer. Fix: open a dataset with napari-scai first")
            return
        sdata = layer.metadata["sdata"]
        params = self.parameters()
        self._cancel = threading.Event()
        relay = self._relay

        def job():
            return communication(
                sdata,
                progress=lambda i, n, msg: relay.progress.emit(i, n, msg),
                cancel=self._cancel,
                **params,
            )

        self.report = None
        self._sdata, self._table = sdata, params["table"]
        self._start(job, params["device"])

    def _on_done(self, report) -> None:
        self.report = report
        cols = PAIR_COLUMNS + (["gnn_strength"] if "gnn_strength" in report.pairs else [])
        _fill_table(self.pair_table, report.pairs, cols)
        n_sig = int((report.pairs["fdr"] <= 0.05).sum())
        text = (
            f"done: {len(report.pairs)} LR pairs, {n_sig} at FDR 0.05 "
            f"({report.params.get('n_perms')} permutations, bandwidth "
            f"{report.params.get('bandwidth_um'):.0f} µm)"
        )
        cov = report.params.get("coverage_summary") or {}
        if "n_kept" in cov and "n_input" in cov:
            text += (
                f"; {cov['n_kept']} of {cov['n_input']} pairs of the "
                f"{cov.get('resource', '')} table kept (see report.coverage)"
            )
        self.status.setText(text)
        self.draw_heatmap()
        if len(report.pairs):
            self.pair_table.selectRow(0)  # draws the top pair

    # --- results ---------------------------------------------------------------------------------
    def _on_pair_selected(self) -> None:
        rows = {i.row() for i in self.pair_table.selectedIndexes()}
        if self.report is None or not rows:
            return
        self.show_pair(str(self.report.pairs["interaction"].iloc[min(rows)]))

    def show_pair(self, interaction: str) -> None:
        """Draw one interaction: sender map, receiver map and its strongest flows."""
        from napari_scai.pl._communication import pair_activity
        from napari_scai.tl._communication import communication_edges
        from napari_scai.viewer._communication import show_flows, show_pair_maps

        layer = self.layer
        if layer is None or self._sdata is None:
            return
        send, recv = pair_activity(self._sdata, interaction, self._table, key_added=self.key_added)
        show_pair_maps(self.viewer, layer, send, recv, pair=interaction)
        edges = communication_edges(
            self._sdata,
            interaction=interaction,
            table=self._table,
            key_added=self.key_added,
            top=None,
        )
        show_flows(
            self.viewer,
            layer,
            edges["sender"].to_numpy(),
            edges["receiver"].to_numpy(),
            edges["signal"].to_numpy(),
            pair=interaction,
            n_rows=len(send),
            top=self.top_flows.value(),
        )
        self.viewer.layers.selection.active = layer
        self.pair = interaction
        if self.heat_pair_only.isChecked():
            self.draw_heatmap()

    def draw_heatmap(self) -> None:
        """Sender × receiver group heatmap on the dock's canvas.

        Summed over all interactions, or the chosen pair's alone when "heatmap of the chosen
        pair only" is ticked.
        """
        from matplotlib.patches import Rectangle

        from napari_scai.pl._communication import communication_heatmap

        self.figure.clear()
        self._heat_ax = None
        if self.report is None or not self.report.params.get("group_names"):
            ax = self.figure.add_subplot(111)
            ax.text(0.5, 0.5, "no groups: choose 'Group by' and Run", ha="center", va="center")
            ax.set_axis_off()
        else:
            ax = self.figure.add_subplot(111)
            only = self.pair if self.heat_pair_only.isChecked() else None
            communication_heatmap(self.report, interaction=only, ax=ax, annotate=False)
            if self.group_pair is not None:
                M = ax.scai_matrix
                i = list(M.index).index(self.group_pair[0])
                j = list(M.columns).index(self.group_pair[1])
                ax.add_patch(
                    Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="cyan", lw=2)
                )
            self._heat_ax = ax
        self.canvas.draw_idle()

    def _on_heatmap_click(self, event) -> None:
        if self._heat_ax is None or event.inaxes is not self._heat_ax:
            return
        if event.xdata is None or event.ydata is None:
            return
        M = self._heat_ax.scai_matrix
        i, j = int(round(event.ydata)), int(round(event.xdata))
        if 0 <= i < M.shape[0] and 0 <= j < M.shape[1]:
            self.show_group_pair(str(M.index[i]), str(M.columns[j]))

    def show_group_pair(self, sender: str, receiver: str, n: int = 10) -> pd.DataFrame:
        """List the top LR pairs from ``sender`` group to ``receiver`` group."""
        if self.report is None:
            raise RuntimeError("no result yet: Run first")
        top = self.report.top_pairs(sender, receiver, n=n)
        _fill_table(self.group_table, top, GROUP_PAIR_COLUMNS)
        self.group_box.setTitle(f"Top LR pairs {sender} → {receiver}")
        self.group_pair = (sender, receiver)
        self.draw_heatmap()
        return top
