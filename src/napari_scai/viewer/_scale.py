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

from napari_scai._scale import VISIUM_PITCH_UM, microns_per_pixel

__all__ = [
    "MICRONS",
    "VISIUM_PITCH_UM",
    "add_microns_coordinate_system",
    "default_coordinate_system",
    "microns_per_pixel",
    "show_scale_bar",
]

#: Name of the coordinate system in micrometres.
MICRONS = "microns"


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
