"""Every shared dataset with coordinates opens and draws in a real (shown) viewer."""

from __future__ import annotations

import numpy as np
import pytest

from tests._screen import canvas_shot, show_and_settle, world_to_screen
from tests.conftest import shared_path

DATASETS = {
    "visium/dlpfc_151673": "array_row",
    "visium/dlpfc_151674": "array_col",
    "visium/spaceranger_v1_tiny": "array_row",
    "imaging/starmap_v1_by3_wang2018.h5ad": "cluster_name",
    "imaging/merfish_hypothalamus_moffitt2018.h5ad": "Cell_class",
    "imaging/cycif_exemplar/cycif_exemplar001_11k.h5ad": "phenotype",
    "imaging/cycif_exemplar/cycif_3k_33markers.h5ad": "phenotype",
}


@pytest.mark.parametrize("relpath", list(DATASETS))
def test_dataset_opens_and_draws(make_napari_viewer, qtbot, relpath):
    from napari_scai.io import read
    from napari_scai.viewer import add_sdata

    sdata = read(shared_path(*relpath.split("/")))
    key = DATASETS[relpath]
    viewer = make_napari_viewer(show=True)
    layers = add_sdata(viewer, sdata, color_by=key)
    points = [ly for ly in layers if ly._type_string == "points"]
    assert len(points) == 1 and len(points[0].data) == len(next(iter(sdata.shapes.values())))
    layer = points[0]
    if key is not None:
        assert layer.metadata["scai"].color_key == key and key in layer.features
    layer.opacity = 1.0
    for ly in layers:
        if ly._type_string == "image":
            ly.visible = False
    show_and_settle(viewer, qtbot)
    shot = canvas_shot(viewer)
    rc = np.round(world_to_screen(viewer, shot, layer.data)).astype(int)
    inside = (
        (rc[:, 0] >= 0) & (rc[:, 0] < shot.shape[0]) & (rc[:, 1] >= 0) & (rc[:, 1] < shot.shape[1])
    )
    assert inside.all(), "reset_view did not fit every spot/cell in the canvas"
    drawn = shot[rc[:, 0], rc[:, 1], :3].max(axis=1) > 40  # not the black background
    assert drawn.mean() > 0.95, f"only {drawn.mean():.1%} of centres are drawn"


def test_synthetic_section_is_one_public_generator():
    import numpy as np
    import pytest
    import scipy.sparse as sp

    from napari_scai.datasets import synthetic_section
    from napari_scai.graph import spatial_graph

    sdata = synthetic_section(2000, n_genes=30, n_domains=5, seed=1)
    a = sdata.tables["rna"]
    assert set(sdata.shapes) == {"synthetic_cells"} and a.shape == (2000, 30)
    assert sp.issparse(a.X) and a.X.dtype == np.float32
    assert np.array_equal(a.X.data, np.round(a.X.data))  # raw counts
    assert list(a.obs["domain"].cat.categories) == ["D0", "D1", "D2", "D3", "D4"]
    # planted domains are spatially coherent and carry their markers
    g = spatial_graph(a, k=6)
    codes = a.obs["domain"].cat.codes.to_numpy()
    same = (codes[g.nonzero()[0]] == codes[g.nonzero()[1]]).mean()
    assert same > 0.85
    means = np.vstack([np.asarray(a.X[codes == d].mean(axis=0)).ravel() for d in range(5)])
    assert (means.max(0) / means.min(0) > 1.5).sum() >= 5 * 4  # marker genes differ
    # deterministic by seed; the expression programs are shared by seeds
    b = synthetic_section(2000, n_genes=30, n_domains=5, seed=1, as_anndata=True)
    assert (b.X != a.X).nnz == 0 and np.array_equal(b.obsm["spatial"], a.obsm["spatial"])
    c = synthetic_section(2000, n_genes=30, n_domains=5, seed=2, as_anndata=True)
    assert not np.array_equal(c.obsm["spatial"], a.obsm["spatial"])
    # Visium kind: the hexagonal lattice with 6 neighbours per inner spot
    v = synthetic_section(900, n_genes=10, kind="visium", as_anndata=True)
    deg = np.diff(spatial_graph(v).indptr)
    assert {"array_row", "array_col"} <= set(v.obs.columns) and np.median(deg) == 6
    assert "spot_diameter_fullres" in v.uns["spatial"]["synthetic"]["scalefactors"]
    with pytest.raises(ValueError, match="kind="):
        synthetic_section(10, kind="xenium")
    with pytest.raises(ValueError, match="n_domains >= 3"):
        synthetic_section(10, n_domains=2, layout="bands+islands")
