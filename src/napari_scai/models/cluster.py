"""Gaussian mixture clustering in torch (no R), K selection (BIC or stability), refinement.

The EM runs in float64 on the chosen device. Initialisation is deterministic for a given seed:
k-means++ seeding followed by Lloyd iterations, repeated ``n_init`` times; the restart with the
highest log-likelihood is kept. ``covariance_type="tied"`` is mclust's "EEE" model (one shared
full covariance), ``"full"`` is "VVV", ``"diag"`` is "VVI".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from napari_scai.models._runtime import check_cancel, cpu_threads, resolve_device

__all__ = ["GaussianMixture", "kmeans", "refine_labels", "select_n_components"]

_LOG2PI = math.log(2.0 * math.pi)


def _kmeanspp(X: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    n = X.shape[0]
    first = int(torch.randint(n, (1,), generator=gen).item())
    centers = [X[first]]
    d2 = ((X - X[first]) ** 2).sum(1)
    n_local = 2 + int(math.log(k))
    for _ in range(1, k):
        # greedy k-means++ (as sklearn): try n_local candidates, keep the best
        probs = (d2 / d2.sum().clamp_min(1e-300)).cpu()
        cand = torch.multinomial(probs.float() + 1e-30, n_local, replacement=True, generator=gen)
        cand = cand.to(X.device)
        dc = torch.cdist(X[cand], X) ** 2  # n_local x n
        pot = torch.minimum(dc, d2[None, :]).sum(1)
        best = int(pot.argmin().item())
        centers.append(X[cand[best]])
        d2 = torch.minimum(d2, dc[best])
    return torch.stack(centers)


def kmeans(
    X: torch.Tensor, k: int, gen: torch.Generator, max_iter: int = 100, tol: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """k-means (k-means++ init, Lloyd). Returns centers, labels, inertia."""
    C = _kmeanspp(X, k, gen)
    labels = torch.zeros(X.shape[0], dtype=torch.long, device=X.device)
    # the convergence threshold is constant: computed once, not in every Lloyd iteration
    # (recomputing it took a quarter of a 30-restart mixture fit on DLPFC)
    threshold = tol * (X.var(0).sum() + 1e-300)
    for _ in range(max_iter):
        d = torch.cdist(X, C) ** 2
        labels = d.argmin(1)
        onehot = torch.nn.functional.one_hot(labels, k).to(X.dtype)
        cnt = onehot.sum(0)
        newC = (onehot.T @ X) / cnt.clamp_min(1)[:, None]
        newC = torch.where(cnt[:, None] > 0, newC, C)  # keep empty clusters where they were
        shift = ((newC - C) ** 2).sum()
        C = newC
        if shift <= threshold:
            break
    d = torch.cdist(X, C) ** 2
    labels = d.argmin(1)
    return C, labels, float(d.gather(1, labels[:, None]).sum())


@dataclass
class _Params:
    weights: torch.Tensor  # K
    means: torch.Tensor  # K x D
    chol: torch.Tensor  # D x D (tied), K x D x D (full), K x D (diag: std)


class GaussianMixture:
    """Gaussian mixture model fitted by EM in torch.

    Parameters
    ----------
    n_components
        Number of mixture components K.
    covariance_type
        ``"tied"`` (shared full covariance, mclust EEE), ``"full"`` or ``"diag"``.
    n_init
        Number of k-means++ restarts; the best final log-likelihood is kept.
    max_iter, tol
        EM stops when the mean log-likelihood improves by less than ``tol``.
    reg_covar
        Added to covariance diagonals.
    seed
        Seed of the initialisation (deterministic).
    init_sample
        Above this many points the ``n_init`` restarts run on a seeded random subsample of this
        size, and EM then continues on all points from the best restart (as mclust does for
        large data): the restarts dominate the cost, and 50,000 points place the components
        as well as a million do. ``None``: restarts on all points.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
    """

    def __init__(
        self,
        n_components: int,
        covariance_type: str = "tied",
        n_init: int = 5,
        max_iter: int = 300,
        tol: float = 1e-4,
        reg_covar: float = 1e-6,
        seed: int = 0,
        device: Any = "auto",
        cancel: Any = None,
        init_sample: int | None = 50_000,
    ) -> None:
        if covariance_type not in ("tied", "full", "diag"):
            raise ValueError("covariance_type must be 'tied', 'full' or 'diag'")
        if n_components < 1:
            raise ValueError("n_components must be >= 1")
        self.n_components = int(n_components)
        self.covariance_type = covariance_type
        self.n_init = int(n_init)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.reg_covar = float(reg_covar)
        self.seed = int(seed)
        self.device = resolve_device(device)
        self.cancel = cancel
        self.init_sample = None if init_sample is None else int(init_sample)
        self.params_: _Params | None = None
        self.lower_bound_: float = -np.inf
        self.n_iter_: int = 0
        self.converged_: bool = False

    # ------------------------------------------------------------------ internals
    def _to(self, X: Any) -> torch.Tensor:
        if isinstance(X, torch.Tensor):
            return X.to(self.device, torch.float64)
        return torch.as_tensor(np.asarray(X), dtype=torch.float64, device=self.device)

    def _m_step(self, X: torch.Tensor, R: torch.Tensor) -> _Params:
        n, d = X.shape
        nk = R.sum(0) + 10 * torch.finfo(R.dtype).eps
        means = (R.T @ X) / nk[:, None]
        eye = torch.eye(d, dtype=X.dtype, device=X.device)
        if self.covariance_type == "tied":
            cov = X.T @ X - (nk[:, None] * means).T @ means
            cov = cov / nk.sum() + self.reg_covar * eye
            chol = torch.linalg.cholesky(0.5 * (cov + cov.T))
        elif self.covariance_type == "full":
            chols = []
            for k in range(self.n_components):
                diff = X - means[k]
                cov = (R[:, k, None] * diff).T @ diff / nk[k] + self.reg_covar * eye
                chols.append(torch.linalg.cholesky(0.5 * (cov + cov.T)))
            chol = torch.stack(chols)
        else:
            avg_x2 = (R.T @ (X * X)) / nk[:, None]
            var = avg_x2 - means**2 + self.reg_covar
            chol = var.clamp_min(self.reg_covar).sqrt()
        return _Params(nk / n, means, chol)

    def _log_prob(self, X: torch.Tensor, p: _Params) -> torch.Tensor:
        """log w_k + log N(x | mu_k, Sigma_k), shape n x K."""
        n, d = X.shape
        K = self.n_components
        out = torch.empty(n, K, dtype=X.dtype, device=X.device)
        if self.covariance_type == "tied":
            L = p.chol
            logdet = 2 * torch.log(torch.diagonal(L)).sum()
            # whiten once, then squared distances to whitened means
            Xw = torch.linalg.solve_triangular(L, X.T, upper=False).T
            Mw = torch.linalg.solve_triangular(L, p.means.T, upper=False).T
            maha = (Xw**2).sum(1)[:, None] - 2 * Xw @ Mw.T + (Mw**2).sum(1)[None, :]
            out = -0.5 * (d * _LOG2PI + logdet + maha.clamp_min(0))
        elif self.covariance_type == "full":
            for k in range(K):
                L = p.chol[k]
                logdet = 2 * torch.log(torch.diagonal(L)).sum()
                z = torch.linalg.solve_triangular(L, (X - p.means[k]).T, upper=False)
                out[:, k] = -0.5 * (d * _LOG2PI + logdet + (z**2).sum(0))
        else:
            std = p.chol
            logdet = 2 * torch.log(std).sum(1)
            maha = (((X[:, None, :] - p.means[None]) / std[None]) ** 2).sum(2)
            out = -0.5 * (d * _LOG2PI + logdet[None] + maha)
        return out + torch.log(p.weights.clamp_min(1e-300))[None, :]

    def _fit_one(self, X: torch.Tensor, gen: torch.Generator) -> tuple[_Params, float, int, bool]:
        K = self.n_components
        _, labels, _ = kmeans(X, K, gen)
        R = torch.nn.functional.one_hot(labels, K).to(X.dtype)
        return self._em(X, self._m_step(X, R))

    def _em(self, X: torch.Tensor, p: _Params) -> tuple[_Params, float, int, bool]:
        """EM from parameters ``p`` until the mean log-likelihood gains less than ``tol``."""
        prev = -np.inf
        ll = -np.inf
        converged = False
        it = 0
        for it in range(1, self.max_iter + 1):  # noqa: B007 - it is reported after the loop
            lp = self._log_prob(X, p)
            lse = torch.logsumexp(lp, 1)
            ll = float(lse.mean())
            R = torch.exp(lp - lse[:, None])
            p = self._m_step(X, R)
            if abs(ll - prev) < self.tol:
                converged = True
                break
            prev = ll
        ll = float(torch.logsumexp(self._log_prob(X, p), 1).mean())
        return p, ll, it, converged

    # ------------------------------------------------------------------ public
    def fit(self, X: Any) -> GaussianMixture:
        """Fit on ``X`` (n x d array or tensor)."""
        with cpu_threads(int(X.shape[0]), self.device):
            return self._fit(X)

    def _fit(self, X: Any) -> GaussianMixture:
        Xt = self._to(X)
        if Xt.shape[0] < self.n_components:
            raise ValueError(
                f"{Xt.shape[0]} samples cannot be split into {self.n_components} components"
            )
        gen = torch.Generator(device="cpu")
        gen.manual_seed(self.seed)
        n = Xt.shape[0]
        Xi = Xt
        if self.init_sample is not None and n > max(self.init_sample, self.n_components):
            # restarts on a seeded subsample, then EM on all points from the best of them
            idx = torch.randperm(n, generator=gen)[: self.init_sample]
            Xi = Xt[idx.sort().values.to(Xt.device)]
        best = None
        for _ in range(max(self.n_init, 1)):
            check_cancel(self.cancel)
            try:
                p, ll, it, conv = self._fit_one(Xi, gen)
            except torch.linalg.LinAlgError:
                continue
            if best is None or ll > best[1]:
                best = (p, ll, it, conv)
        if best is None:
            raise RuntimeError("GMM failed (singular covariance); increase reg_covar")
        if Xi is not Xt:
            check_cancel(self.cancel)
            best = self._em(Xt, best[0])
        self.params_, self.lower_bound_, self.n_iter_, self.converged_ = best
        self._n_features = Xt.shape[1]
        return self

    def _check(self) -> _Params:
        if self.params_ is None:
            raise RuntimeError("call fit() first")
        return self.params_

    def predict_proba(self, X: Any) -> np.ndarray:
        """Posterior probability of each component, n x K."""
        lp = self._log_prob(self._to(X), self._check())
        return torch.softmax(lp, 1).cpu().numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Most probable component per sample."""
        return self._log_prob(self._to(X), self._check()).argmax(1).cpu().numpy()

    def fit_predict(self, X: Any) -> np.ndarray:
        return self.fit(X).predict(X)

    def score(self, X: Any) -> float:
        """Mean log-likelihood per sample."""
        return float(torch.logsumexp(self._log_prob(self._to(X), self._check()), 1).mean())

    def n_parameters(self) -> int:
        K, d = self.n_components, self._n_features
        cov = {"tied": d * (d + 1) // 2, "full": K * d * (d + 1) // 2, "diag": K * d}
        return cov[self.covariance_type] + K * d + K - 1

    def bic(self, X: Any) -> float:
        """Bayesian information criterion (lower is better)."""
        n = X.shape[0]
        return -2 * self.score(X) * n + self.n_parameters() * math.log(n)

    @property
    def means_(self) -> np.ndarray:
        return self._check().means.cpu().numpy()

    @property
    def weights_(self) -> np.ndarray:
        return self._check().weights.cpu().numpy()


def select_n_components(
    X: Any, candidates: Sequence[int], **gmm_kwargs: Any
) -> tuple[int, dict[int, float], GaussianMixture]:
    """Fit one GMM per candidate K and return (best K by BIC, {K: BIC}, best model)."""
    bics: dict[int, float] = {}
    best: tuple[float, int, GaussianMixture] | None = None
    for k in candidates:
        gm = GaussianMixture(int(k), **gmm_kwargs).fit(X)
        b = gm.bic(X)
        bics[int(k)] = b
        if best is None or b < best[0]:
            best = (b, int(k), gm)
    assert best is not None
    return best[1], bics, best[2]


def refine_labels(labels: Any, graph: sp.spmatrix, n_rounds: int = 1) -> np.ndarray:
    """Neighbour-majority smoothing of labels on a sparse graph.

    A node takes the most common label among its neighbours when more than half of its
    neighbours carry that label and its own label is not that one. Ties go to the smaller
    label index, so the result is deterministic.
    """
    lab = np.asarray(labels).astype(np.int64).copy()
    A = sp.csr_matrix(graph, dtype=np.float32)
    A.setdiag(0)
    A.eliminate_zeros()
    deg = np.diff(A.indptr)
    K = int(lab.max()) + 1 if lab.size else 0
    for _ in range(int(n_rounds)):
        onehot = sp.csr_matrix(
            (np.ones(lab.size, np.float32), (np.arange(lab.size), lab)), shape=(lab.size, K)
        )
        counts = np.asarray((A @ onehot).todense())
        maj = counts.argmax(1)
        maj_n = counts[np.arange(lab.size), maj]
        change = (maj != lab) & (maj_n > deg / 2.0) & (deg > 0)
        if not change.any():
            break
        lab[change] = maj[change]
    return lab


def select_n_components_stability(
    X: Any,
    candidates: Sequence[int],
    *,
    n_resamples: int = 3,
    fraction: float = 0.8,
    seed: int = 0,
    **gmm_kwargs: Any,
) -> tuple[int, dict[int, float], GaussianMixture]:
    """Choose K by clustering stability: the K whose mixtures, fitted on random subsamples,
    label all points most alike (mean pairwise ARI). Ties go to the smaller K.

    BIC keeps falling with K on graph embeddings (clusters there are not Gaussian), so it
    over-splits; stability does not. Returns (best K, {K: stability}, mixture fitted on all of X).
    """
    from sklearn.metrics import adjusted_rand_score

    X = np.asarray(X, dtype=np.float32)
    rng = np.random.default_rng([int(seed), 7])
    subsets = [
        rng.choice(len(X), max(int(fraction * len(X)), 2), replace=False)
        for _ in range(n_resamples)
    ]
    gmm_kwargs = {k: v for k, v in gmm_kwargs.items() if k != "seed"}
    # the many subsample fits use at most 10 restarts; the final fit on all of X uses n_init
    sub_kwargs = dict(gmm_kwargs, n_init=min(int(gmm_kwargs.get("n_init", 5)), 10))
    scores: dict[int, float] = {}
    for k in candidates:
        labels = [
            GaussianMixture(int(k), seed=int(seed) + r, **sub_kwargs).fit(X[idx]).predict(X)
            for r, idx in enumerate(subsets)
        ]
        pairs = [
            adjusted_rand_score(labels[i], labels[j])
            for i in range(len(labels))
            for j in range(i + 1, len(labels))
        ]
        scores[int(k)] = float(np.mean(pairs))
    best = max(scores, key=lambda k: (round(scores[k], 6), -k))
    return best, scores, GaussianMixture(best, seed=int(seed), **gmm_kwargs).fit(X)
