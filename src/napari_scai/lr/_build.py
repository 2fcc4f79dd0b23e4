"""Rebuild the bundled ligand–receptor and gene tables from the shared resources.

Run from the repository root::

    PYTHONPATH=src python -m napari_scai.lr._build /path/to/shared/data

It writes ``src/napari_scai/lr/data/``: one ``<resource>_<species>.csv`` per resource
(``ligand``, ``receptor`` and, where the source has them, ``pathway`` and ``kind``; complex
subunits joined by ``_``; exact duplicate rows dropped) and ``genes_<species>.tsv.gz``
(``gene_id``, ``gene_symbol``) restricted to the IDs whose symbol is a subunit of some bundled
pair in that species (all the mapping the LR matching needs).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

OUT = Path(__file__).resolve().parent / "data"


def _commot(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, index_col=0)
    df.columns = ["ligand", "receptor", "pathway", "kind"]
    df["pathway"] = df["pathway"].fillna("").astype(str).replace("nan", "")
    return df


def build(shared: Path) -> None:
    lr = shared / "lr_resources"
    OUT.mkdir(parents=True, exist_ok=True)
    omni = pd.read_csv(lr / "liana_omni_resource.csv")
    tables = {
        ("consensus", "human"): omni[omni["resource"] == "consensus"],
        ("consensus", "mouse"): omni[omni["resource"] == "mouseconsensus"],
    }
    for sp in ("human", "mouse"):
        t = tables[("consensus", sp)]
        tables[("consensus", sp)] = pd.DataFrame(
            {
                "ligand": t["source_genesymbol"].to_numpy(),
                "receptor": t["target_genesymbol"].to_numpy(),
            }
        )
        tables[("cellchatdb", sp)] = _commot(lr / f"CellChatDB.ligrec.{sp}.csv")
        tables[("cellphonedb", sp)] = _commot(lr / f"CellPhoneDBv4.0.{sp}.csv")
    symbols: dict[str, set[str]] = {"human": set(), "mouse": set()}
    for (name, sp), t in tables.items():
        t = t.dropna(subset=["ligand", "receptor"]).drop_duplicates().reset_index(drop=True)
        t.to_csv(OUT / f"{name}_{sp}.csv", index=False)
        for col in ("ligand", "receptor"):
            for v in t[col]:
                symbols[sp].update(s.upper() for s in str(v).split("_"))
        print(f"{name}_{sp}: {len(t)} pairs")
    for sp in ("human", "mouse"):
        g = pd.read_csv(shared / "genes" / f"{sp}_ensembl_to_symbol.tsv", sep="\t")
        keep = g[g["gene_symbol"].astype(str).str.upper().isin(symbols[sp])]
        keep.to_csv(OUT / f"genes_{sp}.tsv.gz", sep="\t", index=False, compression="gzip")
        print(f"genes_{sp}: {len(keep)} of {len(g)} IDs")


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/data"))
