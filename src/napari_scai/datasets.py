"""Sample data bundled with napari-scai (``sample_data/``; provenance in ``PROVENANCE.md``)."""

from __future__ import annotations

from pathlib import Path

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
