"""Tests for napari_scai.tl._compare (compare, rename_by_matching, disagreement)."""

from __future__ import annotations

import anndata as ad
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from sklearn import metrics as skm

from napari_scai.tl._compare import CompareReport, compare, disagreement, rename_by_matching

REF_CLASSES = ["L1", "L2", "L3", "L4", "WM"]
REF_COLORS = ["#aa0000", "#00aa00", "#0000aa", "#aaaa00", "#00aaaa"]


def _labelled_adata(seed: int = 0, n: int = 800, noise: float = 0.2) -> tuple[ad.AnnData, dict]:
    """Reference layers plus a noisy, permuted integer prediction with one extra cluster."""
    rng = np.random.default_rng(seed)
    ref_codes = rng.integers(0, len(REF_CLASSES), n)
    perm = rng.permutation(len(REF_CLASSES))
    pred = perm[ref_codes].astype(np.int64)
    flip = rng.random(n) < noise
    pred[flip] = rng.integers(0, len(REF_CLASSES), flip.sum())
    pred[rng.random(n) < 0.03] = 9  # a small extra cluster with no reference class
    ref = np.array(REF_CLASSES, dtype=object)[ref_codes]
    ref[rng.random(n) < 0.05] = np.nan  # unlabelled spots
    obs = pd.DataFrame(
        {
            "layer": pd.Categorical(ref, categories=REF_CLASSES),
            "domain": pd.Categorical(pred),
        },
        index=[f"spot{i}" for i in range(n)],
    )
    adata = ad.AnnData(obs=obs)
    adata.uns["layer_colors"] = list(REF_COLORS)
    truth = {int(perm[c]): REF_CLASSES[c] for c in range(len(REF_CLASSES))}
    return adata, truth


@pytest.mark.parametrize("seed", [0, 1])
def test_compare_anndata(seed: int) -> None:
    adata, truth = _labelled_adata(seed)
    report = compare(adata, key_pred="domain", key_ref="layer")
    assert isinstance(report, CompareReport)
    labelled = adata.obs["layer"].notna().to_numpy()
    ref = adata.obs["layer"].astype(object).to_numpy()[labelled]
    pred = adata.obs["domain"].astype(object).to_numpy()[labelled]
    assert report.ari == pytest.approx(skm.adjusted_rand_score(ref, pred))
    assert report.nmi == pytest.approx(skm.normalized_mutual_info_score(ref, pred))
    assert report.n_scored == int(labelled.sum())
    assert report.n_dropped == int((~labelled).sum())
    assert report.matching == truth
    assert report.confusion.to_numpy().sum() == report.n_scored
    assert list(report.confusion.columns) == REF_CLASSES
    assert list(report.per_class.columns) == [
        "class",
        "matched",
        "precision",
        "recall",
        "f1",
        "support",
    ]
    mapped = np.array([truth.get(p, "none") for p in pred], dtype=object)
    np.testing.assert_allclose(
        report.per_class.set_index("class").loc[REF_CLASSES, "f1"],
        skm.f1_score(ref, mapped, labels=REF_CLASSES, average=None, zero_division=0),
    )
    assert report.accuracy == pytest.approx(np.mean(mapped == ref))


def test_report_text_and_html() -> None:
    adata, _ = _labelled_adata(3)
    report = compare(adata, key_pred="domain", key_ref="layer")
    text = str(report)
    assert f"ARI: {report.ari:.4f}" in text
    assert "dropped (no label)" in text
    for cls in REF_CLASSES:
        assert cls in text
    html = report._repr_html_()
    assert html.count("<table") == 2
    assert f"{report.nmi:.4f}" in html


