"""The answers read across cells (pooling.py, report/questions.py), on simulated studies whose truth is
known: a slope of gain on divergence with task effects and per-cell noise, family and group means, the
cross-lingual drop; coverage of their 95 % intervals and how often a true 0 is flagged.

The simulated gains' standard errors are what a 5-seed study gives: estimates on 4 degrees of freedom
of the cell's true error (the intervals must not lean on them being exact)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from intertask.config import ExperimentConfig, ReportConfig, StageConfig
from intertask.report import pooling, questions

STUDIES = 2000


def _study(rng, slope: float, tau: float, cells: int = 10, targets: int = 2):
    """Divergences in [0, 1]; true gain = target offset + slope x divergence + task effect; measured
    with each cell's own error (sd 1-4 points), and that error estimated from 5 seeds."""
    n = cells * targets
    x = rng.random(n)
    target = np.repeat(np.arange(targets), cells)
    own = rng.uniform(0.01, 0.04, n)
    gain = 0.03 * target + slope * x + rng.normal(0, tau, n) + rng.normal(0, own)
    se = own * np.sqrt(rng.chisquare(4, n) / 4)
    return x, target, gain, se


@pytest.mark.parametrize("tau", [0.0, 0.02])
@pytest.mark.parametrize("targets", [1, 2])
def test_the_slope_interval_covers_the_true_slope_and_a_null_slope_is_flagged_at_most_at_its_level(
    tau, targets, monkeypatch
):
    """Coverage 93-97 % at a true slope of 0.05 per unit (the per-sd rescaling does not change it);
    at a true slope of 0, p <= 0.05 (the larger of the t and the permutation p) in at most 5 % of
    studies (+ Monte Carlo error: 2,000 studies give a standard error of 0.5 points)."""
    monkeypatch.setattr(pooling, "PERMUTATIONS", 1000)  # resolves p = 0.05 well; 10x faster
    rng = np.random.default_rng(11 + targets + int(100 * tau))
    for truth in (0.05, 0.0):
        covered, flagged = 0, 0
        for study in range(STUDIES):
            x, target, gain, se = _study(rng, truth, tau, targets=targets)
            found = pooling.slope_test(gain, se, x, target, seed=study)
            covered += found["ci_low"] <= truth <= found["ci_high"]
            flagged += found["p"] <= 0.05
        assert 0.93 <= covered / STUDIES <= 0.97, (truth, covered / STUDIES)
        if truth == 0.0:
            assert flagged / STUDIES <= 0.05 + 0.01, flagged / STUDIES


def test_the_mean_of_cells_covers_the_true_mean():
    """A family's (or a model-group difference's) random-effects mean over 5 cells: coverage 93-97 %."""
    rng = np.random.default_rng(5)
    covered = 0
    for _ in range(STUDIES):
        own = rng.uniform(0.01, 0.04, 5)
        gain = 0.02 + rng.normal(0, 0.015, 5) + rng.normal(0, own)
        found = pooling.mean(gain, own * np.sqrt(rng.chisquare(4, 5) / 4)).contrast([1.0])
        covered += found["ci_low"] <= 0.02 <= found["ci_high"]
    assert 0.93 <= covered / STUDIES <= 0.97, covered / STUDIES


def test_rank_correlation_at_no_relation_is_flagged_at_most_at_its_level_and_finds_a_strong_one():
    """At a true slope of 0 the permutation p is <= 0.05 in at most 5 % of studies (+ Monte Carlo
    error) and the interval of rho excludes 0 about as rarely; a slope of 0.1 per unit with small
    task effects is found in most studies, and rho lies above the smallest detectable rho then."""
    rng = np.random.default_rng(3)
    p_flags, interval_flags = 0, 0
    runs = 500
    for i in range(runs):
        x, target, gain, se = _study(rng, 0.0, 0.01)
        found = pooling.rank_correlation(x, gain, target, seed=i)
        p_flags += found["p"] <= 0.05
        interval_flags += not (found["ci_low"] <= 0 <= found["ci_high"])
    assert p_flags / runs <= 0.05 + 0.02 and interval_flags / runs <= 0.05 + 0.02, (p_flags, interval_flags)
    hits = 0
    for i in range(100):
        x, target, gain, se = _study(rng, 0.1, 0.005)
        found = pooling.rank_correlation(x, gain, target, seed=i)
        hits += found["p"] <= 0.05 and found["rho"] > 0
    assert hits >= 80
    assert 0 < found["detectable_rho"] < 1 and found["cells"] == 20


