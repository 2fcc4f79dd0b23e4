"""Every dataset in ../shared/data opens through the public readers, with the right layout."""

from __future__ import annotations

import numpy as np
import pytest
from spatialdata.transformations import get_transformation

from napari_scai import io
from tests.conftest import shared_path

VISIUM = ["dlpfc_151673", "dlpfc_151674", "spaceranger_v1_tiny"]
VISIUM_SHAPE = {
    "dlpfc_151673": (3639, 5000),
    "dlpfc_151674": (3673, 5000),
    "spaceranger_v1_tiny": (100, 100),
}

H5AD = {
    # path: (expected tables with shapes, has coordinates)
    "imaging/starmap_v1_by3_wang2018.h5ad": ({"rna": (1549, 1020)}, True),
    "imaging/merfish_hypothalamus_moffitt2018.h5ad": ({"rna": (11162, 161)}, True),
    "imaging/cycif_exemplar/cycif_exemplar001_11k.h5ad": ({"protein": (11201, 9)}, True),
    "imaging/cycif_exemplar/cycif_3k_33markers.h5ad": ({"protein": (3029, 33)}, True),
    "citeseq/eccite_pbmc_control_citefuse_500cells.h5ad": (
        {"rna": (500, 19521), "protein": (500, 49), "hto": (500, 4)},
        False,
    ),
    "citeseq/pbmc10k_protein_v3_adt_tagtango.h5ad": ({"protein": (7472, 17)}, False),
    "citeseq/adtnorm_13studies_9adt.h5ad": ({"protein": (422682, 9)}, False),
    "atac/signac_atac_small_peaks.h5ad": ({"atac": (100, 323)}, False),
    "atac/signac_atac_small_bins.h5ad": ({"atac": (100, 500)}, False),
    "atac/signac_atac_small_RNA.h5ad": ({"rna": (100, 500)}, False),
}


def image_extent_fullres(sdata, name):
    """(x_max, y_max) of an image in the global (full-res pixel) coordinate system."""
    image = sdata.images[name]
    matrix = get_transformation(image, "global").to_affine_matrix(
        input_axes=("x", "y"), output_axes=("x", "y")
    )
    corner = matrix @ np.array([image.sizes["x"], image.sizes["y"], 1.0])
    origin = matrix @ np.array([0.0, 0.0, 1.0])
    return origin[:2], corner[:2]


@pytest.mark.parametrize("name", VISIUM)
def test_visium_folders_open(name):
    path = shared_path("visium", name)
    sdata = io.read(path)
    assert list(sdata.tables) == ["rna"]
    rna = sdata.tables["rna"]
    assert rna.shape == VISIUM_SHAPE[name]
    spots = sdata.shapes[f"{name}_spots"]
    assert len(spots) == rna.n_obs
    factors = rna.uns["spatial"][name]["scalefactors"]
    np.testing.assert_allclose(spots["radius"], factors["spot_diameter_fullres"] / 2)
    # table rows link to spots through region / instance_id
    assert (rna.obs["region"] == f"{name}_spots").all()
    np.testing.assert_array_equal(np.sort(rna.obs["instance_id"]), np.sort(spots.index))
    np.testing.assert_allclose(rna.obsm["spatial"][:, 0], spots.geometry.x.to_numpy())
    # lowres is always there; hires only where Space Ranger wrote one
    assert f"{name}_lowres_image" in sdata.images
    assert (f"{name}_hires_image" in sdata.images) == (name == "spaceranger_v1_tiny")
    # every spot centre falls inside every image once transformed to full-res pixels
    xy = np.column_stack([spots.geometry.x, spots.geometry.y])
    for image in sdata.images:
        lo, hi = image_extent_fullres(sdata, image)
        assert (xy >= lo).all() and (xy <= hi).all(), image


def test_visium_positions_match_csv():
    """Spot (x, y) = (pxl_col, pxl_row) of the positions file, barcode by barcode."""
    import pandas as pd

    path = shared_path("visium", "dlpfc_151673")
    sdata = io.read_visium(path)
    rna = sdata.tables["rna"]
    pos = pd.read_csv(path / "spatial" / "tissue_positions_list.csv", header=None, index_col=0)
    pos = pos.loc[rna.obs_names]
    np.testing.assert_array_equal(rna.obsm["spatial"][:, 0], pos[5].to_numpy())
    np.testing.assert_array_equal(rna.obsm["spatial"][:, 1], pos[4].to_numpy())
    np.testing.assert_array_equal(rna.obs["array_row"], pos[2].to_numpy())
    assert rna.X.sum() > 0 and float(rna.X.max()) == int(rna.X.max())  # raw integer counts


@pytest.mark.parametrize("rel", sorted(H5AD))
def test_h5ad_files_open(rel):
    expected, spatial = H5AD[rel]
    sdata = io.read(shared_path(*rel.split("/")))
    assert {k: v.shape for k, v in sdata.tables.items()} == expected
    if spatial:
        (shapes_name,) = sdata.shapes
        shapes = sdata.shapes[shapes_name]
        first = next(iter(sdata.tables.values()))
        assert len(shapes) == first.n_obs
        assert (shapes["radius"] > 0).all()
        np.testing.assert_allclose(first.obsm["spatial"][:, 1], shapes.geometry.y.to_numpy())
    else:
        assert not sdata.shapes


def test_citeseq_protein_names_and_counts():
    path = shared_path("citeseq", "eccite_pbmc_control_citefuse_500cells.h5ad")
    import anndata as ad

    raw = ad.read_h5ad(path)
    sdata = io.read_h5ad(path)
    protein = sdata.tables["protein"]
    assert list(protein.var_names) == list(raw.obsm["protein_expression"].columns)
    np.testing.assert_allclose(protein.X, raw.obsm["protein_expression"].to_numpy())
    assert list(protein.obs_names) == list(sdata.tables["rna"].obs_names)


def test_cycif_coordinates_from_obs_columns():
    path = shared_path("imaging", "cycif_exemplar", "cycif_exemplar001_11k.h5ad")
    import anndata as ad

    raw = ad.read_h5ad(path)
    sdata = io.read_h5ad(path)
    np.testing.assert_allclose(
        sdata.tables["protein"].obsm["spatial"][:, 0], raw.obs["X_centroid"].to_numpy()
    )


def test_zarr_round_trip(tmp_path, dlpfc_sdata):
    out = io.write(dlpfc_sdata, tmp_path / "dlpfc.zarr")
    back = io.read(out)
    assert set(back.images) == set(dlpfc_sdata.images)
    assert set(back.shapes) == set(dlpfc_sdata.shapes)
    a, b = dlpfc_sdata.tables["rna"], back.tables["rna"]
    assert (a.obs_names == b.obs_names).all()
    assert (a.X != b.X).nnz == 0
    assert a.obs["layer_manual"].equals(b.obs["layer_manual"])
    assert list(b.uns["layer_manual_colors"]) == list(a.uns["layer_manual_colors"])
    np.testing.assert_array_equal(
        np.asarray(back.images["dlpfc_151673_lowres_image"]),
        np.asarray(dlpfc_sdata.images["dlpfc_151673_lowres_image"]),
    )


def test_write_refuses_to_clobber(tmp_path, dlpfc_sdata):
    io.write(dlpfc_sdata, tmp_path / "a.zarr")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        io.write(dlpfc_sdata, tmp_path / "a.zarr")
