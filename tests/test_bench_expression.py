"""``spotwhisper bench expression``: the shift sweep on a small synthetic slide, and the whole command on
a tiny input (real her2st sections, tiny models)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spotwhisper.bench.expression_bench import ExpressionBenchConfig
from spotwhisper.bench.shift import ShiftCondition, condition_view
from spotwhisper.config import load_config
from spotwhisper.encoders import create_encoder, extract_features
from spotwhisper.tiles import compute_tissue_mask, spot_layout
from tests.test_views import BASE_MPP, RUIFROK_HE, _slide_with_spots, _stained


def test_shipped_sweep_on_a_synthetic_slide(data_dir):
    """Every condition of configs/bench/expression.yaml on a synthetic 0.5 µm/px slide: the µm/px it
    claims, tiles of the same physical size on the same tissue, and features that move only when
    the image really changes for the model (stain_stats reads tiles at 3.5 µm/px)."""
    cfg = load_config(ExpressionBenchConfig, "bench/expression")
    names = [c.name for c in cfg.conditions]
    assert names[0] == "as scanned" and cfg.conditions[0].is_native
    assert {1.0, 2.0, 3.5, 5.0} <= {c.mpp for c in cfg.conditions}
    assert any(c.hed_sigma for c in cfg.conditions) and any(c.macenko_target for c in cfg.conditions)
    # rendered from H and E stain vectors (Beer–Lambert), so that Macenko finds stains to map
    _, slide, adata = _slide_with_spots(size=(1400, 1800), spacing_px=400.0, img=_stained(RUIFROK_HE, size=(1400, 1800)))
    base = spot_layout(adata, slide, 1.0)
    on_tissue = compute_tissue_mask(slide).box_fraction(base.boxes) > 0.5
    enc = create_encoder("stain_stats")
    feats = {}
    for cond in cfg.conditions:
        view, scale, what = condition_view(slide, 1.0, cond, "synthetic", data_dir, cfg.stain_donors)
        layout = spot_layout(adata, view, scale)
        assert layout.side_um == pytest.approx(base.side_um), cond.name
        assert view.mpp == pytest.approx(cond.mpp or BASE_MPP), cond.name
        frac = compute_tissue_mask(view).box_fraction(layout.boxes)
        assert (frac[on_tissue] > 0.4).all(), cond.name  # still on tissue
        out = extract_features(adata.copy(), enc, slide=view, scale=scale, use_cache=False, progress=False)
        feats[cond.name] = out.obsm["features_stain_stats"][on_tissue]
        assert what
    ref = feats["as scanned"]
    spread = ref.std(0) + 1e-3
    change = {k: float(np.median(np.abs(v - ref) / spread)) for k, v in feats.items()}
    for k in ("1 µm/px", "2 µm/px", "3.5 µm/px"):
        assert change[k] < 0.2, (k, change)  # read at 3.5 µm/px either way
    assert change["5 µm/px"] > change["3.5 µm/px"]  # coarser than the tiles: upsampled, different
    assert change["HED jitter 10 %"] > change["HED jitter 5 %"] > change["3.5 µm/px"]
    assert change["other section's stain (Macenko)"] > change["3.5 µm/px"]


def test_condition_view_is_deterministic_and_needs_a_donor():
    _, slide, _ = _slide_with_spots()
    cond = ShiftCondition("hed", hed_sigma=0.05, seed=3)
    a = condition_view(slide, 1.0, cond, "S1")[0].read_region((500, 400), 0, (60, 60))
    b = condition_view(slide, 1.0, cond, "S1")[0].read_region((500, 400), 0, (60, 60))
    c = condition_view(slide, 1.0, cond, "S2")[0].read_region((500, 400), 0, (60, 60))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c).max() > 0  # another section, another draw
    with pytest.raises(ValueError, match="no stain donor"):
        condition_view(slide, 1.0, ShiftCondition("m", macenko_target="auto"), "C2", stain_donors=["C2"])


TINY_EXPRESSION = """encoder: stain_stats
net: {pca_dim: 0, hidden: 16, rho_hidden: 16, bottleneck: 8}
train: {epochs: 2, ensemble: 2}
augment: {hed_copies: 1}
"""
TINY_ALIGNED = """encoder: stain_stats
net: {pca_dim: 0, hidden: 16, rho_hidden: 16, bottleneck: 8}
epochs: 2
ensemble: 1
augment: {hed_copies: 1}
"""


@pytest.mark.slow
def test_bench_expression_command_on_a_tiny_input(data_dir, tmp_path, monkeypatch, capsys):
    """Train on C2 only, test B4 (another patient) as scanned, at 3.5 µm/px and with a HED shift;
    leave-one-section-out over C2 and B4. Tables, files and the targets section are all there."""
    from spotwhisper.cli import main

    monkeypatch.setenv("SPOTWHISPER_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "expression.yaml").write_text(TINY_EXPRESSION)
    (tmp_path / "aligned.yaml").write_text(TINY_ALIGNED)
    out = tmp_path / "res" / "expression"
    (tmp_path / "bench.yaml").write_text(
        f"expression_config: {tmp_path / 'expression.yaml'}\naligned_config: {tmp_path / 'aligned.yaml'}\n"
        f"coarse_expression_config: {tmp_path / 'expression.yaml'}\ncoarse_aligned_config: {tmp_path / 'aligned.yaml'}\n"
        "coarse_above_mpp: 2.0\n"
        "train_sections: [C2]\ntest_sections: [B4]\nloso_sections: [C2, B4]\n"
        "conditions:\n  - {name: as scanned}\n  - {name: 3.5 µm/px, mpp: 3.5}\n  - {name: HED, hed_sigma: 0.1, seed: 1}\n"
        f"zero_shot_tasks: [celltypes]\nout: {out}\n")
    assert main(["bench", "expression", "--config", str(tmp_path / "bench.yaml"), "--data-dir", str(data_dir),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "## Cross-patient: B4" in printed and "### Targets (issue 13)" in printed and "Leave-one-section-out" in printed
    cross = pd.read_csv(f"{out}_cross_patient.csv")
    assert set(cross["condition"]) == {"as scanned", "3.5 µm/px", "HED"}
    assert set(cross["method"]) == {"deepspot", "ridge", "mean"}
    # as in the pipeline, the 3.5 µm/px condition is read by the coarse pair, the others by the default pair
    which = cross.drop_duplicates("condition").set_index("condition")["models"]
    assert which.to_dict() == {"as scanned": "default", "3.5 µm/px": "coarse", "HED": "default"}
    d = cross[cross["method"] == "deepspot"].set_index("condition")
    assert d[["cov50", "cov90"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (d["cov90"] > d["cov50"]).all()
    # stain_stats reads tiles at 3.5 µm/px: the 3.5 µm/px image gives (nearly) the as-scanned figures
    assert abs(d.loc["3.5 µm/px", "pearson_all"] - d.loc["as scanned", "pearson_all"]) < 0.02
    zs = pd.read_csv(f"{out}_zero_shot.csv")
    native = zs[zs["condition"] == "as scanned"]
    assert {"transcriptome", "image", "protein", "fused", "measured", "chance"} <= set(native["route"])
    assert set(zs[zs["condition"] == "HED"]["route"]) == {"transcriptome", "image", "protein", "fused", "marker_inferred"}
    assert native["auroc"].between(0, 1).all()
    loso = pd.read_csv(f"{out}_loso.csv")
    assert set(loso["section"]) == {"C2", "B4"}
    blob = json.loads(Path(f"{out}.json").read_text())
    from spotwhisper.bench.expression_report import cross_patient_lead

    lead = cross_patient_lead(f"{out}.json", "stain_stats")
    assert lead.startswith("## Cross-patient figures") and "| B4 | as scanned |" in lead and "C2 only" in lead
    with pytest.raises(ValueError, match="no benchmarked model reads `efficientnet_lite0`"):
        cross_patient_lead(f"{out}.json", "efficientnet_lite0")
    assert blob["info"]["train_sections"] == ["C2"] and "B" not in blob["info"]["text_model_train_patients"]
    # a second run reuses the cached models and LOSO table
    assert main(["bench", "expression", "--config", str(tmp_path / "bench.yaml"), "--data-dir", str(data_dir),
                 "--no-progress"]) == 0
    assert json.loads(Path(f"{out}.json").read_text())["info"]["seconds"]["loso"] < 5


def test_a_coarse_pair_needs_both_recipes(data_dir):
    from spotwhisper.bench.expression_bench import cross_patient_models

    cfg = ExpressionBenchConfig(coarse_expression_config="expression_coarse")  # aligned recipe missing
    with pytest.raises(ValueError, match="go together"):
        cross_patient_models(data_dir, cfg, progress=False)
