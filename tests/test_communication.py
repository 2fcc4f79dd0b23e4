"""Spatial cell–cell communication: planted simulation, null FDR, invariances, bad input."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.metrics import roc_auc_score

from napari_scai._scale import microns_per_pixel
from napari_scai.models.communication import (
    bh_from_counts,
    bh_qvalues,
    bh_torch,
    communication_scores,
    group_matrices,
    kernel_graph,
    null_design,
)
from napari_scai.simulate import planted_communication
from napari_scai.tl import CommunicationReport, communication, communication_edges
from tests.conftest import shared_path

RANGE_UM = 50.0  # the simulation's interaction range; kernel support 2 h = range
BW = RANGE_UM / 2


def _truth_pairs(a):
    return a.uns["lr_truth"][["ligand", "receptor"]]


def _merge(report, a):
    truth = a.uns["lr_truth"].rename(columns={"kind": "truth"})
    return report.pairs.merge(truth, on=["ligand", "receptor"], validate="1:1")


@pytest.fixture(scope="module")
def planted():
    a = planted_communication(3000, n_planted=5, n_null=25, n_decoy=10, n_filler=20, seed=0)
    rep = communication(
        a, pairs=_truth_pairs(a), groupby="cell_type", bandwidth_um=BW, n_perms=999, local=False
    )
    return a, rep


def test_planted_pairs_rank_on_top_and_decoys_are_not_called(planted):
    a, rep = planted
    df = _merge(rep, a)
    planted_ = (df["truth"] == "planted").to_numpy()
    assert roc_auc_score(planted_, df["statistic"]) >= 0.95
    vs_decoys = df[df["truth"] != "null"]
    assert roc_auc_score(vs_decoys["truth"] == "planted", vs_decoys["statistic"]) >= 0.95
    called = df["fdr"] <= 0.05
    assert called[df["truth"] == "decoy"].mean() <= 0.10
    assert called[df["truth"] == "null"].mean() <= 0.10
    assert called[planted_].mean() >= 0.6  # power: the test is not vacuous
    # sorted by evidence: the planted pairs lead the table
    assert set(df["truth"].iloc[:3]) == {"planted"}
    assert df["pvalue"].is_monotonic_increasing


def test_decoys_are_what_a_non_spatial_test_would_call(planted):
    # The decoy ligand is higher in senders and its receptor higher in receivers, as strongly
    # as the planted pairs': a group-mean test (squidpy ligrec-like) cannot tell them apart.
    a, _ = planted
    truth = a.uns["lr_truth"]
    X = a.X.toarray()
    sender = (a.obs["cell_type"] == "sender").to_numpy()
    col = {g: i for i, g in enumerate(a.var_names)}
    for kind in ("planted", "decoy"):
        for lig, rec in truth[truth["kind"] == kind][["ligand", "receptor"]].to_numpy():
            assert X[sender, col[lig]].mean() > 3 * X[~sender, col[lig]].mean()
            assert X[~sender, col[rec]].mean() > 3 * X[sender, col[rec]].mean()


def test_group_matrix_finds_sender_to_receiver_for_planted_pairs(planted):
    a, rep = planted
    truth = a.uns["lr_truth"]
    for lig, rec in truth[truth["kind"] == "planted"][["ligand", "receptor"]].to_numpy():
        p = rep.group_matrix(f"{lig}^{rec}", value="pvalue")
        assert p.loc["sender", "receiver"] < 1e-3
        assert p.loc["receiver", "sender"] > 0.01  # direction: receivers do not send it
    top = rep.top_pairs("sender", "receiver", n=5)
    assert set(top["interaction"]) <= {
        f"{lg}^{rc}"
        for lg, rc in truth[truth["kind"] == "planted"][["ligand", "receptor"]].to_numpy()
    } | set(top["interaction"][top["fdr"] > 0.05])
    assert (top["fdr"].iloc[:3] <= 0.05).all()


def test_local_scores_peak_within_range_and_decay_with_distance(planted):
    a, rep = planted
    truth = a.uns["lr_truth"]
    dist = a.obs["dist_to_interface_um"].to_numpy()
    recv = a.obsm["scai_communication"]
    # receivers binned by distance from the interface: the planted ligand sits within
    # RANGE_UM on the sender side, so signal must fall off across [0, RANGE_UM) and vanish
    # beyond it (background only)
    edges = [0, RANGE_UM / 2, RANGE_UM, 2 * RANGE_UM, np.inf]
    for lig, rec in truth[truth["kind"] == "planted"][["ligand", "receptor"]].to_numpy():
        score = recv[f"{lig}^{rec}"].to_numpy()
        means = [
            score[(dist >= lo) & (dist < hi)].mean()
            for lo, hi in zip(edges[:-1], edges[1:], strict=True)
        ]
        assert int(np.argmax(means)) == 0, means  # peak within the interaction range
        assert means[0] > 1.5 * means[1] > 1.5 * means[2], means  # decays with distance
        assert means[3] < 0.05 * means[0], means  # nothing planted out of range
        # sender side: sending cells within range of the interface carry the sender activity
        send = a.obsm["scai_communication_sender"][f"{lig}^{rec}"].to_numpy()
        near = (dist < 0) & (dist > -RANGE_UM)
        far = dist < -2 * RANGE_UM
        assert send[near].mean() > 20 * send[far].mean()


def test_null_simulation_realised_fdr_at_most_alpha():
    """Mixed planted + null simulations, repeated; global and local BH at alpha = 0.1.

    Tolerance: the false discovery proportion lies in [0, 1], so under BH its variance is at
    most its mean (<= alpha), and the mean over R runs has standard error <= sqrt(alpha / R);
    we allow alpha + 2 standard errors (a correct method fails this about 2.5 % of the time,
    an anti-conservative one with realised FDR 2 alpha fails it more often than not). Local
    p-values are also checked for calibration over all null entries pooled (thousands per
    run), where the standard error is small.
    """
    alpha, R = 0.1, 6
    fdp_global, fdp_local, null_p = [], [], []
    for rep in range(R):
        a = planted_communication(
            1200, n_planted=3, n_null=12, n_decoy=3, n_filler=15, seed=1000 + rep
        )
        truth = a.uns["lr_truth"]
        r = communication(a, pairs=_truth_pairs(a), bandwidth_um=BW, n_perms=999, seed=rep)
        df = _merge(r, a)
        called = df["fdr"] <= alpha
        false = called & (df["truth"] != "planted")
        fdp_global.append(false.sum() / max(called.sum(), 1))
        lf = a.obsm["scai_communication_fdr"]
        lp = a.obsm["scai_communication_pvalue"]
        has_r = a.obsm["scai_communication_receptor"] > 0
        near = (np.abs(a.obs["dist_to_interface_um"].to_numpy()) < 2 * RANGE_UM)[:, None]
        kinds = truth.set_index(truth["ligand"] + "^" + truth["receptor"])["kind"]
        is_planted = (kinds.reindex(lf.columns) == "planted").to_numpy()[None, :]
        calls = lf.to_numpy() <= alpha
        false_local = calls & ~(is_planted & near)
        fdp_local.append(false_local.sum() / max(calls.sum(), 1))
        nulls = ~is_planted[0]
        null_p.append(lp.to_numpy()[:, nulls][has_r.to_numpy()[:, nulls]])
    bound = alpha + 2 * np.sqrt(alpha / R)
    assert np.mean(fdp_global) <= bound, fdp_global
    assert np.mean(fdp_local) <= bound, fdp_local
    p = np.concatenate(null_p)
    for t in (0.01, 0.05):
        assert (p <= t).mean() <= t + 3 * np.sqrt(t / p.size), (t, (p <= t).mean(), p.size)


def _small(seed=3):
    a = planted_communication(900, n_planted=3, n_null=6, n_decoy=2, n_filler=10, seed=seed)
    a.obs["cell_type"] = a.obs["cell_type"].astype(str).astype("category")
    return a


def _run(a, **kw):
    kw = {"pairs": _truth_pairs(a), "groupby": "cell_type", "n_perms": 199, **kw}
    kw.setdefault("bandwidth_um", BW)
    return communication(a, **kw)


def _same(r1, a1, r2, a2, cell_order=None):
    p1 = r1.pairs.set_index("interaction").sort_index()
    p2 = r2.pairs.set_index("interaction").sort_index()
    np.testing.assert_allclose(p1["statistic"], p2["statistic"], rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(p1["pvalue"], p2["pvalue"])
    np.testing.assert_array_equal(p1["n_local_sig"], p2["n_local_sig"])
    g1 = r1.groups.set_index(["interaction", "sender", "receiver"]).sort_index()
    g2 = r2.groups.set_index(["interaction", "sender", "receiver"]).sort_index()
    np.testing.assert_allclose(g1["pvalue"], g2["pvalue"], rtol=1e-4, atol=1e-8)
    for key in ("scai_communication", "scai_communication_pvalue"):
        m1 = a1.obsm[key].sort_index(axis=1)
        m2 = a2.obsm[key].sort_index(axis=1)
        if cell_order is not None:
            m2 = m2.loc[m1.index]
        np.testing.assert_allclose(m1.to_numpy(), m2.to_numpy(), rtol=1e-4, atol=1e-5)


def test_rotation_translation_rescaling_and_cell_order_leave_results_unchanged():
    base = _small()
    r0 = _run(base)
    # rigid motion
    th = np.deg2rad(37.0)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    moved = _small()
    moved.obsm["spatial"] = base.obsm["spatial"] @ rot.T + np.array([12_000.0, -3_500.0])
    _same(r0, base, _run(moved), moved)
    # coordinates in mm (um_per_unit = 1000) and a joint rescale of units and bandwidth
    mm = _small()
    mm.obsm["spatial"] = base.obsm["spatial"] / 1000.0
    _same(r0, base, _run(mm, um_per_unit=1000.0), mm)
    big = _small()
    big.obsm["spatial"] = base.obsm["spatial"] * 3.7
    _same(r0, base, _run(big, bandwidth_um=BW * 3.7), big)
    # cell order
    perm = np.random.default_rng(5).permutation(base.n_obs)
    shuffled = _small()[perm].copy()
    _same(r0, base, _run(shuffled), shuffled, cell_order=True)
    # and the result does depend on the bandwidth (the comparison can fail)
    other = _small()
    r_bw = _run(other, bandwidth_um=BW * 3)
    assert not np.allclose(
        r0.pairs.set_index("interaction").sort_index()["statistic"],
        r_bw.pairs.set_index("interaction").sort_index()["statistic"],
    )


def test_same_seed_same_results_and_seed_matters():
    a, b, c = _small(), _small(), _small()
    ra, rb, rc = _run(a), _run(b), _run(c, seed=1)
    pd.testing.assert_frame_equal(ra.pairs, rb.pairs)
    assert not np.array_equal(
        ra.pairs.sort_values("interaction")["pvalue"], rc.pairs.sort_values("interaction")["pvalue"]
    )


def test_group_null_moments_match_monte_carlo_permutations():
    rng = np.random.default_rng(0)
    n = 400
    xy = rng.uniform(0, 400, (n, 2)) * [2, 1]
    W = kernel_graph(xy, 20.0)
    design = null_design(xy, 200.0, random_offset=False)
    L = (rng.random((n, 1)) < 0.2) * rng.gamma(2.0, 1.0, (n, 1))
    R = (rng.random((n, 1)) < 0.3) * rng.gamma(2.0, 1.0, (n, 1))
    groups = (xy[:, 0] > 400).astype(np.int64)
    gm = group_matrices(L, R, W, design, groups, 2)
    # brute force M and its permutation distribution
    tiles = design.tiles()
    mask = [groups == g for g in range(2)]
    M = np.array(
        [
            [L[mask[g], 0] @ (W[mask[g]][:, mask[h]] @ R[mask[h], 0]) for h in range(2)]
            for g in range(2)
        ]
    )
    np.testing.assert_allclose(gm["score"][0] * W.sum(), M, rtol=1e-6)
    sims = []
    for _ in range(3000):
        lp = L[:, 0].copy()
        for t in np.unique(tiles):
            idx = np.nonzero(tiles == t)[0]
            lp[idx] = lp[rng.permutation(idx)]
        sims.append(
            [
                [lp[mask[g]] @ (W[mask[g]][:, mask[h]] @ R[mask[h], 0]) for h in range(2)]
                for g in range(2)
            ]
        )
    sims = np.array(sims)
    z_mc = (M - sims.mean(0)) / sims.std(0)
    np.testing.assert_allclose(gm["zscore"][0], z_mc, atol=0.1)


def test_bh_variants_agree():
    rng = np.random.default_rng(1)
    B = 99
    counts = rng.integers(0, B + 1, size=5000)
    counts[:50] = 0
    p = (1.0 + counts) / (B + 1.0)
    q = bh_qvalues(p)
    np.testing.assert_allclose(bh_from_counts(counts, B), q, rtol=1e-6)
    np.testing.assert_allclose(bh_torch(torch.as_tensor(p)).numpy(), q, rtol=1e-9)
    from scipy.stats import false_discovery_control

    np.testing.assert_allclose(q, false_discovery_control(p), rtol=1e-9)


def test_batched_permutations_do_not_depend_on_chunking():
    a = _small()
    from napari_scai.lr import complex_expression, match_pairs
    from napari_scai.tl._communication import _expression

    X, _ = _expression(a, None, "x")
    m = match_pairs(a, _truth_pairs(a), X=X)
    L, R = complex_expression(X, m)
    W = kernel_graph(a.obsm["spatial"], BW)
    design = null_design(a.obsm["spatial"], 20 * BW)
    kw = {"n_perms": 60, "local_null": "permutation"}
    big = communication_scores(L, R, W, design, **kw)
    small = communication_scores(L, R, W, design, **kw, max_block_floats=a.n_obs * 3)
    np.testing.assert_array_equal(big.pvalue, small.pvalue)
    np.testing.assert_array_equal(big.local_count, small.local_count)
    # the same null through the other code paths: cached inverse permutations over the
    # ligand-expressing cells, and chunks over all cells without the cache
    glob = communication_scores(L, R, W, design, n_perms=60, local=False)
    np.testing.assert_array_equal(big.pvalue, glob.pvalue)
    nocache = communication_scores(L, R, W, design, n_perms=60, local=False, max_cache_bytes=0)
    np.testing.assert_array_equal(big.pvalue, nocache.pvalue)


def test_local_null_moments_are_exact():
    from napari_scai.models.communication import _perm_index, local_null_moments

    rng = np.random.default_rng(2)
    n = 500
    xy = rng.uniform(0, 500, (n, 2)) * [2, 1]
    W = kernel_graph(xy, 20.0)
    L = ((rng.random((n, 2)) < 0.2) * rng.gamma(2.0, 1.0, (n, 2))).astype(np.float32)
    for random_offset in (False, True):
        design = null_design(xy, 200.0, random_offset=random_offset)
        mean, var = local_null_moments(torch.as_tensor(L), W, design, "cpu")
        proj = torch.as_tensor(design.proj[design.order])
        order = torch.as_tensor(design.order)
        sims = np.stack(
            [
                W @ L[_perm_index(b, 0, proj, order, 200.0, random_offset).numpy()]
                for b in range(4000)
            ]
        )
        # exact moments vs 4,000 Monte Carlo permutations (one tiling, or the mixture over
        # the 16 grid offsets the permutations draw from)
        np.testing.assert_allclose(mean.numpy(), sims.mean(0), atol=0.05, rtol=0.05)
        # a variance estimated from 4,000 draws of a sparse, heavy-tailed sum has a relative
        # standard error of about sqrt((kurtosis - 1) / 4000) ~ 5 %: allow 5 SE per entry,
        # and 1 % on average (a wrong formula is off everywhere, not in a few entries)
        v, v_mc = var.numpy(), sims.var(0)
        np.testing.assert_allclose(v, v_mc, atol=0.05, rtol=0.25)
        ok = v_mc > 0.05
        assert abs(np.mean(v[ok] / v_mc[ok]) - 1) < 0.01


def _state(a):
    return (set(a.uns), set(a.obsm), set(a.obsp), a.obs.shape)


def test_bad_input_clear_errors_and_nothing_written():
    a = _small()
    before = _state(a)
    with pytest.raises(ValueError, match="Fix: use gene symbols"):
        communication(a, pairs=pd.DataFrame({"ligand": ["TGFB1"], "receptor": ["TGFBR2"]}))
    with pytest.raises(KeyError, match="Fix: rename"):
        communication(a, pairs=pd.DataFrame({"from": ["LIGP0"], "to": ["RECP0"]}))
    with pytest.raises(KeyError, match=r"groupby='nope'.*Fix"):
        communication(a, pairs=_truth_pairs(a), groupby="nope")
    no_xy = _small()
    del no_xy.obsm["spatial"]
    with pytest.raises(KeyError, match=r"no coordinates.*Fix"):
        communication(no_xy, pairs=_truth_pairs(a))
    with pytest.raises(ValueError, match="bandwidth_um must be > 0"):
        communication(a, pairs=_truth_pairs(a), bandwidth_um=-1)
    neg = _small()
    neg.X = neg.X.toarray() - 1
    with pytest.raises(ValueError, match="non-negative"):
        communication(neg, pairs=_truth_pairs(a))
    assert _state(a) == before


def test_spatialdata_result_table_zarr_round_trip(tmp_path, dlpfc_sdata):
    import spatialdata as sd

    from napari_scai import io

    sdata = dlpfc_sdata
    before = set(sdata.tables)
    with pytest.raises(KeyError, match="groupby"):
        communication(sdata, groupby="layer_manual_typo")
    assert set(sdata.tables) == before
    sub = sdata.tables["rna"]
    rep = communication(sdata, groupby="layer_manual", pairs="cellchatdb", n_perms=49, local=False)
    assert isinstance(rep, CommunicationReport)
    assert rep.params["bandwidth_um"] == 100.0 and rep.params["include_self"]
    # the same µm as the viewer's scale bar: the 100 µm lattice (0.7261 µm/px), not 55 µm
    # per spot_diameter_fullres (0.571 µm/px)
    assert rep.params["um_per_unit"] == pytest.approx(microns_per_pixel(sdata), rel=1e-9)
    assert rep.params["um_per_unit"] == pytest.approx(0.7261, rel=0.01)
    assert _spot_px(sub) * rep.params["um_per_unit"] > 65.0
    assert 5.5 < rep.params["mean_degree"] < 19.5  # self + up to two hex rings
    res = sdata.tables["scai_communication"]
    assert res.shape == (sub.n_obs, len(rep.pairs))
    attrs = res.uns["spatialdata_attrs"]
    assert attrs["region"] == sub.uns["spatialdata_attrs"]["region"]
    assert list(res.var_names) == list(rep.pairs["interaction"])
    assert set(rep.params["group_names"]) == {"L1", "L2", "L3", "L4", "L5", "L6", "WM"}
    assert len(rep.groups) == len(rep.pairs) * 49
    assert rep.pairs["fdr"].between(0, 1).all()
    e = communication_edges(sdata, interaction=rep.pairs["interaction"].iloc[0], top=20)
    assert (
        len(e) == 20
        and (e["sender"] != e["receiver"]).all()
        and e["signal"].is_monotonic_decreasing
    )
    path = tmp_path / "ccc.zarr"
    io.write(sdata, path)
    back = sd.read_zarr(path)
    r2 = CommunicationReport.from_uns(back.tables["scai_communication"].uns["scai_communication"])
    pd.testing.assert_frame_equal(
        r2.pairs[["interaction", "pvalue", "fdr"]], rep.pairs[["interaction", "pvalue", "fdr"]]
    )
    assert r2.group_matrix().shape == (7, 7)


def _spot_px(adata):
    return next(iter(adata.uns["spatial"].values()))["scalefactors"]["spot_diameter_fullres"]


def test_anndata_h5ad_round_trip_and_copy(tmp_path):
    a = _small()
    out = communication(a, pairs=_truth_pairs(a), n_perms=19, copy=True)
    assert "scai_communication" not in a.uns and "scai_communication" in out.uns
    path = tmp_path / "x.h5ad"
    out.write_h5ad(path)
    back = ad.read_h5ad(path)
    rep = CommunicationReport.from_uns(back.uns["scai_communication"])
    assert len(rep.pairs) == 11 and rep.groups.empty
    assert sp.issparse(back.obsp["scai_communication_kernel"])
    assert back.obsm["scai_communication"].shape == (a.n_obs, 11)


def test_cli_run_communication(tmp_path, capsys):
    import spatialdata as sd

    from napari_scai.cli import main

    merfish = str(shared_path("imaging", "merfish_hypothalamus_moffitt2018.h5ad"))
    rc = main(["run", merfish, "--communication", "--groupby", "nope"])
    assert rc == 2 and "--groupby 'nope'" in capsys.readouterr().err
    out = tmp_path / "o.zarr"
    argv = ["run", merfish, "--communication", "--groupby", "Cell_class", "--n-perms", "19"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "CommunicationReport" in printed and "Pnoc^Oprl1" in printed
    back = sd.read_zarr(out)
    assert back.tables["scai_communication"].n_obs == 11162
    # genes that no LR table has: a clear error, nothing written
    h5 = tmp_path / "sim.h5ad"
    _small().write_h5ad(h5)
    rc = main(["run", str(h5), "--communication", "--out", str(tmp_path / "x.zarr")])
    assert rc == 2 and "Fix" in capsys.readouterr().err and not (tmp_path / "x.zarr").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    a, b = _small(), _small()
    rc = _run(a, device="cpu")
    rg = _run(b, device="cuda")
    p1 = rc.pairs.set_index("interaction").sort_index()
    p2 = rg.pairs.set_index("interaction").sort_index()
    np.testing.assert_allclose(p1["statistic"], p2["statistic"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(p1["pvalue"], p2["pvalue"], atol=0.02)


def test_batched_permutation_source_draws_the_reference_permutations():
    from napari_scai.models.communication import _perm_index, _PermSource

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1000, (700, 2)) * [2, 1]
    for random_offset in (True, False):
        d = null_design(xy, 150.0, random_offset=random_offset)
        batch = _PermSource(d, 3, torch.device("cpu")).indices(0, 20)
        proj, order = torch.as_tensor(d.proj[d.order]), torch.as_tensor(d.order)
        ref = torch.stack([_perm_index(k, 3, proj, order, 150.0, random_offset) for k in range(20)])
        assert torch.equal(batch, ref)
        tiles = [d.tiles((0, 0))] if not random_offset else None
        if tiles:  # every permutation moves values only within a tile
            assert all((tiles[0][ref[k].numpy()] == tiles[0]).all() for k in range(20))
