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
# # SpotWhisper from Python
#
# From a Space Ranger folder to a search, a plot, a comparison, a search by example and an export —
# the scanpy way: functions take an AnnData and write documented keys (`spotwhisper.keys`).
#
# The slide is `ccrcc/a_1` of the shared data: a clear-cell renal cell carcinoma section (10x Visium,
# Meylan et al., *Immunity* 2022) with only the H&E and the spot positions — what a user with a slide
# has. It is a foreign slide for SpotWhisper's models (another tissue, lab and scanner than her2st,
# and a 4.4 µm/px hires image), so the coarse image models read it. The authors marked 27 T-cell
# aggregates and one tertiary lymphoid structure; we use them to see how the answers hold up.
# Set `SPOTWHISPER_DATA_DIR` to the folder holding `ccrcc/` (else `../shared/data` is used).

# %%
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

import spotwhisper as sw

DATA = Path(os.environ.get("SPOTWHISPER_DATA_DIR", "../shared/data"))
OUT = Path(tempfile.mkdtemp(prefix="spotwhisper-tutorial-"))
folder = DATA / "ccrcc" / "a_1"

# %% [markdown]
# ## 1. Read
# `sw.read` takes a her2st section id, a Space Ranger folder (with or without counts), an `.h5ad`,
# an image with or without a CSV of spot centres, or a SpatialData object.

# %%
adata = sw.read(folder)
adata

# %% [markdown]
# ## 2. Infer
# H&E → image features → inferred expression (with uncertainty) → 50 virtual proteins →
# transcriptome–text and image embeddings → the pooled image vector for search by example.

# %%
sw.tl.infer(adata, progress=False)
print(adata.uns["pipeline"])  # which image models read it: "coarse" at this resolution
adata

# %% [markdown]
# ## 3. Search with free text
# Relevance per route and fused in `obs["search_*"]` (log-odds against reference descriptions;
# a spot matches at ≥ −1), regions in `obs["search_region"]`, the answer in `uns["search"]`.
# `help(sw.tl.search)` lists every key.

# %%
result = sw.tl.search(adata, "tertiary lymphoid structures")
print(result.summary())
adata.obs.filter(like="search_").describe().loc[["mean", "max"]]

# %%
labels = pd.read_csv(folder / "labels.csv").set_index("Barcode")["TLS"]
aggregate = labels.reindex(adata.obs["barcode"]).isin(["TLS", "T_agg"]).to_numpy()
from sklearn.metrics import roc_auc_score

print(f"{aggregate.sum()} annotated aggregate spots; AUROC of the text query: "
      f"{roc_auc_score(aggregate, adata.obs['search_fused']):.3f}")

# %% [markdown]
# ## 4. Plot
# `sw.pl.search` draws what the CLI writes as a PNG; scanpy and squidpy read the same keys.

# %%
ax = sw.pl.search(adata)

# %%
import scanpy as sc

sc.pl.spatial(adata, color="search_fused", show=False)

# %%
fig = sw.pl.proteins(adata, ["CD3e", "CD20", "PanCK", "CD31"])

# %% [markdown]
# ## 5. Compare two queries
# Where A, B or both match, and the genes and proteins that separate them. On this foreign slide no
# query reaches the search threshold (−1) — the answer says so rather than drawing a map — so the
# comparison is made at a lower threshold, given explicitly.

# %%
comparison = sw.tl.compare(adata, "lymphocytes", "clear cell renal cell carcinoma", threshold=-2.5)
print(comparison.summary())
adata.obs["compare"].value_counts()

# %% [markdown]
# ## 6. Search by example
# Three spots the pathologist marked as a T-cell aggregate are the query: every spot is scored by how
# alike it is to them (pooled image vector, inferred transcriptome, aligned image embedding),
# calibrated on this slide so that spots as alike as the example's own sit at the threshold.

# %%
marked = np.flatnonzero(aggregate)
xy = adata.obsm["spatial"]
seed = marked[0]
example = marked[np.argsort(np.linalg.norm(xy[marked] - xy[seed], axis=1))[:3]]
like = sw.tl.search(adata, like=example, key_added="like")
print(like.summary())
rest = np.setdiff1d(np.arange(adata.n_obs), example)
print(f"AUROC of the 3-spot example for the other aggregate spots: "
      f"{roc_auc_score(aggregate[rest], adata.obs['like_fused'].to_numpy()[rest]):.3f}")

# %%
ax = sw.pl.search(adata, "like")

# %% [markdown]
# ## 7. Export and a collection
# The AnnData carries everything (`.h5ad`); regions go to QuPath as GeoJSON. A collection holds many
# slides in FAISS indexes — the same objects `spotwhisper index build` and `spotwhisper search` use.

# %%
from spotwhisper.search.export import write_geojson

adata.write_h5ad(OUT / "a_1_searched.h5ad")
hits = like.slides[0]
hits.spot_table().to_csv(OUT / "a_1_like.csv", index=False)
write_geojson(hits.regions, like.query.text, OUT / "a_1_like.geojson", slide="a_1")
sorted(p.name for p in OUT.iterdir())

# %%
collection = sw.Collection.build("tutorial", [adata], OUT / "indexes")
collection.nearest("a_1", list(adata.obs_names[example]), k=5)

# %%
found = collection.search("tertiary lymphoid structures")
print(found.summary())
