"""The spatial-domains dock: run in a worker with progress, cancel, results drawn on the tissue."""

from __future__ import annotations

import pytest

from napari_scai.viewer import add_sdata
from napari_scai.widgets.domains import DomainsWidget, available_devices


@pytest.fixture
def dlpfc_sdata(dlpfc_sdata_session):
    """A private copy of the session's DLPFC (0.6 s, against ~9 s to read the sample again)."""
    import spatialdata as sd

    return sd.deepcopy(dlpfc_sdata_session)


@pytest.fixture
def widget(make_napari_viewer, dlpfc_sdata):
    viewer = make_napari_viewer()
    add_sdata(viewer, dlpfc_sdata, color_by="layer_manual")
    return DomainsWidget(viewer)


def test_devices_listed():
    import torch

    names = [n for n, ok in available_devices() if ok]
    assert names[:2] == ["auto", "cpu"]
    assert any(n.startswith("cuda") for n in names) == torch.cuda.is_available()


def test_run_draws_domains_and_confidence(widget, qtbot):
    assert widget.layer_combo.currentText() == "dlpfc_151673_spots"
    assert widget.table_combo.currentText() == "rna"
    widget.n_domains.setValue(5)
    widget.advanced.setChecked(True)
    widget.epochs.setValue(20)
    widget.device_combo.setCurrentText("cpu")
    steps = []
    widget._relay.progress.connect(lambda i, n, m: steps.append((i, n)))
    assert widget.parameters() == {
        "table": "rna",
        "n_domains": 5,
        "device": "cpu",
        "seed": 0,
        "epochs": 20,
        "refine": False,
    }
    widget.run_button.click()
    assert not widget.run_button.isEnabled() and widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: widget.run_button.isEnabled(), timeout=120_000)
    assert widget.result is not None, widget.status.text()
    obs = widget.layer.metadata["adata"].obs
    assert obs["scai_domain"].nunique() == 5
    assert ((obs["scai_domain_confidence"] > 0) & (obs["scai_domain_confidence"] <= 1)).all()
    layer = widget.layer
    assert layer.metadata["scai"].color_key == "scai_domain"
    assert list(layer.features["scai_domain"].astype(str)) == list(obs["scai_domain"].astype(str))
    conf = widget.viewer.layers["dlpfc_151673_spots confidence"]
    assert conf.features["scai_domain_confidence"].between(0, 1).all()
    assert steps and steps[-1][0] <= steps[-1][1]
    assert "done: 5 domains" in widget.status.text()


def test_cancel_stops_and_writes_nothing(widget, qtbot):
    widget.advanced.setChecked(True)
    widget.epochs.setValue(100000)  # would take far too long: only Cancel ends it
    widget.device_combo.setCurrentText("cpu")
    widget.run_button.click()
    qtbot.wait(300)
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: widget.run_button.isEnabled(), timeout=60_000)
    assert widget.result is None
    assert "cancelled" in widget.status.text()
    assert "scai_domain" not in widget.layer.metadata["adata"].obs


def test_automatic_k_passes_none(widget):
    widget.auto_k.setChecked(True)
    assert not widget.n_domains.isEnabled()
    assert widget.parameters()["n_domains"] is None
