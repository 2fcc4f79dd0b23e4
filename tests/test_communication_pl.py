"""Static communication figures: what they draw is what tl.communication stored."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from napari_scai.pl import communication_flows, communication_heatmap, communication_pair


@pytest.fixture(scope="module")
def result():
    from napari_scai.simulate import planted_communication
    from napari_scai.tl import communication

    adata = planted_communication(1200, n_null=6, n_decoy=2, seed=5)
    report = communication(
        adata,
        groupby="cell_type",
        pairs=adata.uns["lr_truth"][["ligand", "receptor"]],
        bandwidth_um=25.0,
        n_perms=20,
        device="cpu",
    )
    return adata, report


def test_pair_maps_show_sender_and_receiver_activity(result, tmp_path):
    adata, report = result
    top = report.pairs["interaction"].iloc[0]
    fig, axes = plt.subplots(1, 2)
    communication_pair(adata, top, ax=axes)
    k = list(adata.obsm["scai_communication"].columns).index(top)
    for ax, key in zip(axes, ("scai_communication_sender", "scai_communication"), strict=True):
        drawn = np.sort(ax.collections[0].get_array())
        expect = np.sort(adata.obsm[key].to_numpy()[:, k])
        np.testing.assert_allclose(drawn, expect)
    fig.savefig(tmp_path / "pair.png")
    plt.close(fig)


def test_flows_are_arrows_from_senders_to_receivers(result, tmp_path):
    from napari_scai.tl import communication_edges

    adata, report = result
    top = report.pairs["interaction"].iloc[0]
    fig, ax = plt.subplots()
    communication_flows(adata, top, top=50, color_by="cell_type", ax=ax)
    quiver = next(c for c in ax.collections if isinstance(c, matplotlib.quiver.Quiver))
    edges = communication_edges(adata, interaction=top, top=None)
    edges = edges[edges["sender"] != edges["receiver"]].head(50)
    xy = adata.obsm["spatial"]
    np.testing.assert_allclose(quiver.X, xy[edges["sender"], 0])
    np.testing.assert_allclose(quiver.U, xy[edges["receiver"], 0] - xy[edges["sender"], 0])
    alpha = quiver.get_facecolors()[:, 3]
    assert alpha[0] == pytest.approx(1.0) and alpha[0] >= alpha[-1]  # strongest most opaque
    fig.savefig(tmp_path / "flows.png")
    plt.close(fig)


def test_heatmap_is_the_group_matrix(result, tmp_path):
    adata, report = result
    fig, ax = plt.subplots()
    communication_heatmap(adata, ax=ax)  # from the stored report
    shown = ax.images[0].get_array()
    np.testing.assert_allclose(shown, report.group_matrix().to_numpy())
    assert [t.get_text() for t in ax.get_yticklabels()] == ["sender", "receiver"]
    # senders -> receivers carries the planted signal: the strongest off-diagonal cell
    M = report.group_matrix()
    assert M.loc["sender", "receiver"] > M.loc["receiver", "sender"]
    fig.savefig(tmp_path / "heatmap.png")
    plt.close(fig)


def test_bad_requests_name_the_fix(result):
    from napari_scai.simulate import planted_communication
    from napari_scai.tl import communication

    adata, _ = result
    with pytest.raises(KeyError, match="report.pairs"):
        communication_pair(adata, "NOPE^NOPE")
    ungrouped = planted_communication(400, n_null=2, n_decoy=1, seed=1)
    rep = communication(
        ungrouped,
        pairs=ungrouped.uns["lr_truth"][["ligand", "receptor"]],
        bandwidth_um=25.0,
        n_perms=5,
        device="cpu",
    )
    with pytest.raises(ValueError, match="groupby"):
        communication_heatmap(rep)
    plt.close("all")
