"""SpatialData -> napari layer data (no compute, no model code).

Every function here returns napari ``LayerDataTuple``s ``(data, kwargs, layer_type)``, so the
npe2 reader, the sample-data contribution, the CLI and the widgets all draw the same thing.
Coordinates: napari's world is the chosen SpatialData coordinate system, axes (y, x).
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from napari_scai._colors import MISSING_COLOR, ensure_colors, hex_to_rgba
from napari_scai.io._common import COORDINATE_SYSTEM, INSTANCE_KEY, REGION_KEY

#: Above this many objects, cells are drawn as a rasterised Labels layer, not one point each.
RASTER_THRESHOLD = 100_000


@dataclass
class LayerSource:
    """Where a layer came from: stored in ``layer.metadata['scai']``."""

    element: str
    table: str | None = None
    color_key: str | None = None
    coordinate_system: str = COORDINATE_SYSTEM
    extra: dict[str, Any] = field(default_factory=dict)


def _metadata(sdata, source: LayerSource, adata=None) -> dict[str, Any]:
    # Keys mirror napari-spatialdata's ("sdata", "name", "adata", "region_key", "instance_key",
    # "table_names", "_current_cs") so both plugins can work on the same layers.
    return {
        "sdata": sdata,
        "name": source.element,
        "adata": adata,
        "region_key": REGION_KEY if adata is not None else None,
        "instance_key": INSTANCE_KEY if adata is not None else None,
        "table_names": [source.table] if source.table else [],
        "_current_cs": source.coordinate_system,
        "scai": source,
    }


def affine_yx(element, coordinate_system: str) -> np.ndarray:
    """3×3 affine (y, x) from an element's intrinsic axes to ``coordinate_system``."""
    from spatialdata.transformations import get_transformation

    transforms = get_transformation(element, get_all=True)
    if coordinate_system not in transforms:
        raise KeyError(
            f"element is not in coordinate system '{coordinate_system}' (it has {sorted(transforms)}). "
            "Fix: pick one of those coordinate systems"
        )
    return np.asarray(
        transforms[coordinate_system].to_affine_matrix(
            input_axes=("y", "x"), output_axes=("y", "x")
        )
    )


def _transform_kwargs(matrix: np.ndarray) -> dict[str, Any]:
    """napari kwargs for an affine: ``scale``/``translate`` when axis-aligned (faster), else ``affine``."""
    lin = matrix[:2, :2]
    if np.allclose(lin, np.diag(np.diag(lin))):
        return {"scale": tuple(np.diag(lin)), "translate": tuple(matrix[:2, 2])}
    return {"affine": matrix}


def _pyramid_levels(element) -> list:
    """The DataArrays of a multiscale DataTree, finest first (``scale0``, ``scale1``, ...)."""
    levels = []
    for key in sorted(
        element.children, key=lambda k: int(k.removeprefix("scale")) if k.startswith("scale") else 0
    ):
        node = element[key]
        names = list(node.data_vars)
        levels.append(node["image"] if "image" in names else node[names[0]])
    return levels


def image_layer(sdata, name: str, coordinate_system: str = COORDINATE_SYSTEM, visible: bool = True):
    """Layer tuple for an image element (multiscale when the element is a pyramid DataTree).

    RGB(A) uint8 images are drawn as one RGB layer; other multi-channel images as one layer
    per channel (``channel_axis``). The element's transform to ``coordinate_system`` becomes
    the layer's ``scale``/``translate`` (or ``affine`` when it rotates or shears).
    """
    element = sdata.images[name]
    if len(getattr(element, "children", {}) or {}):  # DataTree pyramid
        levels = _pyramid_levels(element)
        first = levels[0]
        data = [lvl.data for lvl in levels]
        multiscale = len(levels) > 1
        if not multiscale:
            data = data[0]
    else:
        first = element
        data = element.data
        multiscale = False
    channels = list(first.coords["c"].values) if "c" in first.dims else []
    rgb = len(channels) in (3, 4) and np.dtype(first.dtype) == np.uint8
    if rgb:
        data = [d.transpose(1, 2, 0) for d in data] if multiscale else data.transpose(1, 2, 0)
    elif len(channels) == 1:
        data = [d[0] for d in data] if multiscale else data[0]
    source = LayerSource(element=name, coordinate_system=coordinate_system)
    kwargs = {
        "name": name,
        "rgb": rgb,
        "multiscale": multiscale,
        "visible": visible,
        "metadata": _metadata(sdata, source),
        **_transform_kwargs(affine_yx(element, coordinate_system)),
    }
    if not rgb and len(channels) > 1:
        kwargs["channel_axis"] = 0
        kwargs["name"] = [f"{name} [{c}]" for c in channels]
        kwargs["metadata"] = [_metadata(sdata, source) for _ in channels]
    return data, kwargs, "image"


