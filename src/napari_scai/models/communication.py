"""Spatial ligand–receptor statistics in torch on a sparse kernel graph.

Notation: ``N`` cells/spots, ``P`` LR pairs, ``L`` and ``R`` (``N x P``) the ligand and
receptor expression (complex = min over subunits), ``W`` the symmetric sparse kernel
(``w_ij = exp(-d_ij^2 / 2h^2)`` for ``d_ij <= cutoff``, ``h = bandwidth_um``; no N x N dense
matrix anywhere). The signal sent by ``i`` to ``j`` for one pair is ``w_ij l_i r_j``.

- receiver activity ``a_j = r_j (W l)_j`` (ligand reaching ``j`` times ``j``'s receptor),
  sender activity ``s_i = l_i (W r)_i``; the **global statistic** ``S = sum_j a_j``.
- **Null** (spatially aware): the ligand values are permuted *within spatial tiles* of side
  ``tile_um`` (default 20 bandwidths = 10 kernel supports), in a frame fixed by the cells'
  principal axes; each permutation shifts the tile grid by a random offset, so no result hinges
  on where a fixed grid cuts the tissue. The tiles keep the regional abundance of each gene
  (broad co-localisation of two domain markers at the scale of the tiles is not called
  communication), while the arrangement at the scale of the kernel is broken. Tiles, offsets
  and random draws are defined in the canonical frame and a canonical cell order, so rotation,
  translation, joint rescaling of units and bandwidth and the input cell order do not change
  any result.
- **Permutations are batched** on the device: the global null needs no sparse product per
  permutation, ``S_perm = l_perm . (W r)``, one gather of all ``B`` permutations of a pair's
  ligand-expressing cells against cached inverse permutations; in Monte Carlo local mode one
  sparse product ``W_rows @ [l_perm1 | ... | l_permb]`` per pair gives the permuted receiver
  activity of all ``b`` permutations at once.
- Global p-value ``(1 + #{S_perm >= S}) / (B + 1)``, BH across pairs; the statistic reported is
  ``z = (S - mean S_perm) / sd S_perm``.
- Local p-values of ``(W l)_j`` per receiving cell and pair: by default the upper tail of a
  gamma distribution with the *exact* mean and variance of ``(W l_perm)_j`` under the same
  within-tile permutation null (:func:`local_null_moments`; two sparse products, and
  p-values finer than ``1 / (B + 1)``, which BH over cells x pairs needs); or Monte Carlo with
  the ``B`` permutations (``local_null="permutation"``: counts, gamma tail beyond 10
  exceedances). BH across all cells x pairs with a receptor (``r_j > 0``; an independent
  filter, ``r`` is fixed under the null).
- Group x group matrices ``M_gh = sum_{i in g, j in h} w_ij l_i r_j`` with a p-value from the
  exact mean and variance of the same within-tile permutation null (a sum of within-tile
  permutation sums, normal approximation), BH across group pairs x LR pairs.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

__all__ = [
    "CommunicationResult",
    "bh_from_counts",
    "bh_torch",
    "bh_qvalues",
    "canonical_frame",
    "communication_scores",
    "edge_signal",
    "group_matrices",
    "kernel_graph",
    "local_null_moments",
    "NullDesign",
    "null_design",
]

#: Kernel support in bandwidths: weights below exp(-2) = 0.135 are cut.
CUTOFF_BANDWIDTHS = 2.0
#: Grid offsets (in tiles) of the permutation null: each permutation uses one of these
#: 4 x 4 shifts of the tile grid, uniformly at random, so the null is an exact mixture over
#: them and its moments (group matrices, local p-values) are computed exactly.
NULL_OFFSET_STEPS = 4
GROUP_NULL_OFFSETS = tuple(
    (i / NULL_OFFSET_STEPS, j / NULL_OFFSET_STEPS)
    for i in range(NULL_OFFSET_STEPS)
    for j in range(NULL_OFFSET_STEPS)
)
#: Default tile side of the permutation null, in bandwidths (10 kernel supports).
TILE_BANDWIDTHS = 20.0


def kernel_graph(
    coords_um: np.ndarray,
    bandwidth_um: float,
    *,
    cutoff_um: float | None = None,
    include_self: bool = False,
) -> sp.csr_matrix:
    """Sparse Gaussian kernel ``exp(-d^2 / 2h^2)`` over pairs closer than ``cutoff_um``.

    Parameters
    ----------
    coords_um
        ``(N, 2)`` (or ``(N, 3)``) coordinates in µm.
    bandwidth_um
        Kernel bandwidth ``h`` in µm.
    cutoff_um
        Pairs farther apart get no edge (default ``2 h``).
    include_self
        Add ``w_ii = 1`` (a Visium spot holds several cells that signal to each other).
    """
    from scipy.spatial import cKDTree

    xy = np.asarray(coords_um, dtype=np.float64)
    h = float(bandwidth_um)
    if not h > 0:
        raise ValueError(f"bandwidth_um must be > 0, got {bandwidth_um!r}")
    cut = CUTOFF_BANDWIDTHS * h if cutoff_um is None else float(cutoff_um)
    n = xy.shape[0]
    pairs = cKDTree(xy).query_pairs(cut, output_type="ndarray")
    i, j = pairs[:, 0], pairs[:, 1]
    d2 = ((xy[i] - xy[j]) ** 2).sum(axis=1)
    w = np.exp(-d2 / (2.0 * h * h)).astype(np.float32)
    rows, cols, vals = [i, j], [j, i], [w, w]
    if include_self:
        ar = np.arange(n)
        rows.append(ar)
        cols.append(ar)
        vals.append(np.ones(n, dtype=np.float32))
    W = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    W.sort_indices()
    return W


def canonical_frame(coords: np.ndarray) -> np.ndarray:
    """Coordinates in the frame of their principal axes (centred, axis signs by skewness).

    The same cloud of points, rotated, translated or listed in another order, lands on the
    same canonical coordinates (for a cloud whose two principal variances differ).
    """
    xy = np.asarray(coords, dtype=np.float64)[:, :2]
    c = xy - xy.mean(axis=0)
    evals, evecs = np.linalg.eigh(c.T @ c / max(len(c), 1))
    proj = c @ evecs[:, ::-1]
    skew = (proj**3).mean(axis=0)
    sign = np.where(skew < 0, -1.0, 1.0)
    return proj * sign


@dataclass
class NullDesign:
    """Tiles of the permutation null, in the canonical frame.

    ``proj`` (N, 2) canonical coordinates shifted to start at 0; ``order`` the canonical cell
    order (by canonical x, then y) in which random numbers are drawn; ``tile_um`` the tile
    side; with ``random_offset`` every permutation shifts the tile grid by one of the
    :data:`GROUP_NULL_OFFSETS` (4 x 4 shifts by quarter tiles) drawn at random, so that no
    result hinges on where one fixed grid happens to cut the tissue.
    """

    proj: np.ndarray
    order: np.ndarray
    tile_um: float
    random_offset: bool = True

    def tiles(self, offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        """Compact tile id per cell for a grid shifted by ``offset`` (in tiles)."""
        q = np.floor(self.proj / self.tile_um + np.asarray(offset, dtype=np.float64))
        q = q.astype(np.int64)
        key = q[:, 0] * (int(q[:, 1].max()) + 2) + q[:, 1]
        return np.unique(key, return_inverse=True)[1].astype(np.int64)

    @property
    def n_tiles(self) -> int:
        return int(self.tiles().max()) + 1 if len(self.proj) else 0


def null_design(coords_um: np.ndarray, tile_um: float, random_offset: bool = True) -> NullDesign:
    """The :class:`NullDesign` of cells at ``coords_um`` with tiles of side ``tile_um``."""
    if not tile_um > 0:
        raise ValueError(f"tile_um must be > 0, got {tile_um!r}")
    proj = canonical_frame(coords_um)
    proj = proj - proj.min(axis=0) if len(proj) else proj
    order = np.lexsort((proj[:, 1], proj[:, 0])).astype(np.int64)
    return NullDesign(proj=proj, order=order, tile_um=float(tile_um), random_offset=random_offset)


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values) of a 1-D array (NaN kept as NaN)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    v = p[ok]
    m = v.size
    if m == 0:
        return out
    order = np.argsort(v)
    ranked = v[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    res = np.empty(m)
    res[order] = np.minimum(q, 1.0)
    out[ok] = res
    return out


def bh_from_counts(counts: np.ndarray, n_perms: int) -> np.ndarray:
    """BH q-values for permutation p-values ``(1 + c) / (B + 1)`` given only the counts ``c``.

    All tests sharing a count share a p-value, so the BH step-up needs only the histogram of
    the counts: ``q(c) = min_{c' >= c} m p(c') / #{p <= p(c')}``. Exact, O(m + B).
    """
    c = np.asarray(counts)
    B = int(n_perms)
    hist = np.bincount(c.ravel().astype(np.int64), minlength=B + 1)[: B + 1]
    m = c.size
    cum = np.cumsum(hist)  # number of tests with count <= k
    p_level = (np.arange(B + 1) + 1.0) / (B + 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        q_level = np.where(cum > 0, p_level * m / np.maximum(cum, 1), np.inf)
    q_level = np.minimum.accumulate(q_level[::-1])[::-1]
    q_level = np.minimum(q_level, 1.0)
    return q_level[c.astype(np.int64)].astype(np.float32)


#: Below this many permuted values at or above the observed one, the local p-value comes from
#: the moment-matched gamma tail instead of the count (finer than 1 / (B + 1)).
GAMMA_TAIL_BELOW = 10


def _local_pvalues(
    obs: torch.Tensor,
    R: torch.Tensor,
    counts: torch.Tensor,
    mean: torch.Tensor,
    ex2: torch.Tensor,
    B: int,
) -> torch.Tensor:
    """Local p-values of ``(W l)_j`` against its within-tile permutation null.

    ``(1 + count) / (B + 1)`` where at least :data:`GAMMA_TAIL_BELOW` permuted values reach the
    observed one; beyond that (the far tail, where counts cannot resolve p-values small enough
    to survive BH over cells x pairs) the upper tail of a gamma distribution with the
    permutations' mean and variance (``W l >= 0``). Cells without receptor (``r_j = 0``) or
    without ligand around (``(W l)_j = 0``) get 1.
    """
    p_emp = (1.0 + counts) / (B + 1.0)
    var = (ex2 - mean * mean).clamp_min(0) * (B / max(B - 1, 1))
    ok = (var > 0) & (mean > 0)
    shape = torch.where(ok, mean * mean / torch.where(ok, var, 1.0), torch.ones_like(mean))
    scale = torch.where(ok, var / torch.where(ok, mean, 1.0), torch.ones_like(mean))
    p_gam = torch.special.gammaincc(shape.double(), (obs / scale).double()).float()
    use_gam = ok & (counts < GAMMA_TAIL_BELOW)
    p = torch.where(use_gam, torch.minimum(p_gam, p_emp), p_emp)
    p = torch.where((R > 0) & (obs > 0), p, torch.ones_like(p))
    return p


def _gamma_tail(
    obs: torch.Tensor, R: torch.Tensor, mean: torch.Tensor, var: torch.Tensor
) -> torch.Tensor:
    """Upper tail at ``obs`` of the gamma distribution with this mean and variance.

    Entries without receptor (``r_j = 0``), without ligand around (``obs = 0``) or without
    null variation get 1.
    """
    ok = (var > 0) & (mean > 0) & (obs > 0) & (R > 0)
    safe_m = torch.where(ok, mean, torch.ones_like(mean)).double()
    safe_v = torch.where(ok, var, torch.ones_like(var)).double()
    p = torch.special.gammaincc(safe_m * safe_m / safe_v, obs.double() * safe_m / safe_v)
    return torch.where(ok, p.float(), torch.ones_like(mean))


def local_null_moments(
    L: torch.Tensor, W: sp.csr_matrix, design: NullDesign, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact mean and variance of ``(W l_perm)_j`` under the within-tile permutation null.

    For one tiling, the values in tile ``t`` are a random arrangement of its ``n_t`` values
    (mean ``m_t``, variance ``s_t``), so with ``a_jt = sum_{i in t} w_ji`` and
    ``b_jt = sum_{i in t} w_ji^2``: ``E = sum_t a_jt m_t`` and
    ``Var = sum_t n_t / (n_t - 1) s_t (b_jt - a_jt^2 / n_t)`` (sampling without
    replacement). With random grid offsets the moments are those of the mixture over
    :data:`GROUP_NULL_OFFSETS`. Two sparse (N x T) products per offset; O(nnz + N P).
    """
    N, P = L.shape
    offsets = GROUP_NULL_OFFSETS if design.random_offset else ((0.0, 0.0),)
    W = sp.csr_matrix(W, dtype=np.float64)
    W2 = W.multiply(W).tocsr()
    mean_sum, m2_sum, var_sum = None, None, None
    for off in offsets:
        tiles = design.tiles(off)
        T = int(tiles.max()) + 1
        oh = sp.csr_matrix((np.ones(N), (np.arange(N), tiles)), shape=(N, T))
        A = (W @ oh).tocsr()
        Bm = (W2 @ oh).tocsr()
        A2 = A.multiply(A).tocsr()
        oh_t = _torch_csr(oh.T.tocsr(), device)
        n_t = torch.as_tensor(np.asarray(oh.sum(axis=0)).ravel(), device=device).float()
        mt = torch.sparse.mm(oh_t, L) / n_t.clamp_min(1).unsqueeze(1)  # T x P
        st = (torch.sparse.mm(oh_t, L * L) / n_t.clamp_min(1).unsqueeze(1) - mt * mt).clamp_min(0)
        ct = torch.where(n_t > 1, n_t / (n_t - 1).clamp_min(1), torch.zeros_like(n_t))
        cs = st * ct.unsqueeze(1)
        mean_o = torch.sparse.mm(_torch_csr(A, device), mt)
        var_o = torch.sparse.mm(_torch_csr(Bm, device), cs) - torch.sparse.mm(
            _torch_csr(A2, device), cs / n_t.clamp_min(1).unsqueeze(1)
        )
        var_o = var_o.clamp_min(0)
        mean_sum = mean_o if mean_sum is None else mean_sum + mean_o
        m2_sum = mean_o * mean_o if m2_sum is None else m2_sum + mean_o * mean_o
        var_sum = var_o if var_sum is None else var_sum + var_o
    k = float(len(offsets))
    mean = mean_sum / k
    var = var_sum / k + (m2_sum / k - mean * mean).clamp_min(0)
    return mean, var


