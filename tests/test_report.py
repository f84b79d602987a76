"""Divergence measures on constructed corpora with known answers, and the report's statistics."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from intertask import report
from intertask.config import ExperimentConfig, GridConfig, ReportConfig, StageConfig
from intertask.report import divergence
from intertask.report.flags import TaskFacts

CORPUS = ["the cat sat on the mat", "a dog barked at the cat", "the mat was red"]
OTHER = ["stock prices fell sharply", "markets rallied monday", "bond yields rose"]


def test_identical_corpora_have_zero_divergence():
    a = divergence.word_counts(CORPUS)
    assert divergence.js_divergence(a, a) == 0.0
    assert divergence.vocabulary_overlap(a, a, k=5) == 1.0
    vectors = np.random.default_rng(0).normal(size=(20, 8))
    assert divergence.mmd_rbf(vectors, vectors) == pytest.approx(0.0, abs=1e-12)
    assert divergence.mean_embedding_distance(vectors, vectors) == pytest.approx(0.0, abs=1e-9)


def test_disjoint_corpora_are_maximally_divergent():
    a, b = divergence.word_counts(CORPUS), divergence.word_counts(OTHER)
    assert divergence.js_divergence(a, b) == pytest.approx(1.0)  # no shared word: 1 bit
    assert divergence.vocabulary_overlap(a, b, k=5) == 0.0


def test_divergence_values_by_hand():
    a = divergence.word_counts(["x x y"])  # P = (2/3, 1/3, 0)
    b = divergence.word_counts(["y z"])  # Q = (0, 1/2, 1/2)
    # M = (1/3, 5/12, 1/4); KL(P||M) = 2/3 log2 2 + 1/3 log2 (4/5); KL(Q||M) = 1/2 log2 (6/5) + 1/2 log2 2
    expected = ((2 / 3 + np.log2(4 / 5) / 3) + (np.log2(6 / 5) / 2 + 1 / 2)) / 2
    assert divergence.js_divergence(a, b) == pytest.approx(expected)
    assert divergence.vocabulary_overlap(a, b, k=2) == pytest.approx(1 / 3)  # {x, y} vs {y, z}


def test_embedding_distances_grow_with_the_shift():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(40, 6))
    near, far = base + 0.1, base + 3.0
    assert divergence.mmd_rbf(base, near) < divergence.mmd_rbf(base, far)
    assert divergence.mean_embedding_distance(base + 5, near + 5) < divergence.mean_embedding_distance(
        base + 5, -far
    )


def test_spearman_matches_its_definition():
    """The rank correlation the estimators are scored with (transferability.spearman, scipy's)."""
    from intertask.transferability import scores as transferability

    assert transferability.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert transferability.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks with ties averaged: (1, 2.5, 2.5, 4) against (1, 3, 2, 4), Pearson's r of the ranks
    assert transferability.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.9486832980505139)
    assert np.isnan(transferability.spearman([1, 1, 1], [1, 2, 3]))  # a constant side ranks nothing


# --- gains, intervals, flags ---------------------------------------------------------------------------

OPTIONS = ReportConfig(bootstrap=400)


def _study(accuracy: dict, n: int = 400, seed: int = 0):
    """accuracy: (intermediate, seed) -> the probability each example is right, on a test set of n
    examples in en and de; both arms of a seed share the draws (the pairing). -> scores, examples."""
    rng = np.random.default_rng(seed)
    draws = {(s, lang): rng.random(n) for s in {s for _, s in accuracy} for lang in ("en", "de")}
    scores, examples = [], []
    for (inter, s), p in accuracy.items():
        cell = {"model": "m", "intermediate": inter, "target": "pawsx", "seed": s}
        per_lang = {}
        for lang in ("en", "de"):
            correct = (draws[s, lang] < p).astype(np.int64)
            per_lang[lang] = correct.mean()
            examples.append(
                pd.DataFrame({"uid": np.arange(n), "correct": correct}).assign(
                    task="pawsx", split="test", language=lang, **cell
                )
            )
        per_lang["mean_all"] = np.mean(list(per_lang.values()))
        scores += [
            {
                **cell,
                "model_group": "text",
                "family": "nli" if inter != "none" else "none",
                "task": "pawsx",
                "split": "test",
                "language": lang,
                "metric": "accuracy",
                "value": v,
            }
            for lang, v in per_lang.items()
        ]
    return pd.DataFrame(scores), pd.concat(examples, ignore_index=True)


