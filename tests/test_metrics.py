"""Tests for napari_scai.metrics against scikit-learn and brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn import metrics as skm

from napari_scai import metrics


def _random_labels(rng: np.random.Generator, n: int, k: int, prefix: str = "") -> np.ndarray:
    labels = rng.integers(0, k, n)
    return np.array([f"{prefix}{v}" for v in labels], dtype=object) if prefix else labels


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_ari_nmi_equal_sklearn_random(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 3000))
    ref = _random_labels(rng, n, int(rng.integers(2, 10)), prefix="L")
    # partially informative prediction: copy the reference for some, random for the rest
    pred = np.where(rng.random(n) < 0.6, ref, _random_labels(rng, n, 6, prefix="L"))
    pred = pd.Series(pred).map({f"L{i}": i * 3 for i in range(10)}).to_numpy()
    assert metrics.adjusted_rand_index(pred, ref) == pytest.approx(
        skm.adjusted_rand_score(ref, pred), abs=1e-12
    )
    assert metrics.normalized_mutual_info(pred, ref) == pytest.approx(
        skm.normalized_mutual_info_score(ref, pred), abs=1e-12
    )


@pytest.mark.parametrize(
    ("pred", "ref"),
    [
        ([0, 0, 0, 0], [1, 1, 1, 1]),  # one cluster each
        ([0, 1, 2, 3], [3, 2, 1, 0]),  # all singletons
        ([0, 0, 1, 1], [0, 1, 0, 1]),  # independent
        ([0, 1, 2, 3], [0, 0, 0, 0]),
        ([0, 0, 1, 1, 2], [0, 0, 1, 1, 1]),
    ],
)
def test_ari_nmi_edge_cases_equal_sklearn(pred: list[int], ref: list[int]) -> None:
    assert metrics.adjusted_rand_index(pred, ref) == pytest.approx(
        skm.adjusted_rand_score(ref, pred)
    )
    assert metrics.normalized_mutual_info(pred, ref) == pytest.approx(
        skm.normalized_mutual_info_score(ref, pred)
    )


def test_unlabelled_reference_is_dropped_and_counted() -> None:
    rng = np.random.default_rng(7)
    ref = _random_labels(rng, 500, 5, prefix="c").astype(object)
    pred = _random_labels(rng, 500, 4)
    missing = rng.random(500) < 0.1
    ref_nan = ref.copy()
    ref_nan[missing] = np.nan
    keep = ~missing
    assert metrics.adjusted_rand_index(pred, ref_nan) == pytest.approx(
        skm.adjusted_rand_score(ref[keep], pred[keep])
    )
    cm = metrics.confusion_matrix(pred, pd.Categorical(ref_nan))
    assert cm.attrs["n_dropped"] == int(missing.sum())
    assert int(cm.to_numpy().sum()) == int(keep.sum())
    # rows = predicted, cols = reference: sklearn's matrix is (true, pred), so transpose
    classes = sorted(set(ref[keep]) | {str(v) for v in pred[keep]})
    sk = skm.confusion_matrix(ref[keep], pred[keep].astype(str), labels=classes).T
    sk = pd.DataFrame(sk, index=classes, columns=classes)
    expected = sk.loc[[str(v) for v in cm.index], list(cm.columns)]
    np.testing.assert_array_equal(cm.to_numpy(), expected.to_numpy())
    assert list(cm.columns) == sorted(set(ref[keep]))


def test_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="same observations"):
        metrics.adjusted_rand_index([0, 1, 2], [0, 1])


def _noisy_permuted(rng, n, k, noise=0.15):
    ref = rng.integers(0, k, n)
    perm = rng.permutation(k) + 100  # predicted ids are different numbers
    pred = perm[ref]
    flip = rng.random(n) < noise
    pred[flip] = rng.choice(perm, flip.sum())
    return pred, np.array([f"class_{v}" for v in ref], dtype=object), perm


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hungarian_recovers_permutation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pred, ref, perm = _noisy_permuted(rng, 2000, 7)
    matching = metrics.match_labels(pred, ref)
    assert matching == {int(perm[c]): f"class_{c}" for c in range(7)}


def test_hungarian_with_extra_predicted_classes() -> None:
    rng = np.random.default_rng(11)
    pred, ref, perm = _noisy_permuted(rng, 3000, 5, noise=0.05)
    # split off a small piece of class_2 into a new predicted label 999
    in2 = np.flatnonzero(ref == "class_2")
    pred[in2[: len(in2) // 5]] = 999
    matching = metrics.match_labels(pred, ref)
    assert 999 not in matching
    assert matching == {int(perm[c]): f"class_{c}" for c in range(5)}


def test_hungarian_with_missing_predicted_classes() -> None:
    rng = np.random.default_rng(12)
    pred, ref, perm = _noisy_permuted(rng, 3000, 6, noise=0.05)
    # merge class_4 into class_3's predicted label (class_3 larger after merging)
    pred[pred == perm[4]] = perm[3]
    matching = metrics.match_labels(pred, ref)
    assert len(matching) == 5
    assert "class_4" not in matching.values() or "class_3" not in matching.values()
    for c in (0, 1, 2, 5):
        assert matching[int(perm[c])] == f"class_{c}"
    scores = metrics.per_class_scores(pred, ref, matching)
    unmatched = scores[scores["matched"].isna()]
    assert len(unmatched) == 1
    assert unmatched["f1"].item() == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matching_is_optimal_vs_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k_pred, k_ref = int(rng.integers(2, 6)), int(rng.integers(2, 6))
    pred = rng.integers(0, k_pred, 300)
    ref = rng.integers(0, k_ref, 300)
    table = metrics.contingency_table(pred, ref).to_numpy()
    matching = metrics.match_labels(pred, ref)
    got = sum(table[p, r] for p, r in matching.items())
    k = min(table.shape)
    best = max(
        sum(table[i, j] for i, j in zip(rows, cols, strict=True))
        for rows in itertools.permutations(range(table.shape[0]), k)
        for cols in itertools.combinations(range(table.shape[1]), k)
    )
    assert got == best
    assert len(set(matching.values())) == len(matching)  # one-to-one


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_f1_equals_sklearn_after_mapping(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pred, ref, _ = _noisy_permuted(rng, 1500, 6, noise=0.3)
    pred[rng.random(1500) < 0.05] = 777  # an extra, probably unmatched label
    matching = metrics.match_labels(pred, ref)
    mapped = np.array([matching.get(p, "unmatched") for p in pred], dtype=object)
    classes = sorted(set(ref))
    scores = metrics.per_class_scores(pred, ref).set_index("class").loc[classes]
    np.testing.assert_allclose(
        scores["f1"], skm.f1_score(ref, mapped, labels=classes, average=None, zero_division=0)
    )
    np.testing.assert_allclose(
        scores["precision"],
        skm.precision_score(ref, mapped, labels=classes, average=None, zero_division=0),
    )
    np.testing.assert_allclose(
        scores["recall"],
        skm.recall_score(ref, mapped, labels=classes, average=None, zero_division=0),
    )
    assert scores["support"].tolist() == [int((ref == c).sum()) for c in classes]


def _grid_adjacency(n_rows: int, n_cols: int) -> sparse.csr_matrix:
    idx = np.arange(n_rows * n_cols).reshape(n_rows, n_cols)
    a = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
    b = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
    n = n_rows * n_cols
    m = sparse.coo_matrix((np.ones(a.size), (a, b)), shape=(n, n))
    return (m + m.T).tocsr()


def test_spatial_coherence_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    adj = _grid_adjacency(20, 30)
    # stripes are coherent, random labels much less so
    stripes = np.repeat(np.arange(20) // 5, 30)
    rand = rng.integers(0, 4, 600)
    for labels in (stripes, rand):
        rows, cols = adj.nonzero()
        expected = np.mean(labels[rows] == labels[cols])
        assert metrics.spatial_coherence(labels, adj) == pytest.approx(expected)
    assert metrics.spatial_coherence(stripes, adj) > 0.9 > metrics.spatial_coherence(rand, adj)


def test_spatial_coherence_ignores_missing_and_self_loops() -> None:
    adj = sparse.csr_matrix(
        np.array(
            [
                [1, 1, 0, 0],
                [1, 0, 1, 0],
                [0, 1, 0, 1],
                [0, 0, 1, 0],
            ]
        )
    )
    labels = pd.Series(["a", "a", "b", None])
    # usable directed edges: 0-1, 1-0 (same), 1-2, 2-1 (different); 2-3 touches a missing label
    assert metrics.spatial_coherence(labels, adj) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shape"):
        metrics.spatial_coherence(["a", "b"], adj)
    with pytest.raises(TypeError, match="sparse"):
        metrics.spatial_coherence(["a"] * 4, adj.toarray())
