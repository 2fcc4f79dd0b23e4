"""GNN spatial-domain model: graph-convolutional autoencoder with a local contrastive term.

Model
-----
Input: per-spot features ``X`` (PCA of scaled log-expression), a normalised sparse adjacency
``Â = D^-1/2 (A + I) D^-1/2`` and optionally a one-hot batch covariate ``B``.

* encoder  ``H = ELU(Â X W1)``, ``Z = Â H W2`` (two graph convolutions)
* decoder  ``X̂ = Â [Z, B] W3`` (reconstruction of the input features; the batch one-hot lets
  the decoder explain sample effects so that ``Z`` need not)
* local contrast (DGI-like): the neighbourhood summary ``s_i = σ(mean_{j∈N(i)∪i} Z_j)`` must
  score high against ``Z_i`` and low against the embedding ``Z̃_i`` of a corrupted graph signal
  (rows of ``X`` shuffled), and vice versa for the corrupted summary; bilinear discriminator,
  binary cross-entropy.
* loss = ``w_rec · MSE(X̂, X) + w_con · BCE``.
* guided (semi-supervised) mode: a linear classification head ``softmax(Z W_h + b_h)`` with a
  cross-entropy term ``w_cls · CE`` on the labelled nodes only, so the labels shape ``Z``
  (the unsupervised terms keep it faithful to the expression of unlabelled nodes).

All neighbour aggregation is ``torch.sparse.mm`` on CSR tensors (row-parallel, deterministic,
no scatter atomics). Full batch when the graph fits; otherwise spatial tiles with a k-hop halo
(k = the model's receptive depth) so each tile's core nodes see exactly their full-batch
neighbourhood; the loss is taken on core nodes only.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from napari_scai.graph import normalize_adjacency, to_torch_csr
from napari_scai.models._runtime import Runtime, cpu_threads

__all__ = [
    "DomainConfig",
    "DomainGNN",
    "SparseAdj",
    "member_threads",
    "spatial_tiles",
    "train_domain_ensemble",
    "train_domain_model",
]


class _CSRMatMul(torch.autograd.Function):
    """``A @ x`` with CSR tensors both ways: backward uses the stored CSR of ``A.T``.

    torch's own backward for CSR @ dense is several times slower than the forward on CPU;
    this keeps both directions a row-parallel CSR product (deterministic, no atomics).
    """

    @staticmethod
    def forward(ctx, a, a_t, x):  # type: ignore[override]
        ctx.a_t = a_t
        return torch.sparse.mm(a, x)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return None, None, torch.sparse.mm(ctx.a_t, g.contiguous())


class SparseAdj:
    """A sparse operator kept as CSR tensors of ``A`` and ``A.T`` (shared when symmetric)."""

    def __init__(self, A: sp.spmatrix, device: Any, symmetric: bool | None = None) -> None:
        A = sp.csr_matrix(A, dtype=np.float32)
        if symmetric is None:
            symmetric = abs(A - A.T).max() < 1e-6 if A.nnz else True
        self.a = to_torch_csr(A, device)
        self.a_t = self.a if symmetric else to_torch_csr(A.T.tocsr(), device)
        self.shape = A.shape

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _CSRMatMul.apply(self.a, self.a_t, x)
        return torch.sparse.mm(self.a, x)


# encoder 2 hops + decoder 1 hop + summary 1 hop
RECEPTIVE_HOPS = 4


@dataclass
class DomainConfig:
    """Hyperparameters of :class:`DomainGNN` and its training loop."""

    hidden_dim: int = 128
    latent_dim: int = 32
    epochs: int = 400
    lr: float = 1e-3
    weight_decay: float = 0.0
    w_rec: float = 10.0
    w_con: float = 1.0
    dropout: float = 0.0
    mask_rate: float = 0.0
    max_full_batch: int = 400_000
    tile_size: int = 100_000
    #: weight of the guided cross-entropy term, equal to ``w_rec``: the labelled nodes' classes
    #: count as much as their reconstruction (1.0 measured 0.015 ARI lower on a DLPFC dev check)
    w_cls: float = 10.0
    #: weight of the cross-section alignment term (``pairs`` of :func:`train_domain_ensemble`):
    #: mean squared embedding distance of mutual-nearest-neighbour spot pairs across sections;
    #: 0 leaves it out (the default everywhere except label transfer)
    w_align: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _prop(adj: Any, t: torch.Tensor) -> torch.Tensor:
    """``adj @ t[:, m]`` for every member m of ``t`` (n x M x d), as one sparse product."""
    n, m, d = t.shape
    return (adj @ t.reshape(n, m * d)).view(n, m, d)


def _lin(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """Per-member affine map: ``t`` n x f (shared) or n x M x f, ``w`` M x f x o -> n x M x o.

    ``b`` (M x o) may be None (no bias); otherwise it is added inside the GEMM (``addmm``).
    One member is a plain GEMM with no batched-matmul permutes: the CPU path, where members
    train one after the other.
    """
    m, f, o = w.shape
    if t.dim() == 2 or m == 1:
        t2 = t if t.dim() == 2 else t.reshape(-1, f)
        w2 = w[0] if m == 1 else w.permute(1, 0, 2).reshape(f, m * o)  # members side by side
        out = t2 @ w2 if b is None else torch.addmm(b.reshape(m * o), t2, w2)
        return out.view(-1, m, o)
    out = torch.einsum("nmf,mfo->nmo", t, w)
    return out if b is None else out + b


def _with_bias_row(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[W; b]`` (M x (f + 1) x o): the affine map ``x W + b`` as ``[x, 1] [W; b]``."""
    return torch.cat([w, b.unsqueeze(1)], 1)


