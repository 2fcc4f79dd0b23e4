"""Semi-supervised Gaussian mixture for annotation-guided domains (issue 11).

The unsupervised embedding already holds the layers (a linear read-out trained on every
manual label reaches ARI ~0.9 on DLPFC), but a classifier trained on a few local strokes
extrapolates poorly along the layer bands, and the unsupervised mixture optimum is another
partition. This model uses both: a tied-covariance Gaussian mixture with one component per
annotated class, fitted by EM on *all* spots, where the responsibilities of painted spots are
clamped to their class and the unpainted spots are free (self-training in the EM sense). The
strokes fix which component is which class and pull the components towards the annotated
partition; the unlabelled spots place the component means and the shared covariance.

Calibration: the painted spots are split into folds (by stroke); for each fold the EM is run
again with that fold unclamped, and one temperature on the log-posterior is fitted on those
held-out strokes (as the guided GNN head does).

All in float64 numpy; the Mahalanobis distances use a whitened copy of the data (n x D) and
never form an n x C x D array, so memory is O(n (D + C)).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import log_softmax, logsumexp

__all__ = [
    "calibrated_semi_supervised_mixture",
    "mean_field_smooth",
    "query_mixture_refine",
    "random_walker_log_prob",
    "semi_supervised_mixture",
]

#: Edge sharpness of the random walker (issue 11, guided12): edge weight
#: ``exp(-beta * d^2 / median d^2)``, d the embedding distance across a spatial edge. Chosen on
#: development strokes (seeds 100-102): 1 and 3 measured within 0.003 ARI; 3 kept.
WALKER_BETA = 3.0


def _log_gauss(Z: np.ndarray, mu: np.ndarray, S: np.ndarray) -> np.ndarray:
    """n x C log-density (up to a constant shared by all components) under N(mu_k, S)."""
    L = np.linalg.cholesky(S)
    Zw = np.linalg.solve(L, Z.T).T  # n x D
    Mw = np.linalg.solve(L, mu.T).T  # C x D
    d2 = (Zw**2).sum(1)[:, None] - 2.0 * Zw @ Mw.T + (Mw**2).sum(1)[None, :]
    return -0.5 * np.maximum(d2, 0.0)


def semi_supervised_mixture(
    Z: np.ndarray,
    codes: np.ndarray,
    n_classes: int,
    *,
    max_iter: int = 300,
    tol: float = 1e-5,
    reg: float = 1e-4,
    init_resp: np.ndarray | None = None,
    init_cov: str = "painted",
    painted_weight: float = 1.0,
    fixed_means: bool = False,
    weights: str = "fitted",
    cancel: Any = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """EM of a tied-covariance Gaussian mixture, one component per class, painted spots clamped.

    Parameters
    ----------
    Z
        ``n x D`` embedding.
    codes
        Class per spot, ``-1`` where unpainted. Every class ``0..n_classes-1`` needs at least
        one painted spot (its component starts at the mean of its painted spots).
    n_classes
        Number of components C.
    max_iter, tol
        EM stops when no responsibility moves by more than ``tol``.
    reg
        Added to the covariance diagonal, relative to the mean variance of ``Z``.
    init_resp
        Optional ``n x C`` responsibilities to start from (e.g. an unsupervised mixture's
        posteriors matched to the classes); painted spots are clamped on top. Default: start
        from the painted spots' class means and within-class covariance.
    init_cov
        ``"painted"`` (default: within-class covariance of the painted spots) or ``"total"``
        (covariance of all spots) as the starting covariance. "total" measured lower on the
        development strokes (DESIGN-NOTES).
    painted_weight
        Weight of a painted spot in the M-step (1: as any spot; 3 and 10 measured no better).
    fixed_means
        Keep each component's mean at the mean of its painted spots; EM then fits only the
        shared covariance and the weights on all spots. Free means drift: the likelihood
        optimum splits a thick layer whose expression changes with depth between its
        neighbours (DESIGN-NOTES, round three); anchoring them measured higher on the
        development strokes.
    weights
        ``"fitted"`` (EM updates the mixing weights) or ``"painted"`` (held at the painted
        spots' class proportions). Fitted weights feed back: a component whose mean sits
        nearer a thick neighbour's spots takes them, grows, and takes more (DLPFC: a thin layer
        swallowing half of L3); held weights stop that (DESIGN-NOTES, guided round four).
    cancel
        Optional token with ``is_set()``; checked every iteration.

    Returns
    -------
    (log_post, info): ``n x C`` log-posteriors of the fitted mixture (painted spots included,
    from the same model, not clamped) and ``{"n_iter", "converged", "weights",
    "log_likelihood"}`` (mean per spot, painted spots counted in their class).
    """
    from napari_scai.models._runtime import check_cancel

    Z = np.asarray(Z, dtype=np.float64)
    codes = np.asarray(codes, dtype=np.int64)
    n, D = Z.shape
    C = int(n_classes)
    lab = codes >= 0
    counts = np.bincount(codes[lab], minlength=C)
    if counts.size != C or (counts == 0).any():
        raise ValueError(f"every class needs a painted spot; painted per class: {counts.tolist()}")
    eps = reg * float(Z.var(0).mean() or 1.0)
    # start: class means of the painted spots, covariance of their within-class residuals
    mu = np.stack([Z[codes == k].mean(0) for k in range(C)])
    res = Z[lab] - mu[codes[lab]]
    S = res.T @ res / max(lab.sum(), 1) + eps * np.eye(D)
    if init_cov == "total" or lab.sum() <= D:  # all spots' covariance (broad start)
        S = np.cov(Z.T).reshape(D, D) + eps * np.eye(D)
    if weights not in ("fitted", "painted"):
        raise ValueError(f"weights={weights!r}; use 'fitted' or 'painted'")
    log_pi = np.full(C, -np.log(C))
    if weights == "painted":
        log_pi = np.log(counts / counts.sum())
    R = None
    wt = np.where(lab, float(painted_weight), 1.0)
    if init_resp is not None:
        R0 = np.asarray(init_resp, dtype=np.float64).copy()
        R0[lab] = 0.0
        R0[lab, codes[lab]] = 1.0
        Nk = R0.sum(0) + 1e-12
        mu = (R0.T @ Z) / Nk[:, None]
        S = (Z.T @ Z - (mu * Nk[:, None]).T @ mu) / n + eps * np.eye(D)
        S = (S + S.T) / 2
        if weights == "fitted":
            log_pi = np.log(Nk / n)
        if fixed_means:
            mu = np.stack([Z[codes == k].mean(0) for k in range(C)])
    converged = False
    n_iter = 0
    for _ in range(max_iter):
        n_iter += 1
        check_cancel(cancel)
        lp = _log_gauss(Z, mu, S) + log_pi
        Rn = np.exp(log_softmax(lp, axis=1))
        Rn[lab] = 0.0
        Rn[lab, codes[lab]] = 1.0
        if R is not None and np.abs(Rn - R).max() < tol:
            R = Rn
            converged = True
            break
        R = Rn
        Rw = R * wt[:, None]
        Nk = Rw.sum(0) + 1e-12
        M = Rw.T @ Z  # C x D weighted sums
        if not fixed_means:
            mu = M / Nk[:, None]
        # tied covariance: sum_k sum_i w_i r_ik (z_i - mu_k)(z_i - mu_k)^T / sum_i w_i
        # (= Z'WZ - M'mu - mu'M + mu' diag(N) mu; with mu = M / N the last three terms merge)
        S = (Z * wt[:, None]).T @ Z - M.T @ mu - mu.T @ M + (mu * Nk[:, None]).T @ mu
        S = S / wt.sum() + eps * np.eye(D)
        S = (S + S.T) / 2
        if weights == "fitted":
            log_pi = np.log(Nk / wt.sum())
    lp = _log_gauss(Z, mu, S) + log_pi
    lse = logsumexp(lp, axis=1, keepdims=True)
    log_post = lp - lse
    # observed-data log-likelihood with the clamps (shared Gaussian constants included)
    _, logdet = np.linalg.slogdet(S)
    per = np.where(lab, lp[np.arange(n), np.maximum(codes, 0)], lse[:, 0])
    ll = float(per.mean() - 0.5 * logdet)
    return log_post, {
        "n_iter": n_iter,
        "converged": converged,
        "weights": np.exp(log_pi).tolist(),
        "log_likelihood": ll,
    }


def random_walker_log_prob(
    Z: np.ndarray,
    A: Any,
    codes: np.ndarray,
    n_classes: int,
    *,
    beta: float = WALKER_BETA,
    floor: float = 1e-6,
    rtol: float = 1e-6,
    maxiter: int = 2000,
) -> np.ndarray:
    """Random-walker (Grady 2006) class probabilities from the painted spots, as ``n x C`` logs.

    The walk runs on the spatial graph ``A`` with edge weights ``exp(-beta d^2 / median d^2)``
    (``d``: distance of the two spots in ``Z``), so it crosses edges inside a region easily and
    edges across a change of the embedding hardly: the probability that a walk from spot i
    first reaches a painted spot of class k. Painted spots keep their class. Solved with
    Jacobi-preconditioned conjugate gradients (sparse, O(edges) memory; no factorisation); a
    spot whose graph component holds no painted spot gets equal probabilities. Probabilities
    are floored at ``floor`` before the log.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import LinearOperator, cg

    Z = np.asarray(Z, dtype=np.float64)
    codes = np.asarray(codes, dtype=np.int64)
    n, C = Z.shape[0], int(n_classes)
    W = sp.coo_matrix(A)
    keep = W.row != W.col
    r, c = W.row[keep], W.col[keep]
    d2 = ((Z[r] - Z[c]) ** 2).sum(1)
    med = float(np.median(d2)) if d2.size else 1.0
    w = np.exp(-beta * d2 / (med if med > 0 else 1.0)) + 1e-6
    W = sp.csr_matrix((w, (r, c)), shape=(n, n))
    W = ((W + W.T) * 0.5).tocsr()
    lab = codes >= 0
    u = np.nonzero(~lab)[0]
    P = np.zeros((n, C))
    P[lab, codes[lab]] = 1.0
    if u.size:
        deg = np.asarray(W.sum(1)).ravel()
        Wu = W[u]  # rows of the unpainted spots, sliced once for both blocks
        # tiny ridge: a component without painted spots has a singular block; it decays to 0
        d_u = deg[u] + 1e-9 * (deg.mean() or 1.0)
        Luu = (sp.diags(d_u) - Wu[:, u]).tocsr()
        B = Wu[:, np.nonzero(lab)[0]] @ P[lab]
        M = LinearOperator(Luu.shape, matvec=lambda x: x / d_u, dtype=np.float64)
        for k in range(C):
            x, _ = cg(Luu, B[:, k], rtol=rtol, maxiter=maxiter, M=M)
            P[u, k] = np.clip(x, 0.0, None)
    P = np.maximum(P, floor)
    return np.log(P / P.sum(1, keepdims=True))


