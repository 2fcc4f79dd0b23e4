"""napari-scai: spatial multimodal single-cell analysis in napari and Jupyter.

Namespaces
----------
io        readers (Visium, 10x HDF5, h5ad, SpatialData zarr) and atomic writers
datasets  bundled sample data
graph     sparse spatial graphs
tl        user-facing analysis functions on SpatialData / AnnData
metrics   label-agreement metrics
viewer    SpatialData -> napari layers (imports napari lazily)
pl        static matplotlib figures of results, in napari's colours
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = {"io", "datasets", "graph", "tl", "metrics", "viewer", "preprocess", "models", "pl"}

__all__ = ["__version__", *sorted(_SUBMODULES)]


def __getattr__(name: str) -> Any:
    # Lazy submodules: `import napari_scai` stays fast and never imports Qt or torch.
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
