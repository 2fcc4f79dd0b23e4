"""Sample data bundled with napari-scai (``sample_data/``; provenance in ``PROVENANCE.md``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

#: The cortical layers of DLPFC in anatomical order.
DLPFC_LAYERS = ["L1", "L2", "L3", "L4", "L5", "L6", "WM"]
DLPFC_LAYER_COLORS = ["#f0c808", "#dd6e42", "#4f6d7a", "#7fb069", "#e6aa68", "#6a4c93", "#c0c0c0"]


def sample_data_dir() -> Path:
    """Folder holding the bundled samples (inside the wheel, or the repo's ``sample_data/``)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "sample_data", here.parents[1] / "sample_data"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "napari-scai's sample_data folder is missing. Fix: reinstall napari-scai (pip install napari-scai) "
        "or run from a clone of the repository"
    )


def add_layer_labels(
    sdata, labels_csv: str | Path, table: str = "rna", key: str = "layer_manual"
) -> None:
    """Add manual DLPFC layer labels (``barcode,layer_manual`` CSV) as a categorical column."""
    adata = sdata.tables[table]
    labels = pd.read_csv(labels_csv, index_col=0).iloc[:, 0]
    values = labels.reindex(adata.obs_names)
    cats = [c for c in DLPFC_LAYERS if c in set(values.dropna())] + sorted(
        set(values.dropna()) - set(DLPFC_LAYERS)
    )
    adata.obs[key] = pd.Categorical(values.to_numpy(), categories=cats)
    adata.uns[f"{key}_colors"] = [
        DLPFC_LAYER_COLORS[DLPFC_LAYERS.index(c)] if c in DLPFC_LAYERS else "#000000" for c in cats
    ]


def add_gene_symbols(sdata, symbols_tsv: str | Path, table: str = "rna") -> None:
    """Add ``var['gene_symbol']`` from an ``gene_id<TAB>gene_symbol`` file (IDs kept as var names)."""
    adata = sdata.tables[table]
    mapping = pd.read_csv(symbols_tsv, sep="\t", index_col=0).iloc[:, 0]
    ids = adata.var["gene_ids"] if "gene_ids" in adata.var else adata.var_names.to_series()
    adata.var["gene_symbol"] = ids.map(mapping).fillna(ids).astype(str).to_numpy()


def dlpfc_151673():
    """Human DLPFC section 151673 (10x Visium) with manual layer labels.

    Returns a SpatialData: lowres H&E ``dlpfc_151673_lowres_image``, spots
    ``dlpfc_151673_spots`` and table ``rna`` (3639 spots × 5000 genes, raw counts) with
    ``obs['layer_manual']`` (L1–L6, WM; NaN for the 28 unlabelled spots) and
    ``var['gene_symbol']``.
    """
    from napari_scai.io import read_visium

    folder = sample_data_dir() / "dlpfc_151673"
    sdata = read_visium(folder, sample="dlpfc_151673")
    add_layer_labels(sdata, folder / "layer_labels.csv")
    add_gene_symbols(sdata, folder / "gene_symbols.tsv")
    return sdata


SAMPLES = {"dlpfc_151673": dlpfc_151673}


def load_sample(name: str):
    """Load a bundled sample by name (see :data:`SAMPLES`)."""
    if name not in SAMPLES:
        raise KeyError(f"unknown sample '{name}'. Fix: use one of {sorted(SAMPLES)}")
    return SAMPLES[name]()


# ---------------------------------------------------------------------------------------------
# Synthetic sections (the one generator used by tests, benchmarks and the viewer)
# ---------------------------------------------------------------------------------------------

#: Visium: centre-to-centre distance of neighbouring spots, µm.
VISIUM_SPOT_SPACING_UM = 100.0


