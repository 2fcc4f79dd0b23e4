"""Dock widgets (thin: they collect parameters, call ``tl``/``viewer`` and show results)."""
