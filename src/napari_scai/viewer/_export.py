"""Save the current view with its legend or colorbar as a PNG (for figures and reports)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_scai._colors import MISSING_COLOR
from napari_scai.viewer._layers import ColorStyle

#: The figure is at least this much wider than the view: the legend/colorbar sits on the
#: right (wider when the legend's entries need it).
LEGEND_WIDTH_RATIO = 1.35


#: Legend entries and colorbar labels longer than this are elided in the middle.
MAX_LABEL = 32


def elide(text: str, width: int = MAX_LABEL) -> str:
    """``text`` cut in the middle with "…" to at most ``width`` characters."""
    text = str(text)
    if len(text) <= width:
        return text
    keep = width - 1
    return f"{text[: (keep + 1) // 2]}…{text[len(text) - keep // 2 :]}"


def data_box(viewer, shot: np.ndarray) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) of ``shot`` covered by the visible layers (2D view).

    The canvas beyond the data's extent is background (black bars when the canvas and the
    tissue have different aspect ratios); a figure keeps only the box.
    """
    visible = [ly for ly in viewer.layers if ly.visible]
    h, w = shot.shape[:2]
    if not visible or viewer.dims.ndisplay != 2:
        return 0, h, 0, w
    ext = np.array([np.asarray(ly.extent.world)[:, -2:] for ly in visible])
    lo, hi = ext[:, 0].min(axis=0), ext[:, 1].max(axis=0)
    canvas = viewer.window._qt_viewer.canvas
    logical_h, logical_w = canvas.size
    ratio = h / logical_h
    center = np.asarray(viewer.camera.center)[-2:]
    zoom = viewer.camera.zoom
    half = np.array([logical_h, logical_w]) / 2
    a = ((lo - center) * zoom + half) * ratio
    b = ((hi - center) * zoom + half) * ratio
    r0, c0 = np.floor(np.maximum(a, 0)).astype(int)
    r1, c1 = np.ceil(np.minimum(b, [h, w])).astype(int)
    if r1 - r0 < 2 or c1 - c0 < 2:  # data off screen: keep the canvas
        return 0, h, 0, w
    return int(r0), int(r1), int(c0), int(c1)


def _active_style(viewer) -> ColorStyle | None:
    layer = viewer.layers.selection.active
    source = layer.metadata.get("scai") if layer is not None else None
    return source.extra.get("style") if source is not None else None


def save_figure(
    viewer,
    path: str | Path,
    *,
    style: ColorStyle | None = None,
    hidden: set[str] | None = None,
    dpi: int = 150,
    crop: bool = True,
) -> Path:
    """Write the canvas screenshot plus a legend (categorical) or colorbar (continuous) as a PNG.

    Parameters
    ----------
    viewer
        A ``napari.Viewer`` (shown: a hidden viewer's screenshot is blank).
    path
        Output ``.png``; written atomically (temporary file, then renamed).
    style
        What the legend shows; default: the style of the active layer (set by ``recolor``).
    hidden
        Classes drawn grey in the legend; default: ``style.hidden``.
    dpi
        Resolution of the figure; the canvas keeps its pixel size.
    crop
        Keep only the part of the canvas the data covers (:func:`data_box`): no black bars.

    Returns
    -------
    Path
        ``path``.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    style = style if style is not None else _active_style(viewer)
    hidden = set(hidden) if hidden is not None else set(getattr(style, "hidden", set()) or set())
    path = Path(path)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    if crop:
        r0, r1, c0, c1 = data_box(viewer, shot)
        shot = shot[r0:r1, c0:c1]
    h, w = shot.shape[:2]
    view_in = w / dpi
    side_in = view_in * (LEGEND_WIDTH_RATIO - 1)
    height_in = h / dpi
    if style is not None and style.kind == "categorical":
        # room for the longest (elided) entry at 7 pt, and for every row
        chars = max([len(elide(c)) + 8 for c in style.categories] + [len(elide(style.key))])
        side_in = max(side_in, 0.45 + 0.06 * chars)
        height_in = max(height_in, 0.6 + 0.16 * (len(style.categories) + 1))
    elif style is not None:
        side_in = max(side_in, 1.1)
    fig = Figure(figsize=(view_in + side_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)  # no pyplot: leaves the session's matplotlib backend alone
    view_frac = view_in / (view_in + side_in)
    ax = fig.add_axes((0, (1 - h / dpi / height_in) / 2, view_frac, h / dpi / height_in))
    ax.imshow(shot)
    ax.set_axis_off()
    if style is not None and style.kind == "categorical":
        handles = [
            Patch(color=c if cat not in hidden else MISSING_COLOR, label=f"{elide(cat)} ({n})")
            for cat, c, n in zip(style.categories, style.category_colors, style.counts, strict=True)
        ]
        if style.n_missing:
            handles.append(Patch(color=MISSING_COLOR, label=f"no value ({style.n_missing})"))
        fig.legend(
            handles=handles, loc="center right", title=elide(style.key), frameon=False, fontsize=7
        )
    elif style is not None:
        cax = fig.add_axes((view_frac + 0.1 * (1 - view_frac), 0.15, 0.12 * (1 - view_frac), 0.7))
        norm = matplotlib.colors.Normalize(*style.limits)
        mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap=style.colormap)
        label = elide(style.key) + (f" ({style.value_mode})" if style.value_mode else "")
        fig.colorbar(mappable, cax=cax, label=label)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi, format="png")
    tmp.replace(path)
    return path


def canvas_array(viewer) -> np.ndarray:
    """RGBA screenshot of the canvas only."""
    return viewer.screenshot(canvas_only=True, flash=False)
