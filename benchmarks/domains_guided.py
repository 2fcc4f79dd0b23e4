"""Guided spatial domains and label transfer (issue 11): GNN vs reference figures, same run.

    python benchmarks/domains_guided.py                         # all: guided + transfer
    python benchmarks/domains_guided.py --datasets 151673 --stroke-seeds 0 --no-transfer

Guided protocol: for each manual layer, two disc-shaped strokes centred on random spots of that
layer, of radius 3 spot spacings (spacing = median nearest-neighbour distance), keeping only
spots of that layer inside the disc; ARI and macro-F1 on the labelled spots that were not
painted; stroke seeds 0, 1, 2 (the model seed is the stroke seed). Reference figures in the
same run on the same spots: (g) the smoothed-PCA features of baseline (b) (3000 HVGs, PCA 30,
3 rounds of kNN-7 averaging) + multinomial logistic regression (scikit-learn, defaults) trained
on the painted spots; and the unsupervised model (spatial_domains, K = number of layers).
Transfer: reference 151673 -> query 151674 and the reverse, scored on the query's labelled
spots; (g) there is the joint PCA of the shared genes (per-section scaling), smoothed within
each section, logistic regression on the reference's labelled spots. AUROC: the confidence as
a score for "the call is right". Results go to benchmarks/RESULTS.md ("Guided domains").
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data import labels_of, load  # noqa: E402
from domains import PeakRSS, knn_smoothing_operator  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def scribbles(adata, truth_key: str, seed: int, per_layer: int = 2, radius_spacings: float = 3.0):
    """Painted strokes as an object array (class or None), per the protocol above."""
    from scipy.spatial import cKDTree

    from napari_scai.tl._contours import estimate_pitch

    rng = np.random.default_rng(seed)
    xy = np.asarray(adata.obsm["spatial"], dtype=np.float64)[:, :2]
    truth = adata.obs[truth_key]
    t = truth.astype(object).where(truth.notna(), None).to_numpy()
    r = radius_spacings * estimate_pitch(xy)
    tree = cKDTree(xy)
    painted = np.full(adata.n_obs, None, dtype=object)
    for c in truth.cat.categories:
        members = np.nonzero(t == c)[0]
        if members.size == 0:
            continue
        for i in rng.choice(members, min(per_layer, members.size), replace=False):
            near = np.asarray(tree.query_ball_point(xy[i], r), dtype=np.int64)
            painted[near[t[near] == c]] = c
    return painted


def smoothed_pca(adata) -> np.ndarray:
    from domains import baseline_features

    return baseline_features(adata, smooth=True)


def logreg(X_train, y_train, X):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(X_train)
    clf = LogisticRegression(max_iter=2000).fit(sc.transform(X_train), y_train)
    P = clf.predict_proba(sc.transform(X))
    return clf.classes_[P.argmax(1)], P.max(1)


def scores(truth, pred, conf, mask) -> dict:
    from sklearn.metrics import adjusted_rand_score, f1_score, roc_auc_score

    t = np.asarray(truth, dtype=object)[mask].astype(str)
    p = np.asarray(pred, dtype=object)[mask].astype(str)
    out = {"ari": adjusted_rand_score(t, p), "f1": f1_score(t, p, average="macro")}
    right = t == p
    if conf is not None and 0 < right.sum() < right.size:
        out["auroc"] = roc_auc_score(right, np.asarray(conf)[mask])
        out["mean_conf"] = float(np.mean(np.asarray(conf)[mask]))
        out["acc"] = float(right.mean())
    return out


def timed(fn):
    with PeakRSS() as mem:
        t = time.perf_counter()
        out = fn()
        dt_ = time.perf_counter() - t
    return out, dt_, mem.peak / 2**30


def bench_guided(name, seeds, device):
    from napari_scai.tl import spatial_domains
    from napari_scai.tl._domains import clear_model_cache

    a0 = load(name)
    key = labels_of(name)
    truth = a0.obs[key].astype(object).where(a0.obs[key].notna(), None).to_numpy()
    k = a0.obs[key].nunique()
    feats_g, t_feats, _ = timed(lambda: smoothed_pca(a0))
    # the unsupervised model does not see the strokes: one run (seed 0), scored on each stroke
    # seed's unpainted spots
    b = a0.copy()
    _, t_un, _ = timed(lambda: spatial_domains(b, n_domains=k, device=device, seed=0))
    rows = []
    for s in seeds:
        painted = scribbles(a0, key, s)
        is_p = painted != None  # noqa: E711
        mask = (~is_p) & (truth != None)  # noqa: E711
        a = a0.copy()
        a.obs["strokes"] = pd.Categorical(painted)
        clear_model_cache()  # time the whole guided run, training included
        _, t_gu, m_gu = timed(
            lambda a=a, s=s: spatial_domains(a, annotation_key="strokes", device=device, seed=s)
        )
        gu = scores(truth, a.obs["scai_domain"], a.obs["scai_domain_confidence"], mask)
        (pg, cg), t_g, _ = timed(
            lambda is_p=is_p, painted=painted: logreg(
                feats_g[is_p], painted[is_p].astype(str), feats_g
            )
        )
        g = scores(truth, pg, cg, mask)
        un = scores(truth, b.obs["scai_domain"], None, mask)
        row = dict(
            dataset=name,
            seed=s,
            painted=float(is_p.mean()),
            guided=gu,
            g=g,
            unsup=un,
            t_guided=t_gu,
            t_g=t_g + t_feats,
            t_unsup=t_un,
            peak=m_gu,
            temperature=a.uns["scai_domain_params"]["temperature"],
        )
        rows.append(row)
        print(
            f"  {name} stroke seed {s}: painted {row['painted']:.1%}; ARI guided {gu['ari']:.3f} "
            f"(g) {g['ari']:.3f} unsup {un['ari']:.3f}; F1 guided {gu['f1']:.3f} (g) {g['f1']:.3f}; "
            f"AUROC guided {gu.get('auroc', float('nan')):.3f}; {t_gu:.0f} s",
            flush=True,
        )
    return rows


def transfer_g(ref, query, ref_key):
    """(g) for transfer: joint PCA 30 of shared genes (per-section scaling), kNN-7 smoothing
    within each section, logistic regression on the reference's labelled spots."""
    Xr, Xq = transfer_g_features(ref, query)
    y = ref.obs[ref_key]
    lab = y.notna().to_numpy()
    return logreg(Xr[lab], y[lab].astype(str).to_numpy(), Xq)


