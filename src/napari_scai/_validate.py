"""Input lookups and parameter checks shared by every public function.

One place for the table lookup (:func:`get_table`) and the checks the ``tl`` functions make on
their parameters, so every error says the same kind of thing: what is wrong, with which
object or field, and the fix. Errors are ``TypeError``/``KeyError``/``ValueError`` and are
raised before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["check_choice", "check_positive", "check_xy", "get_table", "obs_column"]


def get_table(data: Any, table: str = "rna"):
    """The AnnData behind ``data``: an AnnData itself, or ``SpatialData.tables[table]``.

    Raises
    ------
    TypeError
        ``data`` is neither (names its type and the fix).
    KeyError
        The SpatialData has no table ``table`` (lists the tables it has).
    """
    from anndata import AnnData

    if isinstance(data, AnnData):
        return data
    tables = getattr(data, "tables", None)
    if tables is None:
        raise TypeError(
            f"expected a SpatialData or an AnnData, got {type(data).__name__}. "
            "Fix: read the data with napari_scai.io.read first"
        )
    if table not in tables:
        raise KeyError(
            f"table {table!r} not found: the SpatialData has no table {table!r}; its tables are "
            f"{list(tables.keys())}. Fix: pass table=<one of them>"
        )
    return tables[table]


def obs_column(adata, key: str, role: str = "obs"):
    """``adata.obs[key]``; a KeyError naming the role, the column and the columns there are."""
    if key not in adata.obs.columns:
        raise KeyError(
            f"{role} column {key!r} is not in obs. Available columns: "
            f"{list(adata.obs.columns)}. Fix: pass one of them"
        )
    return adata.obs[key]


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not allowed. Fix: use one of {choices}")
    return value


def check_positive(name: str, value: Any, *, integer: bool = False, minimum: float = 0) -> Any:
    """``value`` if it is a number > ``minimum`` (an integer when ``integer``), else ValueError."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok and integer:
        ok = float(value).is_integer()
    if not ok or not np.isfinite(value) or value <= minimum:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind} > {minimum:g}, got {value!r}")
    return int(value) if integer else float(value)


def check_xy(name: str, xy: Any, n: int | None = None) -> np.ndarray:
    """``xy`` as a float64 (n, 2) array; ValueError on another shape (or another ``n``)."""
    arr = np.asarray(xy, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"`{name}` must have shape (n, 2); got {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"`{name}` has {arr.shape[0]} rows, expected {n} (one per observation)")
    return arr
