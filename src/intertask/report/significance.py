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

The test and the interval read the seed part over its uncertainty (mixture_p): given the estimate,
the seed part's variance is estimate x (S - 1) / chi-square(S - 1) (its fiducial distribution), and p
is the normal tail of gain / sqrt(that + example part) averaged over it (a 128-node quadrature). With
no example part this is Student's t with S - 1 degrees of freedom exactly; with no seed part, the
normal. The interval is gain +- h x se, h where that p is alpha (mixture_quantile); `df` is the Student
t whose quantile is h. Why: the Welch-Satterthwaite degrees of freedom of the sum, even read at an upper
bound of the seed part as before, give a null cell whose 3 seeds happen to agree 5-1,300 degrees of
freedom and p from a near-normal tail; p <= 0.0025 then came 3-7x too often at 3 seeds, and the
Benjamini-Hochberg of a 20-cell family reads exactly that tail (tests/test_calibration.py: 0.9 % of
null cells under 0.0025 before, 0.13 % now). The price: where both parts matter the interval is
conservative (covers 95-98 %), as the Behrens-Fisher fiducial test is; the mde grows by about 1 %.

Few discordant items (significance.permutation_p). Near a ceiling or floor, where at most EXACT_UNITS
(seed, item) pairs have arms that differ, a normal reading of a handful of pairs is poor (5 seeds each
wrong on one other item read p = 0.024; the exact McNemar test says 0.0625). Such a row is also tested
by permuting the arms within each discordant pair (enumerated up to 2^14, else 20,000 draws) and keeps
the larger p; an interval that excluded 0 against that p widens to reach past it (with_permutation).
When nothing varies, the permutation's p is the test: a constant +100 points is not p = 1. Every
interval is cut to [-1, 1], the gains a metric in [0, 1] can have.

The minimum detectable effect at power 1 - beta is the true gain this design detects with that power:
the test's power integrated over the chi-square of the estimated seed part (t_{1-a/2} + t_{1-beta} falls
short of it at few degrees of freedom: 63-71 % power instead of 80 % at 3 seeds), read at an unbiased
estimate of the seed standard deviation (s / c4(S): s itself is low on average, by 11 % at 3 seeds).

