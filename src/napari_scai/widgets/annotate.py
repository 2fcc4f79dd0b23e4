"""The "Annotate & compare" dock.

:class:`AnnotateWidget` draws annotation polygons and assigns classes to spots (undo/redo,
save and autosave through :func:`napari_scai.io.update`, CSV/GeoJSON import and export). Its
"Compare" tab is a :class:`napari_scai.widgets.compare.CompareWidget` (its own module).

The state and the layer helpers live in :mod:`napari_scai.viewer._annotations`; compute is in
:mod:`napari_scai.tl`. These classes only wire Qt controls to them.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtGui import QColor, QKeySequence, QShortcut
from qtpy.QtWidgets import (
    QCheckBox,
    QColorDialog,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from napari_scai.tl import points_in_polygons
from napari_scai.viewer._annotations import (
    ANNOTATION_ELEMENT,
    ANNOTATION_KEY,
    AnnotationState,
    Command,
    CommandStack,
    LabelCache,
    next_color,
    polygon_layer_kwargs,
    shape_to_polygon,
    snapshot_elements,
    stage_annotation,
    state_from_sdata,
    state_to_geodataframe,
    state_with_csv,
    state_with_geojson,
    write_column,
)
from napari_scai.widgets._common import (
    fix_dock_title,
    notify_error,
    refill_combo,
    scai_point_layers,
    spot_size,
    swatch,
    unwrap_viewer,
)
from napari_scai.widgets.compare import CompareWidget, label_columns  # noqa: F401 - re-export

CONFIDENCE_KEY = "scai_domain_confidence"


def _notify_info(message: str) -> None:
    from napari.utils.notifications import show_info

    show_info(message)


def _spots_affine(layer) -> np.ndarray:
    """(y, x) affine from the spots element's intrinsic coordinates to the layer's world."""
    from napari_scai.viewer._layers import affine_yx

    source = layer.metadata["scai"]
    element = layer.metadata["sdata"].shapes[source.element]
    return affine_yx(element, source.coordinate_system)


# =========================================================================== annotate


class AnnotateWidget(QWidget):
    """Draw annotation polygons, assign classes to spots, undo/redo, save, import/export.

    Draw polygons (or rectangles/ellipses) in the annotation Shapes layer: each new polygon
    gets the current class, and the spots whose centre is inside get that class in
    ``obs['scai_annotation']``. Select spots in the spots layer (select mode: drag a box,
    shift-click) or polygons in the annotation layer, then *Assign* gives them the current
    class and *Erase* clears the spots and deletes the polygons. Every step can be undone
    (Ctrl+Z) and redone (Ctrl+Shift+Z); with a store on disk it is autosaved two seconds after
    the last step, atomically (:func:`napari_scai.io.update`).
    """

    #: Emitted after every change of the annotation (a step, undo, redo, load).
    annotationChanged = Signal()

    def __init__(
        self,
        napari_viewer,
        *,
        pick_color: Callable[[str], str | None] | None = None,
        autosave_ms: int = 2000,
    ) -> None:
        super().__init__()
        self.viewer = unwrap_viewer(napari_viewer)
        self.key = ANNOTATION_KEY
        self.element = ANNOTATION_ELEMENT  # per spots layer: see _element_for
        self.state = AnnotationState()
        self.stack = CommandStack()
        self._labels = LabelCache(np.zeros((0, 2)))
        self.spots = None
        self.shapes_layer = None
        self.dirty = False
        self._edits = 0  # counts annotation steps, so a background save knows if it is current
        self._save_worker = None
        self._queued_save: Callable[[], None] | None = None  # a save asked for during a write
        self._had_column = False
        self._initial_color_key: str | None = None
        self.last_save_error: str | None = None
        self._syncing = False
        self._pick_color = pick_color or self._dialog_color

        # --- controls
        self.layer_combo = QComboBox()
        self.author_edit = QLineEdit(_default_author())
        self.class_list = QListWidget()
        self.class_list.setObjectName("annotation_classes")
        self.class_name = QLineEdit()
        self.class_name.setPlaceholderText("class name")
        self.add_class_button = QPushButton("Add class")
        self.rename_button = QPushButton("Rename")
        self.color_button = QPushButton("Colour…")
        self.assign_button = QPushButton("Assign to selected")
        self.assign_button.setToolTip("Give the current class to the selected spots and polygons")
        self.erase_button = QPushButton("Erase selected")
        self.erase_button.setToolTip(
            "Clear the class of the selected spots; delete the selected polygons"
        )
        self.to_spots_button = QPushButton("Polygons → spots")
        self.to_spots_button.setToolTip(
            "Lasso: give the current class to the spots inside the selected polygons, "
            "then drop those polygons (draw them with the Shapes layer's lasso tool)"
        )
        self.paint_button = QPushButton("Paint spots")
        self.paint_button.setCheckable(True)
        self.paint_button.setToolTip(
            "Drag over the spots layer to give them the current class (panning is off meanwhile)"
        )
        self.brush = QDoubleSpinBox()
        self.brush.setRange(0.5, 50.0)
        self.brush.setSingleStep(0.5)
        self.brush.setValue(1.0)
        self.brush.setSuffix(" spots")
        self.brush.setToolTip("Brush radius, in spot diameters")
        self.paint_erases = QCheckBox("brush erases")
        self.undo_button = QPushButton("Undo")
        self.redo_button = QPushButton("Redo")
        self.color_spots = QCheckBox("colour spots by annotation")
        self.color_spots.setChecked(True)
        self.save_button = QPushButton("Save")
        self.autosave = QCheckBox("autosave to the store")
        self.autosave.setChecked(True)
        self.export_csv_button = QPushButton("Export CSV…")
        self.import_csv_button = QPushButton("Import CSV…")
        self.export_geojson_button = QPushButton("Export GeoJSON…")
        self.import_geojson_button = QPushButton("Import GeoJSON…")
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Spots/cells layer", self.layer_combo)
        form.addRow("Author", self.author_edit)
        classes = QGroupBox("Classes")
        cl = QGridLayout(classes)
        cl.addWidget(self.class_list, 0, 0, 1, 3)
        cl.addWidget(self.class_name, 1, 0, 1, 3)
        cl.addWidget(self.add_class_button, 2, 0)
        cl.addWidget(self.rename_button, 2, 1)
        cl.addWidget(self.color_button, 2, 2)
        edit = QGridLayout()
        edit.addWidget(self.assign_button, 0, 0)
        edit.addWidget(self.erase_button, 0, 1)
        edit.addWidget(self.to_spots_button, 1, 0)
        edit.addWidget(self.paint_button, 1, 1)
        brush_row = QHBoxLayout()
        brush_row.addWidget(QLabel("Brush"))
        brush_row.addWidget(self.brush, 1)
        brush_row.addWidget(self.paint_erases)
        edit.addLayout(brush_row, 2, 0, 1, 2)
        edit.addWidget(self.undo_button, 3, 0)
        edit.addWidget(self.redo_button, 3, 1)
        files = QGridLayout()
        files.addWidget(self.save_button, 0, 0)
        files.addWidget(self.autosave, 0, 1)
        files.addWidget(self.export_csv_button, 1, 0)
        files.addWidget(self.import_csv_button, 1, 1)
        files.addWidget(self.export_geojson_button, 2, 0)
        files.addWidget(self.import_geojson_button, 2, 1)

        page = QWidget()
        pl = QVBoxLayout(page)
        pl.addLayout(form)
        pl.addWidget(classes, 1)
        pl.addLayout(edit)
        pl.addWidget(self.color_spots)
        pl.addLayout(files)
        pl.addWidget(self.status)

        self.compare = CompareWidget(self.viewer)
        self.tabs = QTabWidget()
        self.tabs.addTab(page, "Annotate")
        self.tabs.addTab(self.compare, "Compare")
        self.annotationChanged.connect(self.compare.refresh_columns)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)

        self.autosave_timer = QTimer(self)
        self.autosave_timer.setSingleShot(True)
        self.autosave_timer.setInterval(autosave_ms)
        self.autosave_timer.timeout.connect(self._autosave)

        # --- wiring
        self.layer_combo.currentIndexChanged.connect(self._on_layer_changed)
        self.add_class_button.clicked.connect(self._on_add_class)
        self.class_name.returnPressed.connect(self._on_add_class)
        self.rename_button.clicked.connect(self._on_rename)
        self.color_button.clicked.connect(self._on_recolor)
        self.class_list.currentRowChanged.connect(self._on_current_class)
        self.class_list.itemDoubleClicked.connect(lambda _i: self._on_recolor())
        self.assign_button.clicked.connect(self.assign_selected)
        self.erase_button.clicked.connect(self.erase_selected)
        self.to_spots_button.clicked.connect(self.polygons_to_spots)
        self.paint_button.toggled.connect(self.set_painting)
        self.undo_button.clicked.connect(self.undo)
        self.redo_button.clicked.connect(self.redo)
        self.color_spots.toggled.connect(lambda _c: self._recolor_spots())
        self.save_button.clicked.connect(self._on_save)
        self.export_csv_button.clicked.connect(self._on_export_csv)
        self.import_csv_button.clicked.connect(self._on_import_csv)
        self.export_geojson_button.clicked.connect(self._on_export_geojson)
        self.import_geojson_button.clicked.connect(self._on_import_geojson)
        context = Qt.ShortcutContext.WidgetWithChildrenShortcut
        self.undo_shortcut = QShortcut(QKeySequence("Ctrl+Z"), self, self.undo, context=context)
        self.redo_shortcut = QShortcut(
            QKeySequence("Ctrl+Shift+Z"), self, self.redo, context=context
        )
        self.viewer.layers.events.inserted.connect(self.refresh_layers)
        self.viewer.layers.events.removed.connect(self.refresh_layers)
        self.refresh_layers()
        # napari docks us after __init__: fix the dock's tab title once the loop runs again
        # (a child timer: it dies with the widget, never fires on a deleted one)
        self._title_timer = QTimer(self)
        self._title_timer.setSingleShot(True)
        self._title_timer.timeout.connect(lambda: fix_dock_title(self))
        self._title_timer.start(0)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        fix_dock_title(self)
        super().showEvent(event)

    # ------------------------------------------------------------------ layers and loading
    def refresh_layers(self, *_args: Any) -> None:
        """Offer the spots/cells layers of the viewer; (re)bind if the choice changed."""
        names = [ly.name for ly in scai_point_layers(self.viewer)]
        refill_combo(self.layer_combo, names)
        layer = self.viewer.layers[self.layer_combo.currentText()] if names else None
        if layer is not self.spots:
            self._on_layer_changed()

    def _on_layer_changed(self, *_args: Any) -> None:
        name = self.layer_combo.currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        if layer is self.spots:
            return
        self.autosave_timer.stop()
        self.set_painting(False)
        self.spots = layer
        if layer is None:
            return
        self.load()

    @property
    def sdata(self):
        return None if self.spots is None else self.spots.metadata["sdata"]

    @property
    def adata(self):
        return None if self.spots is None else self.spots.metadata["adata"]

    @property
    def table(self) -> str | None:
        return None if self.spots is None else self.spots.metadata["scai"].table

    @property
    def rows(self) -> np.ndarray:
        rows = self.spots.metadata["scai"].extra.get("rows")
        return np.arange(len(self.spots.data)) if rows is None else np.asarray(rows)

    def load(self) -> None:
        """Show the annotation saved in the layer's SpatialData (polygons, classes, column).

        Called when a spots layer is chosen; starts a fresh undo history.
        """
        if self.spots is None:
            return
        self.stack.clear()
        self.element = _element_for(self.spots)
        state = state_from_sdata(
            self.sdata,
            np.asarray(self.spots.data),
            self.rows,
            self._polygons_affine(),
            table=self.table,
            key=self.key,
            element=self.element,
        )
        self._labels = LabelCache(np.asarray(self.spots.data))
        self._ensure_shapes_layer()
        self._had_column = self.key in self.adata.obs.columns
        self._initial_color_key = self.spots.metadata["scai"].color_key
        self._set_state(state, write=self._had_column or bool(state.steps))
        self.dirty = False
        if state.steps or state.classes:
            self.status.setText(
                f"loaded {len(state.polygons)} polygons, {len(state.classes)} classes from '{self.element}' / obs['{self.key}']"
            )

    def _polygons_affine(self) -> np.ndarray:
        """World affine of the saved polygons: their own transform, else the spots' one."""
        from napari_scai.viewer._layers import affine_yx

        if self.element in self.sdata.shapes:
            try:
                return affine_yx(
                    self.sdata.shapes[self.element], self.spots.metadata["scai"].coordinate_system
                )
            except KeyError:
                pass
        return _spots_affine(self.spots)

    def _ensure_shapes_layer(self) -> None:
        name = f"{self.spots.name} annotations"
        if (
            self.shapes_layer is not None
            and self.shapes_layer in self.viewer.layers
            and self.shapes_layer.name == name
        ):
            return
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        layer = self.viewer.add_shapes(
            name=name,
            ndim=2,
            units=self.spots.units,  # same units as the spots: the scale bar keeps its µm
            edge_width=self._edge_width(),
            features=pd.DataFrame(
                {"poly_id": np.array([], dtype=np.int64), "class": np.array([], dtype=object)}
            ),
        )
        layer.feature_defaults = {"poly_id": -1, "class": ""}
        layer.metadata["scai_annotations_of"] = self.spots.name
        layer.events.data.connect(self._on_shapes_data)
        for target in (layer, self.spots):
            target.bind_key("Control-Z", lambda _ly: self.undo(), overwrite=True)
            target.bind_key("Control-Shift-Z", lambda _ly: self.redo(), overwrite=True)
        self.shapes_layer = layer
        self.viewer.layers.selection.active = layer

    def _edge_width(self) -> float:
        return (
            0.25 * spot_size(self.spots) if self.spots is not None and len(self.spots.data) else 1.0
        )

    # ------------------------------------------------------------------ state changes
    def _set_state(self, state: AnnotationState, *, write: bool = True) -> None:
        self.state = state
        if write and not state.classes and not state.steps and not self._had_column:
            # back to where we started (e.g. everything undone): no column at all
            self.adata.obs.drop(columns=[self.key], inplace=True, errors="ignore")
            self.adata.uns.pop(f"{self.key}_colors", None)
        elif write:
            labels = self._labels.labels(state)  # only the steps that changed are replayed
            write_column(self.adata, self.rows, labels, state.classes, self.key)
        self._render_polygons()
        self._refresh_classes()
        self._recolor_spots()
        self._update_buttons()
        self.annotationChanged.emit()

    def execute(self, label: str, state: AnnotationState) -> None:
        """Apply a new state as one undoable step named ``label``."""
        if self.spots is None:
            notify_error(
                "no spots/cells layer to annotate. Fix: open a dataset with napari-scai first"
            )
            return
        if state == self.state:
            self._render_polygons()
            return
        self.stack.push(Command(label, self.state, state))
        self._set_state(state)
        self._changed(label)

    def undo(self) -> None:
        """Undo the last annotation step."""
        cmd = self.stack.undo()
        if cmd is not None:
            self._set_state(cmd.before)
            self._changed(f"undid {cmd.label}")

    def redo(self) -> None:
        """Redo the last undone annotation step."""
        cmd = self.stack.redo()
        if cmd is not None:
            self._set_state(cmd.after)
            self._changed(f"redid {cmd.label}")

    def _changed(self, what: str) -> None:
        self.dirty = True
        self._edits += 1
        self.status.setText(what)
        self._schedule_autosave()

    def _schedule_autosave(self) -> None:
        if self.autosave.isChecked() and self.sdata is not None and self.sdata.path is not None:
            self.autosave_timer.start()

    def _update_buttons(self) -> None:
        self.undo_button.setEnabled(self.stack.can_undo)
        self.redo_button.setEnabled(self.stack.can_redo)
        self.undo_button.setToolTip(
            f"Undo {self.stack.done[-1].label} (Ctrl+Z)"
            if self.stack.can_undo
            else "Nothing to undo"
        )
        self.redo_button.setToolTip(
            f"Redo {self.stack.undone[-1].label} (Ctrl+Shift+Z)"
            if self.stack.can_redo
            else "Nothing to redo"
        )

    # ------------------------------------------------------------------ classes
    @property
    def current_class(self) -> str | None:
        item = self.class_list.currentItem()
        return None if item is None else item.data(Qt.ItemDataRole.UserRole)

    def set_current_class(self, name: str) -> None:
        """Make ``name`` the class given to new polygons and assignments."""
        names = self.state.class_names
        if name not in names:
            raise KeyError(f"no class named '{name}'. Fix: add it first (classes: {names})")
        self.class_list.setCurrentRow(names.index(name))

    def add_class(self, name: str, color: str | None = None) -> None:
        """Add a class (undoable) and make it current."""
        name = name.strip()
        if not name:
            notify_error("a class needs a name. Fix: type one in the box above 'Add class'")
            return
        if name in self.state.class_names:
            self.set_current_class(name)
            return
        color = color or _next_color(self.state)
        self.execute(f"add class {name}", self.state.with_class(name, color))
        self.set_current_class(name)

    def rename_class(self, old: str, new: str) -> None:
        """Rename a class everywhere (undoable)."""
        try:
            state = self.state.rename_class(old, new.strip())
        except (KeyError, ValueError) as err:
            notify_error(str(err.args[0]))
            return
        self.execute(f"rename {old} to {new}", state)
        self.set_current_class(new.strip())

    def recolor_class(self, name: str, color: str) -> None:
        """Give a class a new colour (undoable)."""
        current = self.current_class
        self.execute(f"recolour {name}", self.state.recolor_class(name, color))
        if current:
            self.set_current_class(current)

    def _pick_class(self, state: AnnotationState) -> tuple[str, AnnotationState]:
        """The current class, creating one (in the returned state) when there is none."""
        cls = self.current_class
        if cls is None or cls not in state.class_names:
            cls = f"class {len(state.classes) + 1}"
            state = state.with_class(cls, _next_color(state))
        return cls, state

    def _refresh_classes(self) -> None:
        current = self.current_class
        counts = (
            self.adata.obs[self.key].value_counts()
            if self.adata is not None and self.key in self.adata.obs
            else {}
        )
        self.class_list.blockSignals(True)
        self.class_list.clear()
        for c in self.state.classes:
            item = QListWidgetItem(
                swatch(c.color), f"{c.name}  ({int(counts.get(c.name, 0))} spots)"
            )
            item.setData(Qt.ItemDataRole.UserRole, c.name)
            self.class_list.addItem(item)
        names = self.state.class_names
        if names:
            self.class_list.setCurrentRow(
                names.index(current) if current in names else len(names) - 1
            )
        self.class_list.blockSignals(False)
        self._on_current_class()

    def _on_current_class(self, *_args: Any) -> None:
        cls = self.current_class
        if (
            cls is not None
            and self.shapes_layer is not None
            and not self.shapes_layer.selected_data
        ):
            color = self.state.color_of(cls)
            with self._sync():
                self.shapes_layer.current_edge_color = color
                self.shapes_layer.current_face_color = QColor(color).name() + "40"

    def _on_add_class(self) -> None:
        self.add_class(self.class_name.text())
        self.class_name.clear()

    def _on_rename(self) -> None:
        if self.current_class is None or not self.class_name.text().strip():
            notify_error(
                "select a class and type its new name. Fix: pick a class in the list, type a name, press Rename"
            )
            return
        self.rename_class(self.current_class, self.class_name.text())
        self.class_name.clear()

    def _on_recolor(self) -> None:
        cls = self.current_class
        if cls is None:
            return
        color = self._pick_color(self.state.color_of(cls))
        if color:
            self.recolor_class(cls, color)

    @staticmethod
    def _dialog_color(current: str) -> str | None:
        color = QColorDialog.getColor(QColor(current))
        return color.name() if color.isValid() else None

    # ------------------------------------------------------------------ polygons
    @contextmanager
    def _sync(self) -> Iterator[None]:
        previous, self._syncing = self._syncing, True
        try:
            yield
        finally:
            self._syncing = previous

    def _render_polygons(self) -> None:
        """Make the Shapes layer show the state's polygons.

        Incremental: shapes already drawn with the right vertices are kept (napari
        triangulates every polygon it is given, which is slow for long outlines); only removed
        shapes are deleted, new ones appended, and colours/features rewritten.
        """
        layer = self.shapes_layer
        if layer is None:
            return
        kw = polygon_layer_kwargs(self.state, self._edge_width())
        polys = self.state.polygons
        by_id = {p.id: p for p in polys}
        data = layer.data
        ids = (
            list(layer.features["poly_id"].to_numpy())
            if "poly_id" in layer.features
            else [-1] * len(data)
        )
        known = set(ids)
        pending = iter([p for p in polys if p.id not in known])
        candidate = next(pending, None)
        for i, lid in enumerate(ids):  # shapes just drawn (id -1) that the state now holds
            if lid < 0 and candidate is not None and _same_vertices(data[i], candidate.yx):
                ids[i] = candidate.id
                candidate = next(pending, None)
        keep = [
            i
            for i, lid in enumerate(ids)
            if lid in by_id and _same_vertices(data[i], by_id[lid].yx)
        ]
        kept_ids = [ids[i] for i in keep]
        order = [p.id for p in polys]
        with self._sync():
            layer.selected_data = set()
            if kept_ids != order[: len(kept_ids)]:  # order changed (e.g. undo of a delete): redraw
                keep, kept_ids = [], []
            drop = sorted(set(range(len(data))) - set(keep))
            if drop:
                if len(drop) == len(data):
                    layer.data = []
                else:
                    layer.remove(drop)
            missing = polys[len(kept_ids) :]
            if missing:
                colors = kw["edge_color"][len(kept_ids) :]
                layer.add_polygons(
                    [p.yx for p in missing],
                    edge_width=kw["edge_width"],
                    edge_color=colors,
                    face_color=kw["face_color"][len(kept_ids) :],
                )
            layer.features = kw["features"]
            layer.feature_defaults = {"poly_id": -1, "class": ""}
            if polys:
                layer.edge_color = kw["edge_color"]
                layer.face_color = kw["face_color"]
                layer.edge_width = [kw["edge_width"]] * len(polys)
            layer.current_edge_width = kw["edge_width"]

    def _on_shapes_data(self, event) -> None:
        if self._syncing or str(getattr(event, "action", "")) not in (
            "added",
            "removed",
            "changed",
        ):
            return
        self._reconcile()

    def _reconcile(self) -> None:
        """Turn what the user did in the Shapes layer into one undoable step."""
        layer = self.shapes_layer
        ids = (
            layer.features["poly_id"].to_numpy()
            if "poly_id" in layer.features
            else np.full(len(layer.data), -1)
        )
        by_id = {p.id: p for p in self.state.polygons}
        present = {int(i) for i in ids if i >= 0}
        removed = [pid for pid in by_id if pid not in present]
        new, edits = [], {}
        for pid, verts, kind in zip(ids, layer.data, layer.shape_type, strict=True):
            poly = shape_to_polygon(verts, kind)
            if poly is None:
                notify_error(
                    f"a {kind} encloses no area and cannot annotate. Fix: draw a polygon, rectangle or ellipse"
                )
                continue
            if pid < 0:
                new.append(poly)
            elif pid in by_id and (
                by_id[pid].yx.shape != poly.shape or not np.allclose(by_id[pid].yx, poly)
            ):
                edits[int(pid)] = poly
        state, what = self.state, []
        if removed:
            state = state.remove_polygons(removed)
            what.append(f"delete {len(removed)} polygon(s)")
        if edits:
            state = state.edit_polygons(edits)
            what.append(f"edit {len(edits)} polygon(s)")
        if new:
            cls, state = self._pick_class(state)
            state = state.add_polygons(new, cls, self.author_edit.text())
            what.append(f"add {len(new)} polygon(s) as {cls}")
        self.execute(", ".join(what) or "edit polygons", state)

    def add_polygons(self, polygons_yx: list[np.ndarray], cls: str | None = None) -> None:
        """Add polygons (world ``(y, x)`` vertices) of class ``cls`` (default: current) as one step."""
        state = self.state
        if cls is None:
            cls, state = self._pick_class(state)
        elif cls not in state.class_names:
            state = state.with_class(cls, _next_color(state))
        self.execute(
            f"add {len(polygons_yx)} polygon(s) as {cls}",
            state.add_polygons(polygons_yx, cls, self.author_edit.text()),
        )

    def _selected_polygon_ids(self) -> list[int]:
        layer = self.shapes_layer
        if layer is None or not layer.selected_data:
            return []
        ids = layer.features["poly_id"].to_numpy()
        return [int(ids[i]) for i in sorted(layer.selected_data) if ids[i] >= 0]

    # ------------------------------------------------------------------ spots
    def assign_selected(self) -> None:
        """Give the current class to the selected spots and the selected polygons (one step)."""
        if self.spots is None:
            return
        polys = self._selected_polygon_ids()
        points = sorted(self.spots.selected_data)
        if not polys and not points:
            _notify_info(
                "nothing selected. Select spots (spots layer, select mode) or polygons (annotation layer) first"
            )
            return
        cls, state = self._pick_class(self.state)
        if polys:
            state = state.edit_polygons(dict.fromkeys(polys, cls))
        if points:
            state = state.assign_points(points, cls)
        self.spots.selected_data = set()
        self.execute(f"assign {len(points)} spot(s), {len(polys)} polygon(s) to {cls}", state)

    def erase_selected(self) -> None:
        """Clear the class of the selected spots and delete the selected polygons (one step)."""
        if self.spots is None:
            return
        polys = self._selected_polygon_ids()
        points = sorted(self.spots.selected_data)
        if not polys and not points:
            _notify_info("nothing selected to erase. Select spots or polygons first")
            return
        state = self.state
        if polys:
            state = state.remove_polygons(polys)
        if points:
            state = state.assign_points(points, None)
        self.spots.selected_data = set()
        self.execute(f"erase {len(points)} spot(s), {len(polys)} polygon(s)", state)

    def polygons_to_spots(self) -> None:
        """Lasso: the spots inside the selected polygons get the current class, and those
        polygons are dropped (one step). Without a selection, the last polygon is used."""
        if self.spots is None or not self.state.polygons:
            _notify_info("draw a polygon (e.g. with the Shapes layer's lasso tool) first")
            return
        ids = self._selected_polygon_ids() or [self.state.polygons[-1].id]
        polys = [p for p in self.state.polygons if p.id in set(ids)]
        cls, state = self._pick_class(self.state)
        yx = np.asarray(self.spots.data)
        inside = points_in_polygons(
            yx[:, ::-1], [shapely.make_valid(shapely.Polygon(p.yx[:, ::-1])) for p in polys]
        )
        points = np.flatnonzero(inside >= 0)
        state = state.remove_polygons(ids).assign_points(points, cls)
        self.execute(f"lasso {len(points)} spot(s) to {cls}", state)

    def set_painting(self, on: bool) -> None:
        """Turn the spot brush on or off (dragging over the spots layer assigns the class)."""
        on = bool(on) and self.spots is not None
        if self.paint_button.isChecked() != on:
            self.paint_button.blockSignals(True)
            self.paint_button.setChecked(on)
            self.paint_button.blockSignals(False)
        if self.spots is None:
            return
        callbacks = self.spots.mouse_drag_callbacks
        if on and self._paint_drag not in callbacks:
            callbacks.append(self._paint_drag)
            self.spots.mode = "pan_zoom"
            self.viewer.layers.selection.active = self.spots
        elif not on and self._paint_drag in callbacks:
            callbacks.remove(self._paint_drag)
        self.spots.mouse_pan = not on

    def _paint_drag(self, layer, event):
        """Drag callback of the spots layer while painting: collect, then one step."""
        from scipy.spatial import cKDTree

        yx = np.asarray(layer.data)[:, -2:]
        tree = cKDTree(yx)
        radius = self.brush.value() * spot_size(layer)
        picked: set[int] = set()

        def pick() -> None:
            picked.update(tree.query_ball_point(np.asarray(event.position)[-2:], radius))
            layer.selected_data = picked  # live feedback

        pick()
        yield
        while event.type == "mouse_move":
            pick()
            yield
        layer.selected_data = set()
        if not picked:
            return
        if self.paint_erases.isChecked():
            self.execute(f"erase {len(picked)} spot(s)", self.state.assign_points(picked, None))
        else:
            cls, state = self._pick_class(self.state)
            self.execute(f"paint {len(picked)} spot(s) {cls}", state.assign_points(picked, cls))

    def _recolor_spots(self) -> None:
        from napari_scai.viewer import recolor

        if self.spots is None or not self.color_spots.isChecked():
            return
        col = self.adata.obs.get(self.key)
        if col is not None and len(col.cat.categories):
            recolor(self.spots, self.key)
        elif self._initial_color_key not in (None, self.key):
            recolor(self.spots, self._initial_color_key)  # nothing annotated: the colours we found

    # ------------------------------------------------------------------ saving
    def save(self, path: str | Path | None = None) -> bool:
        """Write the polygons and the column to the store (``io.update``, atomic).

        ``path`` defaults to the SpatialData's own store. On failure the store keeps its
        previous content, a napari error notification says why, and False is returned. The
        write happens here, on the calling thread (the Save button writes in a worker instead);
        a background write still running is waited for first, so two never overlap.
        """
        from napari_scai import io

        self._wait_for_background_save()
        target = self._save_target(path)
        if target is None:
            return False
        try:
            elements, removed = self._elements_to_write()
            written = io.update(self.sdata, target, elements=elements, remove=removed)
        except Exception as err:  # noqa: BLE001 - any failure is reported, the store is intact
            self._on_save_error(err, target, auto=False)
            return False
        self._on_saved(self._edits, self.sdata, written, auto=False)
        return True

    def _save_target(self, path: str | Path | None) -> Path | None:
        """The store a save writes to (``path``, else the data's own); None (said why) if none."""
        self.autosave_timer.stop()
        if self.spots is None:
            return None
        if path is None and self.sdata.path is None:
            notify_error(
                "this data has no store on disk yet. Fix: press Save and choose a .zarr folder"
            )
            return None
        return Path(path) if path is not None else Path(self.sdata.path)

    def _elements_to_write(self) -> tuple[list[str], list[str]]:
        """Elements to (re)write, and those to delete from the store in the same atomic step."""
        return stage_annotation(
            self.sdata,
            self.state,
            table=self.table,
            spots_element=self.spots.metadata["scai"].element,
            element=self.element,
            matrix=_spots_affine(self.spots),
            author=self.author_edit.text(),
        )

    def _snapshot(self, elements: list[str], *, whole: bool):
        """Copies of ``elements`` for a worker to write while edits go on (see
        :func:`napari_scai.viewer._annotations.snapshot_elements`)."""
        return snapshot_elements(self.sdata, elements, whole=whole)

    def _autosave(self) -> None:
        if not (self.dirty and self.sdata is not None and self.sdata.path is not None):
            return
        if self._save_worker is not None:  # one write at a time: try again when it is done
            self.autosave_timer.start()
            return
        self._save_in_background(auto=True)

    def _save_in_background(self, path: str | Path | None = None, *, auto: bool) -> None:
        """Save off the GUI thread: snapshot the elements here, write them in a worker.

        The snapshot (copies of the table and the polygons) is what gets written, so steps taken
        while the write runs are safe; they keep the widget dirty for the next autosave. One
        write at a time: the Save button is disabled meanwhile, and a save asked for then runs
        when the current write is done. ``auto`` only changes the wording of the messages.
        """
        from napari.qt.threading import create_worker

        from napari_scai import io

        if self._save_worker is not None:
            self._queued_save = lambda: self._save_in_background(path, auto=auto)
            return
        target = self._save_target(path)
        if target is None:
            return
        sdata = self.sdata
        try:
            elements, removed = self._elements_to_write()
            snapshot = self._snapshot(elements, whole=not target.exists())
        except Exception as err:  # noqa: BLE001 - reported like any failed save
            self._on_save_error(err, target, auto=auto)
            return
        edits = self._edits
        worker = create_worker(
            io.update,
            snapshot,
            target,
            elements=elements,
            remove=removed,
            _start_thread=False,
            _ignore_errors=True,
        )
        worker.returned.connect(lambda written: self._on_saved(edits, sdata, written, auto=auto))
        worker.errored.connect(lambda err: self._on_save_error(err, target, auto=auto))
        worker.finished.connect(self._on_background_save_finished)
        self._save_worker = worker
        self.save_button.setEnabled(False)
        self.status.setText(f"{'auto' if auto else ''}saving to {target.name}…")
        worker.start()

    def _wait_for_background_save(self) -> None:
        """Block until no background write runs (its result handled, queued saves included)."""
        import time

        from qtpy.QtCore import QCoreApplication

        while self._save_worker is not None:
            QCoreApplication.processEvents()
            time.sleep(0.01)

    def _on_saved(self, edits: int, sdata, written: Path, *, auto: bool) -> None:
        """A save of the annotation as it was after ``edits`` steps reached ``written``."""
        sdata.path = Path(written)  # a new store ("save as") is where autosave goes from now on
        self.last_save_error = None
        if edits == self._edits:
            self.dirty = False
        else:
            self._schedule_autosave()  # steps taken during the write
        self.status.setText(
            f"{'auto' if auto else ''}saved {len(self.state.polygons)} polygons and "
            f"obs['{self.key}'] to {Path(written).name}"
        )

    def _on_save_error(self, err: Exception, target: Path, *, auto: bool) -> None:
        self.last_save_error = f"{type(err).__name__}: {err}"
        notify_error(
            f"{'auto' if auto else ''}saving the annotation to {target} failed "
            f"({self.last_save_error}). The store keeps its previous version; your annotation "
            "is still here. Fix: check the disk and save again"
        )
        self.status.setText(f"save failed: {self.last_save_error}")

    def _on_background_save_finished(self) -> None:
        self._save_worker = None
        self.save_button.setEnabled(True)
        queued, self._queued_save = self._queued_save, None
        if queued is not None:
            queued()

    def _on_save(self) -> None:
        """The Save button: write in the background (asks for a new store if there is none)."""
        if self.spots is None:
            return
        path = None
        if self.sdata.path is None:
            path, _ = QFileDialog.getSaveFileName(
                self, "Save as a SpatialData store", "annotated.zarr", "SpatialData (*.zarr)"
            )
            if not path:
                return
            path = path if path.endswith(".zarr") else f"{path}.zarr"
        self._save_in_background(path, auto=False)

    # ------------------------------------------------------------------ import / export
    def export_csv(self, path: str | Path) -> Path:
        """Per-spot classes as ``spot_id,class`` CSV."""
        from napari_scai.tl import export_annotation_csv

        return export_annotation_csv(self.adata, path=path, key=self.key)

    def import_csv(self, path: str | Path) -> None:
        """Per-spot classes from a CSV (one undoable step; unknown classes are added)."""
        try:
            state = state_with_csv(self.state, self.adata, self.rows, path)
        except (ValueError, FileNotFoundError) as err:
            notify_error(str(err))
            return
        self.execute(f"import {Path(path).name}", state)

    def export_geojson(self, path: str | Path) -> Path | None:
        """Polygons as GeoJSON (intrinsic ``x, y`` of the spots element, with class/colour)."""
        from napari_scai.tl import export_geojson

        gdf = state_to_geodataframe(
            self.state, _spots_affine(self.spots), author=self.author_edit.text()
        )
        if gdf is None:
            notify_error("there are no polygons to export. Fix: draw some first")
            return None
        return export_geojson(gdf, path=path)

    def import_geojson(self, path: str | Path) -> None:
        """Polygons from GeoJSON (``class``/``color`` properties) as one undoable step."""
        from napari_scai.tl import import_geojson

        try:
            gdf = import_geojson(path)
        except (ValueError, FileNotFoundError) as err:
            notify_error(str(err))
            return
        state = self.state
        default = None
        if "class" not in gdf.columns:
            default, state = self._pick_class(state)
        state = state_with_geojson(
            state, gdf, _spots_affine(self.spots), author=self.author_edit.text(), cls=default
        )
        self.execute(f"import {Path(path).name}", state)

    def _on_export_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export annotation CSV", "annotation.csv", "CSV (*.csv)"
        )
        if path:
            self.export_csv(path)

    def _on_import_csv(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import annotation CSV", "", "CSV (*.csv)")
        if path:
            self.import_csv(path)

    def _on_export_geojson(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export polygons", "annotation.geojson", "GeoJSON (*.geojson *.json)"
        )
        if path:
            self.export_geojson(path)

    def _on_import_geojson(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Import polygons", "", "GeoJSON (*.geojson *.json)"
        )
        if path:
            self.import_geojson(path)


def _element_for(spots) -> str:
    """Shapes element holding the polygons drawn on ``spots``: ``scai_annotations``, or
    ``<spots element>_scai_annotations`` when the SpatialData has several spots/cells elements
    (one per sample), so samples never overwrite each other's polygons."""
    sdata = spots.metadata["sdata"]
    circles = [n for n, g in sdata.shapes.items() if "radius" in g.columns]
    if len(circles) <= 1:
        return ANNOTATION_ELEMENT
    return f"{spots.metadata['scai'].element}_{ANNOTATION_ELEMENT}"


def _same_vertices(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b))


_next_color = next_color


def _default_author() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return ""
