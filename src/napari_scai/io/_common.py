"""Shared pieces of the readers: the error type, naming conventions and model builders."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

#: Name of the coordinate system every reader puts its elements in (full-resolution pixels
#: for Visium, the file's own units for single-cell coordinates).
COORDINATE_SYSTEM = "global"
#: Column of every table naming the shapes element it annotates.
REGION_KEY = "region"
#: Column of every table holding the integer id of the spot/cell in that shapes element.
INSTANCE_KEY = "instance_id"

#: 10x ``feature_type`` -> table name.
FEATURE_TYPE_TABLES = {
    "Gene Expression": "rna",
    "Antibody Capture": "protein",
    "Peaks": "atac",
    "CRISPR Guide Capture": "crispr",
    "Multiplexing Capture": "multiplexing",
    "Custom": "custom",
}


class ReadError(ValueError):
    """A file could not be read. The message names the file, what was wrong, and the fix."""

    def __init__(self, path: str | Path, problem: str, fix: str) -> None:
        self.path = Path(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"Cannot read '{self.path}': {problem}. Fix: {fix}")


class ScaiWarning(UserWarning):
    """A note from napari-scai about the data (shown by the command line, unlike library noise)."""


def _free_name(name: str, taken: Iterable[str]) -> str:
    """``name`` itself if no name in ``taken`` equals it ignoring case, else ``name_2``, ..."""
    lower = {str(t).lower() for t in taken}
    candidate, i = name, 1
    while candidate.lower() in lower:
        i += 1
        candidate = f"{name}_{i}"
    return candidate


def make_room_for_link_keys(adata: AnnData, table: str) -> list[tuple[str, str]]:
    """Rename the user's obs/obsm names that clash with the ones a reader adds.

    spatialdata refuses an ``obs`` column that differs from ``region``/``instance_id`` only in
    case (``Region``, ``INSTANCE_ID``), and an existing ``region``/``instance_id`` column would
    be overwritten by the link keys. Such user columns are kept under ``<name>_original`` (a
    :class:`ScaiWarning` says so), so no user data is lost and reading never fails. Returns
    the (old, new) names.
    """
    renamed: list[tuple[str, str]] = []
    ours = {REGION_KEY, INSTANCE_KEY}
    clashing = [c for c in adata.obs.columns if str(c).lower() in ours]
    for col in clashing:
        others = [c for c in adata.obs.columns if c != col] + [REGION_KEY, INSTANCE_KEY]
        new = _free_name(f"{col}_original", others)
        adata.obs.rename(columns={col: new}, inplace=True)
        renamed.append((f"obs['{col}']", f"obs['{new}']"))
    for key in [k for k in adata.obsm.keys() if k.lower() == "spatial" and k != "spatial"]:
        new = _free_name(f"{key}_original", [*adata.obsm.keys(), "spatial"])
        adata.obsm[new] = adata.obsm.pop(key)
        renamed.append((f"obsm['{key}']", f"obsm['{new}']"))
    if renamed:
        listing = ", ".join(f"{a} -> {b}" for a, b in renamed)
        warnings.warn(
            f"table '{table}': kept {listing}, because napari-scai links each table to its "
            f"shapes with obs['{REGION_KEY}'] / obs['{INSTANCE_KEY}'] (and obsm['spatial']), "
            "which spatialdata requires to be unique ignoring case",
            ScaiWarning,
            stacklevel=3,
        )
    return renamed


def table_name_for_feature_type(feature_type: str) -> str:
    """Return the table name for a 10x feature type (unknown types get a slug of their name)."""
    if feature_type in FEATURE_TYPE_TABLES:
        return FEATURE_TYPE_TABLES[feature_type]
    return re.sub(r"[^0-9a-zA-Z]+", "_", feature_type).strip("_").lower() or "features"


def split_by_feature_type(adata: AnnData) -> dict[str, AnnData]:
    """Split an AnnData with ``var['feature_types']`` into one AnnData per modality."""
    if "feature_types" not in adata.var.columns:
        return {"rna": adata}
    out: dict[str, AnnData] = {}
    types = adata.var["feature_types"].astype(str)
    for ftype in pd.unique(types):
        name = table_name_for_feature_type(ftype)
        part = adata[:, (types == ftype).to_numpy()].copy()
        out[name] = part
    return out


def sanitize_name(name: str) -> str:
    """Make a string usable as a SpatialData element name."""
    clean = re.sub(r"[^0-9a-zA-Z_.-]+", "_", str(name)).strip("_")
    if not clean or not clean[0].isalnum():
        clean = f"s{clean}"
    return clean


def image_to_cyx(array: np.ndarray, path: Path) -> np.ndarray:
    """Convert an image read from disk to (c, y, x) uint8/float, dropping an alpha channel."""
    if array.ndim == 2:
        return array[None]
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        if array.shape[-1] == 4:
            array = array[..., :3]
        return np.moveaxis(array, -1, 0)
    raise ReadError(
        path,
        f"image of shape {array.shape} is neither greyscale nor RGB(A)",
        "pass a 2D greyscale or an RGB image",
    )


def build_spatialdata(
    *,
    sample: str,
    tables: dict[str, AnnData],
    coords: np.ndarray | None,
    radius: np.ndarray | float | None,
    shapes_suffix: str,
    images: dict[str, tuple[np.ndarray, float]] | None = None,
    instance_ids: np.ndarray | None = None,
):
    """Assemble one SpatialData for one sample.

    Parameters
    ----------
    sample
        Sample id, used as a prefix of element names.
    tables
        Modality name -> AnnData, all on the same observations (same order as ``coords``).
    coords
        (n, 2) array of (x, y) centres in the coordinate system's units, or None for data
        without coordinates (tables only).
    radius
        Circle radius per observation (or one value), same units as ``coords``.
    shapes_suffix
        ``"spots"`` or ``"cells"``: the shapes element is ``f"{sample}_{shapes_suffix}"``.
    images
        Image name -> ((c, y, x) array, scale factor from full resolution to this image).
    instance_ids
        Integer ids of the observations; default 0..n-1.
    """
    import spatialdata as sd
    from spatialdata import sanitize_table
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    shapes = {}
    region = None
    if coords is not None:
        n = coords.shape[0]
        ids = np.arange(n) if instance_ids is None else np.asarray(instance_ids)
        region = f"{sample}_{shapes_suffix}"
        rad = np.broadcast_to(np.asarray(radius, dtype=float), (n,)).copy()
        shapes[region] = ShapesModel.parse(
            np.asarray(coords, dtype=float),
            geometry=0,
            radius=rad,
            index=pd.Index(ids, name=INSTANCE_KEY),
            transformations={COORDINATE_SYSTEM: Identity()},
        )
    parsed_tables = {}
    for name, adata in tables.items():
        adata = adata.copy() if adata.is_view else adata
        # spatialdata refuses obs/var/obsm names with spaces etc. (e.g. "altexps_Antibody Capture_sum").
        if region is not None:
            make_room_for_link_keys(adata, name)
        sanitize_table(adata, inplace=True)
        if region is not None:
            adata.obs[REGION_KEY] = pd.Categorical([region] * adata.n_obs)
            adata.obs[INSTANCE_KEY] = ids
            adata.obsm["spatial"] = np.asarray(coords, dtype=float)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                parsed_tables[name] = TableModel.parse(
                    adata, region=region, region_key=REGION_KEY, instance_key=INSTANCE_KEY
                )
        else:
            parsed_tables[name] = TableModel.parse(adata)
    parsed_images = {}
    for name, (array, scalef) in (images or {}).items():
        transform = Identity() if scalef == 1 else Scale([1 / scalef, 1 / scalef], axes=("y", "x"))
        big = max(array.shape[1:]) > 4096
        parsed_images[name] = Image2DModel.parse(
            array,
            dims=("c", "y", "x"),
            transformations={COORDINATE_SYSTEM: transform},
            # Large images get a pyramid so napari draws them through their multiscale levels.
            scale_factors=[2, 2, 2, 2] if big else None,
            chunks=(array.shape[0], 1024, 1024) if big else None,
        )
    return sd.SpatialData(images=parsed_images, shapes=shapes, tables=parsed_tables)


def check_exists(path: Path, what: str, fix: str) -> None:
    """Raise a ReadError if ``path`` does not exist."""
    if not path.exists():
        raise ReadError(path, f"{what} does not exist", fix)
