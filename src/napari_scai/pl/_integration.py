"""Figures of :func:`napari_scai.tl.integrate` results: modality weights, joint clusters, embedding.

Colours of categorical columns come from ``uns[f"{key}_colors"]`` (created when missing, as
napari-scai's layers do), so a figure matches the viewer. Spatial panels draw ``obsm['spatial']``
with y pointing down, like the image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["integration_embedding", "integration_weights", "joint_clusters", "joint_umap"]


def joint_umap(
    adata: Any,
    basis: str = "X_scai_joint",
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.3,
    seed: int = 0,
    key_added: str | None = None,
) -> np.ndarray:
    """2-D UMAP (umap-learn) of an embedding, written to ``obsm[key_added]``.

    Parameters
    ----------
    adata
        Table holding ``obsm[basis]`` (the first table of :func:`napari_scai.tl.integrate`).
    basis
        The embedding to lay out.
    n_neighbors, min_dist
        UMAP settings (``n_neighbors`` capped at n - 1).
    seed
        ``random_state`` of UMAP (fixed seed -> same layout).
    key_added
        ``obsm`` key of the layout; default ``f"{basis}_umap"``.

    Returns
    -------
    numpy.ndarray
        ``(n, 2)`` float32 layout.
    """
    import warnings

    if basis not in adata.obsm:
        raise KeyError(
            f"table has no obsm['{basis}'] (obsm: {list(adata.obsm.keys())}). Fix: run "
            "napari_scai.tl.integrate first, or pass basis="
        )
    X = np.asarray(adata.obsm[basis], dtype=np.float32)
    n = X.shape[0]
    if n < 4:
        raise ValueError(f"UMAP needs at least 4 cells; got {n}")
    import umap

    k = int(min(n_neighbors, n - 1))
    extra = {}
    if n <= 50_000:
        # exact neighbours (scikit-learn) instead of UMAP's nearest-neighbour descent: exact, and
        # it skips compiling pynndescent (about 5 s of the first call in a process)
        from sklearn.neighbors import NearestNeighbors

        dist, ind = NearestNeighbors(n_neighbors=k).fit(X).kneighbors(X)
        extra["precomputed_knn"] = (ind, dist, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by setting random_state"
        layout = umap.UMAP(
            n_neighbors=k,
            min_dist=min_dist,
            random_state=seed,
            init="spectral" if n > k + 1 else "random",
            **extra,
        ).fit_transform(X)
    layout = np.asarray(layout, dtype=np.float32)
    adata.obsm[key_added or f"{basis}_umap"] = layout
    return layout


def _coords(adata: Any, basis: str | None, key: str) -> tuple[np.ndarray, bool, str]:
    """(n, 2) plotting coordinates, whether they are spatial (y down), and the basis used."""
    if basis is None:
        basis = "spatial" if "spatial" in adata.obsm else f"X_{key}_umap"
    if basis not in adata.obsm:
        raise KeyError(
            f"table has no obsm['{basis}'] (obsm: {list(adata.obsm.keys())}). Fix: pass "
            f"basis='spatial' for spatial data, or compute a layout with joint_umap(adata)"
        )
    xy = np.asarray(adata.obsm[basis], dtype=float)[:, :2]
    return xy, basis == "spatial", basis


def _weight_columns(adata: Any, key: str) -> list[str]:
    prefix = key[: -len("_joint")] if key.endswith("_joint") else key
    cols = [c for c in adata.obs.columns if str(c).startswith(f"{prefix}_weight_")]
    if not cols:
        raise KeyError(
            f"no obs['{prefix}_weight_<table>'] columns. Fix: run napari_scai.tl.integrate "
            f"(key_added='{key}') first"
        )
    return cols


def _scatter_ax(ax, xy, spatial, s):
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if spatial:
        ax.invert_yaxis()
    return s if s is not None else float(np.clip(30000.0 / max(len(xy), 1), 2.0, 40.0))


def joint_clusters(
    adata: Any,
    key: str = "scai_joint",
    *,
    basis: str | None = None,
    ax: Any = None,
    s: float | None = None,
    legend: bool = True,
):
    """Joint clusters on the tissue (``obsm['spatial']``) or on the joint UMAP.

    Parameters
    ----------
    adata
        First table of :func:`napari_scai.tl.integrate` (``obs[f"{key}_cluster"]``).
    key
        ``key_added`` of the integration.
    basis
        ``obsm`` key of the coordinates; default ``spatial`` when present, else
        ``f"X_{key}_umap"``.
    ax
        Matplotlib axes to draw into (default: a new figure).
    s
        Marker size.
    legend
        Draw a legend of the clusters.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    from napari_scai._colors import ensure_colors

    col = f"{key}_cluster"
    if col not in adata.obs:
        raise KeyError(
            f"no obs['{col}']. Fix: run napari_scai.tl.integrate with n_clusters=K (key_added="
            f"'{key}')"
        )
    xy, spatial, _ = _coords(adata, basis, key)
    colors = ensure_colors(adata, col)
    cats = adata.obs[col].cat
    fig = ax.figure if ax is not None else plt.figure(figsize=(6.5, 5))
    ax = ax or fig.add_subplot(111)
    size = _scatter_ax(ax, xy, spatial, s)
    codes = cats.codes.to_numpy()
    palette = np.array(colors + ["#bfbfbf"], dtype=object)
    ax.scatter(xy[:, 0], xy[:, 1], c=list(palette[codes]), s=size, linewidths=0)
    if legend:
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], marker="o", ls="", color=c, label=str(lab))
            for lab, c in zip(cats.categories, colors, strict=True)
        ]
        ax.legend(
            handles=handles, title="joint cluster", loc="center left", bbox_to_anchor=(1, 0.5)
        )
    ax.set_title("joint clusters")
    fig.tight_layout()
    return fig


