"""A slide from another lab, tissue and technology (ccrcc: kidney cancer Visium, H&E only): the pipeline
says how familiar it is, a learned concept that misses the threshold gets low-confidence candidates
where it is, a concept the models never learned comes back empty, and the foreign-slide benchmarks
read the H&E-only Space Ranger folder."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from spotwhisper import keys
from spotwhisper.expression import familiarity
from spotwhisper.expression.familiarity import FamiliarityConfig, FeatureReference, slide_familiarity

TLS = "tertiary lymphoid structures"


@pytest.fixture(scope="session")
def ccrcc_dir(data_dir):
    path = data_dir / "ccrcc"
    if not (path / "a_1" / "spatial").is_dir():
        pytest.skip(f"no ccrcc sections in {data_dir}")
    return path


@pytest.fixture(scope="session")
def models():
    from spotwhisper.pipeline import Models

    return Models.load()


@pytest.fixture(scope="session")
def a1(ccrcc_dir, models):
    """Section a_1 through the whole pipeline, as a user's H&E-only Space Ranger folder."""
    from spotwhisper.io.inputs import load_input
    from spotwhisper.pipeline import process_slide

    inp = load_input(ccrcc_dir / "a_1")
    return process_slide(inp, models, progress=False)


def _tls(adata, ccrcc_dir) -> np.ndarray:
    lab = pd.read_csv(ccrcc_dir / "a_1" / "labels.csv", index_col=0)
    values = lab.reindex(adata.obs["barcode"].to_numpy())["TLS"].fillna("").astype(str)
    return np.isin(values, ["TLS", "T_agg"])


def test_reference_distance_is_one_for_training_like_features_and_grows_with_a_shift(monkeypatch):
    rng = np.random.default_rng(0)
    cov = rng.normal(size=(12, 12))
    sections = {f"s{i}": rng.normal(size=(300, 12)) @ cov + rng.normal(scale=0.1, size=12) for i in range(4)}
    ref = FeatureReference.fit("enc", sections, FamiliarityConfig())
    assert 0.8 < ref.reference_median < 1.3
    new = rng.normal(size=(200, 12)) @ cov
    same = slide_familiarity(new, ref)
    shifted = slide_familiarity(new + 3 * new.std(0), ref)  # a whole-slide shift of three standard deviations
    assert same["level"] == "familiar" and same["distance_ratio"] < 1.5
    assert shifted["level"] != "familiar" and shifted["distance_ratio"] > 2 * same["distance_ratio"]
    assert "less certain" in shifted["sentence"]
    whole = ref.distance(new)
    monkeypatch.setattr(familiarity, "DISTANCE_CHUNK", 7)  # a whole slide is measured chunk by chunk: same distances
    np.testing.assert_allclose(ref.distance(new), whole, rtol=1e-12)


def test_shipped_reference_tells_a_restained_section_from_itself(c2):
    """C2 as the coarse models read it (in their training data) is familiar; the same spots under a strong
    HED stain shift are not."""
    from spotwhisper.encoders import create_encoder, extract_features
    from spotwhisper.encoders.features import feature_key
    from spotwhisper.expression.pretrained import COARSE_MODEL_DIR, ExpressionModel
    from spotwhisper.io import open_source_slide
    from spotwhisper.tiles.views import HedShift, view_of

    model = ExpressionModel.from_pretrained(COARSE_MODEL_DIR)
    assert model.familiarity is not None
    slide, scale = open_source_slide(c2)
    enc = create_encoder(model.encoder)
    idx = np.arange(0, c2.n_obs, 3)

    def figure(s, sc):
        f = extract_features(c2, enc, slide=s, scale=sc, indices=idx, layout_cfg=model.tile_config(), progress=False)
        return slide_familiarity(np.asarray(f.obsm[feature_key(model.encoder)]), model.familiarity)

    native = figure(slide, scale)
    view, vscale = view_of(slide, scale, None, HedShift((1.3, 0.75, 1.0), (0.03, -0.02, 0.0)))
    shifted = figure(view, vscale)
    assert native["level"] == "familiar"
    assert shifted["distance_ratio"] > 1.5 * native["distance_ratio"] and shifted["level"] != "familiar"


def test_foreign_slide_says_how_sure_it_is(a1):
    fam = a1.uns[keys.FAMILIARITY]
    assert fam["level"] in ("unusual", "foreign") and "less certain" in fam["sentence"]
    assert fam["mpp"] > fam["model_mpp"] and "coarser" in fam["resolution_note"]


