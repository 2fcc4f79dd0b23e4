"""Annotation state, undo history and the napari layers of the annotate/compare docks.

Nothing here imports Qt. The annotation is an immutable :class:`AnnotationState`: the classes
(name, colour) and the ordered editing steps (polygons drawn and spot assignments). The label
of every spot is a pure function of that state (:func:`compute_labels`): steps are applied in
order and later steps win, so deleting or editing a polygon simply recomputes. Undo/redo keeps
``(before, after)`` states per :class:`Command` in a :class:`CommandStack`.

Coordinates: polygons are kept in napari world coordinates ``(y, x)``, the same space as the
spots layer's ``data``. They are converted to the spots element's intrinsic ``(x, y)`` only
when written to SpatialData (:func:`state_to_geodataframe`) and back when read
(:func:`state_from_sdata`).
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from napari_scai._colors import MISSING_COLOR, hex_to_rgba, palette

#: obs column holding the manual annotation.
ANNOTATION_KEY = "scai_annotation"
#: shapes element holding the annotation polygons.
ANNOTATION_ELEMENT = "scai_annotations"
#: Colour of spots where prediction and reference disagree.
HIGHLIGHT_COLOR = "#ff00ff"
#: Colour of the marker on low-confidence spots.
LOW_CONFIDENCE_COLOR = "#00e5ff"

_ids = itertools.count(1)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------- state


@dataclass(frozen=True)
class AnnotationClass:
    """One annotation class: its name and hex colour."""

    name: str
    color: str


@dataclass(frozen=True, eq=False)
class PolygonStep:
    """A polygon drawn on the tissue: spots whose centre is inside get ``cls``.

    ``yx`` holds the vertices in napari world coordinates ``(y, x)``.
    """

    id: int
    yx: np.ndarray
    cls: str
    author: str = ""
    created: str = ""


@dataclass(frozen=True, eq=False)
class SpotStep:
    """Explicit labels for some spots: ``values[i]`` for point ``points[i]`` (None erases)."""

    points: np.ndarray
    values: tuple[str | None, ...]


Step = PolygonStep | SpotStep


@dataclass(frozen=True)
class AnnotationState:
    """Everything that defines an annotation; immutable, so undo can keep old versions."""

    classes: tuple[AnnotationClass, ...] = ()
    steps: tuple[Step, ...] = ()

    @property
    def polygons(self) -> list[PolygonStep]:
        """The polygon steps, in drawing order."""
        return [s for s in self.steps if isinstance(s, PolygonStep)]

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def color_of(self, name: str) -> str:
        """Colour of class ``name`` (the missing colour for unknown classes)."""
        return next((c.color for c in self.classes if c.name == name), MISSING_COLOR)

    def with_class(self, name: str, color: str) -> AnnotationState:
        """A copy with class ``name`` added (or recoloured if it exists)."""
        if name in self.class_names:
            return self.recolor_class(name, color)
        return replace(self, classes=(*self.classes, AnnotationClass(name, color)))

    def rename_class(self, old: str, new: str) -> AnnotationState:
        """A copy with class ``old`` renamed ``new`` everywhere (polygons and spot labels)."""
        if old not in self.class_names:
            raise KeyError(f"no class named '{old}'. Fix: pick one of {self.class_names}")
        if new in self.class_names and new != old:
            raise ValueError(f"a class named '{new}' exists already. Fix: choose another name")
        classes = tuple(AnnotationClass(new, c.color) if c.name == old else c for c in self.classes)
        steps: list[Step] = []
        for s in self.steps:
            if isinstance(s, PolygonStep):
                steps.append(replace(s, cls=new) if s.cls == old else s)
            else:
                steps.append(SpotStep(s.points, tuple(new if v == old else v for v in s.values)))
        return AnnotationState(classes, tuple(steps))

    def recolor_class(self, name: str, color: str) -> AnnotationState:
        """A copy with class ``name`` drawn in ``color``."""
        if name not in self.class_names:
            raise KeyError(f"no class named '{name}'. Fix: pick one of {self.class_names}")
        classes = tuple(AnnotationClass(name, color) if c.name == name else c for c in self.classes)
        return replace(self, classes=classes)

    def add_polygons(
        self, polygons: Iterable[np.ndarray], cls: str, author: str = ""
    ) -> AnnotationState:
        """A copy with new polygons (world ``(y, x)`` vertices) of class ``cls`` drawn last."""
        created = _now()
        new = tuple(
            PolygonStep(next(_ids), np.asarray(p, dtype=float), cls, author, created)
            for p in polygons
        )
        return replace(self, steps=(*self.steps, *new))

    def remove_polygons(self, ids: Iterable[int]) -> AnnotationState:
        """A copy without the polygons whose id is in ``ids``."""
        drop = set(ids)
        return replace(
            self,
            steps=tuple(s for s in self.steps if not (isinstance(s, PolygonStep) and s.id in drop)),
        )

    def edit_polygons(self, changes: Mapping[int, np.ndarray | str]) -> AnnotationState:
        """A copy where polygon ``id`` gets new vertices (an array) or a new class (a str)."""
        steps: list[Step] = []
        for s in self.steps:
            if isinstance(s, PolygonStep) and s.id in changes:
                change = changes[s.id]
                s = (
                    replace(s, cls=change)
                    if isinstance(change, str)
                    else replace(s, yx=np.asarray(change, dtype=float))
                )
            steps.append(s)
        return replace(self, steps=tuple(steps))

    def assign_points(self, points: Iterable[int], cls: str | None) -> AnnotationState:
        """A copy where the given spots (layer indices) get ``cls`` (None: no class)."""
        pts = np.unique(np.asarray(list(points), dtype=np.int64))
        if pts.size == 0:
            return self
        return replace(self, steps=(*self.steps, SpotStep(pts, (cls,) * len(pts))))


def compute_labels(state: AnnotationState, yx: np.ndarray) -> np.ndarray:
    """Class per spot (object array, None where unlabelled) from the state's steps in order.

    Consecutive polygon steps are applied with :func:`napari_scai.tl.annotate_from_shapes`
    (the later polygon wins where they overlap); spot steps overwrite their spots.

    Parameters
    ----------
    state
        The annotation.
    yx
        (n, 2) world ``(y, x)`` centres of the spots (the spots layer's ``data``).

    Returns
    -------
    numpy.ndarray
        Object array of length n.
    """
    yx = np.asarray(yx, dtype=float)
    return _apply_steps(np.full(len(yx), None, dtype=object), state.steps, yx)


def _apply_steps(values: np.ndarray, steps: Sequence[Step], yx: np.ndarray) -> np.ndarray:
    """``values`` (labels so far) with ``steps`` applied in order; returns a new array.

    A run of polygon steps is one :func:`napari_scai.tl.points_in_polygons` pass (the later
    polygon wins where they overlap, as in :func:`napari_scai.tl.annotate_from_shapes`);
    spot steps overwrite their spots. Cost: the steps given, over the spots, nothing else.
    """
    from napari_scai.tl import points_in_polygons
    from napari_scai.tl._annotate import _shapes_to_geometries

    n = len(yx)
    values = values.copy()
    xy = yx[:, ::-1]
    for is_polygon, group in itertools.groupby(steps, key=lambda s: isinstance(s, PolygonStep)):
        group = list(group)
        if is_polygon:
            geoms, cls, _ = _shapes_to_geometries(
                [p.yx[:, ::-1] for p in group], [p.cls for p in group]
            )
            owner = points_in_polygons(xy, geoms)
            hit = owner >= 0
            values[hit] = np.asarray(cls, dtype=object)[owner[hit]]
        else:
            for s in group:
                ok = s.points < n
                values[s.points[ok]] = np.asarray(s.values, dtype=object)[ok]
    return values


class LabelCache:
    """Incremental :func:`compute_labels`: an edit costs the steps it changed, not the history.

    States are immutable and share their unchanged step objects, so the labels of a new state
    are those after the longest common prefix of steps (compared by identity) with the
    timeline cached here, plus the remaining steps applied on top. Labels are kept after the
    last ``recent`` steps computed and at every ``every``-th step, so an undo, a redo or an
    edit of a recent polygon replays a handful of steps; memory stays
    ``(len(steps) / every + recent)`` label arrays.

    ``last_replayed`` is the number of steps applied by the last :meth:`labels` call.
    """

    def __init__(self, yx: np.ndarray, *, every: int = 32, recent: int = 8) -> None:
        self.yx = np.asarray(yx, dtype=float)
        self.every = max(int(every), 1)
        self.recent = max(int(recent), 1)
        self._steps: tuple[Step, ...] = ()
        self._marks: dict[int, np.ndarray] = {0: np.full(len(self.yx), None, dtype=object)}
        self.last_replayed = 0

    def labels(self, state: AnnotationState) -> np.ndarray:
        """Class per spot for ``state`` (a fresh object array; same as :func:`compute_labels`)."""
        steps = state.steps
        common = 0
        for a, b in zip(self._steps, steps, strict=False):
            if a is not b:
                break
            common += 1
        marks = {k: v for k, v in self._marks.items() if k <= common}
        start = max(marks)
        values = marks[start].copy()
        todo = steps[start:]
        self.last_replayed = len(todo)
        pos = start
        # apply in chunks that end on checkpoints (a polygon run inside a chunk is one call)
        while todo:
            cut = min(len(todo), self.every - pos % self.every)
            values = _apply_steps(values, todo[:cut], self.yx)
            pos += cut
            todo = todo[cut:]
            if pos % self.every == 0 or len(todo) < self.recent:
                marks[pos] = values.copy()
        marks[len(steps)] = values.copy()
        keep_recent = sorted(k for k in marks if k % self.every)[-self.recent :]
        self._marks = {k: v for k, v in marks.items() if k % self.every == 0 or k in keep_recent}
        self._steps = steps
        return values


# ----------------------------------------------------------------------------------- undo


@dataclass(frozen=True)
class Command:
    """One undoable annotation step: its label and the states before and after it."""

    label: str
    before: AnnotationState
    after: AnnotationState


@dataclass
class CommandStack:
    """Undo/redo history of :class:`Command` s."""

    done: list[Command] = field(default_factory=list)
    undone: list[Command] = field(default_factory=list)
    limit: int = 500

    def push(self, command: Command) -> None:
        """Record an executed command (clears the redo list)."""
        self.done.append(command)
        del self.done[: -self.limit]
        self.undone.clear()

    def undo(self) -> Command | None:
        """Pop the last command (the caller restores ``command.before``)."""
        if not self.done:
            return None
        cmd = self.done.pop()
        self.undone.append(cmd)
        return cmd

    def redo(self) -> Command | None:
        """Re-apply the last undone command (the caller restores ``command.after``)."""
        if not self.undone:
            return None
        cmd = self.undone.pop()
        self.done.append(cmd)
        return cmd

    def clear(self) -> None:
        self.done.clear()
        self.undone.clear()

    @property
    def can_undo(self) -> bool:
        return bool(self.done)

    @property
    def can_redo(self) -> bool:
        return bool(self.undone)


# ------------------------------------------------------------------- table + SpatialData


def write_column(
    adata,
    rows: np.ndarray | None,
    labels: np.ndarray,
    classes: Sequence[AnnotationClass],
    key: str = ANNOTATION_KEY,
) -> None:
    """Write per-spot labels into ``adata.obs[key]`` (categorical) and its colours into ``uns``.

    ``rows[i]`` is the table row of spot ``i`` (-1: none); rows that no spot maps to keep
    their previous value. Categories are the classes in order (plus any other value found in
    rows not owned by these spots).
    """
    n = adata.n_obs
    if rows is None:
        rows = np.arange(len(labels))
    old = (
        adata.obs[key].astype(object).to_numpy()
        if key in adata.obs.columns
        else np.full(n, None, dtype=object)
    )
    values = np.where(pd.isna(old), None, old).astype(object)
    ok = rows >= 0
    values[rows[ok]] = labels[ok]
    names = [c.name for c in classes]
    colors = [c.color for c in classes]
    extra = [v for v in dict.fromkeys(values) if v is not None and v not in set(names)]
    adata.obs[key] = pd.Categorical(values, categories=names + extra)
    adata.uns[f"{key}_colors"] = colors + palette(len(colors) + len(extra))[len(colors) :]


def world_to_intrinsic(yx: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """World ``(y, x)`` -> intrinsic ``(x, y)`` through the inverse of a 3×3 ``(y, x)`` affine."""
    inv = np.linalg.inv(matrix)
    local = np.asarray(yx, dtype=float) @ inv[:2, :2].T + inv[:2, 2]
    return local[:, ::-1]


def intrinsic_to_world(xy: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Intrinsic ``(x, y)`` -> world ``(y, x)`` through a 3×3 ``(y, x)`` affine."""
    return np.asarray(xy, dtype=float)[:, ::-1] @ matrix[:2, :2].T + matrix[:2, 2]


def state_to_geodataframe(state: AnnotationState, matrix: np.ndarray, author: str = ""):
    """The polygons as the ``scai_annotations`` schema (intrinsic ``(x, y)`` coordinates).

    Returns None when there are no polygons.
    """
    from napari_scai.tl import annotations_to_geodataframe

    polys = state.polygons
    if not polys:
        return None
    colors = {c.name: c.color for c in state.classes}
    gdf = annotations_to_geodataframe(
        [world_to_intrinsic(p.yx, matrix) for p in polys],
        classes=[p.cls for p in polys],
        colors={p.cls: colors.get(p.cls, MISSING_COLOR) for p in polys},
        author=author,
    )
    gdf["author"] = [p.author or author for p in polys]
    gdf["created"] = [p.created or _now() for p in polys]
    return gdf


def stage_annotation(
    sdata,
    state: AnnotationState,
    *,
    table: str,
    spots_element: str,
    element: str = ANNOTATION_ELEMENT,
    matrix: np.ndarray,
    author: str = "",
) -> tuple[list[str], list[str]]:
    """Put the state's polygons into ``sdata.shapes[element]`` for a save through
    :func:`napari_scai.io.update`; nothing is written to disk here.

    The polygons get the spots element's transformations. Returns ``(elements, removed)``: the
    element names to (re)write (the table, and ``element`` when there are polygons) and those to
    delete from the store in the same atomic update (``element`` when no polygon is left).
    """
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import get_transformation

    elements = [table]
    gdf = state_to_geodataframe(state, matrix, author=author)
    if gdf is not None:
        transforms = get_transformation(sdata.shapes[spots_element], get_all=True)
        sdata.shapes[element] = ShapesModel.parse(gdf, transformations=dict(transforms))
        elements.append(element)
        return elements, []
    if element in sdata.shapes:
        del sdata.shapes[element]
    return elements, [element]


def snapshot_elements(sdata, elements: Sequence[str], *, whole: bool):
    """A SpatialData holding copies of ``elements``, for a background write while edits go on.

    ``whole``: the other elements too, by reference (a new store gets everything; only the
    annotation elements change during the write).
    """
    import warnings

    import spatialdata as sd

    kinds = ("images", "labels", "points", "shapes", "tables")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the table's spots element may not be in it
        return sd.SpatialData(
            **{
                kind: {
                    name: element.copy() if name in elements else element
                    for name, element in getattr(sdata, kind).items()
                    if whole or name in elements
                }
                for kind in kinds
            },
            attrs=dict(sdata.attrs) if whole else None,
        )


def next_color(state: AnnotationState) -> str:
    """A palette colour no class of ``state`` uses yet."""
    used = {c.color.lower() for c in state.classes}
    return next((c for c in palette(len(used) + 21) if c.lower() not in used), "#808080")


def state_with_csv(state: AnnotationState, adata, rows: np.ndarray, path) -> AnnotationState:
    """``state`` plus the per-spot classes of a ``spot_id,class`` CSV as one spot step.

    ``rows[i]`` is the table row of layer point ``i`` (-1: none). Classes the state lacks are
    added with the CSV's colours. Raises the CSV reader's ValueError/FileNotFoundError.
    """
    from anndata import AnnData

    from napari_scai.tl import import_annotation_csv

    scratch = AnnData(obs=pd.DataFrame(index=adata.obs_names))
    import_annotation_csv(scratch, path=path, key_added="imported")
    col = scratch.obs["imported"]
    rows = np.asarray(rows)
    ok = rows >= 0
    points = np.flatnonzero(ok)
    values = col.astype(object).to_numpy()[rows[ok]]
    keep = ~pd.isna(values)
    for name, color in zip(col.cat.categories, scratch.uns["imported_colors"], strict=True):
        if str(name) not in state.class_names:
            state = state.with_class(str(name), str(color))
    if keep.any():
        step = SpotStep(points[keep], tuple(str(v) for v in values[keep]))
        state = AnnotationState(state.classes, (*state.steps, step))
    return state


def state_with_geojson(
    state: AnnotationState, gdf, matrix: np.ndarray, *, author: str = "", cls: str | None = None
) -> AnnotationState:
    """``state`` plus the polygons of a GeoDataFrame (intrinsic ``x, y``; ``class``/``color``
    columns) converted to world ``(y, x)`` through ``matrix``. Without a ``class`` column every
    polygon gets ``cls``. Holes survive as keyhole cuts."""
    if "class" in gdf.columns:
        classes = gdf["class"].astype(str).tolist()
    elif cls is not None:
        classes = [cls] * len(gdf)
    else:
        raise ValueError("the polygons have no 'class' column. Fix: pass cls=<class name>")
    colors = gdf["color"].tolist() if "color" in gdf.columns else [None] * len(gdf)
    for geom, c, color in zip(gdf.geometry, classes, colors, strict=True):
        if c not in state.class_names:
            state = state.with_class(
                c, color if isinstance(color, str) and color else next_color(state)
            )
        state = state.add_polygons(
            [intrinsic_to_world(r, matrix) for r in _polygon_exterior(geom)], c, author
        )
    return state


def _keyhole_ring(polygon) -> np.ndarray:
    """One vertex ring for a polygon with holes: each hole joined to the outline by a
    zero-width cut (napari polygons have no holes; repairing the ring gives the holes back)."""
    ring = [tuple(c) for c in np.asarray(polygon.exterior.coords)[:-1, :2]]
    for interior in polygon.interiors:
        hole = np.asarray(interior.coords)[:-1, :2]
        pts = np.asarray(ring)
        d = ((pts[:, None, :] - hole[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        loop = [tuple(c) for c in np.roll(hole, -j, axis=0)] + [tuple(hole[j])]
        ring = ring[: i + 1] + loop + ring[i:]
    return np.asarray(ring, dtype=float)


def _polygon_exterior(geom) -> list[np.ndarray]:
    """Vertex rings (x, y) of every polygon part of ``geom`` (holes kept as keyhole cuts)."""
    import shapely

    out = []
    for part in shapely.get_parts(geom):
        if isinstance(part, shapely.Polygon):
            out.append(
                _keyhole_ring(part)
                if len(part.interiors)
                else np.asarray(part.exterior.coords)[:-1, :2]
            )
        elif hasattr(part, "geoms"):
            for sub in part.geoms:
                out.extend(_polygon_exterior(sub))
    return out


def state_from_sdata(
    sdata,
    spots_yx: np.ndarray,
    rows: np.ndarray | None,
    matrix: np.ndarray,
    *,
    table: str,
    key: str = ANNOTATION_KEY,
    element: str = ANNOTATION_ELEMENT,
) -> AnnotationState:
    """Rebuild the annotation from a SpatialData: polygons from ``element``, classes and
    colours from ``obs[key]`` and ``uns[f"{key}_colors"]``, and spot-level edits as the
    difference between the saved column and what the polygons give.
    """
    adata = sdata.tables[table]
    classes: dict[str, str] = {}
    if key in adata.obs.columns:
        col = adata.obs[key]
        cats = (
            list(col.cat.categories)
            if isinstance(col.dtype, pd.CategoricalDtype)
            else list(pd.unique(col.dropna()))
        )
        stored = list(np.asarray(adata.uns.get(f"{key}_colors", []), dtype=object))
        fallback = palette(len(cats))
        for i, c in enumerate(cats):
            classes[str(c)] = str(stored[i]) if i < len(stored) else fallback[i]
    polygons: list[PolygonStep] = []
    if element in sdata.shapes:
        gdf = sdata.shapes[element]
        cls_col = (
            gdf["class"].astype(str).tolist()
            if "class" in gdf.columns
            else ["annotation"] * len(gdf)
        )
        colors = gdf["color"].astype(str).tolist() if "color" in gdf.columns else [None] * len(gdf)
        authors = gdf["author"].astype(str).tolist() if "author" in gdf.columns else [""] * len(gdf)
        created = (
            gdf["created"].astype(str).tolist() if "created" in gdf.columns else [""] * len(gdf)
        )
        for geom, c, color, a, t in zip(
            gdf.geometry, cls_col, colors, authors, created, strict=True
        ):
            if c not in classes:
                classes[c] = color or palette(len(classes) + 1)[-1]
            for ring in _polygon_exterior(geom):
                polygons.append(PolygonStep(next(_ids), intrinsic_to_world(ring, matrix), c, a, t))
    state = AnnotationState(
        tuple(AnnotationClass(n, c) for n, c in classes.items()), tuple(polygons)
    )
    if key in adata.obs.columns:
        n = len(spots_yx)
        rows = np.arange(n) if rows is None else rows
        saved = np.full(n, None, dtype=object)
        ok = rows >= 0
        vals = adata.obs[key].astype(object).to_numpy()[rows[ok]]
        saved[ok] = np.where(pd.isna(vals), None, vals)
        derived = compute_labels(state, spots_yx)
        differ = np.flatnonzero(saved != derived)
        if differ.size:
            state = replace(state, steps=(*state.steps, SpotStep(differ, tuple(saved[differ]))))
    return state


# ----------------------------------------------------------------------------------- layers


def polygon_layer_kwargs(state: AnnotationState, edge_width: float) -> dict[str, Any]:
    """``data`` + styling kwargs that draw the state's polygons in a Shapes layer."""
    polys = state.polygons
    colors = hex_to_rgba([state.color_of(p.cls) for p in polys]) if polys else np.zeros((0, 4))
    faces = colors.copy()
    faces[:, 3] = 0.25
    return {
        "data": [p.yx for p in polys],
        "edge_color": colors,
        "face_color": faces,
        "edge_width": edge_width,
        "features": pd.DataFrame(
            {
                "poly_id": np.array([p.id for p in polys], dtype=np.int64),
                "class": np.array([p.cls for p in polys], dtype=object),
            }
        ),
    }


def shape_to_polygon(vertices: np.ndarray, shape_type: str, n: int = 64) -> np.ndarray | None:
    """Polygon vertices for a napari shape (ellipses are sampled); None for lines and paths."""
    vertices = np.asarray(vertices, dtype=float)[:, -2:]
    if shape_type in ("polygon", "rectangle"):
        return vertices if len(vertices) >= 3 else None
    if shape_type == "ellipse":
        center = vertices.mean(axis=0)
        half = (vertices.max(axis=0) - vertices.min(axis=0)) / 2
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        return center + np.column_stack([half[0] * np.sin(t), half[1] * np.cos(t)])
    return None


def spot_marker_layer(
    viewer,
    name: str,
    spots_layer,
    mask: np.ndarray,
    *,
    color: str,
    symbol: str = "disc",
    size_factor: float = 1.0,
    border_color: str | None = None,
):
    """Add (or update) a Points layer marking the spots where ``mask`` is True.

    ``mask`` has one entry per point of ``spots_layer``. The layer sits on top of the spots at
    the same world positions and keeps ``metadata['point_index']`` (indices into the spots).
    """
    idx = np.flatnonzero(np.asarray(mask, dtype=bool))
    size = (
        np.broadcast_to(np.asarray(spots_layer.size, dtype=float), (len(spots_layer.data),))[idx]
        * size_factor
    )
    data = np.asarray(spots_layer.data)[idx]
    kwargs = {
        "face_color": color,
        "border_color": border_color or color,
        "border_width": 0.15 if border_color else 0,
        "symbol": symbol,
    }
    if name in viewer.layers:
        layer = viewer.layers[name]
        layer.data = data
        layer.units = spots_layer.units
        layer.size = size if len(size) else 1
        for k, v in kwargs.items():
            setattr(layer, k, v)
    else:
        layer = viewer.add_points(
            data,
            name=name,
            size=size if len(size) else 1,
            opacity=1.0,
            units=spots_layer.units,  # one unit for all layers: napari's scale bar keeps µm
            **kwargs,
        )
    layer.metadata["point_index"] = idx
    layer.metadata["source_layer"] = spots_layer.name
    return layer


def contour_layer(
    viewer,
    name: str,
    contours,
    colors: Mapping[Hashable, str],
    *,
    edge_width: float,
    hidden: Iterable[Hashable] = (),
    units: Any = None,
):
    """Add (or replace) a Shapes layer of path outlines, one colour per domain.

    ``contours`` is a :class:`napari_scai.tl._contours.DomainContours` in world ``(y, x)``;
    ``features['domain']`` names each path's domain, and :func:`set_contour_visibility`
    shows or hides domains.
    """
    paths, domains = [], []
    for label in contours.labels:
        for p in contours.paths.get(label, []):
            paths.append(p)
            domains.append(str(label))
    if name in viewer.layers:
        viewer.layers.remove(name)
    layer = viewer.add_shapes(
        name=name,
        ndim=2,
        edge_width=edge_width,
        face_color="transparent",
        opacity=1.0,
        units=units,  # the spots layer's, so the scale bar keeps its unit
    )
    if paths:
        edge = hex_to_rgba([colors.get(d, MISSING_COLOR) for d in domains])
        layer.add_paths(paths, edge_width=edge_width, edge_color=edge)
        layer.features = pd.DataFrame({"domain": domains})
    layer.metadata["domain_colors"] = {str(k): v for k, v in colors.items()}
    layer.editable = False
    set_contour_visibility(layer, hidden)
    return layer


def set_contour_visibility(layer, hidden: Iterable[Hashable]) -> None:
    """Show every domain's outline except those in ``hidden`` (hidden paths are transparent)."""
    if not len(layer.data):
        layer.metadata["hidden"] = set(map(str, hidden))
        return
    hidden = set(map(str, hidden))
    domains = layer.features["domain"].astype(str).to_numpy()
    colors = layer.metadata.get("domain_colors", {})
    edge = hex_to_rgba([colors.get(d, MISSING_COLOR) for d in domains])
    edge[np.isin(domains, list(hidden)), 3] = 0.0
    layer.edge_color = edge
    layer.metadata["hidden"] = hidden
