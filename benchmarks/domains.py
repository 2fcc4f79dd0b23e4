"""Spatial-domain benchmark: GNN (napari_scai.tl.spatial_domains) vs two non-GNN baselines.

    python benchmarks/domains.py                       # DLPFC 151673, 151674, STARmap; 5 seeds
    python benchmarks/domains.py --datasets 151673 --seeds 2
    python benchmarks/domains.py --scale 100000        # synthetic 100k-cell section (CPU)
    python benchmarks/domains.py --scale 1000000 --device cuda

Protocol (shared/README.md): cluster all spots into K = 7 domains, score ARI on labelled spots
only; one fixed set of defaults for every dataset, no choice of epoch/seed/setting by ARI.
Baselines, run in the same process, clustered by the same mixture as the GNN (napari_scai's
torch GMM, tied, 30 k-means++ restarts):
  (a) PCA + GMM: 3000 seurat_v3 HVGs, scale, PCA 30, tied GMM;
  (b) same PCA 30, then three rounds of averaging over each spot's 7 nearest neighbours in space
      (itself included, row-normalised), then tied GMM.
Results are appended to benchmarks/RESULTS.md ("Spatial domains").

``--prev-ref REF`` also runs ``spatial_domains`` (its defaults) from the package as it was at
git commit REF, in a child process per dataset during the same run (timed inside the child,
so imports and loading are not counted): speed and accuracy of a change against the code
before it, under the same machine load.
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
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data import labels_of, load, make_synthetic_section  # noqa: E402
from _provenance import export_src, provenance_line  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
K = 7


from _data import PeakRSS  # noqa: E402  (one peak-RSS probe for every benchmark)


def _gpu_reset(device: str) -> None:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _gpu_peak(device: str) -> float | None:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**30
    return None


def knn_smoothing_operator(xy: np.ndarray, k: int = 7) -> sp.csr_matrix:
    """Row-normalised kNN averaging (k nearest including the spot itself)."""
    from scipy.spatial import cKDTree

    _, idx = cKDTree(xy).query(xy, k=k)
    n = xy.shape[0]
    return sp.csr_matrix(
        (np.full(n * k, 1.0 / k, np.float32), (np.repeat(np.arange(n), k), idx.ravel())),
        shape=(n, n),
    )


GNN_KWARGS: dict = {}  # --epochs / --n-models


def run_gnn(adata, seed: int, device: str):
    from napari_scai.tl import spatial_domains

    # the table itself when it is big (a copy of a 1M-cell matrix would double its memory):
    # spatial_domains never modifies X, it only adds obs/obsm/uns keys
    a = adata.copy() if adata.n_obs < 200_000 else adata
    spatial_domains(a, n_domains=K, device=device, seed=seed, **GNN_KWARGS)
    return a.obs["scai_domain"].to_numpy()


def baseline_features(adata, smooth: bool) -> np.ndarray:
    """PCA 30 of 3000 seurat_v3 HVGs, optionally 3 rounds of kNN-7 averaging (baseline (b))."""
    from napari_scai.preprocess import rna_features

    X = rna_features(adata, n_top_genes=3000, n_comps=30, key_added=None)
    if smooth:
        S = knn_smoothing_operator(np.asarray(adata.obsm["spatial"], dtype=np.float64)[:, :2])
        for _ in range(3):
            X = S @ X
    return np.asarray(X, dtype=np.float32)


def run_baseline(adata, seed: int, device: str, smooth: bool):
    """Baselines (a)/(b), clustered by the same mixture as the GNN (napari_scai's torch GMM,
    tied covariance, the same number of k-means++ restarts as ``spatial_domains``' default),
    so that the comparison is even. Earlier tables used scikit-learn's GMM with one init."""
    import inspect

    from napari_scai.models.cluster import GaussianMixture
    from napari_scai.tl import spatial_domains

    n_init = inspect.signature(spatial_domains).parameters["n_init"].default
    X = baseline_features(adata, smooth)
    gmm = GaussianMixture(K, covariance_type="tied", n_init=n_init, seed=seed, device=device)
    return gmm.fit(X).predict(X)


def run_preprocess_only(adata, seed: int, device: str):
    """Model input only (HVGs, log-normalise, chunked scale + PCA 50, spatial graph): the part
    that used to densify cells x HVGs. Returns dummy labels (scored ARI is meaningless)."""
    from napari_scai.graph import spatial_graph
    from napari_scai.preprocess import rna_features

    X = rna_features(adata, n_top_genes=3000, n_comps=50, key_added=None, seed=seed)
    A = spatial_graph(adata)
    print(f"  features {X.shape}, graph {A.shape[0]:,} nodes / {A.nnz:,} edges", flush=True)
    return np.zeros(adata.n_obs, dtype=int)


METHODS = {
    "GNN (spatial_domains)": run_gnn,
    "(a) PCA + GMM": lambda a, s, d: run_baseline(a, s, d, smooth=False),
    "(b) PCA + 3x kNN-7 smoothing + GMM": lambda a, s, d: run_baseline(a, s, d, smooth=True),
    "preprocessing + graph only": run_preprocess_only,
}


def ari_on_labelled(truth, pred) -> float:
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score

    t = pd.Series(truth)
    keep = t.notna().to_numpy()
    return float(adjusted_rand_score(t[keep].astype(str), np.asarray(pred)[keep]))


def bench_joint(seeds, device):
    """Joint mode: 151673 + 151674 in one call (shared embedding and domains), ARI per section."""
    from napari_scai.tl import spatial_domains

    sections = {name: load(name) for name in ("151673", "151674")}
    per = {name: [] for name in sections}
    times, peaks, gpeaks = [], [], []
    for seed in seeds:
        copies = {name: a.copy() for name, a in sections.items()}
        _gpu_reset(device)
        with PeakRSS() as mem:
            t = time.perf_counter()
            spatial_domains(list(copies.values()), n_domains=K, device=device, seed=seed)
            times.append(time.perf_counter() - t)
        peaks.append(mem.peak / 2**30)
        gpeaks.append(_gpu_peak(device))
        cats = {tuple(c.obs["scai_domain"].cat.categories) for c in copies.values()}
        assert len(cats) == 1, "joint mode must give one shared set of domain labels"
        for name, a in copies.items():
            per[name].append(
                ari_on_labelled(a.obs[labels_of(name)], a.obs["scai_domain"].to_numpy())
            )
        print(
            f"  joint seed {seed}: " + ", ".join(f"{n} ARI {v[-1]:.3f}" for n, v in per.items()),
            flush=True,
        )
    return [
        _row(
            f"{name} (joint)",
            "GNN joint 151673+151674",
            sections[name].n_obs,
            aris,
            times,
            peaks,
            gpeaks,
        )
        for name, aris in per.items()
    ]


_PREV_CHILD = r"""
import json, resource, sys, time
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from _data import load
from napari_scai.tl import spatial_domains
a = load(sys.argv[3])
runs = []
for seed in json.loads(sys.argv[4]):
    b = a.copy()
    t = time.perf_counter()
    spatial_domains(b, n_domains=int(sys.argv[5]), device=sys.argv[6], seed=seed)
    runs.append({"seconds": time.perf_counter() - t, "labels": b.obs["scai_domain"].astype(str).tolist()})
    print(f"  prev seed {seed}: {runs[-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
print("RESULT " + json.dumps({"runs": runs, "peak": peak}))
"""


def bench_prev(name, adata, truth_key, seeds, device, ref_sha: str, ref_src: Path) -> dict:
    """``spatial_domains`` defaults of commit ``ref_sha`` (child process), one row."""
    import json
    import subprocess

    env = dict(os.environ, PYTHONPATH=str(ref_src))
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _PREV_CHILD,
            str(ref_src),
            str(Path(__file__).resolve().parent),
            name,
            json.dumps(seeds),
            str(K),
            device,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"run at {ref_sha} failed:\n{proc.stderr[-3000:]}")
    res = json.loads(lines[-1][len("RESULT ") :])
    aris, times = [], []
    for seed, run in zip(seeds, res["runs"], strict=True):
        aris.append(ari_on_labelled(adata.obs[truth_key], np.asarray(run["labels"])))
        times.append(run["seconds"])
        print(
            f"  {name:9s} {'GNN at ' + ref_sha:36s} seed {seed}: ARI {aris[-1]:.3f}  "
            f"{times[-1]:.1f} s",
            flush=True,
        )
    label = f"GNN at {ref_sha} (code and defaults before this change)"
    return _row(name, label, adata.n_obs, aris, times, [res["peak"]], [None])


