"""Label-agreement metrics: ARI, NMI, matched per-class scores, confusion, spatial coherence.

Every function takes two label vectors of equal length: ``pred`` (e.g. clusters or
spatial domains) and ``ref`` (e.g. manual annotation). Labels may be strings, integers or
pandas categoricals. Positions where the *reference* is missing (``NaN``/``None``) are
unlabelled and are dropped before scoring; positions where the *prediction* is missing are
dropped too. :func:`drop_unlabelled` reports how many were dropped.

ARI and NMI are computed from the contingency table and equal
:func:`sklearn.metrics.adjusted_rand_score` and
:func:`sklearn.metrics.normalized_mutual_info_score` (arithmetic normalisation).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import linear_sum_assignment

__all__ = [
    "adjusted_rand_index",
    "confusion_matrix",
    "contingency_table",
    "drop_unlabelled",
    "match_labels",
    "normalized_mutual_info",
    "per_class_scores",
    "spatial_coherence",
]

ArrayLike = Sequence[Any] | np.ndarray | pd.Series | pd.Categorical


def _as_series(labels: ArrayLike, name: str) -> pd.Series:
    if isinstance(labels, pd.Series):
        s = labels.reset_index(drop=True)
    elif isinstance(labels, pd.Categorical):
        s = pd.Series(labels)
    else:
        arr = np.asarray(labels, dtype=object) if not isinstance(labels, np.ndarray) else labels
        if arr.ndim != 1:
            raise ValueError(
                f"`{name}` must be one-dimensional (one label per spot/cell); got shape "
                f"{arr.shape}. Pass e.g. adata.obs['<column>']."
            )
        s = pd.Series(arr)
    return s


def drop_unlabelled(pred: ArrayLike, ref: ArrayLike) -> tuple[pd.Series, pd.Series, int]:
    """Drop positions whose reference or prediction is missing.

    Parameters
    ----------
    pred
        Predicted labels, one per observation.
    ref
        Reference labels, one per observation; ``NaN``/``None`` marks unlabelled.

    Returns
    -------
    pred, ref
        The kept labels as :class:`pandas.Series` (categoricals keep their dtype).
    n_dropped
        How many observations were dropped.
    """
    p = _as_series(pred, "pred")
    r = _as_series(ref, "ref")
    if len(p) != len(r):
        raise ValueError(
            f"`pred` has {len(p)} labels but `ref` has {len(r)}; both must label the same "
            "observations in the same order."
        )
    keep = ~(p.isna().to_numpy() | r.isna().to_numpy())
    n_dropped = int((~keep).sum())
    return p[keep].reset_index(drop=True), r[keep].reset_index(drop=True), n_dropped


def _factorize(s: pd.Series) -> tuple[np.ndarray, list[Hashable]]:
    """Integer codes and the observed classes (categorical order, else sorted)."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.cat.remove_unused_categories()
        return s.cat.codes.to_numpy().astype(np.intp), list(s.cat.categories)
    try:
        codes, uniques = pd.factorize(s, sort=True)
    except TypeError:  # mixed, unorderable label types: keep first-seen order
        codes, uniques = pd.factorize(s, sort=False)
    return codes.astype(np.intp), list(uniques)


def _contingency(pred: pd.Series, ref: pd.Series) -> tuple[np.ndarray, list, list]:
    pc, p_classes = _factorize(pred)
    rc, r_classes = _factorize(ref)
    n_p, n_r = len(p_classes), len(r_classes)
    table = np.bincount(pc * n_r + rc, minlength=n_p * n_r).reshape(n_p, n_r)
    return table.astype(np.int64), p_classes, r_classes


def contingency_table(pred: ArrayLike, ref: ArrayLike) -> pd.DataFrame:
    """Counts of observations per (predicted, reference) label pair.

    Parameters
    ----------
    pred
        Predicted labels.
    ref
        Reference labels; unlabelled (missing) positions are dropped.

    Returns
    -------
    pandas.DataFrame
        Rows are predicted labels, columns reference classes; ``attrs["n_dropped"]`` holds
        the number of dropped observations.
    """
    p, r, n_dropped = drop_unlabelled(pred, ref)
    table, p_classes, r_classes = _contingency(p, r)
    df = pd.DataFrame(
        table,
        index=pd.Index(p_classes, name="predicted"),
        columns=pd.Index(r_classes, name="reference"),
    )
    df.attrs["n_dropped"] = n_dropped
    return df


