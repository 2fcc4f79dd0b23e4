"""Acceptance tests read from the rendered canvas (Xvfb): colours and true spot size on screen."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_rgb

from tests._screen import canvas_shot, show_and_settle, world_to_screen


@pytest.fixture
def dlpfc_sdata(dlpfc_sdata_session):
    """A private copy of the session's DLPFC (0.6 s, against ~9 s to read the sample again)."""
    import spatialdata as sd

    return sd.deepcopy(dlpfc_sdata_session)


TOL = 12  # RGB levels (0-255) between the rendered and the expected colour


def _dlpfc_in_viewer(viewer, sdata):
    from napari_scai.viewer import add_sdata

    layers = add_sdata(viewer, sdata, color_by="layer_manual")
    points = next(ly for ly in layers if ly._type_string == "points")
    for ly in layers:
        if ly._type_string == "image":
            ly.visible = False  # compare against a black background
    points.opacity = 1.0
    return points


def _expected_rgb(points) -> np.ndarray:
    """Class colour per spot (0-255), grey for unlabelled spots, from the layer's style."""
    return np.round(np.asarray(points.face_color)[:, :3] * 255)


def test_spot_colours_on_screen_match_their_class(make_napari_viewer, qtbot, dlpfc_sdata):
    viewer = make_napari_viewer(show=True)
    points = _dlpfc_in_viewer(viewer, dlpfc_sdata)
    style = points.metadata["scai"].extra["style"]
    adata = points.metadata["adata"]
    # The per-spot colours come from uns['layer_manual_colors'] (missing values grey).
    labels = (
        adata.obs["layer_manual"].astype(object).to_numpy()[points.metadata["scai"].extra["rows"]]
    )
    lut = dict(zip(style.categories, style.category_colors, strict=True))
    expected = np.array(
        [
            np.asarray(to_rgb(lut[v])) * 255 if isinstance(v, str) else [191, 191, 191]
            for v in labels
        ]
    )
    np.testing.assert_allclose(_expected_rgb(points), np.round(expected), atol=1)

    show_and_settle(viewer, qtbot)
    shot = canvas_shot(viewer)
    rng = np.random.default_rng(0)
    sample = rng.choice(len(points.data), 400, replace=False)
    rc = np.round(world_to_screen(viewer, shot, points.data[sample])).astype(int)
    ok = (rc[:, 0] >= 0) & (rc[:, 0] < shot.shape[0]) & (rc[:, 1] >= 0) & (rc[:, 1] < shot.shape[1])
    assert ok.all()
    seen = shot[rc[:, 0], rc[:, 1], :3].astype(float)
    match = np.abs(seen - expected[sample]).max(axis=1) <= TOL
    assert match.mean() > 0.97, f"only {match.mean():.1%} of spot centres show their class colour"
    # Control: the same pixels against a shuffled class assignment mostly disagree.
    shuffled = expected[rng.permutation(sample)]
    assert (np.abs(seen - shuffled).max(axis=1) <= TOL).mean() < 0.6


def _run_length(line: np.ndarray, centre: int, rgb: np.ndarray) -> int:
    """Length of the run of pixels of colour ``rgb`` through ``centre`` along a 1-D line."""
    same = np.abs(line[:, :3].astype(float) - rgb).max(axis=1) <= 3 * TOL
    assert same[centre], "the spot centre does not show the spot's colour"
    lo = centre
    while lo > 0 and same[lo - 1]:
        lo -= 1
    hi = centre
    while hi < len(line) - 1 and same[hi + 1]:
        hi += 1
    return hi - lo + 1


def test_spot_diameter_on_screen_is_true_scale(make_napari_viewer, qtbot, dlpfc_sdata):
    viewer = make_napari_viewer(show=True)
    points = _dlpfc_in_viewer(viewer, dlpfc_sdata)
    diameter = float(np.asarray(points.size)[0])  # world: µm (the "microns" system)
    assert points.metadata["scai"].coordinate_system == "microns"
    from napari_scai.viewer._scale import microns_per_pixel

    # spot_diameter_fullres (96.4 px) in µm, by the 100 µm lattice: ~70 µm
    assert np.isclose(diameter, 96.40082438014726 * microns_per_pixel(dlpfc_sdata))
    sdata_diameter = 2 * float(dlpfc_sdata.shapes["dlpfc_151673_spots"]["radius"].iloc[0])
    assert np.isclose(sdata_diameter, 96.40082438014726)  # its full-res px, as stored

    # A spot near the middle of the section; neighbours are 100 µm away, the spot 55 µm wide.
    i = int(np.argmin(np.linalg.norm(points.data - points.data.mean(axis=0), axis=1)))
    show_and_settle(viewer, qtbot)
    viewer.camera.center = tuple(points.data[i])
    viewer.camera.zoom = 60.0 / diameter  # ~60 logical screen px per spot
    qtbot.wait(50)
    shot = canvas_shot(viewer)
    r, c = np.round(world_to_screen(viewer, shot, points.data[i : i + 1])[0]).astype(int)
    rgb = np.asarray(points.face_color[i, :3]) * 255
    ratio = shot.shape[0] / viewer.window._qt_viewer.canvas.size[0]
    expected = diameter * viewer.camera.zoom * ratio
    across = _run_length(shot[r], c, rgb)
    down = _run_length(shot[:, c], r, rgb)
    for measured in (across, down):
        assert abs(measured - expected) <= 0.05 * expected, (
            f"spot is {measured} px on screen, expected {expected:.1f}"
        )