def _row(dataset, method, n, aris, times, peaks, gpeaks) -> dict:
    """One table row: ARI mean/SD over seeds, mean wall time, peak host and GPU memory."""
    return dict(
        dataset=dataset,
        method=method,
        n=n,
        aris=aris,
        mean=float(np.mean(aris)),
        sd=float(np.std(aris, ddof=1)) if len(aris) > 1 else 0.0,
        time=float(np.mean(times)),
        peak=float(np.max(peaks)),
        gpu=None if gpeaks[0] is None else float(np.max(gpeaks)),
    )


def bench_dataset(name, adata, truth_key, seeds, device, methods):
    rows = []
    for mname in methods:
        fn = METHODS[mname]
        aris, times, peaks, gpeaks = [], [], [], []
        for seed in seeds:
            _gpu_reset(device)
            with PeakRSS() as mem:
                t = time.perf_counter()
                pred = fn(adata, seed, device)
                times.append(time.perf_counter() - t)
            peaks.append(mem.peak / 2**30)
            gpeaks.append(_gpu_peak(device))
            aris.append(ari_on_labelled(adata.obs[truth_key], pred))
            print(
                f"  {name:9s} {mname:36s} seed {seed}: ARI {aris[-1]:.3f}  {times[-1]:.1f} s",
                flush=True,
            )
        rows.append(_row(name, mname, adata.n_obs, aris, times, peaks, gpeaks))
    return rows


