"""Bad input: one clear ReadError naming the file and the fix; nothing half-written."""

from __future__ import annotations

import json
import shutil

import anndata as ad
import h5py
import numpy as np
import pytest
import scipy.sparse as sp

from napari_scai import io
from napari_scai.io import ReadError
from tests.conftest import shared_path


def write_10x_h5(path, counts: np.ndarray, barcodes, features: list[tuple[str, str, str]]):
    """Write a minimal 10x v3 feature-barcode HDF5 (features: (id, name, feature_type))."""
    csc = sp.csc_matrix(counts.T)  # genes x cells, stored by cell
    with h5py.File(path, "w") as f:
        m = f.create_group("matrix")
        m["barcodes"] = np.array(barcodes, dtype="S")
        m["data"] = csc.data.astype(np.int32)
        m["indices"] = csc.indices.astype(np.int64)
        m["indptr"] = csc.indptr.astype(np.int64)
        m["shape"] = np.array(csc.shape, dtype=np.int32)
        fg = m.create_group("features")
        fg["id"] = np.array([x[0] for x in features], dtype="S")
        fg["name"] = np.array([x[1] for x in features], dtype="S")
        fg["feature_type"] = np.array([x[2] for x in features], dtype="S")
        fg["genome"] = np.array(["GRCh38"] * len(features), dtype="S")
        fg["_all_tag_keys"] = np.array([b"genome"])


@pytest.fixture
def visium_copy(tmp_path):
    """A writable copy of the tiny Space Ranger folder."""
    dst = tmp_path / "outs"
    shutil.copytree(shared_path("visium", "spaceranger_v1_tiny"), dst)
    for p in dst.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    return dst


def test_missing_path(tmp_path):
    with pytest.raises(ReadError, match="does not exist") as info:
        io.read(tmp_path / "nope.h5ad")
    assert "nope.h5ad" in str(info.value) and "Fix:" in str(info.value)


def test_unknown_format(tmp_path):
    f = tmp_path / "table.xlsx"
    f.write_text("not data")
    with pytest.raises(ReadError, match="unknown format") as info:
        io.read(f)
    assert "table.xlsx" in str(info.value) and ".h5ad" in str(info.value)
    empty = tmp_path / "folder"
    empty.mkdir()
    with pytest.raises(ReadError, match="unknown format"):
        io.read(empty)


def test_corrupt_h5ad(tmp_path):
    f = tmp_path / "broken.h5ad"
    f.write_bytes(b"\x89HDF\r\n garbage")
    with pytest.raises(ReadError, match="not a readable AnnData") as info:
        io.read(f)
    assert "broken.h5ad" in str(info.value)


def test_barcodes_not_matching_positions(visium_copy):
    pos = visium_copy / "spatial" / "tissue_positions_list.csv"
    text = pos.read_text().replace("-1,", "-9,")
    pos.write_text(text)
    with pytest.raises(ReadError, match="none of the 100 matrix barcodes") as info:
        io.read_visium(visium_copy)
    assert "tissue_positions_list.csv" in str(info.value) and "same Space Ranger run" in str(
        info.value
    )


def test_some_barcodes_without_position(visium_copy):
    import scanpy as sc

    pos = visium_copy / "spatial" / "tissue_positions_list.csv"
    barcode = sc.read_10x_h5(visium_copy / "filtered_feature_bc_matrix.h5").obs_names[5]
    lines = [ln for ln in pos.read_text().splitlines() if not ln.startswith(barcode)]
    pos.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        ReadError, match=f"1 of 100 matrix barcodes have no position \\(e.g. {barcode}\\)"
    ):
        io.read_visium(visium_copy)


def test_scalefactors_missing_key(visium_copy):
    sf = visium_copy / "spatial" / "scalefactors_json.json"
    factors = json.loads(sf.read_text())
    del factors["tissue_lowres_scalef"]
    sf.write_text(json.dumps(factors))
    with pytest.raises(ReadError, match="tissue_lowres_scalef") as info:
        io.read_visium(visium_copy)
    assert "scalefactors_json.json" in str(info.value) and "Fix:" in str(info.value)


def test_scalefactors_missing_spot_diameter(visium_copy):
    sf = visium_copy / "spatial" / "scalefactors_json.json"
    factors = json.loads(sf.read_text())
    del factors["spot_diameter_fullres"]
    sf.write_text(json.dumps(factors))
    with pytest.raises(ReadError, match="spot_diameter_fullres"):
        io.read(visium_copy)


def test_visium_without_matrix(visium_copy):
    (visium_copy / "filtered_feature_bc_matrix.h5").unlink()
    with pytest.raises(ReadError, match="no filtered_feature_bc_matrix.h5"):
        io.read(visium_copy)


def test_h5ad_without_coordinates(tmp_path):
    f = tmp_path / "cells.h5ad"
    ad.AnnData(np.ones((5, 3), dtype=np.float32)).write_h5ad(f)
    with pytest.raises(ReadError, match="no spatial coordinates") as info:
        io.read_h5ad(f, require_spatial=True)
    assert "cells.h5ad" in str(info.value) and "obsm['spatial']" in str(info.value)
    with pytest.raises(ReadError, match="obsm\\['coords'\\] not found"):
        io.read_h5ad(f, spatial_key="coords")
    # without the requirement it opens as a non-spatial table
    assert io.read_h5ad(f).tables["rna"].shape == (5, 3)


