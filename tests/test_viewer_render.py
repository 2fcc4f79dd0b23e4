"""Acceptance tests read from the rendered canvas (Xvfb): colours and true spot size on screen."""

from __future__ import annotations

import numpy as np
from matplotlib.colors import to_rgb

from tests._screen import canvas_shot, show_and_settle, world_to_screen

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
    diameter = float(np.asarray(points.size)[0])  # full-res px: spot_diameter_fullres
    sdata_diameter = 2 * float(dlpfc_sdata.shapes["dlpfc_151673_spots"]["radius"].iloc[0])
    assert np.isclose(diameter, sdata_diameter)

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