def confusion_matrix(pred: ArrayLike, ref: ArrayLike) -> pd.DataFrame:
    """Confusion matrix: rows = predicted labels, columns = reference classes.

    Unlabelled reference positions (``NaN``) are dropped; their number is reported in
    ``result.attrs["n_dropped"]``.

    Parameters
    ----------
    pred
        Predicted labels.
    ref
        Reference labels.

    Returns
    -------
    pandas.DataFrame
        Integer counts with index name ``"predicted"`` and column name ``"reference"``.
    """
    return contingency_table(pred, ref)


def _comb2(x: np.ndarray | float) -> np.ndarray | float:
    x = np.asarray(x, dtype=np.float64)
    return x * (x - 1.0) / 2.0


def _ari_from_table(table: np.ndarray) -> float:
    n = float(table.sum())
    if n == 0:
        return 1.0
    sum_ij = float(_comb2(table).sum())
    sum_a = float(_comb2(table.sum(axis=1)).sum())
    sum_b = float(_comb2(table.sum(axis=0)).sum())
    total = float(_comb2(n))
    expected = sum_a * sum_b / total if total > 0 else 0.0
    maximum = 0.5 * (sum_a + sum_b)
    if maximum == expected:  # identical trivial partitions (all singletons / one cluster)
        return 1.0
    return float((sum_ij - expected) / (maximum - expected))


def _entropy(counts: np.ndarray) -> float:
    counts = counts[counts > 0].astype(np.float64)
    if counts.size <= 1:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def _nmi_from_table(table: np.ndarray) -> float:
    n_p, n_r = table.shape
    if (n_p == 1 and n_r == 1) or (n_p == 0 and n_r == 0):
        return 1.0
    n = float(table.sum())
    rows = table.sum(axis=1).astype(np.float64)
    cols = table.sum(axis=0).astype(np.float64)
    i, j = np.nonzero(table)
    nij = table[i, j].astype(np.float64)
    mi = float(np.sum(nij / n * (np.log(nij * n) - np.log(rows[i] * cols[j]))))
    mi = max(mi, 0.0)
    if mi == 0.0:
        return 0.0
    normaliser = max(0.5 * (_entropy(rows) + _entropy(cols)), np.finfo(np.float64).eps)
    return float(mi / normaliser)


def adjusted_rand_index(pred: ArrayLike, ref: ArrayLike) -> float:
    """Adjusted Rand index between two labellings (unlabelled positions dropped).

    Equals :func:`sklearn.metrics.adjusted_rand_score` on the kept positions.

    Parameters
    ----------
    pred
        Predicted labels.
    ref
        Reference labels.

    Returns
    -------
    float
        1 for identical partitions, about 0 for random ones, can be negative.
    """
    p, r, _ = drop_unlabelled(pred, ref)
    table, _, _ = _contingency(p, r)
    return _ari_from_table(table)


def normalized_mutual_info(pred: ArrayLike, ref: ArrayLike) -> float:
    """Normalised mutual information (arithmetic mean of entropies).

    Equals :func:`sklearn.metrics.normalized_mutual_info_score` with its default
    ``average_method="arithmetic"`` on the kept positions.

    Parameters
    ----------
    pred
        Predicted labels.
    ref
        Reference labels.

    Returns
    -------
    float
        Between 0 and 1.
    """
    p, r, _ = drop_unlabelled(pred, ref)
    table, _, _ = _contingency(p, r)
    return _nmi_from_table(table)


def _matching_from_table(table: np.ndarray, p_classes: list, r_classes: list) -> dict:
    if table.size == 0:
        return {}
    rows, cols = linear_sum_assignment(table, maximize=True)
    return {
        p_classes[i]: r_classes[j]
        for i, j in zip(rows, cols, strict=True)
        if table[i, j] > 0  # a pairing with no shared observation means "unmatched"
    }