def table_for_region(sdata, region: str) -> str | None:
    """Name of the first table annotating ``region`` (``rna`` preferred)."""
    names = sorted(sdata.tables, key=lambda t: (t != "rna", t))
    for t in names:
        attrs = sdata.tables[t].uns.get("spatialdata_attrs", {})
        regions = attrs.get("region")
        regions = [regions] if isinstance(regions, str) else list(regions or [])
        if region in regions:
            return t
    return None


def table_rows_for_shapes(sdata, shapes_name: str, table: str) -> np.ndarray:
    """Row index into the table for each shape, in the shapes' order (-1 where unannotated)."""
    adata = sdata.tables[table]
    shapes = sdata.shapes[shapes_name]
    mask = (adata.obs[REGION_KEY].astype(str) == shapes_name).to_numpy()
    rows = np.flatnonzero(mask)
    ids = adata.obs[INSTANCE_KEY].to_numpy()[rows]
    lookup = pd.Series(rows, index=ids)
    return lookup.reindex(shapes.index.to_numpy()).fillna(-1).astype(int).to_numpy()


def _table_link(sdata, name: str, n: int, index: pd.Index, table: str | None):
    """(table name, AnnData or None, table row per object or None, features with ``id``)."""
    table = table or table_for_region(sdata, name)
    adata = sdata.tables[table] if table else None
    features = pd.DataFrame({"id": index.astype(str)})
    rows = None
    if adata is not None:
        rows = table_rows_for_shapes(sdata, name, table)
        names = adata.obs_names.to_numpy()
        features["id"] = np.where(rows >= 0, names[np.maximum(rows, 0)], features["id"])
    return table, adata, rows, features


def _to_world(yx: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return yx @ matrix[:2, :2].T + matrix[:2, 2]


def circle_centres(
    sdata, name: str, coordinate_system: str = COORDINATE_SYSTEM
) -> tuple[np.ndarray, np.ndarray]:
    """World (y, x) centres and radii (world units) of a circles element in ``coordinate_system``."""
    shapes = sdata.shapes[name]
    matrix = affine_yx(shapes, coordinate_system)
    yx = np.column_stack([shapes.geometry.y.to_numpy(), shapes.geometry.x.to_numpy()])
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:2, :2]))))
    return _to_world(yx, matrix), shapes["radius"].to_numpy(dtype=float) * scale


def spots_layer(
    sdata,
    name: str,
    *,
    table: str | None = None,
    color_by: str | None = None,
    coordinate_system: str = COORDINATE_SYSTEM,
    opacity: float = 0.9,
):
    """Layer tuple drawing a circles shapes element as napari Points of the true diameter.

    Points (one vertex each, ``size`` = diameter in world units) draw and recolour far
    faster than Shapes ellipses and keep the exact radius.
    """
    shapes = sdata.shapes[name]
    if "radius" not in shapes.columns:
        raise ValueError(
            f"shapes element '{name}' has no 'radius' column: it holds polygons, not circles"
        )
    world, radius = circle_centres(sdata, name, coordinate_system)
    table, adata, rows, features = _table_link(sdata, name, len(shapes), shapes.index, table)
    source = LayerSource(
        element=name, table=table, color_key=None, coordinate_system=coordinate_system
    )
    source.extra["rows"] = rows
    kwargs: dict[str, Any] = {
        "name": name,
        "size": 2 * radius,
        "border_width": 0,
        "opacity": opacity,
        "features": features,
        "face_color": MISSING_COLOR,
        "metadata": _metadata(sdata, source, adata),
    }
    if color_by is not None and adata is not None:
        _initial_colors(kwargs, source, adata, color_by, rows)
    return world, kwargs, "points"


