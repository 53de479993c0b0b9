"""Benchmark maths and plumbing on hand-made inputs with known answers (no data, no models)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from spotwhisper.bench import BenchConfig, RouteContext, RouteUnavailable, load_task, route_scores, run_task
from spotwhisper.bench.config import ClassSpec, LabelSpec, ScopeSpec, TaskConfig
from spotwhisper.bench.metrics import OVERALL, bootstrap_intervals, mean_sem, summarize_long, weighted_auroc
from spotwhisper.bench.report import to_markdown, write_report
from spotwhisper.bench.registry import ROUTES, Route
from spotwhisper.bench.tasks import assign_classes, make_sample, raw_labels, task_vocabulary
from spotwhisper.config import ConfigError
from spotwhisper.prompts import load_vocabulary


# ------------------------------------------------------------------------------------ metrics
def test_weighted_auroc_matches_sklearn_with_ties_and_multiplicities():
    rng = np.random.default_rng(0)
    s = np.round(rng.normal(size=60), 1)  # many ties
    y = rng.random(60) < 0.4
    assert weighted_auroc(s, y, np.ones((1, 60)))[0] == pytest.approx(roc_auc_score(y, s))
    w = rng.integers(0, 4, size=(3, 60))
    for b in range(3):
        rep = np.repeat(np.arange(60), w[b])
        assert weighted_auroc(s, y, w[b : b + 1])[0] == pytest.approx(roc_auc_score(y[rep], s[rep]))
    # a replicate without positives is undefined
    assert np.isnan(weighted_auroc(s, y, (~y)[None, :].astype(float))[0])


def test_mean_sem_known_values():
    assert mean_sem([0.6, 0.8]) == pytest.approx((0.7, 0.1, 2))
    assert mean_sem([0.9, np.nan]) == (0.9, 0.0, 1)
    m, s, k = mean_sem([np.nan])
    assert np.isnan(m) and np.isnan(s) and k == 0


def _long():
    # sample A: class a AUROC 1.0 (3 positives), b 0.5 (1) → weighted 0.875
    # sample B: class a 0.5 (1), b 1.0 (1), c undefined → weighted 0.75
    return pd.DataFrame(
        {
            "sample": ["A", "A", "B", "B", "B"],
            "route": ["r"] * 5,
            "class": ["a", "b", "a", "b", "c"],
            "n_pos": [3, 1, 1, 1, 0],
            "n": [4, 4, 2, 2, 2],
            "auroc": [1.0, 0.5, 0.5, 1.0, np.nan],
        }
    )


def test_summary_weighted_overall_and_sem():
    t = summarize_long(_long()).set_index("class")
    assert t.loc["a", "mean"] == pytest.approx(0.75) and t.loc["a", "sem"] == pytest.approx(0.25)
    assert t.loc["b", "n_samples"] == 2 and t.loc["a", "n_pos"] == 4
    assert np.isnan(t.loc["c", "mean"]) and t.loc["c", "n_samples"] == 0
    assert t.loc[OVERALL, "mean"] == pytest.approx((0.875 + 0.75) / 2)
    assert t.loc[OVERALL, "sem"] == pytest.approx(0.0625)


def test_bootstrap_intervals():
    classes = np.array(["a"] * 10 + ["b"] * 10)
    perfect = np.column_stack([np.r_[np.ones(10), np.zeros(10)], np.r_[np.zeros(10), np.ones(10)]])
    rng = np.random.default_rng(1)
    noisy = perfect + rng.normal(0, 0.8, perfect.shape)
    ci = bootstrap_intervals({"s1": (classes, {"perfect": perfect, "noisy": noisy})}, ["a", "b"], 300, 0.9, seed=0)
    ci = ci.set_index(["route", "class"])
    assert ci.loc[("perfect", OVERALL)].tolist() == [1.0, 1.0]
    lo, hi = ci.loc[("noisy", "a")]
    point = roc_auc_score(classes == "a", noisy[:, 0])
    assert lo < point < hi and hi - lo > 0.05
    # the same seed gives the same interval
    again = bootstrap_intervals({"s1": (classes, {"noisy": noisy})}, ["a", "b"], 300, 0.9, seed=0)
    assert again.set_index(["route", "class"]).loc[("noisy", "a")].tolist() == [lo, hi]


# ------------------------------------------------------------------------------------ tasks
def _task(**kw) -> TaskConfig:
    classes = [ClassSpec("tumour", "invasive cancer", match=["tumor*", "carcinoma"]), ClassSpec("fat", "adipose tissue")]
    kw.setdefault("labels", LabelSpec(key="lab", exclude=["undetermined"]))
    return TaskConfig(name="toy", classes=classes, **kw)


def test_assign_classes_globs_exclusions_and_ambiguity():
    task = _task()
    labels = ["Tumor 1", "carcinoma", "FAT", "undetermined", "", "stroma"]
    assert list(assign_classes(labels, task)) == ["tumour", "tumour", "fat", "", "", ""]
    task.classes.append(ClassSpec("any", match=["*"]))
    with pytest.raises(ConfigError, match="matches several classes"):
        assign_classes(labels, task)


def test_deconv_dominant_labels():
    obs = pd.DataFrame({"deconv_A": [0.6, 0.2, 0.25, np.nan], "deconv_B": [0.1, 0.3, 0.25, 0.5],
                        "deconv_C": [0.3, 0.5, 0.5, 0.5]}, index=[f"s{i}" for i in range(4)])
    task = _task(labels=LabelSpec(source="deconv_dominant", groups={"ga": ["A"], "gbc": ["B", "C"]}))
    # spot 0: A 0.6 vs B+C 0.4; spot 1: 0.2 vs 0.8; spot 2: tie 0.5 vs 0.75; spot 3: NaN → unlabelled
    assert list(raw_labels(ad.AnnData(obs=obs), task)) == ["ga", "gbc", "gbc", ""]
    with pytest.raises(KeyError, match="deconv_Z"):
        raw_labels(ad.AnnData(obs=obs), _task(labels=LabelSpec(source="deconv_dominant", groups={"g": ["Z"]})))


def test_task_vocabulary_inherits_and_overrides():
    base = load_vocabulary()
    task = _task()
    task.classes[1] = ClassSpec("fat", "adipose tissue", synonyms=["fat cells"], genes=["ADIPOQ"])
    voc = task_vocabulary(task, base)
    inv = voc.lookup("invasive cancer")
    assert inv.synonyms == base.terms["invasive cancer"].synonyms and inv.genes == base.terms["invasive cancer"].genes
    fat = voc.lookup("adipose tissue")
    assert fat.synonyms == ["fat cells"] and fat.genes == ["ADIPOQ"] and fat.proteins == base.terms["adipose tissue"].proteins
    assert voc.templates == base.templates


@pytest.mark.parametrize("name", ["regions", "celltypes", "clusters"])
def test_builtin_tasks_load(name):
    task = load_task(name)
    assert task.name == name and len(task.classes) >= 2 and task.scopes
    voc = task_vocabulary(task)
    for c in task.classes:  # every shipped class query is a vocabulary term with marker genes
        assert voc.lookup(c.query or c.name).genes, c.name


# ------------------------------------------------------------------------------------ run + report
@pytest.fixture
def toy_routes(monkeypatch):
    """Hand-made routes: ``oracle`` scores the true class 1 and others 0, ``inverse`` the opposite,
    ``never`` is unavailable, ``half`` runs on sample S0 only."""
    import spotwhisper.bench.evaluate as run_mod

    def oracle(sample, queries, ctx):
        return np.column_stack([(sample.classes == c).astype(float) for c in ("tumour", "fat")])

    def inverse(sample, queries, ctx):
        return 1 - oracle(sample, queries, ctx)

    def never(sample, queries, ctx):
        raise RouteUnavailable("no H&E")

    def half(sample, queries, ctx):
        if sample.name == "S1":
            raise RouteUnavailable("no H&E")
        return np.ones((sample.adata.n_obs, 2))

    names = {"oracle": oracle, "inverse": inverse, "never": never, "half": half}
    for n, fn in names.items():
        monkeypatch.setitem(ROUTES, n, Route(n, n, fn, False))
    monkeypatch.setattr(run_mod, "ALL_ROUTES", (*run_mod.ALL_ROUTES, *names))
    return list(names)


def _ctx(task, cfg):
    return RouteContext(cfg=cfg, vocabulary=task_vocabulary(task), text_models=SimpleNamespace(used={}))  # type: ignore[arg-type]


def _samples(task):
    out = []
    for i, labs in enumerate([["tumor", "tumor", "fat", "stroma"], ["carcinoma", "fat", "fat", "undetermined"]]):
        a = ad.AnnData(X=np.zeros((4, 1), np.float32), obs=pd.DataFrame({"lab": labs}, index=[f"s{i}_{k}" for k in range(4)]))
        out.append(make_sample(f"S{i}", a, task, None))
    return out


def test_run_task_and_report(toy_routes, tmp_path):
    task = _task(scopes=[ScopeSpec("both")])
    cfg = BenchConfig(routes=["chance", "oracle", "inverse", "never"], bootstrap=50)
    ctx = _ctx(task, cfg)
    samples = _samples(task)
    assert route_scores("oracle", samples[0], ["invasive cancer", "adipose tissue"], ctx).shape == (4, 2)
    res = run_task(task, samples, ctx)
    scope = res.scopes[0]
    s = scope.summary.set_index(["route", "class"])
    assert s.loc[("oracle", OVERALL), "mean"] == 1.0 and s.loc[("oracle", OVERALL), "sem"] == 0.0
    assert s.loc[("inverse", "tumour"), "mean"] == 0.0
    assert scope.unavailable == {"never": "no H&E"} and scope.class_sizes == {"tumour": 3, "fat": 3}
    assert set(scope.long["sample"]) == {"S0", "S1"} and (scope.long["n"] == 3).all()  # stroma/undetermined left out
    ci = scope.ci.set_index(["route", "class"])
    assert ci.loc[("oracle", OVERALL)].tolist() == [1.0, 1.0]
    md = to_markdown(res, cfg, "spotwhisper bench zero-shot --task-config toy.yaml")
    assert "| tumour | 3 |" in md and "1.000 (0.000)" in md and "n/a (no H&E)" in md
    assert "--task-config toy.yaml" in md
    paths = write_report(res, cfg, tmp_path / "out" / "zs", "cmd")
    assert {p.name for p in paths.values()} == {"zs_toy.md", "zs_toy.json", "zs_toy.png"}
    assert not list((tmp_path / "out").glob("*.part"))
    data = json.loads(paths["json"].read_text())
    assert data["scopes"][0]["unavailable"] == {"never": "no H&E"}
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_partial_route_is_not_averaged_over_other_samples(toy_routes):
    task = _task(scopes=[ScopeSpec("both")])
    ctx = _ctx(task, BenchConfig(routes=["oracle", "half"], bootstrap=0))
    scope = run_task(task, _samples(task), ctx).scopes[0]
    assert scope.unavailable["half"].startswith("ran on 1 of 2 samples")
    assert set(scope.long["route"]) == {"oracle"}
    # --routes narrows every scope; an unknown route is an error
    assert run_task(task, _samples(task), ctx, routes=["oracle"]).scopes[0].routes == ["oracle"]
    with pytest.raises(ValueError, match="unknown route"):
        run_task(task, _samples(task), ctx, routes=["nope"])


def test_cli_help_and_bad_task(capsys, tmp_path):
    from spotwhisper.cli import main

    with pytest.raises(SystemExit):
        main(["bench", "zero-shot", "--help"])
    out = capsys.readouterr().out
    for text in ("spotwhisper bench zero-shot --task all --data-dir ../shared/data", "leave-one-patient-out",
                 "--plip vinid/plip", "--task-config my_task.yaml", "regions", "celltypes", "clusters"):
        assert text in " ".join(out.split()), text
    assert main(["bench", "zero-shot", "--task", "tissue", "--data-dir", str(tmp_path)]) == 1
    assert "choose regions, celltypes, clusters or all" in capsys.readouterr().err


def test_small_classes_are_not_scored(toy_routes):
    task = _task(scopes=[ScopeSpec("both")], min_class_spots=2)  # S0 has one "fat" spot, S1 one "tumour" spot
    cfg = BenchConfig(routes=["oracle"], bootstrap=20)
    scope = run_task(task, _samples(task), _ctx(task, cfg)).scopes[0]
    long = scope.long.set_index(["sample", "class"])["auroc"]
    assert np.isnan(long[("S0", "fat")]) and np.isnan(long[("S1", "tumour")])
    assert long[("S0", "tumour")] == 1.0 and long[("S1", "fat")] == 1.0
    s = scope.summary.set_index("class")
    assert s.loc["fat", "n_samples"] == 1 and s.loc[OVERALL, "n_samples"] == 2
    assert "1.000 (k=1)" in to_markdown(run_task(task, _samples(task), _ctx(task, cfg)), cfg, "cmd")
