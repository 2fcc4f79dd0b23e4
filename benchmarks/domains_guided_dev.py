"""Development harness for guided domains (issue 11, guided12): post-hoc guided variants on cached
unsupervised embeddings, stroke seeds 100-102 only. First cache embeddings with
``python benchmarks/domains_guided_dev.py cache NAME SEED`` (NAME: 151673, 151674, starmap or pair),
then ``python benchmarks/domains_guided_dev.py run`` prints the development table of the adopted
variant against the round-two default. Not a test; figures are in docs/DESIGN-NOTES.md."""

import os
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import log_softmax, logsumexp, softmax
from threadpoolctl import threadpool_limits

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
CACHE = Path(os.environ.get("SCAI_GUIDED_DEV_CACHE", "/tmp/guided_dev"))
from domains_guided import scores, scribbles  # noqa: E402
from napari_scai.graph import normalize_adjacency  # noqa: E402
from napari_scai.models._guided import (  # noqa: E402
    _log_gauss,
    calibrated_semi_supervised_mixture,
    fit_temperature,
    semi_supervised_mixture,
)
from napari_scai.tl._domains import _cross_fit_folds  # noqa: E402


def load_cache(name, seed):
    d = np.load(CACHE / f"{name}_{seed}.npz", allow_pickle=True)
    A = sp.csr_matrix((d["A_data"], d["A_ind"], d["A_ptr"]))
    truth = d["truth"].astype(object)
    truth[truth == "nan"] = None
    return d["Z"], A, truth, d["xy"]


def strokes(truth, xy, seed, key="t"):
    a = ad.AnnData(X=np.zeros((truth.size, 1), np.float32))
    a.obsm["spatial"] = xy
    a.obs[key] = pd.Categorical([t for t in truth])
    painted = scribbles(a, key, seed)
    names = [c for c in a.obs[key].cat.categories if (painted == c).any()]
    idx = {c: i for i, c in enumerate(names)}
    codes = np.array([idx[p] if p is not None else -1 for p in painted])
    return codes, names


def run(methods, datasets=("151673", "151674", "starmap"), seeds=(100, 101, 102)):
    res = {m: {} for m in methods}
    for name in datasets:
        for s in seeds:
            Z, A, truth, xy = load_cache(name, s)
            codes, names = strokes(truth, xy, s)
            mask = (codes < 0) & (truth != None)  # noqa: E711
            fold = _cross_fit_folds(codes, A, xy, 3, s)
            for m, fn in methods.items():
                with threadpool_limits(1):
                    P = fn(Z, A, codes, len(names), fold, xy)
                pred = np.array(names, dtype=object)[P.argmax(1)]
                sc = scores(truth, pred, P.max(1), mask)
                res[m].setdefault(name, []).append(sc)
    for m in methods:
        line = []
        for name in datasets:
            r = res[m][name]
            aris = " ".join("{:.3f}".format(x["ari"]) for x in r)
            line.append(
                "{} {:.3f} ({}) f1 {:.3f} c/a {:.2f}/{:.2f} auc {:.3f}".format(
                    name,
                    np.mean([x["ari"] for x in r]),
                    aris,
                    np.mean([x["f1"] for x in r]),
                    np.mean([x["mean_conf"] for x in r]),
                    np.mean([x["acc"] for x in r]),
                    np.mean([x["auroc"] for x in r]),
                )
            )
        print(f"{m:28s} | " + " | ".join(line), flush=True)
    return res


def smooth(Z, A, rounds):
    S = normalize_adjacency(A, self_loops=True, kind="row")
    for _ in range(rounds):
        Z = S @ Z
    return np.asarray(Z, np.float64)


def base(rounds=1):
    def f(Z, A, codes, C, fold, xy):
        P, _ = calibrated_semi_supervised_mixture(
            smooth(Z, A, rounds), codes, C, fold, fold_ensemble=False
        )
        return P

    return f


