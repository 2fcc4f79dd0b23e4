"""Categorical palettes kept in ``uns[f"{key}_colors"]`` (the scanpy convention)."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Colour for missing values (NaN) and hidden classes.
MISSING_COLOR = "#bfbfbf"

# 20 distinct colours (matplotlib's tab20 reordered dark-then-light), then 28 more for big K.
_BASE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
]  # fmt: skip


def palette(n: int) -> list[str]:
    """Return ``n`` distinct hex colours (deterministic)."""
    if n <= len(_BASE):
        return _BASE[:n]
    import colorsys

    extra = []
    for i in range(n - len(_BASE)):
        h = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.65 if i % 2 else 0.9, 0.85 if i % 3 else 0.65)
        extra.append(f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}")
    return _BASE + extra


def ensure_categorical(adata, key: str) -> pd.Categorical:
    """Make ``obs[key]`` categorical (in place) and return it."""
    col = adata.obs[key]
    if not isinstance(col.dtype, pd.CategoricalDtype):
        adata.obs[key] = pd.Categorical(col.astype("object").where(col.notna(), None))
    return adata.obs[key].cat


def ensure_colors(adata, key: str) -> list[str]:
    """Return ``uns[f"{key}_colors"]``, creating or extending it to match the categories."""
    cats = ensure_categorical(adata, key).categories
    ukey = f"{key}_colors"
    colors = list(np.asarray(adata.uns.get(ukey, []), dtype=object))
    if len(colors) < len(cats):
        fresh = [c for c in palette(len(cats) + len(colors)) if c not in colors]
        colors = colors + fresh[: len(cats) - len(colors)]
    colors = [str(c) for c in colors[: len(cats)]]
    adata.uns[ukey] = colors
    return colors


def hex_to_rgba(colors, alpha: float = 1.0) -> np.ndarray:
    """Convert hex colours to an (n, 4) float RGBA array."""
    from matplotlib.colors import to_rgba_array

    arr = to_rgba_array(list(colors))
    arr[:, 3] = alpha
    return arr
