"""Annotate & compare docks in a real viewer: undo/redo, compare, overlays on the H&E, CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication

from napari_scai.viewer import add_sdata
from napari_scai.viewer._annotations import ANNOTATION_KEY, HIGHLIGHT_COLOR
from napari_scai.widgets.annotate import AnnotateWidget, CompareWidget
from tests._annotation_helpers import column_values
from tests._screen import canvas_shot, show_and_settle, world_to_screen


@pytest.fixture
def dlpfc_sdata(dlpfc_sdata_session):
    """A private copy of the session's DLPFC (0.6 s, against ~9 s to read the sample again)."""
    import spatialdata as sd

    return sd.deepcopy(dlpfc_sdata_session)


LEFT = Qt.MouseButton.LeftButton


def _rect(y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)


def _inside(yx: np.ndarray, rect: np.ndarray) -> np.ndarray:
    (y0, x0), (y1, x1) = rect.min(axis=0), rect.max(axis=0)
    return (yx[:, 0] > y0) & (yx[:, 0] < y1) & (yx[:, 1] > x0) & (yx[:, 1] < x1)


def _snapshot(widget) -> tuple:
    """What the user sees: the column, the polygons (class + vertices) and the classes."""
    col = (
        column_values(widget.adata, ANNOTATION_KEY).tolist()
        if ANNOTATION_KEY in widget.adata.obs
        else None
    )
    layer = widget.shapes_layer
    shapes = [
        (c, np.round(d, 3).tobytes())
        for c, d in zip(layer.features["class"], layer.data, strict=True)
    ]
    return col, shapes, tuple((c.name, c.color) for c in widget.state.classes)


def test_undo_redo_every_step(make_napari_viewer, qtbot, dlpfc_sdata):
    viewer = make_napari_viewer()
    add_sdata(viewer, dlpfc_sdata)
    widget = AnnotateWidget(viewer, pick_color=lambda _c: "#123456")
    spots, shapes = widget.spots, widget.shapes_layer
    yx = np.asarray(spots.data)
    rows = spots.metadata["scai"].extra["rows"]

    def labels_of(points):
        return column_values(widget.adata, ANNOTATION_KEY).to_numpy()[rows[points]]

    snaps = [_snapshot(widget)]
    for name in ("A", "B"):
        widget.class_name.setText(name)
        qtbot.mouseClick(widget.add_class_button, LEFT)
        snaps.append(_snapshot(widget))
    r1, r2 = _rect(3000, 3000, 6000, 6000), _rect(5000, 5000, 8000, 8000)
    in1, in2 = _inside(yx, r1), _inside(yx, r2)
    assert in1.sum() > 50 and (in1 & in2).sum() > 10

    widget.set_current_class("A")
    shapes.add_polygons([r1])  # drawn in the layer: gets the current class
    assert (labels_of(np.flatnonzero(in1)) == "A").all()
    assert pd.isna(labels_of(np.flatnonzero(~in1))).all()
    snaps.append(_snapshot(widget))

    widget.set_current_class("B")
    shapes.add_polygons([r2])
    assert (labels_of(np.flatnonzero(in1 & in2)) == "B").all()
    assert (labels_of(np.flatnonzero(in1 & ~in2)) == "A").all()
    snaps.append(_snapshot(widget))

    picked = np.flatnonzero(in1 & ~in2)[:5]
    spots.selected_data = set(picked.tolist())
    qtbot.mouseClick(widget.assign_button, LEFT)  # current class B
    assert (labels_of(picked) == "B").all()
    snaps.append(_snapshot(widget))

    erased = np.flatnonzero(in2)[:4]
    spots.selected_data = set(erased.tolist())
    qtbot.mouseClick(widget.erase_button, LEFT)
    assert pd.isna(labels_of(erased)).all()
    snaps.append(_snapshot(widget))

    widget.set_current_class("B")
    widget.class_name.setText("C")
    qtbot.mouseClick(widget.rename_button, LEFT)
    assert (
        "B" not in set(widget.adata.obs[ANNOTATION_KEY].dropna())
        and (labels_of(picked) == "C").all()
    )
    assert shapes.features["class"].tolist() == ["A", "C"]
    snaps.append(_snapshot(widget))

    widget.set_current_class("A")
    qtbot.mouseClick(widget.color_button, LEFT)
    assert widget.adata.uns[f"{ANNOTATION_KEY}_colors"][0] == "#123456"
    np.testing.assert_allclose(
        shapes.edge_color[0, :3], np.array([0x12, 0x34, 0x56]) / 255, atol=1e-6
    )
    snaps.append(_snapshot(widget))

    shapes.selected_data = {1}
    shapes.remove_selected()  # delete polygon C in the layer
    assert len(shapes.data) == 1 and pd.isna(labels_of(np.flatnonzero(in2 & ~in1))).all()
    snaps.append(_snapshot(widget))
    # every step changed something
    assert all(a != b for a, b in zip(snaps, snaps[1:], strict=False))

    # undo all the way back, alternating the button, the dock shortcut and the layer key binding
    key_handler = viewer.window._qt_viewer.canvas._key_map_handler
    viewer.layers.selection.active = shapes
    for i in range(len(snaps) - 1, 0, -1):
        if i % 3 == 0:
            qtbot.mouseClick(widget.undo_button, LEFT)
        elif i % 3 == 1:
            widget.undo_shortcut.activated.emit()
        else:
            key_handler.press_key("Control-Z")
            key_handler.release_key("Control-Z")
        assert _snapshot(widget) == snaps[i - 1], f"undo to step {i - 1}"
    assert not widget.undo_button.isEnabled()
    for i in range(1, len(snaps)):
        if i % 2:
            qtbot.mouseClick(widget.redo_button, LEFT)
        else:
            key_handler.press_key("Control-Shift-Z")
            key_handler.release_key("Control-Shift-Z")
        assert _snapshot(widget) == snaps[i], f"redo to step {i}"
    assert not widget.redo_button.isEnabled()
    # a new step after undo drops the redo history
    qtbot.mouseClick(widget.undo_button, LEFT)
    widget.add_class("D")
    assert not widget.stack.can_redo