def mean_field_smooth(
    P: np.ndarray, A: Any, strength: float, *, n_iter: int = 10, floor: float = 1e-12
) -> np.ndarray:
    """Mean-field smoothing of class probabilities over a spatial graph (a Potts prior).

    Iterates ``Q <- softmax(log P + strength * S Q)`` ``n_iter`` times from ``Q = P``, with
    ``S`` the row-normalised graph ``A`` without self-loops: a spot's log-odds move towards the
    classes its neighbours hold, by at most ``strength`` nats. ``strength = 0`` returns ``P``.
    Rows stay probabilities; O(edges x C) memory.
    """
    from napari_scai.graph import normalize_adjacency

    P = np.asarray(P, dtype=np.float64)
    if strength < 0:
        raise ValueError(f"mean-field strength must be >= 0, got {strength}")
    if strength == 0 or P.shape[0] == 0:
        return P
    S = normalize_adjacency(A, self_loops=False, kind="row").astype(np.float64)
    L0 = np.log(np.maximum(P, floor))
    Q = P
    for _ in range(int(n_iter)):
        Q = np.exp(log_softmax(L0 + float(strength) * np.asarray(S @ Q), axis=1))
    return Q


def query_mixture_refine(
    P: np.ndarray,
    Z: np.ndarray,
    *,
    quantile: float = 0.5,
    weight: float = 0.1,
    cancel: Any = None,
) -> np.ndarray:
    """Refine a classifier's probabilities on an unlabelled section with its own mixture.

    Per predicted class, the spots whose confidence is at or above that class's ``quantile``
    become the seeds of a fixed-means :func:`semi_supervised_mixture` on the section's
    embedding ``Z`` (the means sit at the seeds' means; EM fits the shared covariance and the
    weights on every spot of the section), and the output is
    ``softmax(log P + weight * log_post_mixture)``: a product of the two experts, the mixture
    tempered by ``weight`` because its log-odds in 32 dimensions run to hundreds of nats. A
    class no spot is predicted as gets no seeds and no mixture term (its mixture log-posterior
    is set to the row's lowest). Rows stay probabilities. ``weight = 0`` returns ``P``.
    """
    P = np.asarray(P, dtype=np.float64)
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"quantile must be in [0, 1), got {quantile}")
    if weight < 0:
        raise ValueError(f"weight must be >= 0, got {weight}")
    n, C = P.shape
    if weight == 0 or n == 0:
        return P
    lab, conf = P.argmax(1), P.max(1)
    present = np.unique(lab)
    if present.size < 2:
        return P  # one class: nothing to separate
    codes = np.full(n, -1, dtype=np.int64)
    for j, k in enumerate(present):
        mk = lab == k
        codes[mk & (conf >= np.quantile(conf[mk], quantile))] = j
    lm, _ = semi_supervised_mixture(Z, codes, present.size, fixed_means=True, cancel=cancel)
    full = np.repeat(lm.min(1, keepdims=True), C, axis=1)
    full[:, present] = lm
    return np.exp(log_softmax(np.log(np.maximum(P, 1e-12)) + float(weight) * full, axis=1))


