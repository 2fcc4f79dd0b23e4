"""SpatialData -> napari layer data (no compute, no model code).

Every function here returns napari ``LayerDataTuple``s ``(data, kwargs, layer_type)``, so the
npe2 reader, the sample-data contribution, the CLI and the widgets all draw the same thing.
Coordinates: napari's world is the chosen SpatialData coordinate system, axes (y, x).
"""

from __future__ import annotations

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
    return np.asarray(transforms[coordinate_system].to_affine_matrix(input_axes=("y", "x"), output_axes=("y", "x")))


def _transform_kwargs(matrix: np.ndarray) -> dict[str, Any]:
    """napari kwargs for an affine: ``scale``/``translate`` when axis-aligned (faster), else ``affine``."""
    lin = matrix[:2, :2]
    if np.allclose(lin, np.diag(np.diag(lin))):
        return {"scale": tuple(np.diag(lin)), "translate": tuple(matrix[:2, 2])}
    return {"affine": matrix}


def image_layer(sdata, name: str, coordinate_system: str = COORDINATE_SYSTEM, visible: bool = True):
    """Layer tuple for an image element (multiscale when the element has a pyramid)."""
    element = sdata.images[name]
    if hasattr(element, "children") and len(getattr(element, "children", {})):  # DataTree pyramid
        levels = [element[k]["image"] if "image" in element[k] else next(iter(element[k].values())) for k in element]
        first = levels[0]
        data = [lvl.data for lvl in levels]
        multiscale = True
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
    kwargs = {
        "name": name,
        "rgb": rgb,
        "multiscale": multiscale,
        "visible": visible,
        "metadata": _metadata(sdata, LayerSource(element=name, coordinate_system=coordinate_system)),
        **_transform_kwargs(affine_yx(element, coordinate_system)),
    }
    if not rgb and len(channels) > 1:
        kwargs["channel_axis"] = 0
        kwargs["name"] = [f"{name} [{c}]" for c in channels]
        kwargs.pop("metadata")
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
        raise ValueError(f"shapes element '{name}' has no 'radius' column: it holds polygons, not circles")
    matrix = affine_yx(shapes, coordinate_system)
    xy = np.column_stack([shapes.geometry.x.to_numpy(), shapes.geometry.y.to_numpy()])
    yx = xy[:, ::-1]
    world = yx @ matrix[:2, :2].T + matrix[:2, 2]
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:2, :2]))))
    table = table or table_for_region(sdata, name)
    adata = sdata.tables[table] if table else None
    features = pd.DataFrame({"id": shapes.index.astype(str)})
    rows = None
    if adata is not None:
        rows = table_rows_for_shapes(sdata, name, table)
        names = adata.obs_names.to_numpy()
        features["id"] = np.where(rows >= 0, names[np.maximum(rows, 0)], features["id"])
    source = LayerSource(element=name, table=table, color_key=None, coordinate_system=coordinate_system)
    source.extra["rows"] = rows
    kwargs: dict[str, Any] = {
        "name": name,
        "size": 2 * shapes["radius"].to_numpy(dtype=float) * scale,
        "border_width": 0,
        "opacity": opacity,
        "features": features,
        "face_color": MISSING_COLOR,
        "metadata": _metadata(sdata, source, adata),
    }
    data_tuple = (world, kwargs, "points")
    if color_by is not None and adata is not None:
        style = color_style(adata, color_by, rows)
        source.color_key = color_by
        kwargs["features"] = features.assign(**{color_by: style.values})
        kwargs["face_color"] = style.colors
    return data_tuple


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


def resolve_values(adata, key: str) -> tuple[np.ndarray, str]:
    """Values for ``key``: an obs column, a feature (var name or ``var['gene_symbol']``), or ``obsm`` column ``"X_umap:0"``.

    Returns (values per row of ``adata``, ``"categorical"`` or ``"continuous"``).
    """
    if key in adata.obs.columns:
        col = adata.obs[key]
        if isinstance(col.dtype, pd.CategoricalDtype) or col.dtype == object or col.dtype == bool:
            return col.to_numpy(), "categorical"
        return col.to_numpy(dtype=float), "continuous"
    idx = None
    if key in adata.var_names:
        idx = adata.var_names.get_loc(key)
    elif "gene_symbol" in adata.var.columns and key in set(adata.var["gene_symbol"]):
        idx = int(np.flatnonzero(adata.var["gene_symbol"].to_numpy() == key)[0])
    if idx is not None:
        col = adata.X[:, idx]
        col = col.toarray() if hasattr(col, "toarray") else np.asarray(col)
        return np.asarray(col, dtype=float).ravel(), "continuous"
    if ":" in key:
        base, _, j = key.rpartition(":")
        if base in adata.obsm and j.isdigit():
            return np.asarray(adata.obsm[base])[:, int(j)].astype(float), "continuous"
    raise KeyError(
        f"'{key}' is not an obs column, a feature name, a gene symbol or an obsm column ('X_umap:0'). "
        "Fix: pick one from the widget's list"
    )


def color_style(
    adata,
    key: str,
    rows: np.ndarray | None = None,
    *,
    limits: tuple[float, float] | None = None,
    colormap: str = "viridis",
    hidden: set[str] | None = None,
) -> ColorStyle:
    """Compute the colours for ``key`` per object (``rows`` maps objects to table rows)."""
    values, kind = resolve_values(adata, key)
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
        per_object = np.where(codes >= 0, labels[np.maximum(codes, 0)], None)
        counts = np.bincount(codes[codes >= 0], minlength=len(labels)).tolist()
        return ColorStyle(key, kind, per_object, rgba, list(labels), colors_hex, counts)
    vals = np.full(n, np.nan)
    vals[valid] = values[take[valid]]
    finite = vals[np.isfinite(vals)]
    if limits is None:
        limits = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    lo, hi = limits
    scaled = np.clip((vals - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    from matplotlib import colormaps

    rgba = colormaps[colormap](np.nan_to_num(scaled))
    rgba[~np.isfinite(vals)] = hex_to_rgba([MISSING_COLOR])[0]
    return ColorStyle(key, kind, vals, rgba, limits=(lo, hi), colormap=colormap)


def default_image(sdata) -> str | None:
    """The highest-resolution image: full > hires > lowres > first."""
    names = list(sdata.images)
    for tag in ("_full_image", "_hires_image", "_lowres_image"):
        for n in names:
            if n.endswith(tag):
                return n
    return names[0] if names else None


def sdata_layers(sdata, *, color_by: str | None = None, coordinate_system: str = COORDINATE_SYSTEM) -> list:
    """Layer tuples for a whole SpatialData: images (best one visible) then circles elements."""
    layers = []
    best = default_image(sdata)
    for name in sdata.images:
        layers.append(image_layer(sdata, name, coordinate_system, visible=(name == best)))
    for name, shapes in sdata.shapes.items():
        if "radius" in shapes.columns:
            table = table_for_region(sdata, name)
            key = color_by if (color_by and table and _has_key(sdata.tables[table], color_by)) else None
            layers.append(spots_layer(sdata, name, table=table, color_by=key, coordinate_system=coordinate_system))
    return layers


def _has_key(adata, key: str) -> bool:
    try:
        resolve_values(adata, key)
    except KeyError:
        return False
    return True