def test_dock_shortcuts(make_napari_viewer, qtbot, dlpfc_sdata):
    """Ctrl+Z / Ctrl+Shift+Z typed into the dock."""
    viewer = make_napari_viewer(show=True)
    add_sdata(viewer, dlpfc_sdata)
    _, widget = viewer.window.add_plugin_dock_widget("napari-scai", "Annotate & compare")
    widget.add_polygons([_rect(3000, 3000, 6000, 6000)], "A")
    assert len(widget.shapes_layer.data) == 1
    window = viewer.window._qt_window
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=3000)
    widget.class_list.setFocus()
    qtbot.keyClick(widget.class_list, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert len(widget.shapes_layer.data) == 0
    qtbot.keyClick(
        widget.class_list,
        Qt.Key.Key_Z,
        Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier,
    )
    assert len(widget.shapes_layer.data) == 1


def _prediction_with_l4_merged(adata) -> None:
    """A 'prediction': the manual layers, except that L4 was merged into L3."""
    pred = adata.obs["layer_manual"].astype(object).where(adata.obs["layer_manual"] != "L4", "L3")
    cats = [c for c in adata.obs["layer_manual"].cat.categories if c != "L4"]
    adata.obs["pred"] = pd.Categorical(pred, categories=cats)
    adata.uns["pred_colors"] = [
        c
        for c, n in zip(
            adata.uns["layer_manual_colors"], adata.obs["layer_manual"].cat.categories, strict=True
        )
        if n != "L4"
    ]


def test_compare_widget_scores_matching_and_rename(make_napari_viewer, dlpfc_sdata):
    adata = dlpfc_sdata.tables["rna"]
    _prediction_with_l4_merged(adata)
    # rename the predicted domains to cluster numbers, shuffled
    numbers = {c: str(i) for i, c in enumerate(["L6", "WM", "L1", "L3", "L5", "L2"])}
    adata.obs["pred"] = adata.obs["pred"].cat.rename_categories(numbers)
    adata.obs["scai_domain_confidence"] = np.linspace(0, 1, adata.n_obs)
    viewer = make_napari_viewer()
    add_sdata(viewer, dlpfc_sdata)
    widget = CompareWidget(viewer)
    widget.set_columns("pred", "layer_manual")
    report = widget.run_compare()
    assert (
        report.ari < 1
        and f"ARI {report.ari:.3f}" in widget.scores.text()
        and "NMI" in widget.scores.text()
    )
    assert widget.per_class.rowCount() == 7  # one row per reference class
    matched = {
        widget.matching.item(i, 0).text(): widget.matching.item(i, 1).text()
        for i in range(widget.matching.rowCount())
    }
    assert matched == {v: k for k, v in numbers.items()}
    l4 = [
        widget.per_class.item(i, 1).text()
        for i in range(7)
        if widget.per_class.item(i, 0).text() == "L4"
    ]
    assert l4 == ["-"]  # nothing predicted L4
    assert widget.figure.axes and widget.figure.axes[0].images  # the confusion matrix is drawn
    # disagreement = exactly the L4 spots
    layer = viewer.layers[widget.disagreement_name]
    rows = widget.layer.metadata["scai"].extra["rows"]
    is_l4 = (adata.obs["layer_manual"] == "L4").to_numpy()[rows]
    np.testing.assert_array_equal(layer.metadata["point_index"], np.flatnonzero(is_l4))
    # rename after the matching: reference names and colours
    new_key = widget.rename_predicted()
    assert new_key == "pred_matched"
    renamed = adata.obs[new_key]
    assert (
        renamed.astype(object)[adata.obs["layer_manual"] != "L4"].dropna()
        == adata.obs["layer_manual"].astype(object)[adata.obs["layer_manual"] != "L4"].dropna()
    ).all()
    colors = dict(zip(renamed.cat.categories, adata.uns[f"{new_key}_colors"], strict=True))
    ref_colors = dict(
        zip(adata.obs["layer_manual"].cat.categories, adata.uns["layer_manual_colors"], strict=True)
    )
    assert all(colors[c] == ref_colors[c] for c in colors)
    assert widget.layer.metadata["scai"].color_key == new_key
    # low-confidence spots marked below the threshold
    assert widget.show_low_confidence.isEnabled()
    widget.confidence.setValue(0.25)
    widget.show_low_confidence.setChecked(True)
    low = viewer.layers[widget.low_confidence_name]
    conf = adata.obs["scai_domain_confidence"].to_numpy()[rows]
    np.testing.assert_array_equal(low.metadata["point_index"], np.flatnonzero(conf < 0.25))
    widget.confidence.setValue(0.5)
    assert len(low.data) == int((conf < 0.5).sum())
    widget.show_low_confidence.setChecked(False)
    assert widget.low_confidence_name not in viewer.layers


def _color_near(
    shot: np.ndarray, rc: np.ndarray, color: str, radius: int, tol: float = 40.0
) -> np.ndarray:
    """For each screen pixel (row, col): is ``color`` within ``radius`` pixels?"""
    from matplotlib.colors import to_rgb

    target = np.array(to_rgb(color)) * 255
    close = np.linalg.norm(shot[..., :3].astype(float) - target, axis=-1) < tol
    out = np.zeros(len(rc), dtype=bool)
    h, w = close.shape
    for k, (r, c) in enumerate(np.round(rc).astype(int)):
        window = close[
            max(r - radius, 0) : min(r + radius + 1, h), max(c - radius, 0) : min(c + radius + 1, w)
        ]
        out[k] = window.any()
    return out


def test_screenshot_disagreement_and_boundaries(make_napari_viewer, qtbot, dlpfc_sdata):
    """On the rendered H&E: highlight at disagreeing spots only; outlines along a layer boundary."""
    from scipy.spatial import cKDTree

    adata = dlpfc_sdata.tables["rna"]
    _prediction_with_l4_merged(adata)
    viewer = make_napari_viewer(show=True)
    add_sdata(viewer, dlpfc_sdata)
    spots = viewer.layers["dlpfc_151673_spots"]
    widget = AnnotateWidget(viewer).compare
    widget.set_columns("pred", "layer_manual")
    widget.run_compare()
    widget.draw_boundaries("pred")
    spots.visible = False
    viewer.layers[f"{spots.name} annotations"].visible = False
    viewer.reset_view()
    show_and_settle(viewer, qtbot)
    shot = canvas_shot(viewer)
    yx = np.asarray(spots.data)
    rows = spots.metadata["scai"].extra["rows"]
    ref = adata.obs["layer_manual"].astype(object).to_numpy()[rows]
    pred = adata.obs["pred"].astype(object).to_numpy()[rows]
    labelled = pd.notna(ref)
    disagree = labelled & (ref == "L4")
    agree = labelled & ~disagree
    rc = world_to_screen(viewer, shot, yx)
    on_disagree = _color_near(shot, rc[disagree], HIGHLIGHT_COLOR, 0)
    on_agree = _color_near(shot, rc[agree], HIGHLIGHT_COLOR, 0)
    assert on_disagree.mean() > 0.9, (
        f"highlight at only {on_disagree.mean():.1%} of disagreeing spots"
    )
    assert on_agree.mean() < 0.02, f"highlight at {on_agree.mean():.1%} of agreeing spots"

    # outlines: L1 (yellow) / L2 (orange) boundary of the prediction
    tree = cKDTree(yx)
    pitch = np.median(tree.query(yx, k=2)[0][:, 1])
    pairs = np.array(sorted(tree.query_pairs(1.2 * pitch)))
    a, b = pred[pairs[:, 0]], pred[pairs[:, 1]]
    border = ((a == "L1") & (b == "L2")) | ((a == "L2") & (b == "L1"))
    mid = (yx[pairs[border, 0]] + yx[pairs[border, 1]]) / 2
    # control: spots deep inside any predicted domain (same label all round, not at the edge)
    near = tree.query_ball_point(yx, 2.5 * pitch)
    full = max(len(nb) for nb in near)
    interior = np.array(
        [len(nb) >= full - 2 and all(pred[j] == pred[i] for j in nb) for i, nb in enumerate(near)]
    )
    assert len(mid) > 20 and interior.sum() > 20
    l1, l2 = (
        widget.viewer.layers[f"{spots.name} boundaries"].metadata["domain_colors"][k]
        for k in ("L1", "L2")
    )

    def outline_hits(points):
        pix = world_to_screen(viewer, shot, points)
        return _color_near(shot, pix, l1, 3) | _color_near(shot, pix, l2, 3)

    hits_border, hits_interior = outline_hits(mid), outline_hits(yx[interior])
    assert hits_border.mean() > 0.8, (
        f"outline near only {hits_border.mean():.1%} of L1/L2 boundary points"
    )
    assert hits_interior.mean() < 0.05, (
        f"outline colour inside domains at {hits_interior.mean():.1%} of spots"
    )

    # per-domain toggle: hiding L1 and L2 removes their outlines from the picture
    widget.set_domain_visible("L1", False)
    widget.set_domain_visible("L2", False)
    viewer.layers[widget.disagreement_name].visible = False
    qtbot.wait(50)
    shot = canvas_shot(viewer)
    assert outline_hits(mid).mean() < 0.2


def test_widgets_are_contributed(make_napari_viewer, qtbot, dlpfc_sdata):
    from qtpy.QtWidgets import QTabBar

    viewer = make_napari_viewer()
    add_sdata(viewer, dlpfc_sdata, color_by="layer_manual")
    viewer.window.add_plugin_dock_widget("napari-scai", "Tissue overlay", tabify=True)
    dock, annotate = viewer.window.add_plugin_dock_widget(
        "napari-scai", "Annotate & compare", tabify=True
    )
    assert isinstance(annotate, AnnotateWidget) and isinstance(annotate.compare, CompareWidget)
    assert annotate.layer_combo.currentText() == "dlpfc_151673_spots"
    assert annotate.compare.ref_combo.currentText() == "layer_manual"
    # Compare shows once: a tab of this dock, no dock of its own
    from npe2 import PluginManager

    widgets = PluginManager.instance().get_manifest("napari-scai").contributions.widgets
    assert [w.display_name for w in widgets].count("Annotate & compare") == 1
    assert not any(
        "compare" in w.display_name.lower() and "&" not in w.display_name for w in widgets
    )
    # the tab of the tabified dock shows "Annotate & compare" (Qt would eat a single "&")
    qtbot.wait(50)
    texts = [
        bar.tabText(i)
        for bar in viewer.window._qt_window.findChildren(QTabBar)
        for i in range(bar.count())
    ]
    assert any(t.startswith("Annotate && compare") for t in texts), texts
    assert not any(t.replace("&&", "").count("&") for t in texts), texts  # no eaten "&"
    assert dock.title.title.text().startswith("Annotate & compare")  # title bar: a plain label


@pytest.mark.parametrize("bad", ["nope"])
def test_compare_unknown_column_is_an_error(make_napari_viewer, dlpfc_sdata, bad):
    viewer = make_napari_viewer()
    add_sdata(viewer, dlpfc_sdata)
    widget = CompareWidget(viewer)
    with pytest.raises(KeyError, match="not a label column"):
        widget.set_columns(bad, "layer_manual")


def test_moving_a_vertex_is_one_undoable_step(make_napari_viewer, dlpfc_sdata):
    """A vertex dragged in the Shapes layer (napari emits a 'changed' data event) relabels."""
    from napari.layers.base._base_constants import ActionType

    viewer = make_napari_viewer()
    add_sdata(viewer, dlpfc_sdata)
    widget = AnnotateWidget(viewer)
    widget.add_polygons([_rect(3000, 3000, 6000, 6000)], "A")
    yx = np.asarray(widget.spots.data)
    before = (widget.adata.obs[ANNOTATION_KEY] == "A").sum()
    bigger = _rect(3000, 3000, 6000, 9000)
    layer = widget.shapes_layer
    layer._data_view.edit(0, bigger)  # what the vertex-move mouse binding does ...
    layer.events.data(  # ... and the event it sends on release
        value=layer.data, action=ActionType.CHANGED, data_indices=(0,), vertex_indices=((),)
    )
    assert (widget.adata.obs[ANNOTATION_KEY] == "A").sum() == _inside(yx, bigger).sum() > before
    assert widget.stack.done[-1].label.startswith("edit") and len(widget.state.polygons) == 1
    widget.undo()
    assert (widget.adata.obs[ANNOTATION_KEY] == "A").sum() == before
    np.testing.assert_allclose(layer.data[0], _rect(3000, 3000, 6000, 6000))


def test_polygon_drawn_with_the_mouse(make_napari_viewer, dlpfc_sdata):
    """Clicks in napari's 'add polygon' mode, then a double click, give one annotation step."""
    from napari.utils._test_utils import read_only_mouse_event
    from napari.utils.interactions import (
        mouse_double_click_callbacks,
        mouse_move_callbacks,
        mouse_press_callbacks,
        mouse_release_callbacks,
    )

    viewer = make_napari_viewer()
    add_sdata(viewer, dlpfc_sdata)
    widget = AnnotateWidget(viewer)
    widget.add_class("WM", "#c0c0c0")
    layer = widget.shapes_layer
    layer.mode = "add_polygon"
    corners = _rect(3000, 3000, 6000, 6000)
    for yx in corners:
        for kind, callbacks in (
            ("mouse_move", mouse_move_callbacks),
            ("mouse_press", mouse_press_callbacks),
            ("mouse_release", mouse_release_callbacks),
        ):
            callbacks(layer, read_only_mouse_event(type=kind, position=yx, pos=yx))
    assert len(widget.state.polygons) == 0  # still drawing
    mouse_double_click_callbacks(
        layer, read_only_mouse_event(type="mouse_double_click", position=corners[-1])
    )
    assert len(widget.state.polygons) == 1 and widget.state.polygons[0].cls == "WM"
    inside = _inside(np.asarray(widget.spots.data), corners)
    rows = widget.spots.metadata["scai"].extra["rows"]
    col = column_values(widget.adata, ANNOTATION_KEY).to_numpy()[rows]
    assert (col[inside] == "WM").all() and pd.isna(col[~inside]).all()
    assert layer.features["class"].tolist() == ["WM"]
    widget.undo()
    assert len(layer.data) == 0


def test_paint_brush_and_lasso(make_napari_viewer, qtbot, dlpfc_sdata):
    """Drag the brush over spots, then lasso spots with a polygon: one undoable step each."""
    from napari.utils._test_utils import read_only_mouse_event
    from napari.utils.interactions import (
        mouse_move_callbacks,
        mouse_press_callbacks,
        mouse_release_callbacks,
    )

    viewer = make_napari_viewer()
    add_sdata(viewer, dlpfc_sdata)
    widget = AnnotateWidget(viewer)
    widget.add_class("tumour", "#ff0000")
    spots = widget.spots
    yx = np.asarray(spots.data)
    rows = spots.metadata["scai"].extra["rows"]

    def labels():
        return column_values(widget.adata, ANNOTATION_KEY).to_numpy()[rows]

    qtbot.mouseClick(widget.paint_button, LEFT)
    assert widget.paint_button.isChecked() and not spots.mouse_pan
    stroke = np.linspace(yx[100], yx[100] + [0, 1500], 6)
    mouse_press_callbacks(spots, read_only_mouse_event(type="mouse_press", position=stroke[0]))
    for p in stroke[1:]:
        mouse_move_callbacks(
            spots, read_only_mouse_event(type="mouse_move", position=p, is_dragging=True)
        )
    mouse_release_callbacks(spots, read_only_mouse_event(type="mouse_release", position=stroke[-1]))
    radius = widget.brush.value() * float(np.median(spots.size))
    # every spot within the brush of the stroke, and no other, is painted
    dist = np.min(np.linalg.norm(yx[:, None, :] - stroke[None, :, :], axis=-1), axis=1)
    painted = labels() == "tumour"
    assert painted.sum() >= 5
    np.testing.assert_array_equal(painted, dist <= radius)
    assert widget.stack.done[-1].label.startswith("paint")
    qtbot.mouseClick(widget.paint_button, LEFT)  # brush off: panning back
    assert spots.mouse_pan and widget._paint_drag not in spots.mouse_drag_callbacks

    # lasso: a polygon drawn, then turned into spot labels (the polygon goes)
    widget.add_class("stroma", "#00ff00")
    lasso = _rect(6000, 6000, 8000, 8000)
    widget.shapes_layer.add_polygons([lasso])
    qtbot.mouseClick(widget.to_spots_button, LEFT)
    assert len(widget.shapes_layer.data) == 0 and not widget.state.polygons
    inside = _inside(yx, lasso)
    assert (labels()[inside] == "stroma").all()
    widget.undo()
    assert len(widget.shapes_layer.data) == 1


def test_save_as_new_store_then_autosave(make_napari_viewer, qtbot, dlpfc_sdata, tmp_path):
    from napari_scai import io

    viewer = make_napari_viewer()
    add_sdata(viewer, dlpfc_sdata)
    widget = AnnotateWidget(viewer, autosave_ms=50)
    widget.add_polygons([_rect(3000, 3000, 6000, 6000)], "A")
    assert not widget.autosave_timer.isActive()  # no store yet
    assert not widget.save()  # and Save needs a path
    target = tmp_path / "new.zarr"
    assert widget.save(target)
    assert io.read(target).shapes["scai_annotations"]["class"].tolist() == ["A"]
    widget.add_polygons([_rect(7000, 7000, 9000, 9000)], "B")  # now autosaved
    qtbot.waitUntil(lambda: not widget.dirty, timeout=10_000)
    assert io.read(target).shapes["scai_annotations"]["class"].tolist() == ["A", "B"]


def test_save_button_without_store_saves_as_a_new_store(
    make_napari_viewer, qtbot, dlpfc_sdata, tmp_path, monkeypatch
):
    """Save on data with no store asks for a .zarr and writes all of it there, in a worker."""
    from qtpy.QtWidgets import QFileDialog

    from napari_scai import io

    viewer = make_napari_viewer()
    add_sdata(viewer, dlpfc_sdata)
    widget = AnnotateWidget(viewer, autosave_ms=50)
    widget.add_polygons([_rect(3000, 3000, 6000, 6000)], "A")
    target = tmp_path / "picked"  # the dialog adds .zarr
    monkeypatch.setattr(
        QFileDialog, "getSaveFileName", staticmethod(lambda *_a, **_k: (str(target), ""))
    )
    qtbot.mouseClick(widget.save_button, LEFT)
    assert not widget.save_button.isEnabled()
    qtbot.waitUntil(lambda: widget._save_worker is None, timeout=20_000)
    assert widget.save_button.isEnabled() and not widget.dirty
    assert widget.last_save_error is None
    store = tmp_path / "picked.zarr"
    assert widget.sdata.path == store
    back = io.read(store)
    assert back.shapes["scai_annotations"]["class"].tolist() == ["A"]
    assert set(back.images) == set(dlpfc_sdata.images)  # the whole data, not just the annotation
    assert set(back.shapes) == {*dlpfc_sdata.shapes}
    assert column_values(back.tables["rna"], ANNOTATION_KEY).equals(
        column_values(widget.adata, ANNOTATION_KEY)
    )
    widget.add_polygons([_rect(7000, 7000, 9000, 9000)], "B")  # and autosave goes there now
    qtbot.waitUntil(lambda: not widget.dirty and widget._save_worker is None, timeout=10_000)
    assert io.read(store).shapes["scai_annotations"]["class"].tolist() == ["A", "B"]
