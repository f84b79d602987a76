"""Divergence measures on constructed corpora with known answers, and the report's statistics."""

import numpy as np
import pandas as pd
import pytest

from intertask import divergence, report
from intertask.config import ExperimentConfig, GridConfig, StageConfig

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


def _scores(values: dict) -> pd.DataFrame:
    """values: (intermediate, seed) -> accuracy on one test set."""
    rows = [
        {
            "model": "m",
            "model_group": "text",
            "intermediate": inter,
            "family": "nli" if inter != "none" else "none",
            "target": "pawsx",
            "seed": seed,
            "task": "pawsx",
            "split": "test",
            "language": lang,
            "metric": "accuracy",
            "value": value + (0.01 if lang == "de" else 0.0),
        }
        for (inter, seed), value in values.items()
        for lang in ("en", "de", "mean_all")
    ]
    return pd.DataFrame(rows)


def test_gains_pair_each_seed_with_its_baseline_and_summarise():
    scores = _scores(
        {
            ("xnli", 1): 0.70,
            ("none", 1): 0.60,
            ("xnli", 2): 0.72,
            ("none", 2): 0.61,
            ("xnli", 3): 0.69,
            ("none", 3): 0.60,
            ("rte", 1): 0.58,
            ("rte", 2): 0.59,
            ("rte", 3): 0.57,
        }
    )
    gains = report.gains_table(scores, resamples=2000, confidence=0.95)
    xnli = gains[(gains.intermediate == "xnli") & (gains.language == "en")].iloc[0]
    assert xnli.n_seeds == 3 and xnli.gain == pytest.approx(np.mean([0.10, 0.11, 0.09]))
    assert xnli.gain_std == pytest.approx(np.std([0.10, 0.11, 0.09], ddof=1))
    assert 0.09 - 1e-9 <= xnli.ci_low <= xnli.gain <= xnli.ci_high <= 0.11 + 1e-9 and xnli.flag == "positive"
    rte = gains[(gains.intermediate == "rte") & (gains.language == "en")].iloc[0]
    assert rte.flag == "negative" and rte.gain == pytest.approx(np.mean([-0.02, -0.02, -0.03]))


def test_one_seed_gives_no_interval_and_an_inconclusive_flag():
    gains = report.gains_table(_scores({("xnli", 1): 0.7, ("none", 1): 0.6}), resamples=500, confidence=0.95)
    assert gains.ci_low.isna().all() and set(gains.flag) == {"inconclusive"}
    assert gains.gain.iloc[0] == pytest.approx(0.1)


def test_mixed_signs_are_inconclusive():
    scores = _scores({("xnli", 1): 0.70, ("none", 1): 0.60, ("xnli", 2): 0.55, ("none", 2): 0.60})
    gains = report.gains_table(scores, resamples=2000, confidence=0.95)
    assert set(gains.flag) == {"inconclusive"}


def test_groups_by_model_group_and_intermediate_family(shared_data):
    cfg = ExperimentConfig(
        name="g", target=StageConfig(task="pawsx"), grid=GridConfig(model_groups={"text": ("m",)})
    )
    scores = _scores({("xnli", 1): 0.70, ("none", 1): 0.60, ("rte", 1): 0.65}).assign(
        family=lambda d: d.intermediate.map({"xnli": "nli", "rte": "nli", "none": "none"})
    )
    gains = report.gains_table(scores, resamples=500, confidence=0.95)
    groups = report.groups_table(cfg, scores, gains)
    (row,) = groups.itertuples()
    assert (row.model_group, row.family, row.cells) == ("text", "nli", 2) and row.gain == pytest.approx(0.075)


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
