"""Issue 13: errors that name the missing or broken file, and user columns that never clash."""

from __future__ import annotations

import shutil
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from napari_scai import io
from napari_scai.io import ReadError
from tests._crash_worker import make
from tests.conftest import shared_path


@pytest.fixture
def visium_copy(tmp_path):
    dst = tmp_path / "outs"
    shutil.copytree(shared_path("visium", "spaceranger_v1_tiny"), dst)
    for p in dst.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    return dst


def test_visium_without_positions_names_the_missing_file(visium_copy):
    for f in (visium_copy / "spatial").glob("tissue_positions*"):
        f.unlink()
    assert io.detect_format(visium_copy) == "visium"  # still recognised as Space Ranger output
    with pytest.raises(ReadError) as info:
        io.read(visium_copy)
    msg = str(info.value)
    assert "unknown format" not in msg
    assert "tissue_positions_list.csv" in msg and "tissue_positions.csv" in msg
    assert "spot positions file is missing" in msg and "Fix:" in msg


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    return io.write(make("a"), tmp_path_factory.mktemp("small") / "s.zarr")


@pytest.mark.parametrize(
    "broken", ["zarr.json", "tables/rna/obs/zarr.json", "shapes/scai_annotations/zarr.json"]
)
def test_corrupted_store_metadata_names_the_file(tmp_path, broken, small_store):
    store = shutil.copytree(small_store, tmp_path / "s.zarr")
    target = store / broken
    target.write_text(target.read_text()[: len(target.read_text()) // 2])  # torn write
    with pytest.raises(ReadError) as info:
        io.read(store)
    msg = str(info.value)
    assert f"the metadata file '{broken}' inside the store is corrupted" in msg, msg
    assert "s.zarr" in msg and "Fix:" in msg


def test_folder_with_several_h5ad_lists_them(tmp_path):
    for name in ("b.h5ad", "a.h5ad", "c.h5ad"):
        ad.AnnData(np.ones((2, 2), dtype=np.float32)).write_h5ad(tmp_path / name)
    with pytest.raises(ReadError) as info:
        io.read(tmp_path)
    msg = str(info.value)
    assert "holds 3 .h5ad files (a.h5ad, b.h5ad, c.h5ad)" in msg and "unknown format" not in msg
    # one .h5ad in a folder is simply opened
    (tmp_path / "b.h5ad").unlink()
    (tmp_path / "c.h5ad").unlink()
    assert io.read(tmp_path).tables["rna"].n_obs == 2


def test_obs_columns_like_our_link_keys_survive(tmp_path):
    """An h5ad from another benchmark with Region/REGION/instance_id/library_id columns opens."""
    n = 30
    rng = np.random.default_rng(0)
    obs = pd.DataFrame(
        {
            "Region": pd.Categorical(rng.choice(["cortex", "medulla"], n)),
            "REGION": rng.integers(0, 3, n),
            "instance_id": np.arange(100, 100 + n),
            "library_id": ["lib1"] * n,
        },
        index=[f"cell{i}" for i in range(n)],
    )
    a = ad.AnnData(rng.poisson(3, (n, 5)).astype(np.float32), obs=obs)
    a.obsm["spatial"] = rng.uniform(0, 50, (n, 2))
    f = tmp_path / "other.h5ad"
    a.write_h5ad(f)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        sdata = io.read(f)
    table = sdata.tables["rna"]
    got = table.obs
    assert got["Region_original"].astype(str).tolist() == obs["Region"].astype(str).tolist()
    # Region and REGION also differ only in case from each other: the second gets a suffix
    np.testing.assert_array_equal(got["REGION_original_2"], obs["REGION"])
    np.testing.assert_array_equal(got["instance_id_original"], obs["instance_id"])
    assert got["library_id"].tolist() == ["lib1"] * n
    assert got["region"].unique().tolist() == ["other_cells"]  # our link keys
    np.testing.assert_array_equal(got["instance_id"], np.arange(n))
    notes = [str(w.message) for w in seen if issubclass(w.category, io.ScaiWarning)]
    assert len(notes) == 1 and "obs['Region'] -> obs['Region_original']" in notes[0]
    assert "obs['REGION'] -> obs['REGION_original_2']" in notes[0]
    # and the table is a valid SpatialData table that round-trips through a store
    back = io.read(io.write(sdata, tmp_path / "s.zarr"))
    assert "Region_original" in back.tables["rna"].obs
