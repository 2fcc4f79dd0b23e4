"""Multimodal integration benchmark: napari_scai.tl.integrate against peers in the same run.

    python benchmarks/integration.py --sections planted      # sim (a): totalVI, muon WNN, PCAs
    python benchmarks/integration.py --sections adtnorm      # 422,682 cells vs harmonypy
    python benchmarks/integration.py --sections eccite dlpfc
    python benchmarks/integration.py --sections adtnorm --device cuda   # GPU machine

Sections
--------
planted  Planted simulation (a), 3,200 cells (``simulate_paired_modalities(seed=0)``): ARI of
         K = 6 clusters vs the planted types for ours, totalVI (scvi-tools, 200 epochs, Leiden
         -> k-means K = 6 on its latent), muon WNN (Leiden on the WNN graph at a resolution
         giving 6 clusters where possible), each single modality's PCA and the plain
         concatenation of both PCAs (k-means K = 6); CPU time of each (process CPU seconds).
adtnorm  adtnorm_13studies_9adt.h5ad, protein only, ``study_name`` as batch: ours
         (``batch_key='study_name'``, K = 6) vs CLR + PCA 8 + harmonypy + k-means K = 6 and
         the uncorrected CLR + PCA 8 + k-means; ARI / NMI vs ``cell_type_l1`` on all cells
         except 'undefined'; iLISI and batch ASW (napari_scai.metrics, equal to scib's), mean over
         5 seeded 20,000-cell subsamples of the labelled cells; wall and CPU time, peak RSS.
eccite   ECCITE-seq 500 cells (RNA + 49 ADT): agreement (ARI) of our K = 8 clusters with
         totalVI's (k-means K = 8 on its latent).
dlpfc    DLPFC 151673 RNA + H&E histology features (preprocess.histology_table), spatial:
         ARI of K = 7 joint domains vs RNA alone (same model, one table) vs layer_manual.

Results are appended to benchmarks/RESULTS.md ("Multimodal integration").
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
DATA = Path(os.environ.get("SCAI_SHARED_DATA") or ROOT.parent / "shared" / "data")
if not DATA.is_dir():
    DATA = Path("/work/shared/data")


from _data import PeakRSS  # noqa: E402  (one peak-RSS probe for every benchmark)


class Timer:
    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w0
        self.cpu = time.process_time() - self.c0


def _header() -> str:
    from _provenance import machine_line, provenance_line

    return (
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {provenance_line()}, {machine_line()}, "
        f"python {platform.python_version()}"
    )


def _table(title: str, rows: list[dict]) -> str:
    cols = list(rows[0].keys())
    out = [f"#### {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    return "\n".join(out) + "\n"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def _kmeans(Z, k, seed=0):
    from sklearn.cluster import KMeans

    return KMeans(k, n_init=10, random_state=seed).fit_predict(Z)


# ----------------------------------------------------------------------------- planted (a)
def section_planted(device: str) -> str:
    from sklearn.metrics import adjusted_rand_score as ari

    from napari_scai.preprocess import pca, prepare_modality
    from napari_scai.simulate import simulate_paired_modalities
    from napari_scai.tl import integrate

    d = simulate_paired_modalities(n_cells=3200, seed=0)
    y = d["rna"].obs["cell_type"].to_numpy()
    rows = []
    with Timer() as t:
        integrate(d, n_clusters=6, device=device, seed=0)
    ours = ari(y, d["rna"].obs["scai_joint_cluster"])
    rows.append({"method": "napari-scai integrate", "ARI": ours, "CPU s": t.cpu, "wall s": t.wall})
    Zr = prepare_modality(d["rna"], name="rna").features
    Zp = prepare_modality(d["protein"], name="protein").features
    rows.append(
        {"method": "RNA PCA 30 + k-means", "ARI": ari(y, _kmeans(Zr, 6)), "CPU s": "", "wall s": ""}
    )
    rows.append(
        {
            "method": "protein CLR + k-means",
            "ARI": ari(y, _kmeans(Zp, 6)),
            "CPU s": "",
            "wall s": "",
        }
    )
    rows.append(
        {
            "method": "concatenated PCAs + k-means",
            "ARI": ari(y, _kmeans(np.hstack([Zr, Zp]), 6)),
            "CPU s": "",
            "wall s": "",
        }
    )
    bal = np.hstack([Zr / Zr.std(), pca(Zp, 20) / pca(Zp, 20).std()])
    rows.append(
        {
            "method": "concatenated PCAs, blocks scaled + k-means",
            "ARI": ari(y, _kmeans(bal, 6)),
            "CPU s": "",
            "wall s": "",
        }
    )
    # muon WNN
    try:
        import muon as mu
        import scanpy as sc

        r = d["rna"].copy()
        p = d["protein"].copy()
        with Timer() as t:
            r.obsm["X_pca"] = Zr
            p.obsm["X_pca"] = Zp
            sc.pp.neighbors(r, use_rep="X_pca", random_state=0)
            sc.pp.neighbors(p, use_rep="X_pca", random_state=0)
            md = mu.MuData({"rna": r, "prot": p})
            mu.pp.neighbors(md, key_added="wnn")
            best = None
            for res in (0.1, 0.2, 0.3, 0.5, 0.8, 1.0):
                sc.tl.leiden(
                    md,
                    resolution=res,
                    neighbors_key="wnn",
                    key_added="wnn_leiden",
                    random_state=1,
                    flavor="igraph",
                    n_iterations=2,
                )
                k = md.obs["wnn_leiden"].nunique()
                if best is None or abs(k - 6) < abs(best[0] - 6):
                    best = (k, md.obs["wnn_leiden"].to_numpy().copy())
        rows.append(
            {
                "method": f"muon WNN + Leiden ({best[0]} clusters)",
                "ARI": ari(y, best[1]),
                "CPU s": t.cpu,
                "wall s": t.wall,
            }
        )
    except Exception as err:  # noqa: BLE001
        rows.append(
            {
                "method": f"muon WNN failed: {err!r}"[:80],
                "ARI": float("nan"),
                "CPU s": "",
                "wall s": "",
            }
        )
    # totalVI
    try:
        import scvi

        scvi.settings.seed = 0
        a = d["rna"].copy()
        a.obsm["protein_expression"] = np.asarray(d["protein"].X)
        with Timer() as t:
            scvi.model.TOTALVI.setup_anndata(a, protein_expression_obsm_key="protein_expression")
            m = scvi.model.TOTALVI(a)
            m.train(max_epochs=200, accelerator="cpu", enable_progress_bar=False)
            lat = m.get_latent_representation()
        tv = ari(y, _kmeans(lat, 6))
        rows.append(
            {"method": "totalVI 200 epochs + k-means", "ARI": tv, "CPU s": t.cpu, "wall s": t.wall}
        )
    except Exception as err:  # noqa: BLE001
        rows.append(
            {
                "method": f"totalVI failed: {err!r}"[:80],
                "ARI": float("nan"),
                "CPU s": "",
                "wall s": "",
            }
        )
    tv_cpu = next((r["CPU s"] for r in rows if r["method"].startswith("totalVI")), None)
    for r in rows:
        r["CPU / totalVI"] = r["CPU s"] / tv_cpu if isinstance(r["CPU s"], float) and tv_cpu else ""
    return _table("Planted simulation (a), 3,200 cells, K = 6", rows)


# ----------------------------------------------------------------------------- ADTnorm
N_SUBSAMPLES = 5


def section_adtnorm(device: str, n_cells: int | None) -> str:
    import anndata as ad
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score as ari
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from napari_scai.metrics import batch_asw, ilisi
    from napari_scai.preprocess import pca, prepare_modality
    from napari_scai.tl import integrate

    a = ad.read_h5ad(DATA / "citeseq" / "adtnorm_13studies_9adt.h5ad")
    if n_cells:
        a = a[np.random.default_rng(0).permutation(a.n_obs)[:n_cells]].copy()
    a.obs_names_make_unique()
    lab = a.obs["cell_type_l1"].astype(str).to_numpy()
    keep = lab != "undefined"
    batch = a.obs["study_name"].astype(str).to_numpy()
    # Batch mixing is scored on N_SUBSAMPLES seeded 20,000-cell subsamples of the labelled cells
    # (seed 0 is the subsample of the earlier single-subsample figures), the same ones for every
    # method: the mean, and the SD over subsamples to show how precise one subsample is.
    labelled = np.nonzero(keep)[0]
    subs = [np.random.default_rng(s).permutation(labelled)[:20000] for s in range(N_SUBSAMPLES)]

    def scores(Z, labels):
        il = [ilisi(Z[sub], batch[sub], n_sample=None) for sub in subs]
        bw = [batch_asw(Z[sub], batch[sub], lab[sub], n_sample=None) for sub in subs]
        return {
            "ARI": ari(lab[keep], labels[keep]),
            "NMI": nmi(lab[keep], labels[keep]),
            "iLISI": float(np.mean(il)),
            "batch ASW": float(np.mean(bw)),
            "batch ASW SD": float(np.std(bw, ddof=1)) if len(bw) > 1 else float("nan"),
            "batch ASW subsample 0": bw[0],
        }

    rows = []
    with PeakRSS() as mem, Timer() as t:
        integrate(
            {"protein": a},
            tables=("protein",),
            batch_key="study_name",
            n_clusters=6,
            device=device,
            seed=0,
        )
    Z = a.obsm["X_scai_joint"]
    params = a.uns["scai_joint_params"]
    rows.append(
        {
            "method": "napari-scai integrate",
            **scores(Z, a.obs["scai_joint_cluster"].to_numpy()),
            "wall s": t.wall,
            "CPU s": t.cpu,
            "peak RSS GiB": mem.peak / 2**30,
        }
    )
    import harmonypy

    with PeakRSS() as mem, Timer() as t0:
        X = pca(prepare_modality(a, kind="protein", name="protein").features, 8)
    rows.append(
        {
            "method": "CLR + PCA 8 (uncorrected) + k-means",
            **scores(X, _kmeans(X, 6)),
            "wall s": t0.wall,
            "CPU s": t0.cpu,
            "peak RSS GiB": mem.peak / 2**30,
        }
    )
    with PeakRSS() as mem, Timer() as t:
        ho = harmonypy.run_harmony(X, pd.DataFrame({"b": batch}), "b", random_state=0)
        H = np.asarray(ho.Z_corr)
        H = H.T if H.shape[0] != X.shape[0] else H
    rows.append(
        {
            "method": "CLR + PCA 8 + harmonypy + k-means",
            **scores(H, _kmeans(H, 6)),
            "wall s": t.wall + t0.wall,
            "CPU s": t.cpu + t0.cpu,
            "peak RSS GiB": mem.peak / 2**30,
        }
    )
    ref_wall, ref_cpu = rows[-1]["wall s"], rows[-1]["CPU s"]
    for r in rows:
        r["wall / harmonypy"] = r["wall s"] / ref_wall
        r["CPU / harmonypy"] = r["CPU s"] / ref_cpu
    rows[0]["method"] += f" (Harmony rounds {params['harmony_rounds']})"
    return _table(
        f"ADTnorm, {a.n_obs:,} cells, 13 studies, K = 6 (iLISI, batch ASW: mean over "
        f"{N_SUBSAMPLES} seeded 20,000-cell subsamples, the same for every method)",
        rows,
    )


# ----------------------------------------------------------------------------- ECCITE
def section_eccite(device: str) -> str:
    from sklearn.metrics import adjusted_rand_score as ari
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from napari_scai import io
    from napari_scai.tl import integrate

    sd = io.read(DATA / "citeseq" / "eccite_pbmc_control_citefuse_500cells.h5ad")
    with Timer() as t:
        integrate(sd, tables=("rna", "protein"), n_clusters=8, device=device, seed=0)
    ours = sd.tables["rna"].obs["scai_joint_cluster"].to_numpy()
    w = sd.tables["rna"].uns["scai_joint_params"]["mean_weights"]
    rows = [
        {
            "method": "napari-scai integrate (mean weights "
            + ", ".join(f"{k} {v:.2f}" for k, v in w.items())
            + ")",
            "ARI vs totalVI clusters": 1.0,
            "NMI vs totalVI clusters": 1.0,
            "CPU s": t.cpu,
        }
    ]
    import scvi

    scvi.settings.seed = 0
    a = sd.tables["rna"].copy()
    a.obsm["protein_expression"] = np.asarray(
        sd.tables["protein"].X.toarray()
        if hasattr(sd.tables["protein"].X, "toarray")
        else sd.tables["protein"].X
    )
    with Timer() as t:
        scvi.model.TOTALVI.setup_anndata(a, protein_expression_obsm_key="protein_expression")
        m = scvi.model.TOTALVI(a)
        m.train(max_epochs=200, accelerator="cpu", enable_progress_bar=False)
        tv = _kmeans(m.get_latent_representation(), 8)
    rows[0]["ARI vs totalVI clusters"] = ari(tv, ours)
    rows[0]["NMI vs totalVI clusters"] = nmi(tv, ours)
    rows.append(
        {
            "method": "totalVI 200 epochs + k-means",
            "ARI vs totalVI clusters": 1.0,
            "NMI vs totalVI clusters": 1.0,
            "CPU s": t.cpu,
        }
    )
    return _table("ECCITE-seq 500 cells, K = 8: agreement with totalVI", rows)


# ----------------------------------------------------------------------------- DLPFC
def section_dlpfc(device: str) -> str:
    from napari_scai.datasets import dlpfc_151673
    from napari_scai.metrics import adjusted_rand_index
    from napari_scai.preprocess import histology_table
    from napari_scai.tl import integrate

    rows = []
    for tables in (("rna",), ("rna", "histology")):
        sd = dlpfc_151673()
        histology_table(sd, "rna")
        with Timer() as t:
            integrate(sd, tables=tables, spatial=True, n_clusters=7, device=device, seed=0)
        r = sd.tables["rna"]
        rows.append(
            {
                "tables": "+".join(tables),
                "ARI vs layer_manual": adjusted_rand_index(
                    r.obs["scai_joint_cluster"], r.obs["layer_manual"]
                ),
                "mean weights": ", ".join(
                    f"{k} {v:.2f}" for k, v in r.uns["scai_joint_params"]["mean_weights"].items()
                ),
                "CPU s": t.cpu,
            }
        )
    return _table("DLPFC 151673, spatial, K = 7", rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sections", nargs="+", default=["planted", "adtnorm", "eccite", "dlpfc"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--adtnorm-cells", type=int, default=None, help="subsample (default: all)")
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    parts = []
    for s in args.sections:
        if s == "planted":
            parts.append(section_planted(args.device))
        elif s == "adtnorm":
            parts.append(section_adtnorm(args.device, args.adtnorm_cells))
        elif s == "eccite":
            parts.append(section_eccite(args.device))
        elif s == "dlpfc":
            parts.append(section_dlpfc(args.device))
        else:
            raise SystemExit(f"unknown section {s!r}")
        print(parts[-1], flush=True)
    text = (
        f"\n### Multimodal integration ({', '.join(args.sections)}, device {args.device})\n\n{_header()}\n\n"
        + "\n".join(parts)
    )
    if not args.no_write:
        with open(args.results, "a") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
