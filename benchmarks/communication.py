"""Cell–cell communication benchmark: napari_scai.tl.communication vs liana and squidpy.

    python benchmarks/communication.py planted          # planted simulation, 3 seeds: AUROC
    python benchmarks/communication.py merfish          # MERFISH 11k cells, time + agreement
    python benchmarks/communication.py dlpfc            # DLPFC 151673 (IDs mapped), same
    python benchmarks/communication.py scale            # 10k / 30k / 100k cells x 200 pairs
    python benchmarks/communication.py commot           # COMMOT on DLPFC, if it imports
    python benchmarks/communication.py render           # rewrite the RESULTS.md section

Every section runs the peers in the same process on the same expression matrix and the same
pairs, with the same number of permutations (1,000 unless --n-perms), and stores its rows in
benchmarks/results/communication.json; ``render`` (also run after each section) writes the
"Cell–cell communication" section of RESULTS.md from it, with device, date and commit.

Peers (benchmarks/requirements.txt): liana 1.10 ``li.mt.bivariate`` (local cosine with
permutations, global Moran's R for the pair p-value; ``use_raw=False``) on
``li.ut.spatial_neighbors`` with the same Gaussian bandwidth and cutoff as ours; squidpy 1.8
``gr.ligrec`` (cluster permutation test, not spatial; ``use_raw=False``, ``threshold=0``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
RESULTS = HERE / "RESULTS.md"
STORE = HERE / "results" / "communication.json"
START, END = "<!-- communication:start -->", "<!-- communication:end -->"
warnings.filterwarnings("ignore")


from _data import PeakRSS  # noqa: E402  (one peak-RSS probe for every benchmark)


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def _env() -> dict:
    from _provenance import machine_line

    dirty = bool(_git("status", "--porcelain", "--", "src", "benchmarks/communication.py"))
    return {
        "device": machine_line(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git("rev-parse", "--short", "HEAD") + (" (dirty)" if dirty else " (clean)"),
        "python": platform.python_version(),
    }


def _store(section: str, payload: dict) -> None:
    STORE.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(STORE.read_text()) if STORE.exists() else {}
    data[section] = {"env": _env(), **payload}
    STORE.write_text(json.dumps(data, indent=1, default=float))
    render()


# ------------------------------------------------------------------ peers


def _normalised(a):
    """The expression matrix tl.communication uses (counts -> 1e4 + log1p), as a new AnnData."""
    import anndata as ad

    from napari_scai.tl._communication import _expression

    X, _ = _expression(a, None, "bench")
    b = ad.AnnData(X=sp.csr_matrix(X), obs=a.obs.copy(), var=pd.DataFrame(index=a.var_names))
    b.obsm["spatial"] = np.asarray(a.obsm["spatial"], dtype=np.float64)
    return b


def run_liana(b, pairs: pd.DataFrame, bandwidth: float, n_perms: int):
    """liana bivariate (local cosine + permutations, global Moran's R); coords in b's units."""
    import liana as li

    b = b.copy()
    li.ut.spatial_neighbors(b, bandwidth=bandwidth, cutoff=float(np.exp(-2.0)), set_diag=False)
    t = time.perf_counter()
    lr = li.mt.bivariate(
        b,
        resource=pairs[["ligand", "receptor"]],
        local_name="cosine",
        global_name="morans",
        n_perms=n_perms,
        use_raw=False,
        nz_prop=0.0,
        mask_negatives=False,
        verbose=False,
    )
    sec = time.perf_counter() - t
    var = lr.var.copy()
    var["interaction"] = var.index.astype(str)
    var = var.reset_index(drop=True)
    return var, sec


def run_squidpy(b, pairs: pd.DataFrame, cluster_key: str, n_perms: int):
    """squidpy gr.ligrec; a pair's score is its best (-log10 p, then mean) over cluster pairs."""
    import squidpy as sq

    inter = pd.DataFrame({"source": pairs["ligand"], "target": pairs["receptor"]})
    t = time.perf_counter()
    res = sq.gr.ligrec(
        b,
        cluster_key=cluster_key,
        interactions=inter,
        use_raw=False,
        n_perms=n_perms,
        threshold=0.0,
        copy=True,
        seed=0,
        complex_policy="min",
        show_progress_bar=False,
        n_jobs=1,
    )
    sec = time.perf_counter() - t
    p = res["pvalues"].astype(float).fillna(1.0)
    m = res["means"].astype(float).fillna(0.0)
    score = (-np.log10(np.maximum(p.to_numpy(), 1.0 / (n_perms + 1)))) + 1e-6 * m.to_numpy()
    out = pd.DataFrame(
        {
            "ligand": [s for s, _ in p.index],
            "receptor": [t for _, t in p.index],
            "score": score.max(axis=1),
        }
    )
    out["interaction"] = out["ligand"] + "^" + out["receptor"]
    return out, sec, res


def _spearman(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def _auroc(y, s) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


# ------------------------------------------------------------------ sections


def planted(args) -> None:
    from napari_scai.simulate import planted_communication
    from napari_scai.tl import communication

    rows = []
    for seed in range(args.seeds):
        a = planted_communication(3000, n_planted=5, n_null=25, n_decoy=10, n_filler=20, seed=seed)
        truth = a.uns["lr_truth"]
        pairs = truth[["ligand", "receptor"]]
        t = time.perf_counter()
        rep = communication(
            a, pairs=pairs, groupby="cell_type", bandwidth_um=25.0, n_perms=args.n_perms, seed=0
        )
        t_ours = time.perf_counter() - t
        b = _normalised(a)
        lv, t_liana = run_liana(b, pairs, 25.0, args.liana_perms)
        sq_df, t_sq, _ = run_squidpy(b, pairs, "cell_type", args.n_perms)
        key = truth.assign(interaction=truth["ligand"] + "^" + truth["receptor"])
        df = key.merge(rep.pairs[["interaction", "statistic", "fdr"]], on="interaction")
        df = df.merge(lv[["interaction", "morans", "mean"]], on="interaction", how="left")
        df = df.merge(sq_df[["interaction", "score"]], on="interaction", how="left")
        df = df.fillna({"morans": -np.inf, "mean": -np.inf, "score": 0.0})
        y = (df["kind"] == "planted").to_numpy()
        d = df[df["kind"] != "null"]
        yd = (d["kind"] == "planted").to_numpy()
        for name, col, sec in (
            ("napari-scai (z)", "statistic", t_ours),
            ("liana Moran's R", "morans", t_liana),
            ("liana mean local cosine", "mean", t_liana),
            ("squidpy ligrec", "score", t_sq),
        ):
            rows.append(
                {
                    "seed": seed,
                    "method": name,
                    "auroc_all": _auroc(y, df[col]),
                    "auroc_vs_decoys": _auroc(yd, d[col]),
                    "seconds": sec,
                }
            )
        called = df["fdr"] <= 0.05
        rows.append(
            {
                "seed": seed,
                "method": "napari-scai FDR 0.05 calls",
                "planted": float(called[df["kind"] == "planted"].mean()),
                "decoy": float(called[df["kind"] == "decoy"].mean()),
                "null": float(called[df["kind"] == "null"].mean()),
            }
        )
        print(pd.DataFrame(rows[-5:]).to_string(index=False), flush=True)
    _store("planted", {"rows": rows, "n_perms": args.n_perms, "liana_perms": args.liana_perms})


def _compare_real(name, a_for_ours, b_peers, cluster_key, bandwidth_units, bw_um, args, data=None):
    import torch  # noqa: F401  (imported before the clock starts, as the peers' packages are)

    from napari_scai.tl import communication

    def run_ours():
        t = time.perf_counter()
        rep = communication(
            data if data is not None else a_for_ours,
            groupby=cluster_key,
            bandwidth_um=bw_um,
            n_perms=args.n_perms,
            seed=0,
        )
        return rep, time.perf_counter() - t

    with PeakRSS() as mem:
        rep, t_ours = run_ours()
    pairs = rep.pairs[["ligand", "receptor", "interaction"]].copy()
    print(f"{name}: ours {t_ours:.1f} s, {len(pairs)} pairs, peak RSS {mem.peak / 2**30:.2f} GiB")
    # peers use symbols of the same genes: map each pair's matched var names
    lig_genes = rep.pairs["ligand_genes"].str.split(";")
    rec_genes = rep.pairs["receptor_genes"].str.split(";")
    peer_pairs = pd.DataFrame(
        {"ligand": lig_genes.str.join("_"), "receptor": rec_genes.str.join("_")}
    )
    peer_pairs["interaction"] = pairs["interaction"].to_numpy()
    out = {
        "n_cells": int(rep.params["n_cells"]),
        "n_pairs": len(pairs),
        "ours_s": t_ours,
        "ours_rss_gib": mem.peak / 2**30,
        "ours_sig": int((rep.pairs["fdr"] <= 0.05).sum()),
        "mean_degree": rep.params["mean_degree"],
        "bandwidth_um": rep.params["bandwidth_um"],
        "n_perms": args.n_perms,
    }
    # squidpy upper-cases gene names: match pairs case-insensitively
    ours = rep.pairs.assign(key=(peer_pairs["ligand"] + "^" + peer_pairs["receptor"]).str.upper())
    if not args.skip_liana:
        lv, t_liana = run_liana(b_peers, peer_pairs, bandwidth_units, args.liana_perms)
        ours_all, liana_all = [t_ours], [t_liana]
        for _ in range(args.repeats - 1):  # A B A B: the ratio pair by pair, as load drifts
            ours_all.append(run_ours()[1])
            liana_all.append(run_liana(b_peers, peer_pairs, bandwidth_units, args.liana_perms)[1])
        ratios = np.asarray(liana_all) / np.asarray(ours_all)
        t_ours, t_liana = float(np.median(ours_all)), float(np.median(liana_all))
        out.update(
            ours_s=t_ours,
            ours_s_all=ours_all,
            liana_s_all=liana_all,
            ratio_min=float(ratios.min()),
            ratio_median=float(np.median(ratios)),
        )
        lv["key"] = lv["interaction"].str.upper()
        m = ours.merge(lv, on="key", suffixes=("", "_liana"))
        out.update(
            liana_s=t_liana,
            liana_perms=args.liana_perms,
            liana_pairs=len(lv),
            rho_liana_morans=_spearman(m["statistic"], m["morans"]),
            liana_sig=int((lv["morans_pvals"] <= 0.05).sum()) if "morans_pvals" in lv else -1,
        )
        print(
            f"  liana {t_liana:.1f} s ({args.liana_perms} perms), rho {out['rho_liana_morans']:.2f}"
        )
    if not args.skip_squidpy:
        sq_df, t_sq, _ = run_squidpy(b_peers, peer_pairs, cluster_key, args.n_perms)
        sq_df["key"] = sq_df["interaction"].str.upper()
        m = ours.merge(sq_df, on="key", suffixes=("", "_sq"))
        out.update(
            squidpy_s=t_sq,
            squidpy_pairs=len(sq_df),
            rho_squidpy=_spearman(m["statistic"], m["score"]),
        )
        print(f"  squidpy {t_sq:.1f} s, rho {out['rho_squidpy']:.2f}")
    out["top10"] = rep.pairs["interaction"].head(10).tolist()
    _store(name, out)


def merfish(args) -> None:
    import anndata as ad

    data = Path(os.environ.get("SCAI_SHARED_DATA") or ROOT.parent / "shared" / "data")
    a = ad.read_h5ad(data / "imaging" / "merfish_hypothalamus_moffitt2018.h5ad")
    b = _normalised(a)  # MERFISH X is volume-normalised, not counts: used as it is by both
    _compare_real("merfish", a, b, "Cell_class", 30.0, 30.0, args)


def dlpfc(args) -> None:
    from napari_scai.datasets import dlpfc_151673

    sdata = dlpfc_151673()
    t = sdata.tables["rna"]
    b = _normalised(t)
    b.var_names = pd.Index(t.var["gene_ids"].astype(str).to_numpy())  # same (ID) names
    b.obs["layer_manual"] = t.obs["layer_manual"].astype(str).astype("category")
    t.obs["layer_str"] = b.obs["layer_manual"]
    from napari_scai._scale import microns_per_pixel

    px_per_um = 1.0 / microns_per_pixel(t)  # the lattice, as tl.communication uses it
    _compare_real("dlpfc", t, b, "layer_manual", 100.0 * px_per_um, 100.0, args, data=sdata)


def scale_one(n: int, n_pairs: int, n_perms: int, device: str) -> dict:
    """One synthetic run through the model (used in a subprocess, to measure its peak RSS)."""
    import torch

    from napari_scai.models.communication import communication_scores, kernel_graph, null_design

    rng = np.random.default_rng(0)
    side = np.sqrt(n / 1500.0) * 1000.0  # 1,500 cells / mm^2
    xy = rng.uniform(0, side, (n, 2)) * np.array([1.4, 1 / 1.4])
    L = ((rng.random((n, n_pairs)) < 0.15) * rng.gamma(2.0, 1.0, (n, n_pairs))).astype(np.float32)
    R = ((rng.random((n, n_pairs)) < 0.15) * rng.gamma(2.0, 1.0, (n, n_pairs))).astype(np.float32)
    t0 = time.perf_counter()
    W = kernel_graph(xy, 30.0)
    design = null_design(xy, 600.0)
    t1 = time.perf_counter()
    with torch.no_grad():
        res = communication_scores(L, R, W, design, n_perms=n_perms, device=device)
    t2 = time.perf_counter()
    return {
        "n_cells": n,
        "n_pairs": n_pairs,
        "n_perms": n_perms,
        "graph_s": t1 - t0,
        "perm_s": t2 - t1,
        "mean_degree": W.nnz / n,
        "min_p": float(res.pvalue.min()),
    }


def scale(args) -> None:
    rows = []
    for n in args.sizes:
        cmd = [
            sys.executable,
            __file__,
            "scale-one",
            "--n",
            str(n),
            "--n-pairs",
            str(args.n_pairs),
            "--n-perms",
            str(args.n_perms),
        ]
        t = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, cwd=ROOT
        )
        wall = time.perf_counter() - t
        rss_kb = next(
            int(line.split(":")[1])
            for line in proc.stderr.splitlines()
            if "Maximum resident set size" in line
        )
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        info.update(wall_s=wall, peak_rss_gib=rss_kb / 2**20, rss_kib_per_cell=rss_kb / n)
        rows.append(info)
        print(info, flush=True)
        _store("scale", {"rows": rows})


def commot(args) -> None:
    """COMMOT on DLPFC (3,639 spots) in a subprocess with a time limit, if it imports."""
    code = (
        "import numpy as np; np.Inf = np.inf; import time, sys; sys.path.insert(0, 'src');"
        "import commot as ct, scanpy as sc;"
        "from napari_scai.datasets import dlpfc_151673;"
        "t = dlpfc_151673().tables['rna']; a = t.copy(); a.var_names = t.var['gene_symbol'].astype(str);"
        "a.var_names_make_unique(); sc.pp.normalize_total(a, 1e4); sc.pp.log1p(a);"
        "df = ct.pp.ligand_receptor_database(species='human', signaling_type=None, database='CellChat');"
        "df = ct.pp.filter_lr_database(df, a, min_cell_pct=0.01);"
        "t0 = time.perf_counter();"
        "ct.tl.spatial_communication(a, database_name='cellchat', df_ligrec=df, dis_thr=350, heteromeric=True);"
        "print('COMMOT_SECONDS', time.perf_counter() - t0, len(df))"
    )
    try:
        import commot  # noqa: F401

        installed = True
    except Exception as err:  # noqa: BLE001
        installed = False
        reason = f"does not import: {type(err).__name__}: {err}"
    out = {"installed": installed, "limit_s": args.commot_limit}
    if installed:
        t = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                cwd=ROOT,
                timeout=args.commot_limit,
            )
            line = [s for s in proc.stdout.splitlines() if s.startswith("COMMOT_SECONDS")]
            if line:
                out.update(status="finished", seconds=float(line[0].split()[1]))
                out["n_pairs"] = int(line[0].split()[2])
            else:
                out.update(status="failed", error=proc.stderr.strip().splitlines()[-1:])
        except subprocess.TimeoutExpired:
            out.update(status=f"did not finish in {args.commot_limit} s (killed)")
        out["wall_s"] = time.perf_counter() - t
    else:
        out["status"] = reason
    print(out)
    _store("commot", out)


