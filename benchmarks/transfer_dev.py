"""Development harness for label transfer (issue 11, transfer round five): post-hoc variants on
cached head posteriors, embeddings and model inputs, development training seeds 100 and 101
only (the reported seeds are 0, 1, 2 and later fresh ones).

    python benchmarks/transfer_dev.py cache 100       # both directions, ~1 min each
    python benchmarks/transfer_dev.py run             # development table

Not a test; the figures and what was chosen are in docs/DESIGN-NOTES.md ("Transfer, round five").
"""

from __future__ import annotations

import json
import os
import sys
from functools import partial
from pathlib import Path

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from napari_scai.tl._transfer import _anchor_pairs  # noqa: E402

CACHE = Path(os.environ.get("SCAI_TRANSFER_DEV_CACHE", "/tmp/transfer_dev"))
DIRECTIONS = (("151673", "151674"), ("151674", "151673"))
DEV_SEEDS = (100, 101)


def cache(seed: int, tag: str = "", w_align: float = 0.0, k: int = 10, smooth: int = 0) -> None:
    """Head posteriors (query_mixture=0), smoothed embedding, model input, graph and (g)'s
    probabilities per direction, to CACHE/{ref}_{query}_{seed}{tag}.npz. ``w_align > 0``:
    MNN pairs (k, on the model input smoothed ``smooth`` rounds) pull sections together."""
    from _data import labels_of, load
    from napari_scai.models._runtime import Runtime
    from napari_scai.models.domains import DomainConfig, preserve_global_random_state
    from napari_scai.tl._domains import _guided, _label_codes, _model_inputs
    from napari_scai.tl._transfer import gene_overlap

    CACHE.mkdir(parents=True, exist_ok=True)
    for rname, qname in DIRECTIONS:
        ref, q = load(rname), load(qname)
        ov = gene_overlap(ref, [q])
        codes_ref, names, _ = _label_codes([ref], labels_of(rname), "reference")
        erode = int(os.environ.get("SCAI_TRANSFER_DEV_ERODE", "0"))
        if erode:  # leave out reference spots within `erode` hops of another class
            from napari_scai.graph import spatial_graph

            G = spatial_graph(ref)
            lab = codes_ref.copy()
            border = np.zeros(lab.size, dtype=bool)
            for c in np.unique(lab[lab >= 0]):
                near = np.asarray(G @ (lab == c).astype(np.float32)).ravel() > 0
                border |= near & (lab != c) & (lab >= 0)
            for _ in range(erode - 1):
                border |= np.asarray(G @ border.astype(np.float32)).ravel() > 0
            codes_ref = np.where(border, -1, codes_ref)
            print(f"  eroded {int(border.sum())} boundary spots of the reference", flush=True)
        codes = np.concatenate([codes_ref, np.full(q.n_obs, -1)])
        extra = json.loads(os.environ.get("SCAI_TRANSFER_DEV_CFG", "{}"))  # other cfg fields
        cfg = DomainConfig(
            **{**dict(hidden_dim=128, latent_dim=32, epochs=300, lr=1e-3, w_align=w_align), **extra}
        )
        pairs_of = partial(_anchor_pairs, k=k, smooth_rounds=smooth)

        with preserve_global_random_state():
            rt = Runtime(device="cpu", seed=seed)
            P, Z, sample, info = _guided(
                [ref, q], codes, names, rt=rt, layer=None, batch_key=None, graph="auto",
                graph_kwargs=None, n_top_genes=3000, n_comps=50, cfg=cfg, n_models=3,
                smooth_rounds=1, seed=seed, latent_dim=32, genes=ov["genes"],
                logit_smooth_rounds=3, align_pairs=pairs_of if w_align > 0 else None,
            )  # fmt: skip
            print(f"  {info['n_align_pairs']} pairs", flush=True)
            feats, *_ = _model_inputs(
                [ref, q], layer=None, batch_key=None, n_top_genes=3000, n_comps=50, seed=seed,
                rt=rt, graph="auto", graph_kwargs=None, genes=ov["genes"],
            )  # fmt: skip
        A = info["graph"]
        xy = np.vstack([ref.obsm["spatial"][:, :2], q.obsm["spatial"][:, :2]])
        tq = q.obs[labels_of(qname)].astype(str).to_numpy()
        # (g): the benchmark's reference figure, with its full probability matrix
        Pg = g_proba(ref, q, labels_of(rname), names)
        np.savez(
            CACHE / f"{rname}_{qname}_{seed}{tag}.npz",
            P=P, Z=Z, sample=sample, feats=np.asarray(feats), codes=codes, names=np.array(names),
            A_data=A.data, A_ind=A.indices, A_ptr=A.indptr, xy=xy, tq=tq, Pg=Pg,
        )  # fmt: skip
        print(f"cached {rname}->{qname} seed {seed}", flush=True)


