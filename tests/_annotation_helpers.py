"""Shared helpers for the annotation tests: polygons traced from the manual DLPFC layers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely

from napari_scai.tl._contours import estimate_pitch


def manual_layer_polygons(adata, key: str = "layer_manual") -> list[tuple[str, np.ndarray]]:
    """Polygons (class, (n, 2) x/y vertices) a user could draw around each manual layer.

    Each spot gets its Voronoi cell (clipped to 0.75 pitch); the cells of one layer are merged
    and every part's outer ring is one polygon. Sorted by area, largest first, so islands drawn
    later win over the polygon around them (napari polygons have no holes).
    """
    xy = np.asarray(adata.obsm["spatial"], dtype=float)
    labels = adata.obs[key]
    pitch = estimate_pitch(xy)
    cells = np.asarray(
        shapely.get_parts(shapely.voronoi_polygons(shapely.MultiPoint(xy), ordered=True))
    )
    cells = shapely.intersection(cells, shapely.buffer(shapely.points(xy), 0.75 * pitch))
    polys = []
    for cls in labels.cat.categories:
        union = shapely.union_all(cells[(labels == cls).to_numpy()])
        # A hand-drawn outline has far fewer vertices than a union of Voronoi cells.
        union = shapely.simplify(union, 0.1 * pitch, preserve_topology=True)
        # vertices on a 1/20-pitch grid: no near-collinear float noise for the triangulator
        union = shapely.set_precision(union, 0.05 * pitch)
        for part in shapely.get_parts(union):
            outline = shapely.make_valid(shapely.Polygon(part.exterior))  # no holes, no pinches
            for piece in shapely.get_parts(outline):
                if isinstance(piece, shapely.Polygon) and piece.area > 0:
                    polys.append((piece.area, str(cls), np.asarray(piece.exterior.coords)[:-1]))
    polys.sort(key=lambda t: -t[0])
    return [(cls, verts) for _, cls, verts in polys]


def agreement(adata, key: str, ref: str = "layer_manual") -> float:
    """Fraction of reference-labelled spots whose ``key`` equals the reference."""
    r = adata.obs[ref].astype(object)
    a = adata.obs[key].astype(object)
    labelled = r.notna().to_numpy()
    return float((a[labelled].to_numpy() == r[labelled].to_numpy()).mean())


def column_values(adata, key: str) -> pd.Series:
    """``obs[key]`` as plain objects with None for missing."""
    col = adata.obs[key].astype(object)
    return col.where(col.notna(), None)
