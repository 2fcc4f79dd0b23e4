"""Simulations with planted ground truth (for tests, benchmarks and tutorials)."""

from __future__ import annotations

from napari_scai.simulate.communication import planted_communication

__all__ = ["planted_communication"]
