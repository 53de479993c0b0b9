"""Each gene's contribution to a spot's similarity with a query (gradient × input).

For the transcriptome route, similarity = cos(f(x), q) where ``x`` is the standardised log1p
gene vector; ``∂sim/∂x_g · x_g`` summed over the hit spots ranks the genes that drive the match.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import torch

from ..language import TextExpressionModel
from ..language.expression_encoder import expression_input


def gene_attributions(model: TextExpressionModel, adata: ad.AnnData, spots: np.ndarray, query: np.ndarray, top: int = 10,
                      inputs: np.ndarray | None = None) -> pd.DataFrame:
    """Top genes by mean gradient × input of ``cos(embedding, query)`` over ``spots`` (indices).

    ``adata`` holds (inferred or measured) expression; ``query`` is a ``(D,)`` query embedding;
    ``inputs`` may pass the model's standardised input matrix of ``adata`` when already computed.
    Returns columns ``name``, ``contribution`` (similarity units), sorted, strongest first.
    """
    x_all = inputs if inputs is not None else expression_input(adata, model.genes, model.config.input)
    x = torch.tensor(x_all[np.asarray(spots)], requires_grad=True)
    was = model.training
    model.eval()
    with torch.enable_grad():
        sim = (model.project_expression(x) @ torch.as_tensor(query, dtype=torch.float32)).sum()
        (grad,) = torch.autograd.grad(sim, x)
    model.train(was)
    contrib = (grad * x).detach().numpy().mean(0)
    table = pd.DataFrame({"name": model.genes, "contribution": contrib})
    return table.sort_values("contribution", ascending=False, ignore_index=True).head(top)
