"""The communication dock end to end on MERFISH (Cell_class) and DLPFC (Ensembl IDs mapped).

Each run: Run in a worker -> ranked pair table -> the top pair's sender/receiver maps and flows
(Vectors, arrows sender -> receiver) -> group x group heatmap -> a click on a group pair lists
its top LR pairs. A screenshot of the whole window (dock included) is saved to ``tmp_path``
(or ``$SCAI_SCREENSHOT_DIR``) for a person to look at. Small n_perms keeps them fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from napari_scai.viewer import add_sdata
from napari_scai.widgets.communication import CommunicationWidget
from tests.conftest import shared_path


def _screenshot_dir(tmp_path: Path) -> Path:
    d = Path(os.environ.get("SCAI_SCREENSHOT_DIR") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


def _run(widget, qtbot, *, groupby: str, n_perms: int) -> None:
    widget.groupby_combo.setCurrentText(groupby)
    widget.n_perms.setValue(n_perms)
    widget.device_combo.setCurrentText("cpu")
    steps = []
    widget._relay.progress.connect(lambda i, n, m: steps.append((i, n)))
    widget.run_button.click()
    assert not widget.run_button.isEnabled() and widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: widget.run_button.isEnabled(), timeout=180_000)
    assert widget.report is not None, widget.status.text()
    assert steps and all(0 <= i <= n for i, n in steps)


def _check_results(widget, qtbot, sdata, table: str, n_groups: int) -> None:
    viewer = widget.viewer
    report = widget.report
    pairs = report.pairs
    # ranked pair table: same order and values as the report
    assert widget.pair_table.rowCount() == len(pairs) > 0
    header = [widget.pair_table.horizontalHeaderItem(j).text() for j in range(4)]
    assert header == ["interaction", "statistic", "pvalue", "fdr"]
    shown = [widget.pair_table.item(i, 0).text() for i in range(min(5, len(pairs)))]
    assert shown == list(pairs["interaction"].head(5))
    assert np.all(np.diff(pairs["pvalue"].to_numpy()) >= 0)  # sorted by evidence
    # the top pair is drawn: sender and receiver maps over the same cells, and flows
    top = pairs["interaction"].iloc[0]
    assert widget.pair == top
    base = widget.layer
    send = viewer.layers[f"{base.name} sender"]
    recv = viewer.layers[f"{base.name} receiver"]
    flows = viewer.layers[f"{base.name} flows"]
    assert len(send.data) == len(recv.data) == len(base.data)
    res = sdata.tables[widget.key_added]
    k = list(res.var_names).index(top)
    rows = base.metadata["scai"].extra.get("rows")
    rows = np.arange(len(base.data)) if rows is None else np.asarray(rows)
    expect_recv = np.asarray(res.X[:, k]).ravel()[rows]
    np.testing.assert_allclose(recv.features["receiver"], expect_recv, rtol=1e-5)
    assert send.features["sender"].max() > 0
    assert flows._type_string == "vectors" and 0 < len(flows.data) <= widget.top_flows.value()
    strength = flows.features["strength"].to_numpy()
    assert np.all(np.diff(strength) <= 0) and strength[0] > 0  # strongest first
    # arrows start on their sender cell and point at their receiver
    s_idx = flows.features["sender"].to_numpy()
    r_idx = flows.features["receiver"].to_numpy()
    obj = np.full(len(res.obs), -1)
    obj[rows] = np.arange(len(rows))
    start, vec = flows.data[:, 0], flows.data[:, 1]
    np.testing.assert_allclose(start, base.data[obj[s_idx]], atol=1e-6)
    to_recv = base.data[obj[r_idx]] - start
    cos = (vec * to_recv).sum(1) / (
        np.linalg.norm(vec, axis=1) * np.linalg.norm(to_recv, axis=1) + 1e-12
    )
    assert np.all(cos > 0.999)
    # length and opacity grow with strength
    length = np.linalg.norm(vec, axis=1) / np.linalg.norm(to_recv, axis=1)
    assert length[0] == pytest.approx(1.0) and length[-1] < length[0]
    assert flows.edge_color[0, 3] > flows.edge_color[-1, 3]
    # heatmap of all groups, then a click on its strongest cell lists that group pair's top LRs
    M = widget._heat_ax.scai_matrix
    assert M.shape == (n_groups, n_groups) and M.to_numpy().max() > 0
    i, j = np.unravel_index(np.argmax(M.to_numpy()), M.shape)
    click = SimpleNamespace(inaxes=widget._heat_ax, xdata=float(j), ydata=float(i))
    widget._on_heatmap_click(click)
    assert widget.group_pair == (str(M.index[i]), str(M.columns[j]))
    n_listed = widget.group_table.rowCount()
    assert n_listed == min(10, len(pairs))
    listed = [widget.group_table.item(r, 0).text() for r in range(n_listed)]
    expect = report.top_pairs(M.index[i], M.columns[j])["interaction"].tolist()
    assert listed == expect
    assert widget.group_box.title() == f"Top LR pairs {M.index[i]} → {M.columns[j]}"
    # the heatmap can follow the chosen pair
    widget.heat_pair_only.setChecked(True)
    only = widget._heat_ax.scai_matrix
    np.testing.assert_allclose(only.to_numpy(), report.group_matrix(top).to_numpy())
    widget.heat_pair_only.setChecked(False)
    np.testing.assert_allclose(widget._heat_ax.scai_matrix.to_numpy(), M.to_numpy())
    # another pair from the table redraws the maps
    if len(pairs) > 1:
        widget.pair_table.selectRow(1)
        assert widget.pair == pairs["interaction"].iloc[1]
        assert (
            viewer.layers[f"{base.name} flows"].metadata["scai_communication"]["pair"]
            == (pairs["interaction"].iloc[1])
        )
        widget.pair_table.selectRow(0)


def _screenshot(viewer, qtbot, path: Path) -> np.ndarray:
    viewer.window._qt_window.resize(1600, 1000)
    qtbot.wait(200)
    shot = np.asarray(viewer.screenshot(canvas_only=False, flash=False))
    from imageio.v3 import imwrite

    imwrite(path, shot)
    return shot


def _arrow_pixels(viewer) -> int:
    """Canvas pixels in the flows' yellow (arrows drawn over the maps)."""
    rgb = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3].astype(int)
    return int(((rgb[..., 0] > 200) & (rgb[..., 1] > 150) & (rgb[..., 2] < 90)).sum())


