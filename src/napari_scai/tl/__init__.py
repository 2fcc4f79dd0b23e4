"""User-facing analysis functions on SpatialData (or AnnData). No Qt, no napari.

=========================  ===========================================================
``spatial_domains``        GNN spatial domains -> ``obs['scai_domain']`` (+ confidence)
``compare``                prediction vs reference: ARI, NMI, per-class F1, confusion, matching
``rename_by_matching``     rename predicted domains after their matched reference classes
``disagreement``           where a (renamed) prediction and the reference differ
``annotate_from_shapes``   polygons -> class per spot/cell (vectorised point-in-polygon)
``transfer_labels``        annotated reference section -> labels + confidence on queries
``communication``          spatial ligand–receptor signalling -> ``CommunicationReport``
``integrate``              multimodal joint embedding + per-cell modality weights (+ clusters)
``clear_model_cache``      forget the kept unsupervised domain ensemble (frees its memory)
=========================  ===========================================================
"""

from __future__ import annotations

from typing import Any

from napari_scai.tl._annotate import (
    annotate_from_shapes,
    annotations_to_geodataframe,
    export_annotation_csv,
    export_geojson,
    import_annotation_csv,
    import_geojson,
    points_in_polygons,
)
from napari_scai.tl._compare import CompareReport, compare, disagreement, rename_by_matching

__all__ = [
    "CommunicationReport",
    "CompareReport",
    "annotate_from_shapes",
    "annotations_to_geodataframe",
    "clear_model_cache",
    "communication",
    "communication_edges",
    "compare",
    "disagreement",
    "export_annotation_csv",
    "export_geojson",
    "import_annotation_csv",
    "import_geojson",
    "integrate",
    "points_in_polygons",
    "rename_by_matching",
    "spatial_domains",
    # --- domains2 (issue 11): label transfer between sections
    "transfer_labels",
]


def __getattr__(name: str) -> Any:
    # The domain model pulls in torch: import it only when asked for.
    if name == "spatial_domains":
        from napari_scai.tl._domains import spatial_domains

        return spatial_domains
    if name == "clear_model_cache":
        from napari_scai.tl._domains import clear_model_cache

        return clear_model_cache
    # --- domains2 (issue 11): label transfer between sections
    if name == "transfer_labels":
        from napari_scai.tl._transfer import transfer_labels

        return transfer_labels
    # --- cell-cell communication (issue 9; torch, imported lazily) ---
    if name in ("communication", "communication_edges", "CommunicationReport"):
        from napari_scai.tl import _communication

        return getattr(_communication, name)
    # --- end cell-cell communication ---

    if name == "integrate":  # multimodal integration (issue 10); pulls in torch
        from napari_scai.tl._integrate import integrate

        return integrate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
