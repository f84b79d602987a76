"""How sure a gain is: paired resampling of test examples, seeds, p- and q-values, detectable effects.

A cell's gain (intermediate -> target against target only, same model, evaluation task, language and
metric) is the mean over seeds of each seed's gain on the same test examples. Around the true gain (over
seeds and the population of test examples) it errs in two independent parts:

- the seed part: each seed's own deviation (initialisation, batch order, dropout, and how that seed's
  two models happen to differ on these examples). The S per-seed gains are S independent draws of it,
  so it is estimated from their spread, s^2 / S, with a t distribution of S - 1 degrees of freedom. It
  never reads 0 when the seeds tie: the seed-by-example part alone (below) is a lower bound of one
  seed's deviation, and seeds whose gains spread less than what it gives in 99.5 % of studies (a
  ceiling: every seed 149 of 150, each wrong on another example) have the seed part read from it, with
  z, instead of from their spread. (A floor that binds more often over-covers: the t interval is exact
  where the per-seed gains are normal, and tied seeds are the case where they are not.) With fewer than
  3 seeds it is not estimated, and the table says so (`seed_component`): the interval then covers the
  test sample only.
- the shared test-sample part: which examples the test set happened to contain, the same for every
  seed. It comes from a paired bootstrap of the examples: every replicate draws the examples once (with
  replacement) and recomputes each arm's metric on that draw for every seed from per-example statistics
  (metrics.from_sums: F1 is recomputed, not averaged). Per seed the replicate variance is
  V_own = E + I (example part E plus the seed-by-example part I); for the mean over seeds it is
  V = E + I / S. So I = (V_own - V) S / (S - 1) and E = V - I / S.

The interval is t_nu x sqrt(seed part + example part), with nu the Welch-Satterthwaite degrees of
freedom of that sum (S - 1 when the seeds dominate, towards infinity when the examples do), read at an
upper bound of the seed part (welch_df), and p the two-sided t tail of gain / se. Measured on simulated
studies (tests/test_significance.py, tests/test_calibration.py): adding the two half-widths in
quadrature, as before, covers up to 98 % where both parts matter; Welch at the estimate itself, 92 % at
3 seeds; this, 95-97 %. When nothing varies at all (both arms agree on every example with every seed) there is no
spread to read; the interval is then the rule-of-three bound on a disagreement rate that n examples
cannot tell from 0, +-ln(2 / alpha) / n, never a width of 0.

The minimum detectable effect at power 1 - beta is the true gain this design detects with that power:
the test's power integrated over the chi-square of the estimated seed part (t_{1-a/2} + t_{1-beta} falls
short of it at few degrees of freedom: 63-71 % power instead of 80 % at 3 seeds), read at an unbiased
estimate of the seed standard deviation (s / c4(S): s itself is low on average, by 11 % at 3 seeds).

q-values: Benjamini-Hochberg (or Benjamini-Yekutieli) within a family of gains (report/gains.py says
which). tests/test_significance.py and tests/test_calibration.py measure coverage (93-97 %, language
means of translated test sets included), power at the reported mde, the false discovery rate and the
equivalence reading on simulated studies with a known gain.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats


@dataclass(frozen=True)
class Estimate:
    gain: float
    se: float
    df: float
    ci_low: float
    ci_high: float
    p: float
    mde: float  # minimum detectable effect at the configured power
    seed_var: float  # NaN when not estimated (fewer than 3 seeds)
    example_var: float
    n_seeds: int


TIED = 0.005  # seeds spread less than this quantile of their example-level variation count as tied


WELCH_BOUND = 0.25  # the seed part's degrees of freedom are read at its 75 % upper bound (welch_df)


def rng_for(*key: object) -> np.random.Generator:
    """A generator seeded by a cell's key: the same report gives the same intervals."""
    return np.random.default_rng(zlib.crc32("\x1f".join(map(str, key)).encode()))


