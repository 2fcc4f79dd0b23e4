"""The Tissue overlay dock through its Qt controls (qtbot): keys, colorbar, legend, export."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from qtpy.QtCore import Qt

from napari_scai.viewer import add_sdata
from napari_scai.widgets.overlay import OverlayWidget


@pytest.fixture
def dlpfc_sdata(dlpfc_sdata_session):
    """A private copy of the session's DLPFC (0.6 s, against ~9 s to read the sample again)."""
    import spatialdata as sd

    return sd.deepcopy(dlpfc_sdata_session)


@pytest.fixture
def overlay(make_napari_viewer, qtbot, dlpfc_sdata):
    """(viewer, widget, spots layer) with DLPFC coloured by layer_manual; colour picker injected."""
    viewer = make_napari_viewer()
    layers = add_sdata(viewer, dlpfc_sdata, color_by="layer_manual")
    picked = []

    def pick_color(current: str) -> str:
        picked.append(current)
        return "#00ff00"

    widget = OverlayWidget(viewer, pick_color=pick_color)
    qtbot.addWidget(widget)
    widget.show()  # double-clicks need a shown list
    qtbot.waitExposed(widget)
    widget.picked = picked
    return viewer, widget, next(ly for ly in layers if ly._type_string == "points")


def _lognorm(adata, symbol: str) -> np.ndarray:
    """log1p(counts per 10k) of one gene, computed by scanpy (independent of the viewer)."""
    import scanpy as sc

    b = adata.copy()
    sc.pp.normalize_total(b, target_sum=1e4)
    sc.pp.log1p(b)
    return np.asarray(b[:, b.var["gene_symbol"] == symbol].X.todense()).ravel()


def _type_key(qtbot, widget, key: str) -> None:
    edit = widget.key_combo.lineEdit()
    edit.clear()
    qtbot.keyClicks(edit, key)
    qtbot.keyClick(edit, Qt.Key.Key_Return)


def _double_click(qtbot, widget, category: str) -> None:
    """Double-click a legend row (Qt 6 needs the first click of the pair sent on its own)."""
    viewport = widget.legend.list.viewport()
    pos = widget.legend.list.visualItemRect(widget.legend.item_for(category)).center()
    qtbot.mouseClick(viewport, Qt.MouseButton.LeftButton, pos=pos)
    qtbot.mouseDClick(viewport, Qt.MouseButton.LeftButton, pos=pos)


def _legend_rows(widget) -> list[str]:
    return [widget.legend.list.item(i).text() for i in range(widget.legend.list.count())]


def test_gene_colorbar_limits_and_key_change_in_one_step(overlay, qtbot):
    viewer, widget, points = overlay
    assert widget.key_combo.currentText() == "layer_manual"
    assert _legend_rows(widget)[0].startswith("L1") and "(273)" in _legend_rows(widget)[0]
    assert widget.legend.isVisibleTo(widget) and not widget.colorbar_row.isVisibleTo(widget)

    _type_key(qtbot, widget, "MOBP")
    adata = points.metadata["adata"]
    rows = points.metadata["scai"].extra["rows"]
    col = _lognorm(adata, "MOBP")[rows]  # the default for counts: scanpy's normalise + log1p
    assert widget.colorbar_row.isVisibleTo(widget) and not widget.legend.isVisibleTo(widget)
    assert widget.values_combo.isVisibleTo(widget)
    assert widget.values_combo.currentText() == "log-normalised"
    p1, p99 = np.percentile(col, [1, 99])  # percentile limits: a few bright spots do not rule
    assert widget.vmin.value() == pytest.approx(p1, abs=1e-3)
    assert widget.vmax.value() == pytest.approx(p99, abs=1e-3) and p99 < col.max()
    np.testing.assert_allclose(points.features["MOBP"], col, rtol=1e-6)
    top = int(np.argmax(points.features["MOBP"]))
    np.testing.assert_allclose(points.face_color[top], to_rgba("#fde725"), atol=0.01)  # viridis max
    # most MOBP-expressing spots (white matter) are bright, not black
    wm = (points.features["layer_manual"] == "WM").to_numpy()
    assert np.median(points.features["MOBP"][wm]) > (p1 + p99) / 2

    widget.values_combo.setCurrentIndex(widget.values_combo.findData("raw"))
    widget.values_combo.activated.emit(widget.values_combo.currentIndex())
    raw = np.asarray(adata[:, adata.var["gene_symbol"] == "MOBP"].X.todense()).ravel()[rows]
    np.testing.assert_allclose(points.features["MOBP"], raw)
    assert widget.vmax.value() == pytest.approx(np.percentile(raw, 99), abs=1e-3)
    assert points.metadata["scai"].extra["style"].value_mode == "raw"  # dock and layer agree

    col = raw
    widget.vmax.setValue(col.max() / 2)  # adjustable limits: everything above is saturated
    half = points.features["MOBP"].to_numpy() >= col.max() / 2
    np.testing.assert_allclose(
        points.face_color[half], [to_rgba("#fde725")] * half.sum(), atol=0.01
    )

    _type_key(qtbot, widget, "layer_manual")  # back to the labels: layer and legend together
    assert widget.legend.isVisibleTo(widget) and widget.legend.categories()[0] == "L1"
    colors = adata.uns["layer_manual_colors"]
    l1 = (points.features["layer_manual"] == "L1").to_numpy()
    np.testing.assert_allclose(points.face_color[l1], [to_rgba(colors[0])] * l1.sum())

    _type_key(qtbot, widget, "no_such_key")  # an error notification, nothing changes
    assert points.metadata["scai"].color_key == "layer_manual"


