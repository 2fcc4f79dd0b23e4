"""Planted multimodal simulations with known ground truth, for the integration model.

Two designs:

* :func:`simulate_paired_modalities` (design a): paired RNA counts and protein (ADT) counts on
  the same cells, where each modality separates only part of the cell types. RNA tells types
  ``0 .. n_rna_unique-1`` apart and sees the others as one group; protein does the reverse.
  Only both together separate every type, and for each type one modality is planted as the
  informative one (``obs['informative_modality']``).
* :func:`simulate_spatial_multimodal` (design b): cells on a jittered grid; two binary spatial
  patterns, one carried by each modality, whose combination defines four spatially coherent
  domains; per-cell counts are low, so single cells are noisy and neighbours help.

Both return a ``dict`` of AnnData tables (``{"rna": ..., "protein": ...}``) on the same cells
(same ``obs_names``), counts in ``X`` (CSR for RNA), the truth in ``obs``.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["simulate_paired_modalities", "simulate_spatial_multimodal"]


def _nb(rng: np.random.Generator, mean: np.ndarray, theta: float) -> np.ndarray:
    """Negative binomial counts with the given means and inverse dispersion ``theta``."""
    lam = rng.gamma(shape=theta, scale=np.maximum(mean, 1e-12) / theta)
    return rng.poisson(lam)


def _rna_counts(
    rng: np.random.Generator,
    state: np.ndarray,
    n_states: int,
    n_genes: int,
    n_markers: int,
    fold: float,
    library: float,
    theta: float,
    batch: np.ndarray | None = None,
    batch_scale: float = 0.0,
    depth_factor: np.ndarray | None = None,
) -> tuple[sp.csr_matrix, np.ndarray]:
    """NB counts: a log-normal baseline, ``n_markers`` up-regulated genes per state."""
    n = state.size
    base = rng.lognormal(mean=0.0, sigma=1.0, size=n_genes)
    prof = np.tile(base, (n_states, 1))
    markers = np.full(n_genes, -1)
    order = rng.permutation(n_genes)
    for s in range(n_states):
        genes = order[s * n_markers : (s + 1) * n_markers]
        prof[s, genes] *= fold
        markers[genes] = s
    prof /= prof.sum(1, keepdims=True)
    lib = rng.lognormal(mean=np.log(library), sigma=0.3, size=n)
    if depth_factor is not None:
        lib = lib * depth_factor
    mean = prof[state] * lib[:, None]
    if batch is not None and batch_scale > 0:
        nb = int(batch.max()) + 1
        eff = rng.lognormal(0.0, batch_scale, size=(nb, n_genes))
        mean = mean * eff[batch]
    X = _nb(rng, mean, theta).astype(np.float32)
    return sp.csr_matrix(X), markers


def _protein_counts(
    rng: np.random.Generator,
    state: np.ndarray,
    n_states: int,
    n_proteins: int,
    n_markers: int,
    fold: float,
    background: float,
    theta: float,
    batch: np.ndarray | None = None,
    batch_scale: float = 0.0,
    depth_factor: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """ADT-like counts: a background per protein, ``n_markers`` proteins high per state."""
    n = state.size
    bg = background * rng.lognormal(0.0, 0.5, size=n_proteins)
    prof = np.tile(bg, (n_states, 1))
    markers = np.full(n_proteins, -1)
    order = rng.permutation(n_proteins)
    for s in range(n_states):
        prots = order[s * n_markers : (s + 1) * n_markers]
        prof[s, prots] *= fold
        markers[prots] = s
    depth = rng.lognormal(0.0, 0.3, size=n)
    if depth_factor is not None:
        depth = depth * depth_factor
    mean = prof[state] * depth[:, None]
    if batch is not None and batch_scale > 0:
        nb = int(batch.max()) + 1
        eff = rng.lognormal(0.0, batch_scale, size=(nb, n_proteins))
        mean = mean * eff[batch]
    return _nb(rng, mean, theta).astype(np.float32), markers


def simulate_paired_modalities(
    n_cells: int = 3200,
    n_types: int = 6,
    n_rna_unique: int = 3,
    *,
    n_genes: int = 2000,
    n_proteins: int = 30,
    rna_markers: int = 50,
    rna_fold: float = 3.0,
    rna_library: float = 1500.0,
    protein_markers: int = 3,
    protein_fold: float = 3.0,
    protein_background: float = 30.0,
    uninformative_depth: float = 0.25,
    n_batches: int = 1,
    batch_scale: float = 0.3,
    seed: int = 0,
) -> dict[str, ad.AnnData]:
    """Paired RNA + protein counts where each modality resolves only part of the cell types.

    Types ``0 .. n_rna_unique-1`` have their own RNA state and share one protein state; types
    ``n_rna_unique .. n_types-1`` share one RNA state and have their own protein state. Each
    modality alone therefore merges some types; only both together separate all.

    Parameters
    ----------
    n_cells, n_types
        Cells (types drawn with equal probability) and number of cell types.
    n_rna_unique
        How many types RNA separates (the rest are told apart by protein only).
    n_genes, rna_markers, rna_fold, rna_library
        RNA: genes, marker genes per RNA state, their fold change, median UMIs per cell.
    n_proteins, protein_markers, protein_fold, protein_background
        Protein: panel size, marker proteins per protein state, fold change over background,
        mean background count.
    uninformative_depth
        Depth (library size) factor of the modality that does not tell a cell's type apart:
        for types 0 .. n_rna_unique-1 the protein counts, for the others the RNA counts, are
        this much shallower (as for cells with little RNA, or few bound antibodies). Per-cell
        quality differs between modalities, which is what per-cell weights are for.
    n_batches, batch_scale
        Batches (``obs['batch']``) with a multiplicative per-feature effect
        (log-normal, sd ``batch_scale``) in both modalities.
    seed
        Random seed.

    Returns
    -------
    dict
        ``{"rna": AnnData, "protein": AnnData}`` on the same cells. ``obs['cell_type']`` is the
        truth, ``obs['informative_modality']`` the modality that tells the cell's type apart,
        ``obs['batch']`` the batch. ``uns['design']`` lists which types each modality merges.
    """
    if not 1 <= n_rna_unique < n_types:
        raise ValueError("need 1 <= n_rna_unique < n_types")
    rng = np.random.default_rng(seed)
    types = rng.integers(0, n_types, size=n_cells)
    rna_state = np.where(types < n_rna_unique, types, n_rna_unique)
    prot_state = np.where(types >= n_rna_unique, types - n_rna_unique + 1, 0)
    batch = rng.integers(0, n_batches, size=n_cells) if n_batches > 1 else None
    rna_informative = types < n_rna_unique
    low = float(uninformative_depth)
    Xr, gm = _rna_counts(
        rng, rna_state, n_rna_unique + 1, n_genes, rna_markers, rna_fold, rna_library, 5.0,
        batch, batch_scale, np.where(rna_informative, 1.0, low),
    )  # fmt: skip
    Xp, pm = _protein_counts(
        rng, prot_state, n_types - n_rna_unique + 1, n_proteins, protein_markers,
        protein_fold, protein_background, 8.0, batch, batch_scale,
        np.where(rna_informative, low, 1.0),
    )  # fmt: skip
    names = [f"cell{i}" for i in range(n_cells)]
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical([f"T{t}" for t in types]),
            "informative_modality": pd.Categorical(
                np.where(types < n_rna_unique, "rna", "protein")
            ),
            "batch": pd.Categorical(
                [f"b{b}" for b in (batch if batch is not None else np.zeros(n_cells, int))]
            ),
        },
        index=names,
    )
    design = {
        "rna_separates": [f"T{t}" for t in range(n_rna_unique)],
        "protein_separates": [f"T{t}" for t in range(n_rna_unique, n_types)],
    }
    rna = ad.AnnData(
        X=Xr,
        obs=obs.copy(),
        var=pd.DataFrame({"marker_of_state": gm}, index=[f"gene{g}" for g in range(n_genes)]),
    )
    prot = ad.AnnData(
        X=Xp,
        obs=obs.copy(),
        var=pd.DataFrame({"marker_of_state": pm}, index=[f"CD{p + 1}" for p in range(n_proteins)]),
    )
    rna.uns["design"] = design
    prot.uns["design"] = design
    return {"rna": rna, "protein": prot}


def simulate_spatial_multimodal(
    n_side: int = 60,
    *,
    n_genes: int = 1000,
    n_proteins: int = 20,
    rna_markers: int = 30,
    rna_fold: float = 2.0,
    rna_library: float = 250.0,
    protein_markers: int = 3,
    protein_fold: float = 1.6,
    protein_background: float = 15.0,
    seed: int = 0,
) -> dict[str, ad.AnnData]:
    """Spatial RNA + protein on a jittered grid; four domains = two patterns combined.

    Modality A (RNA) carries a left/right pattern with a wavy boundary, modality B (protein) a
    disc around the centre. The domain (``obs['domain']``, 4 classes) is the pair of states,
    so neither modality alone defines it; per-cell counts are low (noisy single cells), the
    domains are spatially coherent, so the spatial graph helps.

    Parameters
    ----------
    n_side
        Grid side (``n_side ** 2`` cells, unit spacing; ``obsm['spatial']`` in grid units).
    n_genes, rna_markers, rna_fold, rna_library
        RNA settings (see :func:`simulate_paired_modalities`).
    n_proteins, protein_markers, protein_fold, protein_background
        Protein settings.
    seed
        Random seed.
    """
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(n_side, dtype=float), np.arange(n_side, dtype=float))
    xy = np.c_[gx.ravel(), gy.ravel()] + rng.uniform(-0.3, 0.3, size=(n_side * n_side, 2))
    u = xy / max(n_side - 1, 1)
    a_state = (u[:, 0] + 0.12 * np.sin(2 * np.pi * 1.5 * u[:, 1]) > 0.5).astype(int)
    b_state = (((u[:, 0] - 0.5) ** 2 + (u[:, 1] - 0.5) ** 2) < 0.33**2).astype(int)
    domain = 2 * a_state + b_state
    Xr, _ = _rna_counts(rng, a_state, 2, n_genes, rna_markers, rna_fold, rna_library, 5.0)
    Xp, _ = _protein_counts(
        rng, b_state, 2, n_proteins, protein_markers, protein_fold, protein_background, 8.0
    )
    names = [f"spot{i}" for i in range(xy.shape[0])]
    obs = pd.DataFrame(
        {
            "domain": pd.Categorical([f"D{d}" for d in domain]),
            "rna_state": a_state,
            "protein_state": b_state,
        },
        index=names,
    )
    rna = ad.AnnData(X=Xr, obs=obs.copy(), obsm={"spatial": xy.copy()})
    rna.var_names = [f"gene{g}" for g in range(n_genes)]
    prot = ad.AnnData(X=Xp, obs=obs.copy(), obsm={"spatial": xy.copy()})
    prot.var_names = [f"ADT{p}" for p in range(n_proteins)]
    return {"rna": rna, "protein": prot}
