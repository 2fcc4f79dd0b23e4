"""Guided (annotation-driven) spatial domains: accuracy on unpainted spots, calibrated
confidence, awkward strokes (one class, absent classes, one spot) and the dock's Run again."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree
from sklearn.metrics import adjusted_rand_score, roc_auc_score

from napari_scai.tl._domains import clear_model_cache, spatial_domains
from tests.test_domains import synthetic_section

GUIDED_FAST = dict(epochs=40, n_comps=20, n_top_genes=80, device="cpu")


def paint_discs(a, key="truth", per_class=2, radius=6.0, seed=0, classes=None):
    """Disc strokes centred on random spots of each class, keeping that class's spots only."""
    rng = np.random.default_rng(seed)
    xy = np.asarray(a.obsm["spatial"])
    truth = a.obs[key].astype(str).to_numpy()
    tree = cKDTree(xy)
    painted = np.full(a.n_obs, None, dtype=object)
    for c in classes or sorted(set(truth)):
        for i in rng.choice(np.nonzero(truth == c)[0], per_class, replace=False):
            near = np.asarray(tree.query_ball_point(xy[i], radius))
            near = near[truth[near] == c]
            painted[near] = c
    return painted


def test_guided_labels_every_spot_with_painted_classes_and_calibrated_confidence():
    a = synthetic_section(700, seed=11)
    painted = paint_discs(a, seed=1)
    a.obs["strokes"] = pd.Categorical(painted)
    frac = np.mean(painted != None)  # noqa: E711
    assert 0.03 < frac < 0.2
    spatial_domains(a, annotation_key="strokes", **GUIDED_FAST)
    out = a.obs["scai_domain"]
    assert out.notna().all()
    assert set(out.cat.categories) == set(a.obs["truth"].astype(str))
    unpainted = painted == None  # noqa: E711
    ari = adjusted_rand_score(a.obs["truth"][unpainted], out[unpainted])
    assert ari > 0.8, ari
    conf = a.obs["scai_domain_confidence"].to_numpy()
    right = (out.astype(str) == a.obs["truth"].astype(str)).to_numpy()
    assert ((conf > 0) & (conf <= 1 + 1e-6)).all()
    # calibrated: mean confidence close to accuracy on the unpainted spots
    assert abs(conf[unpainted].mean() - right[unpainted].mean()) < 0.08
    if (~right).sum() >= 5:
        assert roc_auc_score(right, conf) > 0.7
    p = a.uns["scai_domain_params"]
    assert p["mode"] == "guided" and p["n_held_out"] > 0 and p["temperature"] > 0


def test_strokes_on_one_class_only_or_one_spot_are_refused_before_writing():
    a = synthetic_section(300, seed=12)
    one_class = paint_discs(a, classes=["0"])
    a.obs["strokes"] = pd.Categorical(one_class)
    with pytest.raises(ValueError, match=r"only class '0'.*at least two classes"):
        spatial_domains(a, annotation_key="strokes", **GUIDED_FAST)
    single = np.full(a.n_obs, None, dtype=object)
    single[5] = "L1"
    a.obs["one"] = pd.Categorical(single)
    with pytest.raises(ValueError, match=r"1 labelled spots.*two classes"):
        spatial_domains(a, annotation_key="one", **GUIDED_FAST)
    with pytest.raises(KeyError, match=r"'missing' not in obs.*Annotate dock"):
        spatial_domains(a, annotation_key="missing", **GUIDED_FAST)
    assert "scai_domain" not in a.obs


def test_classes_absent_from_the_section_and_a_single_spot_class():
    a = synthetic_section(400, seed=13)
    painted = paint_discs(a, seed=2, classes=["0", "1", "2"])
    painted[np.nonzero(a.obs["truth"].astype(str).to_numpy() == "3")[0][0]] = "3"  # one spot
    # the column also declares classes painted nowhere on this section (e.g. drawn elsewhere)
    a.obs["strokes"] = pd.Categorical(painted, categories=["WM", "0", "1", "2", "3", "L9"])
    spatial_domains(a, annotation_key="strokes", **GUIDED_FAST)
    cats = list(a.obs["scai_domain"].cat.categories)
    assert cats == ["0", "1", "2", "3"]  # unpainted categories dropped, order kept
    assert a.obs["scai_domain"].notna().all()
    assert np.isfinite(a.obs["scai_domain_confidence"]).all()
    t = a.obs["truth"].astype(str)
    painted_classes = t.isin(["0", "1", "2"]).to_numpy()
    agree = (a.obs["scai_domain"].astype(str) == t).to_numpy()[painted_classes]
    assert agree.mean() > 0.8


def _sdata_of(a, sample):
    from napari_scai.io._common import build_spatialdata

    return build_spatialdata(
        sample=sample, tables={"rna": a}, coords=a.obsm["spatial"], radius=1.0,
        shapes_suffix="cells",
    )  # fmt: skip


