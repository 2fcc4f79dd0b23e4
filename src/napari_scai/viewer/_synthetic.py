"""Synthetic cells for the viewer benchmark: a thin alias of
:func:`napari_scai.datasets.synthetic_section` (the one generator)."""

from __future__ import annotations


def synthetic_cells(
    n_cells: int = 1000,
    *,
    n_types: int = 8,
    side: float = 20_000.0,
    radius: float = 6.0,
    seed: int = 0,
    sample: str = "synthetic",
):
    """``synthetic_section(kind="cells")`` with two genes and ``obs['cell_type']``
    (``type_0``, ``type_1``, ...: the planted domains) besides ``obs['domain']``."""
    from napari_scai.datasets import synthetic_section

    sdata = synthetic_section(
        n_cells, n_genes=2, n_domains=n_types, side=side, radius=radius, seed=seed, sample=sample
    )
    obs = sdata.tables["rna"].obs
    obs["cell_type"] = obs["domain"].cat.rename_categories(lambda c: f"type_{c[1:]}")
    return sdata