def _gains(accuracy, **kw):
    scores, examples = _study(accuracy, **kw)
    return report.gains_table(scores, examples, {"pawsx": "single_label"}, OPTIONS)


def test_gains_pair_each_seed_with_its_baseline_on_the_same_examples():
    accuracy = {
        ("xnli", 1): 0.70,
        ("none", 1): 0.55,
        ("xnli", 2): 0.72,
        ("none", 2): 0.56,
        ("xnli", 3): 0.69,
        ("none", 3): 0.55,
        ("rte", 1): 0.42,
        ("rte", 2): 0.42,
        ("rte", 3): 0.41,
    }
    scores, examples = _study(accuracy)
    gains = report.gains_table(scores, examples, {"pawsx": "single_label"}, OPTIONS)
    en = scores[scores.language == "en"].pivot(index="seed", columns="intermediate", values="value")
    xnli = gains[(gains.intermediate == "xnli") & (gains.language == "en")].iloc[0]
    assert xnli.n_seeds == 3 and xnli.seed_component == "estimated" and xnli.examples == 400
    assert xnli.gain == pytest.approx((en.xnli - en.none).mean())  # the metric on the full test set
    assert xnli.ci_low < xnli.gain < xnli.ci_high and xnli.flag == "positive" and xnli.q <= 0.05
    rte = gains[(gains.intermediate == "rte") & (gains.language == "mean_all")].iloc[0]
    assert rte.flag == "negative" and rte.examples == 800
    assert (gains.q >= gains.p - 1e-12).all()  # Benjamini-Hochberg never lowers a p-value
    assert set(gains.metric) == {"accuracy"} and set(gains.language) == {"en", "de", "mean_all"}


def test_one_seed_has_an_interval_from_the_test_examples_and_says_the_seeds_are_not_in_it():
    gains = _gains({("xnli", 1): 0.7, ("none", 1): 0.6})
    row = gains[gains.language == "en"].iloc[0]
    assert row.seed_component == "unestimated (1 seed(s))" and row.ci_low < row.gain < row.ci_high
    assert row.se == pytest.approx(np.sqrt(0.1 * 0.9 / 400), rel=0.25)  # only disagreements vary


def test_no_gain_reads_no_effect_only_when_its_interval_lies_inside_the_margin():
    same = {("xnli", s): 0.6 for s in (1, 2, 3)} | {("none", s): 0.6 for s in (1, 2, 3)}
    big = _gains(same, n=400)
    # identical arms: nothing varies; 400 examples bound an unseen disagreement rate at ln(40)/400
    assert set(big.flag) == {"no effect"} and (big.gain == 0).all() and (big.ci_high < 0.01).all()
    small = _gains(same, n=150)  # 150 examples cannot: +-2.5 points; their mean over 2 languages can
    assert set(small[small.language != "mean_all"].flag) == {"inconclusive"}
    noisy = _gains(
        {
            ("xnli", 1): 0.62,
            ("none", 1): 0.6,
            ("xnli", 2): 0.58,
            ("none", 2): 0.6,
            ("xnli", 3): 0.63,
            ("none", 3): 0.6,
        },
        n=60,
    )
    row = noisy[noisy.language == "en"].iloc[0]
    assert row.flag == "inconclusive" and row.reading.startswith("inconclusive:") and row.ci_high > 0.02


def test_runs_without_per_example_outcomes_get_gains_but_no_test():
    scores, _ = _study({("xnli", 1): 0.7, ("none", 1): 0.6})
    gains = report.gains_table(scores, pd.DataFrame(), {"pawsx": "single_label"}, OPTIONS)
    assert gains.p.isna().all() and set(gains.flag) == {"inconclusive"}
    assert set(gains.reading) == {"no per-example outcomes to test"}


def test_groups_by_model_group_and_intermediate_family(shared_data):
    cfg = ExperimentConfig(
        name="g", target=StageConfig(task="pawsx"), grid=GridConfig(model_groups={"text": ("m",)})
    )
    scores, examples = _study({("xnli", 1): 0.70, ("none", 1): 0.60, ("rte", 1): 0.65})
    scores = scores.assign(family=lambda d: d.intermediate.map({"xnli": "nli", "rte": "nli", "none": "none"}))
    gains = report.gains_table(scores, examples, {"pawsx": "single_label"}, OPTIONS)
    groups = report.groups_table(cfg, scores, gains)
    (row,) = groups.itertuples()
    expected = gains[gains.language == "mean_all"].gain.mean()
    assert (row.model_group, row.family, row.cells) == ("text", "nli", 2) and row.gain == pytest.approx(
        expected
    )


