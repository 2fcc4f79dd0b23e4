"""``spatial_domains``: GNN spatial domains on one or several samples."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["spatial_domains"]

#: Shared genes needed for a joint embedding of sections (see transfer_labels).
MIN_SHARED_GENES = 100


from napari_scai._validate import get_table as _table  # noqa: E402 - the shared lookup
from napari_scai.tl._api import uns_value as _plain  # noqa: E402


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


def _copy_data(data: Any) -> Any:
    """A modified-copy target: AnnData.copy(), a deep copy of a SpatialData, or a list of them."""
    import anndata as ad

    if isinstance(data, ad.AnnData):
        return data.copy()
    if isinstance(data, Sequence) and not isinstance(data, str):
        return [_copy_data(d) for d in data]
    from spatialdata import deepcopy

    return deepcopy(data)


def _validate_inputs(
    adatas: list[Any],
    inputs: list[Any],
    *,
    table: str,
    layer: str | None,
    graph: Any,
    graph_kwargs: dict[str, Any] | None,
    joint: bool,
    n_domains: int | None = None,
    role: str = "sample",
) -> None:
    """Errors that name the object, the field and the fix, raised before anything runs."""
    import anndata as ad

    spatial_key = (graph_kwargs or {}).get("spatial_key", "spatial")
    for i, (a, d) in enumerate(zip(adatas, inputs, strict=True)):
        where = "the AnnData" if isinstance(d, ad.AnnData) else f"table {table!r}"
        where += f" of {role} {i}" if joint else ""
        if layer and layer not in a.layers:
            raise KeyError(
                f"layer {layer!r} not in {where}; it has layers {list(a.layers.keys())}. "
                "Fix: pass one of those, or layer=None for X"
            )
        _check_counts(a, layer, where)
        if n_domains is not None and a.n_obs < n_domains:
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


def _tile_coords(adatas: list[Any], spatial_key: str) -> np.ndarray | None:
    """Coordinates for the tiled path: ``obsm[spatial_key]`` (or Visium array coordinates),
    samples placed side by side. None when a sample has neither."""
    offs, cs = 0.0, []
    for a in adatas:
        if spatial_key in a.obsm:
            c = np.asarray(a.obsm[spatial_key], dtype=np.float64)[:, :2].copy()
        elif "array_row" in a.obs and "array_col" in a.obs:
            c = np.column_stack([a.obs["array_col"], a.obs["array_row"]]).astype(np.float64)
        else:
            return None
        c[:, 0] += offs - c[:, 0].min()
        offs = c[:, 0].max() + 1.0
        cs.append(c)
    return np.vstack(cs)


def _features(adatas, *, layer, batch_key, n_top_genes, n_comps, seed, rt, genes=None):
    """Joint model input: (PCA features, batch codes or None, sample index per row)."""
    import anndata as ad

    from napari_scai.preprocess import rna_features

    if len(adatas) == 1:
        a0 = adatas[0]
        X0 = a0.layers[layer] if layer else a0.X
        work = ad.AnnData(
            X=X0,
            obs=a0.obs[[batch_key]] if batch_key else pd.DataFrame(index=a0.obs_names),
        )
        sample = np.zeros(work.n_obs, dtype=np.int64)
    else:
        if genes is None:
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
    return feats, batch, sample


def _model_inputs(
    adatas, *, layer, batch_key, n_top_genes, n_comps, seed, rt, graph, graph_kwargs, genes=None
):
    """Features, batch codes, sample index, block-diagonal graph and tiling coordinates."""
    from napari_scai.graph import block_diagonal

    rt.report(0, 100, "preprocessing")
    feats, batch, sample = _features(
        adatas,
        layer=layer,
        batch_key=batch_key,
        n_top_genes=n_top_genes,
        n_comps=n_comps,
        seed=seed,
        rt=rt,
        genes=genes,
    )
    rt.report(10, 100, "building spatial graph")
    A = block_diagonal([_graph_for(a, graph, dict(graph_kwargs or {})) for a in adatas])
    coords = _tile_coords(adatas, (graph_kwargs or {}).get("spatial_key", "spatial"))
    rt.check()
    return feats, batch, sample, A, coords


def _train_members(
    feats, A, batch, coords, cfg, rt, *, seed, n_models, labels_per_member, pairs=None
):
    """Train the ensemble; return per-member embeddings, per-member logits (or None), losses.

    ``labels_per_member``: None (unsupervised) or one label vector per member (-1 unlabelled).
    Members whose labels differ cannot share a pass: they train one after the other.
    """
    from napari_scai.models._runtime import Runtime
    from napari_scai.models.domains import train_domain_ensemble

    def _progress(step: int, total: int, msg: str) -> None:
        rt.report(15 + (75 * step) // max(total, 1), 100, msg)  # training: 15..90 of 100

    train_rt = Runtime(
        device=rt.device,
        seed=seed * 1000,
        progress=_progress if rt.progress else None,
        cancel=rt.cancel,
    )
    seeds = [seed * 1000 + m for m in range(n_models)]
    # Unsupervised members share their input, so they go to train_domain_ensemble together: it
    # trains them in one pass on a GPU, at once in threads on a CPU when each is small (one
    # intra-op thread), else one after the other, and its messages name the members in
    # training. Guided members see different labels (cross-fitting) and so train in turn.
    together = labels_per_member is None
    cacheable = together and pairs is None
    key = _member_key(feats, A, batch, coords, cfg, rt.device, seeds) if cacheable else None
    if key is not None and _MEMBER_CACHE.get("key") == key:
        # same input, settings, seeds and device as the last unsupervised training: its
        # (deterministic) result, e.g. a guided re-run after more strokes were painted
        rt.report(90, 100, "reusing the trained models (input and settings unchanged)")
        return [Zm.copy() for Zm in _MEMBER_CACHE["Zs"]], None, list(_MEMBER_CACHE["losses"])
    groups = [list(range(n_models))] if together else [[m] for m in range(n_models)]
    Zs, logits, losses = [], [], []
    for g, members in enumerate(groups):

        def _progress_g(s: int, t: int, msg: str, g: int = g, members=members) -> None:
            if len(groups) > 1:
                msg = f"model {members[0] + 1}/{n_models}: {msg}"
            _progress(g * t + s, len(groups) * t, msg)

        train_rt.progress = _progress_g if rt.progress else None
        Zg, info = train_domain_ensemble(
            feats,
            A,
            cfg,
            train_rt,
            seeds=[seeds[m] for m in members],
            batch=batch,
            coords=coords,
            labels=None if labels_per_member is None else labels_per_member[members[0]],
            pairs=pairs,
        )
        Zs += Zg
        if info.get("logits") is not None:
            logits += list(info["logits"])
        per = info.get("final_loss_per_member")
        hist = info["loss_history"]
        losses += per if per else [float(hist[-1]) if hist else float("nan")]
    if key is not None and sum(Zm.size for Zm in Zs) <= MEMBER_CACHE_MAX_FLOATS:
        _MEMBER_CACHE.clear()
        _MEMBER_CACHE.update(key=key, Zs=[Zm.copy() for Zm in Zs], losses=list(losses))
    return Zs, (logits or None), losses


#: The last unsupervised ensemble's embeddings, kept in memory (one entry) so that a guided
#: re-run with more strokes, or a guided run after an unsupervised one on the same section and
#: settings, skips the training (the strokes do not enter it). Up to this many floats (256 MB
#: of float32: 3 members x 32 dims x 670,000 spots); larger runs are not kept.
MEMBER_CACHE_MAX_FLOATS = 64_000_000
_MEMBER_CACHE: dict[str, Any] = {}


def clear_model_cache() -> None:
    """Forget the kept unsupervised ensemble (frees its memory; the next run trains)."""
    _MEMBER_CACHE.clear()


def _member_key(feats, A, batch, coords, cfg, device, seeds) -> tuple | None:
    """Fingerprint of everything the unsupervised training reads (None: not cacheable)."""
    import dataclasses
    import hashlib

    if not isinstance(feats, np.ndarray):
        return None
    h = hashlib.blake2b(digest_size=16)
    for arr in (feats, batch, coords):
        if arr is not None:
            a = np.ascontiguousarray(arr)
            h.update(str((a.dtype, a.shape)).encode())
            h.update(a.tobytes())
        else:
            h.update(b"none")
    G = sp.csr_matrix(A)
    for arr in (G.indptr, G.indices, G.data):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(repr(dataclasses.asdict(cfg)).encode())
    return (h.hexdigest(), str(device), tuple(int(x) for x in seeds), G.shape)


def _combine(Zs: list[np.ndarray], latent_dim: int, seed: int) -> np.ndarray:
    Zs = [Zm / max(float(Zm.std()), 1e-12) for Zm in Zs]
    if len(Zs) == 1:
        return Zs[0]
    from napari_scai.preprocess import pca

    return pca(np.hstack(Zs), n_comps=latent_dim, seed=seed)


def _label_codes(adatas: list[Any], key: str, where: str) -> tuple[np.ndarray, list[str], Any]:
    """Integer codes (-1 = unlabelled) over the concatenated tables, the class names in use
    (categories without a labelled spot are dropped) and the colours of those classes."""
    values, colors = [], None
    for i, a in enumerate(adatas):
        if key not in a.obs.columns:
            raise KeyError(
                f"annotation/labels column {key!r} not in obs of {where} {i} (columns: "
                f"{list(a.obs.columns)}). Fix: paint classes in the Annotate dock (it writes "
                "obs['scai_annotation']) or name an existing column"
            )
        col = a.obs[key]
        values.append(col.astype(object).where(col.notna(), None).to_numpy())
        if colors is None and isinstance(col.dtype, pd.CategoricalDtype):
            cols = a.uns.get(f"{key}_colors")
            if cols is not None and len(cols) == len(col.cat.categories):
                colors = dict(zip(map(str, col.cat.categories), cols, strict=True))
    v = np.concatenate(values)
    lab = np.array([x is not None and not (isinstance(x, float) and np.isnan(x)) for x in v])
    names = list(pd.unique(pd.Series([str(x) for x in v[lab]])))
    first = next((a.obs[key] for a in adatas), None)
    if first is not None and isinstance(first.dtype, pd.CategoricalDtype):  # keep category order
        order = [str(c) for c in first.cat.categories]
        names = [c for c in order if c in set(names)] + [c for c in names if c not in set(order)]
    codes = np.full(v.size, -1, dtype=np.int64)
    idx = {c: j for j, c in enumerate(names)}
    codes[lab] = [idx[str(x)] for x in v[lab]]
    return codes, names, colors


def _cross_fit_folds(
    codes: np.ndarray, A: sp.csr_matrix, coords: np.ndarray | None, n_folds: int, seed: int
) -> np.ndarray:
    """Fold (0..n_folds-1, or -1: in every fold's training) of each labelled node.

    Folds follow strokes: the labelled nodes of a class are split into their connected pieces
    on the spatial graph (one painted stroke = one piece) and pieces go to folds in turn, so a
    held-out node's neighbours are held out too. A class with fewer pieces than folds is cut
    into ``n_folds`` spatially contiguous chunks along its main axis instead; a class with
    fewer than ``n_folds`` nodes is in every fold's training (no held-out prediction).
    """
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng([int(seed), 11])
    fold = np.full(codes.size, -1, dtype=np.int64)
    for c in np.unique(codes[codes >= 0]):
        nodes = np.nonzero(codes == c)[0]
        if nodes.size < n_folds:
            continue
        n_comp, comp = connected_components(A[nodes][:, nodes], directed=False)
        if n_comp >= n_folds:
            order = rng.permutation(n_comp)
            # biggest pieces first, dealt round-robin, so folds get similar sizes
            sizes = np.bincount(comp, minlength=n_comp)
            order = order[np.argsort(-sizes[order], kind="stable")]
            f_of = np.empty(n_comp, dtype=np.int64)
            f_of[order] = np.arange(n_comp) % n_folds
            fold[nodes] = f_of[comp]
        else:
            if coords is not None:
                xy = coords[nodes] - coords[nodes].mean(0)
                axis = np.linalg.svd(xy, full_matrices=False)[2][0] if nodes.size > 1 else [1, 0]
                t = xy @ np.asarray(axis)
            else:
                t = np.arange(nodes.size, dtype=np.float64)
            chunks = np.array_split(np.argsort(t, kind="stable"), n_folds)
            for f, ch in enumerate(chunks):
                fold[nodes[ch]] = f
    return fold


def _guided(
    adatas,
    codes,
    names,
    *,
    rt,
    layer,
    batch_key,
    graph,
    graph_kwargs,
    n_top_genes,
    n_comps,
    cfg,
    n_models,
    smooth_rounds,
    seed,
    latent_dim,
    genes=None,
    logit_smooth_rounds=3,
    align_pairs=None,
):
    """Semi-supervised run shared by guided ``spatial_domains`` and ``transfer_labels``.

    ``align_pairs``: a function ``(feats, sample, A) -> P x 2 pairs`` of spots to pull together
    in the embedding (label transfer's cross-section anchors), or None.

    Returns (probabilities n x C, smoothed embedding, graph, sample index, info dict).
    """
    from napari_scai.graph import normalize_adjacency

    feats, batch, sample, A, coords = _model_inputs(
        adatas,
        layer=layer,
        batch_key=batch_key,
        n_top_genes=n_top_genes,
        n_comps=n_comps,
        seed=seed,
        rt=rt,
        graph=graph,
        graph_kwargs=graph_kwargs,
        genes=genes,
    )
    n_folds = n_models if n_models >= 2 else 0
    fold = _cross_fit_folds(codes, A, coords, n_folds, seed) if n_folds else np.full(codes.size, -1)
    # member m trains on every labelled node outside fold m; fold m is its held-out set
    per_member = []
    for m in range(n_models):
        y = codes.copy()
        y[(fold == m) & (codes >= 0)] = -1
        per_member.append(y)
    pairs = align_pairs(feats, sample, A) if align_pairs is not None else None
    Zs, logits, losses = _train_members(
        feats, A, batch, coords, cfg, rt, seed=seed, n_models=n_models,
        labels_per_member=per_member, pairs=pairs,
    )  # fmt: skip
    rt.report(90, 100, "classifying")
    S = normalize_adjacency(A, self_loops=True, kind="row")

    def smooth(M: np.ndarray, rounds: int = smooth_rounds) -> np.ndarray:
        for _ in range(int(rounds)):
            M = np.asarray(S @ M, dtype=np.float32)
        return M

    # the head is linear, so smoothing its logits = the head on the smoothed embedding
    L = [smooth(lg, logit_smooth_rounds).astype(np.float64) for lg in logits]
    held = [np.nonzero((fold == m) & (codes >= 0))[0] for m in range(n_models)]
    oof_logits = np.vstack([L[m][h] for m, h in enumerate(held)]) if n_folds else np.empty((0, 1))
    oof_y = np.concatenate([codes[h] for h in held]) if n_folds else np.empty(0, dtype=int)
    from napari_scai.models._guided import fit_temperature

    T = fit_temperature(oof_logits, oof_y, t_max=20.0) if oof_y.size else 1.0
    from scipy.special import softmax

    P = np.mean([softmax(lg / T, axis=1) for lg in L], axis=0)
    Z = smooth(_combine(Zs, latent_dim, seed))
    oof_acc = float((oof_logits.argmax(1) == oof_y).mean()) if oof_y.size else float("nan")
    info = {
        "temperature": T,
        "n_labelled": int((codes >= 0).sum()),
        "n_held_out": int(oof_y.size),
        "held_out_accuracy": oof_acc,
        "final_loss": losses,
        "n_align_pairs": 0 if pairs is None else int(len(pairs)),
        "graph": A,
    }
    return P, Z, sample, info


def _write(adatas, sample, key_added, labels, names, conf, Z, colors, params) -> None:
    for i, a in enumerate(adatas):
        sel = sample == i
        a.obs[key_added] = pd.Categorical.from_codes(labels[sel], categories=names)
        a.obs[f"{key_added}_confidence"] = conf[sel].astype(np.float32)
        a.obsm[f"X_{key_added}"] = Z[sel]
        a.uns[f"{key_added}_colors"] = list(colors)
        a.uns[f"{key_added}_params"] = dict(params, sample_index=i)


def spatial_domains(
    data: Any,
    *,
    table: str = "rna",
    n_domains: int | None = 7,
    annotation_key: str | None = None,
    device: str = "auto",
    seed: int = 0,
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
    guided_smooth_rounds: int = 3,
    n_models: int = 3,
    n_domains_range: tuple[int, int] = (3, 15),
    k_selection: str = "stability",
    graph_kwargs: dict[str, Any] | None = None,
    key_added: str = "scai_domain",
    copy: bool = False,
    **model_kwargs: Any,
) -> Any:
    """Find spatial domains with a graph autoencoder, unsupervised or guided by annotations.

    Pipeline: Seurat v3 HVGs on counts -> log-normalise, scale, PCA -> spatial graph (Visium
    hex, else kNN) -> GCN autoencoder with a local contrastive term (see
    :mod:`napari_scai.models.domains`), an ensemble of ``n_models`` -> then either

    * unsupervised (``annotation_key=None``): tied-covariance GMM with ``n_domains``
      components in torch, optional neighbour-majority refinement; or
    * guided (``annotation_key`` given): the same unsupervised ensemble embedding, then a
      semi-supervised tied-covariance Gaussian mixture with one component per annotated
      class, fitted by EM on all spots with the painted spots' responsibilities clamped to
      their class and the means held at the painted spots' class means
      (:mod:`napari_scai.models._guided`), times a random walker from the
      painted spots on the spatial graph (edges weighted by embedding similarity); a
      temperature fitted on held-out strokes (3 folds, refitted without each) calibrates the
      posterior, the probabilities are the mean of the full and the 3 held-out fits, and every
      spot gets the most probable annotated class with that probability as confidence. Costs
      one unsupervised run plus four EM and walker fits.

    Parameters
    ----------
    data
        A SpatialData (``data.tables[table]`` is used), an AnnData, or a list of them (joint
        mode: one block-diagonal graph, one shared embedding and shared domains; the sample is
        a batch covariate).
    table
        Table name inside a SpatialData.
    n_domains
        Number of domains K, or None to choose K among ``n_domains_range`` by
        ``k_selection`` (clustering stability by default). Ignored in guided mode (K = the
        annotated classes).
    annotation_key
        ``obs`` column with a class on some spots and missing values elsewhere (the Annotate
        dock writes ``obs['scai_annotation']``). Needs at least two classes with labelled
        spots; categories without any labelled spot are dropped.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    seed
        Seed for the model and the mixture (same seed, same device -> same labels). The
        caller's global RNG state is left as it was.
    graph
        ``"auto"`` (hex for Visium, kNN otherwise), ``"hex"``, ``"knn"``, ``"radius"``,
        ``"delaunay"``, ``"squidpy"``, an ``obsp`` key, or a scipy sparse adjacency.
    batch_key
        ``obs`` column with a batch covariate (within one table); in joint mode the sample
        index is used and combined with it.
    refine
        Apply neighbour-majority refinement to the labels (unsupervised mode).
    progress
        ``progress(step, total, message)`` callback; messages name the ensemble member
        being trained (``"model 2/3: training epoch ..."``).
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
        trainings). Guided mode trains the same ensemble (the strokes do not enter it). The
        last unsupervised ensemble is kept in memory: a run on the same input with the same
        settings, seed and device (e.g. guided again after more strokes were painted, or
        guided after an unsupervised run) reuses it instead of training, with the same result;
        :func:`napari_scai.tl.clear_model_cache` frees it.
    n_domains_range
        Candidate K (inclusive) when ``n_domains`` is None.
    k_selection
        How K is chosen when ``n_domains`` is None: ``"stability"`` (mixtures on subsamples
        agree best; default) or ``"bic"`` (tends to over-split graph embeddings).
    smooth_rounds
        Rounds of neighbour averaging (row-normalised graph with self-loops) applied to the
        embedding before the mixture (and to the class logits in guided mode); the smoothed
        embedding is what ``obsm`` receives.
    guided_smooth_rounds
        Not used by the guided mixture (kept for backward compatibility; recorded in
        ``uns``). :func:`napari_scai.tl.transfer_labels` has its own, for its class logits.
    graph_kwargs
        Passed to :func:`napari_scai.graph.spatial_graph` (e.g. ``k=``, ``radius=``,
        ``spatial_key=``; the key is also where the tiled path reads coordinates).
    key_added
        Prefix of the written keys (default ``scai_domain``).
    copy
        Return a modified copy instead of writing into ``data``.
    **model_kwargs
        Extra :class:`napari_scai.models.domains.DomainConfig` fields (e.g. ``w_cls``, the
        weight of the guided cross-entropy term).

    Returns
    -------
    None, or (``copy=True``) the modified copy of ``data``. Written into each table:
    ``obs[key_added]`` (categorical: "0".."K-1" ordered by size, or the annotated classes),
    ``obs[f"{key_added}_confidence"]`` (posterior of the chosen domain; calibrated class
    probability in guided mode), ``obsm[f"X_{key_added}"]``, ``uns[f"{key_added}_colors"]``
    and ``uns[f"{key_added}_params"]``.
    """
    if copy:
        data = _copy_data(data)
    _spatial_domains(
        data,
        table=table,
        n_domains=n_domains,
        annotation_key=annotation_key,
        device=device,
        seed=seed,
        graph=graph,
        batch_key=batch_key,
        refine=refine,
        progress=progress,
        cancel=cancel,
        layer=layer,
        n_top_genes=n_top_genes,
        n_comps=n_comps,
        epochs=epochs,
        hidden_dim=hidden_dim,
        latent_dim=latent_dim,
        lr=lr,
        covariance_type=covariance_type,
        n_init=n_init,
        smooth_rounds=smooth_rounds,
        guided_smooth_rounds=guided_smooth_rounds,
        n_models=n_models,
        n_domains_range=n_domains_range,
        k_selection=k_selection,
        graph_kwargs=graph_kwargs,
        key_added=key_added,
        model_kwargs=model_kwargs,
    )
    return data if copy else None


def _spatial_domains(
    data,
    *,
    table,
    n_domains,
    annotation_key,
    device,
    seed,
    graph,
    batch_key,
    refine,
    progress,
    cancel,
    layer,
    n_top_genes,
    n_comps,
    epochs,
    hidden_dim,
    latent_dim,
    lr,
    covariance_type,
    n_init,
    smooth_rounds,
    guided_smooth_rounds,
    n_models,
    n_domains_range,
    k_selection,
    graph_kwargs,
    key_added,
    model_kwargs,
) -> None:
    import anndata as ad

    from napari_scai._colors import palette
    from napari_scai.graph import graph_stats
    from napari_scai.models._runtime import Runtime
    from napari_scai.models.cluster import (
        GaussianMixture,
        refine_labels,
        select_n_components,
        select_n_components_stability,
    )
    from napari_scai.models.domains import DomainConfig, preserve_global_random_state

    t0 = time.perf_counter()
    joint = isinstance(data, Sequence) and not isinstance(data, (str, ad.AnnData))
    adatas = [_table(d, table) for d in (data if joint else [data])]
    if not adatas:
        raise ValueError("no samples given")
    guided = annotation_key is not None
    auto_k = n_domains is None and not guided
    k_candidates = (
        list(range(int(n_domains_range[0]), int(n_domains_range[1]) + 1)) if auto_k else []
    )
    if auto_k and (not k_candidates or k_candidates[0] < 1):
        raise ValueError(
            f"n_domains_range={n_domains_range!r} must be (low, high) with 1 <= low <= high"
        )
    if auto_k and k_selection not in ("stability", "bic"):
        raise ValueError(f"k_selection={k_selection!r}; use 'stability' or 'bic'")
    if not auto_k and not guided:
        n_domains = int(n_domains)
        if n_domains < 1:
            raise ValueError("n_domains must be >= 1 (or None to choose it among n_domains_range)")
    inputs = list(data) if joint else [data]
    _validate_inputs(
        adatas,
        inputs,
        table=table,
        layer=layer,
        graph=graph,
        graph_kwargs=graph_kwargs,
        joint=joint,
        n_domains=None if (auto_k or guided) else n_domains,
    )
    codes = names = ann_colors = None
    if guided:
        codes, names, ann_colors = _label_codes(adatas, annotation_key, "sample")
        if len(names) < 2:
            have = f"only class {names[0]!r}" if names else "no labelled spot"
            raise ValueError(
                f"annotation_key={annotation_key!r} has {have} "
                f"({int((codes >= 0).sum())} labelled spots); guided domains need at least two "
                "classes with labelled spots. Fix: paint strokes of at least two classes"
            )
    n_models = max(int(n_models), 1)
    cfg = DomainConfig(
        hidden_dim=hidden_dim, latent_dim=latent_dim, epochs=epochs, lr=lr, **model_kwargs
    )
    with preserve_global_random_state():
        rt = Runtime(device=device, seed=seed, progress=progress, cancel=cancel)
        common = {
            "seed": int(seed),
            "device": str(rt.device),
            "graph": graph if isinstance(graph, str) else "user",
            "batch_key": batch_key,
            "n_top_genes": n_top_genes,
            "n_comps": n_comps,
            "smooth_rounds": int(smooth_rounds),
            "guided_smooth_rounds": int(guided_smooth_rounds) if guided else "none",
            "model": cfg.as_dict(),
            "n_samples": len(adatas),
            "n_models": n_models,
        }
        if guided:
            from napari_scai.tl._guided import _guided_mixture  # issue 11, round two

            P, Z, sample, info = _guided_mixture(
                adatas,
                codes,
                names,
                rt=rt,
                layer=layer,
                batch_key=batch_key,
                graph=graph,
                graph_kwargs=graph_kwargs,
                n_top_genes=n_top_genes,
                n_comps=n_comps,
                cfg=cfg,
                n_models=n_models,
                smooth_rounds=smooth_rounds,
                seed=seed,
                latent_dim=latent_dim,
            )
            labels = P.argmax(1)
            conf = P[np.arange(labels.size), labels]
            colors = [
                (ann_colors or {}).get(c, d)
                for c, d in zip(names, palette(len(names)), strict=True)
            ]
            A = info.pop("graph")
            params = _plain(
                dict(
                    common,
                    mode="guided",
                    annotation_key=annotation_key,
                    classes=list(names),
                    n_domains=len(names),
                    graph_stats=graph_stats(A),
                    total_seconds=round(time.perf_counter() - t0, 3),
                    **info,
                )
            )
            rt.check()
            _write(adatas, sample, key_added, labels, names, conf, Z, colors, params)
            rt.report(100, 100, "done")
            return

        feats, batch, sample, A, coords = _model_inputs(
            adatas,
            layer=layer,
            batch_key=batch_key,
            n_top_genes=n_top_genes,
            n_comps=n_comps,
            seed=seed,
            rt=rt,
            graph=graph,
            graph_kwargs=graph_kwargs,
        )
        t_train = time.perf_counter()
        Zs, _, losses = _train_members(
            feats, A, batch, coords, cfg, rt, seed=seed, n_models=n_models, labels_per_member=None
        )
        Z = _combine(Zs, latent_dim, seed)
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
            covariance_type=covariance_type,
            n_init=n_init,
            seed=seed,
            device=rt.device,
            cancel=cancel,
        )
        bics = None
        if auto_k:
            if k_selection == "bic":
                n_domains, bics, gmm = select_n_components(Z, k_candidates, **gmm_kwargs)
            else:
                n_domains, bics, gmm = select_n_components_stability(Z, k_candidates, **gmm_kwargs)
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
        params = _plain(
            dict(
                common,
                mode="unsupervised",
                n_domains=n_domains,
                k_selection={"method": k_selection, "scores": bics} if auto_k else None,
                graph_stats=graph_stats(A),
                refine=bool(refine),
                covariance_type=covariance_type,
                n_init=n_init,
                gmm_log_likelihood=float(gmm.lower_bound_),
                train_seconds=round(t_train, 3),
                total_seconds=round(time.perf_counter() - t0, 3),
                final_loss=losses,
            )
        )
        rt.check()  # nothing is written when cancelled
        _write(adatas, sample, key_added, rank[labels], names, conf, Z, palette(n_domains), params)
        rt.report(100, 100, "done")
