"""napari_scai.pl: static figures in napari's colours, spots at true size, scale bar in µm."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import shapely
from matplotlib.colors import to_rgba_array

import napari_scai.pl as pl
import napari_scai.tl as tl
from napari_scai.viewer import spots_layer

SPOT_DIAMETER_PX = 110.0  # full-resolution pixels; the 200 px pitch = 100 µm: 0.5 µm/px


def _section(n_side: int = 14, seed: int = 0):
    """A toy Visium-like section: hex-free grid, an RGB image at scale 0.1, three layers."""
    from anndata import AnnData

    from napari_scai.io._common import build_spatialdata

    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(np.arange(n_side), np.arange(n_side)), -1).reshape(-1, 2)
    xy = grid * 200.0 + 300.0  # spot pitch 200 px = 100 µm, like Visium
    n = len(xy)
    band = np.minimum(grid[:, 1] * 3 // n_side, 2)
    layer = np.array(["top", "mid", "bottom"], dtype=object)[band]
    layer[rng.choice(n, 5, replace=False)] = None
    pred = band.copy()
    pred[rng.choice(n, n // 8, replace=False)] = rng.integers(0, 3, n // 8)
    obs = pd.DataFrame(
        {
            "layer": pd.Categorical(layer, categories=["top", "mid", "bottom"]),
            "pred": pd.Categorical(pred.astype(str)),
            "conf": rng.uniform(0, 1, n),
        },
        index=[f"spot_{i}" for i in range(n)],
    )
    adata = AnnData(rng.poisson(1.0, (n, 5)).astype(np.float32), obs=obs)
    adata.uns["layer_colors"] = ["#123456", "#abcdef", "#fedcba"]
    adata.uns["spatial"] = {"toy": {"scalefactors": {"spot_diameter_fullres": SPOT_DIAMETER_PX}}}
    image = rng.integers(0, 255, (3, 320, 320), dtype=np.uint8)
    return build_spatialdata(
        sample="toy",
        tables={"rna": adata},
        coords=xy,
        radius=SPOT_DIAMETER_PX / 2,
        shapes_suffix="spots",
        images={"toy_lowres_image": (image, 0.1)},
    )


def _napari_rgb(sdata, key: str) -> np.ndarray:
    """Face colours of the napari Points layer napari_scai.viewer builds for ``key``."""
    from napari.layers import Points

    data, kwargs, kind = spots_layer(sdata, "toy_spots", color_by=key)
    assert kind == "points"
    layer = Points(data, **kwargs)
    return np.asarray(layer.face_color)[:, :3]


def _drawn_rgb(ax) -> np.ndarray:
    from matplotlib.collections import EllipseCollection

    spots = [c for c in ax.collections if isinstance(c, EllipseCollection)]
    assert len(spots) == 1
    return np.asarray(spots[0].get_facecolors())[:, :3]


@pytest.mark.parametrize("key", ["layer", "pred", "conf"])
def test_pl_colours_match_the_napari_layer(key: str) -> None:
    sdata = _section()
    ax = pl.spatial(sdata, color=key)  # "pred" has no stored colours: both create the same
    drawn = _drawn_rgb(ax)
    napari_rgb = _napari_rgb(sdata, key)
    assert drawn.shape == napari_rgb.shape
    np.testing.assert_allclose(drawn, napari_rgb, atol=1 / 255)
    if key == "layer":  # and they are the stored colours, the missing colour for NaN
        expected = to_rgba_array(["#123456", "#abcdef", "#fedcba", "#bfbfbf"])[:, :3]
        codes = sdata.tables["rna"].obs["layer"].cat.codes.to_numpy()
        np.testing.assert_allclose(drawn, expected[codes], atol=1 / 255)
    plt.close("all")


def test_recolouring_in_uns_changes_both() -> None:
    sdata = _section()
    sdata.tables["rna"].uns["layer_colors"] = ["#ff0000", "#00ff00", "#0000ff"]
    ax = pl.domains(sdata, key="layer")
    np.testing.assert_allclose(_drawn_rgb(ax), _napari_rgb(sdata, "layer"), atol=1 / 255)
    leg = ax.get_legend()
    legend = {
        t.get_text().split(" (")[0]: h.get_facecolor()[:3]
        for t, h in zip(leg.get_texts(), leg.legend_handles, strict=True)
    }
    np.testing.assert_allclose(legend["mid"], (0, 1, 0))
    n_mid = int((sdata.tables["rna"].obs["layer"] == "mid").sum())
    assert f"mid ({n_mid})" in [t.get_text() for t in leg.get_texts()]
    plt.close("all")


def test_spots_true_size_image_under_and_scale_bar(tmp_path) -> None:
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    sdata = _section()
    ax = pl.spatial(sdata, color="layer", save=tmp_path / "fig.png")
    assert (tmp_path / "fig.png").stat().st_size > 10_000
    spots = ax.collections[0]
    np.testing.assert_allclose(spots._widths * 2, SPOT_DIAMETER_PX)  # data units = true size
    (img,) = ax.get_images()
    # 320 px at scale 0.1 -> 3200 full-resolution px; pixel j centred on j / 0.1, as napari
    # places it (image_layer's scale), so the image lies under the spots as in the viewer
    np.testing.assert_allclose(img.get_extent(), (-5, 3195, 3195, -5))
    bars = [a for a in ax.artists if isinstance(a, AnchoredSizeBar)]
    assert len(bars) == 1
    label = bars[0].txt_label.get_text()
    length_um = float(label.split()[0]) * (1000 if label.endswith("mm") else 1)
    bar_px = bars[0].size_bar.get_children()[0].get_width()
    assert bar_px * 100.0 / 200.0 == pytest.approx(length_um)  # the lattice, not the diameter
    plt.close("all")


def test_no_scale_bar_without_a_pixel_size() -> None:
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    sdata = _section()
    del sdata.tables["rna"].uns["spatial"]
    ax = pl.spatial(sdata, color="conf", image=False)
    assert not [a for a in ax.artists if isinstance(a, AnchoredSizeBar)]
    assert not ax.get_images()
    plt.close("all")


def test_compare_confidence_and_annotation_figures(tmp_path) -> None:
    sdata = _section()
    adata = sdata.tables["rna"]
    report = tl.compare(sdata, key_pred="pred", key_ref="layer")
    fig = pl.compare(sdata, report=report, save=tmp_path / "compare.png")
    assert (tmp_path / "compare.png").is_file() and len(fig.axes) >= 2
    mismatch, confusion = fig.axes[0], fig.axes[1]
    flags = tl.disagreement(sdata, report=report)
    rgb = _drawn_rgb(mismatch)
    magenta = np.all(np.isclose(rgb, (1, 0, 1), atol=1 / 255), axis=1)
    np.testing.assert_array_equal(magenta, flags)  # the drawn mismatches are tl's
    shown = confusion.get_images()[0].get_array()
    np.testing.assert_allclose(shown.sum(axis=1), 1.0)  # normalised per predicted row

    ax = pl.confidence(sdata, key="conf", save=tmp_path / "conf.png")
    assert (tmp_path / "conf.png").is_file() and ax.figure.axes[-1].get_ylabel() == "conf"

    box = shapely.box(0, 0, 1600, 3200)
    tl.annotate_from_shapes(sdata, shapes=[box], classes=["left"])
    from spatialdata.models import ShapesModel

    gdf = tl.annotations_to_geodataframe([box], classes=["left"])
    sdata.shapes["scai_annotations"] = ShapesModel.parse(gdf)
    ax = pl.annotations(sdata, save=tmp_path / "ann.png")
    left = adata.obs["scai_annotation"].notna().to_numpy()
    assert 0 < left.sum() < adata.n_obs
    (outline,) = [c for c in ax.collections if c.__class__.__name__ == "LineCollection"]
    colour = adata.uns["scai_annotation_colors"][0]
    np.testing.assert_allclose(outline.get_colors()[0], to_rgba_array([colour])[0])
    with pytest.raises(KeyError, match="spatial_domains"):
        pl.domains(sdata)
    plt.close("all")
