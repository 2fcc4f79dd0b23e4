"""The napari-scai command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
    qtbot.wait(50)  # let the docks' deferred set-up run, as napari's event loop would
    try:
        names = [ly.name for ly in viewer.layers]
        assert names[:2] == ["dlpfc_151673_lowres_image", "dlpfc_151673_spots"]
        assert viewer.layers["dlpfc_151673_spots"].metadata["scai"].color_key == "layer_manual"
        docks = " ".join(viewer.window._dock_widgets)
        for name in ("Tissue overlay", "Spatial domains", "Annotate & compare"):
            assert name in docks, docks
        assert "Compare with reference" not in docks  # Compare is a tab of Annotate & compare
    finally:
        viewer.close()


# --- issue 13: clean errors, our warnings shown, tables other than rna, --version, --help ---


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_cli_compare_prints_ari_of_a_real_prediction(tmp_path, capsys):
    """ARI/NMI of a prediction that differs from the reference, checked against scikit-learn."""
    import numpy as np
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from napari_scai.datasets import dlpfc_151673

    sdata = dlpfc_151673()
    obs = sdata.tables["rna"].obs
    ref = obs["layer_manual"].astype(object)
    pred = ref.copy()
    rng = np.random.default_rng(0)
    flip = rng.random(len(pred)) < 0.3  # 30% of the spots get another layer
    pred[flip] = rng.choice(sorted(ref.dropna().unique()), int(flip.sum()))
    pred[ref.isna()] = "L1"
    obs["pred"] = pd.Categorical(pred)
    store = io.write(sdata, tmp_path / "pred.zarr")

    assert main(["run", str(store), "--compare", "layer_manual", "--compare-pred", "pred"]) == 0
    out = capsys.readouterr().out
    keep = ref.notna().to_numpy()
    ari = adjusted_rand_score(ref[keep].astype(str), pred[keep].astype(str))
    nmi = normalized_mutual_info_score(ref[keep].astype(str), pred[keep].astype(str))
    assert 0.2 < ari < 0.9  # a real, imperfect prediction
    assert f"ARI: {ari:.4f}" in out and f"NMI: {nmi:.4f}" in out, out


def test_expected_errors_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    import anndata as ad
    import numpy as np

    from napari_scai import cli

    folder = tmp_path / "two"
    folder.mkdir()
    for name in ("a.h5ad", "b.h5ad"):
        ad.AnnData(np.ones((2, 2), dtype=np.float32)).write_h5ad(folder / name)
    assert main(["info", str(folder)]) == 2  # ReadError
    line = _one_error_line(capsys.readouterr().err)
    assert "2 .h5ad files (a.h5ad, b.h5ad)" in line
    assert main(["info"]) == 2  # ValueError from our own argument check
    assert "give a PATH or --sample" in _one_error_line(capsys.readouterr().err)

    def raise_key(args):  # a KeyError from a check deep in tl, with a multi-line message
        raise KeyError("'foo' is not a column of obs\n(columns: a, b). Fix: name one of those")

    monkeypatch.setattr(cli, "cmd_info", raise_key)
    parser = cli.build_parser
    monkeypatch.setattr(
        cli,
        "build_parser",
        lambda: _with_func(parser(), "info", raise_key),
    )
    assert main(["info", "x"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == "error: 'foo' is not a column of obs (columns: a, b). Fix: name one of those"


def _with_func(parser, command, func):
    sub = next(a for a in parser._actions if a.dest == "command")
    sub.choices[command].set_defaults(func=func)
    return parser


def test_cli_shows_our_warnings_and_hides_library_noise(capsys):
    import warnings

    import anndata as ad
    import numpy as np

    from napari_scai.cli import cli_warnings
    from napari_scai.tl._domains import _check_counts

    with cli_warnings():
        _check_counts(ad.AnnData(np.full((3, 2), 0.5, dtype=np.float32)), None, "table 'rna'")
        # the same kind of warning, raised from a third-party module's code
        exec(
            compile(
                "import warnings\nwarnings.warn('library noise', UserWarning)",
                "/site-packages/lib/mod.py",
                "exec",
            )
        )
        warnings.warn("deprecated thing", FutureWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert "warning: table 'rna'.X does not look like raw counts" in err
    assert "library noise" not in err and "deprecated" not in err


def test_info_shows_renamed_column_note(tmp_path, capsys):
    import anndata as ad
    import numpy as np
    import pandas as pd

    f = tmp_path / "other_benchmark.h5ad"
    obs = pd.DataFrame({"Region": ["a", "b", "c"]}, index=["c0", "c1", "c2"])
    a = ad.AnnData(np.ones((3, 2), dtype=np.float32), obs=obs)
    a.obsm["spatial"] = np.arange(6.0).reshape(3, 2)
    a.write_h5ad(f)
    assert main(["info", str(f)]) == 0
    err = capsys.readouterr().err
    assert "warning: table 'rna': kept obs['Region'] -> obs['Region_original']" in err


@pytest.mark.parametrize(
    ("modality", "features"),
    [
        ("protein", ["CD3", "CD4", "CD8a", "CD19"]),
        ("atac", ["chr1-100-600", "chr1-900-1400", "chr2-50-550", "chrX-10-510"]),
    ],
)
def test_run_out_on_protein_or_atac_file_needs_no_table_flag(tmp_path, capsys, modality, features):
    import anndata as ad
    import numpy as np
    import pandas as pd

    f = tmp_path / "adt.h5ad"
    a = ad.AnnData(
        np.random.default_rng(0).poisson(5, (40, 4)).astype(np.float32),
        var=pd.DataFrame(index=features),
    )
    a.obsm["spatial"] = np.random.default_rng(1).uniform(0, 100, (40, 2))
    a.write_h5ad(f)
    out = tmp_path / "adt.zarr"
    assert main(["run", str(f), "--out", str(out)]) == 0, capsys.readouterr().err
    assert list(io.read(out).tables) == [modality]
    # asking for an analysis still names the table problem, before anything is written
    assert main(["run", str(f), "--domains", "3", "--out", str(tmp_path / "b.zarr")]) == 2
    assert f"table 'rna' not found; tables: ['{modality}']" in _one_error_line(
        capsys.readouterr().err
    )


def test_version_and_help_text(capsys):
    from napari_scai import __version__
    from napari_scai.cli import build_parser

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"napari-scai {__version__}"
    parser = build_parser()
    texts = [parser.format_help()]
    sub = next(a for a in parser._actions if a.dest == "command")
    texts += [p.format_help() for p in sub.choices.values()]
    for text in texts:
        assert "``" not in text and ":func:" not in text, text
    assert "napari-scai view" in texts[0]
