"""Tests for napari_scai.tl._annotate: polygons -> labels, CSV and GeoJSON in/out."""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from napari_scai.tl._annotate import (
    ANNOTATION_COLUMNS,
    annotate_from_shapes,
    annotations_to_geodataframe,
    export_annotation_csv,
    export_geojson,
    import_annotation_csv,
    import_geojson,
    points_in_polygons,
)
from tests.conftest import shared_path


def _star(rng: np.random.Generator, centre: tuple[float, float], radius: float, n: int):
    """An irregular, concave star-shaped polygon as an (n, 2) (x, y) vertex array."""
    theta = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = radius * rng.uniform(0.4, 1.0, n)
    return np.column_stack([centre[0] + r * np.cos(theta), centre[1] + r * np.sin(theta)])


def _adata_with_points(xy: np.ndarray) -> ad.AnnData:
    adata = ad.AnnData(obs=pd.DataFrame(index=[f"cell{i}" for i in range(len(xy))]))
    adata.obsm["spatial"] = xy
    return adata


@pytest.mark.parametrize("method", ["shapely", "matplotlib"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_points_in_polygons_match_shapely_per_point(seed: int, method: str) -> None:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 1000, (3000, 2))
    polys = [shapely.Polygon(_star(rng, rng.uniform(200, 800, 2), 300, 40)) for _ in range(4)]
    polys = [p if p.is_valid else shapely.make_valid(p) for p in polys]
    # a polygon with a hole
    polys.append(shapely.box(100, 100, 600, 600).difference(shapely.box(250, 250, 450, 450)))
    owner = points_in_polygons(xy, polys, method=method)
    expected = np.full(len(xy), -1)
    for i, poly in enumerate(polys):
        for j, (x, y) in enumerate(xy):
            if poly.contains(shapely.Point(x, y)):
                expected[j] = i  # later polygons win
    np.testing.assert_array_equal(owner, expected)
    assert (owner >= 0).any() and (owner == -1).any()


def test_annotate_later_polygon_wins_and_outside_is_nan() -> None:
    xy = np.array([[1, 1], [5, 5], [8, 8], [20, 20]], dtype=float)
    adata = _adata_with_points(xy)
    squares = [
        np.array([[0, 0], [10, 0], [10, 10], [0, 10]]),
        np.array([[4, 4], [9, 4], [9, 9], [4, 9]]),
    ]
    assert annotate_from_shapes(adata, shapes=squares, classes=["tumour", "stroma"]) is None
    col = adata.obs["scai_annotation"]
    assert isinstance(col.dtype, pd.CategoricalDtype)
    assert col.iloc[:3].tolist() == ["tumour", "stroma", "stroma"]
    assert pd.isna(col.iloc[3])
    assert list(col.cat.categories) == ["tumour", "stroma"]
    assert len(adata.uns["scai_annotation_colors"]) == 2
    # reversed order: the big square now wins everywhere it covers
    annotate_from_shapes(adata, shapes=squares[::-1], classes=["stroma", "tumour"])
    col = adata.obs["scai_annotation"]
    assert col.iloc[:3].tolist() == ["tumour"] * 3


def test_annotate_overwrite_false_keeps_existing_labels() -> None:
    xy = np.array([[1, 1], [50, 50], [100, 100]], dtype=float)
    adata = _adata_with_points(xy)
    annotate_from_shapes(adata, shapes=[shapely.box(0, 0, 10, 10)], classes=["a"], key_added="ann")
    colour_a = adata.uns["ann_colors"][0]
    annotate_from_shapes(
        adata,
        shapes=[shapely.box(40, 40, 60, 60)],
        classes=["b"],
        key_added="ann",
        overwrite=False,
    )
    assert adata.obs["ann"].astype(object).tolist()[:2] == ["a", "b"]
    assert pd.isna(adata.obs["ann"].iloc[2])
    colours = dict(zip(adata.obs["ann"].cat.categories, adata.uns["ann_colors"], strict=True))
    assert colours["a"] == colour_a and colours["b"] != colour_a
    annotate_from_shapes(
        adata, shapes=[shapely.box(40, 40, 60, 60)], classes=["b"], key_added="ann"
    )
    assert pd.isna(adata.obs["ann"].iloc[0])  # overwrite=True clears outside


def test_annotate_from_geodataframe_uses_class_and_colour_columns() -> None:
    rng = np.random.default_rng(4)
    xy = rng.uniform(0, 100, (500, 2))
    adata = _adata_with_points(xy)
    gdf = annotations_to_geodataframe(
        [shapely.box(0, 0, 50, 100), shapely.box(50, 0, 100, 100)],
        classes=["left", "right"],
        colors={"left": "#ff0000", "right": "#0000ff"},
        author="tester",
    )
    annotate_from_shapes(adata, shapes=gdf, classes=None, key_added="side")
    col = adata.obs["side"]
    assert (col.astype(object).to_numpy() == np.where(xy[:, 0] < 50, "left", "right")).all()
    assert adata.uns["side_colors"] == ["#ff0000", "#0000ff"]
    with pytest.raises(KeyError, match="no class column 'label'"):
        annotate_from_shapes(adata, shapes=gdf, classes="label")


def test_annotate_coords_override_and_errors() -> None:
    adata = _adata_with_points(np.zeros((3, 2)))
    coords = np.array([[5.0, 5.0], [50, 50], [5, 6]])
    annotate_from_shapes(adata, shapes=[shapely.box(0, 0, 10, 10)], classes=["a"], coords=coords)
    col = adata.obs["scai_annotation"]
    assert col.astype(object).tolist()[0] == "a" and pd.isna(col.iloc[1])
    with pytest.raises(ValueError, match="3 classes"):
        annotate_from_shapes(adata, shapes=[shapely.box(0, 0, 1, 1)], classes=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        annotate_from_shapes(adata, shapes=[np.zeros((2, 2))], classes=["a"])
    with pytest.raises(ValueError, match="expected \\(3, 2\\)"):
        annotate_from_shapes(
            adata, shapes=[shapely.box(0, 0, 1, 1)], classes=["a"], coords=coords[:2]
        )


def test_annotate_spatialdata_uses_shape_centres() -> None:
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel

    rng = np.random.default_rng(9)
    n = 200
    centres = rng.uniform(0, 1000, (n, 2))
    ids = rng.permutation(n) + 500  # table rows in a different order than the shapes
    circles = ShapesModel.parse(
        gpd.GeoDataFrame(
            {"radius": np.full(n, 20.0)},
            geometry=shapely.points(centres),
            index=pd.Index(np.arange(n) + 500),
        )
    )
    obs = pd.DataFrame(
        {"region": pd.Categorical(["spots"] * n), "spot_id": ids},
        index=[f"bc{i}" for i in range(n)],
    )
    table = TableModel.parse(
        ad.AnnData(obs=obs), region="spots", region_key="region", instance_key="spot_id"
    )
    sdata = SpatialData(shapes={"spots": circles}, tables={"rna": table})
    annotate_from_shapes(sdata, shapes=[shapely.box(0, 0, 500, 1000)], classes=["west"])
    got = sdata.tables["rna"].obs["scai_annotation"].astype(object).to_numpy()
    x_of_row = centres[ids - 500, 0]
    np.testing.assert_array_equal(got == "west", x_of_row < 500)


def test_annotations_to_geodataframe_schema() -> None:
    from spatialdata.models import ShapesModel

    gdf = annotations_to_geodataframe(
        [np.array([[0, 0], [10, 0], [10, 10]]), shapely.box(5, 5, 20, 20)],
        classes=["a", "b"],
        colors=["#112233", "#445566"],
    )
    assert tuple(c for c in gdf.columns if c != "geometry") == ANNOTATION_COLUMNS
    assert gdf["color"].tolist() == ["#112233", "#445566"]
    created = pd.Timestamp(gdf["created"].iloc[0])
    assert created.tzinfo is not None and created.utcoffset().total_seconds() == 0
    parsed = ShapesModel.parse(gdf)
    assert list(parsed["class"]) == ["a", "b"]
    with pytest.raises(ValueError, match="2 polygons but 1 classes"):
        annotations_to_geodataframe([shapely.box(0, 0, 1, 1)] * 2, classes=["a"])


def test_csv_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    adata = _adata_with_points(rng.uniform(0, 10, (50, 2)))
    labels = rng.choice(np.array(["L1", "L2", "07", None], dtype=object), 50)
    adata.obs["ann"] = pd.Categorical(labels)
    path = export_annotation_csv(adata, path=tmp_path / "ann.csv", key="ann")
    header = path.read_text().splitlines()[0]
    assert header == "spot_id,class"
    assert [p.name for p in tmp_path.iterdir()] == ["ann.csv"]  # no temp file left behind
    other = _adata_with_points(np.zeros((50, 2)))
    import_annotation_csv(other, path=path, key_added="ann")
    col = other.obs["ann"]
    got = col.astype(object).to_numpy()
    same = (got == labels) | (pd.isna(got) & pd.isna(labels))
    assert same.all()  # "07" stays a string; unlabelled stay NaN
    assert len(other.uns["ann_colors"]) == len(col.cat.categories)


def test_csv_export_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    adata = _adata_with_points(np.zeros((3, 2)))
    adata.obs["ann"] = pd.Categorical(["a", "b", "a"])
    target = tmp_path / "ann.csv"
    target.write_text("previous content\n")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        export_annotation_csv(adata, path=target, key="ann")
    assert target.read_text() == "previous content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["ann.csv"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("barcode_x,class\ncell0,a\n", "no spot id column"),
        ("spot_id,label,extra\ncell0,a,1\n", "no 'class' column"),
        ("spot_id,class\ncell0,a\nnot_a_cell,b\nghost,c\n", "2 of 3 ids"),
        ("spot_id,class\ncell0,a\ncell0,b\n", "more than once"),
        ("", "not a readable CSV"),
    ],
)
def test_malformed_csv_gives_clear_error(tmp_path: Path, content: str, message: str) -> None:
    adata = _adata_with_points(np.zeros((5, 2)))
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        import_annotation_csv(adata, path=path, key_added="ann")
    assert "bad.csv" in str(info.value) and "Fix:" in str(info.value)
    assert "ann" not in adata.obs


