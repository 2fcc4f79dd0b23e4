"""GPU check for multimodal integration: ADTnorm (422,682 cells) on CUDA, target <= 2 min.

    python benchmarks/gpu/integration.py                  # CUDA, whole dataset, twice
    python benchmarks/gpu/integration.py --device cpu --cells 20000   # CPU smoke run

Runs ``tl.integrate`` (protein, ``batch_key='study_name'``, K = 6) twice with the same seed and
reports wall time, ARI/NMI vs ``cell_type_l1`` (without 'undefined'), peak GPU memory and
whether the two runs gave the same labels (determinism on the device). Appends to
benchmarks/RESULTS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1] / "src"))

from integration import DATA, RESULTS, _header  # noqa: E402


def main(argv=None) -> int:
    import anndata as ad
    import torch
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from napari_scai.tl import integrate

    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--cells", type=int, default=None)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    a0 = ad.read_h5ad(DATA / "citeseq" / "adtnorm_13studies_9adt.h5ad")
    if args.cells:
        a0 = a0[np.random.default_rng(0).permutation(a0.n_obs)[: args.cells]].copy()
    a0.obs_names_make_unique()
    lab = a0.obs["cell_type_l1"].astype(str).to_numpy()
    keep = lab != "undefined"
    rows, labels = [], []
    for run in range(2):
        a = a0.copy()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        integrate({"protein": a}, tables=("protein",), batch_key="study_name", n_clusters=6,
                  device=args.device, seed=0)  # fmt: skip
        wall = time.perf_counter() - t
        peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else 0.0
        y = a.obs["scai_joint_cluster"].to_numpy()
        labels.append(y)
        rows.append(
            f"| {run + 1} | {a.n_obs:,} | {wall:.1f} | "
            f"{adjusted_rand_score(lab[keep], y[keep]):.3f} | "
            f"{normalized_mutual_info_score(lab[keep], y[keep]):.3f} | {peak:.2f} |"
        )
    same = bool(np.array_equal(labels[0], labels[1]))
    text = (
        f"\n### Multimodal integration on {args.device} (ADTnorm)\n\n{_header()}\n\n"
        "| run | cells | wall s | ARI | NMI | peak GPU GiB |\n|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\nSame labels in both runs: {same}\n"
    )
    print(text)
    if not args.no_write:
        with open(RESULTS, "a") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
