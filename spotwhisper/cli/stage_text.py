"""``spotwhisper train text`` and ``spotwhisper predict text`` — the transcriptome–text model."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from ..atomic import atomic_file
from .options import add_config, add_data_dir


def register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "text",
        help="train the contrastive transcriptome–text model on her2st (split by patient)",
        description="Write captions from the her2st annotations, train the expression encoder and projection "
        "heads against a frozen sentence encoder (CLIP loss), evaluate zero-shot AUROC and recall@k on the "
        "held-out patients, and save the model folder with metrics.json and auroc.csv.",
    )
    add_config(p, "text", "training settings")
    p.add_argument("--out", type=Path, default=None,
                   help="model folder to write (default <user data folder>/models/text, printed)")
    p.add_argument("--cv", action="store_true", help="also run leave-one-patient-out cross-validation (one fold per patient of split.cv_patients: B-H)")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    add_data_dir(p)
    p.set_defaults(func=train_text)


def register_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "text",
        help="embed spots in the transcriptome–text space, or score them against text queries",
        description="INPUT is a her2st section id (C1), or an .h5ad with counts or log1p expression "
        "(measured or inferred). With --query: writes a CSV of per-spot probabilities over the queries. "
        "Without: writes INPUT with obsm['text_emb'] to --out (.h5ad).",
    )
    p.add_argument("input", help="her2st section id or .h5ad file")
    p.add_argument("--query", action="append", default=[], help="a text query; repeat for several")
    p.add_argument("--model", default=None, help="model folder (default: the shipped text-default)")
    p.add_argument("--out", type=Path, default=None, help="output .csv (with --query) or .h5ad")
    p.add_argument("--no-ensemble", action="store_true", help="embed queries as given, without templates/synonyms")
    add_data_dir(p)
    p.set_defaults(func=predict_text)


def train_text(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..datadir import resolve_data_dir
    from ..language.config import TextConfig
    from ..language.train import run_training

    cfg = load_config(TextConfig, args.config)
    if args.epochs is not None:
        cfg.train.epochs = args.epochs
    from ..userdata import models_dir

    out = run_training(cfg, resolve_data_dir(args.data_dir), args.out or models_dir("text"), cv=args.cv)
    console = Console()
    import pandas as pd

    for name in ("cv_auroc.csv", "auroc.csv"):
        if (out / name).exists():
            from ..language.evaluate import summarize

            console.print(f"[bold]{name}[/bold] (zero-shot AUROC, mean (SEM) over held-out sections)")
            console.print(summarize(pd.read_csv(out / name)).to_string())
    console.print(f"wrote {out}")
    return 0


def predict_text(args: argparse.Namespace) -> int:
    from ..io import write_h5ad
    from ..io.inputs import load_input
    from ..language.model import TextExpressionModel
    from ..language.transcriptome_zeroshot import embed, score

    adata = load_input(args.input, args.data_dir, require_image=False).adata
    model = TextExpressionModel.from_pretrained(args.model)
    console = Console()
    if args.query:
        res = score(adata, args.query, model, ensemble=not args.no_ensemble)
        frame = res.to_frame("probabilities")
        out = args.out or Path(f"{Path(args.input).stem}_text_scores.csv")
        with atomic_file(out) as tmp:
            frame.to_csv(tmp)
        best = frame.idxmax(axis=1).value_counts()
        console.print(f"{len(frame)} spots; most probable query per spot:\n{best.to_string()}\nwrote {out}")
        return 0
    embed(adata, model)
    out = args.out or Path(f"{Path(args.input).stem}_text_emb.h5ad")
    write_h5ad(adata, out)
    console.print(f"{adata.n_obs} spots embedded ({model.config.embed_dim}-d) → obsm['text_emb']; wrote {out}")
    return 0