def transfer_g_features(ref, query):
    """(g)'s features for transfer: (reference rows, query rows)."""
    import anndata as ad

    from napari_scai.preprocess import rna_features

    genes = ref.var_names.intersection(query.var_names, sort=False)
    both = ad.concat(
        [ref[:, genes].copy(), query[:, genes].copy()], label="_section", index_unique=":"
    )
    both.obs["_section"] = both.obs["_section"].astype(str)
    X = rna_features(both, n_top_genes=3000, n_comps=30, batch_key="_section", key_added=None)
    parts = []
    for i, a in enumerate((ref, query)):
        Xi = X[(both.obs["_section"] == str(i)).to_numpy()]
        S = knn_smoothing_operator(np.asarray(a.obsm["spatial"], dtype=np.float64)[:, :2])
        for _ in range(3):
            Xi = S @ Xi
        parts.append(np.asarray(Xi))
    return parts[0], parts[1]


def bench_transfer(
    seeds, device, directions=(("151673", "151674"), ("151674", "151673")), mean_field=0.0
):
    from napari_scai.tl import transfer_labels

    rows = []
    for rname, qname in directions:
        ref, q0 = load(rname), load(qname)
        key = labels_of(qname)
        truth = q0.obs[key].astype(object).where(q0.obs[key].notna(), None).to_numpy()
        mask = truth != None  # noqa: E711
        (pg, cg), t_g, _ = timed(
            lambda ref=ref, q0=q0, rname=rname: transfer_g(ref, q0, labels_of(rname))
        )
        g = scores(truth, pg, cg, mask)
        for s in seeds:
            q = q0.copy()
            _, t_tr, m_tr = timed(
                lambda q=q, s=s, ref=ref, rname=rname: transfer_labels(
                    ref, q, labels_of(rname), device=device, seed=s, query_mean_field=mean_field
                )
            )
            tr = scores(truth, q.obs["scai_transfer"], q.obs["scai_transfer_confidence"], mask)
            ov = q.uns["scai_transfer_params"]["gene_overlap"]
            rows.append(
                dict(direction=f"{rname} -> {qname}", seed=s, gnn=tr, g=g, t_gnn=t_tr, t_g=t_g,
                     peak=m_tr, shared=ov["n_shared"])
            )  # fmt: skip
            print(
                f"  transfer {rname}->{qname} seed {s}: ARI GNN {tr['ari']:.3f} (g) {g['ari']:.3f}; "
                f"AUROC GNN {tr.get('auroc', float('nan')):.3f} (g) {g.get('auroc', float('nan')):.3f}; "
                f"{t_tr:.0f} s",
                flush=True,
            )
    return rows


def _m(rows, *path):
    vals = []
    for r in rows:
        v = r
        for p in path:
            v = v.get(p, float("nan")) if isinstance(v, dict) else float("nan")
        vals.append(v)
    return float(np.mean(vals)), vals


