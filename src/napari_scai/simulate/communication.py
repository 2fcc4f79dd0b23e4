"""Planted cell–cell communication: senders and receivers meeting at an interface.

Layout: cells uniform in a ``width_um x height_um`` rectangle (2:1, so its principal axes are
well defined); ``x < width/2`` are ``sender`` cells, the rest ``receiver`` cells; the interface
is the line ``x = width/2``. Every gene has a Poisson background; "high" cells get a higher
Poisson rate. Three kinds of LR pairs (one ligand gene and one receptor gene each):

- ``planted``: the ligand is high in a random ``p_ligand`` of the senders within ``range_um`` of the
  interface; the receptor is high in receivers that have a ligand-high sender within
  ``range_um`` (with probability ``p_response``). Real short-range signalling.
- ``null``: ligand and receptor high in as many random cells (anywhere) as a planted pair's:
  the same marginal expression, no spatial relation.
- ``decoy``: ligand high in as many senders, receptor high in as many receivers as a planted
  pair, but only more than ``3 range_um`` from the interface on each side, so never within
  range: a test on group means (sender vs receiver) calls them; a spatial test must not.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["planted_communication"]


def planted_communication(
    n_cells: int = 3000,
    *,
    n_planted: int = 5,
    n_null: int = 40,
    n_decoy: int = 10,
    n_filler: int = 40,
    width_um: float | None = None,
    range_um: float = 50.0,
    density_per_mm2: float = 1500.0,
    background: float = 0.03,
    high: float = 6.0,
    p_response: float = 0.9,
    p_ligand: float = 0.7,
    seed: int = 0,
):
    """An AnnData (raw counts) with planted, null and decoy LR pairs.

    Parameters
    ----------
    n_cells
        Number of cells.
    n_planted, n_null, n_decoy
        Number of LR pairs of each kind (see the module docstring).
    n_filler
        Extra background genes (library size).
    width_um
        Width of the rectangle (height is half of it); default from ``density_per_mm2``.
    range_um
        Interaction range: planted receptors respond to ligand within this distance. Analyse
        with ``bandwidth_um = range_um / 2`` (kernel support ``2 h = range_um``).
    density_per_mm2
        Cell density used for the default width.
    background, high
        Poisson rates of background and "high" cells.
    p_response
        Probability that a receiver with a ligand-high sender in range expresses the receptor.
    p_ligand
        Fraction of the senders within ``range_um`` of the interface with a high ligand.
    seed
        Random seed.

    Returns
    -------
    AnnData
        ``X`` counts (CSR), ``obsm['spatial']`` in µm, ``obs['cell_type']`` (sender /
        receiver), ``obs['dist_to_interface_um']`` (signed, > 0 on the receiver side) and
        ``uns['lr_truth']`` (``ligand``, ``receptor``, ``kind``).
    """
    import anndata as ad
    import scipy.sparse as sp
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    if width_um is None:
        area_mm2 = n_cells / density_per_mm2
        width_um = float(np.sqrt(2 * area_mm2) * 1000.0)
    height_um = width_um / 2
    xy = np.column_stack([rng.uniform(0, width_um, n_cells), rng.uniform(0, height_um, n_cells)])
    mid = width_um / 2
    dist = xy[:, 0] - mid
    is_sender = dist < 0
    senders = np.nonzero(is_sender)[0]
    receivers = np.nonzero(~is_sender)[0]
    tree = cKDTree(xy)

    cols, names, truth = [], [], []

    def add(lig_high, rec_high, kind, k):
        for high_cells, name in (
            (lig_high, f"LIG{kind[0].upper()}{k}"),
            (rec_high, f"REC{kind[0].upper()}{k}"),
        ):
            lam = np.full(n_cells, background)
            lam[high_cells] = high
            cols.append(rng.poisson(lam))
            names.append(name)
        truth.append((names[-2], names[-1], kind))

    band = senders[dist[senders] > -range_um]
    sizes = []
    for k in range(n_planted):
        lig = band[rng.random(band.size) < p_ligand]
        near = np.zeros(n_cells, bool)
        for nb in tree.query_ball_point(xy[lig], r=range_um):
            near[nb] = True
        cand = receivers[near[receivers]]
        rec = cand[rng.random(cand.size) < p_response]
        sizes.append((lig.size, rec.size))
        add(lig, rec, "planted", k)
    if not sizes:  # null-only simulation: sizes of a typical planted pair
        n_band = int(np.sum((dist > -range_um) & (dist < 0)))
        sizes = [(max(1, int(n_band * p_ligand)), max(1, int(n_band * p_response)))]
    for k in range(n_null):
        nl, nr = sizes[k % len(sizes)]
        add(
            rng.choice(n_cells, nl, replace=False),
            rng.choice(n_cells, nr, replace=False),
            "null",
            k,
        )
    far_s = senders[dist[senders] < -3 * range_um]
    far_r = receivers[dist[receivers] > 3 * range_um]
    for k in range(n_decoy):
        nl, nr = sizes[k % len(sizes)]
        add(
            rng.choice(far_s, min(nl, far_s.size), replace=False),
            rng.choice(far_r, min(nr, far_r.size), replace=False),
            "decoy",
            k,
        )
    for k in range(n_filler):
        cols.append(rng.poisson(2.0, n_cells))
        names.append(f"FILL{k}")
    X = sp.csr_matrix(np.column_stack(cols).astype(np.float32))
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(
                np.where(is_sender, "sender", "receiver"), categories=["sender", "receiver"]
            ),
            "dist_to_interface_um": dist,
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=names))
    adata.obsm["spatial"] = xy
    adata.uns["lr_truth"] = pd.DataFrame(truth, columns=["ligand", "receptor", "kind"])
    adata.uns["simulation"] = {
        "range_um": float(range_um),
        "width_um": float(width_um),
        "seed": int(seed),
    }
    return adata
