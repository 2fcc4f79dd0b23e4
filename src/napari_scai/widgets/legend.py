"""Categorical legend: each class with its colour and count; click hides, double-click recolours."""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import QColorDialog, QListWidget, QListWidgetItem, QVBoxLayout, QWidget


def _swatch(color: str) -> QIcon:
    pix = QPixmap(14, 14)
    pix.fill(QColor(color))
    return QIcon(pix)


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
        self, categories: list[str], colors: list[str], counts: list[int], hidden: set[str]
    ) -> None:
        """Show ``categories`` (replacing what was shown)."""
        self._updating = True
        self.list.clear()
        for cat, color, count in zip(categories, colors, counts, strict=True):
            item = QListWidgetItem(_swatch(color), f"{cat}  ({count})")
            item.setData(Qt.ItemDataRole.UserRole, (cat, color))
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Unchecked if cat in hidden else Qt.CheckState.Checked)
            self.list.addItem(item)
        self._updating = False

    def categories(self) -> list[str]:
        return [
            self.list.item(i).data(Qt.ItemDataRole.UserRole)[0] for i in range(self.list.count())
        ]

    def hidden(self) -> set[str]:
        return {
            self.list.item(i).data(Qt.ItemDataRole.UserRole)[0]
            for i in range(self.list.count())
            if self.list.item(i).checkState() != Qt.CheckState.Checked
        }

    def item_for(self, category: str) -> QListWidgetItem:
        return self.list.item(self.categories().index(category))

    def _on_item_changed(self, _item) -> None:
        if not self._updating:
            self.visibilityChanged.emit(self.hidden())

    def _on_double_click(self, item: QListWidgetItem) -> None:
        cat, color = item.data(Qt.ItemDataRole.UserRole)
        new = self._pick_color(color)
        if new:
            self.colorChanged.emit(cat, new)