def _tied_start(Z, codes, C, reg):
    """painted class means and their pooled (tied) covariance, ridge ``reg`` x mean variance."""
    D = Z.shape[1]
    lab = codes >= 0
    eps = reg * float(Z.var(0).mean() or 1.0)
    mu = np.stack([Z[codes == k].mean(0) for k in range(C)])
    res = Z[lab] - mu[codes[lab]]
    S = res.T @ res / lab.sum() + eps * np.eye(D)
    if lab.sum() <= D:
        S = np.cov(Z.T) + eps * np.eye(D)
    return mu, S, eps


def _row_normalised(A, beta):
    """spatial graph without self loops, rows summing to 1 (None when no prior is asked)."""
    if A is None or not beta:
        return None
    W = sp.csr_matrix(A, dtype=np.float64)
    W.setdiag(0)
    W.eliminate_zeros()
    deg = np.asarray(W.sum(1)).ravel()
    deg[deg == 0] = 1
    return sp.diags(1 / deg) @ W


def em(Z, codes, C, *, A=None, beta=0.0, max_iter=300, tol=1e-5, reg=1e-4, mf_iter=1):
    """tied mixture, painted clamped, optional Potts mean-field prior beta * (W @ R)."""
    n, D = Z.shape
    lab = codes >= 0
    mu, S, eps = _tied_start(Z, codes, C, reg)
    log_pi = np.full(C, -np.log(C))
    W = _row_normalised(A, beta)
    R = None
    for _ in range(max_iter):
        ll = _log_gauss(Z, mu, S)
        lp = ll + log_pi
        Rn = softmax(lp, axis=1)
        if W is not None:
            Rm = Rn if R is None else R
            for _ in range(mf_iter):
                Rm = softmax(lp + beta * (W @ Rm), axis=1)
                Rm[lab] = 0
                Rm[lab, codes[lab]] = 1
            Rn = Rm
        Rn[lab] = 0.0
        Rn[lab, codes[lab]] = 1.0
        if R is not None and np.abs(Rn - R).max() < tol:
            R = Rn
            break
        R = Rn
        Nk = R.sum(0) + 1e-12
        mu = (R.T @ Z) / Nk[:, None]
        S = Z.T @ Z - (mu * Nk[:, None]).T @ mu
        S = S / n + eps * np.eye(D)
        S = (S + S.T) / 2
        log_pi = np.log(Nk / n)
    ll = _log_gauss(Z, mu, S)
    lp = ll + log_pi
    if W is not None:
        Rm = R
        for _ in range(10):
            Rm = softmax(lp + beta * (W @ Rm), axis=1)
            Rm[lab] = 0
            Rm[lab, codes[lab]] = 1
        lp = lp + beta * (W @ Rm)
    return log_softmax(lp, axis=1), {
        "mu": mu,
        "S": S,
        "log_pi": log_pi,
        "ll": ll,
        "W": W,
    }


def calibrated(fit, Z, codes, C, fold, ensemble=False):
    """temperature from held-out stroke folds; with ``ensemble`` the mean over the full and
    the fold fits' probabilities (the fold mean that tl adopted), else the full fit's."""
    lp, _info = fit(Z, codes)
    H, Y, fulls = [], [], [lp]
    for f in np.unique(fold[fold >= 0]):
        out = (fold == f) & (codes >= 0)
        y = codes.copy()
        y[out] = -1
        if np.bincount(y[y >= 0], minlength=C).min() == 0:
            continue
        lpf, _ = fit(Z, y)
        H.append(lpf[out])
        Y.append(codes[out])
        fulls.append(lpf)
    T = fit_temperature(np.vstack(H), np.concatenate(Y)) if H else 1.0
    if not ensemble:
        return softmax(lp / T, axis=1)
    return np.mean([softmax(lg / T, axis=1) for lg in fulls], axis=0)


def mrf(beta, rounds=1, mf_iter=1):
    def f(Z, A, codes, C, fold, xy):
        Zs = smooth(Z, A, rounds)
        return calibrated(
            lambda Z_, c: em(Z_, c, C, A=A, beta=beta, mf_iter=mf_iter),
            Zs,
            codes,
            C,
            fold,
        )

    return f


