"""Drawing SpatialData in napari: images at their true scale, spots/cells coloured by any key."""

from __future__ import annotations

from napari_scai.viewer._layers import (
    RASTER_THRESHOLD,
    ColorStyle,
    LayerSource,
    color_style,
    default_image,
    image_layer,
    resolve_values,
    sdata_layers,
    spots_layer,
)
from napari_scai.viewer._show import add_sdata, recolor

__all__ = [
    "RASTER_THRESHOLD",
    "ColorStyle",
    "LayerSource",
    "add_sdata",
    "color_style",
    "default_image",
    "image_layer",
    "recolor",
    "resolve_values",
    "sdata_layers",
    "spots_layer",
]
