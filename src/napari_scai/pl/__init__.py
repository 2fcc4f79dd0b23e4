"""Static matplotlib figures of napari-scai results, in the colours napari uses.

Minimal package created with the integration figures; other figure modules join it here.
"""

from __future__ import annotations

from napari_scai.pl._integration import (
    integration_embedding,
    integration_weights,
    joint_clusters,
    joint_umap,
)

__all__ = ["integration_embedding", "integration_weights", "joint_clusters", "joint_umap"]
