"""Building blocks of every tissue figure in :mod:`napari_scai.pl`.

A figure module (``_tissue.py``, ``_compare.py``, later ``_communication.py``,
``_integration.py``) draws through these helpers, so every figure puts the H&E at the same
place, spots at their true size, the same colours as napari (``color_style``, which reads and
completes ``uns[f"{key}_colors"]``) and a scale bar in µm:

- :func:`tissue` resolves a SpatialData/AnnData into a :class:`Tissue` (table, spot centres
  and radii in the chosen coordinate system, background image, µm per unit);
- :func:`draw_image`, :func:`draw_spots`, :func:`add_scale_bar`, :func:`add_legend`,
  :func:`add_colorbar` draw on an Axes;
- :func:`new_axes` and :func:`finish` open a figure and save it (``save=``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_scai._colors import MISSING_COLOR
from napari_scai._scale import microns_per_pixel
from napari_scai.io._common import COORDINATE_SYSTEM

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from napari_scai.viewer._layers import ColorStyle


@dataclass
class Tissue:
    """What a tissue figure needs, resolved once.

    Attributes
    ----------
    sdata
        The SpatialData (``None`` when an AnnData was given).
    adata
        The table.
    rows
        Table row for each drawn object (``-1``: object not in the table).
    xy
        (n, 2) centres (x, y) in the coordinate system's units.
    radius
        (n,) radii in the same units (circles), or ``None`` for polygons.
    polygons
        (x, y) exterior rings for polygon shapes, else ``None``.
    image
        Name of the background image element, or ``None``.
    um_per_unit
        Microns per coordinate unit, or ``None`` when unknown (no scale bar then).
    """

    sdata: Any
    adata: Any
    rows: np.ndarray
    xy: np.ndarray
    radius: np.ndarray | None
    polygons: list[np.ndarray] | None
    image: str | None
    um_per_unit: float | None
    coordinate_system: str = COORDINATE_SYSTEM


def _get_table(data: Any, table: str):
    from napari_scai.tl._annotate import _get_table as get

    return get(data, table)


def microns_per_unit(adata: Any, unit_scale: float = 1.0) -> float | None:
    """Microns per coordinate unit, or ``None`` when unknown.

    ``uns['scai_um_per_px']`` (set by a reader or by hand) wins; otherwise the Visium lattice
    (:func:`napari_scai._scale.microns_per_pixel`, the viewer's scale bar uses the same).
    """
    if "scai_um_per_px" in adata.uns:
        return float(adata.uns["scai_um_per_px"]) / unit_scale
    um = microns_per_pixel(adata)
    return None if um is None else um / unit_scale


def tissue(
    data: Any,
    *,
    table: str = "rna",
    image: str | None | bool = True,
    coordinate_system: str = COORDINATE_SYSTEM,
) -> Tissue:
    """Resolve what to draw: the table, its spots/cells (true size) and the background image.

    Parameters
    ----------
    data
        A SpatialData (spots from the shapes element ``tables[table]`` annotates) or an
        AnnData with ``obsm['spatial']`` (spot diameter from its scalefactors, else half the
        median neighbour distance).
    table
        Table name for a SpatialData.
    image
        ``True``: the best image in ``coordinate_system`` (full > hires > lowres); a name;
        ``False``/``None``: none.
    coordinate_system
        The SpatialData coordinate system to draw in.
    """
    from anndata import AnnData

    adata = _get_table(data, table)
    if isinstance(data, AnnData):
        if "spatial" not in adata.obsm:
            raise KeyError(
                "The AnnData has no obsm['spatial'], so there is nothing to place on the "
                "tissue. Fix: pass the SpatialData from napari_scai.io.read instead."
            )
        xy = np.asarray(adata.obsm["spatial"], dtype=float)[:, :2]
        um = microns_per_unit(adata)
        spatial = adata.uns.get("spatial", {})
        diam = next(
            (
                float(lib["scalefactors"]["spot_diameter_fullres"])
                for lib in spatial.values()
                if isinstance(lib, dict)
                and lib.get("scalefactors", {}).get("spot_diameter_fullres")
            ),
            None,
        )
        if diam is None:
            from scipy.spatial import cKDTree

            d, _ = cKDTree(xy).query(xy[: min(len(xy), 2000)], k=2)
            diam = float(np.median(d[:, 1]))
        n = adata.n_obs
        return Tissue(None, adata, np.arange(n), xy, np.full(n, diam / 2), None, None, um)

    from napari_scai.viewer._layers import (
        _polygon_rings,
        affine_yx,
        circle_centres,
        default_image,
        table_rows_for_shapes,
    )

    attrs = adata.uns.get("spatialdata_attrs", {})
    regions = attrs.get("region")
    regions = [regions] if isinstance(regions, str) else list(regions or [])
    region = next((r for r in regions if r in data.shapes), None)
    if region is None:
        raise KeyError(
            f"Table {table!r} annotates {regions or 'no element'}, which is not a shapes "
            f"element of this SpatialData (shapes: {list(data.shapes.keys())}). Fix: pass "
            "table=<the table of the spots/cells>."
        )
    shapes = data.shapes[region]
    rows = table_rows_for_shapes(data, region, table)
    matrix = affine_yx(shapes, coordinate_system)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:2, :2]))))
    polygons = None
    if "radius" in shapes.columns:
        yx, radius = circle_centres(data, region, coordinate_system)
        xy = yx[:, ::-1]
    else:
        radius = None
        rings = _polygon_rings(shapes.geometry)
        polygons = [  # (x, y) intrinsic -> (y, x) -> world -> (x, y)
            (np.asarray(ring, float)[:, ::-1] @ matrix[:2, :2].T + matrix[:2, 2])[:, ::-1]
            for ring in rings
        ]
        xy = np.array([p.mean(axis=0) for p in polygons]) if polygons else np.zeros((0, 2))
    if image is True:
        best = default_image(data)
        image_name = best if best is not None else None
    elif image:
        if image not in data.images:
            raise KeyError(
                f"No image {image!r}; the images are {list(data.images.keys())}. "
                "Fix: pass image=<name>, or image=False for none."
            )
        image_name = str(image)
    else:
        image_name = None
    um = microns_per_unit(adata, unit_scale=scale)
    return Tissue(data, adata, rows, xy, radius, polygons, image_name, um, coordinate_system)


def _image_rgb(element) -> np.ndarray:
    """(y, x, c) array of an image element (finest level of a pyramid), float in [0, 1]."""
    from napari_scai.viewer._layers import _pyramid_levels

    if len(getattr(element, "children", {}) or {}):
        element = _pyramid_levels(element)[0]
    arr = np.asarray(element.data)
    if arr.ndim == 3:
        arr = np.moveaxis(arr, 0, -1)
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
        elif arr.shape[-1] > 4:
            arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return arr
    arr = arr.astype(float)
    lo, hi = np.nanpercentile(arr, [0.5, 99.5])
    return np.clip((arr - lo) / (hi - lo if hi > lo else 1.0), 0, 1)


def draw_image(ax: Axes, t: Tissue, *, alpha: float = 1.0) -> None:
    """Draw the background image at its place in the coordinate system (no-op without one)."""
    if t.image is None or t.sdata is None:
        return
    from napari_scai.viewer._layers import affine_yx

    element = t.sdata.images[t.image]
    m = affine_yx(element, t.coordinate_system)  # (y, x) intrinsic -> world
    if not np.allclose(m[:2, :2], np.diag(np.diag(m[:2, :2]))):
        raise ValueError(
            f"Image {t.image!r} is rotated or sheared in {t.coordinate_system!r}; pl draws "
            "axis-aligned images only. Fix: pass image=False."
        )
    rgb = _image_rgb(element)
    h, w = rgb.shape[:2]
    sy, sx, ty, tx = m[0, 0], m[1, 1], m[0, 2], m[1, 2]
    extent = (tx - 0.5 * sx, tx + (w - 0.5) * sx, ty + (h - 0.5) * sy, ty - 0.5 * sy)
    ax.imshow(rgb, extent=extent, alpha=alpha, cmap="gray" if rgb.ndim == 2 else None)


def draw_spots(
    ax: Axes,
    t: Tissue,
    rgba: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    size_factor: float = 1.0,
    edgecolor: Any = "none",
    linewidth: float = 0.0,
    zorder: float = 2.0,
) -> Any:
    """Draw the spots/cells at their true size (circles in data units) in colours ``rgba``."""
    from matplotlib.collections import EllipseCollection, PolyCollection

    keep = np.ones(len(t.xy), dtype=bool) if mask is None else np.asarray(mask, bool)
    if t.radius is not None:
        d = 2 * t.radius[keep] * size_factor
        coll = EllipseCollection(
            d,
            d,
            np.zeros_like(d),
            units="xy",
            offsets=t.xy[keep],
            offset_transform=ax.transData,
            facecolors=rgba[keep],
            edgecolors=edgecolor,
            linewidths=linewidth,
            zorder=zorder,
        )
    else:
        polys = [p for p, k in zip(t.polygons or [], keep, strict=True) if k]
        coll = PolyCollection(
            polys, facecolors=rgba[keep], edgecolors=edgecolor, linewidths=linewidth
        )
        coll.set_zorder(zorder)
    ax.add_collection(coll)
    return coll


def frame(ax: Axes, t: Tissue, *, pad: float = 0.03, crop_to_spots: bool = True) -> None:
    """Limits around the spots (y down, as in napari), equal aspect, no ticks."""
    if crop_to_spots and len(t.xy):
        r = float(np.max(t.radius)) if t.radius is not None and len(t.radius) else 0.0
        lo, hi = t.xy.min(axis=0) - r, t.xy.max(axis=0) + r
        span = hi - lo
        lo, hi = lo - pad * span, hi + pad * span
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(hi[1], lo[1])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)


def nice_length(target: float) -> float:
    """1, 2 or 5 × 10^k not above ``target``."""
    if target <= 0:
        return 0.0
    k = np.floor(np.log10(target))
    for m in (5, 2, 1):
        if m * 10**k <= target:
            return float(m * 10**k)
    return float(10**k)


def add_scale_bar(
    ax: Axes, t: Tissue, *, length_um: float | None = None, color: str = "black"
) -> float | None:
    """A scale bar in µm at the lower left; returns its length (``None`` when µm unknown)."""
    if t.um_per_unit is None:
        return None
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    x0, x1 = ax.get_xlim()
    width_um = abs(x1 - x0) * t.um_per_unit
    length_um = length_um or nice_length(width_um / 5)
    label = f"{length_um / 1000:g} mm" if length_um >= 1000 else f"{length_um:g} µm"
    bar = AnchoredSizeBar(
        ax.transData,
        length_um / t.um_per_unit,
        label,
        "lower left",
        pad=0.4,
        color=color,
        frameon=False,
        size_vertical=abs(ax.get_ylim()[0] - ax.get_ylim()[1]) / 150,
        fontproperties={"size": 8},
    )
    ax.add_artist(bar)
    return length_um


def add_legend(
    ax: Axes, style: ColorStyle, *, title: str | None = None, missing: bool = True
) -> None:
    """Legend of a categorical style: one patch per class (with its count), outside right."""
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor=c, edgecolor="none", label=f"{name} ({n})")
        for name, c, n in zip(style.categories, style.category_colors, style.counts, strict=True)
        if name not in style.hidden
    ]
    n_missing = int(sum(v is None for v in style.values))
    if missing and n_missing:
        handles.append(Patch(facecolor=MISSING_COLOR, label=f"no label ({n_missing})"))
    ax.legend(
        handles=handles,
        title=title if title is not None else style.key,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
        fontsize=8,
        title_fontsize=9,
    )


def add_colorbar(ax: Axes, style: ColorStyle, *, label: str | None = None) -> Any:
    """Colorbar of a continuous style, with its limits."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    lo, hi = style.limits or (0.0, 1.0)
    mappable = ScalarMappable(norm=Normalize(lo, hi), cmap=colormaps[style.colormap])
    bar = ax.figure.colorbar(mappable, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label(label if label is not None else style.key, fontsize=9)
    return bar


def new_axes(ax: Axes | None, figsize: tuple[float, float] = (6.0, 5.0)) -> Axes:
    """``ax``, or the Axes of a new pyplot Figure (so that Jupyter shows it, as scanpy's do)."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=figsize, layout="constrained")
    return fig.add_subplot()


def finish(fig: Figure, save: str | os.PathLike[str] | None, *, dpi: int = 150) -> None:
    """Save ``fig`` to ``save`` (format from the suffix; folders created) when given."""
    if save is None:
        return
    path = Path(save)
    if not path.suffix:
        raise ValueError(f"save={str(save)!r} has no file suffix. Fix: use e.g. 'domains.png'.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
