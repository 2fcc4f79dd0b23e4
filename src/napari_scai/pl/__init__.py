"""Static figures (matplotlib) of napari-scai results, in the same colours as napari.

=====================  ==============================================================
``spatial``            any key on the tissue (H&E underneath, spots at true size)
``domains``            spatial domains (``obs['scai_domain']``)
``confidence``         per-spot domain confidence
``annotations``        hand annotations: labelled spots and the drawn polygons
``confusion_matrix``   confusion matrix of a :func:`napari_scai.tl.compare` report
``mismatch_map``       where prediction and reference differ, on the tissue
``compare``            mismatch map + confusion matrix in one figure
=====================  ==============================================================

Every function takes the data first and options as keywords, returns the matplotlib Axes
(``compare``: the Figure) and saves it with ``save="figure.png"``. Categorical colours come
from ``uns[f"{key}_colors"]`` through the same helper as the napari layers
(:func:`napari_scai.viewer.color_style`), and tissue plots carry a scale bar in µm.

Adding a family of figures: put it in its own module (``_communication.py``,
``_integration.py``) built on :mod:`napari_scai.pl._base`, with an ``__all__``, and add one
``from napari_scai.pl._name import *`` line below; ``__all__`` collects them itself.
"""

from __future__ import annotations

import sys as _sys

from napari_scai.pl._communication import *  # noqa: F403
from napari_scai.pl._compare import *  # noqa: F403
from napari_scai.pl._integration import *  # noqa: F403
from napari_scai.pl._tissue import *  # noqa: F403

# One star-import line per figure module above (communication, integration ...); __all__
# gathers their own __all__, so nothing else here needs editing.
__all__ = sorted(
    {
        name
        for mod_name, module in list(_sys.modules.items())
        if mod_name.startswith(f"{__name__}._") and mod_name != f"{__name__}._base"
        for name in getattr(module, "__all__", ())
    }
)