def test_legend_hide_show_and_recolour_survive_save(overlay, qtbot, tmp_path):
    from napari_scai.io import read, update, write

    viewer, widget, points = overlay
    l3 = (points.features["layer_manual"] == "L3").to_numpy()
    item = widget.legend.item_for("L3")
    item.setCheckState(Qt.CheckState.Unchecked)  # the user unticks L3
    assert widget.legend.hidden() == {"L3"}
    assert (points.face_color[l3, 3] == 0).all() and (points.face_color[~l3, 3] == 1).all()
    item.setCheckState(Qt.CheckState.Checked)
    assert (points.face_color[:, 3] == 1).all()

    # double-click the L3 row: the injected picker answers green
    _double_click(qtbot, widget, "L3")
    assert widget.picked, "double-click did not ask for a colour"
    adata = points.metadata["adata"]
    assert (
        adata.uns["layer_manual_colors"][adata.obs["layer_manual"].cat.categories.get_loc("L3")]
        == "#00ff00"
    )
    np.testing.assert_allclose(points.face_color[l3], [to_rgba("#00ff00")] * l3.sum())
    assert widget.legend.item_for("L3").data(Qt.ItemDataRole.UserRole)[1] == "#00ff00"

    sdata = points.metadata["sdata"]
    store = tmp_path / "dlpfc.zarr"
    write(sdata, store)
    reloaded = read(store)
    assert "#00ff00" in list(reloaded.tables["rna"].uns["layer_manual_colors"])
    # a second recolour, written with update(), survives a reload too
    widget.legend._pick_color = lambda _c: "#123456"
    _double_click(qtbot, widget, "WM")
    update(sdata, store, elements=["rna"])
    reloaded = read(store)
    viewer.layers.clear()
    again = next(
        ly
        for ly in add_sdata(viewer, reloaded, color_by="layer_manual")
        if ly._type_string == "points"
    )
    wm = (again.features["layer_manual"] == "WM").to_numpy()
    np.testing.assert_allclose(again.face_color[wm], [to_rgba("#123456")] * wm.sum())


def test_export_png_has_the_legend(make_napari_viewer, qtbot, dlpfc_sdata, tmp_path):
    from PIL import Image

    viewer = make_napari_viewer(show=True)
    add_sdata(viewer, dlpfc_sdata, color_by="layer_manual")
    widget = OverlayWidget(viewer)
    qtbot.addWidget(widget)
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    out = widget.export(tmp_path / "view.png")
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    from napari_scai.viewer._export import data_box

    r0, r1, c0, c1 = data_box(viewer, np.asarray(canvas))
    assert img.shape[1] > img.shape[0] * (c1 - c0) / (r1 - r0) * 1.2  # room for the legend
    legend = img[:, int(img.shape[1] / 1.35) :]
    colours = widget.style.category_colors
    assert len(colours) == 7
    for hex_colour in colours:
        rgb = np.round(np.asarray(to_rgba(hex_colour)[:3]) * 255)
        assert (np.abs(legend - rgb).max(axis=2) <= 2).sum() > 20, (
            f"legend swatch {hex_colour} missing"
        )
    # the API does the same for a continuous key: a colorbar
    from napari_scai.viewer import save_figure

    widget.set_key("MOBP")
    out2 = save_figure(viewer, tmp_path / "gene.png")  # style of the active layer
    bar = np.asarray(Image.open(out2).convert("RGB")).astype(int)[:, int(img.shape[1] / 1.35) :]
    assert (
        np.abs(bar - [253, 231, 37]).max(axis=2) <= 12
    ).sum() > 20  # viridis top in the colorbar


