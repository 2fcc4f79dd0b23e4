"""The public ``napari_scai.tl`` functions follow one calling convention (scanpy's).

Walks ``napari_scai.tl.__all__``:

- signature: the first parameter is the data (``data``/``adata``/``sdata``), every other one
  is keyword-only; a function that writes has ``key_added`` and ``copy=False``; a function
  that runs a model has ``device="auto"`` and ``seed=0``;
- behaviour (one small example call per function): with ``copy=False`` a writer changes the
  data and returns ``None``; with ``copy=True`` it returns a changed copy of the same type and
  leaves the original as it was; a report or export returns its result and changes nothing.

A function added to ``tl.__all__`` is a writer unless listed in ``REPORTS`` or ``HELPERS``
below, and needs an entry in ``EXAMPLES`` (``test_every_function_has_an_example``).

Also: the previous release's call forms still work, with a FutureWarning.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pandas as pd
import pytest
import shapely

import napari_scai.tl as tl

DATA_NAMES = ("data", "adata", "sdata")

#: Functions whose purpose is their return value: they write nothing into the data, so they
#: take neither ``key_added`` nor ``copy`` (the data-first, keyword-only rules still hold).
REPORTS = {
    "compare": "returns a CompareReport (scores); the data is only read",
    "disagreement": "returns a boolean mask, one per observation; the data is only read",
    "export_annotation_csv": "writes a CSV file and returns its path; the data is only read",
    "export_geojson": "writes a GeoJSON file and returns its path; the data is only read",
    "communication_edges": "returns the strongest edges of one pair (a DataFrame); read only",
}

#: Reports that read a result another function wrote; their ``key_added`` names that result.
READS_RESULTS = {"communication_edges"}

#: Writers whose purpose is also a report: with ``copy=False`` they write into the data and
#: return the report (scanpy's "or a report object"); ``copy=True`` returns the changed copy.
#: Their behaviour is checked by their own test below.
REPORTING_WRITERS = {
    "communication": "writes the cells x interactions result and returns a CommunicationReport",
}

#: Functions between two data objects, named by issue 11 as ``transfer_labels(reference,
#: query, labels_key, *, ...)``: the reference and the query come first (as in scanpy's
#: ``tl.ingest(adata, adata_ref, ...)`` both data objects are positional), then the one
#: required column; every option is keyword-only and the query is what is written.
TWO_DATA = {"transfer_labels": ("reference", "query", "labels_key")}

#: Functions that take no SpatialData/AnnData at all, so "data first" has no meaning.
HELPERS = {
    "points_in_polygons": "geometry primitive on an (n, 2) array and shapely polygons",
    "annotations_to_geodataframe": "builds the annotation shapes element from polygons",
    "import_geojson": "a reader: its input is the file; it returns a new GeoDataFrame",
    "clear_model_cache": "takes no data: frees the kept unsupervised domain ensemble",
}


def _public_functions() -> list[str]:
    return [n for n in tl.__all__ if inspect.isfunction(getattr(tl, n))]


def _uses_a_model(fn) -> bool:
    """True when the function itself calls into ``napari_scai.models`` (a trained model)."""
    return "napari_scai.models" in inspect.getsource(inspect.unwrap(fn))


# --------------------------------------------------------------------------- fixtures


def _section(n: int = 240, n_genes: int = 60, seed: int = 0):
    """A small SpatialData with three bands of expression, a reference and a prediction."""
    from anndata import AnnData

    from napari_scai.io._common import build_spatialdata

    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:n]
    xy = grid * 100.0 + 50.0
    band = np.minimum((grid[:, 0] * 3) // side, 2)
    rates = rng.gamma(2.0, 1.0, (3, n_genes))
    counts = rng.poisson(rates[band] * 3).astype(np.float32)
    names = np.array(["top", "mid", "bottom"])
    pred = band.copy()
    pred[rng.choice(n, n // 10, replace=False)] = rng.integers(0, 3, n // 10)
    obs = pd.DataFrame(
        {
            "layer": pd.Categorical(names[band], categories=list(names)),
            "pred": pd.Categorical(pred.astype(str)),
        },
        index=[f"spot_{i}" for i in range(n)],
    )
    adata = AnnData(counts, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]))
    adata.uns["layer_colors"] = ["#ff0000", "#00ff00", "#0000ff"]
    return build_spatialdata(
        sample="toy", tables={"rna": adata}, coords=xy, radius=30.0, shapes_suffix="spots"
    )


def _report(sdata):
    return tl.compare(sdata, key_pred="pred", key_ref="layer")


def _csv(sdata, tmp_path):
    path = tmp_path / "labels.csv"
    adata = sdata.tables["rna"]
    pd.DataFrame({"spot_id": adata.obs_names[:50], "class": "hand"}).to_csv(path, index=False)
    return path


#: name -> (kwargs builder (sdata, tmp_path) -> dict, key the call writes or None).
EXAMPLES = {
    "compare": (lambda s, p: {"key_pred": "pred", "key_ref": "layer"}, None),
    "disagreement": (lambda s, p: {"report": _report(s)}, None),
    "rename_by_matching": (lambda s, p: {"report": _report(s), "key_added": "renamed"}, "renamed"),
    "annotate_from_shapes": (
        lambda s, p: {
            "shapes": [shapely.box(0, 0, 500, 2000)],
            "classes": ["west"],
            "key_added": "drawn",
        },
        "drawn",
    ),
    "import_annotation_csv": (lambda s, p: {"path": _csv(s, p), "key_added": "csv"}, "csv"),
    "export_annotation_csv": (lambda s, p: {"path": p / "out.csv", "key": "layer"}, None),
    "export_geojson": (
        lambda s, p: {"path": p / "out.geojson", "element": "toy_spots"},
        None,
    ),
    "integrate": (
        lambda s, p: {
            "tables": ("rna",),
            "key_added": "joint",
            "n_steps": 20,
            "n_top_genes": 40,
            "device": "cpu",
        },
        "X_joint",
    ),
    "spatial_domains": (
        lambda s, p: {
            "n_domains": 3,
            "key_added": "dom",
            "n_top_genes": 40,
            "n_comps": 10,
            "epochs": 15,
            "n_models": 1,
            "n_init": 2,
        },
        "dom",
    ),
}


def _snapshot(sdata) -> tuple:
    adata = sdata.tables["rna"]
    return (
        tuple(adata.obs.columns),
        tuple(sorted(adata.uns.keys())),
        tuple(sorted(adata.obsm.keys())),
        tuple(sorted(sdata.shapes.keys())),
    )


# --------------------------------------------------------------------------- signature


def test_allow_lists_name_public_functions() -> None:
    public = set(_public_functions())
    assert set(REPORTS) <= public and set(HELPERS) <= public
    assert not set(REPORTS) & set(HELPERS)


@pytest.mark.parametrize("name", [n for n in _public_functions() if n not in HELPERS])
def test_signature_follows_the_convention(name: str) -> None:
    fn = getattr(tl, name)
    params = list(inspect.signature(fn).parameters.values())
    if name in TWO_DATA:
        lead = TWO_DATA[name]
        assert [p.name for p in params[: len(lead)]] == list(lead), name
        params = [params[0].replace(name="data"), *params[len(lead) :]]
    first, rest = params[0], params[1:]
    assert first.name in DATA_NAMES, f"{name}: first parameter is {first.name!r}, not the data"
    assert first.kind in (first.POSITIONAL_ONLY, first.POSITIONAL_OR_KEYWORD)
    positional = [p.name for p in rest if p.kind not in (p.KEYWORD_ONLY, p.VAR_KEYWORD)]
    assert not positional, f"{name}: {positional} should be keyword-only"
    names = {p.name: p for p in rest}
    if name in REPORTS:
        reads_results = name in READS_RESULTS  # its key_added names the result it reads
        assert "copy" not in names, f"{name} is a report"
        assert "key_added" not in names or reads_results, f"{name} is a report"
    else:
        assert "key_added" in names, f"{name} writes: it needs key_added"
        assert "copy" in names and names["copy"].default is False, f"{name}: copy=False"
    if _uses_a_model(fn) and name not in READS_RESULTS:  # reading a result trains nothing
        assert "device" in names and names["device"].default == "auto", f"{name}: device"
        assert "seed" in names and names["seed"].default == 0, f"{name}: seed=0"


def test_every_function_has_an_example() -> None:
    # behaviour tested below, one test each
    special = set(REPORTING_WRITERS) | set(TWO_DATA) | READS_RESULTS
    missing = [
        n for n in _public_functions() if n not in HELPERS and n not in set(EXAMPLES) | special
    ]
    assert not missing, f"add a small example call to EXAMPLES for {missing}"


# --------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_behaviour_follows_the_convention(name: str, tmp_path) -> None:
    fn = getattr(tl, name)
    make_kwargs, written = EXAMPLES[name]
    sdata = _section()
    before = _snapshot(sdata)
    if written is None:  # report / export
        result = fn(sdata, **make_kwargs(sdata, tmp_path))
        assert result is not None, f"{name} is a report: it returns its result"
        assert _snapshot(sdata) == before, f"{name} must not write into the data"
        return
    # copy=True: a changed copy of the same type; the original untouched
    copied = fn(sdata, **make_kwargs(sdata, tmp_path), copy=True)
    assert type(copied) is type(sdata), f"{name}(copy=True) returns a {type(copied).__name__}"
    assert copied is not sdata and copied.tables["rna"] is not sdata.tables["rna"]
    assert written in copied.tables["rna"].obs or written in copied.tables["rna"].obsm
    assert _snapshot(sdata) == before, f"{name}(copy=True) changed the original"
    # copy=False: in place, returns None
    result = fn(sdata, **make_kwargs(sdata, tmp_path))
    assert result is None, f"{name}(copy=False) returns {type(result).__name__}, not None"
    adata = sdata.tables["rna"]
    assert written in adata.obs or written in adata.obsm, f"{name} did not write {written!r}"
    # the same call on an AnnData works too and returns None
    alone = _section().tables["rna"]
    if "element" not in make_kwargs(sdata, tmp_path):
        assert fn(alone, **make_kwargs(sdata, tmp_path), copy=False) is None


# --------------------------------------------------------------------------- deprecations


def _warns_and_returns(call):
    with pytest.warns(FutureWarning, match="deprecated"):
        return call()


def test_old_call_forms_still_work_with_a_future_warning(tmp_path) -> None:
    sdata = _section()
    adata = sdata.tables["rna"]
    new = tl.compare(adata, key_pred="pred", key_ref="layer")
    old = _warns_and_returns(lambda: tl.compare(adata, "pred", "layer"))
    assert old.ari == new.ari and old.matching == new.matching

    _warns_and_returns(lambda: tl.rename_by_matching(adata, "pred", new, new_key="renamed"))
    assert "renamed" in adata.obs and adata.obs["renamed"].notna().all()
    with pytest.warns(FutureWarning, match="new_key= is deprecated.*key_added="):
        tl.rename_by_matching(adata, report=new, new_key="renamed2")
    assert "renamed2" in adata.obs

    flags = _warns_and_returns(lambda: tl.disagreement(adata, "pred", "layer", new))
    np.testing.assert_array_equal(flags, tl.disagreement(adata, report=new))

    box = [shapely.box(0, 0, 500, 2000)]
    _warns_and_returns(lambda: tl.annotate_from_shapes(adata, box, classes=["w"], key="k1"))
    tl.annotate_from_shapes(adata, shapes=box, classes=["w"], key_added="k2")
    assert adata.obs["k1"].equals(adata.obs["k2"]) and adata.obs["k1"].notna().any()
    with pytest.warns(FutureWarning, match="key= is deprecated"):
        tl.annotate_from_shapes(adata, shapes=box, classes=["w"], key="k3")
    assert "k3" in adata.obs

    # the two CSV functions used opposite orders: (adata, key, path) and (adata, path, key)
    path = _warns_and_returns(lambda: tl.export_annotation_csv(adata, "k1", tmp_path / "a.csv"))
    _warns_and_returns(lambda: tl.import_annotation_csv(adata, path, "back"))
    tl.import_annotation_csv(adata, path=path, key_added="back2")
    assert adata.obs["back"].astype(object).equals(adata.obs["k1"].astype(object))
    assert adata.obs["back2"].astype(object).equals(adata.obs["k1"].astype(object))

    gdf = _warns_and_returns(lambda: tl.annotations_to_geodataframe(box, ["w"], None))
    out = _warns_and_returns(lambda: tl.export_geojson(gdf, tmp_path / "a.geojson"))
    assert tl.import_geojson(out)["class"].tolist() == ["w"]


def test_new_call_forms_do_not_warn_and_misuse_is_refused(tmp_path) -> None:
    adata = _section().tables["rna"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        report = tl.compare(adata, key_pred="pred", key_ref="layer")
        tl.rename_by_matching(adata, report=report, key_added="r")
        tl.annotate_from_shapes(adata, shapes=[shapely.box(0, 0, 9e3, 9e3)], classes=["a"])
    with pytest.raises(TypeError, match="only positional argument"):
        tl.compare(adata, "pred", "layer", "extra")
    with pytest.raises(TypeError, match="both 'new_key'"):
        tl.rename_by_matching(adata, report=report, new_key="a", key_added="b")
    with pytest.raises(TypeError, match="multiple values"):
        tl.compare(adata, "pred", key_pred="pred", key_ref="layer")


def _lr_section():
    """_section with a ligand-receptor pair planted: g0 (ligand) beside g1 (receptor)."""
    sdata = _section(n=196, n_genes=20)
    a = sdata.tables["rna"]
    pairs = pd.DataFrame({"ligand": [a.var_names[0]], "receptor": [a.var_names[1]]})
    return sdata, pairs


def test_communication_writes_and_returns_its_report_or_a_copy() -> None:
    sdata, pairs = _lr_section()
    before = _snapshot(sdata)
    kw = {"pairs": pairs, "n_perms": 19, "bandwidth_um": 150.0, "um_per_unit": 1.0}
    copied = tl.communication(sdata, **kw, key_added="comm", copy=True)
    assert type(copied) is type(sdata) and copied is not sdata
    assert "comm" in copied.tables and _snapshot(sdata) == before
    assert "comm" not in sdata.tables
    report = tl.communication(sdata, **kw, key_added="comm")
    assert isinstance(report, tl.CommunicationReport) and len(report.pairs) == 1
    assert "comm" in sdata.tables and "comm" in sdata.tables["rna"].uns
    # communication_edges reads that result (READS_RESULTS): it returns edges, writes nothing
    snap = _snapshot(sdata)
    edges = tl.communication_edges(
        sdata, interaction=report.pairs["interaction"].iloc[0], key_added="comm"
    )
    assert len(edges) and {"sender", "receiver", "signal"} <= set(edges.columns)
    assert _snapshot(sdata) == snap


def test_transfer_labels_writes_the_query_in_place_or_returns_a_copy() -> None:
    # 120 genes: transfer refuses fewer than 100 shared genes
    reference = _section(n_genes=120, seed=0).tables["rna"]
    query = _section(n_genes=120, seed=1).tables["rna"]
    kw = {"n_top_genes": 40, "n_comps": 10, "epochs": 15, "key_added": "moved"}
    copied = tl.transfer_labels(reference, query, "layer", **kw, copy=True)
    assert copied is not query and "moved" in copied.obs and "moved" not in query.obs
    assert tl.transfer_labels(reference, query, "layer", **kw) is None
    assert "moved" in query.obs and "moved" not in reference.obs
    assert set(query.obs["moved"].dropna()) <= set(reference.obs["layer"])