def test_dock_guided_run_again_after_more_strokes_updates_the_map(make_napari_viewer, qtbot):
    from napari_scai.viewer import add_sdata
    from napari_scai.widgets.domains import DomainsWidget

    a = synthetic_section(500, seed=14)
    sdata = _sdata_of(a, "guided")
    viewer = make_napari_viewer()
    add_sdata(viewer, sdata, color_by="truth")
    w = DomainsWidget(viewer)
    table = w.layer.metadata["adata"]
    first = paint_discs(table, classes=["0", "1"], per_class=1, seed=3)
    table.obs["scai_annotation"] = pd.Categorical(first)  # what the Annotate dock writes
    w.guided.setChecked(True)
    assert w.annotation_combo.currentText() == "scai_annotation"
    w.advanced.setChecked(True)
    w.epochs.setValue(30)
    w.device_combo.setCurrentText("cpu")
    messages = []
    w._relay.progress.connect(lambda i, n, m: messages.append(m))
    params = w.parameters()
    assert params["annotation_key"] == "scai_annotation" and "n_domains" not in params
    w.run_button.click()
    qtbot.waitUntil(lambda: w.run_button.isEnabled(), timeout=120_000)
    assert w.result is not None, w.status.text()
    assert set(table.obs["scai_domain"].cat.categories) == {"0", "1"}
    # which member is training (on a CPU the three train at once and one message names all)
    assert any(m.startswith(("model 2/3", "models 1-3/3")) for m in messages)
    # the user paints the other two classes and presses Run again: the map updates
    more = paint_discs(table, seed=4)
    table.obs["scai_annotation"] = pd.Categorical(np.where(more != None, more, first))  # noqa: E711
    w.run_button.click()
    qtbot.waitUntil(lambda: w.run_button.isEnabled(), timeout=120_000)
    assert set(table.obs["scai_domain"].cat.categories) == {"0", "1", "2", "3"}
    shown = w.layer.features["scai_domain"].astype(str)
    assert shown.nunique() == 4 and list(shown) == list(table.obs["scai_domain"].astype(str))
    assert "annotated classes" in w.status.text()


def _dlpfc_151673():
    import scanpy as sc

    from tests.conftest import shared_path

    folder = shared_path("visium", "dlpfc_151673")
    a = sc.read_10x_h5(folder / "filtered_feature_bc_matrix.h5")
    a.var_names_make_unique()
    pos = pd.read_csv(
        folder / "spatial" / "tissue_positions_list.csv", header=None, index_col=0,
        names=["barcode", "in_tissue", "array_row", "array_col", "pxl_row", "pxl_col"],
    ).loc[a.obs_names]  # fmt: skip
    a.obs["array_row"], a.obs["array_col"] = pos["array_row"].values, pos["array_col"].values
    a.obsm["spatial"] = pos[["pxl_col", "pxl_row"]].to_numpy(dtype=np.float64)
    lab = pd.read_csv(folder / "layer_labels.csv", index_col=0)["layer_manual"]
    a.obs["layer_manual"] = lab.reindex(a.obs_names).astype("category")
    return a