def fmt_table(rows, device: str) -> str:
    out = [
        "| dataset | cells | method | ARI mean ± SD | ARIs per seed | wall s / run | peak host GiB | peak GPU GiB | device |",
        "|---|---:|---|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        gpu = "-" if r["gpu"] is None else f"{r['gpu']:.2f}"
        aris = " ".join(f"{x:.3f}" for x in r["aris"])
        out.append(
            f"| {r['dataset']} | {r['n']:,} | {r['method']} | {r['mean']:.3f} ± {r['sd']:.3f} | {aris} "
            f"| {r['time']:.1f} | {r['peak']:.2f} | {gpu} | {device} |"
        )
    return "\n".join(out)


def speed_ratios(rows) -> str:
    """Per dataset, the GNN's mean wall time over baseline (b)'s and over the --prev-ref run's,
    in the same run (the figure that survives a shared machine's drift)."""
    out = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        by = {r["method"]: r["time"] for r in rows if r["dataset"] == ds}
        gnn = by.get("GNN (spatial_domains)")
        b = by.get("(b) PCA + 3x kNN-7 smoothing + GMM")
        prev = next((t for m, t in by.items() if m.startswith("GNN at ")), None)
        parts = []
        if gnn and b:
            parts.append(f"GNN / (b) = {gnn / b:.2f}x")
        if gnn and prev:
            parts.append(f"GNN / GNN at ref = {gnn / prev:.2f}x")
        if parts:
            out.append(f"- {ds}: " + ", ".join(parts) + " (wall time, same run)")
    return "\n".join(out)


def describe_device(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()})"


