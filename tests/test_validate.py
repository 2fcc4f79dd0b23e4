"""One table lookup and one set of parameter checks (napari_scai._validate)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_scai import _validate as v
from napari_scai.datasets import synthetic_section


def test_one_table_lookup_everywhere():
    import napari_scai.tl._annotate as ann
    import napari_scai.tl._compare as cmp
    import napari_scai.tl._domains as dom

    assert dom._table is v.get_table and ann._get_table is v.get_table
    assert cmp._get_table is v.get_table and cmp._obs_column is v.obs_column


def test_get_table_errors_name_the_object_and_the_fix():
    sdata = synthetic_section(20, n_genes=2)
    assert v.get_table(sdata) is sdata.tables["rna"]
    adata = sdata.tables["rna"]
    assert v.get_table(adata, "anything") is adata
    with pytest.raises(KeyError, match=r"no table 'protein'; its tables are \['rna'\]. Fix:"):
        v.get_table(sdata, "protein")
    with pytest.raises(TypeError, match="got dict. Fix: read the data"):
        v.get_table({}, "rna")
    with pytest.raises(KeyError, match=r"reference column 'nope' is not in obs.*Fix:"):
        v.obs_column(adata, "nope", "reference")


def test_parameter_checks():
    assert v.check_positive("step", 2) == 2.0
    assert v.check_positive("k", 3.0, integer=True) == 3
    for bad in (0, -1, float("nan"), "3", True):
        with pytest.raises(ValueError, match="step must be a number > 0"):
            v.check_positive("step", bad)
    with pytest.raises(ValueError, match="an integer"):
        v.check_positive("k", 2.5, integer=True)
    assert v.check_choice("method", "bic", ["bic", "stability"]) == "bic"
    with pytest.raises(ValueError, match=r"method='x' is not allowed. Fix: use one of"):
        v.check_choice("method", "x", ["bic", "stability"])
    xy = v.check_xy("xy", [[0, 1], [2, 3]])
    assert xy.dtype == np.float64 and xy.shape == (2, 2)
    with pytest.raises(ValueError, match=r"must have shape \(n, 2\)"):
        v.check_xy("xy", np.zeros((3, 3)))
    with pytest.raises(ValueError, match="expected 5"):
        v.check_xy("xy", np.zeros((3, 2)), n=5)