def spread_post(alpha, rounds=1, iters=30):
    """mixture posteriors, then label spreading on the spatial graph (painted clamped)."""

    def f(Z, A, codes, C, fold, xy):
        Zs = smooth(Z, A, rounds)
        S = normalize_adjacency(A, self_loops=False, kind="sym").astype(np.float64)

        def fit(Z_, c):
            lp, _ = em(Z_, c, C)
            P0 = softmax(lp, 1)
            F = P0.copy()
            for _ in range(iters):
                F = alpha * (S @ F) + (1 - alpha) * P0
            return np.log(np.clip(F / F.sum(1, keepdims=True), 1e-12, None)), None

        return calibrated(fit, Zs, codes, C, fold)

    return f


def selftrain(rounds=1, wpaint=5.0, C_reg=1.0, iters=1):
    from sklearn.linear_model import LogisticRegression

    def f(Z, A, codes, C, fold, xy):
        Zs = smooth(Z, A, rounds)

        def fit(Z_, c):
            lp, _ = em(Z_, c, C)
            for _ in range(iters):
                y = lp.argmax(1)
                w = np.exp(lp.max(1))
                lab = c >= 0
                y[lab] = c[lab]
                w[lab] = wpaint
                clf = LogisticRegression(C=C_reg, max_iter=500).fit(Z_, y, sample_weight=w)
                lp = clf.predict_log_proba(Z_)
            return lp, None

        return calibrated(fit, Zs, codes, C, fold)

    return f


def _lg_k(Z, mu, Ss):
    out = np.empty((Z.shape[0], len(Ss)))
    for k, Sk in enumerate(Ss):
        L = np.linalg.cholesky(Sk)
        d = np.linalg.solve(L, (Z - mu[k]).T)
        out[:, k] = -0.5 * (d**2).sum(0) - np.log(np.diag(L)).sum()
    return out


def em_qda(
    Z,
    codes,
    C,
    *,
    lam=0.5,
    max_iter=300,
    tol=1e-5,
    reg=1e-4,
    A=None,
    beta=0.0,
    start_iter=0,
):
    """per-class covariance shrunk towards the tied one: S_k = (1-lam) S_k + lam S_tied."""
    n, D = Z.shape
    lab = codes >= 0
    mu, St, eps = _tied_start(Z, codes, C, reg)
    Ss = [St] * C
    log_pi = np.full(C, -np.log(C))
    W = _row_normalised(A, beta)
    R = None
    for it in range(max_iter):
        lp = (_lg_k(Z, mu, Ss) if it >= start_iter else _log_gauss(Z, mu, St)) + log_pi
        if W is not None and R is not None:
            lp = lp + beta * (W @ R)
        Rn = softmax(lp, axis=1)
        Rn[lab] = 0.0
        Rn[lab, codes[lab]] = 1.0
        if R is not None and np.abs(Rn - R).max() < tol:
            R = Rn
            break
        R = Rn
        Nk = R.sum(0) + 1e-12
        mu = (R.T @ Z) / Nk[:, None]
        Sk = []
        for k in range(C):
            d = Z - mu[k]
            Sk.append((d * R[:, k : k + 1]).T @ d / Nk[k])
        St = sum(Nk[k] * Sk[k] for k in range(C)) / n + eps * np.eye(D)
        Ss = [(1 - lam) * (Sk[k] + eps * np.eye(D)) + lam * St for k in range(C)]
        log_pi = np.log(Nk / n)
    lp = _lg_k(Z, mu, Ss) + log_pi
    if W is not None:
        lp = lp + beta * (W @ R)
    return log_softmax(lp, axis=1), None


def qda(lam, rounds=1, **kw):
    def f(Z, A, codes, C, fold, xy):
        Zs = smooth(Z, A, rounds)
        return calibrated(lambda Z_, c: em_qda(Z_, c, C, lam=lam, A=A, **kw), Zs, codes, C, fold)

    return f


