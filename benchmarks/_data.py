"""Loaders for the benchmark datasets in ../shared/data (fallbacks when napari_scai.io is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

# ../shared/data beside the checkout; SCAI_SHARED_DATA points elsewhere (e.g. a copy carried to
# the GPU machine, see benchmarks/gpu/).
DATA = Path(
    os.environ.get("SCAI_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)


def load_dlpfc(sample: str = "151673", data_dir: Path = DATA) -> ad.AnnData:
    """DLPFC section as AnnData: raw counts in X, obs array_row/array_col/layer_manual,
    obsm['spatial'] (x, y full-res pixels)."""
    import scanpy as sc

    folder = Path(data_dir) / "visium" / f"dlpfc_{sample}"
    a = sc.read_10x_h5(folder / "filtered_feature_bc_matrix.h5")
    a.var_names_make_unique()
    pos = pd.read_csv(
        folder / "spatial" / "tissue_positions_list.csv",
        header=None,
        names=["barcode", "in_tissue", "array_row", "array_col", "pxl_row", "pxl_col"],
        index_col=0,
    )
    pos = pos.loc[a.obs_names]
    for c in ("in_tissue", "array_row", "array_col"):
        a.obs[c] = pos[c].to_numpy()
    a.obsm["spatial"] = pos[["pxl_col", "pxl_row"]].to_numpy(dtype=np.float64)
    lab = pd.read_csv(folder / "layer_labels.csv", index_col=0)["layer_manual"]
    a.obs["layer_manual"] = lab.reindex(a.obs_names).astype("category")
    return a


def load_starmap(data_dir: Path = DATA) -> ad.AnnData:
    a = ad.read_h5ad(Path(data_dir) / "imaging" / "starmap_v1_by3_wang2018.h5ad")
    a.X = a.X.tocsr() if hasattr(a.X, "tocsr") else a.X
    return a


def labels_of(name: str) -> str:
    return "layer_smoothed_manual" if name == "starmap" else "layer_manual"


def load(name: str) -> ad.AnnData:
    if name == "starmap":
        return load_starmap()
    return load_dlpfc(name)


def make_synthetic_section(
    n_cells: int,
    n_genes: int = 100,
    n_domains: int = 7,
    seed: int = 0,
    mean_count: float | None = None,
    pool_per_domain: int | None = None,
) -> ad.AnnData:
    """Synthetic tissue with planted domains: curved bands plus round islands on a square.

    Counts are Poisson around per-domain expression programs (each domain up-regulates 10
    marker genes 2x), library sizes vary 0.5-1.5x. Scales to millions of cells (sparse X).
    ``mean_count`` rescales the gene means to that average count per gene and cell (a real
    panel's sparsity: ~0.4 for a 500-gene Xenium panel, ~0.3 for DLPFC's top 5000 genes);
    ``None`` keeps the original programs (mean ~1). ``pool_per_domain``: draw only that many
    cells' counts per domain and give every cell a random one of its domain's pool (Poisson
    draws dominate the cost: 1.5e9 of them at 300k x 5000 take most of an hour on a busy
    2-core machine); the matrix has the same size and sparsity.
    """
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    side = np.sqrt(n_cells) * 10.0  # ~10 units between neighbouring cells
    xy = rng.random((n_cells, 2)) * side
    u = xy / side
    n_bands = max(n_domains - 2, 1)
    band = np.clip(((u[:, 0] + 0.08 * np.sin(u[:, 1] * 6.0)) * n_bands).astype(int), 0, n_bands - 1)
    dom = band.copy()
    for j in range(n_domains - n_bands):  # round islands for the remaining domains
        cx, cy = 0.25 + 0.5 * j, 0.5 + 0.2 * (-1) ** j
        dom[(u[:, 0] - cx) ** 2 + (u[:, 1] - cy) ** 2 < 0.12**2] = n_bands + j
    prog = np.random.default_rng(1234)
    base = prog.gamma(2.0, 0.5, size=n_genes)
    if mean_count is not None:
        base = prog.gamma(0.5, 1.0, size=n_genes)  # heavy-tailed, as real panels
        base *= mean_count / base.mean()
    mu = np.tile(base, (n_domains, 1))
    for d in range(n_domains):
        mu[d, prog.choice(n_genes, 10, replace=False)] *= 2.0
    lib = rng.uniform(0.5, 1.5, n_cells).astype(np.float32)
    blocks = []
    step = max(1, min(200_000, 50_000_000 // max(n_genes, 1)))
    if pool_per_domain is not None and pool_per_domain * n_domains < n_cells:
        pool_dom = np.repeat(np.arange(n_domains), pool_per_domain)
        pool_lib = rng.uniform(0.5, 1.5, pool_dom.size).astype(np.float32)
        for s in range(0, pool_dom.size, step):
            lam = mu[pool_dom[s : s + step]] * pool_lib[s : s + step, None]
            blocks.append(sp.csr_matrix(rng.poisson(lam).astype(np.float32)))
        pool = sp.vstack(blocks, format="csr")
        pick = dom * pool_per_domain + rng.integers(0, pool_per_domain, n_cells)
        X = pool[pick]
        del pool, blocks
    else:
        for s in range(0, n_cells, step):
            lam = mu[dom[s : s + step]] * lib[s : s + step, None]
            blocks.append(sp.csr_matrix(rng.poisson(lam).astype(np.float32)))
            del lam
        X = sp.vstack(blocks, format="csr")
        del blocks
    a = ad.AnnData(X=X, obsm={"spatial": xy})
    a.obs_names = [f"c{i}" for i in range(n_cells)]
    a.var_names = [f"g{i}" for i in range(n_genes)]
    a.obs["planted"] = pd.Categorical(dom.astype(str))
    return a