def bh_torch(p: torch.Tensor) -> torch.Tensor:
    """Benjamini–Hochberg q-values of a 1-D tensor, on its device."""
    m = p.numel()
    if m == 0:
        return p.clone()
    sp_, order = torch.sort(p.double())
    ranked = sp_ * m / torch.arange(1, m + 1, device=p.device, dtype=torch.float64)
    q = torch.flip(torch.cummin(torch.flip(ranked, [0]), 0).values, [0]).clamp_max(1.0)
    out = torch.empty_like(q)
    out[order] = q
    return out.to(p.dtype)


def _torch_csr(W: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    W = sp.csr_matrix(W, dtype=np.float32)
    return torch.sparse_csr_tensor(
        torch.from_numpy(W.indptr.astype(np.int64)),
        torch.from_numpy(W.indices.astype(np.int64)),
        torch.from_numpy(W.data),
        size=W.shape,
        device=device,
    )


@contextlib.contextmanager
def _single_thread_on(device: torch.device):
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _perm_index(
    b: int,
    seed: int,
    proj_sorted: torch.Tensor,
    order: torch.Tensor,
    tile: float,
    random_offset: bool,
) -> torch.Tensor:
    """Index vector of permutation number ``b``: cell ``i`` takes the value of cell ``idx[i]``.

    The grid offset and one uniform key per cell are drawn, in the canonical order, from a
    generator seeded by ``(seed, b)``; cells are grouped by tile and shuffled within their tile
    by sorting ``tile + key``. Independent of chunking, of the input cell order and of rigid
    motions and joint rescaling of the coordinates.
    """
    device = proj_sorted.device
    gen = torch.Generator(device="cpu")
    gen.manual_seed((int(seed) * 1_000_003 + int(b)) % (2**63 - 1))
    off = torch.randint(0, NULL_OFFSET_STEPS, (2,), generator=gen).double() / NULL_OFFSET_STEPS
    u = torch.rand(order.numel(), generator=gen, dtype=torch.float64).to(device) * 0.999
    off = (off if random_offset else torch.zeros(2, dtype=torch.float64)).to(device)
    # proj >= 0 and off >= 0, so truncation is floor (torch.floor on float64 is very slow on
    # a busy multi-threaded CPU)
    q = (proj_sorted / tile + off).to(torch.int64)
    tid = (q[:, 0] * (q[:, 1].max() + 2) + q[:, 1]).to(torch.float64)
    base = torch.argsort(tid, stable=True)
    shuf = torch.argsort(tid + u)
    idx = torch.empty_like(order)
    idx[order[base]] = order[shuf]
    return idx


class _PermSource:
    """Draws the same permutations as :func:`_perm_index`, in batches, with per-offset caches.

    The tile ids and the grouped base order depend only on the grid offset (16 of them), so
    they are computed once; a permutation then costs one sort of ``tile + key``. On CPU the
    sort and scatter run in numpy (single-threaded, far faster than torch's small ops on a
    busy multi-core machine); on CUDA in torch on the device.
    """

    def __init__(self, design: NullDesign, seed: int, device: torch.device) -> None:
        self.order = design.order
        self.proj = design.proj[design.order]
        self.tile = float(design.tile_um)
        self.random_offset = design.random_offset
        self.seed = int(seed)
        self.device = torch.device(device)
        self.cuda = self.device.type != "cpu"
        self._cache: dict[tuple[int, int], tuple[Any, Any]] = {}

    def _tiles(self, off: tuple[int, int]):
        if off not in self._cache:
            q = (self.proj / self.tile + np.asarray(off) / NULL_OFFSET_STEPS).astype(np.int64)
            tid = (q[:, 0] * (q[:, 1].max() + 2) + q[:, 1]).astype(np.float64)
            ob = self.order[np.argsort(tid, kind="stable")]
            if self.cuda:
                tid = torch.as_tensor(tid, device=self.device)
                ob = torch.as_tensor(ob, device=self.device)
            self._cache[off] = (tid, ob)
        return self._cache[off]

    def indices(self, b0: int, b1: int) -> torch.Tensor:
        n = self.order.size
        if self.cuda:
            order_d = torch.as_tensor(self.order, device=self.device)
            out = torch.empty((b1 - b0, n), dtype=torch.int64, device=self.device)
        else:
            out = np.empty((b1 - b0, n), dtype=np.int64)
        for row, b in enumerate(range(b0, b1)):
            gen = torch.Generator(device="cpu")
            gen.manual_seed((self.seed * 1_000_003 + int(b)) % (2**63 - 1))
            off_t = torch.randint(0, NULL_OFFSET_STEPS, (2,), generator=gen)
            u = torch.rand(n, generator=gen, dtype=torch.float64) * 0.999
            off = (int(off_t[0]), int(off_t[1])) if self.random_offset else (0, 0)
            tid, ob = self._tiles(off)
            if self.cuda:
                out[row, ob] = order_d[torch.argsort(tid + u.to(self.device))]
            else:
                out[row, ob] = self.order[np.argsort(tid + u.numpy())]
        return out if self.cuda else torch.from_numpy(out)


@dataclass
class CommunicationResult:
    """Output of :func:`communication_scores` (numpy arrays on the host).

    ``score`` (P,) global statistic ``S`` divided by the kernel's total weight; ``statistic``
    (P,) z against the permutation null; ``null_mean``/``null_sd`` (P,) of ``S`` (same scale
    as ``score``); ``pvalue``/``fdr`` (P,); ``receiver``/``sender`` (N, P) local activities;
    ``local_count`` (N, P) int32 permutation counts of ``(W l_perm)_j >= (W l)_j``;
    ``local_pvalue``/``local_fdr`` (N, P): BH over the cells x pairs with ``r_j > 0`` (an
    independent filter: ``r`` is fixed under the null); untested entries get ``fdr = 1``.
    """

    score: np.ndarray
    statistic: np.ndarray
    null_mean: np.ndarray
    null_sd: np.ndarray
    pvalue: np.ndarray
    fdr: np.ndarray
    receiver: np.ndarray | None
    sender: np.ndarray | None
    local_count: np.ndarray | None
    local_pvalue: np.ndarray | None
    local_fdr: np.ndarray | None
    n_perms: int


def communication_scores(
    L: np.ndarray | torch.Tensor,
    R: np.ndarray | torch.Tensor,
    W: sp.csr_matrix,
    design: NullDesign,
    *,
    n_perms: int = 1000,
    seed: int = 0,
    device: torch.device | str = "cpu",
    local: bool = True,
    local_null: str = "moments",
    max_block_floats: int = 32_000_000,
    max_cache_bytes: int = 2_000_000_000,
    runtime: Any = None,
) -> CommunicationResult:
    """Global and local LR statistics with a batched within-tile permutation null.

    Parameters
    ----------
    L, R
        ``(N, P)`` non-negative ligand / receptor expression.
    W
        ``(N, N)`` sparse symmetric kernel (:func:`kernel_graph`).
    design
        The permutation null's tiles (:func:`null_design`).
    n_perms
        Number of permutations ``B`` (0: statistics only, no p-values).
    seed
        Seed of the permutations.
    device
        Torch device for the sparse products.
    local
        Also compute local (per-cell) p-values and BH FDR.
    local_null
        ``"moments"`` (default): the local p-value is the upper tail of a gamma distribution
        with the *exact* mean and variance of ``(W l_perm)_j`` under the within-tile
        permutation null (mixture over grid offsets), computed with two sparse products; no
        per-permutation sparse product is needed, and p-values are not limited to
        ``1 / (B + 1)``. ``"permutation"``: Monte Carlo with the same ``B`` permutations (one
        sparse product per pair and permutation batch; count-based p-values, gamma tail
        beyond 10 exceedances). The global p-value is a permutation p-value in both modes
        (``S_perm = l_perm . (W r)``, no sparse product).
    max_block_floats
        Size (floats) of one ``N x (perms x pairs)`` block; bounds the working memory at a
        few times ``4 bytes x max_block_floats`` on top of the ``N x P`` inputs and outputs.
    max_cache_bytes
        Keep the ``B x N`` permutation indices (int64) when they fit in this many bytes
        (local mode; otherwise they are redrawn for every pair, same values, slower).
    runtime
        Optional :class:`napari_scai.models._runtime.Runtime` for progress and cancel.
    """
    device = torch.device(device)
    Lt = torch.as_tensor(np.asarray(L, dtype=np.float32) if not torch.is_tensor(L) else L)
    Rt = torch.as_tensor(np.asarray(R, dtype=np.float32) if not torch.is_tensor(R) else R)
    Lt, Rt = Lt.to(device, torch.float32), Rt.to(device, torch.float32)
    N, P = Lt.shape
    if Rt.shape != (N, P):
        raise ValueError(f"L has shape {tuple(Lt.shape)} but R has {tuple(Rt.shape)}")
    if W.shape != (N, N):
        raise ValueError(f"W has shape {W.shape}, expected {(N, N)}")
    B = int(n_perms)
    Wt = _torch_csr(W, device)
    wsum = float(np.asarray(W.sum(), dtype=np.float64))
    wsum = wsum if wsum > 0 else 1.0

    WL = torch.sparse.mm(Wt, Lt)  # ligand reaching each cell
    recv = Rt * WL
    S = recv.double().sum(dim=0)
    U = torch.sparse.mm(Wt, Rt)  # receptor around each cell
    sender = Lt * U

    sum1 = torch.zeros(P, dtype=torch.float64, device=device)
    sum2 = torch.zeros(P, dtype=torch.float64, device=device)
    ge = torch.zeros(P, dtype=torch.int64, device=device)
    Sthr_all = S - 1e-5 * S.abs() - 1e-12  # ties (and rounding) count as >= observed

    source = _PermSource(design, seed, device)

    def perms(b0: int, b1: int) -> torch.Tensor:
        return source.indices(b0, b1)  # (b, N)

    def add_global(p0: int, p1: int, Sp: torch.Tensor) -> None:  # Sp: (p, b)
        sum1[p0:p1] += Sp.sum(dim=1)
        sum2[p0:p1] += (Sp * Sp).sum(dim=1)
        ge[p0:p1] += (Sp >= Sthr_all[p0:p1].unsqueeze(1)).sum(dim=1)

    if local_null not in ("moments", "permutation"):
        raise ValueError(f"local_null must be 'moments' or 'permutation', got {local_null!r}")
    mc_local = bool(local) and local_null == "permutation"
    cache = B * N * 8 <= max_cache_bytes
    if B and not mc_local and cache:
        # S_perm = sum_i l_perm(i) u_i = sum_{k: l_k > 0} l_k u_{perm^-1(k)}, u = W r: one
        # gather over the cells that express the ligand, per pair, from cached inverse perms.
        idx = perms(0, B)
        inv = torch.empty_like(idx)
        inv.scatter_(1, idx, torch.arange(N, device=device).expand(B, N))
        del idx
        L_host = Lt.cpu().numpy()
        for p in range(P):
            k = torch.as_tensor(np.nonzero(L_host[:, p] > 0)[0], device=device)
            if k.numel() == 0:
                ge[p] += B  # S = S_perm = 0
                continue
            lk, up = Lt[k, p], U[:, p]
            b_chunk = max(1, min(B, max_block_floats // max(k.numel(), 1)))
            for b0 in range(0, B, b_chunk):
                b1 = min(B, b0 + b_chunk)
                add_global(p, p + 1, (up[inv[b0:b1][:, k]] @ lk).double().unsqueeze(0))
            if runtime is not None:
                runtime.check()
                runtime.report(p + 1, P, f"permutations: pair {p + 1}/{P}")
        del inv
    elif B and not mc_local:
        # the same without the B x N cache: chunks of pairs x perms over all cells
        p_chunk = max(1, min(P, max_block_floats // max(N, 1)))
        b_chunk = max(1, min(B, max_block_floats // max(N * p_chunk, 1)))
        n_steps, step = math.ceil(P / p_chunk) * math.ceil(B / b_chunk), 0
        for b0 in range(0, B, b_chunk):
            b1 = min(B, b0 + b_chunk)
            idx = perms(b0, b1)
            for p0 in range(0, P, p_chunk):
                p1 = min(P, p0 + p_chunk)
                add_global(p0, p1, (Lt[:, p0:p1][idx] * U[:, p0:p1]).sum(dim=1).T.double())
                step += 1
                if runtime is not None:
                    runtime.check()
                    runtime.report(step, n_steps, f"permutations {b1}/{B}")
    if B and mc_local:
        counts = torch.zeros((N, P), dtype=torch.float32, device=device)
        m1 = torch.zeros((N, P), dtype=torch.float32, device=device)
        m2 = torch.zeros((N, P), dtype=torch.float32, device=device)
        # One pair at a time, only the rows (receivers) with r_j > 0: (W l_perm)_j elsewhere
        # never matters (local p = 1; no contribution to S). The permutation indices are
        # drawn once and kept when they fit in ``max_cache_bytes``.
        idx_t = perms(0, B).T.contiguous() if cache else None  # (N, B)
        b_chunk = max(1, min(B, max_block_floats // max(N, 1)))
        Wsp = sp.csr_matrix(W, dtype=np.float32)
        R_host = Rt.cpu().numpy()
        for p in range(P):
            rows_np = np.nonzero(R_host[:, p] > 0)[0]
            if rows_np.size == 0:  # S = S_perm = 0: p = 1
                ge[p] += B
                continue
            rows = torch.as_tensor(rows_np, device=device)
            Wp = _torch_csr(Wsp[rows_np], device)
            rp = Rt[rows, p]
            obs = WL[rows, p]
            thr = (obs - 1e-5 * obs.abs() - 1e-12).unsqueeze(1)
            cnt = torch.zeros(rows.numel(), dtype=torch.float32, device=device)
            s1 = torch.zeros_like(cnt)
            s2 = torch.zeros_like(cnt)
            lcol = Lt[:, p]
            for b0 in range(0, B, b_chunk):
                b1 = min(B, b0 + b_chunk)
                Lp = lcol[idx_t[:, b0:b1]] if cache else lcol[perms(b0, b1).T]  # (N, b)
                Y = torch.sparse.mm(Wp, Lp)  # (n_r, b): permuted (W l)_j at receivers
                add_global(p, p + 1, (rp @ Y).double().unsqueeze(0))
                cnt += torch.count_nonzero(Y >= thr, dim=1)
                s1 += Y.sum(dim=1)
                s2 += (Y * Y).sum(dim=1)
            counts[rows, p] = cnt
            m1[rows, p] = s1
            m2[rows, p] = s2
            if runtime is not None:
                runtime.check()
                runtime.report(p + 1, P, f"permutations: pair {p + 1}/{P}")
    Snp = S.cpu().numpy()
    if B:
        mean = (sum1 / B).cpu().numpy()
        var = np.maximum((sum2 / B).cpu().numpy() - mean**2, 0.0) * B / max(B - 1, 1)
        sd = np.sqrt(var)
        pval = (1.0 + ge.cpu().numpy()) / (B + 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(sd > 0, (Snp - mean) / np.where(sd > 0, sd, 1.0), 0.0)
    else:
        mean = sd = pval = z = np.full(P, np.nan)
    fdr = bh_qvalues(pval) if B else np.full(P, np.nan)
    lc = lp = lq = None
    if local and (B or not mc_local):
        if mc_local:
            lp_t = _local_pvalues(WL, Rt, counts, m1 / B, m2 / B, B)
        else:
            mean_l, var_l = local_null_moments(Lt, W, design, device)
            lp_t = _gamma_tail(WL, Rt, mean_l, var_l)
            del mean_l, var_l
            counts = None
        tested = Rt > 0  # independent filter: r is fixed under the null
        lq_t = torch.ones_like(lp_t)
        lq_t[tested] = bh_torch(lp_t[tested])
        lc = counts.to(torch.int32).cpu().numpy() if counts is not None else None
        lp = lp_t.cpu().numpy()
        lq = lq_t.cpu().numpy()
    return CommunicationResult(
        score=Snp / wsum,
        statistic=z,
        null_mean=mean / wsum,
        null_sd=sd / wsum,
        pvalue=pval,
        fdr=fdr,
        receiver=recv.cpu().numpy(),
        sender=sender.cpu().numpy(),
        local_count=lc,
        local_pvalue=lp,
        local_fdr=lq,
        n_perms=B,
    )


def _tile_moments(Lc, V, tiles, groups, ok, G):
    """Within-tile permutation mean and variance of ``sum_i l_sigma(i) c_i`` for all (g, h, p)."""
    N, k = Lc.shape
    T = int(tiles.max()) + 1
    cells = np.nonzero(ok)[0]
    tile_oh = sp.csr_matrix((np.ones(N), (tiles, np.arange(N))), shape=(T, N))
    tg = sp.csr_matrix((np.ones(cells.size), (tiles[ok] * G + groups[ok], cells)), shape=(T * G, N))
    n_t = np.asarray(tile_oh.sum(axis=1)).ravel()
    inv_n = 1.0 / np.maximum(n_t, 1)
    inv = np.where(n_t > 1, 1.0 / np.maximum(n_t - 1, 1), 0.0)
    Sl = tile_oh @ Lc  # T x k
    SSl = np.maximum(tile_oh @ (Lc * Lc) - Sl**2 * inv_n[:, None], 0.0)
    Sc = (tg @ V).reshape(T, G, G, k)  # [t, g, h, p]
    SSc = np.maximum((tg @ (V * V)).reshape(T, G, G, k) - Sc**2 * inv_n[:, None, None, None], 0.0)
    mean = np.einsum("tp,tghp->ghp", Sl * inv_n[:, None], Sc)
    var = np.einsum("t,tp,tghp->ghp", inv, SSl, SSc)
    return mean, var


def group_matrices(
    L: np.ndarray,
    R: np.ndarray,
    W: sp.csr_matrix,
    design: NullDesign,
    groups: np.ndarray,
    n_groups: int,
) -> dict[str, np.ndarray]:
    """Sender-group x receiver-group communication per pair, with within-tile-null p-values.

    ``M[p, g, h] = sum_{i in g, j in h} w_ij l_i r_j``. Under the null that permutes ``l``
    within tiles (group labels stay with the cells), ``M = sum_t sum_{i in t} l_sigma(i) c_i``
    with ``c_i = 1[g(i) = g] (W (r 1_h))_i``; its exact mean and variance are sums over tiles
    of the permutation moments ``S_l S_c / n`` and ``(SS_l)(SS_c) / (n - 1)``. With random grid
    offsets (the permutation null's default) the moments are those of the (exact) mixture
    over :data:`GROUP_NULL_OFFSETS`. The p-value is the normal upper tail of
    ``z = (M - mean) / sd``.

    Returns
    -------
    dict
        ``score`` (P, G, G) ``M`` / total kernel weight, ``zscore``, ``pvalue``, ``fdr`` (BH
        over all entries), all float64.
    """
    from scipy.special import ndtr

    L = np.asarray(L, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    N, P = L.shape
    G = int(n_groups)
    groups = np.asarray(groups, dtype=np.int64)
    ok = groups >= 0  # cells without a group (NaN) take part in the null, not in the matrices
    cells = np.nonzero(ok)[0]
    onehot = sp.csr_matrix((np.ones(cells.size), (groups[ok], cells)), shape=(G, N))
    offsets = GROUP_NULL_OFFSETS if design.random_offset else ((0.0, 0.0),)
    tilings = [design.tiles(o) for o in offsets]
    M = np.empty((G, G, P))
    mean = np.zeros((G, G, P))
    var = np.zeros((G, G, P))
    chunk = max(1, 4_000_000 // max(N * G, 1))
    for p0 in range(0, P, chunk):
        p1 = min(P, p0 + chunk)
        Lc, Rc = L[:, p0:p1], R[:, p0:p1]
        k = p1 - p0
        # V[:, h*k + p] = (W (r_p 1_h))_i : what receiver group h takes from cell i
        V = np.concatenate(
            [np.asarray(W @ (Rc * (groups == h)[:, None])) for h in range(G)], axis=1
        )
        M[:, :, p0:p1] = (onehot @ (np.tile(Lc, (1, G)) * V)).reshape(G, G, k)
        mom = [_tile_moments(Lc, V, t, groups, ok, G) for t in tilings]
        means = np.stack([m for m, _ in mom])
        mean[:, :, p0:p1] = means.mean(axis=0)
        # mixture: mean of the variances plus the variance of the means
        var[:, :, p0:p1] = np.stack([v for _, v in mom]).mean(axis=0) + means.var(axis=0)
    sd = np.sqrt(np.maximum(var, 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sd > 0, (M - mean) / np.where(sd > 0, sd, 1.0), 0.0)
    pval = np.where(sd > 0, ndtr(-z), 1.0)
    wsum = float(W.sum()) or 1.0
    out = {
        "score": np.moveaxis(M / wsum, 2, 0),
        "zscore": np.moveaxis(z, 2, 0),
        "pvalue": np.moveaxis(pval, 2, 0),
    }
    out["fdr"] = bh_qvalues(out["pvalue"].ravel()).reshape(out["pvalue"].shape)
    return out


def edge_signal(
    W: sp.csr_matrix, ligand: np.ndarray, receptor: np.ndarray, top: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-edge signal ``w_ij l_i r_j`` (sender ``i`` -> receiver ``j``) for one pair.

    Returns ``(senders, receivers, values)`` for the edges with a positive signal, strongest
    first (only the ``top`` strongest when given).
    """
    C = sp.coo_matrix(W)
    v = C.data * np.asarray(ligand)[C.row] * np.asarray(receptor)[C.col]
    keep = v > 0
    i, j, v = C.row[keep], C.col[keep], v[keep]
    o = np.argsort(-v, kind="stable")
    if top is not None:
        o = o[: int(top)]
    return i[o], j[o], v[o]
