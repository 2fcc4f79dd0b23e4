"""Planted simulations with known ground truth (for tests, benchmarks and tutorials)."""

from __future__ import annotations

# ---- integration (multimodal) simulations
from napari_scai.simulate.integration import (
    simulate_paired_modalities,
    simulate_spatial_multimodal,
)

__all__ = ["simulate_paired_modalities", "simulate_spatial_multimodal"]
