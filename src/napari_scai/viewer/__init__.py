"""Drawing SpatialData in napari: images at their true scale, spots/cells coloured by any key."""

from __future__ import annotations

from napari_scai.viewer._export import save_figure
from napari_scai.viewer._layers import (
    RASTER_THRESHOLD,
    ColorStyle,
    LayerSource,
    cells_labels_layer,
    color_style,
    coordinate_systems,
    default_image,
    image_layer,
    polygons_layer,
    rasterize_discs,
    resolve_values,
    sdata_layers,
    spots_layer,
)
from napari_scai.viewer._notebook import annotate_docks, flush_annotations, show
from napari_scai.viewer._show import (
    add_samples,
    add_sdata,
    cell_at,
    recolor,
    sdata_layers_in,
    set_coordinate_system,
)

__all__ = [
    "RASTER_THRESHOLD",
    "ColorStyle",
    "LayerSource",
    "add_samples",
    "add_sdata",
    "annotate_docks",
    "cell_at",
    "cells_labels_layer",
    "color_style",
    "coordinate_systems",
    "default_image",
    "flush_annotations",
    "image_layer",
    "polygons_layer",
    "rasterize_discs",
    "recolor",
    "resolve_values",
    "save_figure",
    "sdata_layers",
    "sdata_layers_in",
    "set_coordinate_system",
    "show",
    "spots_layer",
]
