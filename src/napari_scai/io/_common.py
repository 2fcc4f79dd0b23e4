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


# ---------------------------------------------------------------------------------------------
# uns['spatial'] as scanpy's Visium reader writes it (so sc.pl.spatial / sq.pl.spatial_scatter
# draw our tables unchanged)

#: Per library, which image element each ``uns['spatial'][library]['images']`` entry is stored
#: as; the store keeps the pixels once (in the image element) and :func:`restore_uns_images`
#: refills the table on read.
UNS_IMAGE_ELEMENTS = "napari_scai_image_elements"
#: Space Ranger's own scale factors, kept when ``hires`` stands for the lowres image.
SPACERANGER_SCALEFACTORS = "napari_scai_spaceranger_scalefactors"


def scanpy_image(array: np.ndarray) -> np.ndarray:
    """An image as scanpy's ``read_visium`` keeps it: (y, x, c) float32 in [0, 1].

    Accepts (y, x, c) or (c, y, x) arrays, uint8 (divided by 255) or float.
    """
    img = np.asarray(array)
    if img.ndim == 3 and img.shape[0] in (1, 3, 4) and img.shape[-1] not in (1, 3, 4):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.dtype == np.uint8:
        return img.astype(np.float32) / np.float32(255)
    img = img.astype(np.float32)
    return img / np.float32(255) if img.size and img.max() > 1.0 else img


def set_uns_spatial(
    adata: AnnData,
    library: str,
    *,
    images: dict[str, tuple[np.ndarray, str]],
    scalefactors: dict[str, float],
    metadata: dict | None = None,
) -> None:
    """Write ``uns['spatial'][library]`` the way scanpy's Visium reader does.

    ``images`` maps ``hires``/``lowres`` to (scanpy-style array, name of the SpatialData image
    element holding the same pixels). The array objects are shared, not copied, between the
    tables of one sample. With a lowres image only, ``hires`` is the same array and
    ``tissue_hires_scalef`` the lowres factor (Space Ranger's factors are kept under
    ``napari_scai_spaceranger_scalefactors``), so squidpy's default ``img_res_key="hires"``
    works.
    """
    images = dict(images)
    scalefactors = {k: float(v) for k, v in scalefactors.items()}
    if "lowres" in images and "hires" not in images:
        # squidpy's spatial_scatter asks for "hires" by default: with only the lowres image at
        # hand, "hires" is that same array (same object, stored once) with its scale factor.
        # Space Ranger's factors stay beside (squidpy matches any scalefactors key containing
        # "hires", so the original may not stay in there).
        images["hires"] = images["lowres"]
        original = dict(scalefactors)
        scalefactors["tissue_hires_scalef"] = scalefactors["tissue_lowres_scalef"]
    else:
        original = None
    entry = {
        "images": {res: arr for res, (arr, _name) in images.items()},
        "scalefactors": scalefactors,
        UNS_IMAGE_ELEMENTS: {res: name for res, (_arr, name) in images.items()},
    }
    if original is not None:
        entry[SPACERANGER_SCALEFACTORS] = original
    if metadata:
        entry["metadata"] = dict(metadata)
    spatial = adata.uns.get("spatial")
    spatial = dict(spatial) if isinstance(spatial, dict) else {}
    spatial[library] = entry
    adata.uns["spatial"] = spatial


def tables_without_uns_images(tables: dict, stored_images: Iterable[str]) -> dict[str, AnnData]:
    """Tables to store: ``uns`` images that are also stored image elements are left out.

    ``stored_images`` names the image elements the store will hold. Returns new AnnData
    objects sharing every array with the originals (nothing is copied, and the caller's tables
    are not modified).
    """
    stored_images = set(stored_images)
    out = {}
    for name, table in tables.items():
        spatial = table.uns.get("spatial")
        if not isinstance(spatial, dict):
            out[name] = table
            continue
        new_spatial, changed = {}, False
        for library, entry in spatial.items():
            refs = entry.get(UNS_IMAGE_ELEMENTS, {}) if isinstance(entry, dict) else {}
            stored = {res: el for res, el in dict(refs).items() if el in stored_images}
            if not stored:
                new_spatial[library] = entry
                continue
            changed = True
            new_entry = dict(entry)
            new_entry["images"] = {
                res: arr for res, arr in dict(entry.get("images", {})).items() if res not in stored
            }
            new_spatial[library] = new_entry
        if not changed:
            out[name] = table
            continue
        uns = dict(table.uns)
        uns["spatial"] = new_spatial
        out[name] = AnnData(
            X=table.X,
            obs=table.obs,
            var=table.var,
            uns=uns,
            obsm=dict(table.obsm),
            varm=dict(table.varm),
            obsp=dict(table.obsp),
            varp=dict(table.varp),
            layers=dict(table.layers),
            raw=table.raw,
        )
    return out


def restore_uns_images(sdata) -> None:
    """Refill ``uns['spatial'][library]['images']`` of tables read from a store (in place)."""
    cache: dict[str, np.ndarray] = {}

    def pixels(element: str) -> np.ndarray:
        if element not in cache:
            image = sdata.images[element]
            if hasattr(image, "children") and image.children:  # multiscale: full level
                image = next(iter(image.values()))["image"]
            cache[element] = scanpy_image(np.asarray(image))
        return cache[element]

    for table in sdata.tables.values():
        spatial = table.uns.get("spatial")
        if not isinstance(spatial, dict):
            continue
        for library, entry in list(spatial.items()):
            if not isinstance(entry, dict):
                continue
            if UNS_IMAGE_ELEMENTS not in entry and not entry.get("images"):
                # a store written before tables carried images: link the sample's images
                found = {
                    res: f"{sanitize_name(library)}_{res}_image"
                    for res in ("hires", "lowres")
                    if f"{sanitize_name(library)}_{res}_image" in sdata.images
                }
                if found and "scalefactors" in entry:
                    set_uns_spatial(
                        table,
                        str(library),
                        images={res: (pixels(el), el) for res, el in found.items()},
                        scalefactors=entry["scalefactors"],
                        metadata=entry.get("metadata"),
                    )
                    spatial = table.uns["spatial"]
                continue
            if UNS_IMAGE_ELEMENTS not in entry:
                continue
            images = dict(entry.get("images", {}))
            for res, element in dict(entry[UNS_IMAGE_ELEMENTS]).items():
                if res in images or element not in sdata.images:
                    continue
                images[res] = pixels(element)
            entry["images"] = images
