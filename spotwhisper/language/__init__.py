"""Stage 6 — the contrastive transcriptome–text space (CellWhisperer idea, per spot).

Typical use::

    from spotwhisper.language import TextExpressionModel, score, embed

    model = TextExpressionModel.from_pretrained()          # shipped default (her2st, patient C held out)
    res = score(adata, ["adipose tissue", "invasive cancer", "immune infiltrate"], model)
    res.probabilities                                       # (n_spots, 3), softmax over the queries
    embed(adata, model)                                     # obsm["text_emb"] for FAISS search

``adata`` holds measured counts, or inferred log1p expression of the gene panel in
``layers["log1p"]`` / ``X``; genes are matched by symbol. Train with ``spotwhisper train text``.
"""

from .captions import Caption, caption_spots, caption_table
from .config import CaptionConfig, ModelConfig, TextConfig, TextEncoderConfig
from .model import DEFAULT_MODEL_DIR, TextExpressionModel, clip_loss
from .text_encoder import TextEncoder, UnreadableQueryWarning
from .transcriptome_zeroshot import default_model, embed, embed_queries_for_spots, score

__all__ = [
    "DEFAULT_MODEL_DIR",
    "Caption",
    "CaptionConfig",
    "ModelConfig",
    "TextConfig",
    "TextEncoder",
    "TextEncoderConfig",
    "TextExpressionModel",
    "UnreadableQueryWarning",
    "caption_spots",
    "caption_table",
    "clip_loss",
    "default_model",
    "embed",
    "embed_queries_for_spots",
    "score",
]