def fit_temperature(log_post: np.ndarray, y: np.ndarray, t_max: float = 1000.0) -> float:
    """T minimising the held-out NLL of ``softmax(log_post / T)``, T in [0.05, ``t_max``]."""
    from scipy.optimize import minimize_scalar

    if y.size == 0:
        return 1.0

    def nll(log_t: float) -> float:
        lp = log_softmax(log_post / np.exp(log_t), axis=1)
        return float(-lp[np.arange(y.size), y].mean())

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(t_max)), method="bounded")
    return float(np.exp(res.x))


def calibrated_semi_supervised_mixture(
    Z: np.ndarray,
    codes: np.ndarray,
    n_classes: int,
    fold: np.ndarray,
    *,
    graph: Any = None,
    walker_beta: float = WALKER_BETA,
    fold_ensemble: bool = True,
    free_steps: int = 0,
    cancel: Any = None,
    **em_kwargs: Any,
) -> tuple[np.ndarray, dict[str, Any]]:
    """:func:`semi_supervised_mixture` with a temperature fitted on held-out strokes.

    ``fold``: per spot, the fold (0..F-1) of a painted spot, ``-1`` for spots that are never
    held out. For each fold f the EM runs with fold f unclamped (a fold whose removal leaves a
    class without painted spots is skipped) and its posteriors on fold f are the held-out
    predictions.

    ``graph``: the spatial graph (n x n sparse). When given, the log-posterior of each fit is
    the mixture's plus :func:`random_walker_log_prob` of the same painted spots (a product of
    the two experts: the mixture says which class a spot's expression resembles, the walker
    which strokes it is connected to without crossing an expression change), with edge
    sharpness ``walker_beta``. ``fold_ensemble``: the returned probabilities are the mean of
    ``softmax(log_post / T)`` over the full fit and the held-out fits (fits that disagree
    lower the confidence); else the full fit's alone. ``free_steps``: after each fit, this
    many EM iterations with free means, started from its responsibilities (with
    ``fixed_means=True``: the means move from the painted means towards the data, short of
    the drift of a free fit to convergence; DESIGN-NOTES, guided round four).

    Returns (probabilities n x C, info with ``temperature``, ``n_held_out``,
    ``held_out_accuracy``, ``n_iter``, ``n_fits_averaged``).
    """
    from threadpoolctl import threadpool_limits

    from napari_scai.models._runtime import SMALL_PROBLEM_ROWS

    # small problems: one BLAS thread (on a busy 2-core machine threaded BLAS spin-waits: the
    # four fits on DLPFC took 15 s of CPU threaded against 1.3 s single-threaded)
    limit = 1 if np.shape(Z)[0] < SMALL_PROBLEM_ROWS else None
    with threadpool_limits(limits=limit):
        return _calibrated(
            Z,
            codes,
            n_classes,
            fold,
            graph=graph,
            walker_beta=walker_beta,
            fold_ensemble=fold_ensemble,
            free_steps=free_steps,
            cancel=cancel,
            **em_kwargs,
        )


