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
# # 4. Multimodal integration: RNA + surface protein (CITE-seq)
#
# CITE-seq measures RNA and ~50 surface proteins (antibody-derived tags, ADT) in the same cells.
# `napari_scai.tl.integrate` learns **one embedding** from both, a **per-cell weight** saying
# which modality drove each cell's position, and (optionally) joint clusters. This tutorial uses
# the ECCITE-seq PBMC sample (500 cells, 19,521 genes, 49 ADT) with fast settings (a few
# hundred training steps, well under a minute on a laptop CPU).
#
# The same call takes `"atac"` (binarised peaks, TF-IDF + LSI) and `"histology"` (H&E colour and
# texture around each Visium spot, see `napari_scai.preprocess.histology_table`) tables, a
# `batch_key=` to remove donors or studies, and `spatial=True` for spatial data.
# In napari the same run is one click: *Plugins > napari-scai > Multimodal integration*.

# %%
import os
import tempfile
from pathlib import Path

import numpy as np
from napari_scai.tl._integrate import integrate
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

import napari_scai.io
from napari_scai import metrics, pl, tl
from napari_scai.preprocess import prepare_modality


def shared_data() -> Path:
    """The shared data folder: $SCAI_SHARED_DATA, else ../../../shared/data from this file."""
    if os.environ.get("SCAI_SHARED_DATA"):
        return Path(os.environ["SCAI_SHARED_DATA"])
    here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
    return (here / "../../../shared/data").resolve()


path = shared_data() / "citeseq" / "eccite_pbmc_control_citefuse_500cells.h5ad"
sdata = napari_scai.io.read(path)
print(sdata)

# %% [markdown]
# The reader puts RNA (`X`) in the table `rna` and the ADT counts (`obsm['protein_expression']`)
# in the table `protein`, on the same cells. (The hashtag counts become `hto`; we leave them out.)
#
# ## What each modality becomes
# `prepare_modality` shows what the model reads. RNA: highly variable genes (chosen on the raw
# counts), log-normalised, scaled, PCA for the encoder, and the raw HVG counts for a
# negative-binomial decoder. Protein: CLR per cell; **isotype controls** (`IgG1`, `IgG2a`) are
# recognised by name, left out of the features and kept as a per-cell background level.

# %%
rna_in = prepare_modality(sdata.tables["rna"], name="rna", n_top_genes=2000, n_comps=30)
prot_in = prepare_modality(sdata.tables["protein"], name="protein")
print("RNA:", rna_in.features.shape, "encoder input;", rna_in.targets.shape, rna_in.likelihood)
print("protein:", prot_in.features.shape, "encoder input; excluded:", prot_in.excluded)
print("isotype background, first cells:", np.round(prot_in.background[:5], 2))

# %% [markdown]
# ## Integrate
# Results go into the first table: `obsm['X_scai_joint']`, `obs['scai_weight_rna']`,
# `obs['scai_weight_protein']` and, with `n_clusters`, `obs['scai_joint_cluster']` (colours in
# `uns['scai_joint_cluster_colors']`, the same ones napari uses).

# %%
tl.integrate(sdata, tables=("rna", "protein"), n_clusters=6, device="cpu", seed=0, n_steps=300)
rna = sdata.tables["rna"]
w_prot = rna.obs["scai_weight_protein"].to_numpy()
rna.obs[["scai_weight_rna", "scai_weight_protein", "scai_joint_cluster"]].head()

# %% [markdown]
# ## Which modality drives which cells?
# The mean weights per joint cluster tell which view defines each cluster: a cluster that the
# proteins separate well (e.g. by CD4/CD8) leans on the protein weight.

# %%
weights = rna.obs.groupby("scai_joint_cluster", observed=True)[
    ["scai_weight_rna", "scai_weight_protein"]
].mean()
weights.round(2)

# %%
pl.joint_umap(rna, seed=0)  # obsm['X_scai_joint_umap'], umap-learn
figures = Path(tempfile.gettempdir())  # where this run saves its figures
fig = pl.integration_weights(rna)
fig.savefig(figures / "04_integration_weights.png", dpi=80)
fig = pl.joint_clusters(rna)
fig.savefig(figures / "04_integration_clusters.png", dpi=80)

# %% [markdown]
# ## Does the joint space use the proteins?
# ECCITE has no manual labels, so we gate on the proteins themselves. CD4 and CD8 are clearly
# bimodal (CLR about 0.5 vs 4), giving CD4 and CD8 T cells, which RNA alone separates poorly
# (the genes are sparse in 10x data). How well does each space tell the two gates apart? The
# cross-validated accuracy of a 15-nearest-neighbour vote, in the joint space against the RNA PCs
# alone:

# %%
names = list(prot_in.feature_names)
cd4 = prot_in.targets[:, names.index("CD4")]
cd8 = prot_in.targets[:, names.index("CD8")]
gate = np.where((cd4 > 2) & (cd8 < 2), "CD4 T", np.where((cd8 > 2) & (cd4 < 2), "CD8 T", ""))
t = gate != ""
print({g: int((gate == g).sum()) for g in ("CD4 T", "CD8 T")})


def knn_accuracy(X: np.ndarray) -> float:
    return float(cross_val_score(KNeighborsClassifier(15), X[t], gate[t], cv=5).mean())


acc_joint = knn_accuracy(rna.obsm["X_scai_joint"])
acc_rna = knn_accuracy(rna_in.features)
print(f"CD4 vs CD8 T cells, 15-NN accuracy: joint {acc_joint:.3f}, RNA PCs alone {acc_rna:.3f}")
# label ASW (napari_scai.metrics; rescaled to [0, 1], 0.5 = no separation) of the joint clusters
print(
    "label ASW of the joint clusters:",
    round(metrics.label_asw(rna.obsm["X_scai_joint"], rna.obs["scai_joint_cluster"]), 3),
)
print("mean protein weight in the gated T cells:", round(float(w_prot[t].mean()), 3))

# %% [markdown]
# ## Checks (this tutorial is executed by the test suite)

# %%
w = rna.obs[["scai_weight_rna", "scai_weight_protein"]].to_numpy()
assert rna.obsm["X_scai_joint"].shape[0] == 500
assert np.allclose(w.sum(axis=1), 1.0, atol=1e-5) and (w > 0).all()
assert rna.obs["scai_joint_cluster"].nunique() == 6
assert prot_in.excluded == ["IgG1", "IgG2a"]
assert rna.obsm["X_scai_joint_umap"].shape == (500, 2)
assert acc_joint > 0.95  # 0.98-0.99 measured: the joint space separates CD4 from CD8 T cells
assert acc_joint > acc_rna + 0.05  # 0.85 with RNA alone: the proteins sharpen it