q-values: Benjamini-Hochberg (or Benjamini-Yekutieli) within a family of gains (report/gains.py says
which, and how a cell's rows are read after its headline). tests/test_significance.py and
tests/test_calibration.py measure coverage (93-98 %, language means of translated test sets included),
power at the reported mde, the 3-seed tail, the false discovery rate of a 20-cell report and the
equivalence reading on simulated studies with a known gain.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

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
    varies: bool = True  # False: both arms' outcomes gave the same gain on every draw and seed


TIED = 0.005  # seeds spread less than this quantile of their example-level variation count as tied


QUADRATURE = 128  # nodes of the integral over the seed part's chi-square (mixture_p)
GAIN_BOUND = 1.0  # a gain of a metric in [0, 1] lies in [-1, 1]
EXACT_UNITS = 30  # a row with at most this many discordant (seed, item) pairs is also tested by permutation
ENUMERATED = 14  # up to 2^14 swaps are enumerated; more discordant pairs draw PERMUTATIONS at random
PERMUTATIONS = 20_000
CHUNK = 2_000  # swaps evaluated at a time


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
    share = part / (part + example_var)
    multiplier = float(mixture_quantile(share, seed_df, alpha))
    p = float(mixture_p(abs(gain) / se, share, seed_df))
    mde = detectable_gain(design, example_var, seed_df, alpha, power)
    low, high = _in_range(gain - multiplier * se, gain + multiplier * se)
    df = equivalent_df(multiplier, alpha)
    return Estimate(gain, se, df, low, high, p, mde, seed_var, example_var, n_seeds)


def _in_range(low: float, high: float) -> tuple[float, float]:
    """An interval of a gain cut to the gains a metric in [0, 1] can have: [-1, 1] (every metric
    intertask scores is a share or an F1 in [0, 1])."""
    return max(low, -GAIN_BOUND), min(high, GAIN_BOUND)


@lru_cache(maxsize=64)
def _chi2_nodes(seed_df: float) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature of E[f(W)], W ~ chi-square(seed_df): Gauss-Legendre over W's quantile u = s^3 (the
    cube clusters nodes where W is small and the mixture's variance large: the far tail)."""
    x, w = special.roots_legendre(QUADRATURE)
    s = (x + 1) / 2
    return stats.chi2.ppf(s**3, seed_df), w / 2 * 3 * s**2


def mixture_p(t, share, seed_df: float):
    """Two-sided p of a gain `t` standard errors from 0 when a `share` of its variance is a seed part
    estimated with `seed_df` degrees of freedom and the rest is known (module docstring): the normal
    tail averaged over the seed part's fiducial distribution, estimate x seed_df / chi-square(seed_df).
    At share 1 this is Student's t with seed_df degrees of freedom, at share 0 the normal."""
    t, share = np.asarray(t, float), np.asarray(share, float)
    if not np.isfinite(seed_df):
        return 2 * special.ndtr(-t)
    chi2, weights = _chi2_nodes(float(seed_df))
    scale = np.sqrt(share[..., None] * seed_df / chi2 + 1 - share[..., None])
    return np.minimum(1.0, (weights * 2 * special.ndtr(-t[..., None] / scale)).sum(-1))


def mixture_quantile(share, seed_df: float, alpha: float):
    """The multiplier h of the standard error at which mixture_p is alpha (the interval is gain +- h se):
    between the normal's z and Student's t with seed_df degrees of freedom; bisection, to 1e-9."""
    share = np.asarray(share, float)
    low = np.full(share.shape, stats.norm.ppf(1 - alpha / 2))
    if not np.isfinite(seed_df):
        return low
    high = np.full(share.shape, stats.t.ppf(1 - alpha / 2, seed_df) * 1.01)
    while np.any(mixture_p(high, share, seed_df) > alpha):  # never seen: the t quantile bounds it
        high = high * 1.5
    while np.max(high - low) > 1e-9:
        middle = (low + high) / 2
        above = mixture_p(middle, share, seed_df) > alpha
        low, high = np.where(above, middle, low), np.where(above, high, middle)
    return (low + high) / 2


@lru_cache(maxsize=64)
def _quantile_table(seed_df: float, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """mixture_quantile on a grid of shares, for the 200 seed-part estimates of each mde."""
    shares = np.linspace(0.0, 1.0, 513)
    return shares, mixture_quantile(shares, seed_df, alpha)


def equivalent_df(multiplier: float, alpha: float) -> float:
    """The degrees of freedom of the Student t whose 1 - alpha/2 quantile is `multiplier` (for the `df`
    column and simultaneous intervals, which read the interval as a t interval)."""
    z = stats.norm.ppf(1 - alpha / 2)
    if multiplier <= z * (1 + 1e-9):
        return float("inf")
    gap = lambda log_df: special.stdtrit(np.exp(log_df), 1 - alpha / 2) - multiplier  # noqa: E731
    if gap(np.log(1e6)) > 0:
        return float("inf")
    return float(np.exp(optimize.brentq(gap, np.log(0.5), np.log(1e6))))


def _nothing_varies(gain, examples, alpha, seed_var, n_seeds) -> Estimate:
    """Both arms agree on every example with every seed: no spread to read. The interval is the
    rule-of-three bound on how often two arms could disagree unseen among n examples, ln(2/alpha)/n (a
    gain of a metric in [0, 1] moves by at most the share of examples on which the arms differ); it is
    also the mde: a smaller gain could not be told from none. Its p is 1 until the permutation test
    (with_permutation) reads the discordant items: a constant gain of +100 points is no 'p = 1'."""
    n = float(examples) if examples and examples > 0 else 1.0
    bound = float(np.log(2 / alpha) / n)
    se = bound / stats.norm.ppf(1 - alpha / 2)
    low, high = _in_range(gain - bound, gain + bound)
    p = 1.0  # a gain of 0 that nothing moves; any other gain is tested by permutation (with_permutation)
    return Estimate(gain, se, float("inf"), low, high, p, bound, seed_var, 0.0, n_seeds, varies=False)


def detectable_gain(
    seed_part: float, example_part: float, seed_df: float, alpha: float, power: float
) -> float:
    """The true gain that the test of `estimate` detects with probability `power` when the seed part's
    variance is `seed_part` (estimated with seed_df degrees of freedom: its estimate follows
    seed_part x chi2 / seed_df) and the example part `example_part` is known. Integrated over that
    chi-square (200 quantiles), each estimate with the interval `estimate` would give it, so it holds
    for 3 seeds as for many (t_{1-a/2} + t_{power} falls short of it at few degrees of freedom)."""
    if not np.isfinite(seed_df) or seed_part == 0:
        estimates = np.full(1, seed_part)
        multipliers = np.full(1, stats.norm.ppf(1 - alpha / 2))
    else:
        estimates = seed_part * stats.chi2.ppf((np.arange(200) + 0.5) / 200, seed_df) / seed_df
        shares, table = _quantile_table(float(seed_df), alpha)
        multipliers = np.interp(estimates / (estimates + example_part), shares, table)
    widths = multipliers * np.sqrt(estimates + example_part)
    sd = np.sqrt(seed_part + example_part)

    def shortfall(gain: float) -> float:
        reached = special.ndtr((gain - widths) / sd) + special.ndtr((-widths - gain) / sd)
        return float(reached.mean()) - power

    return float(optimize.brentq(shortfall, 0.0, 20 * (widths.max() + sd)))


@dataclass(frozen=True)
class Outcomes:
    """One seed (of one language) of a row: both arms' per-item statistics (n, k), paired by row, the
    metric of summed statistics `metric(sums, n)`, and that seed's weight in the row's gain (1 / (seeds x
    languages): a row's gain is the mean over its languages of the mean over seeds)."""

    transfer: np.ndarray
    baseline: np.ndarray
    metric: Callable[[np.ndarray, float], np.ndarray]
    weight: float


def permutation_p(
    outcomes: Sequence[Outcomes], rng: np.random.Generator, limit: float = EXACT_UNITS
) -> float | None:
    """Two-sided p of a row's gain under the sharp null that the two arms are exchangeable within every
    (seed, item) pair: each pair on which they differ (a discordant pair) is swapped or not, the metric
    recomputed from the swapped sums, and p is the share of the 2^D swaps (all of them up to D =
    ENUMERATED, else PERMUTATIONS random ones, counting the observed) whose gain is at least as far
    from 0. None where there are more than `limit` discordant pairs (the normal reading holds there).
    With all D discordant pairs on one side and equal weights this is the exact sign (McNemar) test,
    2 / 2^D."""
    moved = [o.transfer - o.baseline for o in outcomes]
    differ = [np.flatnonzero(np.any(m != 0, axis=1)) for m in moved]
    units = sum(len(d) for d in differ)
    if units == 0:
        return 1.0
    if units > limit:
        return None
    exact = units <= ENUMERATED
    totals = [(len(o.transfer), o.transfer.sum(0), o.baseline.sum(0)) for o in outcomes]
    observed = sum(
        o.weight * float(o.metric(t, n) - o.metric(b, n))
        for o, (n, t, b) in zip(outcomes, totals, strict=True)
    )
    draws = 2**units if exact else PERMUTATIONS
    extreme = 0
    for first in range(0, draws, CHUNK):
        count = min(CHUNK, draws - first)
        if exact:
            swaps = ((np.arange(first, first + count)[:, None] >> np.arange(units)) & 1).astype(float)
        else:
            swaps = rng.integers(0, 2, (count, units)).astype(float)
        swapped, start = np.zeros(count), 0
        for o, m, d, (n, total_t, total_b) in zip(outcomes, moved, differ, totals, strict=True):
            shift = swaps[:, start : start + len(d)] @ m[d]  # (draws, k): the swapped pairs' differences
            start += len(d)
            swapped += o.weight * (o.metric(total_t - shift, n) - o.metric(total_b + shift, n))
        extreme += int(np.sum(np.abs(swapped) >= abs(observed) * (1 - 1e-9) - 1e-12))
    return extreme / draws if exact else (extreme + 1) / (draws + 1)


def with_permutation(est: Estimate, permutation: float | None, confidence: float = 0.95) -> Estimate:
    """The estimate read with a permutation test's p (permutation_p; None: not run). Where something
    varies, p is the larger of the two: each is valid where its approximation holds (the t mixture with
    many discordant items, the permutation with few), so the larger one is valid wherever either is.
    Where nothing varies the t mixture has no spread to read and the permutation's p is the test. An
    interval stays consistent with its p: one that excluded 0 while the permutation's p is above alpha
    is widened to the test-based standard error |gain| / z_{p/2} (Miettinen), which reaches past 0."""
    if permutation is None:
        return est
    if not est.varies:
        return replace(est, p=float(permutation))
    if permutation <= est.p:
        return est
    alpha = 1 - confidence
    if permutation <= alpha or est.ci_low <= 0 <= est.ci_high:  # the interval already agrees with p
        return replace(est, p=float(permutation))
    se = max(est.se, abs(est.gain) / stats.norm.isf(permutation / 2))
    multiplier = stats.t.ppf(1 - alpha / 2, est.df)
    low, high = _in_range(est.gain - multiplier * se, est.gain + multiplier * se)
    return replace(est, se=float(se), ci_low=low, ci_high=high, p=float(permutation))


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
    tested: bool = True,
) -> tuple[str, str]:
    """(flag, a sentence) of one cell, in points (metric x 100). `family`: how many gains its q-value
    was corrected over. A gain is positive / negative at q <= fdr; `no effect` only when its whole
    interval lies inside +-smallest (equivalence at the interval's level); otherwise inconclusive, with
    the interval. With fewer than 3 seeds nothing is a finding; nor is a row that was not `tested` (a
    row of a cell whose headline is not significant: report/gains.py, hierarchical reading)."""
    low, high = interval
    if np.isnan(p):
        return "inconclusive", "no per-example outcomes to test"
    span = f"{points(gain)} points {interval_text(low, high)}"
    if n_seeds < 3:
        return "inconclusive", (
            f"{span} for this training run over test samples; the training randomness is not in it "
            f"({n_seeds} seed(s)): not a finding"
        )
    if tested and q <= fdr:
        kind = "positive" if gain > 0 else "negative"
        return kind, f"{kind}: {span} (q = {q:.2g})"
    if tested and p <= alpha:
        return "inconclusive", (
            f"{span} (p = {p:.2g}), not significant once corrected for the {family} gains of its family "
            f"(q = {q:.2g})"
        )
    if -smallest < low and high < smallest:
        return "no effect", f"no effect: {span} lies inside +-{100 * smallest:.1f} points"
    if not tested:
        return "inconclusive", (
            f"inconclusive: {span} (p = {p:.2g}), not tested: its cell's headline gain is not significant"
        )
    return "inconclusive", f"inconclusive: {span} reaches beyond +-{100 * smallest:.1f} points"
