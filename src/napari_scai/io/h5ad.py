"""AnnData ``.h5ad`` reader: spot or single-cell data, CITE-seq with protein in ``obsm``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from napari_scai.io._common import (
    ReadError,
    build_spatialdata,
    check_exists,
    image_to_cyx,
    sanitize_name,
    scanpy_image,
    set_uns_spatial,
)

#: obsm keys tried, in order, for (x, y) coordinates.
SPATIAL_OBSM_KEYS = ("spatial", "X_spatial", "spatial_coords", "xy")
#: obs column pairs tried, in order, for (x, y) coordinates.
SPATIAL_OBS_PAIRS = (
    ("x", "y"),
    ("X_centroid", "Y_centroid"),
    ("x_centroid", "y_centroid"),
    ("X_position", "Y_position"),
    ("center_x", "center_y"),
    ("centroid_x", "centroid_y"),
)
#: obsm DataFrames that are protein (ADT) counts in CITE-seq files.
PROTEIN_OBSM_KEYS = ("protein_expression", "protein", "adt", "ADT", "X_adt", "protein_counts")

_PEAK = re.compile(r"^(chr)?[0-9XYMxym]{1,2}[-:_]\d+[-_]\d+$")
_CD_MARKER = re.compile(r"^CD\d")


def guess_modality(adata: AnnData) -> str:
    """Guess the modality of ``adata.X`` from its feature names.

    Genomic ranges (``chr1-100-200``) -> ``atac``; a panel where at least 30% of names are
    CD markers (``CD3``, ``CD45RA``) -> ``protein``; otherwise ``rna``.
    ``uns['modality']`` or a single ``var['feature_types']`` value wins when present.
    """
    if "modality" in adata.uns and isinstance(adata.uns["modality"], str):
        return adata.uns["modality"]
    if "feature_types" in adata.var.columns and adata.var["feature_types"].nunique() == 1:
        from napari_scai.io._common import table_name_for_feature_type

        return table_name_for_feature_type(str(adata.var["feature_types"].iloc[0]))
    names = pd.Index(adata.var_names[:2000]).astype(str)
    if len(names) and np.mean([bool(_PEAK.match(n)) for n in names]) > 0.8:
        return "atac"
    if len(names) and np.mean([bool(_CD_MARKER.match(n)) for n in names]) >= 0.3:
        return "protein"
    return "rna"


def find_coordinates(
    adata: AnnData, spatial_key: str | None
) -> tuple[np.ndarray | None, str | None]:
    """Return (n, 2) x/y coordinates and where they came from, or (None, None)."""
    if spatial_key is not None:
        if spatial_key in adata.obsm:
            return np.asarray(adata.obsm[spatial_key], dtype=float)[:, :2], f"obsm['{spatial_key}']"
        return None, None
    for key in SPATIAL_OBSM_KEYS:
        if key in adata.obsm and np.asarray(adata.obsm[key]).shape[1] >= 2:
            return np.asarray(adata.obsm[key], dtype=float)[:, :2], f"obsm['{key}']"
    for xk, yk in SPATIAL_OBS_PAIRS:
        if xk in adata.obs.columns and yk in adata.obs.columns:
            return adata.obs[[xk, yk]].to_numpy(dtype=float), f"obs['{xk}', '{yk}']"
    return None, None


def estimate_radius(coords: np.ndarray) -> float:
    """Half the median nearest-neighbour distance: circles that touch but do not overlap."""
    from scipy.spatial import cKDTree

    if len(coords) < 2:
        return 1.0
    sample = (
        coords
        if len(coords) <= 20000
        else coords[np.random.default_rng(0).choice(len(coords), 20000, replace=False)]
    )
    dist, _ = cKDTree(coords).query(sample, k=2)
    med = float(np.median(dist[:, 1]))
    return med / 2 if med > 0 else 1.0


def _obsm_tables(adata: AnnData) -> dict[str, AnnData]:
    """Turn per-feature DataFrames in ``obsm`` (e.g. CITE-seq protein, hashtags) into tables."""
    out = {}
    for key in list(adata.obsm.keys()):
        value = adata.obsm[key]
        if not isinstance(value, pd.DataFrame):
            continue
        name = "protein" if key in PROTEIN_OBSM_KEYS else sanitize_name(key).lower()
        table = AnnData(
            X=value.to_numpy(dtype=np.float32),
            obs=pd.DataFrame(index=adata.obs_names.copy()),
            var=pd.DataFrame(index=pd.Index(value.columns.astype(str), name=None)),
        )
        table.var_names_make_unique()
        out[name] = table
        del adata.obsm[key]
    return out


def _uns_images(adata: AnnData, path: Path, sample: str) -> tuple[dict, float | None, dict]:
    """Images stored scanpy-style in ``uns['spatial'][library]['images']`` with scale factors.

    Returns the image elements to build, the spot diameter, and the ``uns['spatial']`` entries
    to keep on the tables (images in scanpy's form, linked to those elements).
    """
    images: dict = {}
    uns_images: dict = {}
    diameter = None
    spatial = adata.uns.get("spatial")
    if not isinstance(spatial, dict):
        return images, diameter, {}
    for library, entry in spatial.items():
        if not isinstance(entry, dict) or "images" not in entry:
            continue
        factors = entry.get("scalefactors", {})
        for res, array in entry["images"].items():
            key = f"tissue_{res}_scalef"
            if key not in factors:
                raise ReadError(
                    path,
                    f"uns['spatial']['{library}']['scalefactors'] has no '{key}' for image '{res}'",
                    "add the scale factor from the Space Ranger scalefactors_json.json",
                )
            img = np.asarray(array)
            if img.dtype.kind == "f" and img.max() <= 1.0:
                img = (img * 255).round().astype(np.uint8)
            element = f"{sanitize_name(library)}_{res}_image"
            images[element] = (image_to_cyx(img, path), float(factors[key]))
            uns_images.setdefault(library, {})[res] = (scanpy_image(np.asarray(array)), element)
        if "spot_diameter_fullres" in factors:
            diameter = float(factors["spot_diameter_fullres"])
    # the same entries, images as scanpy keeps them, linked to the image elements
    keep: dict = {}
    for library, entry in spatial.items():
        if library in uns_images:
            probe = AnnData(np.zeros((1, 1), dtype=np.float32))
            set_uns_spatial(
                probe,
                str(library),
                images=uns_images[library],
                scalefactors={
                    k: v
                    for k, v in entry.get("scalefactors", {}).items()
                    if isinstance(v, int | float | np.integer | np.floating)
                },
                metadata=entry.get("metadata") if isinstance(entry.get("metadata"), dict) else None,
            )
            keep[str(library)] = probe.uns["spatial"][str(library)]
    return images, diameter, keep


def read_h5ad(
    path: str | Path,
    *,
    sample: str | None = None,
    modality: str | None = None,
    spatial_key: str | None = None,
    require_spatial: bool = False,
    radius: float | None = None,
):
    """Read an AnnData ``.h5ad`` file into a SpatialData.

    Parameters
    ----------
    path
        The ``.h5ad`` file.
    sample
        Sample id used to name elements; default: the file name without extension.
    modality
        Table name for ``X`` (``rna``, ``protein``, ``atac``, ...); default: guessed from the
        feature names (:func:`guess_modality`).
    spatial_key
        ``obsm`` key with (x, y) coordinates; default: ``obsm['spatial']`` or common obs
        column pairs (``x``/``y``, ``X_centroid``/``Y_centroid``, ...).
    require_spatial
        Raise :class:`ReadError` when no coordinates are found (the viewer needs them).
        Otherwise data without coordinates gives a SpatialData with tables only.
    radius
        Circle radius for cells/spots; default: from ``uns['spatial']`` scale factors, else
        half the median nearest-neighbour distance.

    Returns
    -------
    SpatialData with circles ``{sample}_cells`` (or ``_spots`` when Visium images are in
    ``uns``), images from ``uns['spatial']``, a table for ``X`` and one for each per-feature
    DataFrame in ``obsm`` (CITE-seq ``protein_expression`` -> ``protein``).
    """
    import anndata as ad

    path = Path(path)
    check_exists(path, "the .h5ad file", "check the path")
    try:
        adata = ad.read_h5ad(path)
    except Exception as err:  # noqa: BLE001 - h5py/anndata raise many types for a bad file
        raise ReadError(
            path,
            f"not a readable AnnData file ({type(err).__name__}: {err})",
            "pass a file written by AnnData/scanpy (.h5ad)",
        ) from err
    sample = sanitize_name(sample or path.name.removesuffix(".h5ad"))
    adata.obs_names_make_unique()
    coords, source = find_coordinates(adata, spatial_key)
    if coords is None and (require_spatial or spatial_key is not None):
        where = f"obsm['{spatial_key}']" if spatial_key else "obsm['spatial'] or obs x/y columns"
        raise ReadError(
            path,
            f"no spatial coordinates: {where} not found (obsm has {list(adata.obsm.keys())}, "
            f"obs has {list(adata.obs.columns)[:12]})",
            "store (x, y) in obsm['spatial'], or pass spatial_key=<obsm key>; use require_spatial=False "
            "to open it as a non-spatial table",
        )
    if coords is not None and not np.isfinite(coords).all():
        bad = int((~np.isfinite(coords)).any(axis=1).sum())
        raise ReadError(
            path,
            f"{bad} observations have NaN/inf coordinates in {source}",
            "drop those observations or fill their coordinates",
        )
    images, diameter, uns_spatial = _uns_images(adata, path, sample)
    if images:
        adata.uns["spatial"] = uns_spatial
    extra = _obsm_tables(adata)
    for table in extra.values():  # every table of the sample draws on the same H&E
        if uns_spatial:
            table.uns["spatial"] = dict(uns_spatial)
    name = modality or guess_modality(adata)
    tables = {name: adata, **{k: v for k, v in extra.items() if k != name}}
    if radius is None:
        radius = (
            diameter / 2 if diameter else (estimate_radius(coords) if coords is not None else None)
        )
    suffix = "spots" if images else "cells"
    return build_spatialdata(
        sample=sample,
        tables=tables,
        coords=coords,
        radius=radius,
        shapes_suffix=suffix,
        images=images,
    )