def example_weights(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, n) multiplicities of a bootstrap draw of n examples with replacement."""
    if n == 0:
        return np.zeros((resamples, 0))
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)


def estimate(
    seed_gains: np.ndarray,
    replicate_gains: np.ndarray,
    confidence: float = 0.95,
    power: float = 0.8,
    examples: float | None = None,
) -> Estimate:
    """One cell: `seed_gains` (S,) each seed's gain on the full test sample; `replicate_gains` (S, B)
    each seed's gain on every paired bootstrap draw of the examples (the same draws for every seed);
    `examples`: how many test items the cell has (for the bound when nothing varies)."""
    seed_gains = np.asarray(seed_gains, float)
    replicate_gains = np.atleast_2d(np.asarray(replicate_gains, float))
    n_seeds = len(seed_gains)
    gain = float(seed_gains.mean())
    alpha = 1 - confidence
    total = float(np.var(replicate_gains.mean(0), ddof=1)) if replicate_gains.shape[1] > 1 else 0.0
    if n_seeds >= 3:
        own = float(np.var(replicate_gains, ddof=1, axis=1).mean())
        interaction = max(0.0, (own - total) * n_seeds / (n_seeds - 1))  # I: one seed's seed-by-example var
        example_var = max(0.0, total - interaction / n_seeds)
        spread = float(np.var(seed_gains, ddof=1))
        seed_var = spread / n_seeds
        # tied seeds: a spread below what their own example-level variation gives in 99.5 % of studies;
        # their seed part is read from that variation (known from the bootstrap) instead
        tied = spread < interaction * stats.chi2.ppf(TIED, n_seeds - 1) / (n_seeds - 1)
        part, seed_df = (interaction / n_seeds, np.inf) if tied else (seed_var, n_seeds - 1.0)
        design = part if tied else spread / c4(n_seeds) ** 2 / n_seeds  # the mde reads s / c4(S)
    else:  # the seed part cannot be estimated: the interval covers the test sample only
        example_var, seed_var, part, seed_df, design = total, float("nan"), 0.0, np.inf, 0.0
    if part + example_var == 0:
        return _nothing_varies(gain, examples, alpha, seed_var, n_seeds)
    se = float(np.sqrt(part + example_var))
    df = welch_df(part, example_var, seed_df)
    width = float(stats.t.ppf(1 - alpha / 2, df)) * se
    p = float(2 * stats.t.sf(abs(gain) / se, df))
    mde = detectable_gain(design, example_var, seed_df, alpha, power)
    return Estimate(gain, se, df, gain - width, gain + width, p, mde, seed_var, example_var, n_seeds)


def welch_df(seed_part: float, example_part: float, seed_df: float) -> float:
    """Welch-Satterthwaite degrees of freedom of seed_part + example_part, where only the seed part is
    estimated (with seed_df degrees of freedom) and the example part is known from the bootstrap. Read
    at an upper bound of the seed part (its 75 % chi-square bound): with the estimate itself, a seed
    part that happens to come out small also buys degrees of freedom it may not have, and the interval
    under-covers at 3 seeds (92 % in test_significance's studies); so it covers 95-97 %."""
    if seed_part == 0 or not np.isfinite(seed_df):
        return float("inf")
    upper = seed_part * seed_df / stats.chi2.ppf(WELCH_BOUND, seed_df)
    return float((upper + example_part) ** 2 / (upper**2 / seed_df))


def _nothing_varies(gain, examples, alpha, seed_var, n_seeds) -> Estimate:
    """Both arms agree on every example with every seed: no spread to read. The interval is the
    rule-of-three bound on how often two arms could disagree unseen among n examples, ln(2/alpha)/n (a
    gain of a metric in [0, 1] moves by at most the share of examples on which the arms differ); it is
    also the mde: a smaller gain could not be told from none."""
    n = float(examples) if examples and examples > 0 else 1.0
    bound = float(np.log(2 / alpha) / n)
    se = bound / stats.norm.ppf(1 - alpha / 2)
    return Estimate(gain, se, float("inf"), gain - bound, gain + bound, 1.0, bound, seed_var, 0.0, n_seeds)


def detectable_gain(
    seed_part: float, example_part: float, seed_df: float, alpha: float, power: float
) -> float:
    """The true gain that the test of `estimate` detects with probability `power` when the seed part's
    variance is `seed_part` (estimated with seed_df degrees of freedom: its estimate follows
    seed_part x chi2 / seed_df) and the example part `example_part` is known. Integrated over that
    chi-square (200 quantiles), with the Welch degrees of freedom of each, so it holds for 3 seeds as for
    many (t_{1-a/2} + t_{power} falls short of it at few degrees of freedom)."""
    if not np.isfinite(seed_df) or seed_part == 0:
        estimates = np.full(1, seed_part)
    else:
        estimates = seed_part * stats.chi2.ppf((np.arange(200) + 0.5) / 200, seed_df) / seed_df
    dfs = np.array([welch_df(a, example_part, seed_df) for a in estimates])
    widths = stats.t.ppf(1 - alpha / 2, dfs) * np.sqrt(estimates + example_part)
    sd = np.sqrt(seed_part + example_part)

    def shortfall(gain: float) -> float:
        reached = stats.norm.sf((widths - gain) / sd) + stats.norm.cdf((-widths - gain) / sd)
        return float(reached.mean()) - power

    return float(optimize.brentq(shortfall, 0.0, 20 * (widths.max() + sd)))


def c4(n: int) -> float:
    """E[s] / sigma for the sample standard deviation of n normal draws."""
    return float(np.sqrt(2 / (n - 1)) * np.exp(special.gammaln(n / 2) - special.gammaln((n - 1) / 2)))


def paired_replicates(
    transfer: Sequence[np.ndarray],
    baseline: Sequence[np.ndarray],
    metric: Callable[[np.ndarray, float], np.ndarray],
    weights: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per seed: each arm's per-example statistics (n, k), the same n examples in the same order.
    `metric(sums, n)` maps summed statistics (..., k) and the sample size to the metric. Returns the
    per-seed metric of each arm on the full sample (S,), and each arm's per-seed metric on every draw of
    `weights` (S, B). A draw's size is its weights' sum: n for a draw of these examples, another number
    for the columns of one language in a draw shared by several (report/gains.py)."""
    n, sizes = weights.shape[1], weights.sum(1)
    full_t = np.array([metric(x.sum(0), n) for x in transfer])
    full_b = np.array([metric(x.sum(0), n) for x in baseline])
    boot_t = np.stack([metric(weights @ x, sizes) for x in transfer])
    boot_b = np.stack([metric(weights @ x, sizes) for x in baseline])
    return full_t, full_b, boot_t, boot_b


def q_values(p: np.ndarray, method: str = "bh") -> np.ndarray:
    """Benjamini-Hochberg (`bh`) or Benjamini-Yekutieli (`by`: any dependence between the gains)
    adjusted p-values of one family (NaN stays NaN and does not count)."""
    p = np.asarray(p, float)
    out = np.full(p.shape, np.nan)
    known = ~np.isnan(p)
    if known.any():
        out[known] = stats.false_discovery_control(p[known], method=method)
    return out


def points(value: float) -> str:
    return f"{100 * value:+.1f}"


def interval_text(low: float, high: float) -> str:
    return f"[{points(low)}, {points(high)}]"


def reading(
    gain: float,
    p: float,
    q: float,
    interval: tuple[float, float],
    fdr: float,
    smallest: float,
    alpha: float = 0.05,
    family: int = 1,
    n_seeds: int = 3,
) -> tuple[str, str]:
    """(flag, a sentence) of one cell, in points (metric x 100). `family`: how many gains its q-value
    was corrected over. A gain is positive / negative at q <= fdr; `no effect` only when its whole
    interval lies inside +-smallest (equivalence at the interval's level); otherwise inconclusive, with
    the interval. With fewer than 3 seeds nothing is a finding."""
    low, high = interval
    if np.isnan(p):
        return "inconclusive", "no per-example outcomes to test"
    span = f"{points(gain)} points {interval_text(low, high)}"
    if n_seeds < 3:
        return "inconclusive", (
            f"{span} for this training run over test samples; the training randomness is not in it "
            f"({n_seeds} seed(s)): not a finding"
        )
    if q <= fdr:
        kind = "positive" if gain > 0 else "negative"
        return kind, f"{kind}: {span} (q = {q:.2g})"
    if p <= alpha:
        return "inconclusive", (
            f"{span} (p = {p:.2g}), not significant once corrected for the {family} gains of its family "
            f"(q = {q:.2g})"
        )
    if -smallest < low and high < smallest:
        return "no effect", f"no effect: {span} lies inside +-{100 * smallest:.1f} points"
    return "inconclusive", f"inconclusive: {span} reaches beyond +-{100 * smallest:.1f} points"
