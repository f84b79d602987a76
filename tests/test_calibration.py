"""The report as a measuring instrument, calibrated on simulated studies whose true gain is known: the
intervals of language means over translated test sets, power at the reported minimum detectable
effect, equivalence ("no effect") at the margin, the false discovery rate of the headline family, the
ceiling and nothing-varies cases (numpy + the report's own gains_table; about a minute).

The multilingual generator, per study: n items translated into L languages. Item i's expected gain in
language l is m_il = delta + c_il, with c_il = rho c_i + sqrt(1 - rho^2) c'_il (the intermediate task
helps the same items in every language, correlation rho) and mean 0 over the population, plus a seed
shift g_s common to all languages. Per seed, the baseline is right with probability 1/2 on every item,
its correctness correlated across the languages of an item (a shared latent); the transfer arm flips a
wrong baseline answer to right with probability 2 m (m > 0), or a right one to wrong with probability
2 |m| (m < 0), so E[transfer - baseline] = m_il exactly: the true gain of every language and of their
mean is delta."""

import numpy as np
import pandas as pd
import pytest

from intertask.config import ReportConfig
from intertask.report import gains_table, significance
from intertask.report.flags import TaskFacts

LANGUAGES = ("en", "de", "fr", "ru", "zh")


def _transferred(rng, base: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The transfer arm's outcomes from the baseline's (module docstring): a wrong answer flips to right
    with probability 2 m where m > 0, a right one to wrong with probability 2 |m| where m < 0."""
    flip = rng.random(len(base)) < 2 * np.abs(m)
    return np.where(m > 0, base | flip, base & ~flip)


def _multilingual(rng, delta, seeds, n=300, rho=0.7, help_sd=0.25, seed_sd=0.01, agree=0.7):
    shared = rng.normal(0, help_sd, n)
    expected = {
        lang: delta + rho * shared + np.sqrt(1 - rho**2) * rng.normal(0, help_sd, n) for lang in LANGUAGES
    }
    scores, blocks = [], []
    for seed in range(1, seeds + 1):
        shift, latent = rng.normal(0, seed_sd), rng.normal(size=n)
        for lang in LANGUAGES:
            m = np.clip(expected[lang] + shift, -0.5, 0.5)
            base = (agree * latent + np.sqrt(1 - agree**2) * rng.normal(size=n)) > 0
            transfer = _transferred(rng, base, m)
            for arm, correct in (("x", transfer), ("none", base)):
                cell = {"model": "m", "intermediate": arm, "target": "xnli", "seed": seed}
                scores.append({**cell, "language": lang, "value": correct.mean()})
                blocks.append((cell, lang, correct.astype(np.int64)))
    return _frames(scores, blocks, n)


def _frames(scores, blocks, n):
    common = {"task": "xnli", "split": "test", "metric": "accuracy"}
    table = pd.DataFrame(scores).assign(**common)
    means = table.groupby(["model", "intermediate", "target", "seed"], as_index=False).value.mean()
    table = pd.concat([table, means.assign(language="mean_all", **common)], ignore_index=True)
    examples = pd.DataFrame(
        {
            "uid": np.tile(np.arange(n), len(blocks)),
            "correct": np.concatenate([c for _, _, c in blocks]),
            "language": np.repeat([lang for _, lang, _ in blocks], n),
            **{
                k: np.repeat([cell[k] for cell, _, _ in blocks], n)
                for k in ("model", "intermediate", "target")
            },
            "seed": np.repeat([cell["seed"] for cell, _, _ in blocks], n),
        }
    ).assign(task="xnli", split="test")
    return table, examples


def _coverage(parallel: bool, seeds: int, studies: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    options = ReportConfig(bootstrap=200)
    facts = {"xnli": TaskFacts("single_label", parallel, "accuracy")}
    hits: dict[str, list[bool]] = {}
    for _ in range(studies):
        scores, examples = _multilingual(rng, 0.03, seeds)
        for row in gains_table(scores, examples, facts, options).itertuples():
            hits.setdefault(row.language, []).append(row.ci_low <= 0.03 <= row.ci_high)
    return {lang: float(np.mean(h)) for lang, h in hits.items()}


@pytest.mark.slow
@pytest.mark.parametrize("seeds", [3])  # 5 seeds also held (95-98 %); left out of CI for its minute
def test_language_means_of_translated_test_sets_cover_the_true_gain(seeds):
    """93-99 %: where the seed part and the example part both matter, reading the seed part over its
    whole chi-square (significance.mixture_p, what keeps the 3-seed tail right) is conservative, as
    the Behrens-Fisher fiducial test is; at 3 seeds the mean of 5 languages covers 98 %."""
    coverage = _coverage(parallel=True, seeds=seeds, studies=250, seed=seeds)  # seeded: 0.95-0.98
    assert 0.93 <= coverage["mean_all"] <= 0.99, coverage
    assert all(0.93 <= coverage[lang] <= 0.99 for lang in LANGUAGES), coverage


@pytest.mark.slow
def test_independent_draws_per_language_under_cover_the_mean_of_translations():
    """Why the draws are joint: the same studies resampled language by language (as before)."""
    coverage = _coverage(parallel=False, seeds=10, studies=120, seed=11)  # seeded: 0.867
    assert coverage["mean_all"] < 0.90, coverage


def test_a_parallel_mean_counts_each_translated_item_once():
    scores, examples = _multilingual(np.random.default_rng(0), 0.0, 3, n=120)
    facts = {"xnli": TaskFacts("single_label", True, "accuracy")}
    gains = gains_table(scores, examples, facts, ReportConfig(bootstrap=100))
    rows = gains.set_index("language").examples
    assert rows["mean_all"] == 120 and rows["en"] == 120


# --- one cell, no languages: significance.estimate ---------------------------------------------------


def _cell(rng, delta, seeds, n=400, seed_sd=0.02, help_sd=0.1, resamples=100):
    """One language: per-item expected gains delta + c_i, a seed shift, baseline right with 1/2."""
    expected = delta + rng.normal(0, help_sd, n)
    transfer, baseline = [], []
    for _ in range(seeds):
        m = np.clip(expected + rng.normal(0, seed_sd), -0.5, 0.5)
        base = rng.random(n) < 0.5
        transfer.append(_transferred(rng, base, m).astype(float)[:, None])
        baseline.append(base.astype(float)[:, None])
    weights = significance.example_weights(n, resamples, rng)
    full_t, full_b, boot_t, boot_b = significance.paired_replicates(
        transfer, baseline, lambda sums, k: sums[..., 0] / k, weights
    )
    return significance.estimate(full_t - full_b, boot_t - boot_b, examples=n)


@pytest.mark.parametrize("seeds", [3, 5, 10])
def test_power_at_the_reported_minimum_detectable_effect_is_the_stated_80_percent(seeds):
    """At a true gain equal to the mde the study reports (its mean over cells simulated at that gain:
    the variance of a gain grows with the gain), 75-85 % of cells are significant at p <= 0.05."""
    rng = np.random.default_rng(seeds)
    gain = np.mean([_cell(rng, 0.0, seeds).mde for _ in range(150)])
    gain = np.mean([_cell(rng, gain, seeds).mde for _ in range(150)])
    cells = [_cell(rng, gain, seeds) for _ in range(600)]
    reported = np.mean([c.mde for c in cells])
    assert reported == pytest.approx(gain, rel=0.08)
    assert 0.75 <= np.mean([c.p <= 0.05 for c in cells]) <= 0.85


def test_no_effect_is_read_from_the_interval_and_rarely_wrong_at_the_margin():
    """A true gain of exactly the margin (2 points; 10 seeds, 2,000 examples): "no effect" would be
    wrong, and is said in at most 5 % of cells (the interval must lie inside +-2 points)."""
    rng = np.random.default_rng(3)
    wrong = 0
    for _ in range(300):
        est = _cell(rng, 0.02, 10, n=2000, seed_sd=0.01)
        flag, _ = significance.reading(est.gain, est.p, 1.0, (est.ci_low, est.ci_high), 0.05, 0.02)
        wrong += flag == "no effect"
    assert wrong / 300 <= 0.05


def test_no_effect_is_said_when_the_interval_lies_inside_the_margin():
    flag, text = significance.reading(0.002, 0.6, 0.6, (-0.008, 0.012), 0.05, 0.02)
    assert flag == "no effect" and "inside +-2.0 points" in text
    flag, text = significance.reading(0.002, 0.6, 0.6, (-0.03, 0.034), 0.05, 0.02)
    assert flag == "inconclusive" and "[-3.0, +3.4]" in text


def test_a_ceiling_with_tied_seeds_is_not_a_finding():
    """Transfer right on all 150 examples, each of 3 baseline seeds wrong on one different example:
    every seed's gain is +0.67 points, their spread 0. The seed part is floored at what the bootstrap
    shows of the seed-by-example variation, so the gain is not flagged (3 discordant pairs of 450)."""
    rng = np.random.default_rng(0)
    transfer = [np.ones((150, 1)) for _ in range(3)]
    baseline = []
    for wrong in (4, 77, 120):
        b = np.ones((150, 1))
        b[wrong] = 0
        baseline.append(b)
    weights = significance.example_weights(150, 1000, rng)
    full_t, full_b, boot_t, boot_b = significance.paired_replicates(
        transfer, baseline, lambda sums, k: sums[..., 0] / k, weights
    )
    est = significance.estimate(full_t - full_b, boot_t - boot_b, examples=150)
    assert est.gain == pytest.approx(1 / 150) and est.ci_low < 0 and est.p > 0.05


def test_identical_arms_get_an_interval_150_examples_can_support():
    """Nothing varies: not a zero-width interval, and no "no effect" that 150 examples cannot carry."""
    est = significance.estimate(np.zeros(3), np.zeros((3, 500)), examples=150)
    assert est.ci_high == pytest.approx(np.log(40) / 150) and est.ci_low == -est.ci_high
    flag, text = significance.reading(est.gain, est.p, 1.0, (est.ci_low, est.ci_high), 0.05, 0.02)
    assert flag == "inconclusive" and "[-2.5, +2.5]" in text
    assert significance.estimate(np.zeros(3), np.zeros((3, 500)), examples=2000).ci_high < 0.002


# --- the headline family -----------------------------------------------------------------------------


def _report_of(rng, effects: dict[str, tuple[float, int]], n=300) -> pd.DataFrame:
    """One gains table: intermediate name -> (true gain, seeds), one language, one target."""
    scores, blocks = [], []
    seeds = max(s for _, s in effects.values())
    for seed in range(1, seeds + 1):
        base = rng.random(n) < 0.5
        blocks.append(({"model": "m", "intermediate": "none", "target": "xnli", "seed": seed}, "en", base))
        for name, (delta, count) in effects.items():
            if seed > count:
                continue
            m = np.clip(delta + rng.normal(0, 0.1, n) + rng.normal(0, 0.01), -0.5, 0.5)
            cell = {"model": "m", "intermediate": name, "target": "xnli", "seed": seed}
            blocks.append((cell, "en", _transferred(rng, base, m)))
    for cell, lang, correct in blocks:
        scores.append({**cell, "language": lang, "value": correct.mean()})
    blocks = [(cell, lang, c.astype(np.int64)) for cell, lang, c in blocks]
    table, examples = _frames(scores, blocks, n)
    facts = {"xnli": TaskFacts("single_label", True, "accuracy")}
    return gains_table(table, examples, facts, ReportConfig(bootstrap=100))


@pytest.mark.slow
def test_the_headline_family_keeps_the_false_discovery_rate_and_leaves_out_one_seed_cells():
    """20 five-seed cells (5 with a real gain of 8 points), plus 10 one-seed cells with real gains of 10
    points that can never be findings: among the headline flags the share of false ones stays <= q."""
    rng = np.random.default_rng(4)
    effects = {f"real{i}": (0.08, 5) for i in range(5)} | {f"null{i}": (0.0, 5) for i in range(15)}
    effects |= {f"single{i}": (0.10, 1) for i in range(10)}
    shares, found = [], 0
    for _ in range(40):
        gains = _report_of(rng, effects)
        headline = gains[gains.family == "headline"]
        assert len(headline) == 20 and gains[gains.n_seeds == 1].q.isna().all()
        flagged = headline[headline.flag.isin(["positive", "negative"])]
        false = flagged.intermediate.str.startswith("null").sum()
        shares.append(false / max(1, len(flagged)))
        found += flagged.intermediate.str.startswith("real").sum()
    assert np.mean(shares) <= 0.05 + 0.02  # Monte Carlo slack: 40 reports
    assert found / (40 * 5) > 0.5  # and it finds the real gains


# --- the report as a whole: the 3-seed tail, many cells, the hierarchical reading --------------------
# The studies the next report will read have 20 cells or more, 3 seeds each, one baseline shared by
# every cell. A single cell's calibration (above) is not enough there: Benjamini-Hochberg reads the far
# tail of the p-values, and a flag on any row of any cell is read as a finding.


@pytest.mark.slow
def test_the_null_tail_at_three_seeds_is_right():
    """5,000 null cells at 3 seeds, the seed part about 5x the example part (as in the studies where the
    Welch degrees of freedom, read at a bound of the seed part, made p 3-7x too small below 0.0025):
    p <= 0.0025 in at most 0.4 % of cells (the nominal 0.25 % plus Monte Carlo slack: 12.5 expected,
    the old rule gave 0.9 %), and p <= 0.05 in 2.5-6 % (a test that holds the tail by never rejecting
    would fail here)."""
    rng = np.random.default_rng(36)
    p = np.array([_cell(rng, 0.0, 3, n=300).p for _ in range(5000)])
    assert np.mean(p <= 0.0025) <= 0.004, np.mean(p <= 0.0025)
    assert 0.025 <= np.mean(p <= 0.05) <= 0.06, np.mean(p <= 0.05)


def _cells_sharing_a_baseline(rng, deltas, seeds=3, n=300, resamples=100) -> list:
    """One report's headline estimates: a transfer arm per true gain in `deltas`, every one against the
    same baseline runs (as every cell of a study reads its target's one baseline arm)."""
    baseline = [rng.random(n) < 0.5 for _ in range(seeds)]
    out = []
    for delta in deltas:
        expected = delta + rng.normal(0, 0.1, n)
        transfer = []
        for base in baseline:
            m = np.clip(expected + rng.normal(0, 0.01), -0.5, 0.5)
            transfer.append(_transferred(rng, base, m).astype(float)[:, None])
        weights = significance.example_weights(n, resamples, rng)
        full_t, full_b, boot_t, boot_b = significance.paired_replicates(
            transfer, [b.astype(float)[:, None] for b in baseline], lambda sums, k: sums[..., 0] / k, weights
        )
        out.append(significance.estimate(full_t - full_b, boot_t - boot_b, examples=n))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("real", [0, 5])
def test_the_headline_family_of_20_cells_sharing_a_baseline_keeps_its_fdr_at_three_seeds(real):
    """20 cells at 3 seeds against one baseline, all null (the FDR is then the chance of any flag: it
    was 11.4 % with q = 5 %) or 5 with a real gain of 2 points (12-13 % before): the share of false
    flags among the flagged stays <= q."""
    rng = np.random.default_rng(3600 + real)
    shares = []
    for _ in range(250):  # (seeded: 0.028 and 0.018 here; 0.0xx at 500 reports too)
        cells = _cells_sharing_a_baseline(rng, [0.02] * real + [0.0] * (20 - real))
        hits = significance.q_values(np.array([c.p for c in cells])) <= 0.05
        shares.append(hits[real:].sum() / max(1, hits.sum()))
    assert np.mean(shares) <= 0.05 + 0.02, np.mean(shares)  # Monte Carlo slack: 250 reports


def _languages_report(rng, deltas: dict[str, float], seeds=3, n=150, languages=("en", "de", "fr")):
    """A gains table of cells in 3 languages (independent test sets), every cell against one baseline."""
    scores, blocks = [], []
    for seed in range(1, seeds + 1):
        for lang in languages:
            base = rng.random(n) < 0.5
            blocks.append(
                ({"model": "m", "intermediate": "none", "target": "xnli", "seed": seed}, lang, base)
            )
            for name, delta in deltas.items():
                m = np.clip(delta + rng.normal(0, 0.1, n) + rng.normal(0, 0.01), -0.5, 0.5)
                cell = {"model": "m", "intermediate": name, "target": "xnli", "seed": seed}
                blocks.append((cell, lang, _transferred(rng, base, m)))
    scores = [{**cell, "language": lang, "value": c.mean()} for cell, lang, c in blocks]
    table, examples = _frames(scores, [(cell, lang, c.astype(np.int64)) for cell, lang, c in blocks], n)
    facts = {"xnli": TaskFacts("single_label", False, "accuracy")}
    return gains_table(table, examples, facts, ReportConfig(bootstrap=100))


@pytest.mark.slow
def test_the_hierarchical_reading_keeps_false_flags_rare_across_the_whole_report():
    """20 cells in 3 languages against one baseline, 3 seeds: before, each cell's language rows were
    corrected within the cell alone, and 45-56 % of reports showed a flag on some null cell. Read
    hierarchically (a cell's rows only where its headline is flagged, at the Benjamini-Bogomolov level):
    with every cell null, a report shows any flag at all in <= q of reports; with 5 cells really +20
    points, the share of false flags among all flagged rows stays <= q, and the real cells' language
    rows are found."""
    rng = np.random.default_rng(3601)
    null = {f"null{i}": 0.0 for i in range(20)}
    any_flag = []
    for _ in range(60):
        gains = _languages_report(rng, null)
        any_flag.append(gains.flag.isin(["positive", "negative"]).any())
    assert np.mean(any_flag) <= 0.05 + 0.05, np.mean(any_flag)  # Monte Carlo slack: 60 reports
    mixed = {f"real{i}": 0.2 for i in range(5)} | {f"null{i}": 0.0 for i in range(15)}
    shares, found = [], []
    for _ in range(40):
        gains = _languages_report(rng, mixed)
        flagged = gains[gains.flag.isin(["positive", "negative"])]
        shares.append(flagged.intermediate.str.startswith("null").mean() if len(flagged) else 0.0)
        real_languages = gains[gains.intermediate.str.startswith("real") & (gains.language != "mean_all")]
        found.append(real_languages.flag.eq("positive").mean())
    assert np.mean(shares) <= 0.05 + 0.02, np.mean(shares)
    assert np.mean(found) > 0.5, np.mean(found)


def _ceiling_report(seeds: int, n: int = 150) -> pd.DataFrame:
    """Transfer right on every example with every seed; each baseline seed wrong on one other example;
    one language, so the language row and the headline (mean_all) are one test."""
    scores, blocks = [], []
    for seed in range(1, seeds + 1):
        base = np.ones(n, dtype=np.int64)
        base[seed * 7] = 0
        for arm, correct in (("x", np.ones(n, dtype=np.int64)), ("none", base)):
            cell = {"model": "m", "intermediate": arm, "target": "xnli", "seed": seed}
            scores.append({**cell, "language": "en", "value": correct.mean()})
            blocks.append((cell, "en", correct))
    table, examples = _frames(scores, blocks, n)
    facts = {"xnli": TaskFacts("single_label", True, "accuracy")}
    return gains_table(table, examples, facts, ReportConfig(bootstrap=1000))


def test_tied_seeds_at_the_ceiling_are_read_by_the_exact_test():
    """5 seeds: the normal reading of the seed-by-example variance gave p = 0.024 (flagged positive)
    where the exact McNemar test of 5 discordant pairs, all one way, gives 2 / 2^5 = 0.0625. The
    interval, which excluded 0, now reaches past it; the language row is the headline's own test."""
    gains = _ceiling_report(5).set_index("language")
    head, en = gains.loc["mean_all"], gains.loc["en"]
    assert head.family == "headline" and head.p == pytest.approx(0.0625) and head.flag != "positive"
    assert head.ci_low < 0 < head.ci_high and head.gain == pytest.approx(1 / 150)
    assert en.family == "headline copy" and (en.q, en.flag) == (head.q, head.flag)
