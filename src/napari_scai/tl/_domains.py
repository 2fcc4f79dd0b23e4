"""``spatial_domains``: GNN spatial domains on one or several samples."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["spatial_domains"]


from napari_scai._validate import get_table as _table  # noqa: E402 - the shared lookup


def _graph_for(adata: Any, graph: Any, graph_kwargs: dict[str, Any]) -> sp.csr_matrix:
    from napari_scai.graph import _edges_to_csr, spatial_graph

    if sp.issparse(graph):
        if graph.shape != (adata.n_obs, adata.n_obs):
            raise ValueError(f"graph has shape {graph.shape}, expected {(adata.n_obs,) * 2}")
        G = sp.csr_matrix(graph)
        return _edges_to_csr(*G.nonzero(), G.shape[0])
    if isinstance(graph, str) and graph in adata.obsp:
        G = sp.csr_matrix(adata.obsp[graph])
        return _edges_to_csr(*G.nonzero(), G.shape[0])
    return spatial_graph(adata, method=str(graph), **graph_kwargs)


def _check_counts(adata: Any, layer: str | None, where: str) -> None:
    """Refuse negative values; warn when the matrix does not look like raw counts.

    Seurat-v3 gene selection models raw UMI counts; log-normalised or scaled input still runs
    but picks other genes, so it is worth a warning (as scanpy gives) rather than an error.
    """
    import warnings

    X = adata.layers[layer] if layer else adata.X
    if X is None:
        raise ValueError(
            f"{where} has no expression matrix (X is None). Fix: pass layer=<counts layer>"
        )
    vals = X.data if sp.issparse(X) else np.asarray(X).ravel()
    sample = np.asarray(vals[:200_000], dtype=np.float64)
    src = f"layers[{layer!r}]" if layer else "X"
    if sample.size and (not np.all(np.isfinite(sample)) or sample.min() < 0):
        raise ValueError(
            f"{where}.{src} has negative or non-finite values; spatial domains need raw counts. "
            "Fix: pass layer= with the raw counts (e.g. layer='counts')"
        )
    if sample.size and not np.allclose(sample, np.round(sample)):
        warnings.warn(
            f"{where}.{src} does not look like raw counts (non-integer values); gene selection "
            "(Seurat v3) expects counts. Pass layer= with the raw counts if you have them.",
            UserWarning,
            stacklevel=3,
        )


def _plain(v: Any) -> Any:
    """Make a value safe for ``uns`` (h5ad / zarr writers)."""
    if v is None:
        return "none"
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (np.integer, np.floating, np.bool_)):
        return v.item()
    return v


def spatial_domains(
    data: Any,
    table: str = "rna",
    n_domains: int | None = 7,
    device: str = "auto",
    seed: int = 0,
    *,
    graph: Any = "auto",
    batch_key: str | None = None,
    refine: bool = False,
    progress: Any = None,
    cancel: Any = None,
    layer: str | None = None,
    n_top_genes: int = 3000,
    n_comps: int = 50,
    epochs: int = 300,
    hidden_dim: int = 128,
    latent_dim: int = 32,
    lr: float = 1e-3,
    covariance_type: str = "tied",
    n_init: int = 30,
    smooth_rounds: int = 1,
    n_models: int = 3,
    n_domains_range: tuple[int, int] = (3, 15),
    k_selection: str = "stability",
    graph_kwargs: dict[str, Any] | None = None,
    key_added: str = "scai_domain",
    **model_kwargs: Any,
):
    """Find spatial domains with a graph autoencoder and a Gaussian mixture.

    Pipeline: Seurat v3 HVGs on counts -> log-normalise, scale, PCA -> spatial graph (Visium
    hex, else kNN) -> GCN autoencoder with a local contrastive term (see
    :mod:`napari_scai.models.domains`) -> tied-covariance GMM with ``n_domains`` components in
    torch -> optional neighbour-majority refinement.

    Parameters
    ----------
    data
        A SpatialData (``data.tables[table]`` is used), an AnnData, or a list of them (joint
        mode: one block-diagonal graph, one shared embedding and shared domains; the sample is
        a batch covariate).
    table
        Table name inside a SpatialData.
    n_domains
        Number of domains K, or None to choose K by BIC among ``n_domains_range``.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    seed
        Seed for the model and the mixture (same seed, same device -> same labels).
    graph
        ``"auto"`` (hex for Visium, kNN otherwise), ``"hex"``, ``"knn"``, ``"radius"``,
        ``"delaunay"``, ``"squidpy"``, an ``obsp`` key, or a scipy sparse adjacency.
    batch_key
        ``obs`` column with a batch covariate (within one table); in joint mode the sample
        index is used and combined with it.
    refine
        Apply neighbour-majority refinement to the labels.
    progress
        ``progress(step, total, message)`` callback.
    cancel
        Object with ``is_set()`` (e.g. ``threading.Event``); when set the run raises
        :class:`napari_scai.models.Cancelled` and writes nothing.
    layer
        Layer with raw counts (default ``X``).
    n_top_genes, n_comps
        HVGs and principal components used as model input.
    epochs, hidden_dim, latent_dim, lr
        Model size and training.
    covariance_type, n_init
        Gaussian mixture settings: covariance model and number of k-means++ restarts (the
        highest-likelihood fit is kept). 30 restarts, because with 10 the EM ended in a
        lower-likelihood optimum on 2 of 5 seeds of the joint DLPFC run (7,312 spots).
    n_models
        Size of the ensemble: this many models (seeds derived from ``seed``) are trained and
        their standardised embeddings concatenated and reduced by PCA to ``latent_dim`` before
        clustering. Averages out seed-to-seed variation of single models (costs ``n_models``
        trainings).
    n_domains_range
        Candidate K (inclusive) when ``n_domains`` is None.
    k_selection
        How K is chosen when ``n_domains`` is None: ``"stability"`` (mixtures on subsamples
        agree best; default) or ``"bic"`` (tends to over-split graph embeddings).
    smooth_rounds
        Rounds of neighbour averaging (row-normalised graph with self-loops) applied to the
        embedding before the mixture; the smoothed embedding is what ``obsm`` receives.
    graph_kwargs
        Passed to :func:`napari_scai.graph.spatial_graph` (e.g. ``k=``, ``radius=``).
    key_added
        Prefix of the written keys (default ``scai_domain``).
    **model_kwargs
        Extra :class:`napari_scai.models.domains.DomainConfig` fields.

    Returns
    -------
    AnnData or list of AnnData
        The table(s), with ``obs[key_added]`` (categorical "0".."K-1", ordered by size),
        ``obs[f"{key_added}_confidence"]``, ``obsm[f"X_{key_added}"]``,
        ``uns[f"{key_added}_colors"]`` and ``uns[f"{key_added}_params"]``.
    """
    import anndata as ad

    from napari_scai._colors import palette
    from napari_scai.graph import block_diagonal, graph_stats
    from napari_scai.models._runtime import Runtime
    from napari_scai.models.cluster import (
        GaussianMixture,
        refine_labels,
        select_n_components,
        select_n_components_stability,
    )
    from napari_scai.models.domains import DomainConfig, train_domain_ensemble
    from napari_scai.preprocess import rna_features

    t0 = time.perf_counter()
    joint = isinstance(data, Sequence) and not isinstance(data, (str, ad.AnnData))
    adatas = [_table(d, table) for d in (data if joint else [data])]
    if not adatas:
        raise ValueError("no samples given")
    auto_k = n_domains is None
    k_candidates = (
        list(range(int(n_domains_range[0]), int(n_domains_range[1]) + 1)) if auto_k else []
    )
    if auto_k and (not k_candidates or k_candidates[0] < 1):
        raise ValueError(
            f"n_domains_range={n_domains_range!r} must be (low, high) with 1 <= low <= high"
        )
    if not auto_k:
        n_domains = int(n_domains)
        if n_domains < 1:
            raise ValueError("n_domains must be >= 1 (or None to choose it by BIC)")
    inputs = list(data) if joint else [data]
    spatial_key = (graph_kwargs or {}).get("spatial_key", "spatial")
    for i, (a, d) in enumerate(zip(adatas, inputs, strict=True)):
        where = "the AnnData" if isinstance(d, ad.AnnData) else f"table {table!r}"
        where += f" of sample {i}" if joint else ""
        if layer and layer not in a.layers:
            raise KeyError(
                f"layer {layer!r} not in {where}; it has layers {list(a.layers.keys())}. "
                "Fix: pass one of those, or layer=None for X"
            )
        _check_counts(a, layer, where)
        if not auto_k and a.n_obs < n_domains:
            raise ValueError(
                f"n_domains={n_domains} is more than the {a.n_obs} cells/spots in {where}. "
                "Fix: ask for fewer domains"
            )
        if graph in ("auto", "knn", "radius", "delaunay", "squidpy") and spatial_key not in a.obsm:
            from napari_scai.graph import _is_visium

            if not (graph == "auto" and _is_visium(a)):
                raise KeyError(
                    f"{where} has no coordinates in obsm[{spatial_key!r}] (obsm keys: "
                    f"{list(a.obsm.keys())}). Fix: put x, y there, pass "
                    "graph_kwargs={'spatial_key': <key>}, or give array_row/array_col for a "
                    "Visium hex graph"
                )
    rt = Runtime(device=device, seed=seed, progress=progress, cancel=cancel)
    rt.report(0, 100, "preprocessing")

    # ---- features (on copies; the user's X is not touched)
    if len(adatas) == 1:
        work = ad.AnnData(
            X=adatas[0].layers[layer] if layer else adatas[0].X,
            obs=adatas[0].obs[[batch_key]]
            if batch_key
            else pd.DataFrame(index=adatas[0].obs_names),
        )
        sample = np.zeros(work.n_obs, dtype=np.int64)
    else:
        genes = adatas[0].var_names
        for a in adatas[1:]:
            genes = genes.intersection(a.var_names, sort=False)
        if len(genes) == 0:
            raise ValueError("the samples share no genes (var_names); cannot embed them jointly")
        parts = []
        for i, a in enumerate(adatas):
            Xa = a.layers[layer] if layer else a.X
            obs = pd.DataFrame({"_sample": str(i)}, index=[f"{i}:{n}" for n in a.obs_names])
            if batch_key:
                obs[batch_key] = a.obs[batch_key].to_numpy()
            parts.append(ad.AnnData(X=Xa[:, a.var_names.get_indexer(genes)], obs=obs))
        work = ad.concat(parts, join="outer")
        sample = np.concatenate([np.full(a.n_obs, i) for i, a in enumerate(adatas)])
    batch = None
    if len(adatas) > 1 or batch_key:
        keys = [work.obs["_sample"].astype(str)] if len(adatas) > 1 else []
        if batch_key:
            keys.append(work.obs[batch_key].astype(str))
        combo = keys[0] if len(keys) == 1 else keys[0] + "|" + keys[1]
        batch = pd.factorize(combo.to_numpy())[0]
        work.obs["_batch"] = batch
    feats = rna_features(
        work,
        n_top_genes=n_top_genes,
        n_comps=n_comps,
        batch_key="_batch" if batch is not None else None,
        key_added=None,
        seed=seed,
        check=rt.check,
    )
    rt.check()

    # ---- graph (block diagonal over samples)
    rt.report(10, 100, "building spatial graph")
    gk = dict(graph_kwargs or {})
    A = block_diagonal([_graph_for(a, graph, gk) for a in adatas])
    coords = None
    if all("spatial" in a.obsm for a in adatas):
        offs, cs = 0.0, []
        for a in adatas:  # place samples side by side for tiling
            c = np.asarray(a.obsm["spatial"], dtype=np.float64)[:, :2].copy()
            c[:, 0] += offs - c[:, 0].min()
            offs = c[:, 0].max() + 1.0
            cs.append(c)
        coords = np.vstack(cs)
    rt.check()

    # ---- model
    cfg = DomainConfig(
        hidden_dim=hidden_dim, latent_dim=latent_dim, epochs=epochs, lr=lr, **model_kwargs
    )
    t_train = time.perf_counter()

    def _progress(step: int, total: int, msg: str) -> None:
        rt.report(15 + (75 * step) // max(total, 1), 100, msg)  # training: 15..90 of 100

    n_models = max(int(n_models), 1)
    train_rt = Runtime(
        device=rt.device, seed=seed * 1000, progress=_progress if progress else None, cancel=cancel
    )
    seeds = [seed * 1000 + m for m in range(n_models)]
    # On a GPU all members train in one pass (kernel launches, not flops, bound these small
    # graphs); on a CPU one after the other, which measured 10-25% faster there.
    groups = [seeds] if rt.device.type == "cuda" else [[s] for s in seeds]
    Zs, losses = [], []
    for g, members in enumerate(groups):

        def _progress_g(s: int, t: int, msg: str, g: int = g) -> None:
            _progress(g * t + s, len(groups) * t, msg)

        train_rt.progress = _progress_g if progress else None
        Zg, info = train_domain_ensemble(
            feats, A, cfg, train_rt, seeds=members, batch=batch, coords=coords
        )
        Zs += Zg
        losses.append(float(info["loss_history"][-1]) if info["loss_history"] else float("nan"))
    Zs = [Zm / max(float(Zm.std()), 1e-12) for Zm in Zs]
    if n_models == 1:
        Z = Zs[0]
    else:
        from napari_scai.preprocess import pca

        Z = pca(np.hstack(Zs), n_comps=latent_dim, seed=seed)
    del Zs
    t_train = time.perf_counter() - t_train

    # ---- clustering
    rt.report(90, 100, "clustering")
    if smooth_rounds > 0:
        from napari_scai.graph import normalize_adjacency

        S = normalize_adjacency(A, self_loops=True, kind="row")
        for _ in range(int(smooth_rounds)):
            Z = np.asarray(S @ Z, dtype=np.float32)
    gmm_kwargs = dict(
        covariance_type=covariance_type, n_init=n_init, seed=seed, device=rt.device, cancel=cancel
    )
    bics = None
    if auto_k:
        if k_selection == "bic":
            n_domains, bics, gmm = select_n_components(Z, k_candidates, **gmm_kwargs)
        elif k_selection == "stability":
            n_domains, bics, gmm = select_n_components_stability(Z, k_candidates, **gmm_kwargs)
        else:
            raise ValueError(f"k_selection={k_selection!r}; use 'stability' or 'bic'")
    else:
        gmm = GaussianMixture(n_domains, **gmm_kwargs).fit(Z)
    post = gmm.predict_proba(Z)
    labels = post.argmax(1)
    if refine:
        labels = refine_labels(labels, A, n_rounds=1)
    # name domains by size (largest = "0"), ties by component index: deterministic
    sizes = np.bincount(labels, minlength=n_domains)
    order = np.lexsort((np.arange(n_domains), -sizes))
    rank = np.empty(n_domains, dtype=np.int64)
    rank[order] = np.arange(n_domains)
    conf = post[np.arange(labels.size), labels].astype(np.float32)
    names = [str(i) for i in range(n_domains)]
    colors = palette(n_domains)
    params = _plain(
        {
            "n_domains": n_domains,
            "k_selection": {"method": k_selection, "scores": bics} if auto_k else None,
            "seed": int(seed),
            "device": str(rt.device),
            "graph": graph if isinstance(graph, str) else "user",
            "graph_stats": graph_stats(A),
            "batch_key": batch_key,
            "refine": bool(refine),
            "n_top_genes": n_top_genes,
            "n_comps": n_comps,
            "covariance_type": covariance_type,
            "n_init": n_init,
            "smooth_rounds": int(smooth_rounds),
            "model": cfg.as_dict(),
            "n_samples": len(adatas),
            "gmm_log_likelihood": float(gmm.lower_bound_),
            "train_seconds": round(t_train, 3),
            "total_seconds": round(time.perf_counter() - t0, 3),
            "n_models": n_models,
            "final_loss": losses,
        }
    )
    rt.check()  # nothing is written when cancelled
    for i, a in enumerate(adatas):
        sel = sample == i
        a.obs[key_added] = pd.Categorical.from_codes(rank[labels[sel]], categories=names)
        a.obs[f"{key_added}_confidence"] = conf[sel]
        a.obsm[f"X_{key_added}"] = Z[sel]
        a.uns[f"{key_added}_colors"] = list(colors)
        a.uns[f"{key_added}_params"] = dict(params, sample_index=i)
    rt.report(100, 100, "done")
    return adatas if joint else adatas[0]
