"""Synthetic sections for viewer tests and benchmarks (no real data needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def synthetic_cells(
    n_cells: int = 1000,
    *,
    n_types: int = 8,
    side: float = 20_000.0,
    radius: float = 6.0,
    seed: int = 0,
    sample: str = "synthetic",
):
    """A SpatialData with ``n_cells`` circles in a ``side`` × ``side`` square and a table ``rna``.

    The table has ``obs['cell_type']`` (categorical, ``n_types`` classes arranged in bands
    along x so the picture is easy to check), ``obs['score']`` (float) and two genes.
    """
    from anndata import AnnData

    from napari_scai.io._common import build_spatialdata

    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, side, size=(n_cells, 2))
    band = np.minimum((xy[:, 0] / side * n_types).astype(int), n_types - 1)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical.from_codes(band, [f"type_{i}" for i in range(n_types)]),
            "score": xy[:, 1] / side,
        },
        index=[f"cell_{i}" for i in range(n_cells)],
    )
    x = np.column_stack([rng.poisson(2.0, n_cells), band]).astype(np.float32)
    adata = AnnData(x, obs=obs, var=pd.DataFrame(index=["GeneA", "GeneB"]))
    return build_spatialdata(
        sample=sample, tables={"rna": adata}, coords=xy, radius=radius, shapes_suffix="cells"
    )