def test_present_concept_gets_candidates_where_it_is_and_absent_ones_stay_empty(a1, ccrcc_dir, models):
    from spotwhisper.search.engine import SearchEngine

    engine = SearchEngine({"a_1": a1}, text_model=models.text)
    y = _tls(a1, ccrcc_dir)
    hits = engine.search(TLS).slides[0]
    assert hits.confidence == "low" and hits.candidates
    inside = np.zeros(a1.n_obs, dtype=bool)
    for r in hits.candidates:
        inside[np.asarray(r.spots)] = True
    assert y[inside].mean() >= 2 * y.mean()  # candidates where the TLS are, not anywhere
    text = engine.search(TLS).summary()
    assert "low-confidence candidates" in text and "less certain" in text
    for query in ("hepatocytes", "purple elephant on a bicycle"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = engine.search(query)
        assert not res.slides[0].regions and not res.slides[0].candidates
    assert any("names no concept the models learned" in n for n in engine.search("hepatocytes").notes)
    # the same slide, were it familiar: a learned concept below the threshold is a plain "nothing here"
    familiar = a1.copy()
    familiar.uns[keys.FAMILIARITY] = {**fam_of(a1), "level": "familiar"}
    calm = SearchEngine({"a_1": familiar}, text_model=models.text).search(TLS).slides[0]
    assert not calm.candidates and calm.confidence == "calibrated" and calm.specificity is None


def test_candidates_are_tested_against_the_other_learned_concepts(a1, ccrcc_dir, models):
    """On a_1 the TLS candidates stand out for TLS at least as much as for any other learned concept, are
    explained (genes and proteins of the candidate areas) and name the concepts the models cannot tell
    apart; every learned query's candidates obey the rule, and a concept whose best-ranked areas stand out
    more for others ("stromal cells" here) gets none, with the sentence that says why."""
    from spotwhisper.search.engine import SearchEngine

    engine = SearchEngine({"a_1": a1}, text_model=models.text)
    margin = engine.cfg.candidates.rival_margin
    res = engine.search(TLS)
    hits = res.slides[0]
    spec = hits.specificity
    assert hits.candidates and spec is not None and spec.kept
    assert spec.best_rival is None or spec.query >= spec.best_rival[1] - margin
    assert not {"B cells", "T cells", "immune infiltrate"} & {n for n, _ in spec.rivals}  # its parts are not rivals
    assert hits.explanation is not None and len(hits.explanation.genes)
    assert spec.sentence(TLS) in hits.no_region_reason(res.threshold, TLS)
    dropped = []
    for query in ("breast glands", "stromal cells", "connective tissue", "invasive cancer", "B cells"):
        h = engine.search(query).slides[0]
        if h.regions:
            continue
        assert h.specificity is not None
        assert bool(h.candidates) == h.specificity.kept
        if not h.specificity.kept:
            dropped.append(query)
            assert "none is shown" in h.no_region_reason(res.threshold, query)
    assert "stromal cells" in dropped
    # regions found at the threshold on this unfamiliar slide are kept, and say which concepts stand out as much
    res = engine.search("plasma cells")
    h = res.slides[0]
    assert h.regions and h.specificity is not None and h.specificity.areas == "regions"
    assert h.specificity.sentence("plasma cells") in res.summary()


def fam_of(adata) -> dict:
    return dict(adata.uns[keys.FAMILIARITY])


def test_foreign_bench_reads_the_he_only_folder(a1, ccrcc_dir, models, tmp_path):
    from spotwhisper.bench.foreign import ForeignBenchConfig, one_section_config, run_foreign, write_foreign_report

    base = ForeignBenchConfig(absent=["hepatocytes", "cardiac muscle"], absent_learned=["breast glands"],
                              nonsense=["asdfgh"])
    cfg = one_section_config(str(ccrcc_dir / "a_1"), str(ccrcc_dir / "a_1" / "labels.csv"), "TLS",
                             [f"TLS={TLS}", f"T_agg={TLS}"], base=base)
    rows = run_foreign(cfg, None, models=models, progress=False, slides={"a_1": a1})
    present = rows[rows["kind"] == "present"].iloc[0]
    assert present["query"] == TLS and present["positives"] == int(_tls(a1, ccrcc_dir).sum())
    assert present["auroc_fused"] > 0.75 and present["candidate_spots"] > 0
    assert not rows[rows["kind"].isin(["absent", "nonsense"])]["found"].any()
    md, js = write_foreign_report(rows, tmp_path / "foreign", "test", -1.0)
    assert "| a_1 |" in md.read_text() and json.loads(js.read_text())["rows"]


def test_bench_cli_refuses_a_half_given_foreign_folder(ccrcc_dir, capsys):
    from spotwhisper.cli import main

    assert main(["bench", "relevance", "--visium", str(ccrcc_dir / "a_1")]) != 0
    assert "--class LABEL=QUERY" in capsys.readouterr().err


def test_zero_shot_class_map_on_an_he_only_folder(ccrcc_dir):
    from spotwhisper.bench.tasks import visium_sample

    sample, task = visium_sample(ccrcc_dir / "b_1", ccrcc_dir / "b_1" / "labels.csv", label_column="TLS_2_cat",
                                 queries={"TLS": TLS})
    assert sample.adata.n_vars == 0 and sample.has_image  # no counts: scored by the H&E routes
    cls = {c.name: c for c in task.classes}
    assert cls[TLS].match == ["TLS"] and "NO_TLS" in cls
    assert (sample.classes == TLS).sum() == 153
    with pytest.raises(ValueError, match="no spot carries"):
        visium_sample(ccrcc_dir / "b_1", ccrcc_dir / "b_1" / "labels.csv", label_column="TLS_2_cat",
                      queries={"TLS_typo": TLS})


def test_a_space_ranger_folder_is_a_collection_input(ccrcc_dir):
    from spotwhisper.collection.staging import spec_identity

    first = spec_identity(str(ccrcc_dir / "a_1"), None)
    assert first.startswith("spaceranger:") and first == spec_identity(str(ccrcc_dir / "a_1"), None)
    assert first != spec_identity(str(ccrcc_dir / "b_1"), None)


def test_candidates_reach_the_notebook_the_cli_and_the_ui(a1, models, tmp_path, capsys):
    """On the foreign slide the TLS answer's candidates, confidence and rival test are written by sw.tl.search
    (and survive .h5ad), reported by `spotwhisper search --json` with a GeoJSON of the candidates, and outlined
    in the UI's viewer with a message that says how sure it is."""
    import anndata as ad

    import spotwhisper as sw
    from spotwhisper.cli import main
    from spotwhisper.collection import index_slides
    from spotwhisper.search.engine import SearchEngine
    from spotwhisper.ui import handlers as h
    from spotwhisper.ui.config import load_ui_config
    from spotwhisper.ui.screen import viewer_payload
    from spotwhisper.ui.viewer import ViewerRegistry

    adata = a1.copy()
    engine = SearchEngine({"a_1": adata}, text_model=models.text)
    sw.tl.search(adata, TLS, engine=engine)
    info = adata.uns["search"]
    assert info["confidence"] == "low" and not info["found"] and len(info["candidates"])
    assert (adata.obs["search_candidate"] > 0).sum() == info["candidates"]["spots"].sum()
    assert info["specificity"]["kept"] and "low-confidence candidates" in info["message"]
    adata.write_h5ad(tmp_path / "a1.h5ad")
    back = ad.read_h5ad(tmp_path / "a1.h5ad")
    assert back.uns["search"]["specificity"]["areas"] == "candidates"

    index_dir = tmp_path / "indexes"
    index_slides([a1], "kidney", index_dir=index_dir)
    out = tmp_path / "out"
    assert main(["search", TLS, "--collection", "kidney", "--index-dir", str(index_dir), "--json",
                 "--out-dir", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)["slides"][0]
    assert report["confidence"] == "low" and report["candidates"] and report["specificity"]["kept"]
    geo = json.loads((out / "a_1_tertiary_lymphoid_structures.geojson").read_text())
    assert len(geo["features"]) == len(report["candidates"]) and "low-confidence" in json.dumps(geo)

    cfg = load_ui_config()
    _, view = h.run_search(engine, h.new_view(engine, cfg), TLS, cfg)
    pay = viewer_payload(ViewerRegistry(), "s1", None, engine, view)
    hits = view.hits()
    assert len(pay["regions"]) == len(hits.candidates) and pay["layer"] is not None
    assert "low-confidence candidates" in pay["message"] and hits.specificity.sentence(TLS) in pay["message"]
