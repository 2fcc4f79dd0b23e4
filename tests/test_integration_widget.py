"""The integration dock: ECCITE (RNA + 49 ADT) and the Signac scATAC sample through the dock via
qtbot, weights written and drawn; DLPFC RNA + H&E on the tissue; Cancel writes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from napari_scai.widgets.integration import NO_BATCH, IntegrationWidget
from tests.conftest import shared_path

FAST = 60  # training steps: enough to exercise the whole path quickly


def _run(widget, qtbot, timeout=120_000):
    widget.run_button.click()
    assert not widget.run_button.isEnabled() and widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: widget.run_button.isEnabled(), timeout=timeout)
    assert widget.result is not None, widget.status.text()


@pytest.fixture
def dock(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    widget = IntegrationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return widget


def test_eccite_through_the_dock_umap_coloured_by_joint_clusters(dock, qtbot, tmp_path):
    from tests._screen import canvas_shot, show_and_settle

    dock.open_path(shared_path("citeseq", "eccite_pbmc_control_citefuse_500cells.h5ad"))
    assert dock.tables() == ["rna", "protein"]  # the hashtag table 'hto' is offered, not ticked
    assert not dock.spatial.isEnabled() and not dock.histology.isEnabled()
    dock.n_clusters.setValue(6)
    dock.n_steps.setValue(FAST)
    dock.device_combo.setCurrentText("cpu")
    assert dock.parameters() == {
        "tables": ("rna", "protein"),
        "batch_key": None,
        "spatial": False,
        "n_clusters": 6,
        "device": "cpu",
        "seed": 0,
        "n_steps": FAST,
    }
    steps = []
    dock._relay.progress.connect(lambda i, n, m: steps.append((i, n, m)))
    _run(dock, qtbot)
    rna = dock.sdata.tables["rna"]
    assert rna.obsm["X_scai_joint"].shape[0] == 500
    w = rna.obs[["scai_weight_rna", "scai_weight_protein"]].to_numpy()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-5)
    assert rna.obs["scai_joint_cluster"].nunique() == 6
    assert rna.obsm["X_scai_joint_umap"].shape == (500, 2)
    assert steps and any("UMAP" in m for _, _, m in steps)
    # drawn: the UMAP coloured by cluster with uns colours, and one layer per weight
    names = [ly.name for ly in dock.result_layers]
    assert names == [
        "rna joint UMAP",
        "rna joint UMAP scai_weight_rna",
        "rna joint UMAP scai_weight_protein",
    ]
    umap_layer = dock.viewer.layers["rna joint UMAP"]
    colors = rna.uns["scai_joint_cluster_colors"]
    codes = rna.obs["scai_joint_cluster"].cat.codes.to_numpy()
    from matplotlib.colors import to_rgba_array

    np.testing.assert_allclose(umap_layer.face_color, to_rgba_array(colors)[codes], atol=1e-6)
    wl = dock.viewer.layers["rna joint UMAP scai_weight_protein"]
    np.testing.assert_allclose(wl.features["scai_weight_protein"], rna.obs["scai_weight_protein"])
    assert "done" in dock.status.text() and "protein" in dock.status.text()
    # the screenshot shows the clusters' colours on the canvas
    show_and_settle(dock.viewer, qtbot)
    dock.viewer.reset_view()
    qtbot.wait(50)
    shot = canvas_shot(dock.viewer)
    from PIL import Image

    Image.fromarray(shot).save(tmp_path / "eccite_umap.png")
    rgb = shot[..., :3].reshape(-1, 3).astype(int)
    palette = (to_rgba_array(colors)[:, :3] * 255).astype(int)
    seen = [bool((np.abs(rgb - c).sum(axis=1) < 30).sum() > 20) for c in palette]
    assert sum(seen) >= 4, seen
    _static_figures(rna, palette)


def _static_figures(rna, palette):
    """pl figures of the same result: weights (one map per modality + bars), clusters."""
    import matplotlib.pyplot as plt

    from napari_scai import pl

    fig = pl.integration_weights(rna)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["rna weight", "protein weight"]
    bars = fig.axes[2].patches  # (the colorbars' axes come after the three panels)
    assert len(bars) == 2 * 6  # stacked: one bar per cluster and modality, heights sum to 1
    heights = np.array([b.get_height() for b in bars]).reshape(2, 6).sum(axis=0)
    np.testing.assert_allclose(heights, 1.0, atol=1e-5)
    fig2 = pl.joint_clusters(rna)  # basis: the joint UMAP (no obsm['spatial'] here)
    dots = fig2.axes[0].collections[0]
    np.testing.assert_allclose(dots.get_offsets(), rna.obsm["X_scai_joint_umap"], rtol=1e-6)
    codes = rna.obs["scai_joint_cluster"].cat.codes.to_numpy()
    np.testing.assert_allclose(dots.get_facecolors()[:, :3] * 255, palette[codes], atol=1)
    plt.close("all")


def test_atac_sample_through_the_dock_and_cancel(dock, qtbot):
    from napari_scai.io import read

    dock.open_path(shared_path("atac", "signac_atac_small_peaks.h5ad"))
    sdata = dock.sdata
    # a second modality on the same cells: the gene-activity table of the same sample
    sdata.tables["rna"] = read(shared_path("atac", "signac_atac_small_RNA.h5ad")).tables["rna"]
    dock._refresh_tables()
    dock.set_tables(["atac", "rna"])
    dock.device_combo.setCurrentText("cpu")
    atac = sdata.tables["atac"]
    # Cancel first: a run that only Cancel can end writes nothing and draws nothing
    dock.n_steps.setValue(1_000_000)
    dock.run_button.click()
    qtbot.wait(1500)
    dock.cancel_button.click()
    qtbot.waitUntil(lambda: dock.run_button.isEnabled(), timeout=60_000)
    assert dock.result is None and "cancelled" in dock.status.text()
    assert "X_scai_joint" not in atac.obsm and "scai_weight_atac" not in atac.obs
    assert not [ly for ly in dock.viewer.layers if "joint UMAP" in ly.name]
    # then a real run
    dock.n_clusters.setValue(2)
    dock.n_steps.setValue(FAST)
    _run(dock, qtbot)
    assert {"scai_weight_atac", "scai_weight_rna"} <= set(atac.obs.columns)
    assert atac.uns["scai_joint_params"]["likelihoods"]["atac"] == "bernoulli"
    layer = dock.viewer.layers["atac joint UMAP scai_weight_atac"]
    np.testing.assert_allclose(layer.features["scai_weight_atac"], atac.obs["scai_weight_atac"])


def test_dlpfc_rna_plus_histology_on_the_tissue(make_napari_viewer, dlpfc_sdata_session, qtbot):
    """A 4,000 x 4,000 px crop of DLPFC 151673 (851 spots, image cropped with its transform)."""
    import spatialdata as sd

    from napari_scai.viewer import add_sdata

    dlpfc_sdata = sd.bounding_box_query(
        dlpfc_sdata_session,
        axes=("x", "y"),
        min_coordinate=[3000, 3000],
        max_coordinate=[7000, 7000],
        target_coordinate_system="global",
        filter_table=True,
    )
    viewer = make_napari_viewer()
    add_sdata(viewer, dlpfc_sdata, color_by="layer_manual")
    dock = IntegrationWidget(viewer)
    assert dock.data_combo.currentText() == "dlpfc_151673_spots"
    dock.set_tables(["rna"])
    assert dock.histology.isEnabled() and dock.spatial.isEnabled()
    dock.histology.setChecked(True)
    dock.spatial.setChecked(True)
    dock.n_clusters.setValue(7)
    dock.n_steps.setValue(FAST)
    dock.device_combo.setCurrentText("cpu")
    assert dock.batch_combo.currentText() == NO_BATCH
    _run(dock, qtbot)
    rna = dlpfc_sdata.tables["rna"]
    assert "histology" in dlpfc_sdata.tables
    assert rna.n_obs == 851 and rna.obs["scai_joint_cluster"].nunique() == 7
    assert dlpfc_sdata.tables["histology"].uns["scai_histology"]["n_outside"] == 0
    spots = viewer.layers["dlpfc_151673_spots"]
    assert spots.metadata["scai"].color_key == "scai_joint_cluster"
    for t in ("rna", "histology"):
        layer = viewer.layers[f"dlpfc_151673_spots scai_weight_{t}"]
        np.testing.assert_allclose(layer.features[f"scai_weight_{t}"], rna.obs[f"scai_weight_{t}"])
        assert len(layer.data) == len(spots.data)
