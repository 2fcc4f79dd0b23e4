"""Shared runtime for the torch models: device choice, seeding, progress and cancellation.

Every training loop in :mod:`napari_scai.models` takes a :class:`Runtime` (or builds one from
``device=``, ``seed=``, ``progress=``, ``cancel=`` keywords) so that GUI workers, the CLI and
notebooks drive the models the same way.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

__all__ = [
    "Cancelled",
    "CancelToken",
    "ProgressCallback",
    "Runtime",
    "check_cancel",
    "cpu_threads",
    "resolve_device",
    "seed_everything",
]

#: Below this many rows a CPU model runs single-threaded (see :func:`cpu_threads`).
SMALL_PROBLEM_ROWS = 50_000


@contextlib.contextmanager
def cpu_threads(n_rows: int, device: torch.device | str = "cpu") -> Iterator[int]:
    """Use one intra-op thread for small CPU problems, restoring the setting afterwards.

    Small models issue thousands of tiny kernels; with several OpenMP threads on a busy
    (shared or oversubscribed) machine the threads spin-wait on each other and an epoch can
    get 10x slower than single-threaded. Large problems keep torch's thread count.
    """
    before = torch.get_num_threads()
    use = before
    if torch.device(device).type == "cpu" and n_rows < SMALL_PROBLEM_ROWS:
        use = 1
    torch.set_num_threads(use)
    try:
        yield use
    finally:
        torch.set_num_threads(before)


#: ``progress(step, total, message)``; called from the thread that runs the model.
ProgressCallback = Callable[[int, int, str], None]


class Cancelled(Exception):
    """Raised by a training loop when its cancel token is set."""


@runtime_checkable
class CancelToken(Protocol):
    """Anything with ``is_set() -> bool``, e.g. :class:`threading.Event`."""

    def is_set(self) -> bool: ...


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a :class:`torch.device`.

    ``"auto"`` (or ``None``) picks CUDA when available, else CPU.

    Raises
    ------
    RuntimeError
        If a CUDA device is requested but CUDA is not available or the index does not exist.
    ValueError
        If the string is not a device torch understands.
    """
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"Unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'."
        ) from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device={device!r} was requested but CUDA is not available in this torch "
                f"build ({torch.__version__}); use device='cpu' or device='auto'."
            )
        index = 0 if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device={device!r} was requested but only {torch.cuda.device_count()} CUDA "
                "device(s) are visible."
            )
        dev = torch.device("cuda", index)
    elif dev.type != "cpu":
        raise ValueError(f"Unsupported device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'.")
    return dev


def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed python, numpy and torch; optionally switch torch to deterministic algorithms.

    Returns a CPU :class:`torch.Generator` seeded with ``seed``; models draw their own random
    numbers from it (and from generators derived from it) rather than from global state.
    """
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - seeds legacy global state for 3rd-party code
    torch.manual_seed(seed)
    if deterministic:
        # Needed by cuBLAS for deterministic GEMMs; harmless on CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        if hasattr(torch.backends, "cudnn"):
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    return gen


def check_cancel(cancel: Any) -> None:
    """Raise :class:`Cancelled` when ``cancel`` (an object with ``is_set()``) is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("computation cancelled by the user")


@dataclass
class Runtime:
    """Device, seed, progress callback and cancel token, bundled for one model run."""

    device: torch.device | str = "auto"
    seed: int = 0
    progress: ProgressCallback | None = None
    cancel: CancelToken | None = None
    deterministic: bool = True
    generator: torch.Generator | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)
        if self.cancel is not None and not callable(getattr(self.cancel, "is_set", None)):
            raise TypeError("cancel must have an is_set() method, e.g. threading.Event()")

    def start(self) -> torch.Generator:
        """Seed everything and return (and keep) this run's generator."""
        self.generator = seed_everything(self.seed, self.deterministic)
        return self.generator

    def report(self, step: int, total: int, message: str = "") -> None:
        """Forward to the progress callback, if any."""
        if self.progress is not None:
            self.progress(int(step), int(total), str(message))

    def check(self) -> None:
        """Raise :class:`Cancelled` if the cancel token is set."""
        check_cancel(self.cancel)

    def numpy_rng(self, offset: int = 0) -> np.random.Generator:
        """A numpy generator derived from the seed (``offset`` separates independent streams)."""
        return np.random.default_rng([int(self.seed), int(offset)])
