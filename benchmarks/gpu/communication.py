"""GPU scale check for cell–cell communication (issue 9): 1M cells x 1,000 pairs x 1,000 perms.

    python benchmarks/gpu/communication.py                      # on the GPU machine (cuda)
    python benchmarks/gpu/communication.py --device cpu --n 20000 --pairs 50 --perms 200

Synthetic section at 1,500 cells / mm^2 (a 1.4 : 1 rectangle), ligand and receptor each > 0
in 15 % of cells (gamma values), Gaussian kernel of 30 µm cut at 60 µm, null tiles of 600 µm
with a random grid offset per permutation: exactly the model ``tl.communication`` runs
(:func:`napari_scai.models.communication.communication_scores`), global and local
permutation p-values with BH over cells x pairs. Needs only numpy, scipy, torch and
``src/`` on the path. Prints one Markdown row and writes ``communication.json`` (and
``communication.md``) under ``$OUT`` (or ``--out``): wall time per phase, peak GPU memory
(``torch.cuda.max_memory_allocated``) and the host's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--perms", type=int, default=1000)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-local", action="store_true", help="global p-values only")
    ap.add_argument("--block-floats", type=int, default=None, help="default: 1e9 cuda, 3.2e7 cpu")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()

    import torch

    from napari_scai.models.communication import communication_scores, kernel_graph, null_design

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    block = args.block_floats or (1_000_000_000 if cuda else 32_000_000)
    n, P, B = args.n, args.pairs, args.perms
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    side = np.sqrt(n / 1500.0) * 1000.0
    xy = rng.uniform(0, side, (n, 2)) * np.array([1.4, 1 / 1.4])
    L = np.zeros((n, P), dtype=np.float32)
    R = np.zeros((n, P), dtype=np.float32)
    for p0 in range(0, P, 50):  # column blocks: no float64 n x P temporaries
        p1 = min(P, p0 + 50)
        for M in (L, R):
            on = rng.random((n, p1 - p0)) < 0.15
            M[:, p0:p1] = on * rng.gamma(2.0, 1.0, (n, p1 - p0)).astype(np.float32)
    t1 = time.perf_counter()
    W = kernel_graph(xy, 30.0)
    design = null_design(xy, 600.0)
    t2 = time.perf_counter()
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
        torch.cuda.synchronize(dev)
    with torch.no_grad():
        res = communication_scores(
            L,
            R,
            W,
            design,
            n_perms=B,
            device=dev,
            local=not args.no_local,
            max_block_floats=block,
            max_cache_bytes=40_000_000_000 if cuda else 2_000_000_000,
        )
    if cuda:
        torch.cuda.synchronize(dev)
    t3 = time.perf_counter()
    sha = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip() or os.environ.get("SCAI_COMMIT", "unknown")
    row = {
        "device": torch.cuda.get_device_name(dev) if cuda else "cpu",
        "commit": sha,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "n_cells": n,
        "n_pairs": P,
        "n_perms": B,
        "local": not args.no_local,
        "mean_degree": W.nnz / n,
        "data_s": t1 - t0,
        "graph_s": t2 - t1,
        "perm_s": t3 - t2,
        "peak_gpu_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if cuda else 0.0,
        "host_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "min_pvalue": float(res.pvalue.min()),
        "local_tested_frac": float((R > 0).mean()),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "communication.json").write_text(json.dumps(row, indent=1))
    cols = list(row)
    md = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n| "
    md += " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()) + " |\n"
    (out / "communication.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
