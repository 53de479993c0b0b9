"""``spotwhisper train expression|panel`` and ``spotwhisper predict expression``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from .options import SLIDE_KINDS, add_config, add_data_dir, add_mpp



def register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "expression",
        help="train the H&E → expression model (DeepSpot-style ensemble)",
        description="Extract image features of the training sections (cached), evaluate by leave-one-"
        "section-out against ridge and mean baselines (--evaluate), then train on every section and "
        "save the model folder (weights, genes, config, model card).",
    )
    add_config(p, "expression", "training settings")
    p.add_argument("--out", type=Path, default=None, help="model folder (default: <user data folder>/models/<name in the config>, printed; the shipped ones are "
                   "spotwhisper/pretrained/<name>)")
    p.add_argument("--evaluate", action="store_true", help="also run leave-one-section-out evaluation")
    p.add_argument("--cross-patient", type=Path, default=None, metavar="JSON",
                   help="a `spotwhisper bench expression` result (benchmarks/results/expression.json) whose figures "
                   "for this recipe open the model card")
    p.add_argument("--foreign", type=Path, default=None, metavar="JSON",
                   help="a `spotwhisper bench relevance --foreign` result (benchmarks/results/foreign.json) whose "
                   "figures open the model card before the cross-patient ones")
    p.add_argument("--results", type=Path, default=None,
                   help="where --evaluate writes <results>.csv/.md (default <user data folder>/results/expression_train_loso)")
    p.add_argument("--no-progress", action="store_true")
    add_data_dir(p)
    p.set_defaults(func=cmd_train)

    fam = sub.add_parser(
        "familiarity",
        help="fit an expression model's familiarity reference (how far a slide's image features lie from its training slides')",
        description="Read the image features of the model's training sections (from the feature cache or the "
        "images, with the model's own tile geometry), fit the reference distribution and write familiarity.npz "
        "into the model folder. `spotwhisper train expression` does this itself; this command adds it to an "
        "existing model. Every slide the pipeline then reads gets uns['familiarity'] and one sentence saying "
        "how sure its answers are.",
    )
    fam.add_argument("--model", default="expression-default",
                     help="model folder, or the name of a shipped model (expression-default, expression-coarse)")
    fam.add_argument("--sections", nargs="*", default=None, help="training sections (default: the model's own)")
    fam.add_argument("--out", type=Path, default=None,
                     help="model folder to write (a copy of --model with the reference; default: --model itself when it is "
                     "your own folder, <user data>/models/<name> for a shipped model, which is never changed in place)")
    fam.add_argument("--no-progress", action="store_true")
    add_data_dir(fam)
    fam.set_defaults(func=cmd_familiarity)

    panel = sub.add_parser(
        "panel",
        help="make the shared gene panel (HVGs + vocabulary and protein-proxy genes)",
        description="Batch-aware highly variable genes over the her2st sections plus every gene the "
        "vocabulary and the protein map name; written one gene per line.",
    )
    add_config(panel, "panel", "panel settings")
    panel.add_argument("--out", type=Path, default=None, help="panel file (default: <user data folder>/models/gene_panel.txt, "
                       "printed; the shipped one is spotwhisper/resources/gene_panel.txt)")
    add_data_dir(panel)
    panel.set_defaults(func=cmd_panel)


def register_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "expression",
        help="infer the spot transcriptome of a slide from its H&E",
        description="Predict log1p(CP10k) expression of the model's gene panel for every spot of SLIDE "
        "(a her2st section like C2, or an .h5ad with spots and an image), with aleatoric and epistemic "
        "variance in layers. Writes an .h5ad.",
    )
    p.add_argument("slide", help=SLIDE_KINDS.replace(", or image file", ""))
    p.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped model that holds at the slide's µm/px: expression-default, or expression-coarse above 2 µm/px)")
    p.add_argument("--out", type=Path, default=None, help="output .h5ad (default <slide>_expression.h5ad)")
    add_mpp(p)
    p.add_argument("--no-progress", action="store_true")
    add_data_dir(p)
    p.set_defaults(func=cmd_predict)


def cmd_train(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..expression.config import ExpressionConfig
    from ..expression.evaluate import summarize
    from ..expression.model_card import model_card, results_markdown
    from ..expression.workflow import train_expression
    from ..userdata import models_dir, results_dir

    cfg = load_config(ExpressionConfig, args.config)
    model, table = train_expression(args.data_dir, cfg, evaluate=args.evaluate, progress=not args.no_progress)
    console = Console()
    command = "spotwhisper train expression --config " + str(args.config) + (" --evaluate" if args.evaluate else "")
    if table is not None:
        results = args.results or results_dir() / "expression_train_loso"
        results.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(results.with_suffix(".csv"), index=False)
        md = results_markdown(table, summarize(table), command)
        results.with_suffix(".md").write_text(md)
        console.print(md)
        console.print(f"evaluation written to {results.with_suffix('.md')} and .csv")
    lead = ""
    if args.cross_patient is not None:
        from ..bench.expression_report import cross_patient_lead

        lead = cross_patient_lead(args.cross_patient, cfg.encoder)
        command += f" --cross-patient {args.cross_patient}"
    if args.foreign is not None:
        from ..bench.foreign import foreign_lead

        lead = foreign_lead(args.foreign) + ("\n\n" + lead if lead else "")
        command += f" --foreign {args.foreign}"
    out = model.save_pretrained(args.out or models_dir(cfg.name), card=model_card(model, table, command, lead))
    console.print(f"saved model to {out}")
    return 0


def cmd_familiarity(args: argparse.Namespace) -> int:
    from ..atomic import atomic_dir
    from ..expression.pretrained import DEFAULT_MODEL_DIR, ExpressionModel
    from ..expression.workflow import fit_familiarity

    from ..userdata import models_dir

    folder = Path(args.model)
    if not folder.is_dir() and (DEFAULT_MODEL_DIR.parent / args.model).is_dir():
        folder = DEFAULT_MODEL_DIR.parent / args.model
    model = ExpressionModel.from_pretrained(folder)
    shipped = folder.resolve().parent == DEFAULT_MODEL_DIR.parent.resolve()
    dest = args.out or (models_dir(folder.name) if shipped else folder)
    model.familiarity = fit_familiarity(args.data_dir, model, args.sections, progress=not args.no_progress)
    ref = model.familiarity
    if Path(dest).resolve() == folder.resolve():
        path = ref.save(folder)
    else:  # a whole model folder: the weights, genes and card of --model with the new reference
        import shutil

        with atomic_dir(Path(dest)) as tmp:
            for f in folder.iterdir():
                if f.is_file() and f.name != "familiarity.npz":
                    shutil.copy2(f, tmp / f.name)
            ref.save(tmp)
        path = Path(dest) / "familiarity.npz"
    shares = ", ".join(f"{k} {v:.0%}" for k, v in ref.heldout_share.items())
    Console().print(f"familiarity reference of {folder.name} ({model.encoder}, {len(ref.eigvals)} axes) → {path}\n"
                    f"held-out training sections within range: {shares}")
    return 0


def cmd_panel(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..genes import PanelConfig, build_gene_panel, save_panel
    from ..io import list_sections, read_her2st
    from ..prompts import load_vocabulary
    from ..proteins import load_protein_panel
    from ..userdata import models_dir

    cfg = load_config(PanelConfig, args.config)
    sections = cfg.sections or list_sections(args.data_dir)
    adatas = [read_her2st(args.data_dir, s, with_image=False) for s in sections]
    extra = [g for t in load_vocabulary().terms.values() for g in t.genes]
    extra += list(load_protein_panel().proxy_genes(with_aliases=True)) + cfg.extra_genes
    genes = build_gene_panel(adatas, cfg.n_top_genes, extra, min_extra_fraction=cfg.min_extra_fraction)
    header = (
        f"SpotWhisper gene panel: {len(genes)} genes\n{cfg.n_top_genes} batch-aware HVGs over her2st sections "
        f"{','.join(sections)} + vocabulary and protein-proxy genes detected in >= {cfg.min_extra_fraction:.0%} "
        f"of the sections\nmade by: spotwhisper train panel --config {args.config}"
    )
    out = save_panel(genes, args.out or models_dir("gene_panel.txt"), header=header)
    Console().print(f"{len(genes)} genes → {out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .. import keys
    from ..expression.pretrained import ExpressionModel
    from ..expression.workflow import with_features
    from ..io import write_h5ad
    from ..io.inputs import load_input
    from ..pipeline import expression_model_for

    inp = load_input(args.slide, args.data_dir, mpp=args.mpp)
    # the shipped models: the one that holds at the slide's µm/px (configs/pipeline.yaml coarse_above_mpp)
    model = ExpressionModel.from_pretrained(args.model) if args.model else expression_model_for(inp)
    if inp.adata is None:
        raise ValueError(f"{args.slide}: an image without spots; run `spotwhisper features extract --grid` first "
                         "and predict on the .h5ad it writes")
    adata = with_features(inp.adata, model.encoder, inp.slide, inp.scale, progress=not args.no_progress,
                          geometry=model.tile_config())
    out = model.predict(adata)
    path = write_h5ad(out, args.out or Path(f"{inp.name}_expression.h5ad"))
    Console().print(
        f"{out.n_obs} spots × {out.n_vars} genes predicted ({model.encoder}, {len(model.ensemble.members)} members) → {path}\n"
        f"mean epistemic variance {float(out.layers[keys.UNCERTAINTY_EPISTEMIC].mean()):.4f}, "
        f"aleatoric {float(out.layers[keys.UNCERTAINTY_ALEATORIC].mean()):.4f}"
    )
    print(json.dumps({"spots": out.n_obs, "genes": out.n_vars, "out": str(path)}))
    return 0
