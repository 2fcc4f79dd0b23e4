"""Adding SpatialData layers to a live viewer, placing samples side by side, recolouring in place."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_scai.viewer._layers import (
    RASTER_THRESHOLD,
    ColorStyle,
    bin_features,
    color_style,
    display_image,
    labels_colormap,
    raster_colors,
    sdata_layers,
)
from napari_scai.viewer._scale import show_scale_bar

Layout = str  # "side-by-side" or "stacked"


def _shift_kwargs(kwargs: dict[str, Any], offset: np.ndarray) -> dict[str, Any]:
    """Layer kwargs moved by ``offset`` (y, x) in world units (composed after any affine)."""
    kwargs = dict(kwargs)
    if "affine" in kwargs:
        matrix = np.array(kwargs["affine"], dtype=float)
        matrix[:2, 2] += offset
        kwargs["affine"] = matrix
    else:
        kwargs["translate"] = tuple(
            np.asarray(kwargs.get("translate", (0.0, 0.0)), dtype=float) + offset
        )
    return kwargs


def _layer_extent(data, kwargs: dict[str, Any], kind: str) -> tuple[np.ndarray, np.ndarray]:
    """World bounding box (min yx, max yx) of a layer tuple, before any offset."""
    if kind == "points":
        pts = np.asarray(data, dtype=float)
        half = np.max(np.atleast_1d(kwargs.get("size", 0.0))) / 2
        return pts.min(axis=0) - half, pts.max(axis=0) + half
    if kind == "shapes":
        pts = (
            np.concatenate([np.asarray(d, dtype=float) for d in data])
            if len(data)
            else np.zeros((1, 2))
        )
        return pts.min(axis=0), pts.max(axis=0)
    arr = data[0] if kwargs.get("multiscale") else data
    shape = np.asarray(arr.shape)
    if kwargs.get("rgb"):
        shape = shape[:-1]
    elif kwargs.get("channel_axis") is not None:
        shape = np.delete(shape, kwargs["channel_axis"])
    h, w = shape[-2:]
    corners = np.array([[-0.5, -0.5], [-0.5, w - 0.5], [h - 0.5, -0.5], [h - 0.5, w - 0.5]])
    if "affine" in kwargs:
        m = np.asarray(kwargs["affine"], dtype=float)
        world = corners @ m[:2, :2].T + m[:2, 2]
    else:
        world = corners * np.asarray(kwargs.get("scale", (1.0, 1.0))) + np.asarray(
            kwargs.get("translate", (0.0, 0.0))
        )
    return world.min(axis=0), world.max(axis=0)


def _extent(tuples: list) -> tuple[np.ndarray, np.ndarray]:
    boxes = [_layer_extent(*t) for t in tuples]
    if not boxes:
        return np.zeros(2), np.ones(2)
    return np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)


def _add_tuples(viewer, tuples: list, offset: np.ndarray) -> list:
    from napari.layers import Layer

    added = []
    for data, kwargs, kind in tuples:
        kwargs = _shift_kwargs(kwargs, offset)
        metas = kwargs.get("metadata")
        for meta in metas if isinstance(metas, list) else [metas]:
            if meta and meta.get("scai") is not None:
                meta["scai"].extra["offset"] = tuple(float(v) for v in offset)
        out = getattr(viewer, f"add_{kind}")(data, **kwargs)
        for ly in out if isinstance(out, list) else [out]:
            if not isinstance(ly, Layer):
                continue
            source = ly.metadata.get("scai")
            if source is not None and source.extra.get("raster"):
                _name_cells_on_hover(ly)
            added.append(ly)
    return added


def _name_cells_on_hover(layer) -> None:
    """Hovering a rasterised cells layer also names the cell under the cursor (its obs name).

    Its pixel values are colour classes, not cells, so napari's own status shows only the class
    or value; the per-cell raster kept in the metadata gives the cell.
    """
    original = layer.get_status

    def get_status(
        position=None, *, view_direction=None, dims_displayed=None, world=False, value=None
    ):
        status = original(
            position,
            view_direction=view_direction,
            dims_displayed=dims_displayed,
            world=world,
            value=value,
        )
        if position is None or not isinstance(status, dict):
            return status
        pos = np.asarray(position, dtype=float)[-2:]
        row = cell_at(layer, pos if world else layer.data_to_world(pos))
        adata = layer.metadata.get("adata")
        if row is not None and adata is not None:
            status["coordinates"] = f"{status.get('coordinates', '')} cell {adata.obs_names[row]}"
        return status

    layer.get_status = get_status


def add_sdata(
    viewer,
    sdata,
    *,
    color_by: str | None = None,
    coordinate_system: str | None = None,
    offset: Sequence[float] = (0.0, 0.0),
    reset_view: bool = True,
    raster_threshold: int = RASTER_THRESHOLD,
) -> list:
    """Add every image and shapes element of ``sdata`` to ``viewer``; return the layers.

    Parameters
    ----------
    viewer
        A ``napari.Viewer``.
    sdata
        One sample's SpatialData.
    color_by
        Obs column, feature (gene/protein/peak, or its symbol) or ``"obsm_key:j"`` to colour by.
    coordinate_system
        The SpatialData coordinate system napari's world shows; default ``microns`` where the
        pixel size is known (Visium), else ``global``. napari's scale bar is switched on, in
        µm (or pixels).
    offset
        (y, x) world units added to every layer (samples side by side; see :func:`add_samples`).
    reset_view
        Fit the camera to all layers afterwards.
    raster_threshold
        Shapes elements with more objects than this are drawn as a rasterised Labels layer.
    """
    tuples = sdata_layers(
        sdata,
        color_by=color_by,
        coordinate_system=coordinate_system,
        raster_threshold=raster_threshold,
    )
    added = _add_tuples(viewer, tuples, np.asarray(offset, dtype=float))
    if added:
        show_scale_bar(viewer, added, added[0].metadata["scai"].coordinate_system)
    colourable = [ly for ly in added if ly.metadata.get("adata") is not None]
    if colourable:
        viewer.layers.selection.active = colourable[0]
    if reset_view:
        viewer.reset_view()
    return added


def add_samples(
    viewer,
    samples: Sequence,
    *,
    layout: Layout = "side-by-side",
    gap: float = 0.05,
    color_by: str | None = None,
    coordinate_system: str | None = None,
    raster_threshold: int = RASTER_THRESHOLD,
) -> list[list]:
    """Draw several samples next to each other, each with its own images; return layers per sample.

    Each sample is translated (layer ``translate``, or the translation of its ``affine``)
    so that its bounding box starts ``gap`` × the widest/tallest sample after the previous
    one: along x for ``"side-by-side"``, along y for ``"stacked"``. Sample coordinates are
    not changed; the offset is kept in ``metadata['scai'].extra['offset']``.
    """
    if layout not in ("side-by-side", "stacked"):
        raise ValueError(f"layout must be 'side-by-side' or 'stacked', not {layout!r}")
    axis = 1 if layout == "side-by-side" else 0
    per_sample = [
        sdata_layers(s, color_by=color_by, coordinate_system=coordinate_system) for s in samples
    ]
    boxes = [_extent(t) for t in per_sample]
    spacing = gap * max((hi - lo)[axis] for lo, hi in boxes) if boxes else 0.0
    out = []
    cursor = None
    for tuples, (lo, hi) in zip(per_sample, boxes, strict=True):
        offset = np.zeros(2)
        if cursor is None:
            cursor = boxes[0][0][axis]
        offset[axis] = cursor - lo[axis]
        offset[1 - axis] = boxes[0][0][1 - axis] - lo[1 - axis]
        out.append(_add_tuples(viewer, tuples, offset))
        cursor = cursor + (hi - lo)[axis] + spacing
    if out and out[0]:
        show_scale_bar(
            viewer, [ly for o in out for ly in o], out[0][0].metadata["scai"].coordinate_system
        )
    viewer.reset_view()
    return out


def sdata_layers_in(viewer, sdata) -> list:
    """Layers of ``viewer`` drawn from ``sdata`` (by identity of ``metadata['sdata']``)."""
    return [ly for ly in viewer.layers if ly.metadata.get("sdata") is sdata]


def set_coordinate_system(viewer, sdata, coordinate_system: str) -> list:
    """Redraw ``sdata``'s layers in another coordinate system, keeping colours and offsets.

    Returns the new layers (same names, same order in the layer list).
    """
    old = sdata_layers_in(viewer, sdata)
    if coordinate_system not in sdata.coordinate_systems:
        raise KeyError(
            f"'{coordinate_system}' is not a coordinate system of this sample (it has "
            f"{list(sdata.coordinate_systems)}). Fix: pick one of those"
        )
    keys = {
        ly.metadata["scai"].color_key
        for ly in old
        if ly.metadata.get("scai") and ly.metadata["scai"].color_key
    }
    offset = np.zeros(2)
    for ly in old:
        if ly.metadata.get("scai") is not None:
            offset = np.asarray(ly.metadata["scai"].extra.get("offset", (0.0, 0.0)))
            break
    index = min((viewer.layers.index(ly) for ly in old), default=len(viewer.layers))
    for ly in old:
        viewer.layers.remove(ly)
    tuples = sdata_layers(
        sdata, color_by=next(iter(keys), None), coordinate_system=coordinate_system
    )
    added = _add_tuples(viewer, tuples, offset)
    for i, ly in enumerate(added):
        viewer.layers.move(viewer.layers.index(ly), index + i)
    viewer.reset_view()
    return added


def recolor(layer, key: str, **style_kwargs) -> ColorStyle:
    """Colour a spots/cells layer (Points, Shapes or rasterised Labels) by ``key`` in one step.

    ``key`` is an obs column, a feature name or symbol, or an ``obsm`` column (``"X_umap:0"``).
    ``style_kwargs`` go to :func:`color_style` (``limits``, ``colormap``, ``hidden``).
    Points/Shapes get ``layer.features[key]`` (shown on hover) and per-object face colours;
    a rasterised Labels layer gets a colour-bin image and a small ``DirectLabelColormap``
    (hiding or recolouring classes of the same key only swaps the colormap).

    Returns
    -------
    ColorStyle
        Categories, colours and counts for a legend, limits for a colorbar.
    """
    meta = layer.metadata
    source = meta["scai"]
    adata = meta["adata"]
    if adata is None:
        raise ValueError(f"layer '{layer.name}' has no table to colour from")
    style = color_style(adata, key, source.extra.get("rows"), **style_kwargs)
    previous_key = source.color_key
    # metadata first: listeners of the layer events below see the new style
    source.color_key = key
    source.extra["style"] = style
    if source.extra.get("raster"):
        bins, table = raster_colors(style)
        if not (previous_key == key and np.array_equal(bins, source.extra.get("bins"))):
            layer.data = display_image(source.extra["row_image"], bins)
            source.extra["bins"] = bins
        layer.colormap = labels_colormap(table)
        layer.features = bin_features(style, len(table))
    else:
        features = layer.features.copy()
        features[key] = style.values
        layer.face_color = style.colors
        layer.features = features
    return style


def cell_at(layer, world_yx: Sequence[float]) -> int | None:
    """Table row of the object under a world (y, x) position, or None (any scai spots/cells layer)."""
    source = layer.metadata["scai"]
    rows = source.extra.get("rows")
    pos = np.asarray(world_yx, dtype=float)
    if source.extra.get("raster"):
        data_pos = np.round(np.asarray(layer.world_to_data(pos))).astype(int)
        image = source.extra["row_image"]
        if np.any(data_pos < 0) or np.any(data_pos >= image.shape):
            return None
        obj = int(image[tuple(data_pos)]) - 1
    else:
        value = layer.get_value(pos, world=True)
        if value is None:
            return None
        obj = int(value)
    if obj < 0:
        return None
    return int(rows[obj]) if rows is not None and rows[obj] >= 0 else None