def fmt_guided(rows) -> str:
    out = [
        "| dataset | painted | ARI guided (mean; per seed) | ARI (g), mean | ARI unsup. | "
        "guided − best ref. | "
        "F1 guided | F1 (g) | AUROC conf. guided | mean conf. / acc. guided | s guided / (g) / unsup. |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        rs = [r for r in rows if r["dataset"] == name]
        gu, gus = _m(rs, "guided", "ari")
        g, _ = _m(rs, "g", "ari")
        un, _ = _m(rs, "unsup", "ari")
        out.append(
            f"| {name} | {np.mean([r['painted'] for r in rs]):.1%} | {gu:.3f} "
            f"({' '.join(f'{x:.3f}' for x in gus)}) | {g:.3f} | {un:.3f} | {gu - max(g, un):+.3f} "
            f"| {_m(rs, 'guided', 'f1')[0]:.3f} | {_m(rs, 'g', 'f1')[0]:.3f} "
            f"| {_m(rs, 'guided', 'auroc')[0]:.3f} "
            f"| {_m(rs, 'guided', 'mean_conf')[0]:.3f} / {_m(rs, 'guided', 'acc')[0]:.3f} "
            f"| {np.mean([r['t_guided'] for r in rs]):.0f} / {np.mean([r['t_g'] for r in rs]):.1f} "
            f"/ {np.mean([r['t_unsup'] for r in rs]):.0f} |"
        )
    return "\n".join(out)


def fmt_transfer(rows) -> str:
    out = [
        "| direction | shared genes | ARI GNN (seeds) | ARI (g) | GNN − (g) | F1 GNN | F1 (g) | "
        "AUROC conf. GNN | AUROC (g) | mean conf. / acc. GNN | s GNN / (g) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for d in dict.fromkeys(r["direction"] for r in rows):
        rs = [r for r in rows if r["direction"] == d]
        a, aris = _m(rs, "gnn", "ari")
        g = rs[0]["g"]
        out.append(
            f"| {d} | {rs[0]['shared']:,} | {a:.3f} ({' '.join(f'{x:.3f}' for x in aris)}) "
            f"| {g['ari']:.3f} | {a - g['ari']:+.3f} | {_m(rs, 'gnn', 'f1')[0]:.3f} | {g['f1']:.3f} "
            f"| {_m(rs, 'gnn', 'auroc')[0]:.3f} | {g.get('auroc', float('nan')):.3f} "
            f"| {_m(rs, 'gnn', 'mean_conf')[0]:.3f} / {_m(rs, 'gnn', 'acc')[0]:.3f} "
            f"| {np.mean([r['t_gnn'] for r in rs]):.0f} / {rs[0]['t_g']:.1f} |"
        )
    return "\n".join(out)


def provenance() -> str:
    from _provenance import machine_line, provenance_line

    return f"{provenance_line()}; device: {machine_line()}"


def main(argv=None) -> None:
    from napari_scai.models import resolve_device

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--datasets", default="151673,151674,starmap")
    p.add_argument("--stroke-seeds", default="0,1,2")
    p.add_argument("--transfer-seeds", default="0")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-transfer", action="store_true")
    p.add_argument("--directions", default="151673:151674,151674:151673", help="REF:QUERY,...")
    p.add_argument(
        "--transfer-mean-field", type=float, default=0.0,
        help="transfer_labels(query_mean_field=...): 0 = the default (off)",
    )  # fmt: skip
    p.add_argument("--no-append", action="store_true")
    args = p.parse_args(argv)
    device = str(resolve_device(args.device))
    seeds = [int(s) for s in args.stroke_seeds.split(",") if s.strip()]
    prov = provenance()
    rows = []
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        rows += bench_guided(name, seeds, device)
    directions = [tuple(d.split(":")) for d in args.directions.split(",") if d.strip()]
    trows = [] if args.no_transfer else bench_transfer(
        [int(s) for s in args.transfer_seeds.split(",")], device, directions,
        mean_field=args.transfer_mean_field,
    )  # fmt: skip
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python benchmarks/domains_guided.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = f"`{cmd.strip()}` — {when}; {prov}; torch device {device}.\n\n"
    if rows:
        text += fmt_guided(rows) + "\n"
    if trows:
        text += "\n" + fmt_transfer(trows) + "\n"
    print()
    print(text)
    if not args.no_append:
        body = RESULTS.read_text()
        if "## Guided domains and label transfer" not in body:
            body = body.rstrip() + "\n\n## Guided domains and label transfer\n"
        RESULTS.write_text(body.rstrip() + "\n\n" + text)


if __name__ == "__main__":
    main()