def integration_weights(
    adata: Any,
    key: str = "scai_joint",
    *,
    basis: str | None = None,
    s: float | None = None,
    cmap: str = "magma",
):
    """Each modality's per-cell weight as a map, plus mean weights per joint cluster.

    One panel per ``obs['scai_weight_<table>']`` column (colour scale 0-1) on the tissue or the
    joint UMAP; with joint clusters, a last panel of stacked mean weights per cluster.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    cols = _weight_columns(adata, key)
    xy, spatial, _ = _coords(adata, basis, key)
    cluster = f"{key}_cluster"
    with_bar = cluster in adata.obs
    n_panels = len(cols) + int(with_bar)
    fig, axes = plt.subplots(1, n_panels, figsize=(4.2 * n_panels, 4.2), squeeze=False)
    axes = axes[0]
    for ax, c in zip(axes, cols, strict=False):
        size = _scatter_ax(ax, xy, spatial, s)
        sc = ax.scatter(
            xy[:, 0],
            xy[:, 1],
            c=adata.obs[c].to_numpy(float),
            s=size,
            cmap=cmap,
            vmin=0,
            vmax=1,
            linewidths=0,
        )
        ax.set_title(c.split("_weight_", 1)[1] + " weight")
        fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.02)
    if with_bar:
        ax = axes[-1]
        means = adata.obs.groupby(cluster, observed=False)[cols].mean()
        bottom = np.zeros(len(means))
        from napari_scai._colors import palette

        for c, color in zip(cols, palette(len(cols)), strict=True):
            ax.bar(
                means.index.astype(str),
                means[c].to_numpy(),
                bottom=bottom,
                color=color,
                label=c.split("_weight_", 1)[1],
            )
            bottom += np.nan_to_num(means[c].to_numpy())
        ax.set_ylim(0, 1)
        ax.set_xlabel("joint cluster")
        ax.set_ylabel("mean weight")
        ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    return fig


def integration_embedding(
    adata: Any,
    color: str | None = None,
    key: str = "scai_joint",
    *,
    basis: str | None = None,
    ax: Any = None,
    s: float | None = None,
    cmap: str = "viridis",
):
    """The joint UMAP (``obsm[f"X_{key}_umap"]``, computed with :func:`joint_umap` if absent)
    coloured by an obs column: categorical with ``uns[f"{color}_colors"]``, else a colour scale.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    from napari_scai._colors import ensure_colors

    basis = basis or f"X_{key}_umap"
    if basis not in adata.obsm and basis == f"X_{key}_umap":
        joint_umap(adata, basis=f"X_{key}")
    xy, _, _ = _coords(adata, basis, key)
    color = color or (f"{key}_cluster" if f"{key}_cluster" in adata.obs else None)
    fig = ax.figure if ax is not None else plt.figure(figsize=(6.5, 5))
    ax = ax or fig.add_subplot(111)
    size = _scatter_ax(ax, xy, False, s)
    if color is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=size, color="#4f6d7a", linewidths=0)
    else:
        if color not in adata.obs:
            raise KeyError(f"no obs['{color}'] to colour by. Fix: pass color= an obs column")
        col = adata.obs[color]
        numeric = col.dtype.kind in "fiu" and not hasattr(col, "cat")
        if numeric:
            sc = ax.scatter(
                xy[:, 0], xy[:, 1], c=col.to_numpy(float), s=size, cmap=cmap, linewidths=0
            )
            fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.02)
        else:
            colors = ensure_colors(adata, color)
            codes = adata.obs[color].cat.codes.to_numpy()
            palette = np.array(colors + ["#bfbfbf"], dtype=object)
            ax.scatter(xy[:, 0], xy[:, 1], c=list(palette[codes]), s=size, linewidths=0)
            from matplotlib.lines import Line2D

            handles = [
                Line2D([], [], marker="o", ls="", color=c, label=str(lab))
                for lab, c in zip(adata.obs[color].cat.categories, colors, strict=True)
            ]
            ax.legend(handles=handles, title=color, loc="center left", bbox_to_anchor=(1, 0.5))
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_title(color or basis)
    fig.tight_layout()
    return fig
