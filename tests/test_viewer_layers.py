"""Layer building, colouring, raster path, several samples, coordinate systems (viewer not shown)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba

from napari_scai._colors import MISSING_COLOR
from napari_scai.viewer import (
    add_samples,
    add_sdata,
    cell_at,
    color_style,
    image_layer,
    rasterize_discs,
    recolor,
    sdata_layers,
    set_coordinate_system,
)
from napari_scai.viewer._synthetic import synthetic_cells


@pytest.fixture
def dlpfc_sdata(dlpfc_sdata_session):
    """A private copy of the session's DLPFC (0.6 s, against ~9 s to read the sample again)."""
    import spatialdata as sd

    return sd.deepcopy(dlpfc_sdata_session)


def _rna(sdata):
    return sdata.tables["rna"]


# --- colour by anything ------------------------------------------------------------------------


def test_categorical_colours_from_uns_and_missing_grey(dlpfc_sdata):
    adata = _rna(dlpfc_sdata)
    style = color_style(adata, "layer_manual")
    assert style.kind == "categorical"
    assert style.category_colors == list(adata.uns["layer_manual_colors"])
    assert sum(style.counts) == adata.obs["layer_manual"].notna().sum() == 3639 - 28
    missing = adata.obs["layer_manual"].isna().to_numpy()
    np.testing.assert_allclose(style.colors[missing], [to_rgba(MISSING_COLOR)] * missing.sum())
    l3 = (adata.obs["layer_manual"] == "L3").to_numpy()
    colour = style.category_colors[style.categories.index("L3")]
    np.testing.assert_allclose(style.colors[l3], [to_rgba(colour)] * l3.sum())


def test_gene_and_obsm_colouring(dlpfc_sdata):
    adata = _rna(dlpfc_sdata)
    style = color_style(adata, "MOBP")  # by gene symbol
    col = adata[:, adata.var["gene_symbol"] == "MOBP"].X
    col = np.asarray(col.todense() if hasattr(col, "todense") else col).ravel()
    assert style.kind == "continuous" and style.value_mode == "log-normalised"
    lib = np.asarray(adata.X.sum(axis=1)).ravel()
    lognorm = np.log1p(col / lib * 1e4)
    np.testing.assert_allclose(style.values, lognorm, rtol=1e-6)
    assert style.limits == pytest.approx(tuple(np.percentile(lognorm, [1, 99])))
    raw = color_style(adata, "MOBP", values="raw")
    assert raw.value_mode == "raw" and raw.limits == pytest.approx(
        tuple(np.percentile(col, [1, 99]))
    )
    adata.obsm["X_test"] = np.column_stack(
        [np.arange(adata.n_obs), -np.arange(adata.n_obs)]
    ).astype(float)
    style = color_style(adata, "X_test:1")
    assert style.value_mode == ""  # not a feature: values as they are
    assert style.limits == pytest.approx(tuple(np.percentile(-np.arange(adata.n_obs), [1, 99])))
    with pytest.raises(KeyError, match="Fix:"):
        color_style(adata, "no_such_key")


def test_hover_shows_id_label_and_value(make_napari_viewer, dlpfc_sdata):
    viewer = make_napari_viewer()
    points = next(
        ly
        for ly in add_sdata(viewer, dlpfc_sdata, color_by="layer_manual")
        if ly._type_string == "points"
    )
    recolor(points, "MOBP")
    i = 10
    status = points.get_status(points.data[i], world=True)["coordinates"]
    adata = points.metadata["adata"]
    row = points.metadata["scai"].extra["rows"][i]
    assert adata.obs_names[row] in status
    assert f"layer_manual: {adata.obs['layer_manual'].iloc[row]}" in status
    assert "MOBP:" in status
    assert cell_at(points, points.data[i]) == row


# --- images, polygons, transforms -----------------------------------------------------------------


