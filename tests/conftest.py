"""Shared fixtures: real data from ../shared/data (skipped only when that folder is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# ../shared/data beside the checkout, or SCAI_SHARED_DATA (a copy elsewhere, e.g. on a GPU machine)
SHARED_DATA = Path(
    os.environ.get("SCAI_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)


def shared_path(*parts: str) -> Path:
    """Path inside the shared data folder; skips the test with a reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"shared data folder {SHARED_DATA} is absent (a user's clone); these tests need it"
        )
    return SHARED_DATA.joinpath(*parts)


@pytest.fixture(scope="session")
def dlpfc_sdata_session():
    """DLPFC 151673 from the bundled sample (session-wide; do not modify: use ``dlpfc_sdata``)."""
    from napari_scai.datasets import dlpfc_151673

    return dlpfc_151673()


@pytest.fixture
def dlpfc_sdata():
    """A fresh DLPFC 151673 SpatialData that a test may modify."""
    from napari_scai.datasets import dlpfc_151673

    return dlpfc_151673()


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    """Each test trains its own models: none reuses an ensemble kept by an earlier test."""
    from napari_scai.tl._domains import clear_model_cache

    clear_model_cache()
    yield
    clear_model_cache()
