"""The study's questions asked of all its cells at once, each answer with its uncertainty (pooling.py):

- divergence  does the gain fall as the intermediate task's texts diverge from the target's? Per model
              and divergence measure, over every (intermediate, target) cell: the slope of gain on the
              measure (one intercept per target) with its interval, p and smallest detectable slope, and
              Spearman's rho within targets (pooled) with its interval, permutation p and the smallest
              rho this many cells detect; per target as well. The answer reads the slope's q
              (Benjamini-Hochberg over every row of the table: models x scopes x measures).
- families    the gain by intermediate-task family (per model group and target), with intervals: a
              family's mean over its cells, its variance the spread of all the target's cells around
              their mean (cells - 1 degrees of freedom) over the family's cell count. With one or two
              cells per family a family's own spread has no degrees of freedom to speak of; the whole
              target's spread also holds the differences between families, so this errs wide, never
              narrow (whether family matters is the contrast below, tested as such).
- contrasts   "same family as the target" against "other family", and one model group against another
              on the same (intermediate, target) pairs.
- degradation per target, the drop from the training language to each zero-shot language, baseline
              against transfer: does intermediate training change the cross-lingual drop (XTREME-D)?

A cell enters with its headline gain on its target task (summary_rows: the headline metric on the
headline language mean) and that gain's standard error from the gains table (seeds and test examples).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from intertask import metrics
from intertask.config import NONE, ExperimentConfig, resolve
from intertask.report import pooling, significance

MEASURES = ["vocabulary_overlap", "js_divergence", "embedding_cosine_distance", "mmd"]
ALL = "all targets"
DIVERGENCE_COLUMNS = [
    "model",
    "scope",  # a target, or ALL (one intercept per target)
    "measure",
    "cells",
    "measure_sd",  # the measure's standard deviation over the cells: the slope is per one sd
    "slope",
    "slope_low",
    "slope_high",
    "slope_p",
    "slope_mde",  # the smallest slope (per sd) detected with the configured power
    "tau2",  # residual variance beyond the cells' own: what the choice of tasks adds
    "rho",
    "rho_low",
    "rho_high",
    "rho_p",  # permutation of the gains within targets
    "detectable_rho",
    "slope_q",  # Benjamini-Hochberg over every row of the table (models x scopes x measures)
    "answer",
]
SIMILARITIES = {"vocabulary_overlap"}  # higher = closer; the other measures: higher = further apart
GROUP_COLUMNS = [
    "model_group",
    "target",
    "family",
    "cells",
    "gain",
    "se",
    "ci_low",
    "ci_high",
    "p",
    "positive",
    "negative",
]
CONTRAST_COLUMNS = [
    "contrast",
    "scope",
    "model_group",
    "cells",
    "estimate",
    "se",
    "ci_low",
    "ci_high",
    "p",
    "mde",
    "answer",
]
DEGRADATION_COLUMNS = [
    "model",
    "intermediate",
    "target",
    "source",  # task/language the target trained in (held-out test)
    "zero_shot",  # task/language (or the task's mean over languages)
    "metric",
    "seeds",
    "baseline_drop",
    "transfer_drop",
    "change",  # transfer_drop - baseline_drop: negative = intermediate training narrows the drop
    "ci_low",
    "ci_high",
    "p",
]


def cell_gains(cfg: ExperimentConfig, gains: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, intermediate, target): the headline gain on the target task, its se, the
    model group and the intermediate task's family (and whether it is the target's own)."""
    from intertask.report.tables import family_of, group_of, summary_rows

    columns = [
        "model",
        "model_group",
        "intermediate",
        "family",
        "same_family",
        "target",
        "gain",
        "se",
        "ci_low",
        "ci_high",
        "n_seeds",
    ]
    headline = summary_rows(cfg, gains)
    headline = headline[(headline.task == headline.target) & (headline.intermediate != NONE)]
    headline = headline.dropna(subset=["gain"])
    if headline.empty:
        return pd.DataFrame(columns=columns)
    catalog = resolve.catalog(cfg)
    out = headline.assign(
        model_group=headline.model.map(lambda m: group_of(cfg, m)),
        family=headline.intermediate.map(lambda i: family_of(cfg, i)),
        same_family=[
            family_of(cfg, i) == (catalog.spec(t).task_family if t in catalog else None)
            for i, t in zip(headline.intermediate, headline.target, strict=True)
        ],
    )
    return out[columns].reset_index(drop=True)


def _answer(low: float, high: float, what: str) -> str:
    if not np.isfinite(low) or not np.isfinite(high):
        return "not estimable (too few cells)"
    if low > 0:
        return f"{what} > 0"
    if high < 0:
        return f"{what} < 0"
    return "no direction shown (interval holds 0)"