def test_multiscale_image_with_transform():
    import spatialdata as sd
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Affine, Scale

    img = np.random.default_rng(0).integers(0, 255, (3, 64, 96), dtype=np.uint8)
    pyramid = Image2DModel.parse(
        img,
        dims=("c", "y", "x"),
        scale_factors=[2, 2],
        transformations={"global": Scale([4.0, 4.0], axes=("y", "x"))},
    )
    theta = np.pi / 6
    rot = np.array(
        [[np.cos(theta), -np.sin(theta), 5], [np.sin(theta), np.cos(theta), 7], [0, 0, 1]]
    )
    single = Image2DModel.parse(
        img,
        dims=("c", "y", "x"),
        transformations={"rotated": Affine(rot, input_axes=("x", "y"), output_axes=("x", "y"))},
    )
    sdata = sd.SpatialData(images={"pyr": pyramid, "rot": single})
    data, kwargs, kind = image_layer(sdata, "pyr")
    assert kind == "image" and kwargs["multiscale"] and kwargs["rgb"]
    assert [d.shape for d in data] == [(64, 96, 3), (32, 48, 3), (16, 24, 3)]
    assert kwargs["scale"] == (4.0, 4.0)
    _, kwargs, _ = image_layer(sdata, "rot", "rotated")
    assert "affine" in kwargs and not np.allclose(
        kwargs["affine"][:2, :2], np.diag(np.diag(kwargs["affine"][:2, :2]))
    )
    assert [t[1]["name"] for t in sdata_layers(sdata, coordinate_system="rotated")] == ["rot"]
    channels = Image2DModel.parse(
        img.astype(np.float32), dims=("c", "y", "x"), c_coords=["a", "b", "c"]
    )
    sdata.images["fluo"] = channels
    _, kwargs, _ = image_layer(sdata, "fluo")  # float channels: one layer per channel, not RGB
    assert kwargs["channel_axis"] == 0 and kwargs["name"] == ["fluo [a]", "fluo [b]", "fluo [c]"]
    assert all(m["scai"].element == "fluo" for m in kwargs["metadata"])


def _polygons_sdata():
    import geopandas as gpd
    import spatialdata as sd
    from anndata import AnnData
    from shapely.geometry import MultiPolygon, Polygon
    from spatialdata.models import ShapesModel, TableModel

    polys = [
        Polygon([(0, 0), (10, 0), (10, 10), (0, 10)]),
        Polygon([(20, 0), (30, 0), (25, 8)]),
        MultiPolygon(
            [Polygon([(40, 0), (41, 0), (41, 1)]), Polygon([(50, 0), (60, 0), (60, 20), (50, 20)])]
        ),
    ]
    shapes = ShapesModel.parse(gpd.GeoDataFrame(geometry=polys, index=[5, 6, 7]))
    obs = pd.DataFrame(
        {"kind": pd.Categorical(["a", "b", None]), "region": "cells", "instance_id": [7, 5, 6]},
        index=["c7", "c5", "c6"],
    )
    table = TableModel.parse(
        AnnData(np.array([[1.0], [2.0], [3.0]]), obs=obs),
        region="cells",
        region_key="region",
        instance_key="instance_id",
    )
    return sd.SpatialData(shapes={"cells": shapes}, tables={"rna": table})


def test_polygons_drawn_as_shapes_and_recoloured(make_napari_viewer):
    sdata = _polygons_sdata()
    viewer = make_napari_viewer()
    (layer,) = add_sdata(viewer, sdata, color_by="kind")
    assert layer._type_string == "shapes" and layer.shape_type == ["polygon"] * 3
    np.testing.assert_allclose(layer.data[0], [[0, 0], [0, 10], [10, 10], [10, 0]])  # (y, x)
    assert layer.data[2][:, 1].min() == 50  # largest part of the MultiPolygon
    assert list(layer.features["id"]) == ["c5", "c6", "c7"]  # table rows follow the shapes' index
    colors = _rna(sdata).uns["kind_colors"]
    np.testing.assert_allclose(
        layer.face_color, [to_rgba(colors[1]), to_rgba(MISSING_COLOR), to_rgba(colors[0])]
    )
    style = recolor(layer, _rna(sdata).var_names[0], values="raw")
    assert style.limits == pytest.approx(tuple(np.percentile([2.0, 3.0, 1.0], [1, 99])))
    assert layer.features[style.key].tolist() == [2.0, 3.0, 1.0]