# ------------------------------------------------------------------ RESULTS.md


def _table(rows: list[dict], cols: list[str], fmt: dict | None = None) -> str:
    fmt = fmt or {}
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    body = ""
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(fmt.get(c, "{:.3g}").format(v) if isinstance(v, float) else str(v))
        body += "| " + " | ".join(cells) + " |\n"
    return head + body


def render() -> None:
    if not STORE.exists():
        return
    data = json.loads(STORE.read_text())
    parts = [
        START,
        "## Cell–cell communication",
        "",
        "`python benchmarks/communication.py {planted,merfish,dlpfc,scale,commot}`; each block "
        "names the device, date and commit of its own run. Timings on a 2-core machine shared "
        "with other jobs: compare the ratios within a run, not absolute seconds across runs.",
        "",
    ]
    if "planted" in data:
        d = data["planted"]
        e = d["env"]
        parts += [
            f"### Planted simulation (3,000 cells; 5 planted, 25 null, 10 decoy pairs; "
            f"{d['n_perms']} permutations; liana {d.get('liana_perms', d['n_perms'])})",
            f"{e['device']}; {e['date']}; commit {e['commit']}.",
            "",
        ]
        df = pd.DataFrame([r for r in d["rows"] if "auroc_all" in r])
        agg = df.groupby("method", sort=False).agg(
            auroc_all=("auroc_all", "mean"),
            auroc_min=("auroc_all", "min"),
            auroc_vs_decoys=("auroc_vs_decoys", "mean"),
            vs_decoys_min=("auroc_vs_decoys", "min"),
            seconds=("seconds", "mean"),
        )
        agg = agg.reset_index()
        parts.append(
            "Mean (and min) over seeds " + str(sorted({r["seed"] for r in d["rows"]})) + ":\n"
        )
        parts.append(
            _table(
                agg.to_dict("records"),
                ["method", "auroc_all", "auroc_min", "auroc_vs_decoys", "vs_decoys_min", "seconds"],
            )
        )
        calls = pd.DataFrame([r for r in d["rows"] if "planted" in r])
        parts.append(
            "napari-scai pairs at FDR 0.05 (fraction per kind, per seed): "
            + "; ".join(
                f"seed {int(r.seed)}: planted {r.planted:.2f}, decoy {r.decoy:.2f}, "
                f"null {r.null:.2f}"
                for r in calls.itertuples()
            )
            + "\n"
        )
    for name, title in (
        ("merfish", "MERFISH hypothalamus (Cell_class)"),
        ("dlpfc", "DLPFC 151673 (layer_manual, Ensembl IDs mapped)"),
    ):
        if name not in data:
            continue
        d = data[name]
        e = d["env"]
        parts += [f"### {title}", f"{e['device']}; {e['date']}; commit {e['commit']}.", ""]
        row = {
            "cells": d["n_cells"],
            "pairs": d["n_pairs"],
            "perms": d["n_perms"],
            "ours s": d["ours_s"],
            "ours peak RSS GiB": d["ours_rss_gib"],
            "ours FDR<=.05": d["ours_sig"],
        }
        if "liana_s" in d:
            row.update(
                {
                    "liana s": d["liana_s"],
                    "liana perms": d["liana_perms"],
                    "liana/ours time": d["liana_s"] / d["ours_s"],
                    "rho vs liana Moran": d["rho_liana_morans"],
                }
            )
        if "squidpy_s" in d:
            row.update(
                {
                    "squidpy s": d["squidpy_s"],
                    "squidpy/ours time": d["squidpy_s"] / d["ours_s"],
                    "rho vs squidpy": d["rho_squidpy"],
                }
            )
        parts.append(_table([row], list(row)))
        parts.append("Top 10 (ours): " + ", ".join(d["top10"]) + "\n")
        if len(d.get("ours_s_all", [])) > 1:
            parts.append(
                f"ours and liana run {len(d['ours_s_all'])} times in turn (A B A B, medians in "
                "the table): ours "
                + ", ".join(f"{x:.1f}" for x in d["ours_s_all"])
                + " s; liana "
                + ", ".join(f"{x:.1f}" for x in d["liana_s_all"])
                + f" s; liana/ours pair by pair: median {d['ratio_median']:.1f}x, "
                f"min {d['ratio_min']:.1f}x.\n"
            )
        if d.get("notes"):
            parts.append(d["notes"] + "\n")
    if "scale" in data:
        d = data["scale"]
        e = d["env"]
        parts += [
            "### Synthetic scale (model only; local and global permutations)",
            f"{e['device']}; {e['date']}; commit {e['commit']}.",
            "",
            _table(
                d["rows"],
                [
                    "n_cells",
                    "n_pairs",
                    "n_perms",
                    "mean_degree",
                    "graph_s",
                    "perm_s",
                    "wall_s",
                    "peak_rss_gib",
                    "rss_kib_per_cell",
                ],
            ),
        ]
        if d.get("notes"):
            parts.append(d["notes"] + "\n")
    if "commot" in data:
        d = data["commot"]
        e = d["env"]
        parts += [
            "### COMMOT on DLPFC",
            f"{e['device']}; {e['date']}; commit {e['commit']}.",
            "",
            "COMMOT 0.0.3 (`np.Inf` patched to `np.inf` for NumPy 2), CellChat pairs present in "
            f"1% of spots, `dis_thr=350` px: {d.get('status')}"
            + (
                " (pip cannot install it next to numpy 2 / pandas 2: its dependency karateclub "
                "pins numpy<1.23 and pandas<=1.3.5; shared/README: at defaults it did not "
                "finish a 6,400-cell run in 10 minutes and builds a dense distance matrix)"
                if not d.get("installed")
                else ""
            )
            + (f", {d['seconds']:.0f} s for {d.get('n_pairs')} pairs" if "seconds" in d else "")
            + ".\n",
        ]
    parts += [
        "### GPU: 1M cells x 1,000 pairs x 1,000 permutations",
        "",
        "**Missing**: no GPU in this session. `python benchmarks/gpu/communication.py` "
        "(defaults: 1M cells, 1,000 pairs, 1,000 permutations, CUDA; writes "
        "`$OUT/communication.{json,md}` with time and peak GPU memory) ran on CPU at small "
        "size only:",
        "",
    ]
    gpu_small = HERE / "results" / "communication_gpu_script_cpu.md"
    if gpu_small.exists():
        parts.append(gpu_small.read_text())
    parts.append(END)
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = "\n".join(parts)
    if START in text and END in text:
        pre, rest = text.split(START, 1)
        post = rest.split(END, 1)[1]
        text = pre + block + post
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "section", choices=["planted", "merfish", "dlpfc", "scale", "scale-one", "commot", "render"]
    )
    ap.add_argument("--n-perms", type=int, default=1000)
    ap.add_argument("--liana-perms", type=int, default=None, help="default: --n-perms")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--n-pairs", type=int, default=200)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-liana", action="store_true")
    ap.add_argument("--skip-squidpy", action="store_true")
    ap.add_argument("--commot-limit", type=int, default=300)
    ap.add_argument(
        "--repeats", type=int, default=1, help="merfish/dlpfc: run ours and liana N times in turn"
    )
    args = ap.parse_args()
    args.liana_perms = args.liana_perms or args.n_perms
    if args.section == "scale-one":
        print(json.dumps(scale_one(args.n, args.n_pairs, args.n_perms, args.device)))
        return
    {
        "planted": planted,
        "merfish": merfish,
        "dlpfc": dlpfc,
        "scale": scale,
        "commot": commot,
        "render": lambda a: render(),
    }[args.section](args)


if __name__ == "__main__":
    main()
