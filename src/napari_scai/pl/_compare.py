"""The compare report as figures: confusion matrix and where prediction and reference differ."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_scai.pl import _base

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from napari_scai.tl import CompareReport

__all__ = ["compare", "confusion_matrix", "mismatch_map"]

PathLike = str | os.PathLike[str]

#: Colours of the mismatch map: the Compare dock's highlight, and a pale blue for agreement.
MISMATCH_COLOR = "#ff00ff"
AGREE_COLOR = "#9ecae1"


def confusion_matrix(
    report: CompareReport,
    *,
    normalize: str | None = "pred",
    matched_order: bool = True,
    cmap: str = "Blues",
    annotate: bool = True,
    ax: Axes | None = None,
    save: PathLike | None = None,
) -> Axes:
    """Heatmap of the confusion matrix of a :func:`napari_scai.tl.compare` report.

    Parameters
    ----------
    report
        The comparison (rows: predicted labels, columns: reference classes).
    normalize
        ``"pred"``: each row sums to 1 (where a predicted domain's spots go); ``"ref"``: each
        column sums to 1; ``None``: counts.
    matched_order
        Order the predicted rows after their matched reference classes (a diagonal when the
        prediction is good); unmatched rows last.
    cmap
        Colormap.
    annotate
        Write the value in each cell.
    ax, save
        Draw into this Axes; save the figure to this path.

    Returns
    -------
    matplotlib.axes.Axes
    """
    if normalize not in ("pred", "ref", None):
        raise ValueError(f"normalize must be 'pred', 'ref' or None, got {normalize!r}.")
    conf = report.confusion
    if matched_order:
        order_of = {c: i for i, c in enumerate(conf.columns)}
        rows = sorted(
            conf.index,
            key=lambda r: (order_of.get(report.matching.get(r), len(order_of)), str(r)),
        )
        conf = conf.loc[rows]
    values = conf.to_numpy(dtype=float)
    if normalize == "pred":
        values = values / np.maximum(values.sum(axis=1, keepdims=True), 1)
    elif normalize == "ref":
        values = values / np.maximum(values.sum(axis=0, keepdims=True), 1)
    n_rows, n_cols = values.shape
    ax = _base.new_axes(ax, figsize=(1.2 + 0.55 * n_cols, 1.0 + 0.5 * n_rows))
    im = ax.imshow(values, cmap=cmap, aspect="auto", vmin=0)
    ax.set_xticks(range(n_cols), [str(c) for c in conf.columns], rotation=45, ha="right")
    ax.set_yticks(
        range(n_rows),
        [f"{r} → {report.matching[r]}" if r in report.matching else str(r) for r in conf.index],
    )
    ax.set_xlabel(f"reference ({report.key_ref})")
    ax.set_ylabel(f"predicted ({report.key_pred})")
    if annotate:
        top = values.max() if values.size else 1.0
        for i in range(n_rows):
            for j in range(n_cols):
                v = values[i, j]
                text = f"{v:.2f}" if normalize else f"{int(v)}"
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if v > 0.6 * top else "black",
                )
    label = {"pred": "fraction of predicted", "ref": "fraction of reference", None: "spots"}
    ax.figure.colorbar(im, ax=ax, fraction=0.05, pad=0.02).set_label(label[normalize])
    ax.set_title(f"ARI {report.ari:.3f}  NMI {report.nmi:.3f}", fontsize=10)
    _base.finish(ax.figure, save)
    return ax


def mismatch_map(
    data: Any,
    *,
    report: CompareReport,
    table: str = "rna",
    image: str | bool | None = True,
    alpha: float = 0.9,
    legend: bool = True,
    scale_bar: bool = True,
    ax: Axes | None = None,
    save: PathLike | None = None,
) -> Axes:
    """Where the matched prediction and the reference differ, on the tissue.

    Spots where they disagree (:func:`napari_scai.tl.disagreement`) are drawn in the
    Compare dock's highlight colour, spots where they agree in pale blue, unlabelled ones in the
    missing colour.

    Parameters
    ----------
    data
        The SpatialData (or AnnData) ``report`` was computed on.
    report
        Result of :func:`napari_scai.tl.compare`.
    table
        Table name for a SpatialData.
    image, alpha, legend, scale_bar
        As in :func:`napari_scai.pl.spatial`.
    ax, save
        Draw into this Axes; save the figure to this path.

    Returns
    -------
    matplotlib.axes.Axes
    """
    from matplotlib.patches import Patch

    from napari_scai._colors import MISSING_COLOR, hex_to_rgba
    from napari_scai.tl import disagreement

    t = _base.tissue(data, table=table, image=image)
    flags = disagreement(data, report=report, table=table)
    ref_missing = t.adata.obs[report.key_ref].isna().to_numpy()
    state = np.where(ref_missing, 2, flags.astype(int))  # 0 agree, 1 differ, 2 unlabelled
    palette = hex_to_rgba([AGREE_COLOR, MISMATCH_COLOR, MISSING_COLOR], alpha)
    per_object = np.full(len(t.rows), 2)
    ok = t.rows >= 0
    per_object[ok] = state[t.rows[ok]]
    ax = _base.new_axes(ax)
    _base.draw_image(ax, t)
    _base.draw_spots(ax, t, palette[per_object])
    _base.frame(ax, t)
    if scale_bar:
        _base.add_scale_bar(ax, t)
    n = np.bincount(state, minlength=3)
    if legend:
        ax.legend(
            handles=[
                Patch(facecolor=AGREE_COLOR, label=f"agree ({n[0]})"),
                Patch(facecolor=MISMATCH_COLOR, label=f"differ ({n[1]})"),
                Patch(facecolor=MISSING_COLOR, label=f"no reference ({n[2]})"),
            ],
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            frameon=False,
            fontsize=8,
        )
    rate = n[1] / max(n[0] + n[1], 1)
    ax.set_title(
        f"{report.key_pred} vs {report.key_ref}: {rate:.1%} of labelled spots differ",
        fontsize=10,
    )
    _base.finish(ax.figure, save)
    return ax


def compare(
    data: Any,
    *,
    report: CompareReport,
    table: str = "rna",
    normalize: str | None = "pred",
    save: PathLike | None = None,
) -> Figure:
    """The compare report in one figure: the mismatch map beside the confusion matrix.

    Parameters
    ----------
    data
        The SpatialData (or AnnData) ``report`` was computed on.
    report
        Result of :func:`napari_scai.tl.compare`.
    table
        Table name for a SpatialData.
    normalize
        As in :func:`confusion_matrix`.
    save
        Save the figure to this path.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    n_cols = report.confusion.shape[1]
    fig, (left, right) = plt.subplots(
        1,
        2,
        figsize=(7.0 + 0.55 * n_cols, 5.0),
        layout="constrained",
        gridspec_kw={"width_ratios": [1.4, 1.0]},
    )
    mismatch_map(data, report=report, table=table, ax=left)
    confusion_matrix(report, normalize=normalize, ax=right)
    _base.finish(fig, save)
    return fig