def random_walker(Zs, A, codes, C, beta=1.0, eps_w=1e-6):
    """Grady's random walker on the spatial graph, edge weights exp(-beta d^2 / median d^2)."""
    from scipy.sparse.linalg import spsolve

    A = sp.csr_matrix(A, dtype=np.float64)
    A.setdiag(0)
    A.eliminate_zeros()
    Ac = A.tocoo()
    d2 = ((Zs[Ac.row] - Zs[Ac.col]) ** 2).sum(1)
    med = np.median(d2) or 1.0
    w = np.exp(-beta * d2 / med) + eps_w
    W = sp.csr_matrix((w, (Ac.row, Ac.col)), shape=A.shape)
    W = (W + W.T) / 2
    deg = np.asarray(W.sum(1)).ravel()
    L = sp.diags(deg) - W
    lab = codes >= 0
    u = ~lab
    Y = np.zeros((lab.sum(), C))
    Y[np.arange(lab.sum()), codes[lab]] = 1
    Luu = L[u][:, u].tocsc()
    Lul = L[u][:, lab]
    X = spsolve(Luu + 1e-9 * sp.eye(u.sum()), -(Lul @ Y))
    X = np.asarray(X).reshape(u.sum(), C)
    P = np.zeros((codes.size, C))
    P[lab] = Y
    P[u] = np.clip(X, 0, None)
    P /= P.sum(1, keepdims=True) + 1e-300
    return P


def rw(beta, rounds=1, mix=0.0, gamma=1.0):
    def f(Z, A, codes, C, fold, xy):
        Zs = smooth(Z, A, rounds)

        def fit(Z_, c):
            P = random_walker(Z_, A, c, C, beta)
            lp = gamma * np.log(np.clip(P, 1e-6, None))
            if mix:
                lpm, _ = em(Z_, c, C)
                lp = lp + mix * lpm
            return log_softmax(lp, 1), None

        return calibrated(fit, Zs, codes, C, fold)

    return f


def lda_project(Z, codes, C, extra=0, shrink=1e-3):
    """Project on the discriminant directions of the painted spots (C-1 + extra dims)."""
    from scipy.linalg import eigh

    lab = codes >= 0
    mu = np.stack([Z[codes == k].mean(0) for k in range(C)])
    res = Z[lab] - mu[codes[lab]]
    Sw = res.T @ res / lab.sum()
    Sw = Sw + shrink * np.trace(Sw) / Z.shape[1] * np.eye(Z.shape[1])
    m = Z[lab].mean(0)
    Sb = ((mu - m).T * np.bincount(codes[lab], minlength=C)) @ (mu - m) / lab.sum()
    _vals, vecs = eigh(Sb, Sw)
    d = min(C - 1 + extra, Z.shape[1])
    V = vecs[:, ::-1][:, :d]
    return (Z - Z.mean(0)) @ V


def ldamix(extra=0, w=1.0, rounds=1, shrink=1e-3, beta=0.0):
    def f(Z, A, codes, C, fold, xy):
        Zs = smooth(Z, A, rounds)

        def fit(Z_, c):
            Zp = lda_project(Z_, c, C, extra, shrink)
            if beta:
                return em(Zp, c, C, A=A, beta=beta)
            return semi_supervised_mixture(Zp, c, C, painted_weight=w)

        return calibrated(fit, Zs, codes, C, fold)

    return f


def wmix(w, rounds=1):
    def f(Z, A, codes, C, fold, xy):
        Zs = smooth(Z, A, rounds)
        return calibrated(
            lambda Z_, c: semi_supervised_mixture(Z_, c, C, painted_weight=w),
            Zs,
            codes,
            C,
            fold,
        )

    return f


