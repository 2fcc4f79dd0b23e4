"""Physical scale: micrometres per coordinate unit, a ``microns`` coordinate system, scale bar.

Our elements live in full-resolution pixels (``global``). On Visium the pixel size follows
from the slide's fixed geometry: spot centres sit on a hexagonal lattice 100 µm apart (two
``array_col`` steps within a row). :func:`microns_per_pixel` fits the pixel positions to the
array indices and divides; without array indices it uses the median nearest-neighbour
distance. ``spot_diameter_fullres`` is no ruler: on DLPFC 151673 it is 96.4 px, i.e. 70 µm
by the lattice (Space Ranger pads the 55 µm spot), so 55 / 96.4 would be 27% off.
:func:`add_microns_coordinate_system` gives every element a second coordinate system,
``microns`` (a scale of ``global``), the SpatialData way; the viewer draws in it, so napari's
world is in µm and its scale bar (``viewer.scale_bar``, units from ``Layer.units``) reads
true micrometres.
"""

from __future__ import annotations

from typing import Any

#: Name of the coordinate system in micrometres.
MICRONS = "microns"
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


def add_microns_coordinate_system(sdata, source: str = "global") -> float | None:
    """Give every element in ``source`` a ``microns`` coordinate system (in memory).

    The new transformation is the element's ``source`` one followed by a scale of
    :func:`microns_per_pixel`. Returns that µm/px, or None (nothing changed) when unknown.
    Elements that already have ``microns`` keep theirs.
    """
    from spatialdata.transformations import Scale, Sequence, get_transformation, set_transformation

    um = microns_per_pixel(sdata)
    if um is None:
        return None
    for _kind, name, element in sdata.gen_spatial_elements():
        transforms = get_transformation(element, get_all=True)
        if source not in transforms or MICRONS in transforms:
            continue
        axes = ("y", "x")
        scale = Scale([um, um], axes=axes)
        set_transformation(
            element, Sequence([transforms[source], scale]), to_coordinate_system=MICRONS
        )
        del name
    return um


def default_coordinate_system(sdata) -> str:
    """``microns`` when every image and shapes element is (or can be put) in it, else ``global``.

    Elements that lack ``microns`` (e.g. a store where only the annotation was rewritten)
    get it from the pixel size first.
    """
    from spatialdata.transformations import get_transformation

    add_microns_coordinate_system(sdata)
    elements = [*sdata.images.values(), *sdata.shapes.values()]
    if elements and all(MICRONS in get_transformation(e, get_all=True) for e in elements):
        return MICRONS
    return "global"


def show_scale_bar(viewer, layers, coordinate_system: str) -> None:
    """Switch napari's scale bar on, in µm for the ``microns`` system, else in pixels."""
    unit = "um" if coordinate_system == MICRONS else "pixel"
    for layer in layers:
        layer.units = (unit,) * layer.ndim
    viewer.scale_bar.visible = True
    viewer.scale_bar.ticks = False
