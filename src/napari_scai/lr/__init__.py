"""Ligand–receptor (LR) resources and matching LR pairs to a table's genes.

Bundled tables (``lr/data``, provenance and licences in ``lr/data/PROVENANCE.md``):

=================  =============================================================  ========
name               what                                                           pairs
=================  =============================================================  ========
``consensus``      LIANA's consensus (CellPhoneDB, CellChatDB, ICELLNET,          4,620 h
                   connectomeDB2020, CellTalkDB via OmniPath). **Default.**       3,989 m
``cellchatdb``     CellChatDB (with pathway and kind), via commot 0.0.3           1,938 h
``cellphonedb``    CellPhoneDB v4.0, via commot 0.0.3                             1,677 h
=================  =============================================================  ========

Matching rules (:func:`match_pairs`):

- gene symbols are matched case-insensitively (``Tgfb1`` = ``TGFB1``);
- Ensembl IDs (``ENSG…``/``ENSMUSG…``, version suffix ignored) are mapped to symbols with the
  bundled GENCODE tables, so DLPFC-style tables with IDs only work; a symbol column in ``var``
  (``gene_symbol``, ``gene_symbols``, ``feature_name``, ``gene_name``, ``symbol``) wins;
- a complex (subunits joined by ``_``) is present only if every subunit is; its expression in a
  cell is the **minimum over its subunits** (a complex needs all its parts, so the scarcest
  subunit limits it; the rule of CellPhoneDB and LIANA);
- every input pair gets a row in the coverage report: kept, or dropped with the reason
  (which subunits are missing, or expressed in too few cells).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = [
    "DEFAULT_RESOURCE",
    "LRMatch",
    "RESOURCES",
    "complex_expression",
    "detect_species",
    "ensembl_to_symbol",
    "feature_symbols",
    "load_resource",
    "match_pairs",
]

DATA = Path(__file__).resolve().parent / "data"
RESOURCES = ("consensus", "cellchatdb", "cellphonedb")
DEFAULT_RESOURCE = "consensus"
SPECIES = ("human", "mouse")
SYMBOL_COLUMNS = ("gene_symbol", "gene_symbols", "feature_name", "gene_name", "symbol")
_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$", re.IGNORECASE)


@lru_cache(maxsize=8)
def _resource(name: str, species: str) -> pd.DataFrame:
    return pd.read_csv(DATA / f"{name}_{species}.csv", dtype=str, keep_default_na=False)


def load_resource(name: str = DEFAULT_RESOURCE, species: str = "human") -> pd.DataFrame:
    """A bundled LR table as a DataFrame with ``ligand``, ``receptor`` (and extra columns).

    Parameters
    ----------
    name
        ``"consensus"`` (default), ``"cellchatdb"`` or ``"cellphonedb"``.
    species
        ``"human"`` or ``"mouse"``.
    """
    name, species = str(name).lower(), str(species).lower()
    if name not in RESOURCES:
        raise ValueError(
            f"unknown LR resource {name!r}. Fix: use one of {list(RESOURCES)} or pass a "
            "DataFrame with 'ligand' and 'receptor' columns"
        )
    if species not in SPECIES:
        raise ValueError(f"unknown species {species!r}. Fix: use 'human' or 'mouse'")
    return _resource(name, species).copy()


@lru_cache(maxsize=2)
def _gene_table(species: str) -> dict[str, str]:
    g = pd.read_csv(DATA / f"genes_{species}.tsv.gz", sep="\t", dtype=str)
    return dict(zip(g["gene_id"].str.upper(), g["gene_symbol"], strict=True))


def ensembl_to_symbol(ids: Any, species: str = "human") -> np.ndarray:
    """Map Ensembl gene IDs (version ignored) to symbols; unmapped entries are kept as given.

    Only IDs of genes that occur in a bundled LR table are mapped (the bundled gene table is
    that subset of GENCODE); everything else is returned unchanged.
    """
    table = _gene_table(species)
    out = []
    for v in np.asarray(ids, dtype=object):
        s = str(v)
        key = s.split(".")[0].upper() if _ENSEMBL.match(s) else None
        out.append(table.get(key, s) if key else s)
    return np.asarray(out, dtype=object)


def detect_species(names: Any) -> str:
    """``"human"`` or ``"mouse"`` from gene names (Ensembl prefixes, else symbol casing)."""
    names = [str(n) for n in np.asarray(names, dtype=object)[:5000]]
    ids = [n.upper() for n in names if _ENSEMBL.match(n)]
    if ids:
        mouse = sum(n.startswith("ENSMUSG") for n in ids)
        return "mouse" if mouse > len(ids) / 2 else "human"
    letters = [n for n in names if any(c.isalpha() for c in n)]
    upper = sum(n == n.upper() for n in letters)
    # Human symbols are upper case (TGFB1); mouse symbols are capitalised (Tgfb1).
    return "human" if upper >= len(letters) / 2 else "mouse"


def feature_symbols(adata: Any, species: str | None = None) -> np.ndarray:
    """One gene symbol per ``var`` row: a symbol column if present, else mapped var names."""
    for col in SYMBOL_COLUMNS:
        if col in adata.var.columns:
            base = adata.var[col].astype(str).to_numpy(dtype=object)
            break
    else:
        base = np.asarray(adata.var_names, dtype=object)
    species = species or detect_species(adata.var_names)
    return ensembl_to_symbol(base, species)


def _check_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(pairs, pd.DataFrame):
        raise TypeError(
            f"pairs must be None, a resource name {list(RESOURCES)} or a DataFrame with "
            f"'ligand' and 'receptor' columns, got {type(pairs).__name__}"
        )
    cols = {str(c).lower(): c for c in pairs.columns}
    missing = [c for c in ("ligand", "receptor") if c not in cols]
    if missing:
        raise KeyError(
            f"the pair table has no column(s) {missing} (it has {list(pairs.columns)}). Fix: "
            "rename the ligand and receptor columns to 'ligand' and 'receptor' (complex "
            "subunits joined by '_')"
        )
    out = pd.DataFrame(
        {
            "ligand": pairs[cols["ligand"]].astype(str).str.strip().to_numpy(),
            "receptor": pairs[cols["receptor"]].astype(str).str.strip().to_numpy(),
        }
    )
    for extra in ("pathway", "kind"):
        if extra in cols:
            out[extra] = pairs[cols[extra]].astype(str).to_numpy()
    bad = (out["ligand"].isin(["", "nan", "None"])) | (out["receptor"].isin(["", "nan", "None"]))
    if len(out) == 0 or bad.all():
        raise ValueError("the pair table is empty. Fix: pass at least one ligand–receptor row")
    return out[~bad].reset_index(drop=True)


@dataclass
class LRMatch:
    """LR pairs matched to a table's genes.

    Attributes
    ----------
    pairs
        The kept pairs: ``ligand``, ``receptor`` (as in the resource), ``interaction``
        (``"LIGAND^RECEPTOR"``, unique), ``ligand_genes`` / ``receptor_genes`` (the matched
        ``var_names``, ``;``-joined), ``ligand_frac`` / ``receptor_frac`` (fraction of cells
        where the complex is > 0), ``n_subunits_ligand`` / ``n_subunits_receptor``.
    coverage
        One row per input pair: ``ligand``, ``receptor``, ``kept`` and ``reason``
        (``"kept"``, ``"missing: X, Y"``, ``"expressed in < min_frac of cells"``,
        ``"duplicate"``).
    ligand_idx, receptor_idx
        Per kept pair, the column indices (into ``var``) of its subunits.
    """

    pairs: pd.DataFrame
    coverage: pd.DataFrame
    ligand_idx: list[list[int]] = field(repr=False)
    receptor_idx: list[list[int]] = field(repr=False)
    species: str = "human"
    resource: str = "custom"

    def summary(self) -> dict[str, Any]:
        """Counts of kept and dropped pairs by reason."""
        reasons = self.coverage["reason"].str.split(":").str[0].value_counts()
        return {
            "resource": self.resource,
            "species": self.species,
            "n_input": int(len(self.coverage)),
            "n_kept": int(self.coverage["kept"].sum()),
            **{f"n_{k.replace(' ', '_').replace('<', 'lt')}": int(v) for k, v in reasons.items()},
        }


def _complex_expr(idx: list[list[int]], cols: dict[int, int], block: np.ndarray) -> np.ndarray:
    out = np.empty((block.shape[0], len(idx)), dtype=np.float32)
    for k, subunits in enumerate(idx):
        out[:, k] = block[:, [cols[g] for g in subunits]].min(axis=1)
    return out


def complex_expression(X: Any, match: LRMatch) -> tuple[np.ndarray, np.ndarray]:
    """Ligand and receptor (complex = min over subunits) expression, each cells × pairs."""
    used = sorted({g for s in match.ligand_idx + match.receptor_idx for g in s})
    cols = {g: k for k, g in enumerate(used)}
    sub = X[:, used]
    block = np.asarray(sub.toarray() if sp.issparse(sub) else sub, dtype=np.float32)
    return (
        _complex_expr(match.ligand_idx, cols, block),
        _complex_expr(match.receptor_idx, cols, block),
    )


def match_pairs(
    adata: Any,
    pairs: Any = None,
    *,
    species: str = "auto",
    X: Any = None,
    min_frac: float = 0.01,
    where: str = "the table",
) -> LRMatch:
    """Match LR pairs to ``adata``'s genes (case-insensitive, Ensembl IDs mapped).

    Parameters
    ----------
    adata
        AnnData whose ``var`` holds the genes.
    pairs
        None (the default resource for the species), a resource name, or a DataFrame with
        ``ligand`` and ``receptor`` columns (complex subunits joined by ``_``).
    species
        ``"auto"`` (from the gene names), ``"human"`` or ``"mouse"``.
    X
        Expression used for the ``min_frac`` filter (default ``adata.X``).
    min_frac
        Keep a pair only if its ligand and its receptor (complexes: all subunits) are > 0 in at
        least this fraction of cells.
    where
        Name of the table in error messages.

    Raises
    ------
    KeyError
        The pair table lacks ``ligand``/``receptor`` columns.
    ValueError
        No pair has all its genes in the table (names the likely fix).
    """
    species = detect_species(adata.var_names) if species == "auto" else str(species).lower()
    if species not in SPECIES:
        raise ValueError(f"unknown species {species!r}. Fix: use 'auto', 'human' or 'mouse'")
    resource = "custom"
    if pairs is None:
        pairs, resource = load_resource(DEFAULT_RESOURCE, species), DEFAULT_RESOURCE
    elif isinstance(pairs, str):
        pairs, resource = load_resource(pairs, species), str(pairs).lower()
    table = _check_pairs(pairs)
    symbols = feature_symbols(adata, species)
    lookup: dict[str, int] = {}
    for i, s in enumerate(symbols):
        lookup.setdefault(str(s).upper(), i)
    for i, s in enumerate(np.asarray(adata.var_names, dtype=object)):
        lookup.setdefault(str(s).upper(), i)  # also the raw names (IDs in a user's pair table)

    reasons, lig_idx, rec_idx, keep_rows = [], [], [], []
    seen: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()
    for row in table.itertuples(index=False):
        lig = [s for s in str(row.ligand).split("_") if s]
        rec = [s for s in str(row.receptor).split("_") if s]
        miss = [s for s in lig + rec if s.upper() not in lookup]
        if miss:
            reasons.append("missing: " + ", ".join(miss))
            continue
        li = [lookup[s.upper()] for s in lig]
        ri = [lookup[s.upper()] for s in rec]
        key = (tuple(sorted(set(li))), tuple(sorted(set(ri))))
        if key in seen:
            reasons.append("duplicate")
            continue
        seen.add(key)
        reasons.append("kept")
        lig_idx.append(sorted(set(li)))
        rec_idx.append(sorted(set(ri)))
        keep_rows.append(len(reasons) - 1)
    coverage = table[["ligand", "receptor"]].copy()
    coverage["reason"] = reasons
    if not keep_rows:
        example = ", ".join(map(str, np.asarray(adata.var_names)[:3]))
        raise ValueError(
            f"none of the {len(table)} ligand–receptor pairs has all its genes in {where} "
            f"(var names look like: {example}; species={species!r}). Fix: use gene symbols or "
            "Ensembl IDs as var names (or a var['gene_symbol'] column), pass species= if it was "
            "guessed wrong, or pass pairs= with genes this table has"
        )
    kept = table.iloc[keep_rows].reset_index(drop=True)
    names = np.asarray(adata.var_names, dtype=object)
    match = LRMatch(
        pairs=kept,
        coverage=coverage,
        ligand_idx=lig_idx,
        receptor_idx=rec_idx,
        species=species,
        resource=resource,
    )
    Xm = adata.X if X is None else X
    L, R = complex_expression(Xm, match)
    lf, rf = (L > 0).mean(axis=0), (R > 0).mean(axis=0)
    ok = (lf >= min_frac) & (rf >= min_frac)
    for j in np.nonzero(~ok)[0]:
        coverage.iloc[keep_rows[j], coverage.columns.get_loc("reason")] = (
            f"expressed in < min_frac of cells: ligand {lf[j]:.3g}, receptor {rf[j]:.3g}"
        )
    coverage["kept"] = coverage["reason"] == "kept"
    sel = np.nonzero(ok)[0]
    if sel.size == 0:
        raise ValueError(
            f"{len(keep_rows)} pairs have all their genes in {where}, but none is expressed in "
            f">= {min_frac:g} of cells. Fix: lower min_frac, or check that X holds expression"
        )
    kept = kept.iloc[sel].reset_index(drop=True)
    kept["interaction"] = _unique_names(kept["ligand"] + "^" + kept["receptor"])
    kept["ligand_genes"] = [";".join(names[lig_idx[j]]) for j in sel]
    kept["receptor_genes"] = [";".join(names[rec_idx[j]]) for j in sel]
    kept["n_subunits_ligand"] = [len(lig_idx[j]) for j in sel]
    kept["n_subunits_receptor"] = [len(rec_idx[j]) for j in sel]
    kept["ligand_frac"] = lf[sel].astype(np.float64)
    kept["receptor_frac"] = rf[sel].astype(np.float64)
    match.pairs = kept
    match.ligand_idx = [lig_idx[j] for j in sel]
    match.receptor_idx = [rec_idx[j] for j in sel]
    match.coverage = coverage
    return match


def _unique_names(names: pd.Series) -> list[str]:
    out, count = [], {}
    for n in names:
        k = count.get(n, 0)
        out.append(n if k == 0 else f"{n}#{k}")
        count[n] = k + 1
    return out
