"""How well each transferability estimator (`intertask predict`) ranked the intermediate tasks, against
the gains the study measured: per model, target and language group (all languages; each group the
evaluation averages, such as the zero-shot languages) with at least 3 intermediate choices, Spearman's
rho, NDCG@k and regret@k (transferability.py), each with a bootstrap interval over seeds (the seeds
resampled together for every choice, gains recomputed as transfer minus baseline of the same seed).
`defined` is the share of resamples in which the score exists: Spearman's rho does not when every
choice's gain is the same (a target where every arm predicts the majority class), and the interval is
over those resamples only -- a low share says the ranking itself is mostly noise."""

from __future__ import annotations

import numpy as np
import pandas as pd

from intertask import metrics, resolve, transferability
from intertask.config import NONE, ExperimentConfig

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
    "defined",  # share of the bootstrap resamples where the score exists (Spearman needs unequal gains)
]
MIN_CHOICES = 3


GAIN_KEYS = ["model", "target", "languages", "intermediate", "seed"]


def per_seed_gains(cfg: ExperimentConfig, scores: pd.DataFrame) -> pd.DataFrame:
    """model, target, languages, intermediate, seed, gain: the target's headline metric, averaged over
    every evaluated language (mean_all) and over each language group the evaluation reports (e.g.
    mean_non_en), of the transfer cell minus the baseline cell of the same model, target and seed."""
    if scores.empty:
        return pd.DataFrame(columns=[*GAIN_KEYS, "gain"])
    catalog = resolve.catalog(cfg)
    primary = scores.target.map(lambda t: catalog.spec(t).headline_metric if t in catalog else "")
    group = scores.language.astype(str).str.startswith("mean_")
    rows = scores[(scores.task == scores.target) & (scores.metric == primary) & group]
    keyed = rows.rename(columns={"language": "languages"}).set_index(GAIN_KEYS).value
    keyed = keyed[~keyed.index.duplicated()]
    baseline = keyed.xs(NONE, level="intermediate")
    out = []
    for (model, target, languages, intermediate, seed), value in keyed.items():
        if intermediate != NONE and (model, target, languages, seed) in baseline.index:
            gain = value - baseline.loc[(model, target, languages, seed)]
            out.append((model, target, languages, intermediate, seed, gain))
    return pd.DataFrame(out, columns=[*GAIN_KEYS, "gain"])


def estimator_scores(
    cfg: ExperimentConfig, scores: pd.DataFrame, estimates: pd.DataFrame | None
) -> tuple[pd.DataFrame, str]:
    """(the table, why nothing was scored or "")."""
    empty = pd.DataFrame(columns=COLUMNS)
    if estimates is None or estimates.empty:
        return empty, "no estimates: run `intertask predict` (or `predict: {before_training: true}`)"
    gains = per_seed_gains(cfg, scores)
    if gains.empty:
        return empty, "no measured gains (no baseline arm, or no evaluation of a target)"
    rng = np.random.default_rng(cfg.seed)
    rows, too_few = [], []
    for (model, target, languages), measured in gains.groupby(["model", "target", "languages"], sort=False):
        table = measured.pivot_table(index="seed", columns="intermediate", values="gain").dropna()
        if table.shape[1] < MIN_CHOICES:
            if languages == metrics.MEAN_ALL:
                too_few.append(f"{target} ({table.shape[1]} choices)")
            continue
        k = min(3, table.shape[1] - 1)
        own = estimates[(estimates.model == model) & (estimates.target == target)]
        for estimator, values in own.groupby("estimator", sort=False):
            predicted = values.set_index("intermediate").value.reindex(table.columns)
            if predicted.isna().any():
                continue  # not computed for every choice (e.g. LogME without every intermediate model)
            point = transferability.ranking_scores(predicted.values, table.mean().values, k)
            draws = {name: [] for name in point}
            for _ in range(cfg.report.bootstrap):
                sample = table.iloc[rng.integers(0, len(table), len(table))].mean().values
                for name, value in transferability.ranking_scores(predicted.values, sample, k).items():
                    draws[name].append(value)
            alpha = (1 - cfg.report.confidence) / 2
            for name, value in point.items():
                drawn = np.asarray(draws[name], float)
                defined = float(np.mean(~np.isnan(drawn)))
                low, high = (np.nan, np.nan)
                if len(table) > 1 and defined > 0:
                    low, high = np.nanquantile(drawn, [alpha, 1 - alpha])
                row = (estimator, table.shape[1], len(table), k, name, value, low, high, defined)
                rows.append((model, target, languages, *row))
    why = ""
    if not rows:
        why = f"fewer than {MIN_CHOICES} intermediate choices with gains for every target: " + ", ".join(
            too_few
        )
    return pd.DataFrame(rows, columns=COLUMNS), why
