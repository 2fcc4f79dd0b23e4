"""Annotations drawn in the dock survive save, reopen and a save that fails midway.

A save killed for real (SIGKILL at random moments of the same ``io.update`` the dock calls,
annotation polygons and ``obs['scai_annotation']`` included) is ``tests/test_io_crash.py``.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import shapely
from qtpy.QtCore import Qt

from napari_scai import io
from napari_scai.datasets import DLPFC_LAYER_COLORS, DLPFC_LAYERS
from napari_scai.viewer import add_sdata
from napari_scai.viewer._annotations import ANNOTATION_ELEMENT, ANNOTATION_KEY, intrinsic_to_world
from napari_scai.widgets.annotate import AnnotateWidget, _spots_affine
from tests._annotation_helpers import agreement, column_values, manual_layer_polygons


@pytest.fixture(scope="module")
def store_template(tmp_path_factory):
    """DLPFC 151673 written once as a store; tests copy it."""
    from napari_scai.datasets import dlpfc_151673

    path = tmp_path_factory.mktemp("template") / "dlpfc.zarr"
    io.write(dlpfc_151673(), path)
    return path


@pytest.fixture
def store(store_template, tmp_path):
    path = tmp_path / "dlpfc.zarr"
    shutil.copytree(store_template, path)
    return path


def _open(make_napari_viewer, store, **kwargs):
    viewer = make_napari_viewer()
    sdata = io.read(store)
    add_sdata(viewer, sdata, color_by="layer_manual")
    widget = AnnotateWidget(viewer, **kwargs)
    return viewer, sdata, widget


def _snapshot(store):
    return {p.relative_to(store): p.read_bytes() for p in store.rglob("*") if p.is_file()}


def click_save(widget, qtbot) -> None:
    """Press Save and wait for its background write (and its result) to be done."""
    qtbot.mouseClick(widget.save_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget._save_worker is None, timeout=20_000)


def draw_manual_layers(widget, qtbot) -> list[tuple[str, np.ndarray]]:
    """Like a user: add the 7 classes in the dock, draw polygons in the Shapes layer, assign."""
    wanted = dict(zip(DLPFC_LAYERS, DLPFC_LAYER_COLORS, strict=True))
    widget._pick_color = lambda _current: wanted[widget.current_class]
    for cls in DLPFC_LAYERS:
        widget.class_name.setText(cls)
        qtbot.mouseClick(widget.add_class_button, Qt.MouseButton.LeftButton)
        qtbot.mouseClick(widget.color_button, Qt.MouseButton.LeftButton)
    polys = manual_layer_polygons(widget.adata)
    matrix = _spots_affine(widget.spots)
    shapes = widget.shapes_layer
    shapes.add_polygons([intrinsic_to_world(v, matrix) for _, v in polys])
    assert len(shapes.data) == len(polys)
    for cls in DLPFC_LAYERS:
        shapes.selected_data = {i for i, (c, _) in enumerate(polys) if c == cls}
        widget.class_list.setCurrentRow(DLPFC_LAYERS.index(cls))
        qtbot.mouseClick(widget.assign_button, Qt.MouseButton.LeftButton)
    return polys


def test_polygons_assign_manual_layers_and_survive_reopen(make_napari_viewer, qtbot, store):
    viewer, sdata, widget = _open(make_napari_viewer, store)
    polys = draw_manual_layers(widget, qtbot)
    adata = sdata.tables["rna"]
    assert agreement(adata, ANNOTATION_KEY) >= 0.99
    assert list(adata.obs[ANNOTATION_KEY].cat.categories) == DLPFC_LAYERS
    assert list(adata.uns[f"{ANNOTATION_KEY}_colors"]) == DLPFC_LAYER_COLORS
    # the polygons in the layer carry their class colours
    shapes = widget.shapes_layer
    assert shapes.features["class"].tolist() == [c for c, _ in polys]
    l1 = shapes.features["class"].to_numpy() == "L1"
    np.testing.assert_allclose(
        shapes.edge_color[l1][0, :3], np.array([0xF0, 0xC8, 0x08]) / 255, atol=1e-6
    )

    click_save(widget, qtbot)
    assert widget.last_save_error is None and not widget.dirty
    saved = column_values(adata, ANNOTATION_KEY)
    drawn_before = widget.state.polygons

    # "close" and reopen: a new viewer on the store read from disk
    viewer2, sdata2, widget2 = _open(make_napari_viewer, store)
    assert ANNOTATION_ELEMENT in sdata2.shapes
    gdf = sdata2.shapes[ANNOTATION_ELEMENT]
    assert set(gdf.columns) >= {"class", "color", "author", "created"}
    assert widget2.state.class_names == DLPFC_LAYERS
    assert [c.color for c in widget2.state.classes] == DLPFC_LAYER_COLORS
    assert widget2.shapes_layer.features["class"].tolist() == [c for c, _ in polys]
    rng = np.random.default_rng(0)
    for before, after in zip(drawn_before, widget2.state.polygons, strict=True):
        # the store keeps valid geometry (a collapsed spike is dropped), so compare which
        # points the outlines enclose rather than vertex lists
        a, b = (shapely.make_valid(shapely.Polygon(p.yx[:, ::-1])) for p in (after, before))
        x0, y0, x1, y1 = b.bounds
        gx, gy = rng.uniform(x0, x1, 4000), rng.uniform(y0, y1, 4000)
        inside_a, inside_b = shapely.contains_xy(a, gx, gy), shapely.contains_xy(b, gx, gy)
        assert (inside_a != inside_b).mean() < 1e-3 and inside_b.any()
        assert after.author == before.author and after.created == before.created
    assert column_values(sdata2.tables["rna"], ANNOTATION_KEY).equals(saved)
    assert widget2.spots.metadata["scai"].color_key == ANNOTATION_KEY  # spots coloured by it
    assert not widget2.stack.can_undo  # a fresh history


def test_failed_save_leaves_previous_store(make_napari_viewer, qtbot, store, monkeypatch):
    """A save that fails while writing the root metadata keeps the last good store, and the
    dock says so and can save again (a killed save: ``tests/test_io_crash.py``)."""
    from napari.utils.notifications import notification_manager

    from napari_scai.io import zarr as zarr_io

    viewer, sdata, widget = _open(make_napari_viewer, store, autosave_ms=60_000)
    widget.add_class("tumour", "#ff0000")
    widget.add_polygons(
        [np.array([[5000.0, 5000.0], [5000.0, 8000.0], [8000.0, 8000.0], [8000.0, 5000.0]])]
    )
    assert widget.save()  # first version on disk
    before = _snapshot(store)
    first = column_values(io.read(store).tables["rna"], ANNOTATION_KEY)

    widget.add_polygons(
        [np.array([[2000.0, 2000.0], [2000.0, 4000.0], [4000.0, 4000.0]])], "stroma"
    )
    seen = []
    monkeypatch.setattr(notification_manager, "dispatch", lambda n: seen.append(str(n.message)))

    def killed(path):
        (path / "zarr.json").write_text("{ half written")
        raise OSError("killed while writing metadata")

    monkeypatch.setattr(zarr_io, "_consolidate", killed)
    click_save(widget, qtbot)
    assert widget.last_save_error is not None and widget.dirty
    assert widget.save_button.isEnabled()
    assert any("failed" in m and "previous version" in m for m in seen), seen
    monkeypatch.undo()

    assert _snapshot(store) == before
    back = io.read(store)
    assert back.shapes[ANNOTATION_ELEMENT]["class"].tolist() == ["tumour"]
    assert column_values(back.tables["rna"], ANNOTATION_KEY).equals(first)
    # and the annotation in memory is intact: saving again works
    assert widget.save()
    assert io.read(store).shapes[ANNOTATION_ELEMENT]["class"].tolist() == ["tumour", "stroma"]


def test_autosave_after_a_step(make_napari_viewer, qtbot, store):
    viewer, sdata, widget = _open(make_napari_viewer, store, autosave_ms=100)
    widget.add_class("L1", "#f0c808")
    shapes = widget.shapes_layer
    shapes.add_polygons(
        [np.array([[3000.0, 3000.0], [3000.0, 6000.0], [6000.0, 6000.0], [6000.0, 3000.0]])]
    )
    assert widget.dirty and widget.autosave_timer.isActive()
    qtbot.waitUntil(lambda: not widget.dirty, timeout=10_000)
    back = io.read(store)
    assert back.shapes[ANNOTATION_ELEMENT]["class"].tolist() == ["L1"]
    n = int((back.tables["rna"].obs[ANNOTATION_KEY] == "L1").sum())
    assert n == int((sdata.tables["rna"].obs[ANNOTATION_KEY] == "L1").sum()) > 0


def test_deleting_every_polygon_removes_them_from_the_store(make_napari_viewer, qtbot, store):
    viewer, sdata, widget = _open(make_napari_viewer, store)
    widget.add_class("L1", "#f0c808")
    widget.shapes_layer.add_polygons(
        [np.array([[3000.0, 3000.0], [3000.0, 6000.0], [6000.0, 6000.0], [6000.0, 3000.0]])]
    )
    assert widget.save()
    assert ANNOTATION_ELEMENT in io.read(store).shapes
    widget.shapes_layer.selected_data = {0}
    widget.shapes_layer.remove_selected()
    qtbot.wait(50)
    assert widget.save()
    back = io.read(store)
    assert ANNOTATION_ELEMENT not in back.shapes
    assert back.tables["rna"].obs[ANNOTATION_KEY].isna().all()


def test_without_store_no_autosave(make_napari_viewer, dlpfc_sdata):
    viewer = make_napari_viewer()
    add_sdata(viewer, dlpfc_sdata)
    widget = AnnotateWidget(viewer, autosave_ms=10)
    widget.add_polygons([np.array([[3000.0, 3000.0], [3000.0, 6000.0], [6000.0, 6000.0]])], "A")
    assert not widget.autosave_timer.isActive() and widget.dirty


def test_csv_and_geojson_round_trip(make_napari_viewer, qtbot, store, tmp_path):
    viewer, sdata, widget = _open(make_napari_viewer, store, autosave_ms=60_000)
    draw_manual_layers(widget, qtbot)
    # a spot-level edit on top of the polygons
    widget.spots.selected_data = {0, 1, 2}
    widget.add_class("artefact", "#000000")
    widget.assign_selected()
    adata = sdata.tables["rna"]
    expected = column_values(adata, ANNOTATION_KEY)
    csv = widget.export_csv(tmp_path / "a.csv")
    geojson = widget.export_geojson(tmp_path / "a.geojson")

    viewer2 = make_napari_viewer()
    fresh = io.read(store)
    add_sdata(viewer2, fresh)
    other = AnnotateWidget(viewer2, autosave_ms=60_000)
    other.import_geojson(geojson)
    assert (
        other.shapes_layer.features["class"].tolist()
        == widget.shapes_layer.features["class"].tolist()
    )
    assert {c.name: c.color for c in other.state.classes} == dict(
        zip(DLPFC_LAYERS, DLPFC_LAYER_COLORS, strict=True)
    )
    assert agreement(fresh.tables["rna"], ANNOTATION_KEY) >= 0.99
    other.import_csv(csv)
    assert column_values(fresh.tables["rna"], ANNOTATION_KEY).equals(expected)
    other.undo()  # the CSV import is one step
    assert column_values(fresh.tables["rna"], ANNOTATION_KEY)[:3].tolist() != ["artefact"] * 3


def test_autosave_writes_in_a_worker_and_keeps_later_steps(
    make_napari_viewer, qtbot, store, monkeypatch
):
    """Autosave does not block the GUI thread; a step taken during the write is saved next."""
    import threading

    import napari_scai.io as nio

    real_update = nio.update
    threads = []

    written = []

    def slow_update(snapshot, *args, **kwargs):
        threads.append(threading.current_thread())
        written.append(len(snapshot.shapes[ANNOTATION_ELEMENT]))
        threading.Event().wait(0.5)
        return real_update(snapshot, *args, **kwargs)

    monkeypatch.setattr(nio, "update", slow_update)
    viewer, sdata, widget = _open(make_napari_viewer, store, autosave_ms=10)
    widget.add_class("L1", "#f0c808")
    square = np.array([[3000.0, 3000.0], [3000.0, 6000.0], [6000.0, 6000.0], [6000.0, 3000.0]])
    widget.shapes_layer.add_polygons([square])
    qtbot.waitUntil(lambda: widget._save_worker is not None, timeout=5_000)
    widget.shapes_layer.add_polygons([square + 4000.0])  # while the first write runs
    assert widget.dirty
    qtbot.waitUntil(lambda: not widget.dirty and widget._save_worker is None, timeout=10_000)
    assert all(t is not threading.main_thread() for t in threads)
    assert written == [1, 2]  # the step taken during the first write went into the second
    assert len(io.read(store).shapes[ANNOTATION_ELEMENT]) == 2


def test_save_button_writes_in_a_worker_one_write_at_a_time(
    make_napari_viewer, qtbot, store, monkeypatch
):
    """Save writes off the GUI thread, the button is off meanwhile and saves never overlap."""
    import threading

    import napari_scai.io as nio

    real_update = nio.update
    release = threading.Event()
    running, calls = [], []

    def held_update(snapshot, *args, **kwargs):
        running.append(1)
        calls.append((threading.current_thread(), len(running)))
        try:
            assert release.wait(20)
            return real_update(snapshot, *args, **kwargs)
        finally:
            running.pop()

    monkeypatch.setattr(nio, "update", held_update)
    viewer, sdata, widget = _open(make_napari_viewer, store, autosave_ms=60_000)
    widget.add_class("tumour", "#ff0000")
    widget.add_polygons(
        [np.array([[5000.0, 5000.0], [5000.0, 8000.0], [8000.0, 8000.0], [8000.0, 5000.0]])]
    )
    assert widget.dirty and ANNOTATION_ELEMENT not in io.read(store).shapes

    qtbot.mouseClick(widget.save_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(calls) == 1, timeout=5_000)  # the write runs...
    assert calls[0][0] is not threading.main_thread()
    assert not widget.save_button.isEnabled()  # ...the button is off...
    assert "saving" in widget.status.text()
    qtbot.mouseClick(widget.save_button, Qt.MouseButton.LeftButton)  # (a disabled button)
    widget._on_save()  # ...and a save asked for now waits for the running one
    qtbot.wait(100)
    assert len(calls) == 1 and widget.dirty  # the GUI thread was free the whole time

    release.set()
    qtbot.waitUntil(
        lambda: widget._save_worker is None and widget._queued_save is None, timeout=20_000
    )
    assert [depth for _, depth in calls] == [1, 1]  # the queued save ran after, not alongside
    assert widget.save_button.isEnabled()
    assert widget.last_save_error is None and not widget.dirty
    assert widget.status.text().startswith("saved 1 polygons")
    back = io.read(store)
    assert back.shapes[ANNOTATION_ELEMENT]["class"].tolist() == ["tumour"]
    n = int((back.tables["rna"].obs[ANNOTATION_KEY] == "tumour").sum())
    assert n == int((sdata.tables["rna"].obs[ANNOTATION_KEY] == "tumour").sum()) > 0


def test_save_button_error_is_notified(make_napari_viewer, qtbot, store, monkeypatch):
    from napari.utils.notifications import notification_manager

    import napari_scai.io as nio

    def broken(*_args, **_kwargs):
        raise OSError("disk full")

    viewer, sdata, widget = _open(make_napari_viewer, store, autosave_ms=60_000)
    widget.add_polygons([np.array([[3000.0, 3000.0], [3000.0, 6000.0], [6000.0, 6000.0]])], "A")
    seen = []
    monkeypatch.setattr(notification_manager, "dispatch", lambda n: seen.append(str(n.message)))
    monkeypatch.setattr(nio, "update", broken)
    click_save(widget, qtbot)
    assert widget.last_save_error == "OSError: disk full" and widget.dirty
    assert widget.status.text() == "save failed: OSError: disk full"
    assert any("saving the annotation" in m and "disk full" in m for m in seen), seen
    assert widget.save_button.isEnabled()
    assert ANNOTATION_ELEMENT not in io.read(store).shapes