def test_robustness_drop_from_in_domain_to_out_of_domain():
    cfg = ExperimentConfig(name="r", target=StageConfig(task="tydiqa"))
    rows = [
        {
            "model": "m",
            "model_group": "m",
            "intermediate": "none",
            "family": "none",
            "target": "tydiqa",
            "seed": 1,
            "task": task,
            "split": "test",
            "language": "mean_all",
            "metric": "f1",
            "value": value,
        }
        for task, value in (("tydiqa", 0.6), ("xquad", 0.45))
    ]
    table = report.robustness_table(cfg, pd.DataFrame(rows))
    (row,) = table.itertuples()
    assert (
        row.out_of_domain == "xquad"
        and row.drop == pytest.approx(0.15)
        and row.relative_drop == pytest.approx(0.25)
    )


def test_flags_survive_a_round_trip_through_csv(tmp_path):
    """Every flag reads back as itself with pandas' defaults (a flag 'null' came back as NaN)."""
    gains = _gains({("xnli", s): 0.6 for s in (1, 2, 3)} | {("none", s): 0.6 for s in (1, 2, 3)})
    gains.to_csv(tmp_path / "gains.csv", index=False)
    assert list(pd.read_csv(tmp_path / "gains.csv").flag) == list(gains.flag)


# --- the instrument's own checks: a target not learnt, the A/A check ------------------------------------


def _learning(dev: list[float], reference: float, target: str = "pawsx") -> pd.DataFrame:
    return pd.DataFrame(
        [
            ("target", "m", "none", target, seed, "accuracy", value, reference, 200)
            for seed, value in enumerate(dev, 1)
        ],
        columns=report.LEARNING_COLUMNS,
    )


def test_a_baseline_at_chance_level_makes_every_gain_of_its_target_say_it_was_not_learnt():
    from intertask.report.controls import learnt_table, mark_not_learnt

    chance = learnt_table(_learning([0.35, 0.33, 0.36], 1 / 3))
    learnt = learnt_table(_learning([0.58, 0.61, 0.60], 1 / 3))
    (row,) = chance.itertuples()
    assert not row.learnt and row.noise > row.margin > 0  # 1.3 points above chance, noise ~7 points
    assert bool(learnt.learnt.iloc[0])
    gains = _gains({("xnli", s): 0.6 for s in (1, 2, 3)} | {("none", s): 0.55 for s in (1, 2, 3)})
    marked = mark_not_learnt(gains, chance)
    assert marked.reading.str.startswith("target not learnt: gains are uninformative").all()
    assert (
        "baseline dev accuracy 34.7 over 3 seed(s), a model that learnt nothing 33.3"
        in marked.reading.iloc[0]
    )
    assert (mark_not_learnt(gains, learnt).reading == gains.reading).all()


def test_the_a_a_check_splits_six_baseline_seeds_into_two_pseudo_arms():
    from intertask.report.controls import AA, null_check, null_summary

    accuracy = {("none", s): 0.6 for s in range(1, 7)} | {("xnli", s): 0.7 for s in range(1, 7)}
    scores, examples = _study(accuracy)
    facts = {"pawsx": TaskFacts("single_label", False, "accuracy")}
    table = null_check(scores, examples, facts, OPTIONS)
    assert set(table.intermediate) == {AA} and set(table.n_seeds) == {3}
    assert not table.flag.isin(["positive", "negative"]).any()  # the same accuracy in both halves
    assert "A/A check (1 headline cell(s), 3 rows): 0 headline and 0 rows flagged" in null_summary(
        table, 0.05
    )
    five = {k: v for k, v in accuracy.items() if k[1] <= 5}
    assert null_check(*_study(five), facts, OPTIONS).empty


