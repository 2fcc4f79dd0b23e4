"""Static matplotlib figures (no napari, no Qt).

Minimal module created by the ``ccc`` branch for the communication figures; the ``pl`` package
proper is built on another branch (merge: keep its ``__init__`` and add these three names).
"""

from __future__ import annotations

from napari_scai.pl._communication import (
    communication_flows,
    communication_heatmap,
    communication_pair,
)

__all__ = ["communication_flows", "communication_heatmap", "communication_pair"]