def match_labels(pred: ArrayLike, ref: ArrayLike) -> dict[Hashable, Hashable]:
    """Best one-to-one matching of predicted labels to reference classes.

    Solves the assignment problem on the contingency table (Hungarian algorithm,
    :func:`scipy.optimize.linear_sum_assignment`), maximising the number of observations
    whose matched label equals the reference. With unequal numbers of classes the surplus
    predicted labels (or reference classes) stay unmatched; pairs that share no observation
    are never matched.

    Parameters
    ----------
    pred
        Predicted labels.
    ref
        Reference labels; unlabelled positions are dropped.

    Returns
    -------
    dict
        ``{predicted label: reference class}`` for every matched predicted label.
    """
    p, r, _ = drop_unlabelled(pred, ref)
    table, p_classes, r_classes = _contingency(p, r)
    return _matching_from_table(table, p_classes, r_classes)


def _scores_from_table(
    table: np.ndarray, p_classes: list, r_classes: list, matching: dict
) -> pd.DataFrame:
    p_index = {c: i for i, c in enumerate(p_classes)}
    reverse: dict = {}
    for p_label, r_label in matching.items():
        if r_label in reverse:
            raise ValueError(
                f"`matching` maps both {reverse[r_label]!r} and {p_label!r} to {r_label!r}; "
                "it must be one-to-one (use match_labels)."
            )
        reverse[r_label] = p_label
    rows = []
    for j, cls in enumerate(r_classes):
        support = int(table[:, j].sum())
        p_label = reverse.get(cls)
        if p_label is None or p_label not in p_index:
            tp, n_pred = 0, 0
        else:
            i = p_index[p_label]
            tp, n_pred = int(table[i, j]), int(table[i].sum())
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append(
            {
                "class": cls,
                "matched": p_label,
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "support": support,
            }
        )
    df = pd.DataFrame(rows, columns=["class", "matched", "precision", "recall", "f1", "support"])
    return df.astype({"support": np.int64})


def per_class_scores(
    pred: ArrayLike, ref: ArrayLike, matching: dict[Hashable, Hashable] | None = None
) -> pd.DataFrame:
    """Per reference class precision, recall and F1 after matching predicted labels.

    Each predicted label is renamed to its matched reference class (see
    :func:`match_labels`); unmatched predicted labels count as wrong for every class.
    A class that no predicted label is matched to scores 0.

    Parameters
    ----------
    pred
        Predicted labels.
    ref
        Reference labels; unlabelled positions are dropped.
    matching
        ``{predicted: reference}``; computed with :func:`match_labels` when ``None``.

    Returns
    -------
    pandas.DataFrame
        Columns ``class``, ``matched`` (the predicted label or ``None``), ``precision``,
        ``recall``, ``f1``, ``support`` (reference count); one row per reference class.
    """
    p, r, _ = drop_unlabelled(pred, ref)
    table, p_classes, r_classes = _contingency(p, r)
    if matching is None:
        matching = _matching_from_table(table, p_classes, r_classes)
    return _scores_from_table(table, p_classes, r_classes, matching)


def spatial_coherence(labels: ArrayLike, adjacency: sparse.spmatrix | sparse.sparray) -> float:
    """Fraction of graph edges whose two ends carry the same label.

    Parameters
    ----------
    labels
        One label per node (spot/cell); edges touching a missing label are ignored.
    adjacency
        Square scipy sparse adjacency (n × n). Every stored non-zero off-diagonal entry is one
        (directed) edge; a symmetric matrix counts each edge twice, which leaves the fraction
        unchanged. Self-loops are ignored.

    Returns
    -------
    float
        In [0, 1]; ``nan`` when there is no usable edge.
    """
    s = _as_series(labels, "labels")
    if not sparse.issparse(adjacency):
        raise TypeError(
            f"`adjacency` must be a scipy sparse matrix; got {type(adjacency).__name__}. "
            "Convert with scipy.sparse.csr_matrix(...)."
        )
    n = len(s)
    if adjacency.shape != (n, n):
        raise ValueError(
            f"`adjacency` has shape {adjacency.shape} but there are {n} labels; "
            f"it must be ({n}, {n})."
        )
    coo = sparse.coo_matrix(adjacency)
    nonzero = coo.data != 0
    row, col = coo.row[nonzero], coo.col[nonzero]
    off_diag = row != col
    row, col = row[off_diag], col[off_diag]
    missing = s.isna().to_numpy()
    codes = np.full(n, -1, dtype=np.intp)
    if (~missing).any():
        kept_codes, _ = _factorize(s[~missing])
        codes[~missing] = kept_codes
    usable = (codes[row] >= 0) & (codes[col] >= 0)
    if not usable.any():
        return float("nan")
    return float(np.mean(codes[row[usable]] == codes[col[usable]]))