def divergence_answers(cfg: ExperimentConfig, cells: pd.DataFrame, divergence: pd.DataFrame) -> pd.DataFrame:
    """Per model and measure: slope and rank correlation of gain on divergence (module docstring)."""
    if cells.empty or divergence.empty:
        return pd.DataFrame(columns=DIVERGENCE_COLUMNS)
    options = cfg.report
    joined = cells.merge(divergence.drop(columns=["gain"], errors="ignore"), on=["intermediate", "target"])
    rows = []
    for model, mine in joined.groupby("model", sort=False):
        scopes = [(ALL, mine)] + [(t, g) for t, g in mine.groupby("target", sort=False)]
        for scope, part in scopes:
            if scope != ALL and mine.target.nunique() == 1:
                continue  # one target: its rows are the ALL rows
            for measure in [m for m in MEASURES if m in part]:
                rows.append(_divergence_row(model, scope, measure, part, options, cfg.seed))
    table = pd.DataFrame(rows, columns=DIVERGENCE_COLUMNS)
    tested = table.slope_p.notna()
    table["answer"] = table["answer"].astype(object)
    if tested.any():
        table.loc[tested, "slope_q"] = significance.q_values(
            table.slope_p[tested].to_numpy(float), options.correction
        )
        table.loc[tested, "answer"] = [_divergence_answer(r, options.fdr) for r in table[tested].itertuples()]
    return table


def _divergence_answer(row, fdr: float) -> str:
    """What a row says of the question, in its own words (a similarity's slope reads the other way)."""
    if not row.slope_q <= fdr:
        return (
            f"no relation shown (q {row.slope_q:.2g}; slope interval holds 0)"
            if row.slope_low <= 0 <= row.slope_high
            else f"no relation shown after correction (q {row.slope_q:.2g})"
        )
    falls = (row.slope < 0) != (row.measure in SIMILARITIES)
    return f"gain {'falls' if falls else 'rises'} as the tasks diverge (q {row.slope_q:.2g})"


def _divergence_row(model, scope, measure, part: pd.DataFrame, options, seed: int) -> dict:
    x = part[measure].to_numpy(float)
    sd = float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")
    row = {"model": model, "scope": scope, "measure": measure, "cells": len(part), "measure_sd": sd}
    if len(part) - part.target.nunique() < 2 or not sd > 0:
        return row | {"answer": "not estimable (too few cells)"}
    slope = pooling.slope_test(
        part.gain, part.se, x / sd, part.target, seed, options.confidence, options.power
    )
    rank = pooling.rank_correlation(x, part.gain, part.target, seed, options.confidence, options.power)
    return row | {
        "slope": slope["estimate"],
        "slope_low": slope["ci_low"],
        "slope_high": slope["ci_high"],
        "slope_p": slope["p"],
        "slope_mde": slope["mde"],
        "tau2": slope["tau2"],
        "rho": rank["rho"],
        "rho_low": rank["ci_low"],
        "rho_high": rank["ci_high"],
        "rho_p": rank["p"],
        "detectable_rho": rank["detectable_rho"],
    }


def family_table(cfg: ExperimentConfig, cells: pd.DataFrame, gains: pd.DataFrame) -> pd.DataFrame:
    """Per model group and target: each intermediate family's mean gain with its interval (module
    docstring), and how many of its cells were flagged either way."""
    if cells.empty:
        return pd.DataFrame(columns=GROUP_COLUMNS)
    options = cfg.report
    flags = _flags(cfg, gains)
    rows = []
    for (group, target), part in cells.groupby(["model_group", "target"], sort=False):
        spread = pooling.mean(part.gain, part.se)  # the cells' variance around the target's mean
        for family in dict.fromkeys(part.family):
            mine = part[part.family == family]
            found = pooling.Fit(
                np.array([mine.gain.mean()]),
                spread.cov * len(part) / len(mine),
                spread.df,
                spread.tau2,
                len(mine),
            ).contrast([1.0], options.confidence, options.power)
            flagged = [
                flags.get((m, inter, target), "")
                for m, inter in zip(mine.model, mine.intermediate, strict=True)
            ]
            rows.append(
                (
                    group,
                    target,
                    family,
                    len(mine),
                    found["estimate"],
                    found["se"],
                    found["ci_low"],
                    found["ci_high"],
                    found["p"],
                    flagged.count("positive"),
                    flagged.count("negative"),
                )
            )
    return pd.DataFrame(rows, columns=GROUP_COLUMNS)