def test_pooled_rho_is_the_within_target_rho_and_permutation_p_respects_targets():
    """Two targets whose gains differ by a constant: the pooled rho is that of each target (ranks within
    targets), not the rho across them."""
    x = np.tile(np.arange(6, dtype=float), 2)
    gain = np.concatenate([np.arange(6.0), 10 + np.arange(6.0)])
    found = pooling.rank_correlation(x, gain, np.repeat(["a", "b"], 6), seed=0)
    assert found["rho"] == pytest.approx(1.0, abs=1e-5) and found["p"] < 0.01


def _cells(rows):
    columns = ["model", "model_group", "intermediate", "family", "same_family", "target", "gain", "se"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.assign(ci_low=frame.gain - 2 * frame.se, ci_high=frame.gain + 2 * frame.se, n_seeds=5)


def test_family_and_same_family_contrasts_and_model_groups():
    """Families' means are their cells' means; 'same family - other' is the same-family cell's gain
    minus the others' mean (one target); the model-group contrast is the mean difference of the gains
    over the pairs both groups trained."""
    cfg = ExperimentConfig(name="q", target=StageConfig(task="udpos"), report=ReportConfig())
    rows = [
        ("e5", "multi", "ud", "pos", True, "udpos", 0.05, 0.01),
        ("e5", "multi", "rte", "nli", False, "udpos", 0.00, 0.01),
        ("e5", "multi", "xnli", "nli", False, "udpos", 0.02, 0.01),
        ("e5", "multi", "sst2", "sentiment", False, "udpos", -0.01, 0.01),
        ("mini", "english", "ud", "pos", True, "udpos", 0.03, 0.01),
        ("mini", "english", "rte", "nli", False, "udpos", 0.01, 0.01),
        ("mini", "english", "xnli", "nli", False, "udpos", 0.01, 0.01),
        ("mini", "english", "sst2", "sentiment", False, "udpos", 0.00, 0.01),
    ]
    cells = _cells(rows)
    families = questions.family_table(cfg, cells, pd.DataFrame(columns=["task", "target"]))
    nli = families[(families.model_group == "multi") & (families.family == "nli")].iloc[0]
    assert nli.cells == 2 and nli.gain == pytest.approx(0.01) and nli.ci_low < 0.01 < nli.ci_high
    contrasts = questions.contrasts_table(cfg, cells).set_index(["contrast", "model_group"])
    same = contrasts.loc[("same family - other family", "multi")]
    assert same.estimate == pytest.approx(0.05 - (0.0 + 0.02 - 0.01) / 3) and same.cells == 4
    groups = contrasts.loc[("multi - english", "multi vs english")]
    assert groups.estimate == pytest.approx(np.mean([0.02, -0.01, 0.01, -0.01])) and groups.cells == 4
    assert groups.ci_low < groups.estimate < groups.ci_high


def _scores(drop_baseline: float, drop_transfer: float, seeds=(1, 2, 3, 4, 5), noise=0.0, rng=None):
    rows = []
    for seed in seeds:
        for arm, drop in (("none", drop_baseline), ("ud", drop_transfer)):
            for task, language, value in (("ud", "en", 0.9), ("udpos", "de", 0.9 - drop)):
                wobble = rng.normal(0, noise) if rng is not None else 0.0
                rows.append(("m", arm, "udpos", seed, task, "test", language, "accuracy", value + wobble))
    columns = ["model", "intermediate", "target", "seed", "task", "split", "language", "metric", "value"]
    return pd.DataFrame(rows, columns=columns)


def _example_parts() -> pd.DataFrame:
    """The two gains' rows the degradation reads its test-sample parts from (0 here: the simulated
    noise is all per seed)."""
    rows = [
        ("m", "ud", "udpos", t, "test", lang, "accuracy", 0.0, 5)
        for t, lang in (("ud", "en"), ("udpos", "de"))
    ]
    columns = [
        "model",
        "intermediate",
        "target",
        "task",
        "split",
        "language",
        "metric",
        "example_var",
        "n_seeds",
    ]
    return pd.DataFrame(rows, columns=columns).assign(se=0.01)


def test_degradation_is_the_change_in_the_drop_from_the_training_language():
    """Baseline drops 20 points from English to German, transfer 12: the change is -8 points, with an
    interval from the seeds (plus each gain's example part, 0 here); the summary row (intermediate
    `all`) is the mean over intermediate tasks."""
    cfg = ExperimentConfig(name="d", target=StageConfig(task="udpos"), report=ReportConfig())
    rng = np.random.default_rng(0)
    scores = _scores(0.20, 0.12, noise=0.01, rng=rng)
    gains = _example_parts()
    rows = questions.degradation_rows(cfg, scores, gains)
    (row,) = rows.itertuples()
    assert (row.source, row.zero_shot) == ("ud/en", "udpos/de")
    assert row.baseline_drop == pytest.approx(0.20, abs=0.02) and row.transfer_drop == pytest.approx(
        0.12, abs=0.02
    )
    assert row.change == pytest.approx(row.transfer_drop - row.baseline_drop)
    assert row.ci_low < row.change < row.ci_high < 0


def test_degradation_interval_coverage():
    """Per-seed changes with a seed part (the test-sample part 0): the change's interval covers the
    true change in 93-97 % of simulated 5-seed cells."""
    cfg = ExperimentConfig(name="d", target=StageConfig(task="udpos"), report=ReportConfig())
    rng = np.random.default_rng(1)
    covered, runs = 0, 600
    for _ in range(runs):
        scores = _scores(0.20, 0.15, noise=0.02, rng=rng)
        gains = _example_parts()
        (row,) = questions.degradation_rows(cfg, scores, gains).itertuples()
        covered += row.ci_low <= -0.05 <= row.ci_high
    assert 0.93 <= covered / runs <= 0.97, covered / runs


def test_the_divergence_answer_reads_a_similarity_the_other_way():
    """Gain that rises with vocabulary overlap (a similarity) and falls with JS divergence both say the
    gain falls as the tasks diverge; rows whose q is above the level say no relation was shown."""
    cfg = ExperimentConfig(name="v", target=StageConfig(task="udpos"), report=ReportConfig())
    rng = np.random.default_rng(2)
    overlap = rng.random(10)
    cells = _cells(
        [
            ("e5", "multi", f"t{i}", "f", False, "udpos", 0.1 * overlap[i] + rng.normal(0, 0.002), 0.002)
            for i in range(10)
        ]
    )
    divergence = pd.DataFrame(
        {
            "intermediate": [f"t{i}" for i in range(10)],
            "target": "udpos",
            "vocabulary_overlap": overlap,
            "js_divergence": 1 - overlap,
            "embedding_cosine_distance": rng.random(10),
            "mmd": rng.random(10),
        }
    )
    answers = questions.divergence_answers(cfg, cells, divergence).set_index("measure")
    assert answers.loc["vocabulary_overlap", "slope"] > 0 > answers.loc["js_divergence", "slope"]
    for measure in ("vocabulary_overlap", "js_divergence"):
        assert answers.loc[measure, "answer"].startswith("gain falls as the tasks diverge")
    assert answers.loc["mmd", "answer"].startswith("no relation shown")