def test_coordinate_system_combo_redraws(overlay, qtbot):
    from spatialdata.transformations import Scale, Sequence, get_transformation, set_transformation

    viewer, widget, points = overlay
    sdata = points.metadata["sdata"]
    for element in [*sdata.images.values(), *sdata.shapes.values()]:
        half = Sequence([get_transformation(element, "global"), Scale([0.5, 0.5], axes=("x", "y"))])
        set_transformation(element, half, to_coordinate_system="half")
    widget.refresh_layers()
    assert [widget.cs_combo.itemText(i) for i in range(widget.cs_combo.count())] == [
        "global",
        "half",
        "microns",
    ]
    assert widget.cs_combo.currentText() == "microns"  # drawn in µm by default (Visium)
    widget.cs_combo.setCurrentText("half")
    widget.cs_combo.activated.emit(widget.cs_combo.currentIndex())
    new = widget.layer
    assert new is not points and new.metadata["scai"].coordinate_system == "half"
    from napari_scai.viewer._scale import microns_per_pixel

    um_per_px = microns_per_pixel(sdata)
    np.testing.assert_allclose(new.data, points.data / um_per_px / 2)
    assert new.units[0] == "pixel"  # not µm any more: the scale bar follows
    assert (
        widget.key_combo.currentText() == "layer_manual" and widget.legend.categories()[0] == "L1"
    )


def test_raster_layer_in_widget(make_napari_viewer, qtbot):
    from napari_scai.viewer import sdata_layers
    from napari_scai.viewer._synthetic import synthetic_cells

    viewer = make_napari_viewer()
    sdata = synthetic_cells(2000, n_types=3, side=1000.0, radius=6.0)
    data, kwargs, kind = sdata_layers(sdata, color_by="cell_type", raster_threshold=100)[0]
    layer = viewer.add_labels(data, **kwargs)
    widget = OverlayWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.layer is layer and widget.legend.categories() == ["type_0", "type_1", "type_2"]
    widget.legend.item_for("type_1").setCheckState(Qt.CheckState.Unchecked)
    assert layer.colormap.map(np.uint8(2))[3] == 0  # bin 2 = type_1, now transparent
    _type_key(qtbot, widget, "score")  # y position scaled to 0-1
    lo, hi = np.percentile(layer.metadata["adata"].obs["score"], [1, 99])
    assert widget.colorbar_row.isVisibleTo(widget)
    assert (widget.vmin.value(), widget.vmax.value()) == pytest.approx((lo, hi), abs=1e-3)


def test_legend_follows_recolouring_from_elsewhere(overlay):
    """Another widget or the API recolours the layer: the legend/colorbar follow in one step."""
    from napari_scai.viewer import recolor

    viewer, widget, points = overlay
    recolor(points, "MOBP")
    assert widget.key_combo.currentText() == "MOBP" and widget.colorbar_row.isVisibleTo(widget)
    assert widget.vmax.value() == pytest.approx(
        np.percentile(points.features["MOBP"], 99), abs=1e-3
    )
    points.metadata["adata"].obs["half"] = np.where(
        np.arange(points.metadata["adata"].n_obs) % 2, "odd", "even"
    )
    recolor(points, "half")
    assert widget.legend.isVisibleTo(widget) and widget.legend.categories() == ["even", "odd"]


# --- issue 13, defect 3: the default colouring is a useful one, and the dock says what is drawn


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("imaging", "cycif_exemplar", "cycif_exemplar001_11k.h5ad"), "phenotype"),
        (("imaging", "merfish_hypothalamus_moffitt2018.h5ad"), "Cell_class"),
    ],
)
def test_single_cell_data_opens_coloured_by_a_useful_label(make_napari_viewer, parts, expected):
    from napari_scai.io import read
    from napari_scai.viewer import sdata_layers
    from tests.conftest import shared_path

    path = shared_path(*parts)
    sdata = read(path, require_spatial=True)
    viewer = make_napari_viewer()
    # what the reader and the CLI do when no known key is present: color_by=None
    for data, kwargs, kind in sdata_layers(sdata, color_by=None):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = OverlayWidget(viewer)
    layer = widget.layer
    adata = layer.metadata["adata"]
    # not an ID (CellID, Cell_name), a coordinate (X_centroid), a constant (imageid, Animal_ID)
    assert layer.metadata["scai"].color_key == expected
    assert widget.key_combo.currentText() == expected  # the dock says what is drawn
    cats = list(adata.obs[expected].cat.categories)
    assert widget.legend.categories() == cats
    counts = adata.obs[expected].value_counts().reindex(cats).tolist()
    rows = [widget.legend.list.item(i).text() for i in range(len(cats))]
    assert all(r.endswith(f"({n})") for r, n in zip(rows, counts, strict=True))
    # ... and it is drawn: the cells carry their class colours, none is grey
    style = layer.metadata["scai"].extra["style"]
    if layer._type_string == "labels":
        n_drawn = len(np.unique(style.colors, axis=0))
    else:
        n_drawn = len(np.unique(np.asarray(layer.face_color).round(4), axis=0))
    assert n_drawn == len(cats)
    assert style.n_missing == 0 and widget.legend.n_missing() == 0