def _initial_colors(kwargs: dict[str, Any], source: LayerSource, adata, key: str, rows) -> None:
    """Colour a new points/shapes layer by ``key``: face colours, hover value, remembered style."""
    style = color_style(adata, key, rows)
    source.color_key = key
    source.extra["style"] = style
    kwargs["features"] = kwargs["features"].assign(**{key: style.values})
    kwargs["face_color"] = style.colors


def _polygon_rings(geometry) -> list[np.ndarray]:
    """Exterior ring (x, y) of each polygon; a MultiPolygon gives its largest part."""
    import shapely

    rings = []
    for geom in geometry:
        if geom is None or geom.is_empty:
            rings.append(np.zeros((0, 2)))
            continue
        if geom.geom_type == "MultiPolygon":
            geom = max(geom.geoms, key=lambda g: g.area)
        rings.append(shapely.get_coordinates(geom.exterior)[:-1])
    return rings


def polygons_layer(
    sdata,
    name: str,
    *,
    table: str | None = None,
    color_by: str | None = None,
    coordinate_system: str = COORDINATE_SYSTEM,
    opacity: float = 0.7,
):
    """Layer tuple drawing a polygons shapes element as a napari Shapes layer (one polygon per row)."""
    shapes = sdata.shapes[name]
    matrix = affine_yx(shapes, coordinate_system)
    rings = _polygon_rings(shapes.geometry)
    keep = np.array([len(r) >= 3 for r in rings])
    data = [_to_world(r[:, ::-1], matrix) for r, k in zip(rings, keep, strict=True) if k]
    table, adata, rows, features = _table_link(sdata, name, len(shapes), shapes.index, table)
    features = features[keep].reset_index(drop=True)
    rows = rows[keep] if rows is not None else None
    source = LayerSource(element=name, table=table, coordinate_system=coordinate_system)
    source.extra["rows"] = rows
    kwargs: dict[str, Any] = {
        "name": name,
        "shape_type": "polygon",
        "edge_width": 0,
        "opacity": opacity,
        "features": features,
        "face_color": MISSING_COLOR,
        "metadata": _metadata(sdata, source, adata),
    }
    if color_by is not None and adata is not None:
        _initial_colors(kwargs, source, adata, color_by, rows)
    return data, kwargs, "shapes"


# --- large data: cells rasterised into a Labels layer ------------------------------------------


