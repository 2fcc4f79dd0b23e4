"""``communication``: spatial ligand–receptor signalling with FDR control."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from napari_scai._scale import microns_per_pixel
from napari_scai.tl._api import uns_value as _plain

__all__ = ["CommunicationReport", "communication", "communication_edges"]

#: Default kernel bandwidth: one spot spacing on Visium, two to three cell diameters otherwise.
DEFAULT_BANDWIDTH_VISIUM_UM = 100.0
DEFAULT_BANDWIDTH_CELLS_UM = 30.0

_PAIR_COLUMNS = [
    "ligand",
    "receptor",
    "interaction",
    "statistic",
    "pvalue",
    "fdr",
    "score",
    "null_mean",
    "null_sd",
    "n_local_sig",
    "ligand_frac",
    "receptor_frac",
    "n_subunits_ligand",
    "n_subunits_receptor",
    "ligand_genes",
    "receptor_genes",
]


@dataclass
class CommunicationReport:
    """Result of :func:`communication`: one row per LR pair, group matrices, coverage.

    Schema (stable; the dock and the GNN extension build on it):

    ``pairs`` : DataFrame, one row per kept LR pair, sorted by evidence (``pvalue`` ascending,
    then ``statistic`` descending), index ``0..P-1``; the same order as the columns of the
    cells x interactions matrices. Columns:

    - ``ligand``, ``receptor``: as in the LR table (complex subunits joined by ``_``);
    - ``interaction``: unique ``"LIGAND^RECEPTOR"`` name (column name in the cell matrices);
    - ``statistic``: z of the global statistic against the within-tile permutation null;
    - ``pvalue``: permutation p-value ``(1 + #{S_perm >= S}) / (n_perms + 1)``;
    - ``fdr``: Benjamini–Hochberg over pairs;
    - ``score``: global statistic ``S = sum_ij w_ij l_i r_j`` over the kernel's total weight
      (mean signal per unit kernel weight); ``null_mean``, ``null_sd``: its null on that scale;
    - ``n_local_sig``: cells/spots whose local FDR (BH over cells x pairs) is <= 0.05;
    - coverage fields: ``ligand_frac``, ``receptor_frac`` (fraction of cells > 0),
      ``n_subunits_ligand``, ``n_subunits_receptor``, ``ligand_genes``, ``receptor_genes``
      (matched ``var_names``, ``;``-joined); ``pathway``/``kind`` when the LR table has them;
    - optional extra columns added by extensions (e.g. a GNN strength), never required.

    ``groups`` : DataFrame (long form), one row per (interaction, sender group, receiver
    group): ``interaction``, ``ligand``, ``receptor``, ``sender``, ``receiver``, ``score``
    (``sum_{i in sender, j in receiver} w_ij l_i r_j`` / total kernel weight), ``zscore``,
    ``pvalue`` (normal tail with the exact within-tile permutation mean and variance),
    ``fdr`` (BH over all rows). Empty (same columns) without ``groupby``.
    :meth:`group_matrix` pivots it to sender x receiver.

    ``coverage`` : DataFrame, one row per pair of the input LR table: ``ligand``,
    ``receptor``, ``kept`` (bool), ``reason`` (``kept`` / ``missing: GENES`` / ``duplicate`` /
    ``expressed in < min_frac of cells: ...``).

    ``params`` : dict of plain values: ``table``, ``result_table``, ``groupby``,
    ``group_names``, ``bandwidth_um``, ``cutoff_um``, ``tile_um``, ``um_per_unit``,
    ``include_self``, ``n_perms``, ``seed``, ``device``, ``resource``, ``species``,
    ``n_cells``, ``n_edges``, ``mean_degree``, ``n_tiles``, ``seconds``, and the
    ``coverage_summary`` counts.

    Where the per-cell results are (``key`` = ``key_added``):

    - SpatialData: table ``key`` (cells x interactions, annotating the same region):
      ``X`` = receiver activity ``r_j (W l)_j``; layers ``sender`` (``l_i (W r)_i``),
      ``local_pvalue``, ``local_fdr``, ``ligand``, ``receptor`` (expression used);
      ``var`` = ``pairs`` indexed by ``interaction``; ``obsp['kernel']`` = ``W``;
      ``uns[key]`` = this report (also in the analysed table's ``uns[key]``).
    - AnnData: ``obsm[key]`` (receiver), ``obsm[key + '_sender']``, ``obsm[key + '_fdr']``,
      ``obsm[key + '_pvalue']``, ``obsm[key + '_ligand']``, ``obsm[key + '_receptor']``
      (DataFrames with the interaction names as columns), ``obsp[key + '_kernel']``,
      ``uns[key]``.
    """

    pairs: pd.DataFrame
    groups: pd.DataFrame
    coverage: pd.DataFrame
    params: dict[str, Any] = field(default_factory=dict)

    def group_matrix(
        self, interaction: str | None = None, value: str = "score", alpha: float | None = None
    ) -> pd.DataFrame:
        """Sender x receiver matrix of ``value`` for one interaction, or summed over all.

        With ``interaction=None`` the ``score`` is summed over interactions (only those with
        group ``fdr <= alpha`` when ``alpha`` is given); other values need an interaction.
        """
        names = list(self.params.get("group_names", []))
        g = self.groups
        if interaction is not None:
            if interaction not in set(self.pairs["interaction"]):
                raise KeyError(f"interaction {interaction!r} is not in this report's pairs")
            g = g[g["interaction"] == interaction]
        elif value != "score":
            raise ValueError("value other than 'score' needs an interaction")
        if alpha is not None:
            g = g[g["fdr"] <= alpha]
        m = g.pivot_table(index="sender", columns="receiver", values=value, aggfunc="sum")
        return m.reindex(index=names, columns=names).fillna(0.0 if value == "score" else np.nan)

    def top_pairs(self, sender: str, receiver: str, n: int = 10) -> pd.DataFrame:
        """The ``n`` interactions with the strongest evidence from ``sender`` to ``receiver``."""
        g = self.groups
        g = g[(g["sender"] == str(sender)) & (g["receiver"] == str(receiver))]
        return g.sort_values(["pvalue", "zscore"], ascending=[True, False]).head(n)

    def significant(self, alpha: float = 0.05) -> pd.DataFrame:
        """Pairs with ``fdr <= alpha``."""
        return self.pairs[self.pairs["fdr"] <= alpha]

    def to_uns(self) -> dict[str, Any]:
        """Plain, h5ad/zarr-writable form (``uns[key_added]``)."""
        return {
            "pairs": _plain_frame(self.pairs),
            "groups": _plain_frame(self.groups),
            "coverage": _plain_frame(self.coverage),
            "params": _plain(self.params),
        }

    @classmethod
    def from_uns(cls, d: dict[str, Any]) -> CommunicationReport:
        """Rebuild from :meth:`to_uns` output (e.g. after reading an h5ad or zarr)."""
        params = dict(d.get("params", {}))
        for k in ("group_names",):
            if k in params:
                params[k] = [str(x) for x in np.asarray(params[k]).ravel()]
        return cls(
            pairs=pd.DataFrame(d["pairs"]).reset_index(drop=True),
            groups=pd.DataFrame(d["groups"]).reset_index(drop=True),
            coverage=pd.DataFrame(d["coverage"]).reset_index(drop=True),
            params=params,
        )

    def __repr__(self) -> str:
        p = self.params
        sig = int((self.pairs["fdr"] <= 0.05).sum()) if len(self.pairs) else 0
        head = self.pairs.head(5)
        top = ", ".join(
            f"{r.interaction} (z={r.statistic:.1f}, fdr={r.fdr:.2g})" for r in head.itertuples()
        )
        return (
            f"CommunicationReport: {len(self.pairs)} LR pairs on {p.get('n_cells', '?')} cells, "
            f"{sig} at FDR 0.05; bandwidth {p.get('bandwidth_um', '?')} µm, "
            f"{p.get('n_perms', '?')} permutations; top: {top}"
        )


def _plain_frame(df: pd.DataFrame) -> pd.DataFrame:
    out = df.reset_index(drop=True).copy()
    out.index = out.index.astype(str)
    for c in out.columns:
        if out[c].dtype == object or isinstance(out[c].dtype, pd.CategoricalDtype):
            out[c] = out[c].astype(str)
    return out


# ---------------------------------------------------------------- inputs


def _resolve(data: Any, table: str):
    """(adata, is_sdata) for a SpatialData + table name or an AnnData."""
    import anndata as ad

    if isinstance(data, ad.AnnData):
        return data, False
    tables = getattr(data, "tables", None)
    if tables is None:
        raise TypeError(f"expected a SpatialData or AnnData, got {type(data).__name__}")
    if table not in tables:
        raise KeyError(
            f"table {table!r} not found; this SpatialData has tables {list(tables.keys())}. "
            "Fix: pass table=<name>"
        )
    return tables[table], True


def _visium_spot_px(adata: Any) -> float | None:
    sp_uns = adata.uns.get("spatial")
    if not isinstance(sp_uns, dict):
        return None
    for lib in sp_uns.values():
        try:
            return float(lib["scalefactors"]["spot_diameter_fullres"])
        except (KeyError, TypeError):
            continue
    return None


def _coordinates(data: Any, adata: Any, is_sdata: bool, spatial_key: str, where: str) -> np.ndarray:
    if spatial_key in adata.obsm:
        xy = np.asarray(adata.obsm[spatial_key], dtype=np.float64)
    elif is_sdata:
        xy = _shape_centroids(data, adata)
        if xy is None:
            raise KeyError(
                f"{where} has no coordinates: no obsm[{spatial_key!r}] (obsm keys: "
                f"{list(adata.obsm.keys())}) and its region is not a shapes/points element. "
                "Fix: put x, y (µm or pixels with um_per_unit=) in obsm['spatial'] or pass "
                "spatial_key="
            )
    else:
        raise KeyError(
            f"{where} has no coordinates in obsm[{spatial_key!r}] (obsm keys: "
            f"{list(adata.obsm.keys())}). Fix: put the x, y coordinates there (µm, or pixels "
            "with um_per_unit=), or pass spatial_key=<obsm key>"
        )
    if xy.ndim != 2 or xy.shape[0] != adata.n_obs or xy.shape[1] < 2:
        raise ValueError(f"{where}.obsm[{spatial_key!r}] must be (n_obs, 2), got {xy.shape}")
    if not np.all(np.isfinite(xy[:, :2])):
        raise ValueError(
            f"{where}.obsm[{spatial_key!r}] has NaN/inf coordinates. Fix: drop those cells first"
        )
    return xy[:, :2]


def _shape_centroids(sdata: Any, adata: Any) -> np.ndarray | None:
    attrs = adata.uns.get("spatialdata_attrs", {})
    region, ikey = attrs.get("region"), attrs.get("instance_key")
    if isinstance(region, (list, tuple)):
        if len(region) != 1:
            return None
        region = region[0]
    if region is None or region not in getattr(sdata, "shapes", {}):
        return None
    gdf = sdata.shapes[region]
    cent = gdf.geometry.centroid
    pos = pd.Series(np.arange(len(gdf)), index=gdf.index)
    idx = pos.reindex(adata.obs[ikey].to_numpy()).to_numpy() if ikey in adata.obs else None
    if idx is None or np.any(pd.isna(idx)):
        return None
    idx = idx.astype(np.int64)
    return np.column_stack([cent.x.to_numpy()[idx], cent.y.to_numpy()[idx]])


def _expression(adata: Any, layer: str | None, where: str):
    X = adata.layers[layer] if layer else adata.X
    if X is None:
        raise ValueError(f"{where} has no expression matrix (X is None). Fix: pass layer=")
    X = sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else np.asarray(X, np.float32)
    vals = X.data if sp.issparse(X) else X.ravel()
    sample = vals[:500_000]
    src = f"layers[{layer!r}]" if layer else "X"
    if sample.size and (not np.all(np.isfinite(sample)) or sample.min() < 0):
        raise ValueError(
            f"{where}.{src} has negative or non-finite values; ligand–receptor scores need "
            "non-negative expression (counts or log-normalised). Fix: pass layer= with counts"
        )
    counts = bool(sample.size) and bool(np.allclose(sample, np.round(sample)))
    if counts:  # library-size normalise to 1e4 and log1p, sparse
        tot = np.asarray(X.sum(axis=1)).ravel()
        scale = np.where(tot > 0, 1e4 / np.maximum(tot, 1e-12), 0.0).astype(np.float32)
        if sp.issparse(X):
            X = sp.csr_matrix(sp.diags(scale) @ X)
            X.data = np.log1p(X.data)
        else:
            X = np.log1p(X * scale[:, None])
    return X, counts


# ---------------------------------------------------------------- main


def communication(
    data: Any,
    *,
    table: str = "rna",
    groupby: str | None = None,
    pairs: Any = None,
    bandwidth_um: float | None = None,
    n_perms: int = 1000,
    device: str = "auto",
    seed: int = 0,
    key_added: str = "scai_communication",
    copy: bool = False,
    species: str = "auto",
    layer: str | None = None,
    min_frac: float = 0.01,
    spatial_key: str = "spatial",
    um_per_unit: float | None = None,
    cutoff_um: float | None = None,
    tile_um: float | None = None,
    include_self: bool | str = "auto",
    local: bool = True,
    gnn: bool = False,  # ccc-gnn: model-based pair strengths (see the ccc-gnn block below)
    progress: Any = None,
    cancel: Any = None,
):
    """Spatial cell–cell communication: which LR pairs signal, where, and between which groups.

    For every LR pair present (complexes: min over subunits), a sparse Gaussian kernel in µm
    links each cell to its neighbours within ``cutoff_um``; the pair's signal from ``i`` to
    ``j`` is ``w_ij l_i r_j``. The global statistic sums it; its p-value comes from
    ``n_perms`` permutations of the ligand within spatial tiles (a spatially aware null:
    regional abundance kept, arrangement at the kernel's scale broken); BH across pairs.
    Per cell: receiver and sender activity and a local permutation p-value, BH across
    cells x pairs. With ``groupby``: sender-group x receiver-group matrices with p-values.
    Method and null: :mod:`napari_scai.models.communication`.

    Parameters
    ----------
    data
        A SpatialData (``data.tables[table]``) or an AnnData with ``obsm['spatial']``.
    table
        Table name inside a SpatialData.
    groupby
        ``obs`` column of groups (cell types, domains) for the group x group matrices.
    pairs
        None (bundled ``consensus`` table of the detected species), a bundled resource name
        (``"consensus"``, ``"cellchatdb"``, ``"cellphonedb"``) or a DataFrame with
        ``ligand`` and ``receptor`` columns (complex subunits joined by ``_``).
    bandwidth_um
        Kernel bandwidth in µm; default 100 µm for Visium (one spot spacing), 30 µm for
        single cells (a few cell diameters).
    n_perms
        Permutations for the p-values.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    seed
        Seed of the permutations (same seed, same device -> same results).
    key_added
        Name of the result table (SpatialData) or prefix of the ``obsm`` keys (AnnData), and
        the ``uns`` key of the report.
    copy
        Work on a copy and return it (the report is then ``CommunicationReport.from_uns(
        <table>.uns[key_added])``); default modifies ``data`` in place and returns the report.
    species
        ``"auto"``, ``"human"`` or ``"mouse"`` (for the default table and Ensembl IDs).
    layer
        Layer with the expression (default ``X``). Integer counts are library-size normalised
        (1e4) and log1p-transformed; other non-negative values are used as they are.
    min_frac
        Keep pairs whose ligand and receptor are > 0 in at least this fraction of cells.
    spatial_key
        ``obsm`` key of the coordinates (SpatialData without it: centroids of the annotated
        shapes).
    um_per_unit
        µm per coordinate unit; default for Visium (pixels): the slide's 100 µm spot lattice
        fitted to ``array_row``/``array_col`` (:func:`napari_scai._scale.microns_per_pixel`,
        the same scale as the viewer's µm scale bar; 0.726 µm/px on DLPFC 151673), else 1
        (coordinates in µm). ``spot_diameter_fullres`` is not used as a ruler: Space Ranger
        pads it (96.4 px is 70 µm on 151673, not 55).
    cutoff_um
        Kernel support (default 2 bandwidths).
    tile_um
        Side of the tiles of the permutation null (default 20 bandwidths, i.e. 10 kernel
        supports; the grid is shifted at random for every permutation).
    include_self
        Add the cell itself to its neighbourhood (``"auto"``: yes for Visium spots, which hold
        several cells; no for single cells).
    local
        Compute local (per-cell) p-values and FDR (off: about 5x faster; the per-cell
        activities are stored either way).
    gnn
        Also fit the communication GNN (:mod:`napari_scai.models.communication_gnn`): how
        neighbours' ligand, through each receiver's receptor, explains the receivers'
        expression; adds ``pairs['gnn_strength']`` (learned per-pair strength) and
        ``params['gnn_spearman']`` (its rank correlation with ``statistic``), ``gnn_r2``.
    progress, cancel
        ``progress(step, total, message)`` callback and a cancel token (``is_set()``).

    Returns
    -------
    CommunicationReport or the modified copy
        The report (see :class:`CommunicationReport` for the schema and where the per-cell
        results are written), or, with ``copy=True``, the modified copy of ``data``.

    Raises
    ------
    KeyError
        Unknown table, no coordinates, ``groupby`` not in ``obs``, a pair table without
        ``ligand``/``receptor``.
    ValueError
        No LR pair has its genes in the table, or bad parameter values. Nothing is written
        when an error is raised.
    """
    import torch

    from napari_scai.lr import complex_expression, match_pairs
    from napari_scai.models._runtime import Runtime, cpu_threads
    from napari_scai.models.communication import (
        TILE_BANDWIDTHS,
        communication_scores,
        group_matrices,
        kernel_graph,
        null_design,
    )

    t0 = time.perf_counter()
    if copy:
        import anndata as ad

        if isinstance(data, ad.AnnData):
            data = data.copy()
        else:
            from spatialdata import deepcopy

            data = deepcopy(data)
    adata, is_sdata = _resolve(data, table)
    where = f"table {table!r}" if is_sdata else "the AnnData"
    if is_sdata and key_added == table:
        raise ValueError(f"key_added={key_added!r} is the analysed table. Fix: choose another name")
    if int(n_perms) < 0:
        raise ValueError("n_perms must be >= 0")
    if groupby is not None and groupby not in adata.obs.columns:
        raise KeyError(
            f"groupby={groupby!r} is not a column of {where}.obs (columns: "
            f"{list(adata.obs.columns)}). Fix: pass one of those, or groupby=None"
        )
    if layer and layer not in adata.layers:
        raise KeyError(
            f"layer {layer!r} not in {where}; layers: {list(adata.layers.keys())}. "
            "Fix: pass one of those, or layer=None for X"
        )
    xy = _coordinates(data, adata, is_sdata, spatial_key, where)
    visium = _visium_spot_px(adata) is not None
    if um_per_unit is None:
        # the Visium lattice (100 µm pitch), as the viewer's scale bar and pl use it
        um_per_unit = (microns_per_pixel(adata) or 1.0) if visium else 1.0
    if not float(um_per_unit) > 0:
        raise ValueError(f"um_per_unit must be > 0, got {um_per_unit!r}")
    if bandwidth_um is None:
        bandwidth_um = DEFAULT_BANDWIDTH_VISIUM_UM if visium else DEFAULT_BANDWIDTH_CELLS_UM
    bandwidth_um = float(bandwidth_um)
    if not bandwidth_um > 0:
        raise ValueError(f"bandwidth_um must be > 0 (µm), got {bandwidth_um!r}")
    if include_self == "auto":
        include_self = visium
    X, was_counts = _expression(adata, layer, where)
    match = match_pairs(adata, pairs, species=species, X=X, min_frac=min_frac, where=where)
    group_codes, group_names = None, []
    if groupby is not None:
        col = adata.obs[groupby]
        cat = col if isinstance(col.dtype, pd.CategoricalDtype) else col.astype("category")
        cat = cat.cat.remove_unused_categories()
        group_names = [str(c) for c in cat.cat.categories]
        group_codes = cat.cat.codes.to_numpy().astype(np.int64)
        if not group_names:
            raise ValueError(f"{where}.obs[{groupby!r}] has no non-missing values")

    rt = Runtime(device=device, seed=seed, progress=progress, cancel=cancel)
    rt.report(0, 100, "kernel graph")
    coords_um = xy * float(um_per_unit)
    W = kernel_graph(coords_um, bandwidth_um, cutoff_um=cutoff_um, include_self=bool(include_self))
    tile = float(tile_um) if tile_um is not None else TILE_BANDWIDTHS * bandwidth_um
    design = null_design(coords_um, tile)
    L, R = complex_expression(X, match)
    rt.check()
    with cpu_threads(adata.n_obs, rt.device), torch.no_grad():
        res = communication_scores(
            L,
            R,
            W,
            design,
            n_perms=int(n_perms),
            seed=int(seed),
            device=rt.device,
            local=local,
            runtime=rt,
        )
    rt.check()
    P = L.shape[1]
    pairs_df = match.pairs.copy()
    pairs_df["statistic"] = res.statistic
    pairs_df["pvalue"] = res.pvalue
    pairs_df["fdr"] = res.fdr
    pairs_df["score"] = res.score
    pairs_df["null_mean"] = res.null_mean
    pairs_df["null_sd"] = res.null_sd
    pairs_df["n_local_sig"] = (
        (res.local_fdr <= 0.05).sum(axis=0).astype(np.int64) if res.local_fdr is not None else 0
    )
    # --- ccc-gnn block (owned by the GNN helper): learned per-pair strengths, gnn=True ---
    gnn_info: dict[str, Any] = {}
    if gnn:
        from scipy.stats import spearmanr

        from napari_scai.models.communication_gnn import gnn_pair_strengths

        rt.report(90, 100, "GNN: learned pair strengths")
        pair_genes = {
            g
            for col in ("ligand_genes", "receptor_genes")
            for joined in match.pairs[col].astype(str)
            for g in joined.split(";")
        }
        g_res = gnn_pair_strengths(
            adata.layers[layer] if layer else adata.X,  # input as given: counts normalised
            list(adata.var_names),  # on the genes outside the pairs (no compositional leak)
            L,
            R,
            W,
            sorted(pair_genes),
            groups=group_codes,
            pair_names=match.pairs["interaction"].tolist(),
            device=rt.device,
            seed=int(seed),
            cancel=cancel,
        )
        pairs_df["gnn_strength"] = g_res.strength
        rho = spearmanr(g_res.strength, res.statistic, nan_policy="omit").statistic if P > 1 else 0
        gnn_info = {
            "gnn_spearman": float(np.nan_to_num(rho)),
            "gnn_r2": float(g_res.r2),
            "gnn_n_receivers": int(len(g_res.receivers)),
        }
    # --- end ccc-gnn block ---
    extra = [c for c in pairs_df.columns if c not in _PAIR_COLUMNS]
    pairs_df = pairs_df[_PAIR_COLUMNS + extra]
    order_pairs = np.lexsort(
        (-np.nan_to_num(res.statistic, nan=-np.inf), np.nan_to_num(res.pvalue, nan=2.0))
    )
    pairs_df = pairs_df.iloc[order_pairs].reset_index(drop=True)

    groups_df = pd.DataFrame(
        columns=[
            "interaction",
            "ligand",
            "receptor",
            "sender",
            "receiver",
            "score",
            "zscore",
            "pvalue",
            "fdr",
        ]
    )
    if group_codes is not None:
        rt.report(95, 100, "group matrices")
        gm = group_matrices(L, R, W, design, group_codes, len(group_names))
        G = len(group_names)
        pi, si, ri = np.meshgrid(np.arange(P), np.arange(G), np.arange(G), indexing="ij")
        pi, si, ri = pi.ravel(), si.ravel(), ri.ravel()
        inter = match.pairs["interaction"].to_numpy()
        groups_df = pd.DataFrame(
            {
                "interaction": inter[pi],
                "ligand": match.pairs["ligand"].to_numpy()[pi],
                "receptor": match.pairs["receptor"].to_numpy()[pi],
                "sender": np.asarray(group_names, dtype=object)[si],
                "receiver": np.asarray(group_names, dtype=object)[ri],
                "score": gm["score"].ravel(),
                "zscore": gm["zscore"].ravel(),
                "pvalue": gm["pvalue"].ravel(),
                "fdr": gm["fdr"].ravel(),
            }
        )
        rank = {n: k for k, n in enumerate(pairs_df["interaction"])}
        groups_df = (
            groups_df.assign(_r=groups_df["interaction"].map(rank))
            .sort_values(["_r", "sender", "receiver"], kind="stable")
            .drop(columns="_r")
            .reset_index(drop=True)
        )
    deg = W.getnnz(axis=1) if hasattr(W, "getnnz") else np.diff(W.indptr)
    params = {
        "table": table if is_sdata else "none",
        "result_table": key_added if is_sdata else "none",
        "groupby": groupby,
        "group_names": group_names,
        "bandwidth_um": bandwidth_um,
        "cutoff_um": float(cutoff_um) if cutoff_um is not None else 2.0 * bandwidth_um,
        "tile_um": tile,
        "um_per_unit": float(um_per_unit),
        "include_self": bool(include_self),
        "n_perms": int(n_perms),
        "seed": int(seed),
        "device": str(rt.device),
        "resource": match.resource,
        "species": match.species,
        "normalised_counts": bool(was_counts),
        "n_cells": int(adata.n_obs),
        "n_edges": int(W.nnz),
        "mean_degree": float(np.mean(deg)) if len(deg) else 0.0,
        "n_tiles": design.n_tiles,
        "seconds": float(time.perf_counter() - t0),
        "coverage_summary": match.summary(),
        **gnn_info,  # ccc-gnn
    }
    report = CommunicationReport(
        pairs=pairs_df, groups=groups_df, coverage=match.coverage, params=params
    )
    rt.check()  # last chance to cancel: nothing is written before this line
    names = pairs_df["interaction"].tolist()
    layers = {}
    if res.receiver is not None:
        perm = order_pairs
        layers = {
            "receiver": res.receiver[:, perm],
            "sender": res.sender[:, perm],
            "ligand": L[:, perm],
            "receptor": R[:, perm],
        }
        if res.local_fdr is not None:
            layers["local_pvalue"] = res.local_pvalue[:, perm]
            layers["local_fdr"] = res.local_fdr[:, perm]
    _write(data, adata, is_sdata, key_added, report, layers, names, W, groupby)
    rt.report(100, 100, "done")
    return data if copy else report


def _write(data, adata, is_sdata, key, report, layers, names, W, groupby) -> None:
    uns = report.to_uns()
    adata.uns[key] = uns
    if not is_sdata:
        for k, suffix in (
            ("receiver", ""),
            ("sender", "_sender"),
            ("local_fdr", "_fdr"),
            ("local_pvalue", "_pvalue"),
            ("ligand", "_ligand"),
            ("receptor", "_receptor"),
        ):
            if k in layers:
                adata.obsm[key + suffix] = pd.DataFrame(
                    layers[k], index=adata.obs_names, columns=names
                )
        adata.obsp[key + "_kernel"] = sp.csr_matrix(W)
        return
    import anndata as ad
    from spatialdata.models import TableModel

    attrs = dict(adata.uns.get("spatialdata_attrs", {}))
    obs = pd.DataFrame(index=adata.obs_names.copy())
    for c in (attrs.get("region_key"), attrs.get("instance_key"), groupby):
        if c and c in adata.obs.columns:
            obs[c] = adata.obs[c].to_numpy()
            if isinstance(adata.obs[c].dtype, pd.CategoricalDtype):
                obs[c] = pd.Categorical(obs[c])
    var = _plain_frame(report.pairs)
    var.index = pd.Index(names)
    X = layers.get("receiver", np.zeros((adata.n_obs, len(names)), dtype=np.float32))
    res = ad.AnnData(
        X=np.asarray(X, dtype=np.float32),
        obs=obs,
        var=var,
        layers={k: np.asarray(v, dtype=np.float32) for k, v in layers.items() if k != "receiver"},
    )
    res.obsp["kernel"] = sp.csr_matrix(W)
    if "spatial" in adata.obsm:
        res.obsm["spatial"] = np.asarray(adata.obsm["spatial"])
    res.uns[key] = uns
    if attrs.get("region") is not None:
        res = TableModel.parse(
            res,
            region=attrs["region"],
            region_key=attrs.get("region_key"),
            instance_key=attrs.get("instance_key"),
        )
    else:
        res = TableModel.parse(res)
    data.tables[key] = res


def communication_edges(
    data: Any,
    *,
    interaction: str,
    table: str = "rna",
    key_added: str = "scai_communication",
    top: int | None = 500,
    spatial_key: str = "spatial",
    self_edges: bool = False,
) -> pd.DataFrame:
    """The strongest sender -> receiver edges of one interaction (for arrows on the tissue).

    Returns a DataFrame with ``sender``, ``receiver`` (row positions in the table),
    ``sender_x``, ``sender_y``, ``receiver_x``, ``receiver_y`` (in the table's
    ``obsm[spatial_key]`` units) and ``signal`` = ``w_ij l_i r_j``, strongest first.
    Within-spot signal (the Visium self-loop) is left out unless ``self_edges=True``.
    """
    from napari_scai.models.communication import edge_signal

    adata, is_sdata = _resolve(data, table)
    if is_sdata:
        if key_added not in data.tables:
            raise KeyError(f"no result table {key_added!r}. Fix: run tl.communication first")
        res = data.tables[key_added]
        names = list(res.var_names)
        W = res.obsp["kernel"]
        lig, rec = res.layers.get("ligand"), res.layers.get("receptor")
    else:
        if key_added + "_ligand" not in adata.obsm:
            raise KeyError(
                f"no obsm[{key_added + '_ligand'!r}]. Fix: run tl.communication with local=True"
            )
        names = list(adata.obsm[key_added + "_ligand"].columns)
        W = adata.obsp[key_added + "_kernel"]
        lig = adata.obsm[key_added + "_ligand"].to_numpy()
        rec = adata.obsm[key_added + "_receptor"].to_numpy()
    if lig is None or rec is None:
        raise KeyError("the result has no ligand/receptor layers. Fix: run with local=True")
    if interaction not in names:
        raise KeyError(f"interaction {interaction!r} not in the result ({len(names)} pairs)")
    k = names.index(interaction)
    W = sp.csr_matrix(W)
    if not self_edges:
        W = W - sp.diags(W.diagonal())
        W.eliminate_zeros()
    i, j, v = edge_signal(W, np.asarray(lig)[:, k], np.asarray(rec)[:, k], top=top)
    xy = np.asarray(adata.obsm[spatial_key])[:, :2] if spatial_key in adata.obsm else None
    out = pd.DataFrame({"sender": i, "receiver": j, "signal": v})
    if xy is not None:
        out["sender_x"], out["sender_y"] = xy[i, 0], xy[i, 1]
        out["receiver_x"], out["receiver_y"] = xy[j, 0], xy[j, 1]
    return out