def test_microns_per_pixel_of_visium_is_true(dlpfc_sdata):
    """The Visium lattice is the ruler: 100 µm between same-row neighbours (2 array_col steps)."""
    from scipy.spatial import cKDTree

    from napari_scai.datasets import synthetic_section
    from napari_scai.viewer._scale import add_microns_coordinate_system, microns_per_pixel

    adata = dlpfc_sdata.tables["rna"]
    um = microns_per_pixel(dlpfc_sdata)
    assert um == pytest.approx(0.7261, abs=5e-4)
    # independent checks: nearest neighbours 100 µm apart; a row 100 µm per 2 columns
    xy = np.asarray(adata.obsm["spatial"], dtype=float)
    d, _ = cKDTree(xy).query(xy, k=2)
    assert np.median(d[:, 1]) * um == pytest.approx(100.0, rel=0.01)
    row = adata.obs["array_row"].to_numpy()
    col = adata.obs["array_col"].to_numpy()
    pos = {(r, c): p for r, c, p in zip(row, col, xy, strict=True)}
    gaps = [np.linalg.norm(pos[(r, c + 2)] - p) for (r, c), p in pos.items() if (r, c + 2) in pos]
    assert np.median(gaps) * um == pytest.approx(100.0, rel=0.005)
    # spot_diameter_fullres is not a 55 µm ruler here: 96.4 px are ~70 µm
    assert 96.40082438014726 * um == pytest.approx(70.0, abs=0.5)
    # without array indices the nearest-neighbour pitch gives the same figure
    bare = adata.copy()
    bare.obs = bare.obs.drop(columns=["array_row", "array_col"])
    assert microns_per_pixel(bare) == pytest.approx(um, rel=0.01)
    assert add_microns_coordinate_system(dlpfc_sdata) == um
    assert "microns" in dlpfc_sdata.coordinate_systems
    cells = synthetic_section(50, n_genes=2, kind="cells")
    assert microns_per_pixel(cells) is None and add_microns_coordinate_system(cells) is None
    spots = synthetic_section(400, n_genes=2, kind="visium")
    assert microns_per_pixel(spots) == pytest.approx(0.7261, rel=0.01)  # built like DLPFC


def test_scale_bar_reads_micrometres(make_napari_viewer, qtbot, dlpfc_sdata):
    viewer = make_napari_viewer(show=True)
    points = _dlpfc_in_viewer(viewer, dlpfc_sdata)
    assert viewer.scale_bar.visible
    assert all(str(u) == "micrometer" for ly in viewer.layers for u in ly.units)
    show_and_settle(viewer, qtbot)
    viewer.camera.center = tuple(points.data.mean(axis=0))
    viewer.camera.zoom = 1.0  # 1 screen px per µm
    qtbot.wait(100)
    canvas = viewer.window._qt_viewer.canvas
    (visual,) = canvas._viewer_overlay_to_visual[viewer.scale_bar]
    text = visual.node.text.text
    assert text.endswith("µm"), text
    value = float(text.split()[0])
    # the bar's length on screen (logical px) over the zoom is its length in world µm
    assert visual._current_length / viewer.camera.zoom == pytest.approx(value, rel=0.01)
    # neighbouring spots (100 µm apart) are 100 logical px apart at this zoom
    from scipy.spatial import cKDTree

    d, _ = cKDTree(points.data).query(points.data, k=2)
    assert np.median(d[:, 1]) * viewer.camera.zoom == pytest.approx(100.0, rel=0.01)
    # the docks' own layers (annotation shapes, domain outlines) keep one unit for all
    from napari_scai.widgets.annotate import AnnotateWidget

    dock = AnnotateWidget(viewer)
    dock.compare.draw_boundaries("layer_manual")
    assert len(viewer.layers) >= 4
    assert viewer.layers.units is not None and all(
        str(u) == "micrometer" for u in viewer.layers.units
    )