def em_scaled(Z, codes, C, *, max_iter=300, tol=1e-5, reg=1e-4, w=1.0, smin=0.2, smax=5.0):
    """tied covariance up to a per-class scale s_k (S_k = s_k S)."""
    _n, D = Z.shape
    lab = codes >= 0
    mu, S, eps = _tied_start(Z, codes, C, reg)
    s = np.ones(C)
    log_pi = np.full(C, -np.log(C))
    wt = np.where(lab, w, 1.0)
    R = None

    def dens(mu, S, s):
        L = np.linalg.cholesky(S)
        Zw = np.linalg.solve(L, Z.T).T
        Mw = np.linalg.solve(L, mu.T).T
        d2 = np.maximum((Zw**2).sum(1)[:, None] - 2 * Zw @ Mw.T + (Mw**2).sum(1)[None], 0)
        return -0.5 * d2 / s[None] - 0.5 * D * np.log(s)[None], d2

    for _it in range(max_iter):
        lg, _ = dens(mu, S, s)
        Rn = softmax(lg + log_pi, axis=1)
        Rn[lab] = 0
        Rn[lab, codes[lab]] = 1
        if R is not None and np.abs(Rn - R).max() < tol:
            R = Rn
            break
        R = Rn
        Rw = R * wt[:, None]
        Nk = Rw.sum(0) + 1e-12
        mu = (Rw.T @ Z) / Nk[:, None]
        for _ in range(2):
            Sn = np.zeros((D, D))
            for k in range(C):
                d = Z - mu[k]
                Sn += (d * (Rw[:, k : k + 1] / s[k])).T @ d
            S = Sn / wt.sum() + eps * np.eye(D)
            S = (S + S.T) / 2
            _, d2 = dens(mu, S, s)
            s = np.clip((Rw * d2).sum(0) / (D * Nk), smin, smax)
        log_pi = np.log(Nk / wt.sum())
    lg, _ = dens(mu, S, s)
    return log_softmax(lg + log_pi, axis=1), {"s": s}


def scaled(rounds=1, proj=False, **kw):
    def f(Z, A, codes, C, fold, xy):
        Zs = smooth(Z, A, rounds)

        def fit(Z_, c):
            if proj:
                Z_ = lda_project(Z_, c, C, 0, 0.1)
            return em_scaled(Z_, c, C, **kw)

        return calibrated(fit, Zs, codes, C, fold)

    return f


def qda_proj(lam, shrink=0.1):
    def f(Z, A, codes, C, fold, xy):
        Zs = smooth(Z, A, 1)
        return calibrated(
            lambda Z_, c: em_qda(lda_project(Z_, c, C, 0, shrink), c, C, lam=lam),
            Zs,
            codes,
            C,
            fold,
        )

    return f


def em_sub(Z, codes, C, m=2, *, max_iter=300, tol=1e-5, reg=1e-4, w=1.0, spread=0.5):
    """tied mixture with m sub-components per class; painted spots clamped to their class's subs."""
    n, D = Z.shape
    lab = codes >= 0
    eps = reg * float(Z.var(0).mean() or 1.0)
    mu0 = np.stack([Z[codes == k].mean(0) for k in range(C)])
    res = Z[lab] - mu0[codes[lab]]
    S = res.T @ res / lab.sum() + eps * np.eye(D)
    # perturb sub-means along the top direction of the total covariance
    ev, evec = np.linalg.eigh(np.cov(Z.T))
    v = evec[:, -1] * np.sqrt(ev[-1])
    offs = np.linspace(-spread, spread, m) if m > 1 else np.zeros(1)
    mu = np.vstack([mu0 + o * v for o in offs])  # index j*C + k
    K = m * C
    cls = np.tile(np.arange(C), m)
    log_pi = np.full(K, -np.log(K))
    wt = np.where(lab, w, 1.0)
    mask = np.ones((n, K), bool)
    mask[lab] = cls[None, :] == codes[lab][:, None]
    R = None
    for _it in range(max_iter):
        lp = _log_gauss(Z, mu, S) + log_pi
        lp = np.where(mask, lp, -np.inf)
        Rn = softmax(lp, axis=1)
        if R is not None and np.abs(Rn - R).max() < tol:
            R = Rn
            break
        R = Rn
        Rw = R * wt[:, None]
        Nk = Rw.sum(0) + 1e-12
        mu = (Rw.T @ Z) / Nk[:, None]
        S = (Z * wt[:, None]).T @ Z - (mu * Nk[:, None]).T @ mu
        S = S / wt.sum() + eps * np.eye(D)
        S = (S + S.T) / 2
        log_pi = np.log(Nk / wt.sum())
    lp = _log_gauss(Z, mu, S) + log_pi
    lc = np.stack([logsumexp(lp[:, cls == k], axis=1) for k in range(C)], 1)
    return log_softmax(lc, axis=1), None


