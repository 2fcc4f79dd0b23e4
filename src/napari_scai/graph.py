"""Sparse spatial graphs over spots / cells.

Every builder returns a symmetric, binary :class:`scipy.sparse.csr_matrix` (``float32``, no
self-loops, sorted indices) whose memory is linear in the number of cells; nothing here ever
makes an N x N dense matrix.

On squidpy: :func:`squidpy.gr.spatial_neighbors` builds the same kinds of graphs (grid, kNN,
radius, Delaunay) but works on an AnnData, writes into ``obsp`` and costs a multi-second import.
The builders below take plain coordinate arrays (so the models and the mini-batch tiler can call
them on sub-regions) and use the same scipy primitives (``cKDTree``, ``Delaunay``) squidpy uses;
``tests/test_graph.py`` checks that kNN and Delaunay agree with squidpy edge for edge.
:func:`spatial_graph` can also delegate to squidpy (``method="squidpy"``, keywords passed on).
squidpy's grid mode works on pixel coordinates with a ring count; for Visium we instead use the
exact integer array coordinates (:func:`build_visium_graph`), which is immune to image scaling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = [
    "block_diagonal",
    "build_delaunay_graph",
    "build_knn_graph",
    "build_radius_graph",
    "build_visium_graph",
    "graph_stats",
    "mutual_nearest_pairs",
    "normalize_adjacency",
    "spatial_graph",
    "to_torch_csr",
]

# Offsets of the 6 neighbours on the Visium hexagonal grid in (array_row, array_col) units.
VISIUM_HEX_OFFSETS = ((0, -2), (0, 2), (-1, -1), (-1, 1), (1, -1), (1, 1))


def _edges_to_csr(rows: np.ndarray, cols: np.ndarray, n: int) -> sp.csr_matrix:
    """Symmetric binary CSR from an edge list, dropping self-loops and duplicates."""
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    keep = rows != cols
    rows, cols = rows[keep], cols[keep]
    r = np.concatenate([rows, cols])
    c = np.concatenate([cols, rows])
    A = sp.csr_matrix((np.ones(r.size, dtype=np.float32), (r, c)), shape=(n, n))
    A.sum_duplicates()
    A.data[:] = 1.0
    A.sort_indices()
    return A


def _as_coords(coords: Any) -> np.ndarray:
    xy = np.asarray(coords, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] < 2:
        raise ValueError(f"coords must be an (n, 2) or (n, 3) array, got shape {xy.shape}")
    if not np.all(np.isfinite(xy)):
        raise ValueError("coords contain NaN or inf; drop or fix those cells first")
    return xy


def build_visium_graph(array_row: Any, array_col: Any) -> sp.csr_matrix:
    """Exact hexagonal neighbours from Visium array coordinates.

    On the Visium grid the neighbours of ``(r, c)`` are ``(r, c +- 2)`` and ``(r +- 1, c +- 1)``;
    spots missing from the input (out of tissue) simply have fewer neighbours.

    Parameters
    ----------
    array_row, array_col
        Integer array coordinates (``obs['array_row']``, ``obs['array_col']``), one per spot.

    Returns
    -------
    scipy.sparse.csr_matrix
        Symmetric binary adjacency, at most 6 neighbours per spot.
    """
    r = np.asarray(array_row).astype(np.int64)
    c = np.asarray(array_col).astype(np.int64)
    if r.shape != c.shape or r.ndim != 1:
        raise ValueError("array_row and array_col must be 1-D arrays of the same length")
    n = r.size
    if n == 0:
        return sp.csr_matrix((0, 0), dtype=np.float32)
    r0, c0 = r - r.min() + 2, c - c.min() + 3
    width = int(c0.max()) + 4
    key = r0 * width + c0
    order = np.argsort(key, kind="stable")
    skey = key[order]
    if np.any(skey[1:] == skey[:-1]):
        raise ValueError("duplicate (array_row, array_col) pairs; one spot per grid position")
    src, dst = [], []
    for dr, dc in VISIUM_HEX_OFFSETS:
        q = (r0 + dr) * width + (c0 + dc)
        pos = np.searchsorted(skey, q)
        pos_c = np.minimum(pos, n - 1)
        hit = skey[pos_c] == q
        src.append(np.nonzero(hit)[0])
        dst.append(order[pos_c[hit]])
    return _edges_to_csr(np.concatenate(src), np.concatenate(dst), n)


def build_knn_graph(coords: Any, k: int = 6) -> sp.csr_matrix:
    """Symmetrised k-nearest-neighbour graph (edge if i in kNN(j) or j in kNN(i))."""
    from scipy.spatial import cKDTree

    xy = _as_coords(coords)
    n = xy.shape[0]
    k = int(k)
    if k < 1:
        raise ValueError("k must be >= 1")
    if n <= 1:
        return sp.csr_matrix((n, n), dtype=np.float32)
    kk = min(k + 1, n)
    _, idx = cKDTree(xy).query(xy, k=kk)
    idx = np.asarray(idx).reshape(n, kk)
    rows = np.repeat(np.arange(n), kk)
    return _edges_to_csr(rows, idx.ravel(), n)  # self matches are dropped there


def build_radius_graph(coords: Any, radius: float) -> sp.csr_matrix:
    """All pairs closer than ``radius`` (same units as ``coords``)."""
    from scipy.spatial import cKDTree

    xy = _as_coords(coords)
    if radius <= 0:
        raise ValueError("radius must be > 0")
    pairs = cKDTree(xy).query_pairs(float(radius), output_type="ndarray")
    return _edges_to_csr(pairs[:, 0], pairs[:, 1], xy.shape[0])


def build_delaunay_graph(
    coords: Any, max_edge_length: float | str | None = "auto"
) -> sp.csr_matrix:
    """Delaunay triangulation edges, optionally pruning long edges.

    Parameters
    ----------
    coords
        ``(n, 2)`` coordinates (only the first two columns are used).
    max_edge_length
        ``None`` keeps every edge; a number drops edges longer than it; ``"auto"`` drops edges
        longer than ``Q3 + 3 * IQR`` of all edge lengths (the long edges that bridge gaps and
        the convex hull).
    """
    from scipy.spatial import Delaunay

    xy = _as_coords(coords)[:, :2]
    n = xy.shape[0]
    if n < 3:
        return build_knn_graph(xy, k=max(n - 1, 1)) if n > 1 else sp.csr_matrix((n, n))
    tri = Delaunay(xy)
    s = tri.simplices
    a = np.concatenate([s[:, 0], s[:, 1], s[:, 2]])
    b = np.concatenate([s[:, 1], s[:, 2], s[:, 0]])
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = np.unique(lo.astype(np.int64) * n + hi)
    lo, hi = key // n, key % n
    if max_edge_length is not None:
        length = np.linalg.norm(xy[lo] - xy[hi], axis=1)
        if isinstance(max_edge_length, str):
            if max_edge_length != "auto":
                raise ValueError("max_edge_length must be None, a number or 'auto'")
            q1, q3 = np.percentile(length, [25, 75])
            cut = q3 + 3.0 * (q3 - q1)
        else:
            cut = float(max_edge_length)
        keep = length <= cut
        lo, hi = lo[keep], hi[keep]
    return _edges_to_csr(lo, hi, n)


def block_diagonal(graphs: Sequence[sp.spmatrix]) -> sp.csr_matrix:
    """Join per-sample graphs into one block-diagonal graph (no edges between samples)."""
    if len(graphs) == 0:
        raise ValueError("need at least one graph")
    out = sp.block_diag([sp.csr_matrix(g) for g in graphs], format="csr", dtype=np.float32)
    out.sort_indices()
    return out


def mutual_nearest_pairs(
    X: np.ndarray, sample: np.ndarray, k: int = 10, reference: int = 0
) -> np.ndarray:
    """Mutual nearest neighbours (cosine) between the ``reference`` sample and every other one.

    A pair (i, j), i in the reference and j in another sample, is kept when j is among the
    ``k`` nearest of i in that sample and i among the ``k`` nearest of j in the reference
    (the anchors of MNN batch correction, Haghverdi et al. 2018). Returns a P x 2 int64 array of
    row indices into ``X``; memory O(n k), no N x N matrix.
    """
    from sklearn.neighbors import NearestNeighbors

    X = np.asarray(X, dtype=np.float32)
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    sample = np.asarray(sample)
    ref = np.nonzero(sample == reference)[0]
    out = []
    for s in np.unique(sample):
        if s == reference:
            continue
        other = np.nonzero(sample == s)[0]
        kk = min(k, ref.size, other.size)
        if kk == 0:
            continue
        ro = (
            NearestNeighbors(n_neighbors=kk).fit(X[other]).kneighbors(X[ref], return_distance=False)
        )
        orr = (
            NearestNeighbors(n_neighbors=kk).fit(X[ref]).kneighbors(X[other], return_distance=False)
        )
        a = sp.csr_matrix(
            (np.ones(ro.size, dtype=np.float32), (np.repeat(np.arange(ref.size), kk), ro.ravel())),
            shape=(ref.size, other.size),
        )
        b = sp.csr_matrix(
            (
                np.ones(orr.size, dtype=np.float32),
                (orr.ravel(), np.repeat(np.arange(other.size), kk)),
            ),
            shape=(ref.size, other.size),
        )
        i, j = a.multiply(b).nonzero()
        out.append(np.stack([ref[i], other[j]], 1))
    if not out:
        return np.empty((0, 2), dtype=np.int64)
    return np.concatenate(out).astype(np.int64)


def normalize_adjacency(
    A: sp.spmatrix, self_loops: bool = True, kind: str = "sym"
) -> sp.csr_matrix:
    """GCN-style normalisation: ``D^-1/2 (A + I) D^-1/2`` (``"sym"``) or ``D^-1 (A + I)`` (``"row"``)."""
    A = sp.csr_matrix(A, dtype=np.float32)
    if self_loops:
        A = A + sp.eye(A.shape[0], dtype=np.float32, format="csr")
    deg = np.asarray(A.sum(axis=1)).ravel()
    deg[deg == 0] = 1.0
    if kind == "sym":
        d = 1.0 / np.sqrt(deg)
        out = sp.diags(d) @ A @ sp.diags(d)
    elif kind == "row":
        out = sp.diags(1.0 / deg) @ A
    else:
        raise ValueError("kind must be 'sym' or 'row'")
    out = sp.csr_matrix(out, dtype=np.float32)
    out.sort_indices()
    return out


def to_torch_csr(A: sp.spmatrix, device: Any = "cpu", dtype: Any = None):
    """Convert a scipy sparse matrix to a ``torch.sparse_csr_tensor`` (for ``torch.sparse.mm``)."""
    import warnings

    import torch

    A = sp.csr_matrix(A)
    A.sort_indices()
    dtype = torch.float32 if dtype is None else dtype
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        t = torch.sparse_csr_tensor(
            torch.from_numpy(A.indptr.astype(np.int64)),
            torch.from_numpy(A.indices.astype(np.int64)),
            torch.from_numpy(A.data.astype(np.float32)).to(dtype),
            size=A.shape,
            check_invariants=False,
        )
    return t.to(device)


def graph_stats(A: sp.spmatrix) -> dict[str, float]:
    """Node count, edge count and degree summary (for ``uns`` params and sanity checks)."""
    deg = np.diff(sp.csr_matrix(A).indptr)
    return {
        "n_nodes": int(A.shape[0]),
        "n_edges": int(A.nnz // 2),
        "mean_degree": float(deg.mean()) if deg.size else 0.0,
        "isolated": int((deg == 0).sum()),
    }


def _is_visium(adata: Any) -> bool:
    return {"array_row", "array_col"} <= set(adata.obs.columns)


def spatial_graph(
    adata: Any,
    method: str = "auto",
    *,
    k: int = 6,
    radius: float | None = None,
    max_edge_length: float | str | None = "auto",
    spatial_key: str = "spatial",
    **squidpy_kwargs: Any,
) -> sp.csr_matrix:
    """Spatial graph for one AnnData (one sample).

    Parameters
    ----------
    adata
        Table with ``obs['array_row']``/``obs['array_col']`` (Visium) and/or
        ``obsm[spatial_key]``.
    method
        ``"auto"`` (hex if the table has Visium array coordinates, else kNN), ``"hex"``,
        ``"knn"``, ``"radius"``, ``"delaunay"`` or ``"squidpy"`` (calls
        :func:`squidpy.gr.spatial_neighbors` with ``squidpy_kwargs`` on a light copy and returns
        its connectivities, binarised, self-loops removed).
    k
        Neighbours for ``"knn"``.
    radius
        Radius for ``"radius"`` in the units of ``obsm[spatial_key]``.
    max_edge_length
        Pruning for ``"delaunay"`` (see :func:`build_delaunay_graph`).
    spatial_key
        Key of the coordinates in ``obsm``.
    **squidpy_kwargs
        Passed to squidpy for ``method="squidpy"``.
    """
    method = method.lower()
    if method == "auto":
        method = "hex" if _is_visium(adata) else "knn"
    if method == "hex":
        if not _is_visium(adata):
            raise ValueError("method='hex' needs obs['array_row'] and obs['array_col'] (Visium)")
        return build_visium_graph(
            adata.obs["array_row"].to_numpy(), adata.obs["array_col"].to_numpy()
        )
    if spatial_key not in adata.obsm:
        raise KeyError(f"obsm[{spatial_key!r}] not found; pass spatial_key= or use method='hex'")
    xy = np.asarray(adata.obsm[spatial_key])
    if method == "knn":
        return build_knn_graph(xy, k=k)
    if method == "radius":
        if radius is None:
            raise ValueError("method='radius' needs radius= (in the units of obsm coordinates)")
        return build_radius_graph(xy, radius)
    if method == "delaunay":
        return build_delaunay_graph(xy, max_edge_length=max_edge_length)
    if method == "squidpy":
        import anndata as ad
        import squidpy as sq

        tmp = ad.AnnData(obs=adata.obs[[]].copy(), obsm={spatial_key: xy})
        sq.gr.spatial_neighbors(tmp, spatial_key=spatial_key, **squidpy_kwargs)
        A = sp.csr_matrix(tmp.obsp["spatial_connectivities"])
        return _edges_to_csr(*A.nonzero(), A.shape[0])
    raise ValueError(
        f"unknown graph method {method!r}; use auto, hex, knn, radius, delaunay or squidpy"
    )
