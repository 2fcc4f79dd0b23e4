"""Loaders for the benchmark datasets in ../shared/data (fallbacks when napari_scai.io is absent)."""

from __future__ import annotations

import os
import threading
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
    """Synthetic tissue with planted domains (``obs['planted']``): curved bands plus two round
    islands, from :func:`napari_scai.datasets.synthetic_section` (10 markers per domain,
    half the default depth). Scales to millions of cells (sparse X). ``pool_per_domain``: draw
    counts for only that many cells per domain and reuse them (fast generation at scale)."""
    from napari_scai.datasets import synthetic_section

    kw = dict(n_domains=n_domains, layout="bands+islands", n_markers=10, depth=0.5)
    if pool_per_domain is not None and pool_per_domain * n_domains < n_cells:
        # Poisson draws dominate the cost (1.5e9 at 300k x 5000: most of an hour on a busy
        # 2-core machine): draw a pool of cells, then give every cell a random pool member of
        # its own domain (same size and sparsity; positions and domains from the cheap layout)
        a = synthetic_section(n_cells, n_genes=1, seed=seed, as_anndata=True, **kw)
        pool = synthetic_section(
            pool_per_domain * n_domains,
            n_genes=n_genes,
            seed=seed + 1,
            as_anndata=True,
            mean_count=mean_count,
            **kw,
        )
        rng = np.random.default_rng(seed)
        codes, pool_codes = a.obs["domain"].cat.codes.to_numpy(), pool.obs["domain"].cat.codes
        pick = np.empty(n_cells, dtype=np.int64)
        for d in np.unique(codes):
            members = np.flatnonzero(pool_codes.to_numpy() == d)
            if members.size == 0:
                members = np.arange(pool.n_obs)  # a domain the pool missed: any cell
            where = np.flatnonzero(codes == d)
            pick[where] = members[rng.integers(0, members.size, where.size)]
        a = ad.AnnData(X=pool.X[pick], obs=a.obs, var=pool.var, obsm=dict(a.obsm))
    else:
        a = synthetic_section(
            n_cells, n_genes=n_genes, seed=seed, as_anndata=True, mean_count=mean_count, **kw
        )
    a.obs["planted"] = pd.Categorical(a.obs["domain"].cat.codes.astype(str))
    return a


class PeakRSS:
    """Peak resident memory of this process while the block runs (polled every 20 ms)."""

    def __enter__(self):
        import psutil

        self._p = psutil.Process(os.getpid())
        self.peak = self._p.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._p.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._p.memory_info().rss)
