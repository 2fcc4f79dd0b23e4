"""Simulations with planted ground truth (for tests, benchmarks and tutorials)."""

from __future__ import annotations

from napari_scai.simulate.communication import planted_communication
from napari_scai.simulate.integration import (
    simulate_paired_modalities,
    simulate_spatial_multimodal,
)

__all__ = ["planted_communication", "simulate_paired_modalities", "simulate_spatial_multimodal"]