def _flags(cfg: ExperimentConfig, gains: pd.DataFrame) -> dict:
    from intertask.report.tables import summary_rows

    if gains.empty:
        return {}
    headline = summary_rows(cfg, gains)
    headline = headline[headline.task == headline.target]
    return {(r.model, r.intermediate, r.target): r.flag for r in headline.itertuples()}


def contrasts_table(cfg: ExperimentConfig, cells: pd.DataFrame) -> pd.DataFrame:
    """Same family as the target against other families (per model group: each target with a
    same-family cell, and all of them with one intercept per target); each pair of model groups on the
    (intermediate, target) pairs both trained (the difference of their gains)."""
    options = cfg.report
    rows = []
    for group, mine in cells.groupby("model_group", sort=False):
        usable = [
            t for t, g in mine.groupby("target", sort=False) if g.same_family.any() and (~g.same_family).any()
        ]
        scopes = [(t, mine[mine.target == t]) for t in usable]
        if len(usable) > 1:
            scopes.append((ALL, mine[mine.target.isin(usable)]))
        for scope, part in scopes:
            intercepts, _ = pooling.dummies(part.target)
            design = np.column_stack([intercepts, part.same_family.to_numpy(float)])
            fitted = pooling.fit(part.gain, part.se, design)
            found = fitted.contrast(np.eye(design.shape[1])[-1], options.confidence, options.power)
            rows.append(_contrast_row("same family - other family", scope, group, len(part), found))
    groups = list(dict.fromkeys(cells.model_group))
    for i, first in enumerate(groups):
        for second in groups[i + 1 :]:
            a = cells[cells.model_group == first].groupby(["intermediate", "target"])[["gain", "se"]].mean()
            b = cells[cells.model_group == second].groupby(["intermediate", "target"])[["gain", "se"]].mean()
            both = a.join(b, lsuffix="_a", rsuffix="_b", how="inner")
            if both.empty:
                continue
            difference = both.gain_a - both.gain_b
            se = np.sqrt(both.se_a**2 + both.se_b**2)
            found = pooling.mean(difference, se).contrast([1.0], options.confidence, options.power)
            scope = ", ".join(sorted(set(both.index.get_level_values("target"))))
            rows.append(_contrast_row(f"{first} - {second}", scope, f"{first} vs {second}", len(both), found))
    return pd.DataFrame(rows, columns=CONTRAST_COLUMNS)


def _contrast_row(name, scope, group, n, found: dict) -> tuple:
    return (
        name,
        scope,
        group,
        n,
        found["estimate"],
        found["se"],
        found["ci_low"],
        found["ci_high"],
        found["p"],
        found["mde"],
        _answer(found["ci_low"], found["ci_high"], "difference"),
    )


def degradation_table(cfg: ExperimentConfig, scores: pd.DataFrame, gains: pd.DataFrame) -> pd.DataFrame:
    """Per cell, target, metric and zero-shot set: the cross-lingual drop of the baseline and of the
    transfer arm, and its change with an interval (`degradation_rows`), then per target and zero-shot
    set the mean change over the intermediate tasks (intermediate `all`, a least-squares mean)."""
    rows = degradation_rows(cfg, scores, gains)
    if rows.empty:
        return rows
    options = cfg.report
    summary = []
    for (model, target, source, zero_shot, metric), part in rows.groupby(
        ["model", "target", "source", "zero_shot", "metric"], sort=False
    ):
        usable = part.dropna(subset=["change", "se"])
        if len(usable) < 2:
            continue
        found = pooling.mean(usable.change, usable.se).contrast([1.0], options.confidence, options.power)
        summary.append(
            {
                "model": model,
                "intermediate": "all",
                "target": target,
                "source": source,
                "zero_shot": zero_shot,
                "metric": metric,
                "seeds": int(usable.seeds.min()),
                "baseline_drop": float(usable.baseline_drop.mean()),
                "transfer_drop": float(usable.transfer_drop.mean()),
                "change": found["estimate"],
                "ci_low": found["ci_low"],
                "ci_high": found["ci_high"],
                "p": found["p"],
            }
        )
    return pd.concat([pd.DataFrame(summary), rows], ignore_index=True)[DEGRADATION_COLUMNS]