def _ones_column(x: torch.Tensor) -> torch.Tensor:
    """``[x, 1]`` along the last axis."""
    return torch.cat([x, x.new_ones(*x.shape[:-1], 1)], -1)


class DomainGNN(nn.Module):
    """Two-layer GCN encoder, one-layer GCN decoder, bilinear local discriminator.

    ``n_members`` independent models are held as stacked weights (M x fan_in x fan_out) and
    trained in one pass on n x M x d activations: every graph product serves all members at
    once (one sparse product over M x d columns), so an ensemble needs M times fewer kernel
    launches than M separate runs. Members share only the input; each has its own
    initialisation and shuffles.
    """

    def __init__(
        self,
        in_dim: int,
        cfg: DomainConfig,
        n_batches: int = 0,
        out_dim: int | None = None,
        n_members: int = 1,
        n_classes: int = 0,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_batches = n_batches
        self.n_members = m = int(n_members)
        h, z, o = cfg.hidden_dim, cfg.latent_dim, out_dim or in_dim
        self.out_dim = o

        def weight(fan_in: int, fan_out: int) -> nn.Parameter:
            return nn.Parameter(torch.zeros(m, fan_in, fan_out))

        self.w1, self.b1 = weight(in_dim, h), nn.Parameter(torch.zeros(m, h))
        self.w2, self.b2 = weight(h, z), nn.Parameter(torch.zeros(m, z))
        self.wd, self.bd = weight(z + n_batches, o), nn.Parameter(torch.zeros(m, o))
        # bilinear discriminator z^T W s + b, written as a matmul (nn.Bilinear is ~10x slower)
        self.wc, self.bc = weight(z, z), nn.Parameter(torch.zeros(m))
        self.n_classes = c = int(n_classes)
        if c > 0:  # guided mode: linear classification head on the embedding
            self.wh, self.bh = weight(z, c), nn.Parameter(torch.zeros(m, c))

    def init_member(self, member: int, gen: torch.Generator) -> None:
        """Uniform(+-1/sqrt(fan_in)) weights from ``gen``, zero biases (deterministic)."""
        heads = (self.wh,) if self.n_classes else ()
        with torch.no_grad():
            for w in (self.w1, self.w2, self.wd, self.wc, *heads):
                fan_in, fan_out = w.shape[1:]
                bound = 1.0 / math.sqrt(fan_in)
                # drawn as (out, in) like nn.Linear's weight, so a given seed means the same model
                draw = torch.empty(fan_out, fan_in).uniform_(-bound, bound, generator=gen)
                w[member].copy_(draw.T)
            for b in (self.b1, self.b2, self.bd, self.bc) + ((self.bh,) if heads else ()):
                b[member].zero_()

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """Class logits (n x M x C) of the guided head."""
        return _lin(z, self.wh, self.bh)

    def disc(self, z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return (_lin(z, self.wc, None) * s).sum(-1) + self.bc

    def encode(self, x: torch.Tensor, adj: Any, ax1: torch.Tensor | None = None) -> torch.Tensor:
        """x: n x f (shared by all members) or n x M x f; returns n x M x latent.

        The first layer ``adj (x W1 + b1)`` is evaluated as ``(adj [x, 1]) [W1; b1]``, the same
        map in the cheaper order: the sparse product runs over the f + 1 input columns rather
        than the hidden width and, the input needing no gradient, has no backward product.
        ``ax1`` is ``adj @ [x, 1]`` when the caller has it (constant for a fixed input, so the
        training loop computes it once).
        """
        if ax1 is None:
            x1 = _ones_column(x)
            ax1 = adj @ x1 if x1.dim() == 2 else _prop(adj, x1)
        h = F.elu(_lin(ax1, _with_bias_row(self.w1, self.b1), None))
        if self.cfg.dropout > 0:
            h = F.dropout(h, self.cfg.dropout, self.training)
        return _prop(adj, _lin(h, self.w2, self.b2))

    def decode(self, z: torch.Tensor, adj: Any, b: torch.Tensor | None) -> torch.Tensor:
        if b is not None:
            z = torch.cat([z, b.unsqueeze(1).expand(-1, z.shape[1], -1)], -1)
        if z.shape[-1] < self.out_dim:  # propagate the narrower side: (adj [z, 1]) [Wd; bd]
            return _lin(_prop(adj, _ones_column(z)), _with_bias_row(self.wd, self.bd), None)
        return _prop(adj, _lin(z, self.wd, self.bd))

    def forward(
        self,
        x: torch.Tensor,
        adj: Any,
        mean_adj: Any,
        perm: torch.Tensor,
        b: torch.Tensor | None = None,
        ax1: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (embedding, reconstruction, contrastive loss per node): n x M (x d) each.

        ``x`` is n x f or n x M x f; ``perm`` is M x n, one shuffle per member (the corruption);
        ``ax1`` optionally ``adj @ [x, 1]`` (see :meth:`encode`).
        """
        z = self.encode(x, adj, ax1)
        # member m sees rows perm[m] of its input
        xs = torch.stack(
            [(x if x.dim() == 2 else x[:, i]).index_select(0, p) for i, p in enumerate(perm)], 1
        )
        z_neg = self.encode(xs, adj)
        s = torch.sigmoid(_prop(mean_adj, z))
        s_neg = torch.sigmoid(_prop(mean_adj, z_neg))
        # bilinear scores z^T Wc s: z Wc and z_neg Wc serve two scores each
        zw, zw_neg = _lin(z, self.wc, None), _lin(z_neg, self.wc, None)
        pos = (zw * s).sum(-1) + self.bc
        neg = (zw_neg * s).sum(-1) + self.bc
        pos2 = (zw_neg * s_neg).sum(-1) + self.bc
        neg2 = (zw * s_neg).sum(-1) + self.bc
        one, zero = torch.ones_like(pos), torch.zeros_like(pos)
        con = (
            F.binary_cross_entropy_with_logits(pos, one, reduction="none")
            + F.binary_cross_entropy_with_logits(neg, zero, reduction="none")
            + F.binary_cross_entropy_with_logits(pos2, one, reduction="none")
            + F.binary_cross_entropy_with_logits(neg2, zero, reduction="none")
        ) / 2
        return z, self.decode(z, adj, b), con


def spatial_tiles(coords: np.ndarray, tile_size: int) -> list[np.ndarray]:
    """Split cells into spatially compact tiles of about ``tile_size`` cells (strips x chunks)."""
    n = coords.shape[0]
    n_tiles = max(1, math.ceil(n / tile_size))
    if n_tiles == 1:
        return [np.arange(n)]
    n_strips = max(1, int(round(math.sqrt(n_tiles))))
    order_x = np.argsort(coords[:, 0], kind="stable")
    tiles = []
    for strip in np.array_split(order_x, n_strips):
        per = max(1, math.ceil(len(strip) / tile_size))
        strip = strip[np.argsort(coords[strip, 1], kind="stable")]
        tiles.extend(np.sort(t) for t in np.array_split(strip, per) if t.size)
    return tiles


def _khop(A: sp.csr_matrix, core: np.ndarray, hops: int) -> np.ndarray:
    mask = np.zeros(A.shape[0], dtype=bool)
    mask[core] = True
    frontier = mask.copy()
    for _ in range(hops):
        reach = np.asarray(A[frontier].sum(axis=0)).ravel() > 0 if frontier.any() else frontier
        frontier = reach & ~mask
        mask |= reach
        if not frontier.any():
            break
    return np.nonzero(mask)[0]


class _Part:
    """A (sub)graph ready for the model: features, adjacencies, batch one-hot, core mask."""

    def __init__(self, idx, core_mask, X, adj_n, adj_m, B, device, T=None, Y=None):
        self.idx = idx
        sub = (lambda M: M) if idx is None else (lambda M: M[idx][:, idx])
        self.x = torch.from_numpy(X if idx is None else X[idx]).to(device)
        self.t = self.x if T is None else torch.from_numpy(T if idx is None else T[idx]).to(device)
        self.adj = SparseAdj(sub(adj_n), device, symmetric=True)
        # the first layer's propagation of the input [x, 1] (see DomainGNN.encode), once
        self.ax1 = self.adj @ _ones_column(self.x)
        self.mean_adj = SparseAdj(sub(adj_m), device, symmetric=False)
        self.b = None if B is None else torch.from_numpy(B if idx is None else B[idx]).to(device)
        self.core = None if core_mask is None else torch.from_numpy(core_mask).to(device)
        self.n = self.x.shape[0]
        self.y = self.labelled = None
        if Y is not None:
            y = Y if idx is None else Y[idx]
            lab = y >= 0
            if core_mask is not None:
                lab &= core_mask  # the loss is taken on core nodes only
            self.y = torch.from_numpy(np.maximum(y, 0)).to(device)
            self.labelled = torch.from_numpy(np.nonzero(lab)[0]).to(device)


def train_domain_model(
    X: np.ndarray,
    graph: sp.spmatrix,
    cfg: DomainConfig | None = None,
    runtime: Runtime | None = None,
    *,
    batch: np.ndarray | None = None,
    coords: np.ndarray | None = None,
    target: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Train :class:`DomainGNN` on features ``X`` over ``graph``; return (embedding, info).

    Parameters
    ----------
    X
        ``n x f`` float features (e.g. PCA).
    graph
        Binary symmetric adjacency (scipy sparse, no self-loops needed).
    cfg
        Hyperparameters.
    runtime
        Device, seed, progress, cancel.
    batch
        Integer batch code per node (joint mode); decoder receives its one-hot.
    coords
        Node coordinates for tiling (mini-batch path); required when ``n > cfg.max_full_batch``.
    target
        What the decoder reconstructs (default: ``X`` itself), e.g. scaled HVG expression.
    labels
        Guided mode: integer class per node, ``-1`` where unlabelled. A classification head
        with a cross-entropy term (weight ``cfg.w_cls``) on the labelled nodes is trained too;
        ``info["logits"]`` then holds its class logits for every node.
    """
    rt = runtime or Runtime()
    Zs, info = train_domain_ensemble(
        X,
        graph,
        cfg,
        rt,
        seeds=[rt.seed],
        batch=batch,
        coords=coords,
        target=target,
        labels=labels,
    )
    info["reconstruction"] = info["reconstruction"][0]
    if info.get("logits") is not None:
        info["logits"] = info["logits"][0]
    return Zs[0], info


@contextlib.contextmanager
def preserve_global_random_state() -> Iterator[None]:
    """Restore the caller's global RNG states and torch determinism flags on exit.

    :meth:`Runtime.start` seeds python/numpy/torch globally and switches torch to
    deterministic algorithms (so third-party code inside a run is reproducible); a model run
    must not leave those changes behind in the user's session.
    """
    py_state = random.getstate()
    np_state = np.random.get_state()  # noqa: NPY002 - saving the legacy global state on purpose
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    det = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    had_cublas = "CUBLAS_WORKSPACE_CONFIG" in os.environ
    fill = torch.utils.deterministic.fill_uninitialized_memory
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        torch.utils.deterministic.fill_uninitialized_memory = fill
        if not had_cublas:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def train_domain_ensemble(
    X: np.ndarray,
    graph: sp.spmatrix,
    cfg: DomainConfig | None = None,
    runtime: Runtime | None = None,
    *,
    seeds: list[int],
    batch: np.ndarray | None = None,
    coords: np.ndarray | None = None,
    target: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    pairs: np.ndarray | None = None,
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Train ``len(seeds)`` independent models (see :class:`DomainGNN`).

    Member ``m`` is initialised and shuffled from ``seeds[m]`` alone, so it is the model that
    :func:`train_domain_model` trains with that seed (bit for bit when the members train
    separately, up to floating-point summation order when they share a pass). How they train:

    * on a GPU, full batch: all members in one pass (stacked weights; kernel launches, not
      flops, bound these small graphs);
    * on a CPU, a small full-batch problem (one intra-op thread, see
      :func:`~napari_scai.models._runtime.cpu_threads`): each member single-threaded in its own
      Python thread, all at once (:func:`member_threads`), so a 2-core machine runs 3 members
      in well under the time of 3 in turn; each member's result is exactly that of a separate
      run;
    * otherwise (large problems, the tiled path, dropout): one after the other. On the tiled
      path the order of the tiles is drawn from each member's own generator.

    ``runtime`` gives the device, progress and cancel (its seed seeds global state only, and
    the caller's global RNG state and determinism flags are restored afterwards). Progress
    messages name the member(s) in training (``"model 2/3: ..."``, ``"models 1-3/3 in
    parallel: ..."``). ``pairs`` (P x 2 node indices, e.g. mutual nearest neighbours across
    sections) adds ``cfg.w_align`` times their mean squared embedding distance to the loss
    (full batch only). Returns one embedding per member and an info dict (loss history summed
    over members).
    """
    cfg = cfg or DomainConfig()
    rt = runtime or Runtime()
    if not seeds:
        raise ValueError("seeds must name at least one model")
    seeds = [int(s) for s in seeds]
    n = int(np.shape(X)[0])
    M = len(seeds)
    full = n <= cfg.max_full_batch
    with preserve_global_random_state(), cpu_threads(n, rt.device) as n_threads:
        if M == 1 or (full and torch.device(rt.device).type != "cpu"):
            outer = rt.progress
            if outer is not None and M > 1:
                rt.progress = lambda i, t, msg: outer(i, t, f"models 1-{M}/{M}: {msg}")
            try:
                return _train(X, graph, cfg, rt, seeds, batch, coords, target, labels, pairs)
            finally:
                rt.progress = outer
        args = (X, graph, cfg, batch, coords, target, labels, pairs)
        workers = member_threads(M, n_threads) if full and cfg.dropout == 0 else 1
        if workers > 1:
            results = _train_in_threads(rt, seeds, workers, args)
        else:
            results = _train_one_by_one(rt, seeds, args)
        return _merge_members(results)


def member_threads(n_members: int, intra_op_threads: int) -> int:
    """How many members train at once in Python threads on a CPU (1: one after the other).

    Only when each member runs single-threaded (small problems, see ``cpu_threads``): one
    member's kernels are then too small to use several cores, but members are independent and
    torch releases the GIL inside its kernels. One thread more than the cores, so that a core
    stays busy while another member holds the GIL between kernels; at most one per member.
    """
    cores = os.cpu_count() or 1
    if n_members < 2 or intra_op_threads != 1 or cores < 2:
        return 1
    return min(n_members, cores + 1)


def _member_runtime(rt: Runtime, progress: Any, cancel: Any) -> Runtime:
    """The runtime of one member: the caller's device and seed (global state only)."""
    return Runtime(device=rt.device, seed=rt.seed, progress=progress, cancel=cancel)


def _train_one_by_one(rt: Runtime, seeds: list[int], args: tuple) -> list[tuple]:
    X, graph, cfg, batch, coords, target, labels, pairs = args
    outer, M = rt.progress, len(seeds)
    results = []
    for m, s in enumerate(seeds):
        progress = None
        if outer is not None:

            def progress(i: int, t: int, msg: str, m: int = m) -> None:
                outer(m * t + i, M * t, f"model {m + 1}/{M}: {msg}")

        mrt = _member_runtime(rt, progress, rt.cancel)
        results.append(_train(X, graph, cfg, mrt, [s], batch, coords, target, labels, pairs))
    return results


class _EitherSet:
    """Cancel token that is set when the caller's token or an internal event is set."""

    def __init__(self, outer: Any, inner: Any) -> None:
        self.outer, self.inner = outer, inner

    def is_set(self) -> bool:
        return self.inner.is_set() or (self.outer is not None and self.outer.is_set())


def _train_in_threads(rt: Runtime, seeds: list[int], workers: int, args: tuple) -> list[tuple]:
    """Members in ``workers`` Python threads, each single-threaded: exactly separate runs.

    The threads never call the caller's progress callback; they record their epoch and the
    calling thread reports (so a GUI's callback runs in the thread it always ran in). The
    first error in a member (e.g. :class:`Cancelled`) stops the others and is raised here.
    """
    import threading

    X, graph, cfg, batch, coords, target, labels, pairs = args
    M = len(seeds)
    stop = threading.Event()
    cancel = _EitherSet(rt.cancel, stop)
    done = [0] * M
    total = [max(int(cfg.epochs), 1)] * M
    results: list[Any] = [None] * M
    errors: list[BaseException] = []
    todo = list(range(M))
    lock = threading.Lock()

    def work() -> None:
        while not stop.is_set():
            with lock:
                if not todo:
                    return
                m = todo.pop(0)

            def progress(i: int, t: int, msg: str, m: int = m) -> None:
                done[m], total[m] = int(i), max(int(t), 1)

            mrt = _member_runtime(rt, progress, cancel)
            try:
                results[m] = _train(
                    X, graph, cfg, mrt, [seeds[m]], batch, coords, target, labels, pairs
                )
                done[m] = total[m]
            except BaseException as err:  # noqa: BLE001 - re-raised in the calling thread
                with lock:
                    errors.append(err)
                stop.set()
                return

    threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    label = f"models 1-{M}/{M} in parallel"
    last = -1
    alive = threads
    try:
        while alive:
            alive[0].join(timeout=0.25)
            alive = [t for t in alive if t.is_alive()]
            step = sum(done)
            if rt.progress is not None and step != last and not errors:
                last = step
                rt.progress(step, sum(total), f"{label}: training epoch {min(done)}/{total[0]}")
    finally:  # e.g. the progress callback raised: stop the members before leaving
        if alive:
            stop.set()
            for t in alive:
                t.join()
    if errors:
        raise errors[0]
    return results


def _merge_members(results: list[tuple]) -> tuple[list[np.ndarray], dict[str, Any]]:
    """One (embeddings, info) from single-member runs, as one ensemble run returns them."""
    Zs = [Z for Zm, _ in results for Z in Zm]
    infos = [inf for _, inf in results]
    info = dict(infos[0])
    info["loss_history"] = list(np.sum([i["loss_history"] for i in infos], axis=0))
    info["n_members"] = len(Zs)
    info["final_loss_per_member"] = [
        float(i["loss_history"][-1]) if i["loss_history"] else float("nan") for i in infos
    ]
    info["reconstruction"] = np.concatenate([i["reconstruction"] for i in infos])
    if infos[0].get("logits") is not None:
        info["logits"] = np.concatenate([i["logits"] for i in infos])
    return Zs, info


def _adam_impl(device: torch.device) -> dict[str, bool]:
    """Adam's fused kernel (one pass over all parameters; the same update rule) where torch
    has it for the device: per-step optimiser overhead is a visible share of a small epoch."""
    return {"fused": True} if torch.device(device).type in ("cpu", "cuda") else {}


def _pair_difference(pairs: Any, n: int, device: Any) -> SparseAdj | None:
    """``D`` (P x n, +1 at the first spot of a pair, -1 at the second) as CSR tensors both
    ways, so ``D @ z`` gives the pairs' embedding differences with no gather or scatter (the
    backward is ``D.T @ g``, a row-parallel CSR product: deterministic, no atomics)."""
    if pairs is None or len(pairs) == 0:
        return None
    p = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if p.min() < 0 or p.max() >= n:
        raise ValueError(f"pairs must index nodes 0..{n - 1}")
    k = p.shape[0]
    rows = np.repeat(np.arange(k), 2)
    vals = np.tile(np.array([1.0, -1.0], dtype=np.float32), k)
    D = sp.csr_matrix((vals, (rows, p.ravel())), shape=(k, n))
    return SparseAdj(D, device, symmetric=False)


def _train(X, graph, cfg, rt, seeds, batch, coords, target, labels=None, pairs=None):
    rt.start()
    # Deterministic mode also fills every new tensor with NaN (a debugging aid against reads
    # of uninitialised memory, which this loop never does): ~150 of the ~185 fills an epoch
    # that took 17% of a profiled CPU epoch. Results are unchanged; the caller's setting is
    # restored on exit (preserve_global_random_state in train_domain_ensemble).
    torch.utils.deterministic.fill_uninitialized_memory = False
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    dev = rt.device
    X = np.ascontiguousarray(X, dtype=np.float32)
    n = X.shape[0]
    A = sp.csr_matrix(graph, dtype=np.float32)
    adj_n = normalize_adjacency(A, self_loops=True, kind="sym")
    adj_m = normalize_adjacency(A, self_loops=True, kind="row")
    B = None
    n_b = 0
    if batch is not None:
        codes = np.asarray(batch).astype(np.int64)
        n_b = int(codes.max()) + 1
        if n_b > 1:
            B = np.eye(n_b, dtype=np.float32)[codes]
        else:
            n_b = 0
    T = None if target is None else np.ascontiguousarray(target, dtype=np.float32)
    Y = None
    n_c = 0
    if labels is not None:
        Y = np.asarray(labels, dtype=np.int64)
        if Y.shape != (n,):
            raise ValueError(f"labels must have one entry per node ({n}), got shape {Y.shape}")
        if not (Y >= 0).any():
            raise ValueError("labels has no labelled node (all -1)")
        n_c = int(Y.max()) + 1
    model = DomainGNN(
        X.shape[1],
        cfg,
        n_b,
        out_dim=None if T is None else T.shape[1],
        n_members=len(seeds),
        n_classes=n_c,
    )
    for m, g in enumerate(gens):  # deterministic init from each member's own generator
        model.init_member(m, g)
    model.to(dev)
    opt = torch.optim.Adam(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, **_adam_impl(dev)
    )

    if n <= cfg.max_full_batch:
        parts = [_Part(None, None, X, adj_n, adj_m, B, dev, T, Y)]
    else:
        if coords is None:
            raise ValueError("coords are needed for the mini-batch (tiled) path")
        parts = []
        for core in spatial_tiles(np.asarray(coords), cfg.tile_size):
            idx = _khop(A, core, RECEPTIVE_HOPS)
            parts.append(_Part(idx, np.isin(idx, core), X, adj_n, adj_m, B, dev, T, Y))
    # cross-section alignment pairs (full batch only: a tile would cut pairs apart)
    D = _pair_difference(pairs, n, dev) if cfg.w_align > 0 and len(parts) == 1 else None
    total = cfg.epochs
    history = []
    model.train()
    for epoch in range(cfg.epochs):
        rt.check()
        # tile order: one order for all members, from the first member's generator
        order = torch.randperm(len(parts), generator=gens[0]).tolist() if len(parts) > 1 else [0]
        ep_loss = 0.0
        for pi in order:
            if len(parts) > 1:
                rt.check()
            part = parts[pi]
            perm = torch.stack([torch.randperm(part.n, generator=g) for g in gens]).to(dev)
            x_in = part.x
            if cfg.mask_rate > 0:
                # masked-feature denoising: masked spots must be rebuilt from their neighbours
                keep = torch.stack(
                    [(torch.rand(part.n, 1, generator=g) >= cfg.mask_rate) for g in gens], 1
                ).to(dev)  # n x M x 1
                x_in = part.x.unsqueeze(1) * keep
            ax1 = part.ax1 if x_in is part.x else None
            z, xr, con = model(x_in, part.adj, part.mean_adj, perm, part.b, ax1)
            rec = ((xr - part.t.unsqueeze(1)) ** 2).mean(-1)  # n x M
            if part.core is not None:
                rec, con = rec[part.core], con[part.core]
            # members are independent: the gradient of the sum is each member's own
            loss = (cfg.w_rec * rec.mean(0) + cfg.w_con * con.mean(0)).sum()
            if part.labelled is not None and part.labelled.numel():
                zl = z[part.labelled]  # L x M x latent
                logits = model.classify(zl)
                yl = part.y[part.labelled]
                ce = F.cross_entropy(
                    logits.reshape(-1, n_c),
                    yl.repeat_interleave(len(seeds)),
                    reduction="none",
                ).view(-1, len(seeds))
                loss = loss + cfg.w_cls * ce.mean(0).sum()
            if D is not None:
                diff = (D @ z.reshape(part.n, -1)).view(-1, z.shape[1], z.shape[2])
                loss = loss + cfg.w_align * (diff**2).sum(-1).mean(0).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ep_loss += float(loss.detach()) / len(parts)
        history.append(ep_loss)
        if epoch % 10 == 0 or epoch == cfg.epochs - 1:
            rt.report(epoch + 1, total, f"training epoch {epoch + 1}/{total}, loss {ep_loss:.4f}")
    model.eval()
    M = len(seeds)
    Z = np.empty((M, n, cfg.latent_dim), dtype=np.float32)
    R = np.empty((M, n, model.out_dim), dtype=np.float32)
    L = np.empty((M, n, n_c), dtype=np.float32) if n_c else None
    with torch.no_grad():
        for part in parts:
            zt = model.encode(part.x, part.adj, part.ax1)
            z = zt.transpose(0, 1).cpu().numpy()  # M x n x latent
            r = model.decode(zt, part.adj, part.b).transpose(0, 1).cpu().numpy()
            lg = model.classify(zt).transpose(0, 1).cpu().numpy() if n_c else None
            if part.idx is None:
                Z[:], R[:] = z, r
                if n_c:
                    L[:] = lg
            else:
                core = part.core.cpu().numpy()
                Z[:, part.idx[core]] = z[:, core]
                R[:, part.idx[core]] = r[:, core]
                if n_c:
                    L[:, part.idx[core]] = lg[:, core]
    info = {
        "loss_history": history,
        "n_parts": len(parts),
        "n_members": M,
        "device": str(dev),
        "reconstruction": R,
        "logits": L,
        "n_align_pairs": 0 if D is None else int(D.shape[0]),
    }
    return list(Z), info