def test_dlpfc_opens_by_layers_and_the_legend_counts_missing(make_napari_viewer, dlpfc_sdata):
    from napari_scai.viewer import sdata_layers

    viewer = make_napari_viewer()
    for data, kwargs, kind in sdata_layers(dlpfc_sdata, color_by=None):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = OverlayWidget(viewer)
    assert widget.key_combo.currentText() == "layer_manual"  # not in_tissue / array_row
    assert widget.legend.categories() == ["L1", "L2", "L3", "L4", "L5", "L6", "WM"]
    assert widget.legend.n_missing() == 28  # the unlabelled spots, grey, counted
    last = widget.legend.list.item(widget.legend.list.count() - 1)
    assert last.text() == "no value  (28)" and "28 objects without a value" in last.toolTip()
    assert not last.flags() & Qt.ItemFlag.ItemIsUserCheckable  # not a class to hide


def test_nothing_to_colour_by_says_so(make_napari_viewer):
    """Only IDs, coordinates and constants: no key is claimed, nothing but grey is drawn."""
    import pandas as pd

    from napari_scai.datasets import synthetic_section
    from napari_scai.viewer import sdata_layers

    sdata = synthetic_section(300, n_genes=3, kind="cells")
    obs = sdata.tables["rna"].obs
    obs.drop(columns=["domain"], inplace=True)
    obs["CellID"] = np.arange(len(obs))
    obs["X_centroid"] = np.arange(len(obs), dtype=float)
    obs["in_tissue"] = 1
    obs["imageid"] = pd.Categorical(["img1"] * len(obs))
    viewer = make_napari_viewer()
    (tup,) = sdata_layers(sdata, color_by=None)
    layer = viewer.add_points(tup[0], **tup[1])
    widget = OverlayWidget(viewer)
    assert layer.metadata["scai"].color_key is None
    assert widget.key_combo.currentText() == ""  # not "Colour by CellID" over grey cells
    assert not widget.legend.isVisibleTo(widget) and not widget.colorbar_row.isVisibleTo(widget)
    assert widget.key_combo.lineEdit().placeholderText() == "choose a column or gene"


def test_export_has_no_black_bars(make_napari_viewer, qtbot, dlpfc_sdata, tmp_path):
    """A wide canvas around a square section: the figure keeps the section, not the black."""
    from PIL import Image

    from napari_scai.viewer._export import LEGEND_WIDTH_RATIO

    viewer = make_napari_viewer(show=True)
    add_sdata(viewer, dlpfc_sdata, color_by="layer_manual")
    viewer.window._qt_window.resize(1400, 600)
    qtbot.wait(100)
    viewer.reset_view()
    qtbot.wait(100)
    widget = OverlayWidget(viewer)
    qtbot.addWidget(widget)
    canvas = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3].astype(int)
    black_cols = (canvas.max(axis=(0, 2)) < 10).mean()
    assert black_cols > 0.2  # the canvas itself is letterboxed (the premise)
    img = np.asarray(Image.open(widget.export(tmp_path / "v.png")).convert("RGB")).astype(int)
    view = img[:, : int(img.shape[1] / LEGEND_WIDTH_RATIO)]
    assert (view.max(axis=(0, 2)) < 10).mean() < 0.02, "black columns left in the figure"
    assert (view.max(axis=(1, 2)) < 10).mean() < 0.02, "black rows left in the figure"


def test_long_names_are_elided_with_the_full_name_in_a_tooltip(overlay, qtbot):
    viewer, widget, points = overlay
    adata = points.metadata["adata"]
    long_gene = "A_VERY_LONG_GENE_SYMBOL_FROM_SOME_ANNOTATION_PIPELINE_v2.3"
    symbols = adata.var["gene_symbol"].astype(str).to_numpy().copy()
    symbols[symbols == "MOBP"] = long_gene
    adata.var["gene_symbol"] = symbols
    widget.set_key(long_gene)
    label = widget.key_label
    assert "…" in label.text() and len(label.text()) < len(long_gene)
    assert label.toolTip() == f"{long_gene} (log-normalised)"
    assert widget.key_combo.toolTip() == long_gene
    long_class = "Layer 3 (superficial pyramidal neurons, upper part, manual call)"
    obs = adata.obs["layer_manual"].cat.rename_categories({"L3": long_class})
    adata.obs["layer_manual"] = obs
    widget.set_key("layer_manual")
    item = widget.legend.item_for(long_class)
    assert long_class in item.toolTip()
    assert widget.legend.list.textElideMode() == Qt.TextElideMode.ElideMiddle
    from napari_scai.viewer._export import elide

    short = elide(long_class)
    assert short.startswith("Layer 3 (super") and short.endswith("manual call)")
    assert "…" in short and len(short) == 32
