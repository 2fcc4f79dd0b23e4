"""10x Visium (Space Ranger ``outs/``) reader.

We build on scanpy's 10x matrix reader and spatialdata's models rather than calling
``spatialdata_io.visium`` directly, because that reader (0.7): keeps only the
"Gene Expression" features (no CITE-seq/Multiome tables); silently gives NaN coordinates
when matrix barcodes are missing from the positions file; does not read
``tissue_positions.parquet``; and fails with a bare ``KeyError`` on incomplete scalefactors.
The element layout and transforms follow the same conventions so both plugins agree.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from napari_scai.io._common import (
    ReadError,
    build_spatialdata,
    check_exists,
    image_to_cyx,
    sanitize_name,
    scanpy_image,
    set_uns_spatial,
    split_by_feature_type,
)
from napari_scai.io.tenx import read_10x_counts

POSITION_COLUMNS = [
    "barcode",
    "in_tissue",
    "array_row",
    "array_col",
    "pxl_row_in_fullres",
    "pxl_col_in_fullres",
]
POSITION_FILES = ("tissue_positions.parquet", "tissue_positions.csv", "tissue_positions_list.csv")
COUNT_FILES = (
    "filtered_feature_bc_matrix.h5",
    "filtered_feature_bc_matrix",
    "raw_feature_bc_matrix.h5",
)


def is_visium_folder(path: str | Path) -> bool:
    """True if ``path`` looks like a Space Ranger output folder.

    That is a ``spatial/`` folder holding a positions file, scale factors or a tissue image
    (the reader then names whatever is missing).
    """
    path = Path(path)
    spatial = path / "spatial"
    if not (path.is_dir() and spatial.is_dir()):
        return False
    markers = (
        *POSITION_FILES,
        "scalefactors_json.json",
        "tissue_lowres_image.png",
        "tissue_hires_image.png",
    )
    return any((spatial / f).exists() for f in markers)


def find_counts_file(path: Path) -> Path:
    """Find the feature-barcode matrix in a Space Ranger folder (prefixed names allowed)."""
    for name in COUNT_FILES:
        if (path / name).exists():
            return path / name
    for name in COUNT_FILES:
        hits = sorted(path.glob(f"*_{name}"))
        if hits:
            return hits[0]
    raise ReadError(
        path,
        "no filtered_feature_bc_matrix.h5 (or MTX folder) found in the folder",
        "pass the Space Ranger 'outs' folder, or give the matrix with counts_file=...",
    )


def read_positions(path: Path) -> pd.DataFrame:
    """Read Visium spot positions (v1 CSV without header, v2 CSV with header, or parquet).

    Returns a DataFrame indexed by barcode with the standard columns.
    """
    check_exists(
        path,
        "the tissue positions file",
        "pass the Space Ranger 'outs' folder with spatial/tissue_positions*.csv",
    )
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            first = path.open().readline()
            header = 0 if "barcode" in first or "in_tissue" in first else None
            df = pd.read_csv(path, header=header)
    except Exception as err:  # noqa: BLE001 - any parse failure is reported the same way
        raise ReadError(
            path, f"could not parse the positions table ({err})", "use the file Space Ranger wrote"
        ) from err
    if list(df.columns) != POSITION_COLUMNS:
        if df.shape[1] != len(POSITION_COLUMNS):
            raise ReadError(
                path,
                f"expected 6 columns {POSITION_COLUMNS}, found {df.shape[1]}: {list(df.columns)}",
                "use the tissue_positions file Space Ranger wrote (v1 without header or v2 with header)",
            )
        df.columns = POSITION_COLUMNS
    return df.set_index("barcode")


def read_scalefactors(path: Path, images: list[str]) -> dict[str, float]:
    """Read scalefactors_json.json and check it has the keys the present images need."""
    check_exists(
        path,
        "the scale factors file",
        "pass the Space Ranger 'outs' folder with spatial/scalefactors_json.json",
    )
    try:
        factors = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ReadError(
            path,
            f"not valid JSON ({err})",
            "restore the scalefactors_json.json that Space Ranger wrote",
        ) from err
    needed = ["spot_diameter_fullres"] + [f"tissue_{name}_scalef" for name in images]
    missing = [k for k in needed if k not in factors]
    if missing:
        raise ReadError(
            path,
            f"missing key(s) {missing} (has {sorted(factors)})",
            "restore the scalefactors_json.json that Space Ranger wrote; it must give spot_diameter_fullres "
            "and tissue_<hires|lowres>_scalef for each image in spatial/",
        )
    return factors


def read_visium(
    path: str | Path,
    *,
    sample: str | None = None,
    counts_file: str | Path | None = None,
    fullres_image: str | Path | None = None,
):
    """Read a Space Ranger output folder into a SpatialData.

    Parameters
    ----------
    path
        The ``outs/`` folder: a matrix (``filtered_feature_bc_matrix.h5`` or its MTX folder)
        and ``spatial/`` with positions, scale factors and images.
    sample
        Sample id used to name elements; default: the folder name (or its parent's for ``outs``).
    counts_file
        Matrix to use instead of the one found in ``path``.
    fullres_image
        Optional full-resolution H&E (TIFF/PNG); stored with a multiscale pyramid.

    Returns
    -------
    SpatialData with images ``{sample}_hires_image`` / ``{sample}_lowres_image`` (whichever
    exist; Scale transforms to full-res pixels), circles ``{sample}_spots`` (radius =
    ``spot_diameter_fullres / 2``), and one table per feature type (``rna``, ``protein``,
    ``atac``) with ``obs[array_row, array_col, in_tissue]`` and ``obsm['spatial']`` (x, y).
    """
    from skimage.io import imread

    path = Path(path)
    check_exists(path, "the Visium folder", "pass the path of a Space Ranger 'outs' folder")
    if not path.is_dir():
        raise ReadError(
            path, "not a folder", "pass the Space Ranger 'outs' folder (with spatial/ inside)"
        )
    spatial = path / "spatial"
    check_exists(
        spatial, "the spatial/ folder", "pass the Space Ranger 'outs' folder that contains spatial/"
    )
    if sample is None:
        sample = path.parent.name if path.name == "outs" else path.name
    sample = sanitize_name(sample)

    counts_path = Path(counts_file) if counts_file is not None else find_counts_file(path)
    if not counts_path.is_absolute() and not counts_path.exists():
        counts_path = path / counts_path
    adata = read_10x_counts(counts_path)

    pos_path = next((spatial / f for f in POSITION_FILES if (spatial / f).exists()), None)
    if pos_path is None:
        raise ReadError(
            spatial,
            f"the spot positions file is missing: none of {', '.join(POSITION_FILES)} is in spatial/ "
            f"(it has {sorted(p.name for p in spatial.iterdir())})",
            "copy spatial/tissue_positions.csv (Space Ranger >= 2.0) or tissue_positions_list.csv "
            "(1.x) from the same Space Ranger run into spatial/",
        )
    positions = read_positions(pos_path)
    missing = ~adata.obs_names.isin(positions.index)
    if missing.all():
        raise ReadError(
            pos_path,
            f"none of the {adata.n_obs} matrix barcodes (e.g. {adata.obs_names[0]}) is in the positions file "
            f"(e.g. {positions.index[0]})",
            f"use the matrix and spatial/ folder of the same Space Ranger run (matrix: {counts_path.name})",
        )
    if missing.any():
        raise ReadError(
            pos_path,
            f"{int(missing.sum())} of {adata.n_obs} matrix barcodes have no position (e.g. {adata.obs_names[missing][0]})",
            f"use the matrix and spatial/ folder of the same Space Ranger run (matrix: {counts_path.name})",
        )
    pos = positions.loc[adata.obs_names]
    for col in ["in_tissue", "array_row", "array_col"]:
        adata.obs[col] = pos[col].to_numpy().astype(int)
    coords = pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(dtype=float)

    image_files = {name: spatial / f"tissue_{name}_image.png" for name in ("hires", "lowres")}
    image_files = {k: v for k, v in image_files.items() if v.exists()}
    factors = read_scalefactors(spatial / "scalefactors_json.json", list(image_files))
    images = {}
    uns_images = {}
    for name, file in image_files.items():
        cyx = image_to_cyx(imread(file), file)
        images[f"{sample}_{name}_image"] = (cyx, float(factors[f"tissue_{name}_scalef"]))
        uns_images[name] = (scanpy_image(cyx), f"{sample}_{name}_image")
    if fullres_image is not None:
        file = Path(fullres_image)
        check_exists(file, "the full-resolution image", "pass the H&E image given to Space Ranger")
        images[f"{sample}_full_image"] = (image_to_cyx(imread(file), file), 1.0)

    tables = split_by_feature_type(adata)
    for t in tables.values():
        # as scanpy's read_visium: sc.pl.spatial and squidpy draw the table on its H&E
        set_uns_spatial(
            t,
            sample,
            images=uns_images,
            scalefactors={k: v for k, v in factors.items() if isinstance(v, int | float)},
        )
    radius = float(factors["spot_diameter_fullres"]) / 2
    return build_spatialdata(
        sample=sample,
        tables=tables,
        coords=coords,
        radius=radius,
        shapes_suffix="spots",
        images=images,
    )


def spot_image_check(sdata) -> np.ndarray:  # pragma: no cover - debugging helper
    """Return spot centres in full-resolution pixels (x, y) for quick checks."""
    shapes = next(iter(sdata.shapes.values()))
    return np.column_stack([shapes.geometry.x, shapes.geometry.y])
