"""The Tissue overlay dock through its Qt controls (qtbot): keys, colorbar, legend, export."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from qtpy.QtCore import Qt

from napari_scai.viewer import add_sdata
from napari_scai.widgets.overlay import OverlayWidget


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
    col = adata[:, adata.var["gene_symbol"] == "MOBP"].X
    col = np.asarray(col.todense() if hasattr(col, "todense") else col).ravel()
    assert widget.colorbar_row.isVisibleTo(widget) and not widget.legend.isVisibleTo(widget)
    assert widget.vmin.value() == pytest.approx(col.min(), abs=1e-3)
    assert widget.vmax.value() == pytest.approx(col.max(), abs=1e-3)
    np.testing.assert_allclose(points.features["MOBP"], col[points.metadata["scai"].extra["rows"]])
    top = int(np.argmax(points.features["MOBP"]))
    np.testing.assert_allclose(points.face_color[top], to_rgba("#fde725"), atol=0.01)  # viridis max

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
    assert (
        img.shape[1] > img.shape[0] * canvas.shape[1] / canvas.shape[0] * 1.2
    )  # room for the legend
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
        set_transformation(element, half, to_coordinate_system="microns")
    widget.refresh_layers()
    assert [widget.cs_combo.itemText(i) for i in range(widget.cs_combo.count())] == [
        "global",
        "microns",
    ]
    widget.cs_combo.setCurrentText("microns")
    widget.cs_combo.activated.emit(widget.cs_combo.currentIndex())
    new = widget.layer
    assert new is not points and new.metadata["scai"].coordinate_system == "microns"
    np.testing.assert_allclose(new.data, points.data / 2)
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
    _type_key(qtbot, widget, "GeneB")
    assert widget.colorbar_row.isVisibleTo(widget) and (
        widget.vmin.value(),
        widget.vmax.value(),
    ) == (0.0, 2.0)


def test_legend_follows_recolouring_from_elsewhere(overlay):
    """Another widget or the API recolours the layer: the legend/colorbar follow in one step."""
    from napari_scai.viewer import recolor

    viewer, widget, points = overlay
    recolor(points, "MOBP")
    assert widget.key_combo.currentText() == "MOBP" and widget.colorbar_row.isVisibleTo(widget)
    assert widget.vmax.value() == pytest.approx(points.features["MOBP"].max(), abs=1e-3)
    points.metadata["adata"].obs["half"] = np.where(
        np.arange(points.metadata["adata"].n_obs) % 2, "odd", "even"
    )
    recolor(points, "half")
    assert widget.legend.isVisibleTo(widget) and widget.legend.categories() == ["even", "odd"]
