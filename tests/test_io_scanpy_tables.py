"""Issue 12.2: our tables carry uns['spatial'] as scanpy's Visium reader writes it.

So ``sc.pl.spatial``, ``sq.pl.spatial_scatter`` and ``sq.gr.spatial_neighbors`` work on them
unchanged: on a table read from a Space Ranger folder and on one from a store we wrote.
"""

from __future__ import annotations

import json
import shutil

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scanpy as sc  # noqa: E402
import squidpy as sq  # noqa: E402
from PIL import Image  # noqa: E402

from napari_scai import io  # noqa: E402
from napari_scai.datasets import add_layer_labels, sample_data_dir  # noqa: E402

FOLDER = sample_data_dir() / "dlpfc_151673"
LIB = "dlpfc_151673"


@pytest.fixture(scope="module")
def visium_store(tmp_path_factory):
    """The bundled Space Ranger folder read once, and written once as a store."""
    sdata = io.read(FOLDER)
    add_layer_labels(sdata, FOLDER / "layer_labels.csv")
    store = io.write(sdata, tmp_path_factory.mktemp("store") / "s.zarr")
    return sdata, store


def _check_layout(table) -> None:
    entry = table.uns["spatial"][LIB]
    lowres = np.asarray(Image.open(FOLDER / "spatial" / "tissue_lowres_image.png"))[..., :3]
    factors = json.loads((FOLDER / "spatial" / "scalefactors_json.json").read_text())
    # only what the folder has: lowres, also under squidpy's default key (same array, no copy)
    assert set(entry["images"]) == {"lowres", "hires"}
    img = entry["images"]["lowres"]
    assert entry["images"]["hires"] is img
    assert img.dtype == np.float32 and img.shape == lowres.shape
    np.testing.assert_allclose(img, lowres / 255, atol=1e-6)  # scanpy's form: float in [0, 1]
    sf = entry["scalefactors"]
    assert sf["tissue_lowres_scalef"] == pytest.approx(factors["tissue_lowres_scalef"])
    assert sf["tissue_hires_scalef"] == sf["tissue_lowres_scalef"]
    original = entry["napari_scai_spaceranger_scalefactors"]["tissue_hires_scalef"]
    assert original == pytest.approx(factors["tissue_hires_scalef"])
    assert [k for k in sf if "hires" in k] == ["tissue_hires_scalef"]  # squidpy matches by part
    assert sf["spot_diameter_fullres"] == pytest.approx(factors["spot_diameter_fullres"])


def _plots(table, out_dir, tag: str) -> None:
    """Both plotting functions, unchanged arguments; the spots must sit on the tissue image.

    On a band of the section (a third of the spots, contiguous, so the lattice stays whole)
    to keep the test fast; its uns['spatial'] is the full table's.
    """
    table = table[table.obs["array_row"].between(20, 45)].copy()
    sc.pl.spatial(table, color="layer_manual", show=False)
    fig = plt.gcf()
    ax = fig.axes[0]
    assert ax.images, "sc.pl.spatial drew no H&E"
    shown = np.asarray(ax.images[0].get_array())
    assert shown.shape[:2] == table.uns["spatial"][LIB]["images"]["lowres"].shape[:2]
    # spots are drawn in lowres pixels: inside the image, not in full-res coordinates
    (x0, x1), (y1, y0) = ax.get_xlim(), ax.get_ylim()
    assert 0 <= x0 < x1 <= shown.shape[1] and 0 <= y0 < y1 <= shown.shape[0], (x0, x1, y0, y1)
    fig.savefig(out_dir / f"sc_spatial_{tag}.png", dpi=80)
    plt.close(fig)

    sq.pl.spatial_scatter(table, color="layer_manual")
    fig = plt.gcf()
    ax = fig.axes[0]
    assert ax.images, "squidpy drew no H&E"
    shown = np.asarray(ax.images[0].get_array())
    # squidpy draws one circle per spot, in image pixels: centres = coordinates x lowres factor
    paths = max((c.get_paths() for c in ax.collections), key=len)
    assert len(paths) == table.n_obs
    xy = np.array([[(b := p.get_extents()).x0 + b.width / 2, b.y0 + b.height / 2] for p in paths])
    assert (xy >= 0).all() and (xy < np.array(shown.shape[1::-1])).all()
    factor = table.uns["spatial"][LIB]["scalefactors"]["tissue_lowres_scalef"]
    np.testing.assert_allclose(xy, table.obsm["spatial"] * factor, atol=0.5)
    fig.savefig(out_dir / f"sq_spatial_scatter_{tag}.png", dpi=80)
    plt.close(fig)

    sq.gr.spatial_neighbors(table)  # Visium grid by default (uns['spatial'] present)
    degree = np.asarray(table.obsp["spatial_connectivities"].sum(axis=1)).ravel()
    assert np.median(degree) == 6  # hexagonal spot lattice


def test_scanpy_and_squidpy_draw_a_visium_table(tmp_path, visium_store):
    table = visium_store[0].tables["rna"].copy()
    _check_layout(table)
    _plots(table, tmp_path, "visium")
    assert (tmp_path / "sc_spatial_visium.png").stat().st_size > 10_000


def test_scanpy_and_squidpy_draw_a_table_from_our_store(tmp_path, visium_store):
    store = shutil.copytree(visium_store[1], tmp_path / "s.zarr")
    # the store keeps the pixels once, in the image element, not again in the table's uns
    uns_arrays = [
        p for p in (store / "tables" / "rna" / "uns").rglob("zarr.json") if "images" in str(p)
    ]
    assert not any("array" in p.read_text() for p in uns_arrays)
    back = io.read(store)
    _check_layout(back.tables["rna"])
    _plots(back.tables["rna"], tmp_path, "store")
    # and after an update (what a save from napari does) the images are still there
    back.tables["rna"].obs["flag"] = 1
    io.update(back, elements=["rna"])
    _check_layout(io.read(store).tables["rna"])
    # the memory is untouched by writing: the caller's table still holds its images
    assert "lowres" in back.tables["rna"].uns["spatial"][LIB]["images"]


def test_store_written_before_tables_carried_images(tmp_path, visium_store):
    """An older store (uns['spatial'] with scale factors only) is drawn by scanpy too."""
    sdata = io.read(visium_store[1])
    entry = sdata.tables["rna"].uns["spatial"][LIB]
    sdata.tables["rna"].uns["spatial"] = {
        LIB: {"scalefactors": entry["napari_scai_spaceranger_scalefactors"]}
    }
    store = io.write(sdata, tmp_path / "old.zarr")  # images are loaded, then written
    table = io.read(store).tables["rna"]
    _check_layout(table)
    sc.pl.spatial(table, color="layer_manual", show=False)
    assert plt.gcf().axes[0].images
    plt.close("all")