def test_compare_spatialdata_table() -> None:
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel

    adata, truth = _labelled_adata(5, n=120)
    rng = np.random.default_rng(5)
    ids = np.arange(adata.n_obs) + 1000
    circles = ShapesModel.parse(
        gpd.GeoDataFrame(
            {"radius": np.full(adata.n_obs, 10.0)},
            geometry=shapely.points(rng.uniform(0, 500, (adata.n_obs, 2))),
            index=pd.Index(ids),
        )
    )
    adata.obs["region"] = pd.Categorical(["spots"] * adata.n_obs)
    adata.obs["spot_id"] = ids
    table = TableModel.parse(adata, region="spots", region_key="region", instance_key="spot_id")
    sdata = SpatialData(shapes={"spots": circles}, tables={"rna": table})
    report = compare(sdata, key_pred="domain", key_ref="layer")
    direct = compare(adata, key_pred="domain", key_ref="layer")
    assert report.ari == pytest.approx(direct.ari)
    assert report.n_scored == direct.n_scored
    with pytest.raises(KeyError, match="no table 'protein'"):
        compare(sdata, key_pred="domain", key_ref="layer", table="protein")


def test_compare_missing_column_error() -> None:
    adata, _ = _labelled_adata(0, n=50)
    with pytest.raises(KeyError, match="'nope' is not in obs"):
        compare(adata, key_pred="nope", key_ref="layer")


def test_rename_by_matching_uses_reference_names_and_colours() -> None:
    adata, truth = _labelled_adata(2)
    adata.uns["domain_colors"] = ["#111111"] * 5 + ["#123456"]  # 6 categories incl. 9
    report = compare(adata, key_pred="domain", key_ref="layer")
    assert rename_by_matching(adata, report=report) is None
    key = "domain_matched"
    renamed = adata.obs[key]
    assert list(renamed.cat.categories) == [*REF_CLASSES, "9"]
    expected = adata.obs["domain"].astype(object).map(lambda v: truth.get(v, str(v)))
    assert (renamed.astype(object).to_numpy() == expected.to_numpy()).all()
    colours = dict(zip(renamed.cat.categories, adata.uns[f"{key}_colors"], strict=True))
    for cls, colour in zip(REF_CLASSES, REF_COLORS, strict=True):
        assert colours[cls] == colour
    assert colours["9"] == "#123456"  # unmatched keeps its own colour
    assert "domain" in adata.obs  # original kept


def test_rename_unmatched_name_clash_and_default_colours() -> None:
    # predicted "a" is a small unmatched cluster whose name clashes with reference class "a"
    ref = np.array(["a"] * 40 + ["b"] * 40 + [None] * 5, dtype=object)
    pred = np.array(["x"] * 35 + ["a"] * 5 + ["y"] * 45, dtype=object)
    adata = ad.AnnData(obs=pd.DataFrame({"p": pred, "r": ref}, index=[str(i) for i in range(85)]))
    report = compare(adata, key_pred="p", key_ref="r")
    assert report.matching == {"x": "a", "y": "b"}
    rename_by_matching(adata, report=report, key_added="renamed")
    renamed = adata.obs["renamed"]
    assert list(renamed.cat.categories) == ["a", "b", "a (unmatched)"]
    assert (renamed.iloc[35:40] == "a (unmatched)").all()
    assert (renamed.iloc[:35] == "a").all() and (renamed.iloc[40:] == "b").all()
    colours = adata.uns["renamed_colors"]
    assert len(colours) == 3 and len(set(colours)) == 3


def test_disagreement() -> None:
    adata, truth = _labelled_adata(4)
    report = compare(adata, key_pred="domain", key_ref="layer")
    flags = disagreement(adata, report=report)
    assert flags.dtype == bool and flags.shape == (adata.n_obs,)
    ref = adata.obs["layer"].astype(object).to_numpy()
    mapped = adata.obs["domain"].astype(object).map(lambda v: truth.get(v)).to_numpy()
    labelled = ~pd.isna(ref)
    assert not flags[~labelled].any()
    np.testing.assert_array_equal(flags[labelled], mapped[labelled] != ref[labelled])
    assert flags[labelled].mean() == pytest.approx(1 - report.accuracy)
