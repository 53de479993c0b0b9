"""``spotwhisper train imagetext`` — the aligned head that lets H&E be searched with text directly."""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

from rich.console import Console

from .options import add_config, add_data_dir



def register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "imagetext",
        help="train the aligned head: H&E features → the transcriptome-text space",
        description="Train a head that maps H&E features of a spot into the shared transcriptome-text space, "
        "distilled from the text model's embedding of the spot's measured transcriptome (paired spots of the "
        "sections with H&E). With --evaluate, each section is first embedded by a head trained on the others "
        "and compared with the measured embedding, next to the route through inferred expression.",
    )
    add_config(p, "aligned", "training settings")
    p.add_argument("--out", type=Path, default=None, help="model folder (default: <user data folder>/models/<name in the config>, printed; the shipped ones are "
                   "spotwhisper/pretrained/<name>)")
    p.add_argument("--evaluate", action="store_true", help="leave-one-section-out evaluation first")
    p.add_argument("--cross-patient", type=Path, default=None, metavar="JSON",
                   help="a `spotwhisper bench expression` result whose figures for this recipe open the model card")
    p.add_argument("--foreign", type=Path, default=None, metavar="JSON",
                   help="a `spotwhisper bench relevance --foreign` result whose figures open the model card first")
    p.add_argument("--no-progress", action="store_true")
    add_data_dir(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..expression.config import ExpressionConfig
    from ..expression.workflow import oof_expression
    from ..imagetext.aligned import AlignedConfig
    from ..imagetext.train import train_aligned
    from ..language import TextExpressionModel
    from ..userdata import models_dir, results_dir

    progress = not args.no_progress
    cfg = load_config(AlignedConfig, args.config)
    text = TextExpressionModel.from_pretrained()
    inferred = None
    if args.evaluate:
        oof = oof_expression(args.data_dir, load_config(ExpressionConfig, "expression"), progress)
        inferred = {s: text.encode_expression(a) for s, a in oof.items() if s in cfg.sections}
    model, table = train_aligned(args.data_dir, cfg, text, evaluate=args.evaluate, inferred=inferred, progress=progress)
    command = f"spotwhisper train imagetext --config {args.config}" + (" --evaluate" if args.evaluate else "")
    md = ""
    if table is not None:
        summary = table.drop(columns=["section"]).groupby("route").agg(["mean", "sem"])
        lines = ["| route | cosine to measured-expression embedding | image→measured recall@10 | chance |", "|---|---|---|---|"]
        for route, r in summary.iterrows():
            lines.append(f"| {route} | {r[('cosine_to_measured', 'mean')]:.3f} ({r[('cosine_to_measured', 'sem')]:.3f}) | "
                         f"{r[('recall@10', 'mean')]:.3f} ({r[('recall@10', 'sem')]:.3f}) | {r[('chance', 'mean')]:.3f} |")
        md = (f"Leave-one-section-out over {', '.join(cfg.sections)} (mean (SEM) over held-out sections). "
              f"Command: `{command}`\n\n" + "\n".join(lines) + "\n")
        results = results_dir() / "aligned_loso"
        results.parent.mkdir(parents=True, exist_ok=True)
        results.with_suffix(".md").write_text(md)
        table.to_csv(results.with_suffix(".csv"), index=False)
        Console().print(md + f"\nevaluation written to {results.with_suffix('.md')} and .csv")
    lead = ""
    if args.cross_patient is not None:
        from ..bench.expression_report import cross_patient_lead

        lead = cross_patient_lead(args.cross_patient, cfg.encoder, "aligned") + "\n\n## Model\n\n"
        command += f" --cross-patient {args.cross_patient}"
    if args.foreign is not None:
        from ..bench.foreign import foreign_lead

        lead = foreign_lead(args.foreign) + "\n\n" + (lead or "## Model\n\n")
        command += f" --foreign {args.foreign}"
    card = (
        "# SpotWhisper aligned image head (H&E → transcriptome-text space)\n\n" + lead +
        f"- Trained: {date.today().isoformat()} with `{command}`\n"
        f"- Data: her2st sections {', '.join(cfg.sections)} (paired H&E and measured expression; patient(s) "
        f"{', '.join(sorted({s[0] for s in cfg.sections}))}).\n"
        f"- Input: `{cfg.encoder}` features of the spot tile, its sub-tiles and neighbours; ensemble of {cfg.ensemble}.\n"
        "- Target: the shipped text model's embedding of each spot's measured transcriptome (the text model was "
        f"trained on patients {', '.join(map(str, text.meta.get('train_patients', []))) or '?'}); loss = InfoNCE + cosine distillation.\n"
        f"- Text model fingerprint: `{text.fingerprint()}` (loading refuses another text model).\n\n"
        "## Evaluation\n\n" + (md or "Not evaluated in this run (use --evaluate).\n")
    )
    out = model.save_pretrained(args.out or models_dir(cfg.name), card=card)
    Console().print(f"saved aligned head to {out}")
    return 0
