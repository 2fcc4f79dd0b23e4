"""Atomic writes and in-place updates of SpatialData stores."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import Polygon
from spatialdata.models import ShapesModel

from napari_scai import io
from napari_scai.io import zarr as zarr_io


def _add_results(sdata):
    rna = sdata.tables["rna"]
    rna.obs["scai_domain"] = pd.Categorical(np.arange(rna.n_obs) % 7)
    sdata.shapes["annotations"] = ShapesModel.parse(
        gpd.GeoDataFrame(
            {"class": ["L1"], "color": ["#ff0000"]},
            geometry=[Polygon([(0, 0), (500, 0), (500, 500)])],
        )
    )


def test_update_adds_columns_and_shapes(tmp_path, dlpfc_sdata):
    store = io.write(dlpfc_sdata, tmp_path / "s.zarr")
    sdata = io.read(store)
    _add_results(sdata)
    io.update(sdata)
    back = io.read(store)
    assert "annotations" in back.shapes
    assert back.shapes["annotations"]["class"].tolist() == ["L1"]
    np.testing.assert_array_equal(
        back.tables["rna"].obs["scai_domain"].astype(int), np.arange(back.tables["rna"].n_obs) % 7
    )
    # images untouched, no leftovers next to the store
    assert "dlpfc_151673_lowres_image" in back.images
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]


@pytest.mark.parametrize("fail_at", ["stage", "swap", "consolidate"])
def test_failed_update_leaves_store_unchanged(tmp_path, dlpfc_sdata, monkeypatch, fail_at):
    store = io.write(dlpfc_sdata, tmp_path / "s.zarr")
    before = {p.relative_to(store): p.read_bytes() for p in store.rglob("*") if p.is_file()}
    sdata = io.read(store)
    _add_results(sdata)

    class Boom(RuntimeError):
        pass

    if fail_at == "stage":
        real = zarr_io._write_full

        def failing_write(sd, target):
            real(sd, target)
            raise Boom("disk full while staging")

        monkeypatch.setattr(zarr_io, "_write_full", failing_write)
    elif fail_at == "swap":
        real_rename = type(store).rename
        calls = {"n": 0}

        def failing_rename(self, target):
            calls["n"] += 1
            if calls["n"] == 3:  # after the first element has been swapped in
                raise Boom("killed during the swap")
            return real_rename(self, target)

        monkeypatch.setattr(type(store), "rename", failing_rename)
    else:

        def failing_consolidate(path):
            (path / "zarr.json").write_text("{ truncated")
            raise Boom("killed while writing metadata")

        monkeypatch.setattr(zarr_io, "_consolidate", failing_consolidate)

    with pytest.raises(Boom):
        io.update(sdata)
    monkeypatch.undo()
    after = {p.relative_to(store): p.read_bytes() for p in store.rglob("*") if p.is_file()}
    assert after == before
    back = io.read(store)
    assert "annotations" not in back.shapes
    assert "scai_domain" not in back.tables["rna"].obs
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]


def test_failed_overwrite_keeps_old_store(tmp_path, dlpfc_sdata, monkeypatch):
    store = io.write(dlpfc_sdata, tmp_path / "s.zarr")
    before = sorted(p.relative_to(store) for p in store.rglob("*"))

    def failing_write(sd, target):
        (target / "junk").mkdir(parents=True)
        raise OSError("no space left on device")

    monkeypatch.setattr(zarr_io, "_write_full", failing_write)
    with pytest.raises(OSError, match="no space"):
        io.write(dlpfc_sdata, store, overwrite=True)
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before
    assert io.read(store).tables["rna"].n_obs == 3639
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]


def test_overwrite_store_read_from_itself(tmp_path, dlpfc_sdata):
    """Saving over the store the data was lazily read from keeps the images."""
    store = io.write(dlpfc_sdata, tmp_path / "s.zarr")
    sdata = io.read(store)
    sdata.tables["rna"].obs["flag"] = True
    io.write(sdata, store, overwrite=True)
    back = io.read(store)
    assert back.tables["rna"].obs["flag"].all()
    assert np.asarray(back.images["dlpfc_151673_lowres_image"]).mean() > 0


def test_update_removes_element(tmp_path, dlpfc_sdata):
    _add_results(dlpfc_sdata)
    store = io.write(dlpfc_sdata, tmp_path / "s.zarr")
    sdata = io.read(store)
    del sdata.shapes["annotations"]
    sdata.tables["rna"].obs["x"] = 1
    io.update(sdata, elements=["rna"], remove=["annotations"])
    back = io.read(store)
    assert "annotations" not in back.shapes
    assert (back.tables["rna"].obs["x"] == 1).all()
    assert not (store / "shapes" / "annotations").exists()


def test_failed_removal_restores_element(tmp_path, dlpfc_sdata, monkeypatch):
    _add_results(dlpfc_sdata)
    store = io.write(dlpfc_sdata, tmp_path / "s.zarr")
    sdata = io.read(store)

    def failing_consolidate(path):
        raise RuntimeError("killed")

    monkeypatch.setattr(zarr_io, "_consolidate", failing_consolidate)
    with pytest.raises(RuntimeError):
        io.update(sdata, elements=[], remove=["annotations"])
    monkeypatch.undo()
    assert "annotations" in io.read(store).shapes
