"""Helpers to read a napari screenshot in world coordinates."""

from __future__ import annotations

import numpy as np


def show_and_settle(viewer, qtbot) -> None:
    viewer.window._qt_window.show()
    qtbot.wait(50)


def canvas_shot(viewer) -> np.ndarray:
    return np.asarray(viewer.screenshot(canvas_only=True, flash=False))


def world_to_screen(viewer, shot: np.ndarray, yx: np.ndarray) -> np.ndarray:
    """Screen (row, col) pixel of world points (y, x) for a 2D view; handles HiDPI screenshots."""
    canvas = viewer.window._qt_viewer.canvas
    logical_h, logical_w = canvas.size
    ratio = shot.shape[0] / logical_h
    center = np.asarray(viewer.camera.center)[-2:]
    zoom = viewer.camera.zoom
    rows = (yx[:, 0] - center[0]) * zoom + logical_h / 2
    cols = (yx[:, 1] - center[1]) * zoom + logical_w / 2
    return np.column_stack([rows, cols]) * ratio


def is_tissue(rgb: np.ndarray) -> np.ndarray:
    """H&E tissue is pink/purple (red well above green); the slide is grey-white."""
    rgb = rgb.astype(int)
    return (rgb[..., 0] - rgb[..., 1]) > 12