def test_csv_loupe_style_two_columns(tmp_path: Path) -> None:
    adata = _adata_with_points(np.zeros((3, 2)))
    path = tmp_path / "loupe.csv"
    path.write_text("Barcode,Graph-based\ncell2,3\ncell0,1\n")
    import_annotation_csv(adata, path=path, key_added="graph")
    col = adata.obs["graph"]
    assert col.astype(object).tolist()[0] == "1" and col.astype(object).tolist()[2] == "3"
    assert pd.isna(col.iloc[1])


def test_geojson_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    polys = [_star(rng, (100, 100), 80, 60), shapely.box(0, 0, 30, 30).buffer(5)]
    gdf = annotations_to_geodataframe(polys, classes=["tumour", "stroma"], author="ann")
    path = export_geojson(gdf, path=tmp_path / "annotations.geojson")
    assert [p.name for p in tmp_path.iterdir()] == ["annotations.geojson"]
    back = import_geojson(path)
    assert list(back.columns) == ["geometry", *ANNOTATION_COLUMNS]
    for col in ANNOTATION_COLUMNS:
        assert back[col].tolist() == gdf[col].tolist()
    for a, b in zip(back.geometry, gdf.geometry, strict=True):
        assert a.equals_exact(b, tolerance=1e-9)
    xy = rng.uniform(0, 200, (400, 2))
    np.testing.assert_array_equal(
        points_in_polygons(xy, list(back.geometry)), points_in_polygons(xy, list(gdf.geometry))
    )


