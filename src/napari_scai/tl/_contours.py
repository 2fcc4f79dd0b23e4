"""Outlines of labelled regions (spatial domains, annotations) drawn from spot/cell centres.

The labels live on scattered centres (a Visium hex lattice, or cells). To outline each region
the centres are rasterised onto a regular grid finer than the spot pitch: every grid pixel
takes the label of its nearest centre, if that centre is close enough (so the tissue edge is
respected). Each region's mask is lightly smoothed and traced with marching squares
(:func:`skimage.measure.find_contours`), and the traces are mapped back to the input
coordinates. Two neighbouring regions therefore share the same boundary line.

No Qt or napari here: :mod:`napari_scai.viewer._annotations` draws the result.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from napari_scai._validate import check_positive, check_xy

__all__ = ["DomainContours", "domain_contours", "estimate_pitch", "rasterize_labels"]


def estimate_pitch(coords: np.ndarray) -> float:
    """Median nearest-neighbour distance between centres (the spot pitch of a Visium grid).

    Parameters
    ----------
    coords
        (n, 2) centre coordinates (any axis order, any unit).

    Returns
    -------
    float
        The median distance from each centre to its nearest neighbour (``1.0`` for < 2 centres).
    """
    from scipy.spatial import cKDTree

    coords = np.asarray(coords, dtype=np.float64)
    if len(coords) < 2:
        return 1.0
    dist, _ = cKDTree(coords).query(coords, k=2)
    positive = dist[:, 1][dist[:, 1] > 0]
    return float(np.median(positive)) if positive.size else 1.0


@dataclass
class DomainContours:
    """Outlines per label, in the coordinates of the input centres.

    Attributes
    ----------
    paths
        ``{label: [(m, 2) array, ...]}``: closed traces (first vertex repeated last) in the
        same axis order as the centres passed to :func:`domain_contours`.
    labels
        The labels in order (categories of a categorical input, else sorted unique values).
    pitch
        The centre spacing used (coordinate units).
    step
        Grid pixel size used for rasterisation (coordinate units).
    """

    paths: dict[Hashable, list[np.ndarray]]
    labels: list[Hashable] = field(default_factory=list)
    pitch: float = 1.0
    step: float = 1.0

    def n_paths(self) -> int:
        """Total number of traces over all labels."""
        return sum(len(v) for v in self.paths.values())


def _codes(labels: Sequence[Hashable] | pd.Series | np.ndarray) -> tuple[np.ndarray, list]:
    series = (
        pd.Series(labels) if not isinstance(labels, pd.Series) else labels.reset_index(drop=True)
    )
    if isinstance(series.dtype, pd.CategoricalDtype):
        cats = list(series.cat.categories)
        return series.cat.codes.to_numpy().astype(np.int64), cats
    cat = pd.Categorical(series)
    return np.asarray(cat.codes, dtype=np.int64), list(cat.categories)


def rasterize_labels(
    coords: np.ndarray,
    codes: np.ndarray,
    *,
    step: float,
    max_distance: float,
    pad: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-centre label image on a regular grid.

    Parameters
    ----------
    coords
        (n, 2) centres (axis 0 = image rows, axis 1 = image columns).
    codes
        Integer label per centre; negative codes (unlabelled) are kept as their own region.
    step
        Grid pixel size, in coordinate units.
    max_distance
        Pixels farther than this from every centre are background.
    pad
        Background pixels added around the bounding box, so every region is closed.

    Returns
    -------
    image
        int64 array; ``-2`` is background, other values are the codes.
    origin
        Coordinate of pixel ``(0, 0)``'s centre.
    """
    from scipy.spatial import cKDTree

    coords = np.asarray(coords, dtype=np.float64)
    codes = np.asarray(codes, dtype=np.int64)
    step = check_positive("step", step)
    lo = coords.min(axis=0) - (pad + 0.5) * step - max_distance
    hi = coords.max(axis=0) + (pad + 0.5) * step + max_distance
    shape = np.ceil((hi - lo) / step).astype(int) + 1
    if int(np.prod(shape)) > 50_000_000:
        raise ValueError(
            f"a {shape[0]}x{shape[1]} grid is too large; pass a larger step (now {step:g})"
        )
    rows = lo[0] + step * np.arange(shape[0])
    cols = lo[1] + step * np.arange(shape[1])
    grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1).reshape(-1, 2)
    dist, nearest = cKDTree(coords).query(grid, k=1, distance_upper_bound=max_distance)
    image = np.full(grid.shape[0], -2, dtype=np.int64)
    ok = np.isfinite(dist)
    image[ok] = codes[nearest[ok]]
    return image.reshape(shape), lo


def domain_contours(
    coords: np.ndarray,
    labels: Sequence[Hashable] | pd.Series | np.ndarray,
    *,
    pitch: float | None = None,
    subdivisions: int = 4,
    smooth: float = 1.0,
    min_pixels: int = 4,
    tolerance: float | None = None,
) -> DomainContours:
    """Trace the outline of every labelled region.

    Parameters
    ----------
    coords
        (n, 2) centre coordinates; the returned paths use the same axis order (pass napari
        world ``(y, x)`` to get napari paths directly).
    labels
        One label per centre (missing values: unlabelled, outlined by nobody).
    pitch
        Centre spacing; default: :func:`estimate_pitch`.
    subdivisions
        Grid pixels per pitch (higher: finer, slower).
    smooth
        Gaussian sigma, in grid pixels, applied to each region mask before tracing (0: none).
    min_pixels
        Drop traces enclosing fewer grid pixels than this (specks).
    tolerance
        Douglas–Peucker simplification tolerance in coordinate units; default a fifth of a
        grid pixel. ``0`` keeps every vertex.

    Returns
    -------
    DomainContours
        Closed traces per label.
    """
    from scipy.ndimage import gaussian_filter
    from skimage.measure import approximate_polygon, find_contours

    coords = check_xy("coords", coords)
    if len(labels) != len(coords):
        raise ValueError(f"got {len(labels)} labels for {len(coords)} centres; pass one per centre")
    codes, cats = _codes(labels)
    pitch = float(pitch) if pitch else estimate_pitch(coords)
    step = pitch / max(int(subdivisions), 1)
    tol = step / 5 if tolerance is None else float(tolerance)
    paths: dict[Hashable, list[np.ndarray]] = {c: [] for c in cats}
    if len(coords) == 0:
        return DomainContours(paths, cats, pitch, step)
    # Farthest point of a hex lattice from its nearest centre is pitch / sqrt(3).
    image, origin = rasterize_labels(coords, codes, step=step, max_distance=0.6 * pitch)
    for code, label in enumerate(cats):
        mask = image == code
        if not mask.any():
            continue
        field_ = (
            gaussian_filter(mask.astype(np.float32), smooth)
            if smooth > 0
            else mask.astype(np.float32)
        )
        for trace in find_contours(field_, 0.5):
            if len(trace) < 4:
                continue
            area = 0.5 * abs(
                np.dot(trace[:, 0], np.roll(trace[:, 1], 1))
                - np.dot(trace[:, 1], np.roll(trace[:, 0], 1))
            )
            if area < min_pixels:
                continue
            if tol > 0:
                trace = approximate_polygon(trace, tolerance=tol / step)
            paths[label].append(origin + trace * step)
    return DomainContours(paths, cats, pitch, step)
