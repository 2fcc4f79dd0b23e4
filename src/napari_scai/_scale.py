"""Physical scale of a section: micrometres per coordinate unit (Qt-free, napari-free).

Our elements live in full-resolution pixels. On Visium the pixel size follows from the slide's
fixed geometry: spot centres sit on a hexagonal lattice 100 µm apart (two ``array_col`` steps
within a row). :func:`microns_per_pixel` fits the pixel positions to the array indices and
divides; without array indices it uses the median nearest-neighbour distance.
``spot_diameter_fullres`` is no ruler: on DLPFC 151673 it is 96.4 px, i.e. 70 µm by the
lattice (Space Ranger pads the 55 µm spot), so 55 / 96.4 would be 27% off. Every µm figure of
the package (the viewer's ``microns`` coordinate system and scale bar, ``pl``'s scale bars,
``tl.communication``'s ``bandwidth_um``) comes from this one function.
"""

from __future__ import annotations

from typing import Any

#: Centre-to-centre distance of neighbouring Visium spots, µm.
VISIUM_PITCH_UM = 100.0


def _lattice_step_px(adata) -> float | None:
    """Pixel distance between same-row neighbours (2 ``array_col`` steps), by least squares."""
    import numpy as np

    obs = adata.obs
    if not {"array_row", "array_col"} <= set(obs.columns) or "spatial" not in adata.obsm:
        return None
    xy = np.asarray(adata.obsm["spatial"], dtype=float)[:, :2]
    col = obs["array_col"].to_numpy(dtype=float)
    row = obs["array_row"].to_numpy(dtype=float)
    if len(xy) < 3 or np.ptp(col) == 0:
        return None
    design = np.column_stack([col, row, np.ones_like(col)])
    coef, *_ = np.linalg.lstsq(design, xy, rcond=None)
    return 2.0 * float(np.linalg.norm(coef[0]))


def _pitch_px(adata) -> float | None:
    """Median nearest-neighbour distance of the spots (the lattice pitch), in pixels."""
    import numpy as np
    from scipy.spatial import cKDTree

    if "spatial" not in adata.obsm or adata.n_obs < 2:
        return None
    xy = np.asarray(adata.obsm["spatial"], dtype=float)[:, :2]
    d, _ = cKDTree(xy).query(xy, k=2)
    return float(np.median(d[:, 1]))


def microns_per_pixel(sdata_or_adata: Any) -> float | None:
    """µm per coordinate unit (full-resolution pixel) of a Visium sample; None when unknown.

    In order: ``uns['spatial'][library]['scalefactors']['microns_per_pixel']`` when given;
    the Visium lattice (100 µm between same-row neighbours) fitted to ``array_row`` /
    ``array_col``; the median nearest-neighbour distance (= 100 µm) for tables with Visium
    scale factors but no array indices. Tables must agree within 2%.
    """
    tables = getattr(sdata_or_adata, "tables", None)
    adatas = list(tables.values()) if tables is not None else [sdata_or_adata]
    found = []
    for a in adatas:
        spatial = (getattr(a, "uns", {}) or {}).get("spatial", {})
        factors = {}
        for entry in spatial.values():
            if isinstance(entry, dict):
                factors.update(entry.get("scalefactors", {}) or {})
        if "microns_per_pixel" in factors:
            found.append(float(factors["microns_per_pixel"]))
            continue
        step = _lattice_step_px(a)
        if step is None and "spot_diameter_fullres" in factors:
            step = _pitch_px(a)
        if step:
            found.append(VISIUM_PITCH_UM / step)
    if not found:
        return None
    if max(found) > 1.02 * min(found):
        raise ValueError(
            f"the tables disagree on the pixel size ({sorted(set(found))} µm/px). "
            "Fix: keep one sample per SpatialData, or set uns['spatial'][library]"
            "['scalefactors']['microns_per_pixel']"
        )
    return found[0]
