"""Categorical legend: each class with its colour and count; click hides, double-click recolours."""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QColorDialog, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from napari_scai._colors import MISSING_COLOR
from napari_scai.widgets._common import swatch

#: Legend row of the objects without a value.
MISSING_LABEL = "no value"


class LegendWidget(QWidget):
    """List of categories. ``visibilityChanged(hidden)`` and ``colorChanged(category, hex)`` signal edits."""

    visibilityChanged = Signal(object)  # set[str] of hidden categories
    colorChanged = Signal(str, str)

    def __init__(
        self, parent: QWidget | None = None, pick_color: Callable[[str], str | None] | None = None
    ) -> None:
        super().__init__(parent)
        self.list = QListWidget()
        self.list.setObjectName("legend_list")
        self.list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.list)
        self._pick_color = pick_color or self._dialog_color
        self._updating = False
        self.list.itemChanged.connect(self._on_item_changed)
        self.list.itemDoubleClicked.connect(self._on_double_click)

    @staticmethod
    def _dialog_color(current: str) -> str | None:
        color = QColorDialog.getColor(QColor(current))
        return color.name() if color.isValid() else None

    def set_categories(
        self,
        categories: list[str],
        colors: list[str],
        counts: list[int],
        hidden: set[str],
        n_missing: int = 0,
    ) -> None:
        """Show ``categories`` (replacing what was shown), plus a "no value" row if any.

        Long names are elided in the middle to the list's width; the tooltip has the full name.
        """
        self._updating = True
        self.list.clear()
        for cat, color, count in zip(categories, colors, counts, strict=True):
            item = QListWidgetItem(swatch(color), f"{cat}  ({count})")
            item.setData(Qt.ItemDataRole.UserRole, (cat, color))
            item.setToolTip(f"{cat}: {count} objects")
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Unchecked if cat in hidden else Qt.CheckState.Checked)
            self.list.addItem(item)
        if n_missing:
            item = QListWidgetItem(swatch(MISSING_COLOR), f"{MISSING_LABEL}  ({n_missing})")
            item.setData(Qt.ItemDataRole.UserRole, None)  # not a class: cannot be hidden
            item.setToolTip(f"{n_missing} objects without a value (drawn grey)")
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsUserCheckable)
            self.list.addItem(item)
        self._updating = False

    def _items(self) -> list[QListWidgetItem]:
        items = [self.list.item(i) for i in range(self.list.count())]
        return [it for it in items if it.data(Qt.ItemDataRole.UserRole) is not None]

    def categories(self) -> list[str]:
        return [it.data(Qt.ItemDataRole.UserRole)[0] for it in self._items()]

    def n_missing(self) -> int:
        """The count on the "no value" row (0 when there is none)."""
        for i in range(self.list.count()):
            it = self.list.item(i)
            if it.data(Qt.ItemDataRole.UserRole) is None:
                return int(it.text().rsplit("(", 1)[1].rstrip(")"))
        return 0

    def hidden(self) -> set[str]:
        return {
            it.data(Qt.ItemDataRole.UserRole)[0]
            for it in self._items()
            if it.checkState() != Qt.CheckState.Checked
        }

    def item_for(self, category: str) -> QListWidgetItem:
        return self._items()[self.categories().index(category)]

    def _on_item_changed(self, _item) -> None:
        if not self._updating:
            self.visibilityChanged.emit(self.hidden())

    def _on_double_click(self, item: QListWidgetItem) -> None:
        if item.data(Qt.ItemDataRole.UserRole) is None:
            return
        cat, color = item.data(Qt.ItemDataRole.UserRole)
        new = self._pick_color(color)
        if new:
            self.colorChanged.emit(cat, new)