def test_guided_beats_smoothed_pca_logistic_regression_on_dlpfc_strokes():
    """Issue 11 protocol at test scale: two discs of radius 3 spacings per manual layer
    (stroke seed 100, a development seed), ARI on the unpainted labelled spots, against (g):
    smoothed PCA + multinomial logistic regression on the painted spots, same run."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import NearestNeighbors
    from sklearn.preprocessing import StandardScaler

    from napari_scai.preprocess import rna_features
    from napari_scai.tl._contours import estimate_pitch

    a = _dlpfc_151673()
    truth = a.obs["layer_manual"].astype(object).where(a.obs["layer_manual"].notna(), None)
    truth = truth.to_numpy()
    xy = a.obsm["spatial"]
    rng = np.random.default_rng(100)
    tree, r = cKDTree(xy), 3.0 * estimate_pitch(xy)
    painted = np.full(a.n_obs, None, dtype=object)
    for c in a.obs["layer_manual"].cat.categories:
        for i in rng.choice(np.nonzero(truth == c)[0], 2, replace=False):
            near = np.asarray(tree.query_ball_point(xy[i], r))
            painted[near[truth[near] == c]] = c
    is_p = painted != None  # noqa: E711
    score = (~is_p) & (truth != None)  # noqa: E711
    assert 0.04 < is_p.mean() < 0.12
    # (g): PCA 30 of 1000 HVGs, 3 rounds of kNN-7 averaging, logistic regression on the strokes
    X = rna_features(a, n_top_genes=1000, n_comps=30, key_added=None)
    nn = NearestNeighbors(n_neighbors=7).fit(xy).kneighbors(xy, return_distance=False)
    for _ in range(3):
        X = X[nn].mean(1)
    sc_ = StandardScaler().fit(X[is_p])
    clf = LogisticRegression(max_iter=2000).fit(sc_.transform(X[is_p]), painted[is_p].astype(str))
    ari_g = adjusted_rand_score(truth[score].astype(str), clf.predict(sc_.transform(X))[score])
    a.obs["strokes"] = pd.Categorical(painted)
    spatial_domains(
        a, annotation_key="strokes", epochs=60, n_models=1, n_top_genes=1000, n_comps=30,
        device="cpu", seed=100,
    )  # fmt: skip
    pred = a.obs["scai_domain"].astype(str).to_numpy()
    ari = adjusted_rand_score(truth[score].astype(str), pred[score])
    print(f"ARI guided {ari:.3f}, (g) {ari_g:.3f}")
    assert ari > ari_g + 0.05, (ari, ari_g)
    conf = a.obs["scai_domain_confidence"].to_numpy()[score]
    # at these fast settings the confidence still ranks right above wrong calls (0.68 measured)
    assert roc_auc_score(pred[score] == truth[score].astype(str), conf) > 0.62


def test_semi_supervised_mixture_uses_unpainted_spots_to_place_the_boundary():
    """Planted: two Gaussian classes of unequal size; the painted spots sit far out on each
    class's side, so their midpoint (what a classifier on the painted spots alone learns) cuts
    the big class; the mixture on all spots moves the boundary to the gap."""
    from napari_scai.models._guided import calibrated_semi_supervised_mixture

    rng = np.random.default_rng(0)
    n0, n1 = 1500, 300
    Z = np.vstack(
        [rng.normal([0, 0], [1.5, 1.0], (n0, 2)), rng.normal([6, 0], [0.6, 1.0], (n1, 2))]
    )
    y = np.r_[np.zeros(n0, int), np.ones(n1, int)]
    codes = np.full(y.size, -1)
    far0 = np.nonzero((y == 0) & (Z[:, 0] < -2.0))[0][:20]
    far1 = np.nonzero((y == 1) & (Z[:, 0] > 6.3))[0][:20]
    codes[far0], codes[far1] = 0, 1
    midpoint = (Z[far0, 0].mean() + Z[far1, 0].mean()) / 2
    acc_mid = ((Z[:, 0] > midpoint).astype(int) == y).mean()
    fold = np.full(y.size, -1)
    fold[far0], fold[far1] = np.arange(20) % 3, np.arange(20) % 3
    P, info = calibrated_semi_supervised_mixture(Z, codes, 2, fold)
    acc = (P.argmax(1) == y).mean()
    assert acc > 0.98 and acc > acc_mid + 0.04, (acc, acc_mid)  # 0.99 vs 0.93 measured
    assert info["n_held_out"] == 40 and info["temperature"] > 0
    conf = P.max(1)
    assert roc_auc_score(P.argmax(1) == y, conf) > 0.75
    P2, _ = calibrated_semi_supervised_mixture(Z, codes, 2, fold)
    assert np.array_equal(P, P2)  # deterministic
    with pytest.raises(ValueError, match="every class needs a painted spot"):
        calibrated_semi_supervised_mixture(Z, np.where(codes == 1, -1, codes), 2, fold)


def test_guided_run_is_deterministic_for_a_seed():
    a = synthetic_section(300, seed=15)
    a.obs["strokes"] = pd.Categorical(paint_discs(a, seed=5))
    b = a.copy()
    spatial_domains(a, annotation_key="strokes", seed=3, **dict(GUIDED_FAST, epochs=20))
    clear_model_cache()  # train again: the second run must not reuse the first one's models
    spatial_domains(b, annotation_key="strokes", seed=3, **dict(GUIDED_FAST, epochs=20))
    assert list(a.obs["scai_domain"]) == list(b.obs["scai_domain"])
    assert np.array_equal(a.obs["scai_domain_confidence"], b.obs["scai_domain_confidence"])


def test_guided_rerun_after_more_strokes_reuses_the_trained_models(monkeypatch):
    """Painting more strokes and pressing Run again skips the training (the strokes do not
    enter it) and gives what a run from scratch gives; another seed trains again."""
    import napari_scai.models.domains as dm

    calls = []
    real = dm.train_domain_ensemble

    def counting(*args, **kwargs):
        calls.append(kwargs.get("seeds"))
        return real(*args, **kwargs)

    monkeypatch.setattr(dm, "train_domain_ensemble", counting)
    a = synthetic_section(300, seed=16)
    first = paint_discs(a, seed=6)
    a.obs["strokes"] = pd.Categorical(first)
    fast = dict(GUIDED_FAST, epochs=20)
    spatial_domains(a, annotation_key="strokes", seed=4, **fast)
    assert len(calls) == 1
    more = paint_discs(a, seed=7)
    a.obs["strokes"] = pd.Categorical(np.where(first != None, first, more))  # noqa: E711
    msgs = []
    spatial_domains(a, annotation_key="strokes", seed=4, progress=lambda *m: msgs.append(m), **fast)
    assert len(calls) == 1, "the re-run trained again"
    assert any("reusing the trained models" in str(m) for m in msgs)
    cached = a.obs["scai_domain"].to_numpy().copy()
    clear_model_cache()
    spatial_domains(a, annotation_key="strokes", seed=4, **fast)
    assert len(calls) == 2
    assert np.array_equal(cached, a.obs["scai_domain"].to_numpy())
    spatial_domains(a, annotation_key="strokes", seed=5, **fast)
    assert len(calls) == 3  # another seed: other models