# --- large data: raster Labels path ----------------------------------------------------------------


def test_rasterize_discs_true_radius():
    yx = np.array([[100.0, 100.0], [100.0, 300.0], [900.0, 500.0]])
    radius = np.array([20.0, 40.0, 10.0])
    image, pixel, origin = rasterize_discs(yx, radius, max_side=512)
    assert max(image.shape) <= 513
    centres = np.round((yx - origin) / pixel).astype(int)
    assert [image[tuple(c)] for c in centres] == [1, 2, 3]
    areas = np.bincount(image.ravel(), minlength=4)[1:] * pixel**2
    np.testing.assert_allclose(areas, np.pi * radius**2, rtol=0.12)


def test_large_sections_draw_as_labels_and_recolour(make_napari_viewer):
    sdata = synthetic_cells(3000, n_types=4, side=2000.0, radius=8.0)
    viewer = make_napari_viewer()
    tuples = sdata_layers(sdata, color_by="cell_type", raster_threshold=1000)
    assert [t[2] for t in tuples] == ["labels"]
    (layer,) = add_sdata(viewer, sdata, color_by="cell_type")  # below the threshold: points
    assert layer._type_string == "points"
    viewer.layers.clear()
    data, kwargs, kind = tuples[0]
    layer = viewer.add_labels(data, **kwargs)
    source = layer.metadata["scai"]
    adata = _rna(sdata)
    shapes = sdata.shapes["synthetic_cells"]
    world = np.column_stack([shapes.geometry.y, shapes.geometry.x])
    pick = np.random.default_rng(1).choice(len(world), 200, replace=False)

    def colours_at_centres():
        px = np.round(np.asarray([layer.world_to_data(p) for p in world[pick]])).astype(int)
        return layer.colormap.map(layer.data[px[:, 0], px[:, 1]])

    expected = np.array([to_rgba(c) for c in adata.uns["cell_type_colors"]])[
        adata.obs["cell_type"].cat.codes.to_numpy()[pick]
    ]
    # a neighbour may cover a centre; nearly all centres show their own class
    assert (np.abs(colours_at_centres() - expected).max(axis=1) < 1e-6).mean() > 0.95
    rows = [cell_at(layer, world[i]) for i in pick]
    assert np.mean(np.asarray(rows) == pick) > 0.95
    status = [layer.get_status(world[i], world=True)["coordinates"] for i in pick[:20]]
    classes = adata.obs["cell_type"].astype(str).to_numpy()[pick[:20]]
    assert np.mean([f"cell_type: {c}" in st for st, c in zip(status, classes, strict=True)]) > 0.9

    style = recolor(layer, "score")
    assert style.kind == "continuous"
    got = colours_at_centres()
    from matplotlib import colormaps

    lo, hi = np.percentile(adata.obs["score"], [1, 99])
    assert style.limits == pytest.approx((lo, hi))
    want = colormaps["viridis"](
        np.clip((adata.obs["score"].to_numpy()[pick] - lo) / (hi - lo), 0, 1)
    )
    assert (np.abs(got - want).max(axis=1) < 0.02).mean() > 0.95  # 255 colour steps

    recolor(layer, "cell_type", hidden={"type_0"})
    data_before = layer.data
    hidden = adata.obs["cell_type"].to_numpy()[pick] == "type_0"
    alpha = colours_at_centres()[:, 3]
    assert (alpha[hidden] == 0).mean() > 0.95 and (alpha[~hidden] == 1).mean() > 0.95
    recolor(layer, "cell_type")  # showing the class again only swaps the colormap
    assert layer.data is data_before
    assert source.color_key == "cell_type"


# --- several samples, coordinate systems ------------------------------------------------------------


def _world_box(layer):
    ext = np.asarray(layer.extent.world)
    return ext[0, -2:], ext[1, -2:]


