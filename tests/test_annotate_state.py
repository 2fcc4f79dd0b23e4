"""Annotation state without Qt: incremental labels, staging for io.update, CSV/GeoJSON."""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_scai.datasets import synthetic_section
from napari_scai.viewer._annotations import (
    AnnotationState,
    LabelCache,
    compute_labels,
    snapshot_elements,
    stage_annotation,
    state_to_geodataframe,
    state_with_csv,
    state_with_geojson,
)


def _square(cy: float, cx: float, h: float) -> np.ndarray:
    return np.array([[cy - h, cx - h], [cy - h, cx + h], [cy + h, cx + h], [cy + h, cx - h]])


def _history(yx: np.ndarray, n_steps: int, seed: int = 0) -> list[AnnotationState]:
    """States after each of ``n_steps`` edits: polygons and spot assignments, interleaved."""
    rng = np.random.default_rng(seed)
    lo, hi = yx.min(0), yx.max(0)
    state = AnnotationState().with_class("a", "#ff0000").with_class("b", "#00ff00")
    out = []
    for i in range(n_steps):
        cls = "ab"[i % 2]
        if i % 3 == 2:
            state = state.assign_points(rng.choice(len(yx), 20, replace=False), cls)
        else:
            c = lo + rng.random(2) * (hi - lo)
            state = state.add_polygons([_square(c[0], c[1], 0.08 * (hi - lo).max())], cls)
        out.append(state)
    return out


def test_label_cache_matches_full_replay_and_replays_only_the_change():
    yx = np.random.default_rng(1).random((3000, 2)) * 1000
    states = _history(yx, 60)
    cache = LabelCache(yx)
    replayed = []
    for st in states:  # one edit after another, as in the dock
        got = cache.labels(st)
        replayed.append(cache.last_replayed)
        assert np.array_equal(got, compute_labels(st, yx))
    assert replayed[0] == 1 and max(replayed[1:]) == 1  # each edit: its one new step
    # undo to the state before the last edit, then redo: a few steps, not the history
    assert np.array_equal(cache.labels(states[-2]), compute_labels(states[-2], yx))
    assert cache.last_replayed == 0
    cache.labels(states[-1])
    assert cache.last_replayed == 1
    # editing the 2nd-last polygon replays from there; deep history stays cached
    poly = states[-1].polygons[-2]
    edited = states[-1].edit_polygons({poly.id: poly.yx + 5.0})
    assert np.array_equal(cache.labels(edited), compute_labels(edited, yx))
    assert cache.last_replayed <= 1 + cache.every
    # a recolour keeps every step object: nothing is replayed
    cache.labels(edited.recolor_class("a", "#0000ff"))
    assert cache.last_replayed == 0


def test_an_edit_costs_the_change_not_the_history():
    yx = np.random.default_rng(2).random((20_000, 2)) * 1000
    states = _history(yx, 120)
    cache = LabelCache(yx)
    for st in states[:-1]:
        cache.labels(st)
    t = time.perf_counter()
    cache.labels(states[-1])
    one_edit = time.perf_counter() - t
    t = time.perf_counter()
    compute_labels(states[-1], yx)
    full = time.perf_counter() - t
    assert one_edit < full / 5, (one_edit, full)  # measured ~1/40 (2-core shared machine)


@pytest.fixture
def section():
    return synthetic_section(400, n_genes=5, kind="visium", sample="s1")


def test_stage_annotation_puts_polygons_in_and_takes_them_out(section):
    sd_ = section
    yx = np.column_stack([sd_.shapes["s1_spots"].geometry.y, sd_.shapes["s1_spots"].geometry.x])
    c = yx.mean(0)
    state = (
        AnnotationState().with_class("tumour", "#ff0000").add_polygons([_square(*c, 300)], "tumour")
    )
    eye = np.eye(3)
    kw = dict(table="rna", spots_element="s1_spots", element="ann", matrix=eye, author="me")
    written, removed = stage_annotation(sd_, state, **kw)
    assert written == ["rna", "ann"] and removed == []
    gdf = sd_.shapes["ann"]
    assert list(gdf["class"]) == ["tumour"] and gdf["author"].iloc[0] == "me"
    assert np.allclose(
        np.asarray(gdf.geometry.iloc[0].exterior.coords)[:4], _square(*c, 300)[:, ::-1]
    )
    snap = snapshot_elements(sd_, written, whole=False)
    assert set(snap.shapes) == {"ann"} and set(snap.tables) == {"rna"}
    assert snap.tables["rna"] is not sd_.tables["rna"]  # a copy: later edits do not leak in
    written, removed = stage_annotation(sd_, state.remove_polygons([state.polygons[0].id]), **kw)
    assert written == ["rna"] and removed == ["ann"] and "ann" not in sd_.shapes


def test_csv_and_geojson_round_trip_without_qt(section, tmp_path):
    from napari_scai.tl import export_annotation_csv, export_geojson, import_geojson

    a = section.tables["rna"]
    rows = np.arange(a.n_obs)
    a.obs["truth"] = a.obs["domain"]
    path = export_annotation_csv(a, "truth", tmp_path / "labels.csv")
    state = state_with_csv(AnnotationState(), a, rows, path)
    assert state.class_names == list(a.obs["domain"].cat.categories)
    yx = np.zeros((a.n_obs, 2))
    assert np.array_equal(compute_labels(state, yx), a.obs["domain"].astype(str).to_numpy())

    matrix = np.array([[2.0, 0, 10], [0, 2.0, 20], [0, 0, 1]])  # world = 2 * intrinsic + offset
    poly = AnnotationState().with_class("x", "#123456").add_polygons([_square(500, 400, 50)], "x")
    gj = export_geojson(state_to_geodataframe(poly, matrix), tmp_path / "p.geojson")
    back = state_with_geojson(AnnotationState(), import_geojson(gj), matrix)
    assert back.class_names == ["x"] and back.color_of("x") == "#123456"
    assert np.allclose(back.polygons[0].yx, poly.polygons[0].yx)
    gdf = import_geojson(gj).drop(columns=["class"])
    with pytest.raises(ValueError, match="class"):
        state_with_geojson(AnnotationState(), gdf, matrix)
    assert state_with_geojson(AnnotationState(), gdf, matrix, cls="y").polygons[0].cls == "y"


def test_each_dock_in_its_own_module_and_no_widget_writes_a_store():
    import re
    from pathlib import Path

    import yaml

    import napari_scai

    root = Path(napari_scai.__file__).parent
    manifest = yaml.safe_load((root / "napari.yaml").read_text())["contributions"]
    by_id = {c["id"]: c["python_name"] for c in manifest["commands"]}
    modules = [by_id[w["command"]].split(":")[0] for w in manifest["widgets"]]
    assert len(modules) == len(set(modules)), modules  # one dock per module
    assert "napari_scai.widgets.compare" not in modules  # Compare is a tab, not a dock
    for path in (root / "widgets").glob("*.py"):
        src = path.read_text()
        # stores are written by napari_scai.io only (io.update / io.write)
        assert not re.search(r"\.write\(|write_element|import zarr|to_zarr|\.to_csv\(", src), path
