"""Adding SpatialData layers to a live viewer and recolouring them in place."""

from __future__ import annotations

from napari_scai.io._common import COORDINATE_SYSTEM
from napari_scai.viewer._layers import ColorStyle, color_style, sdata_layers


def add_sdata(viewer, sdata, *, color_by: str | None = None, coordinate_system: str = COORDINATE_SYSTEM) -> list:
    """Add every image and spots/cells element of ``sdata`` to ``viewer``; return the layers."""
    from napari.layers import Layer

    added = []
    for data, kwargs, kind in sdata_layers(sdata, color_by=color_by, coordinate_system=coordinate_system):
        out = getattr(viewer, f"add_{kind}")(data, **kwargs)
        added.extend(out if isinstance(out, list) else [out])
    spots = [ly for ly in added if isinstance(ly, Layer) and ly.metadata.get("scai") and ly._type_string == "points"]
    if spots:
        viewer.layers.selection.active = spots[0]
    viewer.reset_view()
    return added


def recolor(layer, key: str, **style_kwargs) -> ColorStyle:
    """Colour a spots/cells layer by ``key`` (obs column, gene, or ``obsm`` column) in one step.

    Writes the values into ``layer.features[key]`` (shown on hover) and returns the
    :class:`ColorStyle` (categories, colours and counts for a legend, limits for a colorbar).
    """
    meta = layer.metadata
    source = meta["scai"]
    adata = meta["adata"]
    if adata is None:
        raise ValueError(f"layer '{layer.name}' has no table to colour from")
    style = color_style(adata, key, source.extra.get("rows"), **style_kwargs)
    features = layer.features.copy()
    features[key] = style.values
    layer.features = features
    layer.face_color = style.colors
    source.color_key = key
    source.extra["style"] = style
    return style