# =================================================================================================
# Embedding metrics for integration (issue 10): label ASW, batch ASW, LISI / iLISI.
#
# Definitions follow scib / scib-metrics (Luecken et al. 2022) so figures are comparable:
# label ASW = (mean silhouette of the labels + 1) / 2; batch ASW = mean over labels of the mean
# of 1 - |silhouette of the batches within that label|; iLISI = (median LISI of the batches - 1)
# / (n_batches - 1), LISI from a Gaussian kernel on the k = 3 * perplexity nearest neighbours
# calibrated to the perplexity (Korsunsky et al. 2019). Large data are scored on a seeded
# subsample (``n_sample``); nothing is ever an N x N matrix.
# =================================================================================================

__all__ += ["batch_asw", "ilisi", "label_asw", "lisi", "silhouette_samples"]  # noqa: PLE0605


def _codes(labels: ArrayLike, n: int, name: str) -> tuple[np.ndarray, int]:
    s = _as_series(labels, name)
    if len(s) != n:
        raise ValueError(
            f"`{name}` has {len(s)} entries but the embedding has {n} rows; give one per row."
        )
    if s.isna().any():
        raise ValueError(
            f"`{name}` has {int(s.isna().sum())} missing values. Fix: drop those rows first "
            "(e.g. X[mask], labels[mask])."
        )
    codes, classes = _factorize(s)
    return codes, len(classes)


def _embedding(X: Any, name: str = "X") -> np.ndarray:
    X = X.toarray() if sparse.issparse(X) else np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"`{name}` must be a 2-D embedding (cells x dims); got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError(f"`{name}` has NaN or infinite values. Fix: drop those rows first")
    return np.asarray(X, dtype=np.float64)


def _subsample(n: int, n_sample: int | None, seed: int) -> np.ndarray:
    if n_sample is None or n <= n_sample:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, int(n_sample), replace=False))


def silhouette_samples(X: Any, labels: ArrayLike, *, chunk_size: int = 2048) -> np.ndarray:
    """Silhouette width of every row (Euclidean), computed in row chunks.

    Equals :func:`sklearn.metrics.silhouette_samples`: ``(b - a) / max(a, b)`` with ``a`` the
    mean distance to the other members of the row's label and ``b`` the smallest mean distance
    to another label; rows alone in their label get 0. Memory ``chunk_size x n``.
    """
    X = _embedding(X)
    n = X.shape[0]
    codes, n_labels = _codes(labels, n, "labels")
    if not 2 <= n_labels <= n - 1:
        raise ValueError(
            f"silhouette needs 2 to n - 1 distinct labels; got {n_labels} for {n} rows."
        )
    onehot = sparse.csr_matrix((np.ones(n), (np.arange(n), codes)), shape=(n, n_labels))
    sizes = np.bincount(codes, minlength=n_labels).astype(np.float64)
    sq = np.einsum("ij,ij->i", X, X)
    out = np.empty(n)
    for s in range(0, n, chunk_size):
        rows = np.arange(s, min(n, s + chunk_size))
        D2 = sq[rows, None] + sq[None, :] - 2.0 * (X[rows] @ X.T)
        D = np.sqrt(np.maximum(D2, 0.0))
        D[np.arange(rows.size), rows] = 0.0
        sums = np.asarray(onehot.T @ D.T).T  # (chunk, n_labels)
        own = codes[rows]
        own_size = sizes[own]
        a = np.divide(
            sums[np.arange(rows.size), own],
            own_size - 1,
            out=np.zeros(rows.size),
            where=own_size > 1,
        )
        mean_other = sums / sizes[None, :]
        mean_other[np.arange(rows.size), own] = np.inf
        b = mean_other.min(axis=1)
        denom = np.maximum(a, b)
        sil = np.divide(b - a, denom, out=np.zeros(rows.size), where=denom > 0)
        sil[own_size <= 1] = 0.0
        out[rows] = sil
    return out


