"""The plugin in a real napari viewer (Xvfb): sample data, reader, errors, widget docking."""

from __future__ import annotations

import numpy as np
import pytest

from tests._screen import canvas_shot, is_tissue, show_and_settle, world_to_screen
from tests.conftest import shared_path


def _spots_and_image(viewer):
    points = [ly for ly in viewer.layers if ly._type_string == "points"]
    images = [ly for ly in viewer.layers if ly._type_string == "image"]
    return points[0], images[0]


def test_sample_spots_sit_on_tissue(make_napari_viewer, qtbot):
    """Render the DLPFC sample and check from the screenshot that spots lie on the H&E tissue."""
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-scai", "dlpfc_151673")
    points, image = _spots_and_image(viewer)
    assert points.name == "dlpfc_151673_spots" and image.name == "dlpfc_151673_lowres_image"
    assert len(points.data) == 3639
    # diameter: 96.4 full-res px, drawn in microns (0.7261 µm/px from the Visium lattice)
    from napari_scai.datasets import dlpfc_151673
    from napari_scai.viewer._scale import microns_per_pixel

    um_per_px = microns_per_pixel(dlpfc_151673())
    assert 0.72 < um_per_px < 0.73
    np.testing.assert_allclose(points.size, 96.40082438014726 * um_per_px)
    assert "layer_manual" in points.features.columns
    viewer.reset_view()
    show_and_settle(viewer, qtbot)
    points.visible = False
    shot = canvas_shot(viewer)
    assert shot[..., :3].std() > 10, "blank screenshot: the canvas did not render"
    rc = np.round(world_to_screen(viewer, shot, points.data)).astype(int)
    inside = (
        (rc[:, 0] >= 0) & (rc[:, 0] < shot.shape[0]) & (rc[:, 1] >= 0) & (rc[:, 1] < shot.shape[1])
    )
    assert inside.all(), "some spots fall outside the rendered canvas"
    on_tissue = is_tissue(shot[rc[:, 0], rc[:, 1], :3])
    assert on_tissue.mean() > 0.97, f"only {on_tissue.mean():.1%} of spot centres are on tissue"
    # Control: the same spots shifted by a quarter of the section mostly miss the tissue,
    # so the check above can fail when the image and spots are misregistered.
    shifted = points.data + np.array([0, 0.45 * np.ptp(points.data[:, 1])])
    rc2 = np.round(world_to_screen(viewer, shot, shifted)).astype(int)
    ok = (
        (rc2[:, 0] >= 0)
        & (rc2[:, 0] < shot.shape[0])
        & (rc2[:, 1] >= 0)
        & (rc2[:, 1] < shot.shape[1])
    )
    assert is_tissue(shot[rc2[ok, 0], rc2[ok, 1], :3]).sum() < 0.8 * len(rc2)


def test_reader_opens_visium_folder(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open(str(shared_path("visium", "dlpfc_151674")), plugin="napari-scai")
    names = [ly.name for ly in layers]
    assert names == ["dlpfc_151674_lowres_image", "dlpfc_151674_spots"]
    assert len(layers[1].data) == 3673


def test_reader_opens_h5ad_cells(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open(
        str(shared_path("imaging", "starmap_v1_by3_wang2018.h5ad")), plugin="napari-scai"
    )
    assert [ly._type_string for ly in layers] == ["points"]
    assert len(layers[0].data) == 1549


def test_reader_error_is_a_notification(make_napari_viewer, tmp_path, monkeypatch):
    """A bad file gives a napari error notification naming the file and the fix."""
    import anndata as ad
    from napari.utils.notifications import notification_manager

    f = tmp_path / "no_coords.h5ad"
    ad.AnnData(np.ones((3, 2), dtype=np.float32)).write_h5ad(f)
    viewer = make_napari_viewer()
    seen = []
    monkeypatch.setattr(notification_manager, "dispatch", lambda n: seen.append(n))
    with pytest.raises(Exception, match="no spatial coordinates"):
        viewer.open(str(f), plugin="napari-scai")
    messages = [str(n.message) for n in seen]
    assert any("no_coords.h5ad" in m and "Fix:" in m for m in messages), messages


def test_reader_declines_unknown_files(tmp_path):
    from napari_scai._napari import get_reader

    f = tmp_path / "notes.txt"
    f.write_text("x")
    assert get_reader(str(f)) is None
    assert get_reader(str(shared_path("visium", "dlpfc_151673"))) is not None


def test_overlay_widget_docks(make_napari_viewer):
    from napari_scai.datasets import dlpfc_151673
    from napari_scai.viewer import add_sdata

    viewer = make_napari_viewer()
    add_sdata(viewer, dlpfc_151673(), color_by="layer_manual")
    dock, widget = viewer.window.add_plugin_dock_widget("napari-scai", "Tissue overlay")
    assert widget.layer_combo.currentText() == "dlpfc_151673_spots"
    assert widget.key_combo.findText("MOBP") >= 0  # genes offered by symbol


# --- issue 13: a polite reader ---------------------------------------------------------------


def test_png_goes_to_napari_without_a_question(tmp_path):
    """npe2 offers a PNG, TIFF or CSV only to napari's own reader, so napari never asks."""
    import npe2
    from PIL import Image

    # A private plugin manager that discovers the installed manifests (napari's own included)
    # the way napari does at start-up, leaving napari's global plugin state untouched (a
    # second start-up in one process re-registers other plugins' Qt actions and fails).
    pm = npe2.PluginManager()
    pm.discover()

    def readers(path):
        return {r.plugin_name for r in pm.iter_compatible_readers([str(path)])}

    png = tmp_path / "photo.png"
    Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8)).save(png)
    for name in ("photo.png", "stack.tif", "table.csv"):
        offered = readers(tmp_path / name)
        assert "napari-scai" not in offered and "napari" in offered, (name, offered)
    # what we do read is still offered to us (so the manifest in use is ours)
    assert "napari-scai" in readers(tmp_path / "cells.h5ad")
    # napari asks only when several readers are offered: for the PNG only napari's own is
    assert readers(png) == {"napari"}


def test_reader_declines_what_it_does_not_read(tmp_path):
    """Folders and .h5/.zarr that are not ours are declined (and quickly)."""
    import time

    import h5py

    from napari_scai import io
    from napari_scai._napari import get_reader
    from tests._crash_worker import make

    tiffs = tmp_path / "tiff_folder"
    tiffs.mkdir()
    (tiffs / "a.tif").write_bytes(b"II*\x00")
    other_h5 = tmp_path / "ilastik.h5"
    with h5py.File(other_h5, "w") as f:
        f["exported_data"] = np.zeros((4, 4))
    ome = tmp_path / "image.zarr"  # a zarr group that is not a SpatialData
    ome.mkdir()
    (ome / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    start = time.perf_counter()
    for path in (tiffs, other_h5, ome, tmp_path / "notes.txt", [str(tiffs), str(ome)]):
        assert get_reader(path if isinstance(path, list) else str(path)) is None, path
    assert time.perf_counter() - start < 0.5
    store = io.write(make("a"), tmp_path / "ours.zarr")
    assert get_reader(str(store)) is not None
    assert get_reader(str(shared_path("visium", "dlpfc_151673"))) is not None
    assert get_reader(str(shared_path("citeseq", "eccite_pbmc_control_citefuse_500cells.h5ad")))
