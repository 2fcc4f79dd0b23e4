"""Static matplotlib figures of cell–cell communication results (no napari, no Qt).

All three read what :func:`napari_scai.tl.communication` stored (SpatialData: the result table
``key_added``; AnnData: ``obsm[key_added + ...]``) and draw into a given ``ax`` or a new
figure:

- :func:`communication_pair`: the pair's sender and receiver activity on the tissue;
- :func:`communication_flows`: the strongest sender → receiver flows as arrows;
- :func:`communication_heatmap`: the sender-group × receiver-group matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "communication_flows",
    "communication_heatmap",
    "communication_pair",
    "pair_activity",
]


def _report(data: Any, table: str, key_added: str):
    from napari_scai.tl._communication import CommunicationReport, _resolve

    adata, _ = _resolve(data, table)
    if key_added not in adata.uns:
        raise KeyError(
            f"no communication result uns[{key_added!r}] in the table. Fix: run "
            f"napari_scai.tl.communication(data, key_added={key_added!r}) first"
        )
    uns = adata.uns[key_added]
    return uns if isinstance(uns, CommunicationReport) else CommunicationReport.from_uns(uns)


def pair_activity(
    data: Any, interaction: str, table: str = "rna", *, key_added: str = "scai_communication"
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell ``(sender, receiver)`` activity of one interaction (rows of the table).

    Sender activity ``l_i (W r)_i`` (ligand sent to receptor-bearing neighbours), receiver
    activity ``r_j (W l)_j``.
    """
    from napari_scai.tl._communication import _resolve

    adata, is_sdata = _resolve(data, table)
    if is_sdata:
        if key_added not in data.tables:
            raise KeyError(f"no result table {key_added!r}. Fix: run tl.communication first")
        res = data.tables[key_added]
        names = list(res.var_names)
        if "sender" not in res.layers:
            raise KeyError("the result has no per-cell activities. Fix: run with local=True")
        send, recv = res.layers["sender"], res.X
    else:
        if key_added + "_sender" not in adata.obsm:
            raise KeyError(
                f"no obsm[{key_added + '_sender'!r}]. Fix: run tl.communication with local=True"
            )
        names = list(adata.obsm[key_added].columns)
        send = adata.obsm[key_added + "_sender"].to_numpy()
        recv = adata.obsm[key_added].to_numpy()
    if interaction not in names:
        raise KeyError(
            f"interaction {interaction!r} is not in the result ({len(names)} interactions, "
            f"e.g. {names[:3]}). Fix: pick one from report.pairs['interaction']"
        )
    k = names.index(interaction)

    def col(M: Any) -> np.ndarray:
        c = M[:, k]
        c = c.toarray() if hasattr(c, "toarray") else c
        return np.asarray(c, dtype=float).ravel()

    return col(send), col(recv)


def _coords(data: Any, table: str, spatial_key: str) -> np.ndarray:
    from napari_scai.tl._communication import _resolve

    adata, _ = _resolve(data, table)
    if spatial_key not in adata.obsm:
        raise KeyError(f"no obsm[{spatial_key!r}] with coordinates. Fix: pass spatial_key=")
    return np.asarray(adata.obsm[spatial_key], dtype=float)[:, :2]


def _axes(ax: Any, n: int = 1, size: tuple[float, float] = (5.0, 4.5)):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, axes = plt.subplots(1, n, figsize=(size[0] * n, size[1]), squeeze=False)
    return axes[0] if n > 1 else axes[0, 0]


def _tissue_axes(ax: Any, xy: np.ndarray) -> None:
    ax.set_aspect("equal")
    ax.set_xlim(xy[:, 0].min(), xy[:, 0].max())
    ax.set_ylim(xy[:, 1].max(), xy[:, 1].min())  # image convention: y down, as in napari
    ax.set_xticks([])
    ax.set_yticks([])


def communication_pair(
    data: Any,
    interaction: str,
    table: str = "rna",
    *,
    key_added: str = "scai_communication",
    spatial_key: str = "spatial",
    point_size: float = 4.0,
    ax: Any = None,
) -> Any:
    """Sender (left) and receiver (right) activity of one interaction on the tissue.

    Returns the two Axes (``ax`` may pass two existing Axes).
    """
    send, recv = pair_activity(data, interaction, table, key_added=key_added)
    xy = _coords(data, table, spatial_key)
    axes = _axes(ax, 2)
    for a, values, title, cmap in (
        (axes[0], send, "sender", "magma"),
        (axes[1], recv, "receiver", "viridis"),
    ):
        hi = float(np.quantile(values, 0.99)) or float(values.max()) or 1.0
        order = np.argsort(values, kind="stable")  # strongest drawn on top
        sc = a.scatter(
            xy[order, 0], xy[order, 1], c=values[order], s=point_size, cmap=cmap, vmin=0, vmax=hi
        )
        a.figure.colorbar(sc, ax=a, shrink=0.7, label=f"{title} activity")
        a.set_title(f"{interaction}: {title}")
        _tissue_axes(a, xy)
    return axes


