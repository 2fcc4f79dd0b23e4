# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Cell–cell communication on MERFISH hypothalamus
#
# Which ligand–receptor (LR) pairs signal across the mouse preoptic hypothalamus (MERFISH,
# Moffitt et al. 2018; 11,162 cells × 161 genes), between which cell classes, and where?
#
# 1. `tl.communication` scores every LR pair of the bundled mouse consensus table whose genes
#    are measured: a Gaussian kernel in µm over a sparse neighbour graph, a global statistic
#    with a permutation p-value under a spatially aware null (ligand shuffled within tiles),
#    Benjamini–Hochberg FDR over pairs, per-cell local significance, and cell-class ×
#    cell-class matrices.
# 2. With `gnn=True` a graph neural network learns, as a second, model-based view, how much
#    each pair's messages (neighbours' ligand × the receiver's receptor) explain the
#    receivers' expression; its per-pair strength is compared with the statistic.
# 3. `pl` draws the pair's sender/receiver maps, its strongest flows and the group heatmap;
#    the napari dock (*Plugins → napari-scai → Cell–cell communication*) shows the same on the
#    tissue, interactively.
#
# Fast settings (200 permutations) keep this under a minute on a laptop CPU; use the default
# `n_perms=1000` for a real analysis.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from napari_scai import io, pl
from napari_scai.tl import communication

try:
    HERE = Path(__file__).resolve().parent
except NameError:  # executed as a notebook
    HERE = Path.cwd()
SHARED = Path(os.environ.get("SCAI_SHARED_DATA") or HERE / ".." / ".." / ".." / "shared" / "data")
sdata = io.read(SHARED / "imaging" / "merfish_hypothalamus_moffitt2018.h5ad")
adata = sdata.tables["rna"]
print(adata)

# %% [markdown]
# Coordinates in `obsm['spatial']` are in µm, so `bandwidth_um=30` is a kernel of 30 µm
# (support 2 bandwidths = 60 µm, a few cell diameters).

# %%
report = communication(
    sdata,
    table="rna",
    groupby="Cell_class",
    bandwidth_um=30.0,
    n_perms=200,
    gnn=True,
    device="auto",
    seed=0,
)
print(report)

# %% [markdown]
# Coverage: how many pairs of the resource had all their genes measured (MERFISH is a
# targeted panel, so most pairs are dropped, each with its reason).

# %%
print(report.params["coverage_summary"])
report.coverage[~report.coverage["kept"]].head()

# %% [markdown]
# The ranked pairs, strongest evidence first. `gnn_strength` is the model's view.

# %%
cols = ["interaction", "statistic", "pvalue", "fdr", "n_local_sig", "gnn_strength"]
report.pairs[cols].head(10)

# %%
print(
    f"rank agreement (Spearman) of GNN strength with the statistic: "
    f"{report.params['gnn_spearman']:.2f}; GNN R² of the response {report.params['gnn_r2']:.3f}"
)

# %% [markdown]
# ## Which classes talk to which
#
# The sender-class × receiver-class matrix (summed over significant pairs), and the top LR
# pairs of its strongest off-diagonal cell.

# %%
M = report.group_matrix(alpha=0.05)
ax = pl.communication_heatmap(report, alpha=0.05)
plt.show()
off = M.to_numpy().copy()
np.fill_diagonal(off, -np.inf)
i, j = np.unravel_index(np.argmax(off), off.shape)
sender, receiver = M.index[i], M.columns[j]
print(f"strongest between classes: {sender} -> {receiver}")
report.top_pairs(sender, receiver, n=5)

# %% [markdown]
# ## Where: the top pair on the tissue

# %%
top = report.pairs["interaction"].iloc[0]
fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
pl.communication_pair(sdata, top, ax=axes[:2])
pl.communication_flows(sdata, top, top=300, color_by="Cell_class", ax=axes[2])
fig.tight_layout()
plt.show()

# %% [markdown]
# ## In napari
#
# ```python
# import napari
# from napari_scai.viewer import add_sdata
# from napari_scai.widgets.communication import CommunicationWidget
#
# viewer = napari.Viewer()
# add_sdata(viewer, sdata, color_by="Cell_class")
# viewer.window.add_dock_widget(CommunicationWidget(viewer), name="Cell–cell communication")
# ```
#
# Choose *Group by* `Cell_class` and *Run*; picking a pair in the table draws its sender and
# receiver maps and the strongest flows as arrows; clicking the heatmap lists a class pair's
# top LR pairs.

# %% [markdown]
# ## Checks

# %%
pairs = report.pairs
assert len(pairs) >= 10, len(pairs)
assert pairs["pvalue"].between(0, 1).all() and pairs["fdr"].between(0, 1).all()
assert np.all(np.diff(pairs["pvalue"].to_numpy()) >= 0)  # sorted by evidence
assert pairs["fdr"].iloc[0] <= 0.05, pairs.head()
n_classes = adata.obs["Cell_class"].nunique()
assert report.group_matrix().shape == (n_classes, n_classes)
assert np.isfinite(pairs["gnn_strength"]).all() and pairs["gnn_strength"].max() > 0
assert -1 <= report.params["gnn_spearman"] <= 1
res = sdata.tables["scai_communication"]
assert res.shape == (adata.n_obs, len(pairs))
assert set(res.layers) >= {"sender", "local_fdr"}
print("all checks passed")
