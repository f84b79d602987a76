"""Divergence measures on constructed corpora with known answers, and the report's statistics."""

import numpy as np
import pandas as pd
import pytest

from intertask import divergence, report
from intertask.config import ExperimentConfig, GridConfig, ReportConfig, StageConfig

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
    assert divergence.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert divergence.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert divergence.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(
        0.9486832980505139
    )  # scipy, ties averaged
    assert np.isnan(divergence.spearman([1, 2], [3, 4]))


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


def test_no_gain_reads_null_when_the_study_could_see_one_and_too_small_to_tell_when_not():
    same = {("xnli", s): 0.6 for s in (1, 2, 3)} | {("none", s): 0.6 for s in (1, 2, 3)}
    big = _gains(same, n=400)
    assert set(big.flag) == {"no effect"} and (big.gain == 0).all()  # identical arms: nothing varies
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
    assert row.flag == "inconclusive" and row.reading.startswith("too small to tell") and row.mde > 0.02


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
