"""Static figures (matplotlib) of napari-scai results, in the same colours as napari.

=====================  ======================================================="""

from __future__ import annotations

import sys as _sys

from napari_scai.pl._communication import *  # noqa: F403
from napari_scai.pl._compare import *  # noqa: F403
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
