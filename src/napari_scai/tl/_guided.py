"""Guided ``spatial_domains``: the unsupervised embedding + a semi-supervised mixture, times a
random walker from the strokes on the spatial graph.

See :mod:`napari_scai.models._guided` for the model and docs/DESIGN-NOTES.md ("Guided domains,
round two") for the measurements behind it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Folds of painted strokes used to fit the confidence temperature (independent of n_models).
N_CALIBRATION_FOLDS = 3
#: EM iterations with free means after the fixed-means fit (guided round four, DESIGN-NOTES:
#: development strokes 200-205, +0.007 ARI on each of 151673, 151674 and STARmap; 20 steps
#: drift back down on 151673).
GUIDED_FREE_STEPS = 1
#: Mixing weights of the guided mixture: held at the painted class proportions (round four).
GUIDED_WEIGHTS = "painted"
#: Second expert of the guided mixture: the model input's first PCs, spatially smoothed
#: (round four: averaging it with the embedding's expert measured higher on the development
#: strokes than either alone).
GUIDED_EXPRESSION_EXPERT = True
EXPRESSION_EXPERT_COMPS = 30
EXPRESSION_EXPERT_SMOOTH_ROUNDS = 3
#: Third expert: the unsupervised mixture (K = number of classes) on the embedding, its
#: components named by Hungarian matching to the painted spots, tempered on them.
GUIDED_UNSUPERVISED_EXPERT = True
UNSUPERVISED_EXPERT_N_INIT = 10


def _guided_mixture(
    adatas: list[Any],
    codes: np.ndarray,
    names: list[str],
    *,
    rt: Any,
    layer: str | None,
    batch_key: str | None,
    graph: Any,
    graph_kwargs: dict[str, Any] | None,
    n_top_genes: int,
    n_comps: int,
    cfg: Any,
    n_models: int,
    smooth_rounds: int,
    seed: int,
    latent_dim: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Train the unsupervised ensemble (as ``spatial_domains`` without annotations), smooth
    its embedding, then fit the calibrated semi-supervised mixture on it.

    Returns (probabilities n x C, smoothed embedding, sample index, info dict with "graph").
    """
    from napari_scai.graph import normalize_adjacency
    from napari_scai.models._guided import calibrated_semi_supervised_mixture
    from napari_scai.tl._domains import (
        _combine,
        _cross_fit_folds,
        _model_inputs,
        _train_members,
    )

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
    # the strokes do not enter the GNN: the embedding is the unsupervised model's
    Zs, _, losses = _train_members(
        feats, A, batch, coords, cfg, rt, seed=seed, n_models=n_models, labels_per_member=None
    )
    Z = _combine(Zs, latent_dim, seed)
    del Zs
    if smooth_rounds > 0:
        S = normalize_adjacency(A, self_loops=True, kind="row")
        for _ in range(int(smooth_rounds)):
            Z = np.asarray(S @ Z, dtype=np.float32)
    rt.report(90, 100, "semi-supervised mixture on the annotated classes")
    fold = _cross_fit_folds(codes, A, coords, N_CALIBRATION_FOLDS, seed)
    n_lab = int((codes >= 0).sum())
    # two experts, averaged: the GNN embedding and the spatially smoothed expression PCs (the
    # model's own input); each gets the mixture x walker with its own temperature
    experts = {"embedding": Z.astype(np.float64)}
    if GUIDED_EXPRESSION_EXPERT:
        Sx = normalize_adjacency(A, self_loops=True, kind="row")
        X = np.asarray(feats[:, : min(EXPRESSION_EXPERT_COMPS, feats.shape[1])], np.float64)
        for _ in range(EXPRESSION_EXPERT_SMOOTH_ROUNDS):
            X = np.asarray(Sx @ X)
        experts["expression"] = X
    Ps, fits = [], {}
    for label, X in experts.items():
        if n_lab < 2 * X.shape[1]:
            # few painted spots for a D-dim tied covariance: the mixture runs on the top PCs
            # (a 400-spot section with 26 painted spots: ARI 0.09 in 32 dims, 0.87 in 13)
            from napari_scai.preprocess import pca

            d = min(X.shape[1], max(len(names), n_lab // 2))
            X = pca(X, n_comps=d, seed=seed).astype(np.float64)
        # mixture (means at the painted means, weights at the painted proportions, one free
        # step) x random walker on the spatial graph, fold-averaged (DESIGN-NOTES, round four)
        P_e, em = calibrated_semi_supervised_mixture(
            X,
            codes,
            len(names),
            fold,
            graph=A,
            fixed_means=True,
            weights=GUIDED_WEIGHTS,
            free_steps=GUIDED_FREE_STEPS,
            cancel=rt.cancel,
        )
        Ps.append(P_e)
        fits[label] = dict(em, dims=int(X.shape[1]))
    if GUIDED_UNSUPERVISED_EXPERT:
        Ps.append(_unsupervised_expert(Z, codes, len(names), seed=seed, rt=rt))
    P = np.mean(Ps, axis=0)
    em = fits["embedding"]
    info = {
        "guided_model": "mean of two experts, each a semi-supervised tied Gaussian mixture (means"
        " at the painted means) x random walker on the spatial graph: on the unsupervised"
        " embedding" + (" and on the smoothed expression PCs" if len(fits) > 1 else ""),
        "experts": list(fits),
        "n_fits_averaged": em["n_fits_averaged"],
        "temperature": em["temperature"],
        "temperatures": [f["temperature"] for f in fits.values()],
        "n_labelled": n_lab,
        "n_held_out": em["n_held_out"],
        "held_out_accuracy": em["held_out_accuracy"],
        "held_out_accuracies": [f["held_out_accuracy"] for f in fits.values()],
        "em_iterations": em["n_iter"],
        "em_converged": bool(em["converged"]),
        "em_dims": em["dims"],
        "final_loss": losses,
        "graph": A,
    }
    return P.astype(np.float64), Z, sample, info


def _unsupervised_expert(Z, codes, n_classes, *, seed, rt):
    """The unsupervised tied mixture's posteriors with components renamed to classes.

    Components are matched one to one to classes by their painted spots (Hungarian, most
    painted mass); the temperature is fitted on the painted spots, which this expert never saw.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.special import log_softmax

    from napari_scai.models._guided import fit_temperature
    from napari_scai.models.cluster import GaussianMixture

    gmm = GaussianMixture(
        n_classes,
        n_init=UNSUPERVISED_EXPERT_N_INIT,
        seed=seed,
        device=rt.device,
        cancel=rt.cancel,
    ).fit(Z)
    Q = np.asarray(gmm.predict_proba(Z), dtype=np.float64)
    lab = codes >= 0
    mass = Q[lab].T @ np.eye(n_classes)[codes[lab]]  # components x classes
    comp, cls = linear_sum_assignment(-mass)
    order = np.empty(n_classes, dtype=np.int64)
    order[cls] = comp
    logQ = np.log(np.maximum(Q[:, order], 1e-12))
    T = fit_temperature(logQ[lab], codes[lab])
    return np.exp(log_softmax(logQ / T, axis=1))
