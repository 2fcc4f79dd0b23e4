"""Notebook -> napari -> notebook: scai.viewer.show, a polygon drawn in the window, close."""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely

import napari_scai as scai
from napari_scai import io
from napari_scai.viewer._annotations import ANNOTATION_ELEMENT, ANNOTATION_KEY


def _toy_store(tmp_path):
    from anndata import AnnData

    from napari_scai.io._common import build_spatialdata

    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(20), np.arange(20)), -1).reshape(-1, 2)
    xy = grid * 200.0 + 300.0
    n = len(xy)
    obs = pd.DataFrame(
        {"layer": pd.Categorical(np.where(grid[:, 1] < 10, "top", "bottom"))},
        index=[f"spot_{i}" for i in range(n)],
    )
    adata = AnnData(rng.poisson(1.0, (n, 4)).astype(np.float32), obs=obs)
    image = rng.integers(0, 255, (3, 450, 450), dtype=np.uint8)
    sdata = build_spatialdata(
        sample="toy",
        tables={"rna": adata},
        coords=xy,
        radius=55.0,
        shapes_suffix="spots",
        images={"toy_lowres_image": (image, 0.1)},
    )
    return io.write(sdata, tmp_path / "toy.zarr"), xy


def test_show_round_trip_annotation_reaches_obs_and_store(
    make_napari_viewer, qtbot, tmp_path
) -> None:
    # make_napari_viewer (unused) gives this test napari's per-test plugin/app state, so the
    # real napari.Viewer() that show() opens registers plugins afresh rather than twice over
    # what earlier tests' viewers registered
    store, xy = _toy_store(tmp_path)
    sdata = io.read(store)  # backed by the store: sdata.path is set
    viewer = scai.viewer.show(sdata, color_by="layer")
    try:
        assert scai.viewer.show(sdata) is viewer  # reused while open
        (dock,) = scai.viewer.annotate_docks(viewer)
        assert dock.sdata is sdata and dock.adata is sdata.tables["rna"]
        shapes = dock.shapes_layer
        assert shapes in viewer.layers
        # a user draws a polygon (world y, x) in the annotation layer: napari's polygon tool
        # adds it to the layer's data on the closing click, as add_polygons does
        corners_xy = np.array([[0, 0], [2100, 0], [2100, 4300], [0, 4300]], dtype=float)
        shapes.add_polygons([corners_xy[:, ::-1]])
        qtbot.wait(50)
        inside = shapely.contains_xy(shapely.Polygon(corners_xy), xy[:, 0], xy[:, 1])
        assert 0 < inside.sum() < len(xy)
        # back in the notebook, before closing: the labels are in obs already
        labels = sdata.tables["rna"].obs[ANNOTATION_KEY]
        np.testing.assert_array_equal(labels.notna().to_numpy(), inside)
        cls = labels.dropna().unique()
        assert len(cls) == 1
    finally:
        viewer.close()  # well before the dock's 2 s autosave: the close saves
    # the notebook's sdata has them after the window is gone, and so has the store
    after = sdata.tables["rna"].obs[ANNOTATION_KEY]
    np.testing.assert_array_equal(after.notna().to_numpy(), inside)
    reopened = io.read(store)
    saved = reopened.tables["rna"].obs[ANNOTATION_KEY]
    assert saved.astype(object).equals(after.astype(object))
    assert ANNOTATION_ELEMENT in reopened.shapes and len(reopened.shapes[ANNOTATION_ELEMENT]) == 1
    assert reopened.shapes[ANNOTATION_ELEMENT]["class"].tolist() == [str(cls[0])]
    # a later show() opens a new window (the old one is closed)
    viewer2 = scai.viewer.show(reopened)
    try:
        assert viewer2 is not viewer
        (dock2,) = scai.viewer.annotate_docks(viewer2)
        assert len(dock2.state.polygons) == 1  # the saved polygon is back in the window
    finally:
        viewer2.close()
