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
    Z_em = Z.astype(np.float64)
    n_lab = int((codes >= 0).sum())
    if n_lab < 2 * Z_em.shape[1]:
        # few painted spots for a D-dim tied covariance: the mixture runs on the top PCs
        # (a 400-spot section with 26 painted spots: ARI 0.09 in 32 dims, 0.87 in 13)
        from napari_scai.preprocess import pca

        d = min(Z_em.shape[1], max(len(names), n_lab // 2))
        Z_em = pca(Z_em, n_comps=d, seed=seed).astype(np.float64)
    # mixture (means at the painted means) x random walker on the spatial graph, fold-averaged
    # (guided12, DESIGN-NOTES "round three")
    P, em = calibrated_semi_supervised_mixture(
        Z_em,
        codes,
        len(names),
        fold,
        graph=A,
        fixed_means=True,
        free_steps=GUIDED_FREE_STEPS,
        cancel=rt.cancel,
    )
    info = {
        "guided_model": "semi-supervised tied Gaussian mixture (means at the painted means) on"
        " the unsupervised embedding x random walker on the spatial graph",
        "n_fits_averaged": em["n_fits_averaged"],
        "temperature": em["temperature"],
        "n_labelled": int((codes >= 0).sum()),
        "n_held_out": em["n_held_out"],
        "held_out_accuracy": em["held_out_accuracy"],
        "em_iterations": em["n_iter"],
        "em_converged": bool(em["converged"]),
        "em_dims": int(Z_em.shape[1]),
        "final_loss": losses,
        "graph": A,
    }
    return P.astype(np.float64), Z, sample, info