def communication_flows(
    data: Any,
    interaction: str,
    table: str = "rna",
    *,
    key_added: str = "scai_communication",
    spatial_key: str = "spatial",
    top: int = 300,
    color_by: str | None = None,
    point_size: float = 3.0,
    ax: Any = None,
) -> Any:
    """The ``top`` strongest sender → receiver flows of one interaction as arrows.

    Cells are drawn in grey (or by the categorical ``obs`` column ``color_by``); arrow width
    and opacity grow with the per-edge signal ``w_ij l_i r_j``. Returns the Axes.
    """
    from matplotlib.colors import to_rgba

    from napari_scai.tl._communication import _resolve, communication_edges

    adata, _ = _resolve(data, table)
    xy = _coords(data, table, spatial_key)
    edges = communication_edges(
        data,
        interaction=interaction,
        table=table,
        key_added=key_added,
        top=None,
        spatial_key=spatial_key,
    )
    edges = edges[edges["sender"] != edges["receiver"]].head(int(top))
    ax = _axes(ax)
    if color_by is not None:
        if color_by not in adata.obs.columns:
            raise KeyError(f"color_by={color_by!r} is not an obs column. Fix: pick one of those")
        cats = adata.obs[color_by].astype("category")
        import matplotlib

        cmap = matplotlib.colormaps["tab20"]
        codes = cats.cat.codes.to_numpy()
        ax.scatter(xy[:, 0], xy[:, 1], c=cmap(codes % 20), s=point_size, alpha=0.5, lw=0)
        for k, name in enumerate(cats.cat.categories):
            ax.scatter([], [], color=cmap(k % 20), label=str(name), s=15)
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    else:
        ax.scatter(xy[:, 0], xy[:, 1], c="0.75", s=point_size, lw=0)
    if len(edges):
        s = edges[["sender"]].to_numpy().ravel()
        r = edges[["receiver"]].to_numpy().ravel()
        v = edges["signal"].to_numpy(dtype=float)
        rel = v / v.max()
        colors = np.tile(to_rgba("crimson"), (len(v), 1))
        colors[:, 3] = 0.3 + 0.7 * rel
        d = xy[r] - xy[s]
        ax.quiver(
            xy[s, 0],
            xy[s, 1],
            d[:, 0],
            d[:, 1],
            color=colors,
            angles="xy",
            scale_units="xy",
            scale=1.0,
            width=0.002 + 0.004 * float(np.median(rel)),
        )
    ax.set_title(f"{interaction}: top {len(edges)} flows (sender → receiver)")
    _tissue_axes(ax, xy)
    return ax


def communication_heatmap(
    data_or_report: Any,
    table: str = "rna",
    *,
    interaction: str | None = None,
    value: str = "score",
    alpha: float | None = None,
    key_added: str = "scai_communication",
    cmap: str = "magma",
    annotate: bool | None = None,
    ax: Any = None,
) -> Any:
    """Sender-group (rows) × receiver-group (columns) communication as a heatmap.

    ``data_or_report`` is a :class:`~napari_scai.tl.CommunicationReport` or the analysed data.
    ``interaction=None`` sums ``score`` over all interactions (over those with group FDR ≤
    ``alpha`` when given); otherwise one interaction's ``value`` (``score``, ``zscore``, ...).
    Returns the Axes; the matrix is in ``ax.scai_matrix`` (a DataFrame) for callers that map
    clicks back to groups.
    """
    from napari_scai.tl._communication import CommunicationReport

    report = (
        data_or_report
        if isinstance(data_or_report, CommunicationReport)
        else _report(data_or_report, table, key_added)
    )
    if not report.params.get("group_names"):
        raise ValueError(
            "this result has no groups. Fix: run tl.communication with groupby=<obs column>"
        )
    M = report.group_matrix(interaction, value=value, alpha=alpha)
    ax = _axes(ax, size=(5.5, 4.5))
    im = ax.imshow(M.to_numpy(dtype=float), cmap=cmap, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(M.shape[1]), [str(c) for c in M.columns], rotation=60, ha="right")
    ax.set_yticks(range(M.shape[0]), [str(i) for i in M.index])
    ax.tick_params(labelsize=7)
    ax.set_xlabel("receiver group")
    ax.set_ylabel("sender group")
    ax.set_title(interaction or ("all interactions" + (f" (FDR ≤ {alpha})" if alpha else "")))
    ax.figure.colorbar(im, ax=ax, shrink=0.8, label=value)
    if annotate is None:
        annotate = M.shape[0] <= 8
    if annotate:
        vals = M.to_numpy(dtype=float)
        hi = np.nanmax(vals) if vals.size else 0.0
        for i in range(vals.shape[0]):
            for j in range(vals.shape[1]):
                ax.text(
                    j,
                    i,
                    f"{vals[i, j]:.2g}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="black" if vals[i, j] > 0.6 * hi else "white",
                )
    ax.scai_matrix = M
    return ax