def rasterize_discs(
    yx: np.ndarray, radius: np.ndarray, *, max_side: int = 4096, max_radius_px: int = 24
) -> tuple[np.ndarray, float, np.ndarray]:
    """Paint each object as a disc of its radius into a label image (value = row + 1).

    Parameters
    ----------
    yx
        (n, 2) world centres.
    radius
        (n,) radii in world units.
    max_side
        Longest side of the image in pixels; the pixel size follows from it.
    max_radius_px
        Discs wider than this many pixels are painted at this radius (coarser pixels would
        lose small cells; this only bounds the work for very large discs).

    Returns
    -------
    image
        ``uint32`` label image; 0 is background. Discs are painted far-to-near so every
        object keeps its centre pixel unless two centres share a pixel.
    pixel_size
        World units per pixel.
    origin
        World (y, x) of pixel (0, 0)'s centre.
    """
    yx = np.asarray(yx, dtype=float)
    radius = np.broadcast_to(np.asarray(radius, dtype=float), (len(yx),))
    if len(yx) == 0:
        return np.zeros((1, 1), np.uint32), 1.0, np.zeros(2)
    rmax = float(radius.max())
    lo = yx.min(axis=0) - rmax
    hi = yx.max(axis=0) + rmax
    extent = np.maximum(hi - lo, 1e-9)
    pixel = float(extent.max()) / max_side
    shape = np.ceil(extent / pixel).astype(int) + 1
    centre = np.round((yx - lo) / pixel).astype(np.int64)
    r_px = radius / pixel
    reach = int(min(np.ceil(r_px.max()), max_radius_px))
    dy, dx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    dist = np.hypot(dy, dx).ravel()
    order = np.argsort(-dist, kind="stable")
    image = np.zeros(tuple(shape), dtype=np.uint32)
    labels = np.arange(1, len(yx) + 1, dtype=np.uint32)
    r_cap = np.minimum(r_px, max_radius_px)
    for k in order:
        d, oy, ox = dist[k], dy.ravel()[k], dx.ravel()[k]
        sel = slice(None) if d == 0 else (r_cap >= d)
        rr = centre[sel, 0] + oy
        cc = centre[sel, 1] + ox
        ok = (rr >= 0) & (rr < shape[0]) & (cc >= 0) & (cc < shape[1])
        image[rr[ok], cc[ok]] = labels[sel][ok]
    return image, pixel, lo


