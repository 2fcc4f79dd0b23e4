"""Torch Gaussian mixture vs sklearn, BIC model selection, graph refinement."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from napari_scai.graph import build_knn_graph
from napari_scai.models.cluster import GaussianMixture, kmeans, refine_labels, select_n_components


@pytest.fixture(scope="module")
def blobs():
    return make_blobs(n_samples=1500, n_features=8, centers=5, cluster_std=1.0, random_state=0)


@pytest.mark.parametrize("cov", ["tied", "full", "diag"])
def test_gmm_agrees_with_sklearn(blobs, cov):
    from sklearn.mixture import GaussianMixture as SkGMM

    X, y = blobs
    ours = GaussianMixture(5, covariance_type=cov, seed=0, device="cpu").fit(X)
    ref = SkGMM(5, covariance_type=cov, random_state=0).fit(X)
    lab = ours.predict(X)
    assert adjusted_rand_score(y, lab) > 0.99
    assert adjusted_rand_score(ref.predict(X), lab) > 0.99
    assert ours.score(X) == pytest.approx(ref.score(X), abs=1e-3)
    assert ours.bic(X) == pytest.approx(ref.bic(X), rel=1e-4)
    P = ours.predict_proba(X)
    assert P.shape == (1500, 5) and np.allclose(P.sum(1), 1.0)
    assert np.array_equal(P.argmax(1), lab)


def test_gmm_deterministic_and_seed_dependent_init(blobs):
    X, _ = blobs
    a = GaussianMixture(5, seed=3, device="cpu").fit(X)
    b = GaussianMixture(5, seed=3, device="cpu").fit(X)
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))

    # The initialisation itself: one restart, one EM step, on structureless data where
    # k-means++ + Lloyd has many local optima, so the start shows through.
    U = np.random.default_rng(0).random((1500, 2))

    def start(seed: int) -> np.ndarray:
        m = GaussianMixture(5, seed=seed, n_init=1, max_iter=1, device="cpu").fit(U).means_
        return m[np.lexsort(m.T[::-1])]  # component order does not matter

    inits = {s: start(s) for s in (3, 4, 5)}
    assert np.array_equal(start(3), inits[3])  # same seed, same start
    diffs = [np.abs(inits[3] - inits[s]).max() for s in (4, 5)]
    assert min(diffs) > 1e-3, diffs  # other seeds start elsewhere


def test_bic_selects_true_k(blobs):
    X, _ = blobs
    k, bics, model = select_n_components(X, [3, 4, 5, 6, 7], seed=0, device="cpu")
    assert k == 5 and set(bics) == {3, 4, 5, 6, 7} and model.n_components == 5


def test_kmeans_recovers_blobs(blobs):
    import torch

    X, y = blobs
    g = torch.Generator().manual_seed(0)
    _, lab, inertia = kmeans(torch.as_tensor(X, dtype=torch.float64), 5, g)
    assert adjusted_rand_score(y, lab.numpy()) > 0.99 and inertia > 0


def test_too_few_samples_and_bad_covariance():
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianMixture(2, covariance_type="spherical")
    with pytest.raises(ValueError, match="cannot be split"):
        GaussianMixture(5, device="cpu").fit(np.zeros((3, 2)))


def test_refine_fixes_isolated_label_only():
    # 20 x 20 grid, left half label 0, right half label 1, one flipped cell inside the left half
    rr, cc = np.meshgrid(np.arange(20), np.arange(20), indexing="ij")
    xy = np.c_[rr.ravel(), cc.ravel()].astype(float)
    lab = (xy[:, 1] >= 10).astype(int)
    noisy = lab.copy()
    flipped = 5 * 20 + 4
    noisy[flipped] = 1
    A = build_knn_graph(xy, 4)
    out = refine_labels(noisy, A)
    assert np.array_equal(out, lab)
    # a clean boundary is left alone
    assert np.array_equal(refine_labels(lab, A), lab)
    # isolated nodes keep their label
    assert refine_labels(np.array([2, 0]), sp.csr_matrix((2, 2))).tolist() == [2, 0]


def test_restarts_on_a_subsample_reach_the_full_data_fit():
    """Large data: restarts on a subsample, then EM on all points, land on the full-data fit."""
    X, y = make_blobs(n_samples=30_000, n_features=6, centers=6, cluster_std=1.5, random_state=1)
    full = GaussianMixture(6, n_init=3, seed=0, device="cpu", init_sample=None).fit(X)
    sub = GaussianMixture(6, n_init=3, seed=0, device="cpu", init_sample=3_000).fit(X)
    assert adjusted_rand_score(full.predict(X), sub.predict(X)) > 0.999
    assert sub.score(X) == pytest.approx(full.score(X), abs=1e-4)
    again = GaussianMixture(6, n_init=3, seed=0, device="cpu", init_sample=3_000).fit(X)
    assert np.array_equal(again.predict_proba(X), sub.predict_proba(X))  # deterministic
    # below the threshold nothing changes: same restarts, same result as without subsampling
    small = X[:2_000]
    a = GaussianMixture(6, n_init=3, seed=0, device="cpu", init_sample=3_000).fit(small)
    b = GaussianMixture(6, n_init=3, seed=0, device="cpu", init_sample=None).fit(small)
    assert np.array_equal(a.predict_proba(small), b.predict_proba(small))