def test_xtreme_group_scores_of_a_cell_are_gains_with_intervals_from_the_same_draws():
    """A QA cell scored on XQuAD, MLQA and TyDiQA: the `group/qa` row's gain is the mean over the three
    tasks of each task's (EM + F1) / 2 gain averaged over its languages, with an interval."""
    rng = np.random.default_rng(5)
    n, rows, scores = 200, [], []
    for task, languages in (("xquad", ("en", "de")), ("mlqa", ("en", "es")), ("tydiqa", ("en", "ru"))):
        for seed in (1, 2, 3):
            for arm, skill in (("squad", 0.7), ("none", 0.6)):
                cell = {"model": "m", "intermediate": arm, "target": "squad", "seed": seed}
                for lang in languages:
                    em = (rng.random(n) < skill).astype(float)
                    f1 = np.clip(em + rng.uniform(0, 0.3, n) * (1 - em), 0, 1)
                    rows.append(
                        pd.DataFrame({"uid": np.arange(n), "exact_match": em, "f1": f1}).assign(
                            task=task, split="test", language=lang, **cell
                        )
                    )
                    for metric, values in (("exact_match", em), ("f1", f1)):
                        scores.append(
                            {
                                **cell,
                                "task": task,
                                "split": "test",
                                "language": lang,
                                "metric": metric,
                                "value": values.mean(),
                            }
                        )
    table = pd.DataFrame(scores)
    means = table.groupby(
        ["model", "intermediate", "target", "seed", "task", "split", "metric"], as_index=False
    )
    table = pd.concat([table, means.value.mean().assign(language="mean_all")], ignore_index=True)
    facts = {t: TaskFacts("spans", t == "xquad", "f1") for t in ("xquad", "mlqa", "tydiqa")}
    gains = report.gains_table(table, pd.concat(rows, ignore_index=True), facts, OPTIONS)
    group = gains[(gains.task == "xtreme") & (gains.language == "group/qa")].iloc[0]
    per_task = gains[(gains.metric == "xtreme") & (gains.language == "mean_all")].set_index("task").gain
    assert group.gain == pytest.approx(per_task[["xquad", "mlqa", "tydiqa"]].mean())
    assert group.ci_low < group.gain < group.ci_high and group.family == "cell" and group.examples == 1000
    assert "overall" not in set(gains.language)  # not all nine XTREME tasks


def test_html_artifacts_declare_utf8_so_non_latin_text_shows_as_written(local_store):
    """predictions.html and languages.html were bare fragments: the artifact viewer read Arabic, Hindi,
    Thai and Chinese predictions as Latin-1 mojibake."""
    import mlflow

    from intertask import tracking

    text = ["مرحبا بالعالم", "नमस्ते", "สวัสดี", "你好，世界"]
    mlflow.set_tracking_uri(f"sqlite:///{local_store / 'mlflow.db'}")  # as entry points do (tracking.use)
    with mlflow.start_run() as run:
        tracking.log_table(
            pd.DataFrame({"language": ["ar", "hi", "th", "zh"], "prediction": text}), "evaluation/x"
        )
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="evaluation/x.html")
    raw = Path(local).read_bytes()
    assert raw.startswith(b"<!doctype html>") and b"<meta charset='utf-8'>" in raw[:200]
    assert all(t.encode("utf-8") in raw for t in text)


def test_a_table_logged_again_on_its_run_replaces_the_one_there(local_store):
    """A report logged again on its parent run (a resumed study, a second driver) leaves one gains
    table, not two appended (what mlflow.log_table does); the UI still lists it once, as a table."""
    import json

    import mlflow

    from intertask import tracking

    mlflow.set_tracking_uri(f"sqlite:///{local_store / 'mlflow.db'}")  # (the autouse guard restores it)
    first = pd.DataFrame({"language": ["en", "de"], "gain": [0.5, -0.25]})
    with mlflow.start_run() as run:
        tracking.log_mlflow_table(first, "report/gains_table.json")
        tracking.log_mlflow_table(first.assign(gain=[0.75, 0.0]), "report/gains_table.json")
    read = mlflow.load_table("report/gains_table.json", run_ids=[run.info.run_id])
    assert read.drop(columns="run_id", errors="ignore").to_dict("list") == {
        "language": ["en", "de"],
        "gain": [0.75, 0.0],
    }
    listed = json.loads(mlflow.get_run(run.info.run_id).data.tags["mlflow.loggedArtifacts"])
    assert listed == [{"path": "report/gains_table.json", "type": "table"}]
