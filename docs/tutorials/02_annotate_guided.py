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
# # Annotate regions, then let the annotation guide the domains
#
# A pathologist outlines a few regions they are sure of; napari-scai turns the outlines into
# per-spot labels and uses them to guide the spatial domains, which are then compared with
# the full manual annotation.
#
# **Where the outlines come from.** In practice you draw them in napari (see *Drawing in
# napari* below). So that this notebook runs unattended, it stands in for the annotator by
# painting two small strokes inside each manual cortical layer (L1-L6 and white matter), with the same
# code a drawing would go through (`scai.tl.annotate_from_shapes`).
#
# **Fast settings**: one model, 1000 genes, 5 mixture restarts
# (`n_models=1, n_top_genes=1000, n_init=5`).

# %%
import os
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm, without ipywidgets

import numpy as np
import shapely
from spatialdata.models import ShapesModel

import napari_scai as scai

OUT = Path(os.environ.get("SCAI_TUTORIAL_OUT", "tutorial_output"))
OUT.mkdir(parents=True, exist_ok=True)

sdata = scai.datasets.dlpfc_151673()
rna = sdata.tables["rna"]

# %% [markdown]
# ## Paint a few strokes per region
#
# An outline is a polygon in full-resolution pixels (x, y), the spots' own coordinates.
# Here: the union of discs around the layer's spots, holes filled, simplified, as a hand
# would trace it.

# %%
xy = np.asarray(rna.obsm["spatial"], dtype=float)
pitch = np.median(np.sort(np.linalg.norm(xy[:200, None] - xy[None], axis=2), axis=1)[:, 1])


def outline(cls: str) -> shapely.Polygon:
    """The largest outline around the spots of manual layer ``cls``."""
    spots = xy[(rna.obs["layer_manual"] == cls).to_numpy()]
    union = shapely.union_all(shapely.buffer(shapely.points(spots), 0.6 * pitch))
    largest = max(shapely.get_parts(union), key=lambda p: p.area)
    return shapely.Polygon(largest.exterior).simplify(pitch / 4)


# two disc-shaped strokes per layer, 1.5 spot spacings across, centred on random spots of
# the layer and clipped to its outline (a hand stays inside the region it paints)
rng = np.random.default_rng(0)
classes = [str(c) for c in rna.obs["layer_manual"].cat.categories]
polygons, stroke_classes = [], []
for cls in classes:
    inside = outline(cls)
    spots = xy[(rna.obs["layer_manual"] == cls).to_numpy()]
    for centre in spots[rng.choice(len(spots), 2, replace=False)]:
        stroke = shapely.Point(centre).buffer(1.5 * pitch).intersection(inside)
        if isinstance(stroke, shapely.Polygon) and not stroke.is_empty:
            polygons.append(stroke)
            stroke_classes.append(cls)
palette = dict(zip(classes, rna.uns["layer_manual_colors"], strict=False))

# %% [markdown]
# Spots whose centre lies inside an outline take its class in `obs['scai_annotation']`; the
# outlines themselves go into the SpatialData as the `scai_annotations` shapes element, where
# the Annotate dock keeps what is drawn in napari.

# %%
scai.tl.annotate_from_shapes(
    sdata, shapes=polygons, classes=stroke_classes, colors=palette
)
gdf = scai.tl.annotations_to_geodataframe(
    polygons, classes=stroke_classes, colors=palette, author="tutorial"
)
sdata.shapes["scai_annotations"] = ShapesModel.parse(gdf)
rna.obs["scai_annotation"].value_counts(dropna=False)

# %%
ax = scai.pl.annotations(sdata, save=OUT / "02_annotations.png")

# %% [markdown]
# ## Drawing in napari instead
#
# With a Qt event loop in the notebook, open the same `sdata` in napari, draw in the
# *Annotate* dock, and come back: the labels are in `obs` already (and in the store, for data
# read from one). Not run here, since it needs a screen:
#
# ```python
# %gui qt
# viewer = scai.viewer.show(sdata, color_by="layer_manual")
# # ... draw polygons in the "... annotations" layer, pick classes in the Annotate dock ...
# rna.obs["scai_annotation"].value_counts()
# ```

# %% [markdown]
# ## Guided spatial domains
#
# `annotation_key=` makes the annotated spots anchor the domains: each annotated class is
# a domain, and every spot gets one of the painted classes, with a calibrated confidence.

# %%
scai.tl.spatial_domains(
    sdata,
    n_domains=7,
    annotation_key="scai_annotation",
    n_models=1,
    n_top_genes=1000,
    n_init=5,
    seed=0,
)
ax = scai.pl.domains(sdata, save=OUT / "02_guided_domains.png")

# %% [markdown]
# ## Compare with the full manual annotation

# %%
report = scai.tl.compare(sdata, key_pred="scai_domain", key_ref="layer_manual")
report

# %%
fig = scai.pl.compare(sdata, report=report, save=OUT / "02_compare.png")

# %% [markdown]
# ## Checks
#
# The annotated spots should mostly land in the domain matched to their class, and the
# whole section should agree with the manual layers above a sanity floor (0.35, fast
# settings).

# %%
ARI_FLOOR = 0.35
annotated = rna.obs["scai_annotation"].notna().to_numpy()
assert 0 < annotated.sum() < rna.n_obs
matched = rna.obs["scai_domain"].astype(object).map(report.matching)
agree = (matched[annotated] == rna.obs["scai_annotation"][annotated].astype(object)).mean()
assert agree > 0.8, f"only {agree:.1%} of the annotated spots are in their class's domain"
assert report.ari > ARI_FLOOR, f"ARI {report.ari:.3f} is under the floor {ARI_FLOOR}"
for key in ("scai_annotation", "scai_domain", "scai_domain_confidence"):
    assert key in rna.obs, key
for name in ("annotations", "guided_domains", "compare"):
    assert (OUT / f"02_{name}.png").stat().st_size > 10_000, name
print(f"ARI {report.ari:.3f} (floor {ARI_FLOOR}); annotated spots in their domain: {agree:.1%}")
