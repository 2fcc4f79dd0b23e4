"""10x Genomics feature-barcode matrices (HDF5 or MTX folder), split by feature type."""

from __future__ import annotations

import warnings
from pathlib import Path

from anndata import AnnData

from napari_scai.io._common import ReadError, build_spatialdata, check_exists, split_by_feature_type


def read_10x_counts(path: str | Path) -> AnnData:
    """Read a 10x feature-barcode matrix with all feature types (``var['feature_types']``).

    ``path`` is a ``*.h5`` file (10x v2 or v3 HDF5 layout) or a Cell Ranger / Space Ranger
    ``*_feature_bc_matrix/`` folder with ``matrix.mtx.gz``.
    """
    import scanpy as sc

    path = Path(path)
    check_exists(
        path, "the count matrix", "pass the path of a filtered_feature_bc_matrix.h5 file or folder"
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if path.is_dir():
                adata = sc.read_10x_mtx(path, var_names="gene_symbols", gex_only=False)
            else:
                # scanpy's reader, but with gex_only=False: spatialdata-io's Visium reader keeps
                # only "Gene Expression", which drops CITE-seq proteins and Multiome peaks.
                adata = sc.read_10x_h5(path, gex_only=False)
    except (OSError, KeyError, ValueError) as err:
        raise ReadError(
            path,
            f"not a readable 10x feature-barcode matrix ({type(err).__name__}: {err})",
            "pass a Cell Ranger/Space Ranger filtered_feature_bc_matrix.h5 (v2 or v3 layout) or its MTX folder",
        ) from err
    adata.var_names_make_unique()
    if "feature_types" in adata.var.columns:
        adata.var["feature_types"] = adata.var["feature_types"].astype(str)
    return adata


def read_10x_h5(path: str | Path, *, sample: str | None = None):
    """Read a 10x HDF5 matrix (no coordinates) into a SpatialData holding one table per feature type.

    ``Gene Expression`` -> ``rna``, ``Antibody Capture`` -> ``protein`` (CITE-seq),
    ``Peaks`` -> ``atac`` (Multiome).
    """
    path = Path(path)
    adata = read_10x_counts(path)
    from napari_scai.io._common import sanitize_name

    sample = sanitize_name(sample or path.stem.replace(".h5", ""))
    return build_spatialdata(
        sample=sample,
        tables=split_by_feature_type(adata),
        coords=None,
        radius=None,
        shapes_suffix="cells",
    )