def test_import_geojson_rejects_non_geojson(tmp_path: Path) -> None:
    path = tmp_path / "x.geojson"
    path.write_text('{"type": "Topology"}')
    with pytest.raises(ValueError, match="not a GeoJSON FeatureCollection"):
        import_geojson(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid GeoJSON"):
        import_geojson(path)


def _read_dlpfc_positions() -> tuple[pd.DataFrame, pd.Series]:
    dlpfc = shared_path("visium", "dlpfc_151673")  # honours SCAI_SHARED_DATA; skips if absent
    names = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row", "pxl_col"]
    pos = pd.read_csv(
        dlpfc / "spatial" / "tissue_positions_list.csv", header=None, names=names, index_col=0
    )
    labels = pd.read_csv(dlpfc / "layer_labels.csv", index_col=0)["layer_manual"]
    return pos, labels


def test_dlpfc_layer_polygons_reproduce_manual_layers() -> None:
    shared_path("visium")  # skips with a reason when shared/data is absent
    pos, labels = _read_dlpfc_positions()
    pos = pos[pos["in_tissue"] == 1]
    assert labels.index.isin(pos.index).all()
    pos = pos.loc[labels.index]
    xy = pos[["pxl_col", "pxl_row"]].to_numpy(dtype=float)  # x = column, y = row
    adata = _adata_with_points(xy)
    adata.obs_names = labels.index

    # one outline per layer, as an annotator would draw it: union of the layer's spot
    # circles (radius 0.6 x spot pitch so neighbours merge), holes filled, simplified
    nn_dist = np.sort(np.linalg.norm(xy[:300, None, :] - xy[None, :, :], axis=2), axis=1)[:, 1]
    radius = 0.6 * float(np.median(nn_dist))
    polygons, classes = [], []
    for layer in sorted(labels.dropna().unique()):
        mask = (labels == layer).to_numpy()
        union = shapely.union_all(shapely.buffer(shapely.points(xy[mask]), radius))
        outline = shapely.MultiPolygon(
            [shapely.Polygon(p.exterior) for p in shapely.get_parts(union)]
        ).simplify(radius / 5)
        polygons.append(outline)
        classes.append(layer)
    annotate_from_shapes(adata, shapes=polygons, classes=classes, key_added="drawn")
    col = adata.obs["drawn"]
    labelled = labels.notna().to_numpy()
    agreement = np.mean(col.astype(object).to_numpy()[labelled] == labels.to_numpy()[labelled])
    assert agreement >= 0.99, f"only {agreement:.3%} of labelled spots agree"
    assert col.notna().sum() >= labelled.sum()
