"""Domain outlines traced from spot centres (no Qt)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely

from napari_scai.tl._contours import domain_contours, estimate_pitch, rasterize_labels


def _hex_grid(n_rows: int = 20, n_cols: int = 30, pitch: float = 100.0) -> np.ndarray:
    """Centres of a Visium-like hexagonal lattice, (y, x)."""
    ys, xs = [], []
    for r in range(n_rows):
        for c in range(n_cols):
            ys.append(r * pitch * np.sqrt(3) / 2)
            xs.append(c * pitch + (pitch / 2 if r % 2 else 0))
    return np.column_stack([ys, xs])


def test_pitch_of_a_hex_lattice():
    assert estimate_pitch(_hex_grid(pitch=137.0)) == pytest.approx(137.0)
    assert estimate_pitch(np.zeros((1, 2))) == 1.0


def test_two_halves_share_one_boundary():
    yx = _hex_grid()
    labels = np.where(yx[:, 1] < 1450, "left", "right")
    contours = domain_contours(yx, labels)
    assert contours.labels == ["left", "right"]
    assert [len(contours.paths[k]) for k in ("left", "right")] == [1, 1]
    left = shapely.Polygon(contours.paths["left"][0][:, ::-1])
    right = shapely.Polygon(contours.paths["right"][0][:, ::-1])
    # each outline encloses exactly its own spots
    for poly, name in ((left, "left"), (right, "right")):
        inside = shapely.contains_xy(poly, yx[:, 1], yx[:, 0])
        np.testing.assert_array_equal(inside, labels == name)
    # and the two meet between the last left and the first right column (a zigzag on a hex
    # lattice: x = 1400 | 1500 on even rows, 1350 | 1450 on odd rows)
    shared = left.buffer(1).intersection(right.buffer(1))
    assert shared.length > 0 and 1375 < shared.centroid.x < 1475
    assert left.intersection(right).area < 0.01 * left.area


def test_island_and_missing_labels():
    yx = _hex_grid()
    labels = pd.Series(["a"] * len(yx), dtype=object)
    centre = np.argmin(((yx - yx.mean(axis=0)) ** 2).sum(axis=1))
    ring = np.argsort(((yx - yx[centre]) ** 2).sum(axis=1))[:7]  # a spot and its 6 neighbours
    labels[ring] = "b"
    labels[0] = None  # unlabelled: outlined by nobody
    contours = domain_contours(yx, pd.Categorical(labels, categories=["a", "b"]))
    assert len(contours.paths["b"]) == 1
    island = shapely.Polygon(contours.paths["b"][0][:, ::-1])
    inside = shapely.contains_xy(island, yx[:, 1], yx[:, 0])
    np.testing.assert_array_equal(np.flatnonzero(inside), np.sort(ring))
    # "a" has its outer outline plus the hole around "b" and the notch at the missing spot
    assert len(contours.paths["a"]) >= 2


def test_dlpfc_outlines_follow_the_manual_layers(dlpfc_sdata_session):
    adata = dlpfc_sdata_session.tables["rna"]
    yx = np.asarray(adata.obsm["spatial"], dtype=float)[:, ::-1]
    labels = adata.obs["layer_manual"]
    contours = domain_contours(yx, labels)
    assert contours.labels == list(labels.cat.categories)
    for name in contours.labels:
        polys = [shapely.make_valid(shapely.Polygon(p[:, ::-1])) for p in contours.paths[name]]
        union = shapely.union_all(polys)
        covered = shapely.contains_xy(union, yx[:, 1], yx[:, 0])
        own = (labels == name).to_numpy()
        assert covered[own].mean() > 0.97, name
        # outlines can enclose other layers' islands (holes are separate traces) but not much more
        assert (covered & ~own & labels.notna().to_numpy()).sum() < 0.1 * own.sum(), name


def test_bad_input():
    with pytest.raises(ValueError, match="shape"):
        domain_contours(np.zeros((3, 3)), ["a"] * 3)
    with pytest.raises(ValueError, match="labels"):
        domain_contours(np.zeros((3, 2)), ["a"] * 2)
    with pytest.raises(ValueError, match="step"):
        rasterize_labels(np.zeros((3, 2)), np.zeros(3, dtype=int), step=0, max_distance=1)
