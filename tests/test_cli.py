"""The napari-scai command line."""

from __future__ import annotations

import subprocess
import sys

from napari_scai import io
from napari_scai.cli import main, open_viewer
from tests.conftest import shared_path


def test_info_sample(capsys):
    assert main(["info", "--sample", "dlpfc_151673"]) == 0
    out = capsys.readouterr().out
    assert "dlpfc_151673_spots: 3639 circles, radius 48.2" in out
    assert "table  rna: 3639 spots/cells x 5000 features" in out
    assert "dlpfc_151673_lowres_image: 3 channel(s), 600 x 600 px" in out
    assert "obs['layer_manual']: 7 classes, 28 missing" in out


def test_info_citeseq_tables(capsys):
    assert (
        main(["info", str(shared_path("citeseq", "eccite_pbmc_control_citefuse_500cells.h5ad"))])
        == 0
    )
    out = capsys.readouterr().out
    assert "table  protein: 500 spots/cells x 49 features" in out
    assert "table  rna: 500 spots/cells x 19521 features" in out


def test_run_writes_store(tmp_path, capsys):
    out = tmp_path / "res.zarr"
    assert main(["run", str(shared_path("visium", "dlpfc_151674")), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert io.read(out).tables["rna"].n_obs == 3673
    # refuses to clobber without --overwrite, and says how to fix it
    assert main(["run", str(shared_path("visium", "dlpfc_151674")), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_run_rejects_unknown_compare_column_before_the_model(tmp_path, capsys):
    out = tmp_path / "res.zarr"
    args = ["run", "--sample", "dlpfc_151673", "--domains", "7", "--compare", "layers"]
    assert main([*args, "--out", str(out)]) == 2
    cap = capsys.readouterr()
    assert "--compare 'layers' is not a column of table 'rna'" in cap.err
    assert "layer_manual" in cap.err  # the columns it does have
    assert "spatial domains (" not in cap.out  # failed before training, not after
    assert not out.exists()
    assert main(["run", "--sample", "dlpfc_151673", "--table", "protein"]) == 2
    assert "tables: ['rna']" in capsys.readouterr().err


def test_bad_path_is_one_clear_line():
    proc = subprocess.run(
        [sys.executable, "-m", "napari_scai.cli", "info", "/no/such/folder"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "Cannot read '/no/such/folder'" in proc.stderr and "Fix:" in proc.stderr


def test_view_opens_sample_with_docks(qtbot):
    viewer = open_viewer([], sample="dlpfc_151673", show=False)
    try:
        names = [ly.name for ly in viewer.layers]
        assert names[:2] == ["dlpfc_151673_lowres_image", "dlpfc_151673_spots"]
        assert viewer.layers["dlpfc_151673_spots"].metadata["scai"].color_key == "layer_manual"
        docks = " ".join(viewer.window._dock_widgets)
        for name in (
            "Tissue overlay",
            "Spatial domains",
            "Annotate & compare",
            "Compare with reference",
        ):
            assert name in docks, docks
    finally:
        viewer.close()
