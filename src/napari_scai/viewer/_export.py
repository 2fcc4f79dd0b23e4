"""Save the current view with its legend or colorbar as a PNG (for figures and reports)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_scai._colors import MISSING_COLOR
from napari_scai.viewer._layers import ColorStyle

#: The figure is this much wider than the canvas: the legend/colorbar sits on the right.
LEGEND_WIDTH_RATIO = 1.35


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
    h, w = shot.shape[:2]
    fig = Figure(figsize=(w / dpi * LEGEND_WIDTH_RATIO, h / dpi), dpi=dpi)
    FigureCanvasAgg(fig)  # no pyplot: leaves the session's matplotlib backend alone
    ax = fig.add_axes((0, 0, 1 / LEGEND_WIDTH_RATIO, 1))
    ax.imshow(shot)
    ax.set_axis_off()
    if style is not None and style.kind == "categorical":
        handles = [
            Patch(color=c if cat not in hidden else MISSING_COLOR, label=f"{cat} ({n})")
            for cat, c, n in zip(style.categories, style.category_colors, style.counts, strict=True)
        ]
        fig.legend(handles=handles, loc="center right", title=style.key, frameon=False, fontsize=7)
    elif style is not None:
        cax = fig.add_axes((1 / LEGEND_WIDTH_RATIO + 0.03, 0.15, 0.03, 0.7))
        norm = matplotlib.colors.Normalize(*style.limits)
        mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap=style.colormap)
        fig.colorbar(mappable, cax=cax, label=style.key)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi, format="png")
    tmp.replace(path)
    return path


def canvas_array(viewer) -> np.ndarray:
    """RGBA screenshot of the canvas only."""
    return viewer.screenshot(canvas_only=True, flash=False)