def synthetic_section(
    n_cells: int = 1000,
    *,
    n_genes: int = 100,
    n_domains: int = 4,
    kind: str = "cells",
    layout: str = "bands",
    n_markers: int = 8,
    depth: float = 1.0,
    side: float | None = None,
    radius: float | None = None,
    seed: int = 0,
    sample: str = "synthetic",
    as_anndata: bool = False,
    mean_count: float | None = None,
):
    """A synthetic tissue section with planted spatial domains (no real data needed).

    Domains are ``n_domains`` curved vertical bands (``layout="bands"``), or bands plus two
    round islands (``layout="bands+islands"``, needs ``n_domains >= 3``). Counts are Poisson
    around per-domain expression programs: a shared gamma-distributed base profile, each domain
    doubling ``n_markers`` marker genes, library sizes 0.5-1.5x. The programs do not depend on
    ``seed`` (two sections with different seeds share their domains' biology, like two samples
    of one tissue); positions and counts do. ``X`` is sparse and built in chunks, so a
    million-cell section is cheap.

    Parameters
    ----------
    n_cells
        Number of cells (``kind="cells"``) or spots (``kind="visium"``).
    n_genes
        Number of genes (``var_names`` ``g0``, ``g1``, ...).
    n_domains
        Number of planted domains.
    kind
        ``"cells"``: cells uniformly scattered, ~10 coordinate units apart, table ``rna`` over a
        ``{sample}_cells`` circles element. ``"visium"``: spots on the Visium hexagonal lattice
        (``obs['array_row']``, ``obs['array_col']``, 100 µm apart) in full-resolution pixels at
        DLPFC 151673's scale (0.7261 µm/px), with Visium scale factors in
        ``uns['spatial'][sample]['scalefactors']``, over a ``{sample}_spots`` element.
    layout
        ``"bands"`` or ``"bands+islands"``.
    n_markers, depth
        Marker genes per domain and a factor on the mean counts (signal strength).
    side
        ``kind="cells"`` only: edge of the square in coordinate units (default
        ``10 * sqrt(n_cells)``).
    radius
        Circle radius in coordinate units (default: 3 for cells, half the spot diameter for
        Visium).
    seed
        Seed for positions and counts.
    sample
        Sample id (element-name prefix).
    as_anndata
        Return the AnnData table alone (``obsm['spatial']`` holds the positions).
    mean_count
        Rescale the base profile to this mean count per gene and cell, drawn heavy-tailed as in
        real panels (~0.4 for a 500-gene Xenium-like panel, ~0.3 for DLPFC's top 5000 genes);
        ``None`` keeps the gamma(2, 1) profile.

    Returns
    -------
    SpatialData (or AnnData)
        Table ``rna``: raw counts in ``X`` (float32 CSR), ``obs['domain']`` (categorical
        ``D0``, ``D1``, ...; the planted truth), ``obs['score']`` (y position scaled to 0-1),
        ``obsm['spatial']``.
    """
    import scipy.sparse as sp
    from anndata import AnnData

    if kind not in ("cells", "visium"):
        raise ValueError(f"kind={kind!r}; use 'cells' or 'visium'")
    if layout not in ("bands", "bands+islands"):
        raise ValueError(f"layout={layout!r}; use 'bands' or 'bands+islands'")
    n_cells, n_genes, n_domains = int(n_cells), int(n_genes), int(n_domains)
    if n_cells < 1 or n_genes < 1 or n_domains < 1:
        raise ValueError("n_cells, n_genes and n_domains must be >= 1")
    if layout == "bands+islands" and n_domains < 3:
        raise ValueError("layout='bands+islands' needs n_domains >= 3 (two islands)")
    rng = np.random.default_rng(seed)
    obs_extra: dict[str, np.ndarray] = {}
    uns: dict = {}
    if kind == "cells":
        side = float(side) if side is not None else 10.0 * np.sqrt(n_cells)
        xy = rng.random((n_cells, 2)) * side
        lo, span = np.zeros(2), np.array([side, side])
        radius = 3.0 if radius is None else float(radius)
    else:
        # DLPFC 151673's scale: 0.7261 µm per full-res px (100 µm lattice = 137.7 px) and
        # spot_diameter_fullres 96.4 px, as Space Ranger wrote it there
        diameter_px = 96.4
        spacing = VISIUM_SPOT_SPACING_UM / 0.7261
        n_col = int(np.ceil(np.sqrt(n_cells * 2 / np.sqrt(3))))
        idx = np.arange(n_cells)
        row, k = idx // n_col, idx % n_col
        col = 2 * k + (row % 2)  # Visium: array_col steps by 2, odd rows shifted by one
        xy = np.column_stack([col * spacing / 2, row * spacing * np.sqrt(3) / 2]) + 1000.0
        xy = xy + rng.normal(0, 0.5, xy.shape)  # sub-pixel jitter as in real positions
        lo, span = xy.min(0), np.maximum(np.ptp(xy, 0), 1.0)
        radius = diameter_px / 2 if radius is None else float(radius)
        obs_extra = {"array_row": row.astype(np.int64), "array_col": col.astype(np.int64)}
        uns = {
            "spatial": {
                sample: {
                    "scalefactors": {
                        "spot_diameter_fullres": diameter_px,
                        "fiducial_diameter_fullres": diameter_px * 1.5,
                    }
                }
            }
        }
    u = (xy - lo) / span
    n_bands = n_domains if layout == "bands" else n_domains - 2
    dom = np.clip(((u[:, 0] + 0.08 * np.sin(u[:, 1] * 6.0)) * n_bands).astype(int), 0, n_bands - 1)
    for j in range(n_domains - n_bands):  # round islands for the remaining domains
        cx, cy = 0.25 + 0.5 * j, 0.5 + 0.2 * (-1) ** j
        dom[(u[:, 0] - cx) ** 2 + (u[:, 1] - cy) ** 2 < 0.12**2] = n_bands + j
    prog = np.random.default_rng(12345)  # expression programs: shared by every seed
    base = prog.gamma(2.0, 1.0, size=n_genes) * float(depth)
    if mean_count is not None:
        base = prog.gamma(0.5, 1.0, size=n_genes)
        base *= float(mean_count) * float(depth) / base.mean()
    mu = np.tile(base, (n_domains, 1))
    for d in range(n_domains):
        mu[d, prog.choice(n_genes, min(int(n_markers), n_genes), replace=False)] *= 2.0
    lib = rng.uniform(0.5, 1.5, n_cells)
    rows, cols, vals = [], [], []
    step = max(1, min(200_000, 50_000_000 // n_genes))  # dense chunks of <= 200 MB
    for s in range(0, n_cells, step):
        c = rng.poisson(mu[dom[s : s + step]] * lib[s : s + step, None]).astype(np.float32)
        r, g = np.nonzero(c)
        rows.append(r + s)
        cols.append(g)
        vals.append(c[r, g])
    X = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_cells, n_genes),
        dtype=np.float32,
    )
    prefix = "spot" if kind == "visium" else "cell"
    obs = pd.DataFrame(
        {
            "domain": pd.Categorical.from_codes(dom, [f"D{i}" for i in range(n_domains)]),
            "score": u[:, 1].astype(np.float64),
            **obs_extra,
        },
        index=[f"{prefix}_{i}" for i in range(n_cells)],
    )
    adata = AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]))
    adata.uns.update(uns)
    if as_anndata:
        adata.obsm["spatial"] = xy
        return adata
    from napari_scai.io._common import build_spatialdata

    return build_spatialdata(
        sample=sample,
        tables={"rna": adata},
        coords=xy,
        radius=radius,
        shapes_suffix="spots" if kind == "visium" else "cells",
    )