def sub(m, w=1.0, spread=0.5, rounds=1):
    def f(Z, A, codes, C, fold, xy):
        Zs = smooth(Z, A, rounds)
        return calibrated(lambda Z_, c: em_sub(Z_, c, C, m, w=w, spread=spread), Zs, codes, C, fold)

    return f


def calibrated_ens(fit, Z, codes, C, fold):
    return calibrated(fit, Z, codes, C, fold, ensemble=True)


def rw_ens(beta=3.0, mix=1.0, ens=True):
    def f(Z, A, codes, C, fold, xy):
        Zs = smooth(Z, A, 1)

        def fit(Z_, c):
            P = random_walker(Z_, A, c, C, beta)
            lp = np.log(np.clip(P, 1e-6, None))
            if mix:
                lpm, _ = em(Z_, c, C)
                lp = lp + mix * lpm
            return log_softmax(lp, 1), None

        return (calibrated_ens if ens else calibrated)(fit, Zs, codes, C, fold)

    return f


def base_ens():
    def f(Z, A, codes, C, fold, xy):
        return calibrated_ens(lambda Z_, c: em(Z_, c, C), smooth(Z, A, 1), codes, C, fold)

    return f


def emb(adatas, seed, genes=None):
    from napari_scai.models._runtime import Runtime
    from napari_scai.models.domains import DomainConfig, preserve_global_random_state
    from napari_scai.tl._domains import _combine, _model_inputs, _train_members

    cfg = DomainConfig(hidden_dim=128, latent_dim=32, epochs=300, lr=1e-3)
    with preserve_global_random_state():
        rt = Runtime(device="cpu", seed=seed)
        feats, batch, sample, A, coords = _model_inputs(
            adatas,
            layer=None,
            batch_key=None,
            n_top_genes=3000,
            n_comps=50,
            seed=seed,
            rt=rt,
            graph="auto",
            graph_kwargs=None,
            genes=genes,
        )
        Zs, _, _ = _train_members(
            feats,
            A,
            batch,
            coords,
            cfg,
            rt,
            seed=seed,
            n_models=3,
            labels_per_member=None,
        )
        Z = _combine(Zs, 32, seed)
    return Z, A, sample


def cache(what: str, seed: int) -> None:
    """Unsupervised embedding as the guided path computes it (before smoothing), to CACHE."""
    from _data import labels_of, load
    from napari_scai.tl._transfer import gene_overlap

    CACHE.mkdir(parents=True, exist_ok=True)
    if what == "pair":
        a, b = load("151673"), load("151674")
        ov = gene_overlap(a, [b])
        Z, A, sample = emb([a, b], seed, genes=ov["genes"])
        np.savez(
            f"{CACHE}/pair_{seed}.npz",
            Z=Z,
            sample=sample,
            A_data=A.data,
            A_ind=A.indices,
            A_ptr=A.indptr,
            t0=a.obs[labels_of("151673")].astype(str).to_numpy(),
            t1=b.obs[labels_of("151674")].astype(str).to_numpy(),
            xy=np.vstack([a.obsm["spatial"][:, :2], b.obsm["spatial"][:, :2]]),
        )
    else:
        a = load(what)
        Z, A, sample = emb([a], seed)
        np.savez(
            f"{CACHE}/{what}_{seed}.npz",
            Z=Z,
            A_data=A.data,
            A_ind=A.indices,
            A_ptr=A.indptr,
            truth=a.obs[labels_of(what)].astype(str).to_numpy(),
            xy=np.asarray(a.obsm["spatial"])[:, :2],
        )


def final():
    """The shipped default (tl/_guided.py): package code, means at the painted means."""

    def f(Z, A, codes, C, fold, xy):
        P, _ = calibrated_semi_supervised_mixture(
            smooth(Z, A, 1), codes, C, fold, graph=A, fixed_means=True
        )
        return P

    return f


if __name__ == "__main__":
    if sys.argv[1] == "cache":
        cache(sys.argv[2], int(sys.argv[3]))
    else:
        run(
            {
                "round two (mixture)": base(1),
                "mixture x walker, fold mean": rw_ens(),
                "guided12 final (fixed means x walker, fold mean)": final(),
            }
        )