def label_asw(
    X: Any,
    labels: ArrayLike,
    *,
    n_sample: int | None = 20000,
    seed: int = 0,
    rescale: bool = True,
) -> float:
    """Label average silhouette width: how well the embedding separates the labels.

    Parameters
    ----------
    X
        Embedding, cells x dims.
    labels
        Cell type (or other biological) label per row; no missing values.
    n_sample
        Score a seeded random subsample of this many rows (``None``: all rows; the cost is
        ``n_sample ** 2`` distances).
    seed
        Seed of the subsample.
    rescale
        Return ``(asw + 1) / 2`` in [0, 1] as scib does (1 = best), else the raw mean in [-1, 1].
    """
    X = _embedding(X)
    codes, _ = _codes(labels, X.shape[0], "labels")
    idx = _subsample(X.shape[0], n_sample, seed)
    asw = float(silhouette_samples(X[idx], codes[idx]).mean())
    return (asw + 1.0) / 2.0 if rescale else asw


def batch_asw(
    X: Any,
    batch: ArrayLike,
    labels: ArrayLike,
    *,
    n_sample: int | None = 20000,
    seed: int = 0,
) -> float:
    """Batch average silhouette width (scib's ``silhouette_batch``): batch mixing within labels.

    For each label seen in at least two batches, the silhouette of the batches is computed on
    that label's rows; the score is the mean over labels of ``mean(1 - |silhouette|)``. 1 means
    batches are perfectly mixed within every label, 0 means they are fully separated.

    Parameters
    ----------
    X
        Embedding, cells x dims.
    batch
        Batch per row.
    labels
        Cell type per row (batch mixing is scored within each label).
    n_sample
        Seeded subsample of rows scored (``None``: all).
    seed
        Seed of the subsample.
    """
    X = _embedding(X)
    n = X.shape[0]
    bcodes, n_batches = _codes(batch, n, "batch")
    lcodes, _ = _codes(labels, n, "labels")
    if n_batches < 2:
        raise ValueError("batch ASW needs at least 2 batches; `batch` has 1.")
    idx = _subsample(n, n_sample, seed)
    X, bcodes, lcodes = X[idx], bcodes[idx], lcodes[idx]
    scores = []
    for lab in np.unique(lcodes):
        mask = lcodes == lab
        b = bcodes[mask]
        if np.unique(b).size < 2 or mask.sum() <= np.unique(b).size:
            continue
        sil = silhouette_samples(X[mask], b)
        scores.append(float(np.mean(1.0 - np.abs(sil))))
    if not scores:
        raise ValueError(
            "batch ASW is undefined: no label occurs in two or more batches. Check `batch` and "
            "`labels`."
        )
    return float(np.mean(scores))