def append_results(text: str, header: str, path: Path = RESULTS) -> None:
    body = path.read_text() if path.exists() else "# Benchmark results\n"
    if "## Spatial domains" not in body:
        body = body.rstrip() + "\n\n## Spatial domains\n"
    body = body.rstrip() + f"\n\n{header}\n\n{text}\n"
    path.write_text(body)


def main(argv=None) -> None:
    from napari_scai.models import resolve_device

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (0..N-1)")
    p.add_argument("--datasets", default="151673,151674,starmap")
    p.add_argument("--device", default="auto")
    p.add_argument("--scale", type=int, default=0, help="synthetic N-cell section instead")
    p.add_argument("--genes", type=int, default=100, help="genes of the synthetic section")
    p.add_argument(
        "--mean-count",
        type=float,
        default=None,
        help="mean count per gene and cell of the synthetic section (a real panel's sparsity)",
    )
    p.add_argument(
        "--pool", type=int, default=None, help="synthetic: distinct cells per domain (see _data)"
    )
    p.add_argument("--epochs", type=int, default=None, help="GNN epochs (default: the API's)")
    p.add_argument("--n-models", type=int, default=None, help="ensemble size (default: API's)")
    p.add_argument("--methods", default="all", help="comma list of: gnn,a,b (default all)")
    p.add_argument("--no-append", action="store_true", help="do not write RESULTS.md")
    p.add_argument(
        "--prev-ref",
        default=None,
        help="also run spatial_domains as at this git commit (child process, same run)",
    )
    p.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="markdown file the table is appended to (default benchmarks/RESULTS.md)",
    )
    p.add_argument(
        "--joint",
        action="store_true",
        help="also run joint mode on 151673 + 151674 (one shared set of domains)",
    )
    args = p.parse_args(argv)
    if args.epochs is not None:
        GNN_KWARGS["epochs"] = args.epochs
    if args.n_models is not None:
        GNN_KWARGS["n_models"] = args.n_models
    device = str(resolve_device(args.device))
    seeds = list(range(args.seeds))
    every = list(METHODS)
    names = every[:3]
    if args.methods != "all":
        pick = {"gnn": every[0], "a": every[1], "b": every[2], "pre": every[3]}
        names = [pick[m.strip()] for m in args.methods.split(",")]
    commit = provenance_line()  # computed; SCAI_COMMIT/SCAI_TREE on a copy without .git
    load_start = os.getloadavg()[0]  # measured: whether other jobs shared the machine
    rows = []
    if args.scale:
        t = time.perf_counter()
        a = make_synthetic_section(
            args.scale,
            n_genes=args.genes,
            seed=0,
            mean_count=args.mean_count,
            pool_per_domain=args.pool,
        )
        print(
            f"synthetic section: {a.n_obs:,} cells x {a.n_vars} genes, {a.X.nnz:,} counts "
            f"stored, in {time.perf_counter() - t:.1f} s"
        )
        rows += bench_dataset(f"synthetic-{args.scale}", a, "planted", seeds, device, names)
    else:
        prev = export_src(args.prev_ref) if args.prev_ref else None
        for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
            a = load(name)
            rows += bench_dataset(name, a, labels_of(name), seeds, device, names)
            if prev is not None:
                rows.append(bench_prev(name, a, labels_of(name), seeds, device, *prev))
    if args.joint:
        rows += bench_joint(seeds, device)
    table = fmt_table(rows, device)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python benchmarks/domains.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header = (
        f"`{cmd.strip()}` — {when}; device: {describe_device(device)}; {commit}; "
        f"seeds {seeds[0]}..{seeds[-1]}; K = {K}; 1-min load average {load_start:.2f} at "
        f"start, {os.getloadavg()[0]:.2f} at end."
    )
    ratios = speed_ratios(rows)
    if ratios:
        table += "\n\n" + ratios
    print()
    print(header)
    print(table)
    if not args.no_append:
        append_results(table, header, args.results)


if __name__ == "__main__":
    main()
