"""Issue 11 point 3 (speed): the reordered domain model is the same map, members stay the
models their seeds give alone, the dock names the ensemble member in training."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from napari_scai.models._runtime import Runtime
from napari_scai.models.domains import (
    DomainConfig,
    DomainGNN,
    SparseAdj,
    train_domain_ensemble,
    train_domain_model,
)


def _ring_graph(n: int, seed: int = 0) -> sp.csr_matrix:
    """A ring with a few random chords (irregular degrees, so ``A @ 1`` is not constant)."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    rows = np.concatenate([i, rng.integers(0, n, n // 4)])
    cols = np.concatenate([(i + 1) % n, rng.integers(0, n, n // 4)])
    keep = rows != cols
    A = sp.coo_matrix((np.ones(keep.sum()), (rows[keep], cols[keep])), shape=(n, n))
    A = ((A + A.T) > 0).astype(np.float32)
    return sp.csr_matrix(A)


def _reference_encode(model: DomainGNN, x: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """The textbook two-layer GCN ``A ELU(A (x W1 + b1)) W2 + b2)``, dense, member 0."""
    h = torch.nn.functional.elu(A @ (x @ model.w1[0] + model.b1[0]))
    return A @ (h @ model.w2[0] + model.b2[0])


@pytest.mark.parametrize("n_batches", [0, 3])
def test_reordered_layers_are_the_textbook_gcn(n_batches):
    """(A x) W + (A 1) b must equal A (x W + b) with non-zero biases and irregular degrees,
    for the encoder and the decoder (with and without the batch one-hot)."""
    from napari_scai.graph import normalize_adjacency

    n, f = 200, 12
    G = _ring_graph(n)
    An = normalize_adjacency(G, self_loops=True, kind="sym")
    adj = SparseAdj(An, "cpu", symmetric=True)
    Ad = torch.from_numpy(np.asarray(An.todense(), dtype=np.float32))
    cfg = DomainConfig(hidden_dim=16, latent_dim=4)
    model = DomainGNN(f, cfg, n_batches=n_batches, out_dim=f)
    gen = torch.Generator().manual_seed(0)
    model.init_member(0, gen)
    with torch.no_grad():  # non-zero biases: the reordering must carry them through A @ 1
        for b in (model.b1, model.b2, model.bd):
            b.normal_(generator=gen)
    x = torch.randn(n, f, generator=gen)
    z = model.encode(x, adj)[:, 0]
    assert torch.allclose(z, _reference_encode(model, x, Ad), atol=1e-5)
    B = None
    zin = z
    if n_batches:
        B = torch.nn.functional.one_hot(torch.arange(n) % n_batches, n_batches).float()
        zin = torch.cat([z, B], 1)
    xr = model.decode(z.unsqueeze(1), adj, B)[:, 0]
    assert torch.allclose(xr, Ad @ (zin @ model.wd[0] + model.bd[0]), atol=1e-5)


def test_members_are_the_models_their_seeds_give_alone():
    """Three seeds trained by the ensemble (one pass, stacked weights) = each seed alone, and
    the same seed twice gives the same embedding bit for bit."""
    rng = np.random.default_rng(1)
    n = 300
    G = _ring_graph(n, seed=1)
    X = rng.standard_normal((n, 10)).astype(np.float32)
    cfg = DomainConfig(hidden_dim=16, latent_dim=4, epochs=15)
    Zs, _ = train_domain_ensemble(X, G, cfg, Runtime("cpu", 0), seeds=[4, 5, 6])
    for seed, Zm in zip([4, 5, 6], Zs, strict=True):
        Z1, _ = train_domain_model(X, G, cfg, Runtime("cpu", seed))
        Z1b, _ = train_domain_model(X, G, cfg, Runtime("cpu", seed))
        assert np.array_equal(Z1, Z1b)
        np.testing.assert_allclose(Zm, Z1, atol=1e-4)
    assert not np.allclose(Zs[0], Zs[1], atol=1e-2)  # different seeds, different models


def test_training_restores_the_nan_fill_setting():
    """The loop switches off deterministic mode's NaN fill of new tensors; the caller's
    setting (and determinism flag) must be back afterwards."""
    before = torch.utils.deterministic.fill_uninitialized_memory
    det = torch.are_deterministic_algorithms_enabled()
    G = _ring_graph(50)
    X = np.random.default_rng(0).standard_normal((50, 5)).astype(np.float32)
    try:
        torch.utils.deterministic.fill_uninitialized_memory = not before
        train_domain_model(X, G, DomainConfig(hidden_dim=8, latent_dim=2, epochs=2))
        assert torch.utils.deterministic.fill_uninitialized_memory is (not before)
        assert torch.are_deterministic_algorithms_enabled() == det
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = before


# --- the dock names the ensemble member in training ------------------------------------------


def _names_every_member(messages: list[str], n: int) -> bool:
    """The messages name each of ``n`` members while it trains: all at once ("models 1-n/n
    in parallel: ...") or one after the other, in order ("model 1/n: ...", "model 2/n: ...")."""
    if any(m.startswith(f"models 1-{n}/{n} in parallel: training epoch") for m in messages):
        return True
    named = [m.split(":")[0] for m in messages if m.startswith("model ")]
    runs = [m for i, m in enumerate(named) if i == 0 or named[i - 1] != m]
    return runs == [f"model {i}/{n}" for i in range(1, n + 1)]


@pytest.fixture
def widget(make_napari_viewer, dlpfc_sdata_session):
    import spatialdata as sd

    from napari_scai.viewer import add_sdata
    from napari_scai.widgets.domains import DomainsWidget

    viewer = make_napari_viewer()
    add_sdata(viewer, sd.deepcopy(dlpfc_sdata_session), color_by="layer_manual")
    return DomainsWidget(viewer)


def test_dock_status_names_the_member_in_training(widget, qtbot):
    widget.n_domains.setValue(5)
    widget.advanced.setChecked(True)
    widget.epochs.setValue(12)
    widget.device_combo.setCurrentText("cpu")
    shown: list[str] = []
    widget._relay.progress.connect(lambda i, n, m: shown.append(widget.status.text()))
    steps: list[int] = []
    widget._relay.progress.connect(lambda i, n, m: steps.append(widget.progress.value()))
    widget.run_button.click()
    qtbot.waitUntil(lambda: widget.run_button.isEnabled(), timeout=120_000)
    assert widget.result is not None, widget.status.text()
    # every member of the default ensemble of 3 is named while it trains: on a CPU the three
    # train at once (threads), so one message names them all; else each in turn, in order
    assert _names_every_member(shown, 3), shown
    assert any("training epoch" in t for t in shown)
    assert steps == sorted(steps)  # the bar only moves forward across members


def test_cli_run_draws_a_progress_bar_naming_each_member(capsys):
    """``napari-scai run --domains`` shows a terminal bar that ends at 100% and names every
    ensemble member while it trains."""
    from napari_scai.cli import main

    argv = ["run", "--sample", "dlpfc_151673", "--domains", "5", "--epochs", "5"]
    assert main([*argv, "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    frames = captured.err.split("\r")
    bars = [f for f in frames if f.startswith("spatial domains [")]
    assert bars and "100%" in bars[-1]
    assert _names_every_member([f.split("% ", 1)[-1].rstrip() for f in bars], 3), bars
    assert "spatial domains (5):" in captured.out


# --- members in threads on a CPU (issue 11 point 3, branch speed12) ---------------------------


def test_members_in_threads_are_bit_for_bit_the_separate_runs(monkeypatch):
    """On a CPU the members of a small problem train at once in threads; each must be exactly
    (bit for bit) the model its seed trains alone, and the one-after-the-other path too."""
    import napari_scai.models.domains as md

    rng = np.random.default_rng(3)
    n = 300
    G = _ring_graph(n, seed=3)
    X = rng.standard_normal((n, 10)).astype(np.float32)
    cfg = DomainConfig(hidden_dim=16, latent_dim=4, epochs=12)
    seeds = [7, 8, 9]
    alone = [train_domain_model(X, G, cfg, Runtime("cpu", s))[0] for s in seeds]
    assert md.member_threads(3, 1) > 1  # this machine has >= 2 cores: the threaded path runs
    messages: list[str] = []
    rt = Runtime("cpu", 0, progress=lambda i, t, m: messages.append(m))
    Zs, info = train_domain_ensemble(X, G, cfg, rt, seeds=seeds)
    assert all(np.array_equal(a, b) for a, b in zip(alone, Zs, strict=True))
    assert info["n_members"] == 3 and len(info["final_loss_per_member"]) == 3
    assert any(m.startswith("models 1-3/3 in parallel: training epoch") for m in messages)
    monkeypatch.setattr(md, "member_threads", lambda *a: 1)
    Zs1, _ = train_domain_ensemble(X, G, cfg, Runtime("cpu", 0), seeds=seeds)
    assert all(np.array_equal(a, b) for a, b in zip(alone, Zs1, strict=True))


def test_member_threads_only_for_single_threaded_members(monkeypatch):
    """Threads only when each member runs on one intra-op thread and there are >= 2 cores;
    never more threads than members."""
    import napari_scai.models.domains as md

    monkeypatch.setattr(md.os, "cpu_count", lambda: 2)
    assert md.member_threads(3, 1) == 3
    assert md.member_threads(5, 1) == 3  # cores + 1
    assert md.member_threads(1, 1) == 1
    assert md.member_threads(3, 2) == 1  # a big problem uses every core for each member
    monkeypatch.setattr(md.os, "cpu_count", lambda: 1)
    assert md.member_threads(3, 1) == 1


def test_cancel_stops_every_member_thread():
    """A cancel while the members train in threads raises Cancelled in the caller, and no
    member thread keeps running."""
    import threading

    from napari_scai.models import Cancelled

    rng = np.random.default_rng(4)
    G = _ring_graph(400, seed=4)
    X = rng.standard_normal((400, 10)).astype(np.float32)
    ev = threading.Event()

    def progress(i: int, t: int, m: str) -> None:
        if i > 0:
            ev.set()  # "the GUI" cancels once training is under way

    before = threading.active_count()
    rt = Runtime("cpu", 0, progress=progress, cancel=ev)
    with pytest.raises(Cancelled):
        train_domain_ensemble(X, G, DomainConfig(epochs=2000), rt, seeds=[0, 1, 2])
    assert threading.active_count() == before
