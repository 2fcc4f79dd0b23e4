"""Torch models (spatial domains, clustering, ...) and their shared runtime."""

from napari_scai.models._runtime import (
    Cancelled,
    ProgressCallback,
    Runtime,
    resolve_device,
    seed_everything,
)

__all__ = ["Cancelled", "ProgressCallback", "Runtime", "resolve_device", "seed_everything"]