def g_proba(ref, query, ref_key, names):
    """(g) of ``benchmarks/domains_guided.py`` with its full probability matrix."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from domains_guided import transfer_g_features

    Xr, Xq = transfer_g_features(ref, query)
    y = ref.obs[ref_key]
    lab = y.notna().to_numpy()
    sc = StandardScaler().fit(Xr[lab])
    clf = LogisticRegression(max_iter=2000).fit(sc.transform(Xr[lab]), y[lab].astype(str))
    Pq = clf.predict_proba(sc.transform(Xq))
    order = [list(clf.classes_).index(c) for c in names]
    return Pq[:, order]


def load_cache(rname, qname, seed, tag=""):
    d = dict(np.load(CACHE / f"{rname}_{qname}_{seed}{tag}.npz", allow_pickle=True))
    d["A"] = sp.csr_matrix((d.pop("A_data"), d.pop("A_ind"), d.pop("A_ptr")))
    d["names"] = list(d["names"])
    return d


def score(d, P):
    from sklearn.metrics import adjusted_rand_score, roc_auc_score

    q = d["sample"] == 1
    Pq = P if P.shape[0] == q.sum() else P[q]
    t = d["tq"]
    m = t != "nan"
    pred = np.asarray(d["names"])[Pq.argmax(1)]
    conf = Pq.max(1)
    right = pred[m] == t[m]
    return (
        adjusted_rand_score(t[m], pred[m]),
        roc_auc_score(right, conf[m]) if 0 < right.mean() < 1 else float("nan"),
        conf[m].mean(),
        right.mean(),
    )


def run(methods: dict, tag: str = "") -> None:
    rows = {}
    for name, f in methods.items():
        out = []
        for s in DEV_SEEDS:
            for rname, qname in DIRECTIONS:
                d = load_cache(rname, qname, s, tag)
                out.append(score(d, f(d)))
        rows[name] = out
        a = np.array(out)
        print(
            f"{name:60s} ARI "
            + " ".join(f"{x:.3f}" for x in a[:, 0])
            + f" | mean {a[:, 0].mean():.3f} | AUROC {a[:, 1].mean():.3f}"
            + f" | conf/acc {a[:, 2].mean():.2f}/{a[:, 3].mean():.2f}",
            flush=True,
        )


if __name__ == "__main__":
    if sys.argv[1] == "cache":
        a = sys.argv[2:]
        cache(
            int(a[0]), a[1] if len(a) > 1 else "", float(a[2]) if len(a) > 2 else 0.0,
            int(a[3]) if len(a) > 3 else 10, int(a[4]) if len(a) > 4 else 0,
        )  # fmt: skip


def cache_selftrain(
    seed: int,
    src_tag: str,
    tag: str,
    quantile: float = 0.5,
    w_align: float = 1.0,
    k: int = 20,
    smooth: int = 3,
) -> None:
    """Second round: the query's confident calls of a cached first round (per predicted class,
    confidence at or above the class's ``quantile``) join the reference labels."""
    from _data import load
    from napari_scai.models._runtime import Runtime
    from napari_scai.models.domains import DomainConfig, preserve_global_random_state
    from napari_scai.tl._domains import _guided
    from napari_scai.tl._transfer import gene_overlap

    for rname, qname in DIRECTIONS:
        d = load_cache(rname, qname, seed, src_tag)
        ref, q = load(rname), load(qname)
        ov = gene_overlap(ref, [q])
        qm = d["sample"] == 1
        P = d["P"][qm]
        lab, conf = P.argmax(1), P.max(1)
        pseudo = np.full(lab.size, -1)
        for c in np.unique(lab):
            mk = lab == c
            pseudo[mk & (conf >= np.quantile(conf[mk], quantile))] = c
        codes = d["codes"].copy()
        codes[qm] = pseudo
        cfg = DomainConfig(hidden_dim=128, latent_dim=32, epochs=300, lr=1e-3, w_align=w_align)
        pairs_of = partial(_anchor_pairs, k=k, smooth_rounds=smooth)

        with preserve_global_random_state():
            rt = Runtime(device="cpu", seed=seed)
            P2, Z2, sample, info = _guided(
                [ref, q], codes, d["names"], rt=rt, layer=None, batch_key=None, graph="auto",
                graph_kwargs=None, n_top_genes=3000, n_comps=50, cfg=cfg, n_models=3,
                smooth_rounds=1, seed=seed, latent_dim=32, genes=ov["genes"],
                logit_smooth_rounds=3, align_pairs=pairs_of if w_align > 0 else None,
            )  # fmt: skip
        out = {k_: v for k_, v in d.items() if k_ not in ("A", "names")}
        A = d["A"]
        out.update(P=P2, Z=Z2, A_data=A.data, A_ind=A.indices, A_ptr=A.indptr,
                   names=np.array(d["names"]))  # fmt: skip
        np.savez(CACHE / f"{rname}_{qname}_{seed}{tag}.npz", **out)
        print(f"cached self-training {rname}->{qname} seed {seed}", flush=True)


if __name__ == "__main__" and sys.argv[1] == "selftrain":
    cache_selftrain(int(sys.argv[2]), sys.argv[3], sys.argv[4])
