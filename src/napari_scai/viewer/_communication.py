"""Cell–cell communication on the tissue: sender/receiver maps and flows as napari Vectors.

Drawing only (no statistics here): the values come from :func:`napari_scai.tl.communication`
(per-cell sender/receiver activity of a pair, per-edge signal), and are placed on the objects
of an existing napari-scai spots/cells Points layer (same world coordinates, scale and
translation), so they sit over the H&E.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "FLOWS_LAYER",
    "flow_vectors",
    "layer_positions",
    "show_flows",
    "show_pair_maps",
]

#: Name suffixes of the layers drawn here.
FLOWS_LAYER = "flows"
SENDER_LAYER = "sender"
RECEIVER_LAYER = "receiver"


def _rows_to_objects(layer, n_rows: int) -> np.ndarray:
    """Object index (row of ``layer.data``) of each table row; -1 where the row is not drawn."""
    source = layer.metadata.get("scai")
    rows = None if source is None else source.extra.get("rows")
    n_obj = len(layer.data)
    if rows is None:
        if n_obj != n_rows:
            raise ValueError(
                f"layer '{layer.name}' draws {n_obj} objects but the values have {n_rows} rows; "
                "Fix: draw the same table's cells"
            )
        return np.arange(n_rows)
    rows = np.asarray(rows)
    out = np.full(n_rows, -1, dtype=np.int64)
    ok = (rows >= 0) & (rows < n_rows)
    out[rows[ok]] = np.flatnonzero(ok)
    return out


def layer_positions(layer, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) data coordinates of each table row on ``layer`` and a mask of drawn rows."""
    obj = _rows_to_objects(layer, n_rows)
    pos = np.full((n_rows, 2), np.nan)
    drawn = obj >= 0
    pos[drawn] = np.asarray(layer.data)[obj[drawn], -2:]
    return pos, drawn


def flow_vectors(
    sender_yx: np.ndarray,
    receiver_yx: np.ndarray,
    strength: np.ndarray,
    *,
    min_length: float = 0.35,
    min_alpha: float = 0.25,
    color: tuple[float, float, float] = (1.0, 0.85, 0.1),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrows from senders towards receivers, scaled by strength.

    Returns ``(data, colors, rel)``: napari Vectors data ``(E, 2, 2)`` (start, direction), RGBA
    colours with alpha rising with strength, and the relative strength in ``[0, 1]``. The arrow
    covers ``min_length`` of the sender→receiver distance for the weakest flow shown and all
    of it for the strongest.
    """
    s = np.asarray(sender_yx, dtype=float)
    r = np.asarray(receiver_yx, dtype=float)
    v = np.asarray(strength, dtype=float)
    if not (len(s) == len(r) == len(v)):
        raise ValueError("senders, receivers and strengths must have one entry per flow")
    top = float(v.max()) if v.size else 1.0
    rel = v / top if top > 0 else np.zeros_like(v)
    frac = min_length + (1.0 - min_length) * rel
    data = np.stack([s, (r - s) * frac[:, None]], axis=1)
    colors = np.empty((len(v), 4))
    colors[:, :3] = color
    colors[:, 3] = min_alpha + (1.0 - min_alpha) * rel
    return data, colors, rel


def _replace_or_add(viewer, name: str, kind: str, data: Any, **kwargs):
    if name in viewer.layers:
        viewer.layers.remove(viewer.layers[name])
    return getattr(viewer, f"add_{kind}")(data, name=name, **kwargs)


def _transform(layer) -> dict[str, Any]:
    return {k: getattr(layer, k) for k in ("scale", "translate")}


def show_pair_maps(
    viewer,
    layer,
    sender: np.ndarray,
    receiver: np.ndarray,
    *,
    pair: str,
    colormaps: tuple[str, str] = ("magma", "viridis"),
) -> tuple[Any, Any]:
    """Two Points layers over ``layer``'s cells: the pair's sender and receiver activity.

    ``sender`` and ``receiver`` hold one value per table row. Existing map layers of the same
    base layer are replaced (one pair at a time). Returns ``(sender_layer, receiver_layer)``.
    """
    n = len(sender)
    obj = _rows_to_objects(layer, n)
    out = []
    for values, role, cmap in (
        (sender, SENDER_LAYER, colormaps[0]),
        (receiver, RECEIVER_LAYER, colormaps[1]),
    ):
        per_obj = np.full(len(layer.data), np.nan)
        drawn = obj >= 0
        per_obj[obj[drawn]] = np.asarray(values, dtype=float)[drawn]
        finite = per_obj[np.isfinite(per_obj)]
        hi = float(np.quantile(finite, 0.99)) if finite.size else 1.0
        hi = hi if hi > 0 else (float(finite.max()) if finite.size and finite.max() > 0 else 1.0)
        shown = np.nan_to_num(per_obj, nan=0.0)
        ly = _replace_or_add(
            viewer,
            f"{layer.name} {role}",
            "points",
            layer.data,
            size=layer.size,
            border_width=0,
            features={role: shown},
            face_color=role,
            face_colormap=cmap,
            face_contrast_limits=(0.0, hi),
            opacity=0.9,
            metadata={"scai_communication": {"pair": pair, "role": role, "base": layer.name}},
            **_transform(layer),
        )
        out.append(ly)
    return out[0], out[1]


def show_flows(
    viewer,
    layer,
    senders: np.ndarray,
    receivers: np.ndarray,
    strength: np.ndarray,
    *,
    pair: str,
    n_rows: int,
    top: int = 300,
    edge_width: float | None = None,
):
    """A Vectors layer of the ``top`` strongest flows: arrows sender → receiver.

    ``senders``/``receivers`` are table rows (as from
    :func:`napari_scai.models.communication.edge_signal`), ``strength`` the per-edge signal.
    Edges from a cell to itself (a Visium spot's own cells) carry no direction and are left
    out. Arrow length and opacity grow with strength; ``features['strength']`` holds it.
    """
    senders = np.asarray(senders, dtype=np.int64)
    receivers = np.asarray(receivers, dtype=np.int64)
    strength = np.asarray(strength, dtype=float)
    keep = (senders != receivers) & (strength > 0)
    senders, receivers, strength = senders[keep], receivers[keep], strength[keep]
    order = np.argsort(-strength, kind="stable")[: int(top)]
    senders, receivers, strength = senders[order], receivers[order], strength[order]
    pos, drawn = layer_positions(layer, n_rows)
    ok = drawn[senders] & drawn[receivers]
    senders, receivers, strength = senders[ok], receivers[ok], strength[ok]
    data, colors, rel = flow_vectors(pos[senders], pos[receivers], strength)
    if edge_width is None:
        size = np.asarray(layer.size, dtype=float)
        edge_width = float(np.median(size)) * 0.3 if size.size else 1.0
    return _replace_or_add(
        viewer,
        f"{layer.name} {FLOWS_LAYER}",
        "vectors",
        data if len(data) else np.zeros((0, 2, 2)),
        edge_color=colors if len(data) else "yellow",
        edge_width=edge_width,
        length=1.0,
        vector_style="arrow",
        features={"strength": strength, "relative": rel, "sender": senders, "receiver": receivers},
        metadata={"scai_communication": {"pair": pair, "role": FLOWS_LAYER, "base": layer.name}},
        **_transform(layer),
    )
