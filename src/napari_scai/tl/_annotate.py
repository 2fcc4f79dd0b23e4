"""Annotate spots/cells from polygons drawn on the tissue, and move annotations in and out.

- :func:`annotate_from_shapes`: label every spot/cell whose centre lies inside a polygon.
- :func:`annotations_to_geodataframe`: the shapes-element schema for saved annotations
  (``geometry``, ``class``, ``color``, ``author``, ``created``).
- :func:`export_annotation_csv` / :func:`import_annotation_csv`: per-spot labels as CSV
  (``spot_id,class``).
- :func:`export_geojson` / :func:`import_geojson`: annotation polygons as GeoJSON.

All coordinates are (x, y) in full-resolution pixels (the intrinsic coordinates of the spots'
shapes element). File writes are atomic: a temporary file in the target folder is renamed
over the destination, so an interrupted save never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from napari_scai._validate import check_choice, check_xy, get_table
from napari_scai.io._common import ReadError
from napari_scai.tl._api import copy_data, deprecated_call

if TYPE_CHECKING:
    import geopandas as gpd
    from anndata import AnnData

__all__ = [
    "ANNOTATION_COLUMNS",
    "annotate_from_shapes",
    "annotations_to_geodataframe",
    "export_annotation_csv",
    "export_geojson",
    "import_annotation_csv",
    "import_geojson",
    "points_in_polygons",
]

#: Columns (besides ``geometry``) of a saved annotation shapes element.
ANNOTATION_COLUMNS = ("class", "color", "author", "created")

_ID_COLUMNS = ("spot_id", "barcode", "Barcode", "cell_id", "obs_name", "obs_names")

PolygonsLike = Any  # list of (N, 2) arrays | list of shapely geometries | GeoDataFrame


# --------------------------------------------------------------------------- helpers


_get_table = get_table  # one lookup for every tl function (napari_scai._validate)


def _default_palette(n: int) -> list[str]:
    """The project's categorical palette for ``n`` categories (hex strings)."""
    try:
        from napari_scai._colors import palette
    except ImportError:  # pragma: no cover - fallback while the shared module is absent
        from scanpy.plotting import palettes

        base = list(palettes.default_102)
        return [base[i % len(base)] for i in range(n)]
    return [str(c) for c in palette(n)]


def _category_colors(adata: AnnData, key: str, categories: Sequence[Any]) -> list[str]:
    """Colours for ``categories`` of ``obs[key]``: from ``uns[f"{key}_colors"]`` if aligned."""
    stored = adata.uns.get(f"{key}_colors")
    if stored is not None and len(stored) >= len(categories):
        col = adata.obs[key]
        if isinstance(col.dtype, pd.CategoricalDtype):
            by_name = dict(zip(col.cat.categories, list(stored), strict=False))
            if all(c in by_name for c in categories):
                return [str(by_name[c]) for c in categories]
        elif len(stored) == len(categories):
            return [str(c) for c in stored]
    return _default_palette(len(categories))