def test_h5ad_with_nan_coordinates(tmp_path):
    f = tmp_path / "nan.h5ad"
    a = ad.AnnData(np.ones((4, 2), dtype=np.float32))
    a.obsm["spatial"] = np.array([[0, 0], [1, np.nan], [2, 2], [3, 3]], dtype=float)
    a.write_h5ad(f)
    with pytest.raises(ReadError, match="1 observations have NaN"):
        io.read_h5ad(f)


def test_10x_h5_feature_types_split(tmp_path):
    rng = np.random.default_rng(0)
    counts = rng.poisson(2, size=(6, 7))
    feats = [(f"ENSG{i}", f"G{i}", "Gene Expression") for i in range(4)]
    feats += [("CD3", "CD3", "Antibody Capture"), ("CD19", "CD19", "Antibody Capture")]
    feats += [("chr1:100-200", "chr1:100-200", "Peaks")]
    f = tmp_path / "multi.h5"
    write_10x_h5(f, counts, [f"BC{i}-1" for i in range(6)], feats)
    sdata = io.read(f)
    assert {k: v.shape for k, v in sdata.tables.items()} == {
        "rna": (6, 4),
        "protein": (6, 2),
        "atac": (6, 1),
    }
    np.testing.assert_array_equal(sdata.tables["protein"].X.toarray(), counts[:, 4:6])
    assert list(sdata.tables["protein"].var_names) == ["CD3", "CD19"]


def test_visium_citeseq_tables(visium_copy):
    """A Visium folder whose matrix has antibody features gives rna + protein tables on the same spots."""
    import scanpy as sc

    h5 = visium_copy / "filtered_feature_bc_matrix.h5"
    base = sc.read_10x_h5(h5)
    counts = np.hstack([base.X.toarray(), np.arange(200).reshape(100, 2)])
    feats = [(g, g, "Gene Expression") for g in base.var["gene_ids"]] + [
        ("CD4", "CD4", "Antibody Capture"),
        ("CD8", "CD8", "Antibody Capture"),
    ]
    write_10x_h5(h5, counts, list(base.obs_names), feats)
    sdata = io.read_visium(visium_copy)
    assert set(sdata.tables) == {"rna", "protein"}
    assert sdata.tables["protein"].shape == (100, 2)
    np.testing.assert_array_equal(
        sdata.tables["protein"].obs["instance_id"], sdata.tables["rna"].obs["instance_id"]
    )


def test_v2_positions_with_header_and_parquet(visium_copy):
    import pandas as pd

    spatial = visium_copy / "spatial"
    v1 = spatial / "tissue_positions_list.csv"
    df = pd.read_csv(v1, header=None)
    df.columns = [
        "barcode",
        "in_tissue",
        "array_row",
        "array_col",
        "pxl_row_in_fullres",
        "pxl_col_in_fullres",
    ]
    reference = io.read_visium(visium_copy).tables["rna"].obsm["spatial"]
    v1.unlink()
    df.to_csv(spatial / "tissue_positions.csv", index=False)
    np.testing.assert_array_equal(
        io.read_visium(visium_copy).tables["rna"].obsm["spatial"], reference
    )
    (spatial / "tissue_positions.csv").unlink()
    df.to_parquet(spatial / "tissue_positions.parquet")
    np.testing.assert_array_equal(
        io.read_visium(visium_copy).tables["rna"].obsm["spatial"], reference
    )


def test_h5ad_with_scanpy_visium_images(tmp_path):
    """h5ad in scanpy's Visium layout (images + scale factors in uns['spatial']) keeps its H&E."""
    sdata = io.read_visium(shared_path("visium", "dlpfc_151673"))
    rna = sdata.tables["rna"]
    a = ad.AnnData(
        rna.X.copy(), obs=rna.obs[["array_row", "array_col"]].copy(), var=rna.var[[]].copy()
    )
    a.obsm["spatial"] = rna.obsm["spatial"]
    img = np.asarray(sdata.images["dlpfc_151673_lowres_image"]).transpose(1, 2, 0)
    a.uns["spatial"] = {
        "lib1": {
            "images": {"lowres": img / 255.0},
            "scalefactors": rna.uns["spatial"]["dlpfc_151673"]["scalefactors"],
        }
    }
    f = tmp_path / "visium.h5ad"
    a.write_h5ad(f)
    back = io.read_h5ad(f)
    assert "lib1_lowres_image" in back.images
    spots = back.shapes["visium_spots"]
    np.testing.assert_allclose(spots["radius"], 96.40082438014726 / 2)
    np.testing.assert_array_equal(
        np.asarray(back.images["lib1_lowres_image"]).transpose(1, 2, 0), img
    )
    del a.uns["spatial"]["lib1"]["scalefactors"]["tissue_lowres_scalef"]
    a.write_h5ad(f)
    with pytest.raises(ReadError, match="tissue_lowres_scalef"):
        io.read_h5ad(f)