def raster_colors(style: ColorStyle, n_bins: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """Per-object colour bin (1-based) and the RGBA of each bin (row 0 = background).

    Categorical: one bin per class (hidden classes transparent) plus one for missing values.
    Continuous: ``n_bins`` steps of the colormap between the limits plus one for missing.
    """
    from matplotlib import colormaps

    missing = hex_to_rgba([MISSING_COLOR])[0]
    if style.kind == "categorical":
        palette = hex_to_rgba(style.category_colors) if style.categories else np.zeros((0, 4))
        for i, cat in enumerate(style.categories):
            if cat in style.hidden:
                palette[i, 3] = 0.0
        lookup = {c: i for i, c in enumerate(style.categories)}
        codes = pd.Series(style.values).map(lookup).fillna(len(palette)).to_numpy(dtype=np.int64)
        table = np.vstack([np.zeros((1, 4)), palette, missing[None]])
        return codes + 1, table
    lo, hi = style.limits
    vals = np.asarray(style.values, dtype=float)
    scaled = np.clip((vals - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    bins = np.minimum((np.nan_to_num(scaled) * n_bins).astype(np.int64), n_bins - 1) + 1
    bins[~np.isfinite(vals)] = n_bins + 1
    steps = colormaps[style.colormap]((np.arange(n_bins) + 0.5) / n_bins)
    table = np.vstack([np.zeros((1, 4)), steps, missing[None]])
    return bins, table


def bin_features(style: ColorStyle, n_colors: int) -> pd.DataFrame:
    """Features of a rasterised layer, one row per label value (colour bin): shown on hover."""
    index = np.arange(n_colors)
    if style.kind == "categorical":
        names = ["", *style.categories, "missing"]
        return pd.DataFrame({"index": index, style.key: names[:n_colors]})
    lo, hi = style.limits
    n_bins = n_colors - 2
    centres = lo + (np.arange(n_bins) + 0.5) / n_bins * (hi - lo)
    return pd.DataFrame({"index": index, style.key: np.concatenate([[np.nan], centres, [np.nan]])})


def labels_colormap(table: np.ndarray):
    """A napari ``DirectLabelColormap`` mapping label ``i`` to ``table[i]`` (0 transparent)."""
    from napari.utils.colormaps import DirectLabelColormap

    color_dict: dict[int | None, np.ndarray] = {i: table[i] for i in range(1, len(table))}
    color_dict[0] = np.zeros(4)
    color_dict[None] = np.zeros(4)
    return DirectLabelColormap(color_dict=color_dict)


def display_image(row_image: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """Colour-bin image from the row image (``row + 1`` per pixel, 0 background)."""
    dtype = np.uint8 if bins.max(initial=0) < 255 else np.uint16
    lut = np.zeros(len(bins) + 1, dtype=dtype)
    lut[1:] = bins
    return lut[row_image]


def cells_labels_layer(
    sdata,
    name: str,
    *,
    table: str | None = None,
    color_by: str | None = None,
    coordinate_system: str = COORDINATE_SYSTEM,
    max_side: int = 4096,
    opacity: float = 0.9,
):
    """Layer tuple drawing a large circles element as a rasterised napari Labels layer.

    Each object is a disc of its radius in a label image of at most ``max_side`` pixels a
    side; the row image (``row + 1`` per pixel, shapes order) is kept in
    ``metadata['scai'].extra['row_image']``. The layer shows a colour-bin image (class, or
    one of 255 colormap steps) through a small ``DirectLabelColormap``: recolouring is one
    lookup over the pixels plus a colormap of at most 257 entries, however many cells there
    are; hiding or recolouring a class only swaps the colormap.
    """
    shapes = sdata.shapes[name]
    if "radius" in shapes.columns:
        world, radius = circle_centres(sdata, name, coordinate_system)
    else:  # polygons: discs of equal area at the centroids
        matrix = affine_yx(shapes, coordinate_system)
        cent = shapes.geometry.centroid
        world = _to_world(np.column_stack([cent.y.to_numpy(), cent.x.to_numpy()]), matrix)
        scale = float(np.sqrt(abs(np.linalg.det(matrix[:2, :2]))))
        radius = np.sqrt(shapes.geometry.area.to_numpy() / np.pi) * scale
    row_image, pixel, origin = rasterize_discs(world, radius, max_side=max_side)
    table, adata, rows, features = _table_link(sdata, name, len(shapes), shapes.index, table)
    source = LayerSource(element=name, table=table, coordinate_system=coordinate_system)
    source.extra.update(rows=rows, row_image=row_image, ids=features["id"].to_numpy(), raster=True)
    bins = np.full(len(shapes), 1, dtype=np.int64)
    colors = np.vstack([np.zeros((1, 4)), hex_to_rgba([MISSING_COLOR])])
    if color_by is not None and adata is not None:
        style = color_style(adata, color_by, rows)
        source.color_key = color_by
        source.extra["style"] = style
        bins, colors = raster_colors(style)
        source.extra["bins"] = bins
    kwargs: dict[str, Any] = {
        "name": name,
        "scale": (pixel, pixel),
        "translate": tuple(origin),
        "opacity": opacity,
        "colormap": labels_colormap(colors),
        "metadata": _metadata(sdata, source, adata),
        "features": bin_features(source.extra["style"], len(colors))
        if "style" in source.extra
        else None,
    }
    return display_image(row_image, bins), kwargs, "labels"


@dataclass
class ColorStyle:
    """How to colour objects by one key: per-object RGBA plus what a legend/colorbar needs."""

    key: str
    kind: str  # "categorical" or "continuous"
    values: np.ndarray  # per object (category labels or floats), NaN where missing
    colors: np.ndarray  # (n, 4) RGBA
    categories: list[str] = field(default_factory=list)
    category_colors: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    limits: tuple[float, float] | None = None
    colormap: str = "viridis"
    hidden: set[str] = field(default_factory=set)
    n_missing: int = 0  # objects without a value (drawn in the missing colour)
    value_mode: str = ""  # features: "log-normalised" or "raw"; "" for obs/obsm values


#: Gene colouring: ``"auto"`` (log-normalised when ``X`` holds counts, else raw), or one of
#: these, which the overlay dock names.
VALUE_MODES = {"lognorm": "log-normalised", "raw": "raw"}

_library_sizes: dict[int, tuple[Any, Any, np.ndarray]] = {}


def _feature_index(adata, key: str) -> int | None:
    if key in adata.var_names:
        return int(adata.var_names.get_loc(key))
    if "gene_symbol" in adata.var.columns:
        hit = np.flatnonzero(adata.var["gene_symbol"].astype(str).to_numpy() == key)
        if hit.size:
            return int(hit[0])
    return None


def looks_like_counts(X, n: int = 10_000) -> bool:
    """True when a sample of ``X``'s stored values are non-negative integers (raw counts)."""
    data = X.data if hasattr(X, "data") and not isinstance(X, np.ndarray) else np.asarray(X)
    sample = np.asarray(data).ravel()[:n]
    if sample.size == 0:
        return False
    return bool((sample >= 0).all() and np.allclose(sample, np.round(sample)))


def library_sizes(adata) -> np.ndarray:
    """Total of ``X`` per row (cached per AnnData and ``X`` object; nothing is written to it)."""
    X = adata.X
    hit = _library_sizes.get(id(adata))
    if hit is not None and hit[0]() is adata and hit[1]() is X:
        return hit[2]
    total = np.asarray(X.sum(axis=1), dtype=float).ravel()
    try:
        entry = (weakref.ref(adata), weakref.ref(X), total)
    except TypeError:  # X without weak references: no cache
        return total
    _library_sizes[id(adata)] = entry
    weakref.finalize(adata, _library_sizes.pop, id(adata), None)
    return total


def resolve_values(adata, key: str, *, values: str = "raw") -> tuple[np.ndarray, str]:
    """Values for ``key``: an obs column, a feature (var name or ``var['gene_symbol']``), or ``obsm`` column ``"X_umap:0"``.

    ``values`` applies to features: ``"raw"`` (``X`` as stored), ``"lognorm"``
    (``log1p(x / library size * 1e4)``, scanpy's ``normalize_total`` + ``log1p``) or
    ``"auto"`` (lognorm when ``X`` holds counts). Returns (values per row of ``adata``,
    ``"categorical"`` or ``"continuous"``).
    """
    if key in adata.obs.columns:
        col = adata.obs[key]
        if isinstance(col.dtype, pd.CategoricalDtype) or col.dtype == object or col.dtype == bool:
            return col.to_numpy(), "categorical"
        return col.to_numpy(dtype=float), "continuous"
    idx = _feature_index(adata, key)
    if idx is not None:
        col = adata.X[:, idx]
        col = col.toarray() if hasattr(col, "toarray") else np.asarray(col)
        col = np.asarray(col, dtype=float).ravel()
        if feature_mode(adata, values) == "lognorm":
            lib = library_sizes(adata)
            col = np.log1p(np.divide(col * 1e4, lib, out=np.zeros_like(col), where=lib > 0))
        return col, "continuous"
    if ":" in key:
        base, _, j = key.rpartition(":")
        if base in adata.obsm and j.isdigit():
            return np.asarray(adata.obsm[base])[:, int(j)].astype(float), "continuous"
    raise KeyError(
        f"'{key}' is not an obs column, a feature name, a gene symbol or an obsm column ('X_umap:0'). "
        "Fix: pick one from the widget's list"
    )


def feature_mode(adata, values: str) -> str:
    """``"lognorm"`` or ``"raw"`` for ``values`` in ``"auto"``, ``"lognorm"``, ``"raw"``."""
    if values not in ("auto", *VALUE_MODES):
        raise ValueError(f"values={values!r}; use 'auto', 'lognorm' or 'raw'")
    if values == "auto":
        return "lognorm" if looks_like_counts(adata.X) else "raw"
    return values


def is_feature(adata, key: str) -> bool:
    """True when ``key`` names a feature of ``adata`` (not an obs column)."""
    return key not in adata.obs.columns and _feature_index(adata, key) is not None


def percentile_limits(
    values: np.ndarray, q: tuple[float, float] = (1.0, 99.0)
) -> tuple[float, float]:
    """Colour limits at the ``q`` percentiles of the finite values (scanpy's ``vmax='p99'``).

    A few bright cells no longer squash everyone else to the bottom of the colormap. Where
    the percentiles coincide (a gene seen in under 1% of cells), the full range is used.
    """
    finite = values[np.isfinite(values)]
    if not finite.size:
        return (0.0, 1.0)
    lo, hi = (float(v) for v in np.percentile(finite, q))
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    return lo, hi


# obs columns that never make a useful default colouring
_NOT_LABELS = {
    "region", "instance_id", "in_tissue", "array_row", "array_col", "x", "y", "z",
    "pxl_row_in_fullres", "pxl_col_in_fullres", "x_centroid", "y_centroid", "x_position",
    "y_position", "centroid_x", "centroid_y",
}  # fmt: skip
_ID_NAME = re.compile(r"(^|_)(id|ids|barcode|barcodes|index|name)$|^cellid$|^cell_name$", re.I)
_PREFERRED_KEYS = ("scai_domain", "scai_annotation", "layer_manual")
_LABEL_HINTS = ("type", "class", "phenotype", "domain", "layer", "cluster", "label", "annot",
                "leiden", "louvain", "region", "tissue", "niche", "state")  # fmt: skip


def label_candidates(adata, max_classes: int = 50) -> list[tuple[str, int]]:
    """obs columns that work as a categorical colouring, with their number of classes.

    Categorical, text or boolean columns (and integer columns with few values) with 2 to
    ``max_classes`` classes that are not identifiers (a name like ``CellID`` / ``*_id`` or
    more classes than half the rows), coordinates or link columns (``in_tissue``,
    ``array_row``, ``X_centroid``...).
    """
    out = []
    n = max(adata.n_obs, 1)
    for c in adata.obs.columns:
        name = str(c)
        if name.lower() in _NOT_LABELS or _ID_NAME.search(name):
            continue
        col = adata.obs[c]
        text = isinstance(col.dtype, pd.CategoricalDtype) or col.dtype == object
        if not (text or col.dtype == bool or pd.api.types.is_integer_dtype(col.dtype)):
            continue
        k = int(col.nunique(dropna=True))
        if 2 <= k <= max_classes and (k <= 0.5 * n or k <= 2):
            out.append((name, k))
    return out


def default_color_key(adata) -> str | None:
    """The most useful categorical obs column to colour by, or None.

    Our own results and manual labels first (``scai_domain``, ``scai_annotation``,
    ``layer_manual``), then columns named like labels (``cell_type``, ``phenotype``,
    ``Cell_class``, ``*cluster*``, ``*layer*``...), fewest classes first, then any other
    candidate of :func:`label_candidates`, fewest classes first.
    """
    if adata is None:
        return None
    cands = label_candidates(adata)
    names = [c for c, _ in cands]
    for key in _PREFERRED_KEYS:
        if key in names:
            return key
    hinted = [(k, c) for c, k in cands if any(h in c.lower() for h in _LABEL_HINTS)]
    if hinted:
        return min(hinted)[1]
    return min(((k, c) for c, k in cands), default=(0, None))[1]


def color_style(
    adata,
    key: str,
    rows: np.ndarray | None = None,
    *,
    limits: tuple[float, float] | None = None,
    colormap: str = "viridis",
    hidden: set[str] | None = None,
    values: str = "auto",
) -> ColorStyle:
    """Compute the colours for ``key`` per object (``rows`` maps objects to table rows).

    Continuous values get ``limits`` (default: the 1st-99th percentiles,
    :func:`percentile_limits`); features are log-normalised when ``X`` holds counts
    (``values="auto"``; ``"raw"`` or ``"lognorm"`` to choose). Objects without a value are
    drawn in the missing colour and counted in ``n_missing``.
    """
    mode = feature_mode(adata, values) if is_feature(adata, key) else None
    values, kind = resolve_values(adata, key, values=mode or "raw")
    n = len(values) if rows is None else len(rows)
    take = np.arange(n) if rows is None else rows
    valid = take >= 0
    if kind == "categorical":
        colors_hex = ensure_colors(adata, key)
        cat = adata.obs[key].cat
        codes = np.full(n, -1, dtype=int)
        codes[valid] = cat.codes.to_numpy()[take[valid]]
        palette = hex_to_rgba(colors_hex + [MISSING_COLOR])
        if hidden:
            for i, c in enumerate(cat.categories):
                if str(c) in hidden:
                    palette[i, 3] = 0.0
        rgba = palette[codes]  # code -1 -> last entry (missing colour)
        labels = np.asarray(cat.categories.astype(str), dtype=object)
        # code -1 (missing) picks the trailing None; safe with zero categories too.
        per_object = np.append(labels, None)[codes]
        counts = np.bincount(codes[codes >= 0], minlength=len(labels)).tolist()
        return ColorStyle(
            key,
            kind,
            per_object,
            rgba,
            list(labels),
            colors_hex,
            counts,
            hidden=set(hidden or ()),
            n_missing=int((codes < 0).sum()),
        )
    vals = np.full(n, np.nan)
    vals[valid] = values[take[valid]]
    if limits is None:
        limits = percentile_limits(vals)
    lo, hi = (float(v) for v in limits)
    scaled = np.clip((vals - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    from matplotlib import colormaps

    rgba = colormaps[colormap](np.nan_to_num(scaled))
    rgba[~np.isfinite(vals)] = hex_to_rgba([MISSING_COLOR])[0]
    return ColorStyle(
        key,
        kind,
        vals,
        rgba,
        limits=(lo, hi),
        colormap=colormap,
        n_missing=int((~np.isfinite(vals)).sum()),
        value_mode=VALUE_MODES[mode] if mode else "",
    )


def default_image(sdata) -> str | None:
    """The highest-resolution image: full > hires > lowres > first."""
    names = list(sdata.images)
    for tag in ("_full_image", "_hires_image", "_lowres_image"):
        for n in names:
            if n.endswith(tag):
                return n
    return names[0] if names else None


def sdata_layers(
    sdata,
    *,
    color_by: str | None = None,
    coordinate_system: str | None = None,
    raster_threshold: int = RASTER_THRESHOLD,
) -> list:
    """Layer tuples for a whole SpatialData in one coordinate system.

    Images first (the best one visible), then each shapes element: circles as Points,
    polygons as Shapes, and either as a rasterised Labels layer above ``raster_threshold``
    objects. Elements not in ``coordinate_system`` are left out. The default coordinate
    system is ``microns`` where the pixel size is known (Visium; added in memory, see
    :mod:`napari_scai.viewer._scale`), else ``global``; layers carry ``units`` so napari's
    scale bar reads µm (or pixels).
    """
    from napari_scai.viewer._scale import MICRONS, default_coordinate_system

    if coordinate_system is None:
        coordinate_system = default_coordinate_system(sdata)
    units = ("um", "um") if coordinate_system == MICRONS else ("pixel", "pixel")
    layers = []
    best = default_image(sdata)
    for name, element in sdata.images.items():
        if coordinate_system in _coordinate_systems_of(element):
            layers.append(image_layer(sdata, name, coordinate_system, visible=(name == best)))
    for name, shapes in sdata.shapes.items():
        if coordinate_system not in _coordinate_systems_of(shapes) or len(shapes) == 0:
            continue
        table = table_for_region(sdata, name)
        key = color_by if (color_by and table and _has_key(sdata.tables[table], color_by)) else None
        if key is None and table:
            key = default_color_key(sdata.tables[table])  # never "Colour by X" over grey cells
        if len(shapes) > raster_threshold:
            builder = cells_labels_layer
        elif "radius" in shapes.columns:
            builder = spots_layer
        else:
            builder = polygons_layer
        layers.append(
            builder(sdata, name, table=table, color_by=key, coordinate_system=coordinate_system)
        )
    for _data, kwargs, _kind in layers:
        kwargs["units"] = units
    return layers


def _coordinate_systems_of(element) -> list[str]:
    from spatialdata.transformations import get_transformation

    return list(get_transformation(element, get_all=True))


def coordinate_systems(sdata) -> list[str]:
    """Coordinate systems of a SpatialData (``global`` first when present)."""
    names = list(sdata.coordinate_systems)
    return sorted(names, key=lambda n: (n != COORDINATE_SYSTEM, n))


def _has_key(adata, key: str) -> bool:
    try:
        resolve_values(adata, key)
    except KeyError:
        return False
    return True
