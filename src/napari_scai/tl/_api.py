"""The calling convention shared by the public ``tl`` functions (scanpy's).

- the data (a SpatialData or an AnnData) comes first, every option is keyword-only;
- a function that writes into the data names its output ``key_added`` and takes ``copy``:
  ``copy=False`` (default) modifies the data in place and returns ``None``, ``copy=True``
  leaves it untouched and returns a modified copy;
- a report (``compare``) or a file export returns its result and writes nothing.

:func:`deprecated_call` keeps the calls of the previous release working for one release, with
a :class:`FutureWarning` naming the new form: options passed positionally, and renamed
keywords (``new_key`` -> ``key_added``, ``key`` -> ``key_added``).
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: The release after which the deprecated forms stop working.
REMOVED_IN = "0.3"


def deprecated_call(
    positional: Sequence[str] = (),
    renamed: Mapping[str, str] | None = None,
) -> Callable[[F], F]:
    """Accept the previous release's call forms of a ``tl`` function, with a FutureWarning.

    Parameters
    ----------
    positional
        Names, in the old order, of the arguments that used to follow the data positionally.
        Old names are allowed here; they are then renamed through ``renamed``.
    renamed
        ``{old keyword: new keyword}``.

    Returns
    -------
    Callable
        A decorator. The wrapped function keeps its own (new) signature for ``inspect``.
    """
    renamed = dict(renamed or {})

    def decorate(fn: F) -> F:
        name = fn.__name__
        sig = inspect.signature(fn)
        data_name = next(iter(sig.parameters))

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from_positional: set[str] = set()
            if len(args) > 1:
                extra = args[1:]
                if len(extra) > len(positional):
                    raise TypeError(
                        f"{name}() takes the data as its only positional argument; got "
                        f"{len(args)}. Pass the options as keywords."
                    )
                names = positional[: len(extra)]
                shown = ", ".join(f"{renamed.get(n, n)}=..." for n in names)
                warnings.warn(
                    f"{name}(): passing {', '.join(names)} positionally is deprecated and "
                    f"stops working in napari-scai {REMOVED_IN}; call "
                    f"{name}({data_name}, {shown}).",
                    FutureWarning,
                    stacklevel=2,
                )
                for n, value in zip(names, extra, strict=True):
                    if n in kwargs or renamed.get(n, n) in kwargs:
                        raise TypeError(f"{name}() got multiple values for argument {n!r}.")
                    kwargs[n] = value
                    from_positional.add(n)
                args = args[:1]
            for old, new in renamed.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(
                            f"{name}() got both {old!r} (deprecated) and {new!r}; pass {new!r}."
                        )
                    if old not in from_positional:
                        warnings.warn(
                            f"{name}(): {old}= is deprecated and stops working in "
                            f"napari-scai {REMOVED_IN}; use {new}=.",
                            FutureWarning,
                            stacklevel=2,
                        )
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        wrapper.__signature__ = sig  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def copy_data(data: Any) -> Any:
    """A copy of ``data`` that a ``tl`` function may modify (for ``copy=True``).

    An AnnData is copied whole. A SpatialData gets new copies of its tables; its images,
    labels, points and shapes elements are shared (``tl`` functions write only into tables),
    and the copy is not backed by the original's store.
    """
    from anndata import AnnData

    if isinstance(data, AnnData):
        return data.copy()
    tables = getattr(data, "tables", None)
    if tables is None:
        raise TypeError(
            f"Expected a SpatialData or an AnnData, got {type(data).__name__}. "
            "Read your data with napari_scai.io first."
        )
    from spatialdata import SpatialData

    return SpatialData(
        images=dict(data.images),
        labels=dict(data.labels),
        points=dict(data.points),
        shapes=dict(data.shapes),
        tables={k: v.copy() for k, v in tables.items()},
        attrs=dict(getattr(data, "attrs", {}) or {}),
    )


def uns_value(v: Any) -> Any:
    """Make a value safe for ``uns`` (h5ad / zarr writers): plain containers and scalars."""
    import numpy as np

    if v is None:
        return "none"
    if isinstance(v, dict):
        return {str(k): uns_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [uns_value(x) for x in v]
    if isinstance(v, (np.integer, np.floating, np.bool_)):
        return v.item()
    return v
