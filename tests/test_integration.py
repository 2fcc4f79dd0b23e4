"""Multimodal integration (issue 10): model on planted simulations, API, CLI, bad input."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from napari_scai.simulate import simulate_paired_modalities, simulate_spatial_multimodal
from napari_scai.tl import integrate
from napari_scai.tl._integrate import IntegrationInputError
from tests.conftest import shared_path

FAST = {"n_steps": 500, "n_top_genes": 1000}


def _kmeans(Z: np.ndarray, k: int) -> np.ndarray:
    return KMeans(k, n_init=10, random_state=0).fit_predict(Z)


@pytest.fixture(scope="module")
def planted():
    d = simulate_paired_modalities(n_cells=1200, seed=3)
    integrate(d, n_clusters=6, device="cpu", seed=0, **FAST)
    return d


def test_planted_joint_clusters_beat_each_modality_and_plain_concatenation(planted):
    from napari_scai.preprocess import prepare_modality

    rna, prot = planted["rna"], planted["protein"]
    y = rna.obs["cell_type"].to_numpy()
    joint = adjusted_rand_score(y, rna.obs["scai_joint_cluster"])
    Zr = prepare_modality(rna, name="rna", n_top_genes=1000).features
    Zp = prepare_modality(prot, name="protein").features
    ari_rna = adjusted_rand_score(y, _kmeans(Zr, 6))
    ari_prot = adjusted_rand_score(y, _kmeans(Zp, 6))
    ari_concat = adjusted_rand_score(y, _kmeans(np.hstack([Zr, Zp]), 6))
    assert joint >= 0.95, joint
    assert ari_rna <= 0.65 and ari_prot <= 0.65, (ari_rna, ari_prot)
    assert ari_concat <= joint - 0.2, (ari_concat, joint)


def test_planted_weights_follow_the_informative_modality(planted):
    obs = planted["rna"].obs
    w = obs["scai_weight_rna"].to_numpy()
    assert np.allclose(w + obs["scai_weight_protein"].to_numpy(), 1.0, atol=1e-5)
    by_rna = w[obs["informative_modality"] == "rna"].mean()
    by_prot = w[obs["informative_modality"] == "protein"].mean()
    # cells that only RNA separates lean on RNA; the others lean on protein
    assert by_rna >= 0.7, by_rna
    assert by_prot <= 0.5, by_prot
    assert planted["rna"].obsm["X_scai_joint"].shape[0] == 1200
    assert "scai_weight_rna" not in planted["protein"].obs  # results go to the first table


def test_same_seed_same_result():
    a = simulate_paired_modalities(n_cells=300, seed=5)
    b = simulate_paired_modalities(n_cells=300, seed=5)
    for d in (a, b):
        integrate(d, n_clusters=4, device="cpu", seed=1, n_steps=60, n_top_genes=300)
    assert np.array_equal(a["rna"].obsm["X_scai_joint"], b["rna"].obsm["X_scai_joint"])
    assert (a["rna"].obs["scai_joint_cluster"] == b["rna"].obs["scai_joint_cluster"]).all()


def test_spatial_graph_recovers_combined_domains():
    d = simulate_spatial_multimodal(n_side=30, seed=2)
    y = d["rna"].obs["domain"].to_numpy()
    without = integrate(d, n_clusters=4, device="cpu", copy=True, n_steps=300, n_top_genes=500)
    integrate(d, spatial=True, n_clusters=4, device="cpu", n_steps=300, n_top_genes=500)
    ari_sp = adjusted_rand_score(y, d["rna"].obs["scai_joint_cluster"])
    ari_no = adjusted_rand_score(y, without["rna"].obs["scai_joint_cluster"])
    assert ari_sp >= 0.9, ari_sp
    assert ari_sp > ari_no, (ari_sp, ari_no)
    assert d["rna"].uns["scai_joint_params"]["spatial"] is True


def test_eccite_through_api_and_cli(tmp_path):
    from napari_scai import io
    from napari_scai.cli import main

    path = shared_path("citeseq", "eccite_pbmc_control_citefuse_500cells.h5ad")
    sdata = io.read(path)
    integrate(sdata, tables=("rna", "protein"), n_clusters=6, device="cpu", n_steps=100)
    rna = sdata.tables["rna"]
    w = rna.obs[["scai_weight_rna", "scai_weight_protein"]].to_numpy()
    assert np.isfinite(w).all() and np.allclose(w.sum(1), 1.0, atol=1e-5)
    assert rna.obs["scai_joint_cluster"].nunique() == 6
    assert len(rna.uns["scai_joint_cluster_colors"]) == 6
    # isotype controls are recognised and left out of the protein features
    assert rna.uns["scai_joint_params"]["kinds"] == {"rna": "rna", "protein": "protein"}

    out = tmp_path / "eccite.zarr"
    rc = main(
        ["run", str(path), "--integrate", "rna,protein", "--integrate-clusters", "5",
         "--device", "cpu", "--out", str(out)]
    )  # fmt: skip
    assert rc == 0
    back = io.read(out).tables["rna"]
    assert {"scai_weight_rna", "scai_weight_protein", "scai_joint_cluster"} <= set(back.obs)
    assert back.obsm["X_scai_joint"].shape[0] == 500


def _atac_tables():
    peaks = ad.read_h5ad(shared_path("atac", "signac_atac_small_peaks.h5ad"))
    genes = ad.read_h5ad(shared_path("atac", "signac_atac_small_RNA.h5ad"))
    return {"atac": peaks, "rna": genes}


def test_scatac_through_api_and_cli(tmp_path):
    from spatialdata import SpatialData

    from napari_scai import io
    from napari_scai.cli import main

    d = _atac_tables()
    integrate(d, tables=("atac", "rna"), n_clusters=3, device="cpu", n_steps=100, n_top_genes=300)
    obs = d["atac"].obs
    assert d["atac"].uns["scai_joint_params"]["likelihoods"]["atac"] == "bernoulli"
    assert np.allclose(obs["scai_weight_atac"] + obs["scai_weight_rna"], 1.0, atol=1e-5)
    Z = d["atac"].obsm["X_scai_joint"]
    assert Z.shape == (100, 32) and np.isfinite(Z).all() and (Z.std(0) > 0).all()
    assert obs["scai_joint_cluster"].nunique() == 3

    store = tmp_path / "atac.zarr"
    io.write(SpatialData(tables=_atac_tables()), store)
    rc = main(["run", str(store), "--integrate", "atac,rna", "--device", "cpu", "--out",
               str(tmp_path / "out.zarr")])  # fmt: skip
    assert rc == 0
    back = io.read(tmp_path / "out.zarr").tables["atac"]
    assert {"scai_weight_atac", "scai_weight_rna"} <= set(back.obs)


# ---------------------------------------------------------------- bad input (nothing written)
def _small():
    return simulate_paired_modalities(n_cells=120, n_genes=200, seed=0)


def _untouched(d):
    return all(
        "X_scai_joint" not in a.obsm and not any(c.startswith("scai_") for c in a.obs)
        for a in d.values()
    )


def test_mismatched_cells_are_named():
    d = _small()
    d["protein"] = d["protein"][3:].copy()
    with pytest.raises(IntegrationInputError) as err:
        integrate(d, device="cpu")
    msg = str(err.value)
    assert "3 cell(s) of 'rna' are not in 'protein'" in msg and "cell0" in msg
    assert "Fix" in msg
    assert _untouched(d)


def test_reordered_cells_are_aligned():
    d = _small()
    order = np.random.default_rng(0).permutation(120)
    d["protein"] = d["protein"][order].copy()
    integrate(d, device="cpu", n_steps=20, n_top_genes=100)
    assert d["rna"].obsm["X_scai_joint"].shape[0] == 120


def test_all_zero_modality_is_refused():
    d = _small()
    d["protein"].X = np.zeros_like(d["protein"].X)
    with pytest.raises(IntegrationInputError, match="all zeros.*Fix"):
        integrate(d, device="cpu")
    d["rna"].X = sp.csr_matrix(d["rna"].shape, dtype=np.float32)
    with pytest.raises(IntegrationInputError, match="'rna'"):
        integrate(d, device="cpu")
    assert _untouched(d)


def test_unknown_batch_key_is_refused():
    d = _small()
    with pytest.raises(KeyError, match="donor.*Fix"):
        integrate(d, batch_key="donor", device="cpu")
    assert _untouched(d)


def test_cli_refuses_unknown_table_and_batch_key(tmp_path, capsys):
    from napari_scai.cli import main

    path = shared_path("citeseq", "eccite_pbmc_control_citefuse_500cells.h5ad")
    assert main(["run", str(path), "--integrate", "rna,adt"]) == 2
    assert "adt" in capsys.readouterr().err
    assert main(["run", str(path), "--integrate", "rna,protein", "--batch-key", "donor"]) == 2
    assert "donor" in capsys.readouterr().err