def _simpson_from_distances(
    dist: np.ndarray, neigh_codes: np.ndarray, n_cats: int, perplexity: float
) -> np.ndarray:
    """Simpson index per row from kNN distances, with the kernel calibrated to ``perplexity``.

    A vectorised bisection on the Gaussian precision ``beta`` (50 steps, tolerance 1e-5), as in
    the LISI reference (Korsunsky et al. 2019). Rows whose kernel collapses get NaN.
    """
    n, _ = dist.shape
    log_u = np.log(perplexity)
    beta = np.ones(n)
    lo = np.full(n, -np.inf)
    hi = np.full(n, np.inf)
    done = np.zeros(n, dtype=bool)

    def kernel(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        P = np.exp(-dist * b[:, None])
        sP = P.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            H = np.log(sP) + b * (dist * P).sum(axis=1) / sP
        return P, H

    for _ in range(50):
        _, H = kernel(beta)
        diff = H - log_u
        done |= np.abs(diff) < 1e-5
        up = ~done & (diff > 0)
        down = ~done & ~(diff > 0)
        lo = np.where(up, beta, lo)
        beta = np.where(up, np.where(np.isinf(hi), beta * 2.0, (beta + hi) / 2.0), beta)
        hi = np.where(down, beta, hi)
        beta = np.where(down, np.where(np.isinf(lo), beta / 2.0, (beta + lo) / 2.0), beta)
        if done.all():
            break
    P, H = kernel(beta)
    sP = P.sum(axis=1)
    ok = (sP > 0) & np.isfinite(H)
    P = np.divide(P, sP[:, None], out=np.zeros_like(P), where=sP[:, None] > 0)
    simpson = np.zeros(n)
    rows = np.repeat(np.arange(n), dist.shape[1])
    per_cat = np.bincount(
        rows * n_cats + neigh_codes.ravel(), weights=P.ravel(), minlength=n * n_cats
    ).reshape(n, n_cats)
    simpson = (per_cat**2).sum(axis=1)
    simpson[~ok] = np.nan
    return simpson


def lisi(
    X: Any,
    labels: ArrayLike,
    *,
    perplexity: float = 30.0,
    n_neighbors: int | None = None,
    n_sample: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Local inverse Simpson index of ``labels`` around each (sampled) row.

    The ``n_neighbors`` (default ``3 * perplexity``) nearest rows of each scored row, itself
    excluded, weighted by a Gaussian kernel whose width gives the requested perplexity; LISI =
    1 / sum over classes of (kernel weight of the class) squared: 1 when every neighbour has
    the row's label, up to the number of classes when they are evenly mixed.

    Parameters
    ----------
    X
        Embedding, cells x dims.
    labels
        Label per row (batch for iLISI, cell type for cLISI).
    perplexity
        Effective number of neighbours of the kernel.
    n_neighbors
        Neighbours searched (capped at n - 1).
    n_sample
        Score only a seeded subsample of rows (their neighbours are still searched among all
        rows); ``None`` scores every row.
    seed
        Seed of the subsample.

    Returns
    -------
    numpy.ndarray
        One LISI per scored row (rows in ascending order of the subsample); NaN where undefined.
    """
    from sklearn.neighbors import NearestNeighbors

    X = _embedding(X)
    n = X.shape[0]
    codes, n_cats = _codes(labels, n, "labels")
    k = int(n_neighbors if n_neighbors is not None else round(3 * perplexity))
    k = min(k, n - 1)
    if k < 1:
        raise ValueError(f"LISI needs at least 2 rows; got {n}.")
    idx = _subsample(n, n_sample, seed)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(X)
    dist, ind = nn.kneighbors(X[idx])
    # drop the row itself (the first hit, or wherever a duplicate point put it)
    self_hit = ind == idx[:, None]
    drop = np.where(self_hit.any(axis=1), self_hit.argmax(axis=1), k)
    keep = np.ones_like(ind, dtype=bool)
    keep[np.arange(idx.size), drop] = False
    dist = dist[keep].reshape(idx.size, k)
    ind = ind[keep].reshape(idx.size, k)
    simpson = _simpson_from_distances(dist, codes[ind], n_cats, perplexity)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 / simpson


def ilisi(
    X: Any,
    batch: ArrayLike,
    *,
    perplexity: float = 30.0,
    n_sample: int | None = 20000,
    seed: int = 0,
    scale: bool = True,
) -> float:
    """Integration LISI (batch mixing), scib's ``ilisi_knn``: median LISI of the batches.

    With ``scale`` (default) the median is mapped to [0, 1] by ``(median - 1) / (B - 1)``
    for ``B`` batches: 0 = each cell sees only its own batch, 1 = batches fully mixed.
    Scored on a seeded subsample of ``n_sample`` rows (neighbours searched among all rows).
    """
    X = _embedding(X)
    _, n_batches = _codes(batch, X.shape[0], "batch")
    if n_batches < 2:
        raise ValueError("iLISI needs at least 2 batches; `batch` has 1.")
    values = lisi(X, batch, perplexity=perplexity, n_sample=n_sample, seed=seed)
    med = float(np.nanmedian(values))
    return (med - 1.0) / (n_batches - 1.0) if scale else med
