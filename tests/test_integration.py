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

FAST = {"n_top_genes": 1000}  # the default 400 training steps


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
    assert by_rna >= 0.8, by_rna
    assert by_prot <= 0.4, by_prot
    # and per cell: the RNA weight ranks the cells RNA informs above the others
    # (dev seeds 3, 100, 101 at 1,200 cells: AUROC 0.97-0.98)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(obs["informative_modality"] == "rna", w) >= 0.9
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


# ---------------------------------------------------------------- batches (issue 10, integ10)
def test_batch_removed_from_joint_space_keeps_planted_types():
    """Three batches with strong per-feature effects in both modalities: uncorrected, the
    clusters follow the batches; with ``batch_key`` they follow the planted types again and
    the batches mix (iLISI, batch ASW)."""
    from napari_scai.metrics import batch_asw, ilisi

    d = simulate_paired_modalities(n_cells=900, n_batches=3, batch_scale=0.5, seed=5)
    y = d["rna"].obs["cell_type"].to_numpy()
    b = d["rna"].obs["batch"].astype(str).to_numpy()
    kw = {"n_clusters": 6, "device": "cpu", "seed": 0, "n_steps": 300, "n_top_genes": 800}
    raw = integrate(d, copy=True, **kw)["rna"]
    integrate(d, batch_key="batch", **kw)
    cor = d["rna"]
    ari_raw = adjusted_rand_score(y, raw.obs["scai_joint_cluster"])
    ari_cor = adjusted_rand_score(y, cor.obs["scai_joint_cluster"])
    assert ari_raw < 0.5, ari_raw  # the planted batch effect is real
    assert ari_cor >= 0.9, ari_cor
    Zr, Zc = raw.obsm["X_scai_joint"], cor.obsm["X_scai_joint"]
    assert ilisi(Zc, b, n_sample=None) > ilisi(Zr, b, n_sample=None) + 0.4
    assert batch_asw(Zc, b, y, n_sample=None) >= 0.9
    assert cor.uns["scai_joint_params"]["batch_key"] == "batch"


def test_harmonize_removes_shifts_keeps_groups_and_is_deterministic():
    from napari_scai.metrics import ilisi
    from napari_scai.models.integration import harmonize

    rng = np.random.default_rng(0)
    n = 3000
    group = rng.integers(0, 3, n)
    batch = rng.integers(0, 4, n)
    centres = rng.normal(0, 4, (3, 6))
    shifts = rng.normal(0, 2, (4, 6))
    Z = (centres[group] + shifts[batch] + rng.normal(0, 0.5, (n, 6))).astype(np.float32)
    H = harmonize(Z, batch, seed=0)
    np.testing.assert_array_equal(H, harmonize(Z, batch, seed=0))
    assert ilisi(H, batch, n_sample=None) > ilisi(Z, batch, n_sample=None) + 0.3
    assert adjusted_rand_score(group, _kmeans(H, 3)) >= 0.95
    # a single batch is returned unchanged
    np.testing.assert_array_equal(harmonize(Z, np.zeros(n, int)), Z)


def test_adtnorm_subsample_protein_only_at_least_harmonypy():
    """Protein only, 13 studies, on a seeded 12,000-cell subsample of ADTnorm (not the
    benchmark's whole dataset): label agreement and batch mixing at least harmonypy's on
    CLR + PCA 8 (with a 0.01 margin for k-means noise)."""
    import harmonypy
    import pandas as pd
    from sklearn.metrics import normalized_mutual_info_score

    from napari_scai.metrics import ilisi
    from napari_scai.preprocess import pca, prepare_modality

    a = ad.read_h5ad(shared_path("citeseq", "adtnorm_13studies_9adt.h5ad"))
    a = a[np.random.default_rng(7).permutation(a.n_obs)[:12000]].copy()
    lab = a.obs["cell_type_l1"].astype(str).to_numpy()
    keep = lab != "undefined"
    batch = a.obs["study_name"].astype(str).to_numpy()
    X = pca(prepare_modality(a, kind="protein", name="protein").features, 8)
    ho = harmonypy.run_harmony(X, pd.DataFrame({"b": batch}), "b", random_state=0, verbose=False)
    H = np.asarray(ho.Z_corr)
    H = H.T if H.shape[0] != X.shape[0] else H
    ref = _kmeans(H, 6)
    integrate({"protein": a}, tables="protein", batch_key="study_name", n_clusters=6, seed=0)
    ours = a.obs["scai_joint_cluster"].to_numpy()
    Z = a.obsm["X_scai_joint"]
    assert (
        adjusted_rand_score(lab[keep], ours[keep])
        >= adjusted_rand_score(lab[keep], ref[keep]) - 0.01
    )
    assert (
        normalized_mutual_info_score(lab[keep], ours[keep])
        >= normalized_mutual_info_score(lab[keep], ref[keep]) - 0.01
    )
    assert ilisi(Z, batch, n_sample=None) >= ilisi(H, batch, n_sample=None) - 0.01