def _atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same folder + ``os.replace``."""
    path = Path(path)
    if not path.parent.exists():
        raise FileNotFoundError(
            f"Cannot write {path}: folder {path.parent} does not exist. Create it first."
        )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _to_geometry(shape: Any, i: int) -> BaseGeometry:
    if isinstance(shape, BaseGeometry):
        geom = shape
    else:
        verts = np.asarray(shape, dtype=np.float64)
        if verts.ndim != 2 or verts.shape[1] != 2 or verts.shape[0] < 3:
            raise ValueError(
                f"Polygon {i} must be an (N, 2) array of (x, y) vertices with N >= 3; got shape "
                f"{verts.shape}. (napari shapes are (row, col) = (y, x): flip with [:, ::-1].)"
            )
        geom = shapely.Polygon(verts)
    if geom.is_empty:
        raise ValueError(f"Polygon {i} is empty.")
    if not geom.is_valid:  # e.g. self-intersecting free-hand outlines
        geom = shapely.make_valid(geom)
    return geom


def _shapes_to_geometries(
    shapes: PolygonsLike, classes: Sequence[Any] | str | None
) -> tuple[list[BaseGeometry], list[Any], dict[Any, str]]:
    """Normalise the ``shapes``/``classes`` inputs; returns geometries, classes, colours."""
    colors: dict[Any, str] = {}
    if hasattr(shapes, "geometry") and hasattr(shapes, "columns"):  # GeoDataFrame
        column = "class" if classes is None else classes
        if not isinstance(column, str):
            if len(column) != len(shapes):
                raise ValueError(
                    f"`classes` has {len(column)} entries but the GeoDataFrame has "
                    f"{len(shapes)} polygons; pass one class per polygon or a column name."
                )
            cls = list(column)
        else:
            if column not in shapes.columns:
                raise KeyError(
                    f"GeoDataFrame has no class column {column!r}; its columns are "
                    f"{list(shapes.columns)}. Pass classes=<column name>."
                )
            cls = list(shapes[column])
        if "color" in shapes.columns:
            for c, col in zip(cls, shapes["color"], strict=True):
                if isinstance(col, str) and col:
                    colors.setdefault(c, col)
        geoms = [_to_geometry(g, i) for i, g in enumerate(shapes.geometry)]
        return geoms, cls, colors
    if isinstance(classes, str) or classes is None:
        raise TypeError(
            "`classes` must be a sequence with one class per polygon when `shapes` is a list "
            f"(got {classes!r}); a column name is only accepted for a GeoDataFrame."
        )
    shapes = list(shapes)
    cls = list(classes)
    if len(cls) != len(shapes):
        raise ValueError(
            f"Got {len(shapes)} polygons but {len(cls)} classes; pass one class per polygon."
        )
    geoms = [_to_geometry(s, i) for i, s in enumerate(shapes)]
    return geoms, cls, colors


def _polygon_parts(geom: BaseGeometry) -> list[shapely.Polygon]:
    parts = shapely.get_parts(geom)
    polys: list[shapely.Polygon] = []
    for p in parts:
        if isinstance(p, shapely.Polygon):
            polys.append(p)
        elif hasattr(p, "geoms"):  # nested collection from make_valid
            polys.extend(_polygon_parts(p))
    return polys


def _inside_matplotlib(geom: BaseGeometry, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from matplotlib.path import Path as MplPath

    inside = np.zeros(x.shape[0], dtype=bool)
    xy = np.column_stack([x, y])
    for poly in _polygon_parts(geom):
        part = MplPath(np.asarray(poly.exterior.coords)).contains_points(xy)
        for ring in poly.interiors:
            part &= ~MplPath(np.asarray(ring.coords)).contains_points(xy)
        inside |= part
    return inside


def _inside(
    geom: BaseGeometry,
    x: np.ndarray,
    y: np.ndarray,
    method: Literal["shapely", "matplotlib"],
) -> np.ndarray:
    """Boolean mask of points strictly inside ``geom``, with a bounding-box prefilter."""
    xmin, ymin, xmax, ymax = geom.bounds
    cand = np.flatnonzero((x >= xmin) & (x <= xmax) & (y >= ymin) & (y <= ymax))
    inside = np.zeros(x.shape[0], dtype=bool)
    if cand.size == 0:
        return inside
    if method == "shapely":
        shapely.prepare(geom)
        inside[cand] = shapely.contains_xy(geom, x[cand], y[cand])
    elif method == "matplotlib":
        inside[cand] = _inside_matplotlib(geom, x[cand], y[cand])
    else:
        check_choice("method", method, ["shapely", "matplotlib"])
    return inside


def points_in_polygons(
    xy: np.ndarray,
    polygons: Sequence[BaseGeometry],
    *,
    method: Literal["shapely", "matplotlib"] = "shapely",
) -> np.ndarray:
    """Index of the last polygon containing each point (``-1`` when none does).

    Parameters
    ----------
    xy
        (n, 2) point coordinates (x, y).
    polygons
        Shapely (multi)polygons, in drawing order; later polygons win where they overlap.
    method
        ``"shapely"`` (prepared geometry + :func:`shapely.contains_xy`, the default, faster in
        ``benchmarks/annotate.py``) or ``"matplotlib"`` (:meth:`matplotlib.path.Path.contains_points`).
        Both use a bounding-box prefilter. Points exactly on an edge may differ.

    Returns
    -------
    numpy.ndarray
        int64 array of length n.
    """
    xy = check_xy("xy", xy)
    x = np.ascontiguousarray(xy[:, 0])
    y = np.ascontiguousarray(xy[:, 1])
    owner = np.full(xy.shape[0], -1, dtype=np.int64)
    for i, geom in enumerate(polygons):
        owner[_inside(geom, x, y, method)] = i
    return owner


def _spot_centres(data: Any, adata: AnnData) -> np.ndarray:
    """(x, y) centres: ``obsm['spatial']``, else the centres of the annotated shapes element."""
    if "spatial" in adata.obsm:
        return np.asarray(adata.obsm["spatial"])[:, :2]
    attrs = adata.uns.get("spatialdata_attrs", {})
    region = attrs.get("region")
    shapes = getattr(data, "shapes", None)
    if shapes is not None and isinstance(region, str) and region in shapes:
        gdf = shapes[region]
        centres = shapely.centroid(gdf.geometry.values)
        xy = pd.DataFrame(
            {"x": shapely.get_x(centres), "y": shapely.get_y(centres)}, index=gdf.index
        )
        instance_key = attrs.get("instance_key")
        if instance_key in adata.obs:
            ids = adata.obs[instance_key].to_numpy()
            missing = ~pd.Index(ids).isin(xy.index)
            if missing.any():
                raise KeyError(
                    f"{int(missing.sum())} table rows have no matching shape in {region!r} "
                    f"(instance ids such as {list(ids[missing][:3])})."
                )
            return xy.loc[ids].to_numpy()
        if len(xy) == adata.n_obs:
            return xy.to_numpy()
    raise KeyError(
        "No spot/cell coordinates found: the table has no obsm['spatial'] and no shapes "
        "element it annotates. Pass coords=<(n, 2) array of x, y> or an obsm key."
    )


# --------------------------------------------------------------------------- public API


@deprecated_call(positional=("shapes",), renamed={"key": "key_added"})
def annotate_from_shapes(
    data: Any,
    *,
    shapes: PolygonsLike,
    classes: Sequence[Any] | str | None,
    key_added: str = "scai_annotation",
    table: str = "rna",
    coords: np.ndarray | str | None = None,
    overwrite: bool = True,
    colors: Mapping[Any, str] | None = None,
    method: Literal["shapely", "matplotlib"] = "shapely",
    copy: bool = False,
) -> Any:
    """Label every spot/cell whose centre lies inside an annotation polygon.

    Parameters
    ----------
    data
        A SpatialData (``tables[table]`` is annotated) or an AnnData.
    shapes
        The polygons, in (x, y) full-resolution pixel coordinates: a list of (N_i, 2) vertex
        arrays, a list of shapely (Multi)Polygons, or a GeoDataFrame (e.g. from
        :func:`annotations_to_geodataframe` or :func:`import_geojson`).
    classes
        One class per polygon (a sequence), or for a GeoDataFrame the name of its class
        column (``None`` means ``"class"``).
    key_added
        ``obs`` column to write; a pandas Categorical, colours in
        ``uns[f"{key_added}_colors"]`` (``key=`` is the previous release's name).
    table
        Table name when ``data`` is a SpatialData.
    coords
        Override for the centres: an (n_obs, 2) array of (x, y), or an ``obsm`` key.
        Default: ``obsm["spatial"]``, else the centres of the shapes element the table
        annotates.
    overwrite
        If True, observations outside every polygon become NaN; if False they keep their
        existing value in ``obs[key_added]``.
    colors
        ``{class: hex colour}``; default: the GeoDataFrame's ``color`` column, then colours
        already in ``uns[f"{key_added}_colors"]``, then scanpy's default palette.
    method
        Point-in-polygon engine, see :func:`points_in_polygons`.
    copy
        Return a modified copy of ``data`` instead of writing into it.

    Returns
    -------
    None or SpatialData or AnnData
        ``None`` (``copy=False``: ``obs[key_added]`` is written), else the modified copy.
        Where polygons overlap, the later polygon wins. (The previous release returned the
        new column; read it from ``obs[key_added]``.)
    """
    key = key_added
    if copy:
        data = copy_data(data)
    adata = _get_table(data, table)
    if coords is None:
        xy = _spot_centres(data, adata)
    elif isinstance(coords, str):
        if coords not in adata.obsm:
            raise KeyError(f"obsm has no {coords!r}; its keys are {list(adata.obsm.keys())}.")
        xy = np.asarray(adata.obsm[coords])[:, :2]
    else:
        xy = np.asarray(coords, dtype=np.float64)
    if xy.shape != (adata.n_obs, 2):
        raise ValueError(
            f"Coordinates have shape {xy.shape}; expected ({adata.n_obs}, 2) = one (x, y) "
            "per observation."
        )
    geoms, cls, gdf_colors = _shapes_to_geometries(shapes, classes)
    if any(pd.isna(c) for c in cls):
        raise ValueError("A polygon has a missing class; every polygon needs a class name.")

    owner = points_in_polygons(xy, geoms, method=method)
    new_classes = list(dict.fromkeys(cls))  # first-seen order
    code_of = {c: i for i, c in enumerate(new_classes)}
    poly_code = np.array([code_of[c] for c in cls], dtype=np.int64)

    old = adata.obs[key] if key in adata.obs.columns else None
    old_categories: list[Any] = []
    if old is not None and not overwrite:
        old_cat = old if isinstance(old.dtype, pd.CategoricalDtype) else old.astype("category")
        old_categories = list(old_cat.cat.categories)
    categories = old_categories + [c for c in new_classes if c not in set(old_categories)]
    cat_index = {c: i for i, c in enumerate(categories)}

    codes = np.full(adata.n_obs, -1, dtype=np.int64)
    if old is not None and not overwrite:
        old_vals = old_cat.astype(object).to_numpy()
        present = ~pd.isna(old_vals)
        codes[present] = [cat_index[v] for v in old_vals[present]]
    hit = owner >= 0
    remap = np.array([cat_index[c] for c in new_classes], dtype=np.int64)
    codes[hit] = remap[poly_code[owner[hit]]]

    # colours: explicit > GeoDataFrame > previously stored > default palette (unused first)
    previous: dict[Any, str] = {}
    if old is not None:
        old_cat_all = old if isinstance(old.dtype, pd.CategoricalDtype) else old.astype("category")
        stored = adata.uns.get(f"{key}_colors")
        if stored is not None and len(stored) == len(old_cat_all.cat.categories):
            previous = dict(zip(old_cat_all.cat.categories, map(str, stored), strict=True))
    chosen = {**previous, **gdf_colors, **dict(colors or {})}
    palette = iter(c for c in _default_palette(2 * len(categories)) if c not in chosen.values())
    color_list = [chosen.get(c) or next(palette, "#808080") for c in categories]

    adata.obs[key] = pd.Categorical.from_codes(codes, categories=categories)
    adata.uns[f"{key}_colors"] = color_list
    return data if copy else None


@deprecated_call(positional=("classes", "colors", "author"))
def annotations_to_geodataframe(
    polygons: Iterable[Any],
    *,
    classes: Sequence[Any],
    colors: Sequence[str] | Mapping[Any, str] | None = None,
    author: str | None = None,
) -> gpd.GeoDataFrame:
    """Build the shapes element that stores annotation polygons.

    Parameters
    ----------
    polygons
        (N_i, 2) (x, y) vertex arrays or shapely polygons, full-resolution pixels.
    classes
        One class name per polygon.
    colors
        One hex colour per polygon, or ``{class: colour}``; ``None`` uses scanpy's default
        palette over the classes.
    author
        Who drew them (stored as text; empty when ``None``).

    Returns
    -------
    geopandas.GeoDataFrame
        Columns ``geometry``, ``class``, ``color``, ``author``, ``created`` (UTC, ISO 8601);
        accepted by ``spatialdata.models.ShapesModel.parse``.
    """
    import geopandas as gpd

    polygons = list(polygons)
    classes = [str(c) for c in classes]
    if len(polygons) != len(classes):
        raise ValueError(
            f"Got {len(polygons)} polygons but {len(classes)} classes; pass one per polygon."
        )
    geoms = [_to_geometry(p, i) for i, p in enumerate(polygons)]
    if colors is None:
        uniq = list(dict.fromkeys(classes))
        by_class = dict(zip(uniq, _default_palette(len(uniq)), strict=True))
        color_list = [by_class[c] for c in classes]
    elif isinstance(colors, Mapping):
        missing = sorted({c for c in classes if c not in colors and str(c) not in colors})
        if missing:
            raise KeyError(f"`colors` has no colour for classes {missing}.")
        color_list = [str(colors.get(c, colors.get(str(c)))) for c in classes]
    else:
        color_list = [str(c) for c in colors]
        if len(color_list) != len(classes):
            raise ValueError(
                f"Got {len(color_list)} colours for {len(classes)} polygons; pass one per "
                "polygon or a {class: colour} mapping."
            )
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return gpd.GeoDataFrame(
        {
            "class": classes,
            "color": color_list,
            "author": [author or ""] * len(classes),
            "created": [created] * len(classes),
        },
        geometry=geoms,
    )


@deprecated_call(positional=("key", "path"))
def export_annotation_csv(
    data: Any,
    *,
    path: str | os.PathLike[str],
    key: str = "scai_annotation",
    table: str = "rna",
    include_unlabelled: bool = False,
) -> Path:
    """Write per-spot labels as CSV with columns ``spot_id,class``.

    An export: writes the file and nothing into ``data``. The previous release's positional
    form ``export_annotation_csv(adata, key, path)`` still works, with a FutureWarning.

    Parameters
    ----------
    data
        A SpatialData (``tables[table]`` is used) or an AnnData whose ``obs[key]`` holds the
        annotation.
    path
        Destination ``.csv`` (written atomically).
    key
        ``obs`` column to export.
    table
        Table name when ``data`` is a SpatialData.
    include_unlabelled
        Also write rows for unlabelled observations (empty class).

    Returns
    -------
    pathlib.Path
        The written file.
    """
    adata = _get_table(data, table)
    if key not in adata.obs.columns:
        raise KeyError(f"obs has no column {key!r}; available: {list(adata.obs.columns)}.")
    col = adata.obs[key]
    df = pd.DataFrame({"spot_id": adata.obs_names.astype(str), "class": col.astype(object)})
    if not include_unlabelled:
        df = df[col.notna().to_numpy()]
    return _atomic_write_text(path, df.to_csv(index=False))


@deprecated_call(positional=("path", "key"), renamed={"key": "key_added"})
def import_annotation_csv(
    data: Any,
    *,
    path: str | os.PathLike[str],
    key_added: str = "scai_annotation",
    table: str = "rna",
    allow_unknown_ids: bool = False,
    copy: bool = False,
) -> Any:
    """Read per-spot labels from CSV into ``obs[key_added]`` (Categorical, with colours).

    The file needs an id column (``spot_id``, or ``barcode``/``Barcode``/``cell_id``/
    ``obs_name``) matching ``adata.obs_names``, and a ``class`` column (or exactly one other
    column, as in Loupe Browser exports). Observations not in the file become NaN. The
    previous release's form ``import_annotation_csv(adata, path, key)`` still works, with a
    FutureWarning.

    Parameters
    ----------
    data
        A SpatialData (``tables[table]`` is annotated) or an AnnData.
    path
        CSV file.
    key_added
        ``obs`` column to write; colours in ``uns[f"{key_added}_colors"]``.
    table
        Table name when ``data`` is a SpatialData.
    allow_unknown_ids
        Ignore ids that are not in ``adata.obs_names`` instead of raising.
    copy
        Return a modified copy of ``data`` instead of writing into it.

    Returns
    -------
    None or SpatialData or AnnData
        ``None`` (``copy=False``), else the modified copy. (The previous release returned the
        new column; read it from ``obs[key_added]``.)

    Raises
    ------
    napari_scai.io.ReadError
        A ``ValueError``, when the file is unreadable, lacks the id/class columns, has
        duplicate ids, or names ids that are not in the table; the message names the file and
        what is wrong. Nothing is written then.
    """
    key = key_added
    adata = _get_table(data, table)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Annotation CSV {path} does not exist.")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ReadError(
            path, f"not a readable CSV ({exc})", "save it as comma-separated text: spot_id,class"
        ) from exc
    df.columns = [str(c).strip() for c in df.columns]
    id_col = next((c for c in _ID_COLUMNS if c in df.columns), None)
    if id_col is None:
        raise ReadError(
            path,
            f"no spot id column (found columns {list(df.columns)})",
            f"name the id column one of {list(_ID_COLUMNS)}",
        )
    others = [c for c in df.columns if c != id_col]
    if "class" in df.columns:
        class_col = "class"
    elif len(others) == 1:
        class_col = others[0]
    else:
        raise ReadError(
            path,
            f"no 'class' column (found columns {list(df.columns)})",
            "name the label column 'class'",
        )
    ids = df[id_col]
    if ids.isna().any():
        rows = (np.flatnonzero(ids.isna().to_numpy()) + 2)[:5].tolist()
        raise ReadError(path, f"empty {id_col!r} on lines {rows}", "give every row a spot id")
    dup = ids[ids.duplicated()].unique()
    if len(dup):
        raise ReadError(
            path,
            f"{len(dup)} ids appear more than once, e.g. {list(dup[:5])}",
            "list each spot once",
        )
    known = ids.isin(adata.obs_names)
    if not known.all():
        unknown = ids[~known].tolist()
        if not allow_unknown_ids:
            raise ReadError(
                path,
                f"{len(unknown)} of {len(ids)} ids in column {id_col!r} are not in this "
                f"table's obs_names, e.g. {unknown[:5]}",
                "check it belongs to this sample, or pass allow_unknown_ids=True to skip them",
            )
        df = df[known.to_numpy()]
    labels = pd.Series(df[class_col].to_numpy(), index=df[id_col].to_numpy())
    values = labels.reindex(adata.obs_names)
    categories = list(dict.fromkeys(labels.dropna()))
    if copy:
        data = copy_data(data)
        adata = _get_table(data, table)
    adata.obs[key] = pd.Categorical(values.to_numpy(), categories=categories)
    adata.uns[f"{key}_colors"] = _default_palette(len(categories))
    return data if copy else None


@deprecated_call(positional=("path",))
def export_geojson(
    data: Any, *, path: str | os.PathLike[str], element: str = "scai_annotations"
) -> Path:
    """Write annotation polygons as GeoJSON, atomically.

    An export: writes the file and nothing into ``data``. The previous release's form
    ``export_geojson(gdf, path)`` still works, with a FutureWarning.

    Parameters
    ----------
    data
        A GeoDataFrame of polygons with their attribute columns (e.g. from
        :func:`annotations_to_geodataframe`), or a SpatialData whose shapes element
        ``element`` holds them (the Annotate dock saves them as ``scai_annotations``).
    path
        Destination ``.geojson``.
    element
        Shapes element to export when ``data`` is a SpatialData.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    import geopandas as gpd

    if isinstance(data, gpd.GeoDataFrame):
        gdf = data
    else:
        shapes = getattr(data, "shapes", None)
        if shapes is None:
            raise TypeError(
                f"export_geojson() takes a GeoDataFrame or a SpatialData, got "
                f"{type(data).__name__}."
            )
        if element not in shapes:
            raise KeyError(
                f"SpatialData has no shapes element {element!r}; its shapes are "
                f"{list(shapes.keys())}. Pass element=<name>."
            )
        gdf = shapes[element]
    text = gdf.to_json(na="null", show_bbox=False, drop_id=False)
    return _atomic_write_text(path, text)


def import_geojson(path: str | os.PathLike[str]) -> gpd.GeoDataFrame:
    """Read GeoJSON annotation polygons.

    Parameters
    ----------
    path
        A GeoJSON ``FeatureCollection`` (as written by :func:`export_geojson`, QuPath or
        geopandas).

    Returns
    -------
    geopandas.GeoDataFrame
        One row per feature with its properties as columns (``class``, ``color``, ...).
    """
    import geopandas as gpd

    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReadError(path, f"not valid GeoJSON ({exc})", "export it again as GeoJSON") from exc
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        doc = {"type": "FeatureCollection", "features": [doc]}
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        found = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        raise ReadError(
            path,
            f"not a GeoJSON FeatureCollection (top-level 'type' is {found!r})",
            "export the polygons as a GeoJSON FeatureCollection",
        )
    features = doc.get("features", [])
    gdf = gpd.GeoDataFrame.from_features(features)
    ids = [f.get("id") for f in features]
    if features and all(i is not None for i in ids):
        try:
            gdf.index = pd.Index([int(i) for i in ids])
        except (TypeError, ValueError):
            gdf.index = pd.Index(ids)
    if "geometry" in gdf.columns:  # geometry first, as written
        gdf = gdf[["geometry", *[c for c in gdf.columns if c != "geometry"]]]
    return gdf
