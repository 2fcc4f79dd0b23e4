"""Embedding metrics against independent references: scikit-learn's silhouette, harmonypy's LISI,
and tiny cases whose value is known by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import silhouette_samples as sk_silhouette_samples
from sklearn.metrics import silhouette_score

from napari_scai.metrics import batch_asw, ilisi, label_asw, lisi, silhouette_samples


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    n = 600
    labels = rng.integers(0, 4, n)
    batch = rng.integers(0, 3, n)
    X = rng.normal(size=(n, 6))
    X[:, 0] += 2.0 * labels
    X[:, 1] += 0.8 * batch
    return X, labels, batch


def test_silhouette_samples_equal_sklearn(blobs):
    X, labels, _ = blobs
    labels = labels.copy()
    labels[0] = 9  # a singleton label: silhouette 0 by convention
    ours = silhouette_samples(X, labels, chunk_size=97)
    np.testing.assert_allclose(ours, sk_silhouette_samples(X, labels), atol=1e-10)
    assert ours[0] == 0.0


def test_label_asw_is_rescaled_sklearn_score(blobs):
    X, labels, _ = blobs
    ref = silhouette_score(X, labels)
    assert label_asw(X, labels) == pytest.approx((ref + 1) / 2, abs=1e-10)
    assert label_asw(X, labels, rescale=False) == pytest.approx(ref, abs=1e-10)
    # subsampled: exactly sklearn's score on the same seeded rows
    idx = np.sort(np.random.default_rng(3).choice(len(X), 200, replace=False))
    sub = label_asw(X, pd.Series(labels).astype(str), n_sample=200, seed=3, rescale=False)
    assert sub == pytest.approx(silhouette_score(X[idx], labels[idx]), abs=1e-10)


def test_batch_asw_by_hand_from_sklearn(blobs):
    X, labels, batch = blobs
    expected = np.mean(
        [
            np.mean(1 - np.abs(sk_silhouette_samples(X[labels == c], batch[labels == c])))
            for c in np.unique(labels)
        ]
    )
    assert batch_asw(X, batch, labels) == pytest.approx(expected, abs=1e-10)


def test_batch_asw_extremes():
    rng = np.random.default_rng(1)
    batch = np.repeat([0, 1], 100)
    labels = np.zeros(200, dtype=int)
    separated = rng.normal(scale=0.01, size=(200, 2)) + 10 * batch[:, None]
    mixed = rng.normal(size=(200, 2))
    assert batch_asw(separated, batch, labels) < 0.01
    assert batch_asw(mixed, batch, labels) > 0.9  # 0.94: random noise


def test_lisi_equals_harmonypy(blobs):
    import harmonypy

    X, _, batch = blobs
    ref = harmonypy.compute_lisi(X, pd.DataFrame({"b": batch.astype(str)}), ["b"])[:, 0]
    np.testing.assert_allclose(lisi(X, batch), ref, rtol=1e-8)
    # a subsample of query rows scores exactly those rows
    idx = np.sort(np.random.default_rng(0).choice(len(X), 100, replace=False))
    np.testing.assert_allclose(lisi(X, batch, n_sample=100, seed=0), ref[idx], rtol=1e-8)


def test_lisi_by_hand_equidistant_neighbours():
    """Each point's neighbours all at the same distance get equal kernel weight: with 2 of 4
    neighbours from each of 2 batches, Simpson = 0.5^2 + 0.5^2, LISI = 2; perplexity 4 is exact."""
    # 5 points on a regular pentagon-free layout: centre-free square + centre is not equidistant,
    # so use the vertices of a regular 4-simplex (all pairwise distances equal)
    X = np.eye(5)
    batch = np.array([0, 0, 1, 1, 1])
    values = lisi(X, batch, perplexity=4 / 3, n_neighbors=4)
    # row 0 sees 1 of its own batch and 3 of the other: 1 / (0.25^2 + 0.75^2) = 1.6
    assert values[0] == pytest.approx(1.6, rel=1e-6)
    # rows of batch 1 see 2 of each: LISI 2
    assert values[2] == pytest.approx(2.0, rel=1e-6)


def test_ilisi_scaled_extremes():
    rng = np.random.default_rng(2)
    batch = np.repeat(["a", "b", "c"], 150)
    mixed = rng.normal(size=(450, 3))
    separated = mixed + 50 * np.repeat(np.arange(3), 150)[:, None]
    assert ilisi(mixed, batch) > 0.8  # 0.87: a finite sample is never perfectly even
    assert ilisi(separated, batch) == pytest.approx(0.0, abs=1e-6)
    assert ilisi(mixed, batch, scale=False) == pytest.approx(
        np.nanmedian(lisi(mixed, batch)), rel=1e-12
    )


def test_metric_input_errors():
    X = np.zeros((10, 2))
    with pytest.raises(ValueError, match="has 9 entries"):
        label_asw(X, np.arange(9) % 2)
    with pytest.raises(ValueError, match="at least 2 batches"):
        ilisi(X, np.zeros(10))
    with pytest.raises(ValueError, match="missing values"):
        label_asw(X, pd.Series([1, None] * 5))
