"""Results on the tissue: any key, spatial domains, their confidence, hand annotations."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_scai.io._common import COORDINATE_SYSTEM
from napari_scai.pl import _base

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["annotations", "confidence", "domains", "spatial"]

PathLike = str | os.PathLike[str]


def spatial(
    data: Any,
    *,
    color: str,
    table: str = "rna",
    image: str | bool | None = True,
    coordinate_system: str = COORDINATE_SYSTEM,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    alpha: float = 0.9,
    missing_alpha: float | None = None,
    size_factor: float = 1.0,
    groups: list[str] | None = None,
    legend: bool = True,
    scale_bar: bool = True,
    scale_bar_um: float | None = None,
    title: str | None = None,
    ax: Axes | None = None,
    save: PathLike | None = None,
) -> Axes:
    """Colour the spots/cells by any key, over the H&E, at their true size.

    Parameters
    ----------
    data
        A SpatialData (or an AnnData with ``obsm['spatial']``).
    color
        An ``obs`` column, a feature (var name or ``var['gene_symbol']``) or ``"obsm_key:j"``,
        exactly as napari-scai's Tissue overlay dock takes it. Categorical colours come from
        ``uns[f"{color}_colors"]`` (created there if missing, as napari-scai's viewer does),
        so the figure and the napari layer show the same colours.
    table
        Table name for a SpatialData.
    image
        ``True`` (the best image), an image name, or ``False`` for none.
    coordinate_system
        SpatialData coordinate system to draw in.
    cmap, vmin, vmax
        Colormap and limits for continuous values (default limits: min and max).
    alpha
        Spot opacity over the image.
    missing_alpha
        Opacity of the spots without a value (default: ``alpha``); lower it to see the
        tissue under unlabelled spots.
    size_factor
        Multiplies the true spot diameter (1 = true size).
    groups
        Categorical only: show these classes, the others in the missing colour.
    legend
        Draw the legend (categories, with counts) or colorbar.
    scale_bar, scale_bar_um
        Draw a scale bar in µm (Visium: the 100 µm spot lattice, as the viewer); its length
        (default: a round number near a fifth of the width).
    title
        Axes title (default: ``color``).
    ax
        Draw into this Axes instead of a new figure.
    save
        Save the figure to this path (format from the suffix).

    Returns
    -------
    matplotlib.axes.Axes
        The Axes drawn on (its figure: ``ax.figure``).
    """
    from napari_scai.viewer._layers import color_style, resolve_values

    t = _base.tissue(data, table=table, image=image, coordinate_system=coordinate_system)
    _, kind = resolve_values(t.adata, color)
    hidden = None
    if groups is not None and kind == "categorical":
        cats = [str(c) for c in t.adata.obs[color].astype("category").cat.categories]
        unknown = sorted(set(map(str, groups)) - set(cats))
        if unknown:
            raise KeyError(f"groups {unknown} are not classes of {color!r}: {cats}.")
        hidden = set(cats) - set(map(str, groups))
    limits = None if vmin is None and vmax is None else (vmin, vmax)
    if limits is not None and None in limits:
        vals, _ = resolve_values(t.adata, color)
        finite = np.asarray(vals, float)[np.isfinite(np.asarray(vals, float))]
        limits = (
            float(finite.min()) if vmin is None else vmin,
            float(finite.max()) if vmax is None else vmax,
        )
    style = color_style(t.adata, color, t.rows, limits=limits, colormap=cmap, hidden=hidden)
    rgba = np.array(style.colors, dtype=float)
    if hidden:  # hidden classes: drawn in the missing colour rather than not at all
        from napari_scai._colors import MISSING_COLOR, hex_to_rgba

        rgba[rgba[:, 3] == 0] = hex_to_rgba([MISSING_COLOR])[0]
    rgba[:, 3] = np.minimum(rgba[:, 3], alpha)
    if missing_alpha is not None:
        missing = np.array([v is None for v in style.values], dtype=bool)
        if style.kind != "categorical":
            missing = ~np.isfinite(np.asarray(style.values, dtype=float))
        rgba[missing, 3] = missing_alpha
    ax = _base.new_axes(ax)
    _base.draw_image(ax, t)
    _base.draw_spots(ax, t, rgba, size_factor=size_factor)
    _base.frame(ax, t)
    if scale_bar:
        _base.add_scale_bar(ax, t, length_um=scale_bar_um)
    if legend:
        if style.kind == "categorical":
            _base.add_legend(ax, style)
        else:
            _base.add_colorbar(ax, style)
    ax.set_title(title if title is not None else color, fontsize=10)
    _base.finish(ax.figure, save)
    return ax


def domains(
    data: Any,
    *,
    key: str = "scai_domain",
    table: str = "rna",
    ax: Axes | None = None,
    save: PathLike | None = None,
    **kwargs: Any,
) -> Axes:
    """Spatial domains on the tissue (``obs[key]``, colours ``uns[f"{key}_colors"]``).

    Parameters
    ----------
    data
        A SpatialData (or an AnnData with ``obsm['spatial']``).
    key
        The domains column written by :func:`napari_scai.tl.spatial_domains`.
    table
        Table name for a SpatialData.
    ax, save
        As in :func:`spatial`.
    **kwargs
        Passed to :func:`spatial` (``image``, ``alpha``, ``groups``, ``title`` ...).

    Returns
    -------
    matplotlib.axes.Axes
    """
    adata = _base._get_table(data, table)
    if key not in adata.obs.columns:
        raise KeyError(
            f"obs has no {key!r}. Fix: run napari_scai.tl.spatial_domains(sdata, ...) first, "
            f"or pass key=<column> (obs has {list(adata.obs.columns)})."
        )
    kwargs.setdefault("title", f"Spatial domains ({key})")
    return spatial(data, color=key, table=table, ax=ax, save=save, **kwargs)


def confidence(
    data: Any,
    *,
    key: str = "scai_domain_confidence",
    table: str = "rna",
    cmap: str = "magma",
    ax: Axes | None = None,
    save: PathLike | None = None,
    **kwargs: Any,
) -> Axes:
    """Per-spot confidence of the domains (0-1) on the tissue, with a colorbar.

    Parameters
    ----------
    data
        A SpatialData (or an AnnData with ``obsm['spatial']``).
    key
        The confidence column written by :func:`napari_scai.tl.spatial_domains`.
    table
        Table name for a SpatialData.
    cmap
        Colormap (limits fixed to 0-1 unless ``vmin``/``vmax`` are given).
    ax, save
        As in :func:`spatial`.
    **kwargs
        Passed to :func:`spatial`.

    Returns
    -------
    matplotlib.axes.Axes
    """
    adata = _base._get_table(data, table)
    if key not in adata.obs.columns:
        raise KeyError(
            f"obs has no {key!r}. Fix: run napari_scai.tl.spatial_domains(sdata, ...) first, "
            "or pass key=<column>."
        )
    kwargs.setdefault("vmin", 0.0)
    kwargs.setdefault("vmax", 1.0)
    kwargs.setdefault("title", "Domain confidence")
    return spatial(data, color=key, table=table, cmap=cmap, ax=ax, save=save, **kwargs)


def annotations(
    data: Any,
    *,
    key: str = "scai_annotation",
    table: str = "rna",
    shapes: str | None = "scai_annotations",
    outline_width: float = 1.5,
    ax: Axes | None = None,
    save: PathLike | None = None,
    **kwargs: Any,
) -> Axes:
    """Hand annotations: the labelled spots and, when saved, the drawn polygons' outlines.

    Parameters
    ----------
    data
        A SpatialData (or an AnnData with ``obsm['spatial']``).
    key
        The annotation column (the Annotate dock and :func:`napari_scai.tl.annotate_from_shapes`
        write ``scai_annotation``).
    table
        Table name for a SpatialData.
    shapes
        Shapes element holding the polygons (``class``/``color`` columns, as the Annotate dock
        saves them); drawn as outlines in their class colour when present. ``None``: none.
    outline_width
        Line width of the outlines (points).
    ax, save
        As in :func:`spatial`.
    **kwargs
        Passed to :func:`spatial`.

    Returns
    -------
    matplotlib.axes.Axes
    """
    adata = _base._get_table(data, table)
    if key not in adata.obs.columns:
        raise KeyError(
            f"obs has no {key!r}. Fix: annotate first (napari_scai.tl.annotate_from_shapes, "
            "or the Annotate dock), or pass key=<column>."
        )
    kwargs.setdefault("title", f"Annotations ({key})")
    kwargs.setdefault("missing_alpha", 0.25)
    ax = spatial(data, color=key, table=table, ax=ax, save=None, **kwargs)
    element = getattr(data, "shapes", {}).get(shapes) if shapes else None
    if element is not None and len(element):
        _draw_outlines(ax, data, shapes, adata, key, outline_width, kwargs)
    _base.finish(ax.figure, save)
    return ax


def _draw_outlines(ax, sdata, name, adata, key, width, kwargs) -> None:
    from matplotlib.collections import LineCollection

    from napari_scai._colors import ensure_colors
    from napari_scai.viewer._layers import _polygon_rings, affine_yx

    gdf = sdata.shapes[name]
    m = affine_yx(gdf, kwargs.get("coordinate_system", COORDINATE_SYSTEM))
    rings = [
        (np.asarray(r, float)[:, ::-1] @ m[:2, :2].T + m[:2, 2])[:, ::-1]
        for r in _polygon_rings(gdf.geometry)
    ]
    cats = [str(c) for c in adata.obs[key].cat.categories]
    colour_of = dict(zip(cats, ensure_colors(adata, key), strict=True))
    classes = gdf["class"].astype(str) if "class" in gdf.columns else None
    colours = [
        colour_of.get(c, gdf["color"].iloc[i] if "color" in gdf.columns else "black")
        for i, c in enumerate(classes if classes is not None else [""] * len(gdf))
    ]
    closed = [np.vstack([r, r[:1]]) for r in rings]
    ax.add_collection(LineCollection(closed, colors=colours, linewidths=width, zorder=3))
