"""Image–text route: PLIP / CONCH embeddings of spot tiles and zero-shot scores for text queries.

Typical use::

    cfg = load_config(ImageTextConfig, "imagetext")
    model = load_model(cfg)                       # PLIP from the local HF cache / a folder, or CONCH
    embed_tiles(model, adata)                     # obsm["image_text_emb_plip"] (n, 512)
    res = score_tiles(model, adata.obsm["image_text_emb_plip"], ["invasive cancer", "adipose tissue"])
    res.probabilities                                     # (n, 2) softmax over the queries
"""

from .config import ConchSettings, ImageTextConfig, PlipSettings, load_model
from .tile_zeroshot import TEXT_CACHE, TextEmbeddingCache, embed_queries_for_tiles, embed_tiles, score_tiles

__all__ = [
    "TEXT_CACHE",
    "ConchSettings",
    "ImageTextConfig",
    "PlipSettings",
    "TextEmbeddingCache",
    "embed_queries_for_tiles",
    "embed_tiles",
    "load_model",
    "score_tiles",
]
