"""How well each transferability estimator (`intertask predict`) ranked the intermediate tasks, against
the gains the study measured: per model, target and language group (all languages; each group the
evaluation averages, such as the zero-shot languages) with at least 3 intermediate choices, Spearman's
rho, NDCG@k and regret@k (transferability/scores.py).

Intervals by projection. The gains table gives each choice's gain an interval over seeds and test
examples (calibrated: tests/test_calibration.py). Widened so that all K hold at once (Bonferroni:
each at level 1 - alpha / K), they form a box that holds the true gains in at least 1 - alpha of
studies; the interval of a score is its smallest and largest value over that box (the measured gains,
the corners, the gains pushed towards and against the estimator's order, and 2,000 seeded draws in the
box). So it covers the score of the true gains at least as often (tests/test_predict.py measures it),
where a percentile bootstrap of a rank statistic does not near ties (88-93 % in the same test). A study
that tells no two choices apart (every pair of intervals overlaps) has a score that is `estimable` no:
its interval is as wide as the score's range allows, and the page says so.

Scores: Spearman's rho, NDCG@k, regret@1 and regret@k (k = 3, or one less than the choices): the points
of gain lost by taking the estimator's top choice (top k) instead of the best. Beside the estimators, two
baselines any estimator must beat, scored the same way and from the same box: `random choice` (every
choice tied: the expected score of a uniformly random order) and `own family` (the intermediate tasks of
the target's family first, the rest tied; only for targets that have one). Ties are scored as the mean
over random orders of the tied choices (seeded: 5,000 at the measured gains, 200 per point of the box).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats

from intertask import metrics
from intertask.config import NONE, ExperimentConfig, resolve
from intertask.transferability import scores as transferability

ESTIMATE_COLUMNS = ["model", "target", "intermediate", "estimator", "value", "note"]
COLUMNS = [
    "model",
    "target",
    "languages",  # mean_all, or a language group's mean such as mean_non_en (the zero-shot languages)
    "estimator",
    "choices",
    "seeds",
    "k",
    "score",
    "value",
    "ci_low",
    "ci_high",
    "estimable",  # the study tells at least two choices' gains apart (else the interval is the range)
]
MIN_CHOICES = 3
DRAWS = 2000
TIE_BREAKS = 200  # random orders of tied choices per gain vector of the box (the interval)
POINT_TIE_BREAKS = 5000  # ... at the measured gains (the point: Monte Carlo error under 0.1 point)
RANDOM, OWN_FAMILY = "random choice", "own family"


def measured_gains(cfg: ExperimentConfig, gains: pd.DataFrame) -> pd.DataFrame:
    """model, target, languages, intermediate, gain, se, df, n_seeds: each choice's gain on its target
    (the target task's headline metric), over all languages and each language group the evaluation
    reports, with the interval's standard error and degrees of freedom."""
    columns = ["model", "target", "languages", "intermediate", "gain", "se", "df", "n_seeds"]
    if gains.empty:
        return pd.DataFrame(columns=columns)
    catalog = resolve.catalog(cfg)
    primary = gains.target.map(lambda t: catalog.spec(t).headline_metric if t in catalog else "")
    rows = gains[
        (gains.task == gains.target) & (gains.metric == primary) & gains.language.str.startswith("mean_")
    ]
    out = rows.rename(columns={"language": "languages"})
    return out[out.intermediate != NONE][columns].reset_index(drop=True)


def estimator_scores(
    cfg: ExperimentConfig, gains: pd.DataFrame, estimates: pd.DataFrame | None
) -> tuple[pd.DataFrame, str]:
    """(the table, why nothing was scored or "")."""
    empty = pd.DataFrame(columns=COLUMNS)
    if estimates is None or estimates.empty:
        return empty, "no estimates: run `intertask predict` (or `predict: {before_training: true}`)"
    measured = measured_gains(cfg, gains)
    if measured.empty:
        return empty, "no measured gains (no baseline arm, or no evaluation of a target)"
    rows, too_few = [], []
    alpha = 1 - cfg.report.confidence
    for (model, target, languages), table in measured.groupby(["model", "target", "languages"], sort=False):
        table = table.dropna(subset=["gain"]).set_index("intermediate")
        if len(table) < MIN_CHOICES:
            if languages == metrics.MEAN_ALL:
                too_few.append(f"{target} ({len(table)} choices)")
            continue
        k = min(3, len(table) - 1)
        box = simultaneous_box(table, alpha)
        own = estimates[(estimates.model == model) & (estimates.target == target)]
        choices = [
            (e, v.set_index("intermediate").value.reindex(table.index))
            for e, v in own.groupby("estimator", sort=False)
        ]
        for estimator, predicted in choices + _baselines(cfg, target, table.index):
            if predicted.isna().any():
                continue  # not computed for every choice (e.g. LogME without every intermediate model)
            if len(np.unique(predicted.values)) == len(predicted):
                point = transferability.ranking_scores(predicted.values, table.gain.values, k)
            else:  # a baseline with ties: its expected score over random orders of the tied choices
                point = {
                    n: float(v[0])
                    for n, v in _scores_over(
                        predicted.values, table.gain.values[None, :], k, cfg.seed, POINT_TIE_BREAKS
                    ).items()
                }
            bounds = score_bounds(predicted.values, table.gain.values, box, k, seed=cfg.seed)
            for name, value in point.items():
                low, high = bounds[name]
                if np.isfinite(value):  # a baseline's point averages more random orders than its bounds
                    low, high = min(low, value), max(high, value)
                row = (
                    estimator,
                    len(table),
                    int(table.n_seeds.min()),
                    k,
                    name,
                    value,
                    low,
                    high,
                    box.separated,
                )
                rows.append((model, target, languages, *row))
    why = ""
    if not rows:
        why = f"fewer than {MIN_CHOICES} intermediate choices with gains for every target: " + ", ".join(
            too_few
        )
    return pd.DataFrame(rows, columns=COLUMNS), why


class _Box:
    """Simultaneous intervals of K gains (each at 1 - alpha / K), and whether any two are apart."""

    def __init__(self, low: np.ndarray, high: np.ndarray):
        self.low, self.high = low, high
        self.separated = bool(
            any(high[i] < low[j] or high[j] < low[i] for i, j in itertools.combinations(range(len(low)), 2))
        )


def simultaneous_box(table: pd.DataFrame, alpha: float) -> _Box:
    se = table.se.to_numpy(float)
    df = table.df.to_numpy(float)
    unknown = ~np.isfinite(se) | (table.n_seeds.to_numpy() < 3)
    c = stats.t.ppf(1 - alpha / (2 * len(table)), np.where(np.isfinite(df), df, np.inf))
    width = np.where(unknown, np.inf, c * np.nan_to_num(se))
    gain = table.gain.to_numpy(float)
    return _Box(gain - width, gain + width)


def _baselines(cfg: ExperimentConfig, target: str, choices) -> list[tuple[str, pd.Series]]:
    """The random choice (all tied) and, where some choice is of the target's family, that family first."""
    from intertask.report.tables import family_of

    catalog = resolve.catalog(cfg)
    out = [(RANDOM, pd.Series(0.0, index=choices))]
    family = catalog.spec(target).task_family if target in catalog else None
    own = pd.Series([float(family_of(cfg, c) == family) for c in choices], index=choices)
    if family is not None and own.any():
        out.append((OWN_FAMILY, own))
    return out


def _scores_over(
    predicted, points: np.ndarray, k: int, seed: int, draws: int = TIE_BREAKS
) -> dict[str, np.ndarray]:
    """ranking_scores_many, tied predictions scored as the mean over TIE_BREAKS random orders of the
    tied choices (a baseline's expected score)."""
    predicted = np.asarray(predicted, float)
    if len(np.unique(predicted)) == len(predicted):
        return transferability.ranking_scores_many(predicted, points, k)
    rng = np.random.default_rng(seed)
    ranks = stats.rankdata(predicted, method="dense")  # tiers 1, 2, ...: a tie-break never crosses one
    broken = ranks + rng.random((draws, len(ranks))) * 0.5  # one random order per row
    return {
        name: values.mean(axis=1)
        for name, values in transferability.ranking_scores_many(broken, points, k).items()
    }


def score_bounds(predicted, gains, box: _Box, k: int, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Each ranking score's smallest and largest value over gain vectors in `box` (module docstring).
    A gain without an interval (fewer than 3 seeds) may be anything: its scores span their range."""
    predicted, gains = np.asarray(predicted, float), np.asarray(gains, float)
    if not np.all(np.isfinite(box.high - box.low)):
        spread = np.nanmax(np.abs(gains)) * 10 + 1.0
        low = np.where(np.isfinite(box.low), box.low, gains - spread)
        high = np.where(np.isfinite(box.high), box.high, gains + spread)
        box = _Box(low, high)
    order = (stats.rankdata(predicted) - 1) / max(1, len(predicted) - 1)  # 0 (worst) .. 1 (best)
    points = [gains, box.low + order * (box.high - box.low), box.high - order * (box.high - box.low)]
    if len(gains) <= 10:
        for corner in itertools.product((0, 1), repeat=len(gains)):
            points.append(np.where(np.array(corner, bool), box.high, box.low))
    rng = np.random.default_rng(seed)
    points.extend(box.low + rng.random((DRAWS, len(gains))) * (box.high - box.low))
    values = _scores_over(predicted, np.array(points), k, seed)
    return {name: (float(np.nanmin(v)), float(np.nanmax(v))) for name, v in values.items()}