def _calibrated(
    Z, codes, n_classes, fold, *, graph, walker_beta, fold_ensemble, free_steps, cancel, **kw
):
    def fit(y):
        lp, inf = semi_supervised_mixture(Z, y, n_classes, cancel=cancel, **kw)
        if free_steps > 0:
            free = dict(kw, fixed_means=False, max_iter=int(free_steps))
            lp, _ = semi_supervised_mixture(
                Z, y, n_classes, init_resp=np.exp(lp), cancel=cancel, **free
            )
        if graph is not None:
            lp = log_softmax(
                lp + random_walker_log_prob(Z, graph, y, n_classes, beta=walker_beta), axis=1
            )
        return lp, inf

    log_post, info = fit(codes)
    held_lp, held_y, fits = [], [], [log_post]
    for f in np.unique(fold[fold >= 0]):
        out = (fold == f) & (codes >= 0)
        y = codes.copy()
        y[out] = -1
        if np.bincount(y[y >= 0], minlength=n_classes).min() == 0:
            continue  # this fold holds a whole class: no honest held-out fit without it
        lp_f, _ = fit(y)
        held_lp.append(lp_f[out])
        held_y.append(codes[out])
        fits.append(lp_f)
    if held_y:
        H, Y = np.vstack(held_lp), np.concatenate(held_y)
        T = fit_temperature(H, Y)
        acc = float((H.argmax(1) == Y).mean())
    else:
        T, acc, Y = 1.0, float("nan"), np.empty(0)
    if not fold_ensemble:
        fits = fits[:1]
    P = np.mean([np.exp(log_softmax(lp / T, axis=1)) for lp in fits], axis=0)
    info = dict(
        info,
        temperature=T,
        n_held_out=int(Y.size),
        held_out_accuracy=acc,
        n_fits_averaged=len(fits),
    )
    return P, info