def degradation_rows(cfg: ExperimentConfig, scores: pd.DataFrame, gains: pd.DataFrame) -> pd.DataFrame:
    """Per transfer cell: the source is the target's training language on the first evaluated task with
    the target's head that has it (the target task itself, or a held-out set of that language: UD EWT
    for UD-POS); every other (task, language) row and each task's mean over its languages other than
    the source language is a zero-shot set. drop = source score - zero-shot score, per seed; change =
    the transfer arm's drop - the baseline's. Its interval: the seeds' spread of the per-seed change
    (seed part) and the two gains' example parts (independent test sets), read as the gains are
    (significance.mixture_quantile), so a change whose seeds agree is not called sure on 5 seeds."""
    columns = [*DEGRADATION_COLUMNS, "se"]
    if scores.empty or gains.empty:
        return pd.DataFrame(columns=columns)
    options = cfg.report
    alpha = 1 - options.confidence
    rows = []
    per_seed = scores.set_index(
        ["model", "intermediate", "target", "task", "language", "metric", "seed"]
    ).value
    per_seed = per_seed[~per_seed.index.duplicated()].sort_index()
    example_part = gains.set_index(["model", "intermediate", "target", "task", "language", "metric"])
    example_part = example_part[~example_part.index.duplicated()]
    for (model, intermediate, target), cell in scores[scores.intermediate != NONE].groupby(
        ["model", "intermediate", "target"], sort=False
    ):
        source_language = _training_language(cfg, target)
        sources = cell[(cell.language == source_language)]
        if sources.empty:
            continue
        source_task = target if target in set(sources.task) else sources.task.iloc[0]
        for metric in sorted(set(cell[cell.task == source_task].metric)):
            zero_shot = cell[(cell.metric == metric) & (cell.language != source_language)]
            for (task, language), _ in zero_shot.groupby(["task", "language"], sort=False):
                has_source = bool((cell[cell.task == task].language == source_language).any())
                if language.startswith("mean_") and has_source == (language == metrics.MEAN_ALL):
                    continue  # the zero-shot mean: mean_non_<source> where the task has it, else mean_all
                row = _change(
                    per_seed,
                    example_part,
                    (model, intermediate, target),
                    (source_task, source_language),
                    (task, language),
                    metric,
                    alpha,
                )
                if row is not None:
                    rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def _training_language(cfg: ExperimentConfig, target: str) -> str:
    from intertask.study import grid

    stage = cfg.target
    return grid.training_language(cfg, stage.language if stage else "en", (target,))


def _change(per_seed, example_part, cell, source, zero_shot, metric, alpha) -> dict | None:
    model, intermediate, target = cell

    def values(arm: str, where: tuple) -> pd.Series | None:
        try:
            return per_seed.loc[(model, arm, target, where[0], where[1], metric)]
        except KeyError:
            return None

    arms = [
        values(intermediate, source),
        values(NONE, source),
        values(intermediate, zero_shot),
        values(NONE, zero_shot),
    ]
    if any(a is None for a in arms):
        return None
    seeds = sorted(set.intersection(*(set(a.index) for a in arms)))
    if len(seeds) < 2:
        return None
    t_src, b_src, t_zs, b_zs = (a.loc[seeds].to_numpy(float) for a in arms)
    change = (t_src - t_zs) - (b_src - b_zs)  # transfer drop - baseline drop = gain(source) - gain(zero-shot)
    example = 0.0  # the two test sets' sampling parts; summed as independent (a translated test set's
    # languages share items, whose parts correlate positively: the sum then overstates, never understates)
    for where in (source, zero_shot):
        key = (model, intermediate, target, where[0], where[1], metric)
        part = example_part.example_var.get(key, np.nan) if key in example_part.index else np.nan
        example += float(part) if np.isfinite(part) else 0.0
    seed_var = float(np.var(change, ddof=1)) / len(seeds) if len(seeds) > 1 else float("nan")
    se = float(np.sqrt(seed_var + example))
    estimate = float(change.mean())
    if len(seeds) >= 3 and se > 0:
        h = float(significance.mixture_quantile(seed_var / (seed_var + example), len(seeds) - 1.0, alpha))
        p = float(
            significance.mixture_p(abs(estimate) / se, seed_var / (seed_var + example), len(seeds) - 1.0)
        )
        low, high = estimate - h * se, estimate + h * se
    else:
        low = high = p = float("nan")
    return {
        "model": model,
        "intermediate": intermediate,
        "target": target,
        "source": "/".join(source),
        "zero_shot": "/".join(zero_shot),
        "metric": metric,
        "seeds": len(seeds),
        "baseline_drop": float((b_src - b_zs).mean()),
        "transfer_drop": float((t_src - t_zs).mean()),
        "change": estimate,
        "ci_low": low,
        "ci_high": high,
        "p": p,
        "se": se,
    }


def groups_table(cfg: ExperimentConfig, scores: pd.DataFrame, gains: pd.DataFrame) -> pd.DataFrame:
    """The gain per model group x target x intermediate family, with its interval: 'does NLI or QA
    transfer better?'."""
    return family_table(cfg, cell_gains(cfg, gains, scores), gains)
