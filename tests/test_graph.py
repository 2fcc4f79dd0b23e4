"""Spatial graphs: exact Visium hex neighbours, agreement with squidpy, sparse memory."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from napari_scai.graph import (
    block_diagonal,
    build_delaunay_graph,
    build_knn_graph,
    build_radius_graph,
    build_visium_graph,
    normalize_adjacency,
    spatial_graph,
    to_torch_csr,
)
from tests.conftest import shared_path


def _positions(sample: str = "151673") -> pd.DataFrame:
    pos = pd.read_csv(
        # honours SCAI_SHARED_DATA; skips with a reason when shared/data is absent
        shared_path("visium", f"dlpfc_{sample}", "spatial", "tissue_positions_list.csv"),
        header=None,
        names=["barcode", "in_tissue", "row", "col", "py", "px"],
    )
    return pos[pos.in_tissue == 1].reset_index(drop=True)


def test_visium_hex_neighbours_of_known_dlpfc_spot():
    pos = _positions()
    A = build_visium_graph(pos.row.to_numpy(), pos.col.to_numpy())
    assert A.shape == (len(pos), len(pos))
    assert (A != A.T).nnz == 0 and A.diagonal().sum() == 0
    deg = np.diff(A.indptr)
    assert deg.max() == 6
    assert np.mean(deg == 6) > 0.9  # interior spots have the full hexagon
    # a known interior spot of 151673
    i = int(np.nonzero(pos.barcode.to_numpy() == "AAACAAGTATCTCCCA-1")[0][0])
    r, c = int(pos.row[i]), int(pos.col[i])
    assert (r, c) == (50, 102)
    lookup = {(int(a), int(b)): k for k, (a, b) in enumerate(zip(pos.row, pos.col, strict=True))}
    expected = {
        lookup[(r + dr, c + dc)]
        for dr, dc in [(0, -2), (0, 2), (-1, -1), (-1, 1), (1, -1), (1, 1)]
        if (r + dr, c + dc) in lookup
    }
    got = set(A[i].indices.tolist())
    assert got == expected and len(got) == 6
    # geometry: the six neighbours are (nearly) equidistant in pixel space (~100 µm)
    d = np.hypot(pos.px[list(got)] - pos.px[i], pos.py[list(got)] - pos.py[i])
    assert d.max() / d.min() < 1.05


def test_visium_graph_equals_pixel_radius_graph():
    pos = _positions()
    A = build_visium_graph(pos.row.to_numpy(), pos.col.to_numpy())
    xy = pos[["px", "py"]].to_numpy(float)
    d = np.hypot(*(xy[A.nonzero()[0]] - xy[A.nonzero()[1]]).T)
    R = build_radius_graph(xy, radius=d.max() * 1.1)
    assert abs(A - R).sum() == 0


def test_visium_duplicate_positions_rejected():
    with pytest.raises(ValueError, match="duplicate"):
        build_visium_graph([0, 0], [0, 0])


def _squidpy_connectivities(xy, **kw):
    import anndata as ad
    import squidpy as sq

    a = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(len(xy))]), obsm={"spatial": xy})
    sq.gr.spatial_neighbors(a, coord_type="generic", **kw)
    S = sp.csr_matrix(a.obsp["spatial_connectivities"])
    return ((S + S.T) > 0).astype(np.float32)


def test_knn_and_delaunay_match_squidpy():
    xy = np.random.default_rng(0).random((400, 2))
    K = build_knn_graph(xy, 6)
    assert abs(K - _squidpy_connectivities(xy, n_neighs=6)).sum() == 0
    assert np.diff(K.indptr).min() >= 6
    D = build_delaunay_graph(xy, max_edge_length=None)
    assert abs(D - _squidpy_connectivities(xy, delaunay=True)).sum() == 0


def test_delaunay_auto_prunes_long_edges():
    rng = np.random.default_rng(1)
    xy = np.vstack([rng.random((200, 2)), rng.random((200, 2)) + [10.0, 0.0]])  # two islands
    full = build_delaunay_graph(xy, None)
    pruned = build_delaunay_graph(xy, "auto")
    left = np.arange(400) < 200
    cross = lambda G: G[left][:, ~left].nnz  # noqa: E731
    assert cross(full) > 0 and cross(pruned) == 0
    assert pruned.nnz > 0.9 * (full.nnz - 2 * cross(full))


def test_radius_graph_brute_force():
    xy = np.random.default_rng(2).random((150, 2))
    R = build_radius_graph(xy, 0.1).toarray()
    D = np.hypot(*(xy[:, None] - xy[None]).transpose(2, 0, 1))
    np.fill_diagonal(D, np.inf)
    assert np.array_equal(R > 0, D < 0.1)


def test_block_diagonal_and_torch_csr():
    a = build_knn_graph(np.random.default_rng(3).random((30, 2)), 4)
    b = build_knn_graph(np.random.default_rng(4).random((20, 2)), 4)
    B = block_diagonal([a, b])
    assert B.shape == (50, 50) and B[:30, 30:].nnz == 0 and B.nnz == a.nnz + b.nnz
    import torch

    N = normalize_adjacency(B)
    x = np.random.default_rng(5).random((50, 3)).astype(np.float32)
    y = torch.sparse.mm(to_torch_csr(N), torch.from_numpy(x)).numpy()
    assert np.allclose(y, N @ x, atol=1e-6)
    # symmetric normalisation is symmetric; row normalisation rows sum to one
    assert abs(N - N.T).max() < 1e-6
    assert np.allclose(normalize_adjacency(B, kind="row").sum(1), 1.0)


def test_spatial_graph_auto_picks_hex_or_knn():
    import anndata as ad

    pos = _positions()
    obs = pd.DataFrame({"array_row": pos.row.to_numpy(), "array_col": pos.col.to_numpy()})
    obs.index = obs.index.astype(str)
    a = ad.AnnData(obs=obs, obsm={"spatial": pos[["px", "py"]].to_numpy(float)})
    assert np.diff(spatial_graph(a).indptr).max() == 6
    b = ad.AnnData(obs=pd.DataFrame(index=obs.index), obsm={"spatial": a.obsm["spatial"]})
    assert abs(spatial_graph(b, k=8) - build_knn_graph(b.obsm["spatial"], 8)).sum() == 0
    with pytest.raises(ValueError, match="hex"):
        spatial_graph(b, method="hex")


_GRAPH_IMPORTS = """
import numpy as np
import torch
from napari_scai.graph import build_knn_graph, normalize_adjacency, to_torch_csr
"""
_GRAPH_BODY = """
xy = np.random.default_rng(0).random((n, 2)) * np.sqrt(n)
A = build_knn_graph(xy, 6)
N = normalize_adjacency(A)
R = normalize_adjacency(A, kind="row")
t = to_torch_csr(N)
"""


def test_graph_memory_is_linear_in_cells():
    """Graph construction, normalisation and the torch CSR copy: peak RSS of a child process.

    Equal bytes per extra cell between 50k->100k and 100k->200k cells is linear; an N x N matrix
    would double the second slope (and need 160 GB at 200k cells).
    """
    from tests._rss import peaks_in_parallel, slopes

    sizes = [50_000, 100_000, 200_000]
    peaks = peaks_in_parallel(_GRAPH_IMPORTS, _GRAPH_BODY, sizes)
    s = slopes(sizes, peaks)
    assert s[1] < 1.5 * s[0] + 64, (sizes, peaks, s)
    assert peaks[-1] / sizes[-1] < 1_500, (sizes, peaks)  # bytes per cell at 200k
