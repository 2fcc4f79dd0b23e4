"""Save the current view with its legend or colorbar as a PNG (for figures and reports)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_scai._colors import MISSING_COLOR


def save_figure(viewer, path: str | Path, *, style=None, hidden: set[str] | None = None, dpi: int = 150) -> Path:
    """Write the canvas screenshot plus a legend (categorical) or colorbar (continuous) to ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    path = Path(path)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    h, w = shot.shape[:2]
    fig = plt.figure(figsize=(w / dpi * 1.35, h / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1 / 1.35, 1))
    ax.imshow(shot)
    ax.set_axis_off()
    if style is not None and style.kind == "categorical":
        handles = [
            Patch(color=c if cat not in (hidden or set()) else MISSING_COLOR, label=f"{cat} ({n})")
            for cat, c, n in zip(style.categories, style.category_colors, style.counts, strict=True)
        ]
        fig.legend(handles=handles, loc="center right", title=style.key, frameon=False, fontsize=7)
    elif style is not None:
        cax = fig.add_axes((1 / 1.35 + 0.03, 0.15, 0.03, 0.7))
        norm = matplotlib.colors.Normalize(*style.limits)
        fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=style.colormap), cax=cax, label=style.key)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(path)
    return path


def canvas_array(viewer) -> np.ndarray:
    """RGBA screenshot of the canvas only."""
    return viewer.screenshot(canvas_only=True, flash=False)
