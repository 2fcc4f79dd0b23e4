"""``transfer_labels``: carry an annotated section's labels onto other sections.

Reference and query sections are embedded together by the spatial-domain GNN (genes matched
by name; one block-diagonal graph; per-section scaling and a section covariate in the decoder
remove the batch), the reference's labelled spots train the classification head
(semi-supervised, see :func:`napari_scai.tl.spatial_domains` with ``annotation_key``), and the
query spots get the most probable reference class with a calibrated probability. On each query
the head's probabilities are then refined by the query's own fixed-means mixture, seeded by the
head's most confident query spots (``query_mixture``; DESIGN-NOTES, transfer round four).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["GeneOverlapError", "gene_overlap", "transfer_labels"]

#: Fewest shared genes a transfer accepts. The model input is PCA (``n_comps=50`` by default)
#: of the shared genes' HVGs; with fewer than 100 genes there is hardly more than one gene per
#: component left, and a mismatch of gene naming (Ensembl IDs against symbols) shows as a
#: handful of chance matches, far below this.
MIN_SHARED_GENES = 100
#: Fewest shared genes as a fraction of the smaller panel. The two DLPFC files in the shared
#: data each keep their own top 5,000 genes and share 2,340 (47%); a naming mismatch shares
#: ~0%. 10% separates the two with a wide margin; below 50% a warning says how few are shared.
MIN_SHARED_FRACTION = 0.10
WARN_SHARED_FRACTION = 0.50
#: Query-side refinement (transfer round four, DESIGN-NOTES): weight of the query's own
#: fixed-means mixture, seeded by the head's most confident query spots per class (at or above
#: the class's :data:`QUERY_SEED_QUANTILE` of confidence), in a product with the head's
#: probabilities. Chosen on development training seed 100 (both directions), see
#: :func:`napari_scai.models._guided.query_mixture_refine`.
QUERY_MIXTURE_WEIGHT = 0.1
QUERY_SEED_QUANTILE = 0.5
#: The refinement fits a tied D x D covariance on the query's spots; below this many spots
#: per embedding dimension it is skipped (synthetic 250-300-cell test pairs, 8-9 spots per
#: dimension, lost 0.01-0.16 ARI with it; a 500-cell pair gained 0.01; DLPFC has ~110).
QUERY_MIXTURE_MIN_SPOTS_PER_DIM = 30
#: Cross-section anchors of the optional alignment term (``align``; transfer round five,
#: DESIGN-NOTES): mutual nearest neighbours (cosine, k) between the reference and each query on
#: the model input smoothed this many rounds over the spatial graph.
ALIGN_K = 20
ALIGN_SMOOTH_ROUNDS = 3


class GeneOverlapError(ValueError):
    """Reference and query share too few genes (by name) for a joint embedding."""


def gene_overlap(reference: Any, queries: Sequence[Any]) -> dict[str, Any]:
    """Genes shared by name between the reference table and every query table.

    Returns ``{"genes": Index, "n_shared", "n_reference", "n_query": [...],
    "fraction_of_smaller"}``.
    """
    genes = reference.var_names
    for q in queries:
        genes = genes.intersection(q.var_names, sort=False)
    smaller = min([reference.n_vars] + [q.n_vars for q in queries])
    return {
        "genes": genes,
        "n_shared": len(genes),
        "n_reference": int(reference.n_vars),
        "n_query": [int(q.n_vars) for q in queries],
        "fraction_of_smaller": len(genes) / max(smaller, 1),
    }


def _anchor_pairs(
    feats: np.ndarray,
    sample: np.ndarray,
    A: Any,
    *,
    k: int = ALIGN_K,
    smooth_rounds: int = ALIGN_SMOOTH_ROUNDS,
) -> np.ndarray:
    """Reference-query mutual nearest neighbours on the spatially smoothed model input."""
    from napari_scai.graph import mutual_nearest_pairs, normalize_adjacency

    X = np.asarray(feats, dtype=np.float32)
    S = normalize_adjacency(A, self_loops=True, kind="row")
    for _ in range(int(smooth_rounds)):
        X = np.asarray(S @ X, dtype=np.float32)
    return mutual_nearest_pairs(X, sample, k=k, reference=0)


def transfer_labels(
    reference: Any,
    query: Any,
    labels_key: str,
    *,
    table: str = "rna",
    device: str = "auto",
    seed: int = 0,
    key_added: str = "scai_transfer",
    copy: bool = False,
    layer: str | None = None,
    graph: Any = "auto",
    graph_kwargs: dict[str, Any] | None = None,
    n_top_genes: int = 3000,
    n_comps: int = 50,
    epochs: int = 300,
    hidden_dim: int = 128,
    latent_dim: int = 32,
    lr: float = 1e-3,
    n_models: int = 3,
    smooth_rounds: int = 1,
    guided_smooth_rounds: int = 3,
    query_mixture: float = QUERY_MIXTURE_WEIGHT,
    query_seed_quantile: float = QUERY_SEED_QUANTILE,
    query_mean_field: float = 0.0,
    align: float = 0.0,
    min_shared_genes: int = MIN_SHARED_GENES,
    progress: Any = None,
    cancel: Any = None,
    **model_kwargs: Any,
) -> Any:
    """Label the query section(s) with the classes of an annotated reference section.

    Parameters
    ----------
    reference
        SpatialData (``tables[table]``) or AnnData with raw counts and ``obs[labels_key]``
        (a class per spot; missing values are allowed and ignored).
    query
        SpatialData or AnnData, or a list of them.
    labels_key
        The reference's label column.
    table
        Table name inside SpatialData objects.
    device, seed
        Where the model runs; same seed, same device -> same labels.
    key_added
        The query receives ``obs[key_added]`` (categorical, the reference classes),
        ``obs[f"{key_added}_confidence"]`` (calibrated probability of that class),
        ``obsm[f"X_{key_added}"]`` (the shared embedding), ``uns[f"{key_added}_colors"]``
        and ``uns[f"{key_added}_params"]`` (with the gene overlap).
    copy
        Return a modified copy of ``query`` instead of writing into it.
    layer, graph, graph_kwargs, n_top_genes, n_comps
        As in :func:`napari_scai.tl.spatial_domains`.
    epochs, hidden_dim, latent_dim, lr, n_models, smooth_rounds, guided_smooth_rounds
        As in :func:`napari_scai.tl.spatial_domains`.
    query_mixture, query_seed_quantile
        Refine each query's probabilities with the query's own tied-covariance mixture on
        the shared embedding, its means fixed at the head's most confident query spots per
        class (confidence at or above the class's ``query_seed_quantile``), as
        ``softmax(log P_head + query_mixture * log P_mixture)``
        (:func:`napari_scai.models._guided.query_mixture_refine`); ``query_mixture=0`` gives
        the head's probabilities alone. Skipped for a query with fewer than
        :data:`QUERY_MIXTURE_MIN_SPOTS_PER_DIM` spots per embedding dimension;
        ``uns[...]["query_mixture_applied_to"]`` lists the queries (0-based) it refined.
    query_mean_field
        Strength (nats) of an optional mean-field smoothing of the head's probabilities over
        each query's spatial graph (:func:`napari_scai.models._guided.mean_field_smooth`);
        0 (default) leaves them as the head gives them. On the development seed (100), 1.0
        left ARI unchanged (0.739 -> 0.738, 0.725 -> 0.725) and brought the mean confidence
        closer to the accuracy (0.79 -> 0.85 against 0.86 / 0.85); stronger smoothing lowered
        ARI (DESIGN-NOTES, transfer round four), so it is off by default.
    align
        Weight of a cross-section alignment term in training (off at 0): mutual nearest
        neighbours between the reference and each query (:data:`ALIGN_K`, on the model input
        smoothed :data:`ALIGN_SMOOTH_ROUNDS` rounds, :func:`napari_scai.graph.mutual_nearest_pairs`)
        are pulled together in the embedding (``DomainConfig.w_align``). On the DLPFC
        development seeds ``align=1`` raised the head alone from ARI 0.735 to 0.752 (mean of
        four runs) but not the default output with the query refinement (0.757 against 0.756),
        so it is off by default; it is meant for sections with a strong section effect
        (DESIGN-NOTES, transfer round five). Full-batch runs only (ignored on the tiled path).
    min_shared_genes
        Refuse (:class:`GeneOverlapError`) below this many shared genes (see
        :data:`MIN_SHARED_GENES`); fewer than :data:`MIN_SHARED_FRACTION` of the smaller panel
        is refused too, and below :data:`WARN_SHARED_FRACTION` a warning reports the overlap.
    progress, cancel
        Progress callback ``(step, total, message)`` and cancel token (``is_set()``).
    **model_kwargs
        Extra :class:`napari_scai.models.domains.DomainConfig` fields.

    Returns
    -------
    None, or (``copy=True``) the modified copy of ``query`` (a list when ``query`` is one).
    """
    import anndata as ad

    from napari_scai._colors import palette
    from napari_scai.graph import graph_stats
    from napari_scai.models._runtime import Runtime
    from napari_scai.models.domains import DomainConfig, preserve_global_random_state
    from napari_scai.tl._domains import (
        _copy_data,
        _guided,
        _label_codes,
        _plain,
        _table,
        _validate_inputs,
        _write,
    )

    t0 = time.perf_counter()
    many = isinstance(query, Sequence) and not isinstance(query, (str, ad.AnnData))
    if copy:
        query = _copy_data(query)
    queries_in = list(query) if many else [query]
    if not queries_in:
        raise ValueError("no query section given")
    ref = _table(reference, table)
    queries = [_table(q, table) for q in queries_in]
    _validate_inputs(
        [ref], [reference], table=table, layer=layer, graph=graph,
        graph_kwargs=graph_kwargs, joint=False,
    )  # fmt: skip
    _validate_inputs(
        queries, queries_in, table=table, layer=layer, graph=graph,
        graph_kwargs=graph_kwargs, joint=True, role="query",
    )  # fmt: skip
    if labels_key not in ref.obs.columns:
        raise KeyError(
            f"labels_key {labels_key!r} is not a column of the reference's obs (columns: "
            f"{list(ref.obs.columns)}). Fix: name the reference's label column"
        )
    ov = gene_overlap(ref, queries)
    summary = (
        f"{ov['n_shared']} genes shared by name (reference {ov['n_reference']}, query "
        f"{ov['n_query']}; {ov['fraction_of_smaller']:.0%} of the smaller panel)"
    )
    if ov["n_shared"] < min_shared_genes or ov["fraction_of_smaller"] < MIN_SHARED_FRACTION:
        raise GeneOverlapError(
            f"reference and query share too few genes: {summary}; at least "
            f"{min_shared_genes} and {MIN_SHARED_FRACTION:.0%} are needed. Fix: use the same "
            "gene naming in both (e.g. map Ensembl IDs to symbols) or a reference measured "
            "on an overlapping panel"
        )
    if ov["fraction_of_smaller"] < WARN_SHARED_FRACTION:
        warnings.warn(f"transfer_labels: only {summary}", UserWarning, stacklevel=2)
    for name, val in (
        ("query_mean_field", query_mean_field),
        ("query_mixture", query_mixture),
        ("align", align),
    ):
        if not np.isfinite(val) or val < 0:
            raise ValueError(
                f"{name} must be a finite number >= 0, got {val!r}. Fix: pass 0 (off) or a "
                "small positive weight such as the default"
            )
    if not 0.0 <= query_seed_quantile < 1.0:
        raise ValueError(
            f"query_seed_quantile must be in [0, 1), got {query_seed_quantile!r}. Fix: pass "
            f"e.g. {QUERY_SEED_QUANTILE}"
        )
    codes_ref, names, ann_colors = _label_codes([ref], labels_key, "reference")
    if len(names) < 2:
        raise ValueError(
            f"the reference's obs[{labels_key!r}] has {len(names)} class(es) with labelled "
            "spots; a transfer needs at least two. Fix: name a column with two or more classes"
        )
    n_q = sum(q.n_obs for q in queries)
    codes = np.concatenate([codes_ref, np.full(n_q, -1, dtype=np.int64)])
    n_models = max(int(n_models), 1)
    if align > 0:
        model_kwargs = dict(model_kwargs, w_align=float(align))
    cfg = DomainConfig(
        hidden_dim=hidden_dim, latent_dim=latent_dim, epochs=epochs, lr=lr, **model_kwargs
    )
    with preserve_global_random_state():
        rt = Runtime(device=device, seed=seed, progress=progress, cancel=cancel)
        P, Z, sample, info = _guided(
            [ref, *queries],
            codes,
            names,
            rt=rt,
            layer=layer,
            batch_key=None,
            graph=graph,
            graph_kwargs=graph_kwargs,
            n_top_genes=n_top_genes,
            n_comps=n_comps,
            cfg=cfg,
            n_models=n_models,
            smooth_rounds=smooth_rounds,
            seed=seed,
            latent_dim=latent_dim,
            genes=ov["genes"],
            logit_smooth_rounds=guided_smooth_rounds,
            align_pairs=_anchor_pairs if cfg.w_align > 0 else None,
        )
        A = info.pop("graph")
        if query_mixture > 0:
            from napari_scai.models._guided import query_mixture_refine

            P = P.copy()
            refined: list[int] = []
            for i in range(1, len(queries) + 1):  # each query on its own (sample 0: reference)
                rows = np.nonzero(sample == i)[0]
                if rows.size < QUERY_MIXTURE_MIN_SPOTS_PER_DIM * Z.shape[1]:
                    continue
                refined.append(i - 1)
                P[rows] = query_mixture_refine(
                    P[rows], Z[rows], quantile=query_seed_quantile, weight=query_mixture,
                    cancel=rt.cancel,
                )  # fmt: skip
        else:
            refined = []
        if query_mean_field > 0:
            from napari_scai.models._guided import mean_field_smooth

            # the joint graph is block-diagonal: no edge joins two sections, so smoothing all
            # rows at once smooths each query within itself (reference rows are not written)
            P = mean_field_smooth(P, A, float(query_mean_field))
        labels = P.argmax(1)
        conf = P[np.arange(labels.size), labels]
        colors = [
            (ann_colors or {}).get(c, d) for c, d in zip(names, palette(len(names)), strict=True)
        ]
        params = _plain(
            dict(
                mode="transfer",
                labels_key=labels_key,
                classes=list(names),
                seed=int(seed),
                device=str(rt.device),
                n_models=n_models,
                model=cfg.as_dict(),
                gene_overlap={k: v for k, v in ov.items() if k != "genes"},
                graph_stats=graph_stats(A),
                n_queries=len(queries),
                query_mixture=float(query_mixture),
                query_seed_quantile=float(query_seed_quantile),
                query_mixture_applied_to=refined,
                query_mean_field=float(query_mean_field),
                align=float(cfg.w_align),
                total_seconds=round(time.perf_counter() - t0, 3),
                **info,
            )
        )
        rt.check()  # nothing is written when cancelled
        # sample 0 is the reference: write the queries only (their sample index starts at 1)
        _write(queries, sample - 1, key_added, labels, names, conf, Z, colors, params)
        rt.report(100, 100, "done")
    if copy:
        return query
    return None