def test_merfish_dock_end_to_end(make_napari_viewer, qtbot, tmp_path):
    from napari_scai import io

    sdata = io.read(shared_path("imaging", "merfish_hypothalamus_moffitt2018.h5ad"))
    viewer = make_napari_viewer(show=True)
    add_sdata(viewer, sdata, color_by="Cell_class")
    widget = CommunicationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Cell–cell communication", area="right")
    assert widget.table_combo.currentText() == "rna"
    assert "Cell_class" in [
        widget.groupby_combo.itemText(i) for i in range(widget.groupby_combo.count())
    ]
    widget.gnn.setChecked(True)  # the model-based view rides along
    _run(widget, qtbot, groupby="Cell_class", n_perms=20)
    headers = [
        widget.pair_table.horizontalHeaderItem(j).text()
        for j in range(widget.pair_table.columnCount())
    ]
    assert headers[-1] == "gnn_strength"
    assert np.isfinite(widget.report.pairs["gnn_strength"]).all()
    n_groups = sdata.tables["rna"].obs["Cell_class"].nunique()
    _check_results(widget, qtbot, sdata, "rna", n_groups)
    shots = _screenshot_dir(tmp_path)
    _screenshot(viewer, qtbot, shots / "communication_merfish_overview.png")
    # zoom on the strongest flows so the arrows are visible, then look at them on screen
    flows = viewer.layers[f"{widget.layer.name} flows"]
    viewer.layers[f"{widget.layer.name} receiver"].visible = False
    viewer.camera.center = tuple(flows.data[0, 0])
    viewer.camera.zoom = viewer.camera.zoom * 8
    qtbot.wait(100)
    assert _arrow_pixels(viewer) > 30
    _screenshot(viewer, qtbot, shots / "communication_merfish.png")


def test_dlpfc_dock_end_to_end(make_napari_viewer, qtbot, tmp_path, dlpfc_sdata):
    viewer = make_napari_viewer(show=True)
    add_sdata(viewer, dlpfc_sdata, color_by="layer_manual")
    widget = CommunicationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Cell–cell communication", area="right")
    _run(widget, qtbot, groupby="layer_manual", n_perms=20)
    report = widget.report
    # DLPFC has Ensembl IDs only: pairs were matched through the gene table
    assert report.pairs["ligand_genes"].str.startswith("ENSG").all()
    assert len(report.pairs) > 100
    n_groups = dlpfc_sdata.tables["rna"].obs["layer_manual"].nunique()
    _check_results(widget, qtbot, dlpfc_sdata, "rna", n_groups)
    assert _arrow_pixels(viewer) > 30
    _screenshot(viewer, qtbot, _screenshot_dir(tmp_path) / "communication_dlpfc.png")


def test_cancel_writes_nothing(make_napari_viewer, qtbot, dlpfc_sdata):
    viewer = make_napari_viewer()
    add_sdata(viewer, dlpfc_sdata, color_by="layer_manual")
    widget = CommunicationWidget(viewer)
    widget.n_perms.setValue(100_000)  # far too long: only Cancel ends it
    widget.device_combo.setCurrentText("cpu")
    widget.run_button.click()
    # cancel once the permutations run (the long part), then it must stop at the next check
    qtbot.waitUntil(lambda: "permutations" in widget.status.text(), timeout=120_000)
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: widget.run_button.isEnabled(), timeout=120_000)
    assert widget.report is None
    assert "cancelled" in widget.status.text()
    assert widget.key_added not in dlpfc_sdata.tables
    assert widget.key_added not in dlpfc_sdata.tables["rna"].uns


def test_parameters_follow_the_form(make_napari_viewer, dlpfc_sdata):
    viewer = make_napari_viewer()
    add_sdata(viewer, dlpfc_sdata)
    widget = CommunicationWidget(viewer)
    widget.groupby_combo.setCurrentText("layer_manual")
    widget.bandwidth.setValue(150.0)
    widget.n_perms.setValue(99)
    widget.seed.setValue(3)
    widget.device_combo.setCurrentText("cpu")
    assert widget.parameters() == {
        "table": "rna",
        "groupby": "layer_manual",
        "bandwidth_um": 150.0,
        "n_perms": 99,
        "device": "cpu",
        "seed": 3,
        "key_added": "scai_communication",
    }
    widget.bandwidth.setValue(0.0)
    widget.groupby_combo.setCurrentText("(none)")
    widget.gnn.setChecked(True)
    p = widget.parameters()
    assert p["bandwidth_um"] is None and p["groupby"] is None and p["gnn"] is True