@pytest.mark.parametrize("layout, axis", [("side-by-side", 1), ("stacked", 0)])
def test_samples_side_by_side_do_not_overlap(make_napari_viewer, dlpfc_sdata, layout, axis):
    from napari_scai.io import read
    from tests.conftest import shared_path

    other = read(shared_path("visium", "dlpfc_151674"))
    viewer = make_napari_viewer()
    first, second = add_samples(
        viewer, [dlpfc_sdata, other], layout=layout, color_by="layer_manual"
    )
    assert (
        {ly._type_string for ly in first}
        == {ly._type_string for ly in second}
        == {"image", "points"}
    )
    hi1 = np.max([_world_box(ly)[1] for ly in first], axis=0)
    lo2 = np.min([_world_box(ly)[0] for ly in second], axis=0)
    assert hi1[axis] < lo2[axis], "the second sample overlaps the first"
    # each sample's spots moved with its own image: still inside that image
    for layers in (first, second):
        image, points = layers
        lo, hi = _world_box(image)
        world = points.data + np.asarray(points.translate)
        assert (world >= lo).all() and (world <= hi).all()
        assert points.metadata["scai"].extra["offset"] == image.metadata["scai"].extra["offset"]
    assert np.asarray(second[1].translate)[axis] > 0


def test_coordinate_system_switch_redraws(make_napari_viewer, dlpfc_sdata):
    from spatialdata.transformations import Scale, Sequence, get_transformation, set_transformation

    for element in [*dlpfc_sdata.images.values(), *dlpfc_sdata.shapes.values()]:
        to_global = get_transformation(element, "global")
        half = Sequence([to_global, Scale([0.5, 0.5], axes=("x", "y"))])
        set_transformation(element, half, to_coordinate_system="half")
    viewer = make_napari_viewer()
    layers = add_sdata(viewer, dlpfc_sdata, color_by="layer_manual", coordinate_system="global")
    before = {ly.name: np.asarray(ly.extent.world)[:, -2:] for ly in layers}
    new = set_coordinate_system(viewer, dlpfc_sdata, "half")
    assert (
        [ly.name for ly in new] == [ly.name for ly in layers] == [ly.name for ly in viewer.layers]
    )
    for ly in new:
        assert ly.metadata["scai"].coordinate_system == "half"
        np.testing.assert_allclose(
            np.asarray(ly.extent.world)[:, -2:], before[ly.name] * 0.5, rtol=0.02, atol=2
        )
    points = new[1]
    np.testing.assert_allclose(points.size, 96.40082438014726 / 2)
    assert points.metadata["scai"].color_key == "layer_manual"
    with pytest.raises(KeyError, match="Fix:"):
        set_coordinate_system(viewer, dlpfc_sdata, "nowhere")


def test_color_style_with_no_categories():
    """A categorical column with no classes yet (a fresh annotation) colours everything grey."""
    import anndata as ad
    import pandas as pd

    from napari_scai._colors import MISSING_COLOR, hex_to_rgba
    from napari_scai.viewer import color_style

    adata = ad.AnnData(np.zeros((4, 1), dtype=np.float32))
    adata.obs["scai_annotation"] = pd.Categorical([None] * 4, categories=[])
    style = color_style(adata, "scai_annotation")
    assert style.categories == [] and list(style.values) == [None] * 4
    np.testing.assert_allclose(style.colors, np.repeat(hex_to_rgba([MISSING_COLOR]), 4, axis=0))


def test_hover_on_rasterised_cells_names_the_cell(make_napari_viewer):
    sdata = synthetic_cells(3000, n_types=4, side=2000.0, radius=8.0)
    viewer = make_napari_viewer()
    (layer,) = add_sdata(viewer, sdata, color_by="cell_type", raster_threshold=1000)
    assert layer._type_string == "labels"
    adata = _rna(sdata)
    shapes = sdata.shapes["synthetic_cells"]
    world = np.column_stack([shapes.geometry.y, shapes.geometry.x])
    pick = np.random.default_rng(2).choice(len(world), 50, replace=False)
    status = [layer.get_status(world[i], world=True)["coordinates"] for i in pick]
    names = adata.obs_names.to_numpy()[pick]
    # a neighbour may cover a centre; nearly all centres name their own cell
    assert np.mean([st.endswith(f"cell {n}") for st, n in zip(status, names, strict=True)]) > 0.9
    assert "cell " not in layer.get_status((-1e6, -1e6), world=True)["coordinates"]
