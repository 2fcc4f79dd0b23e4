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
