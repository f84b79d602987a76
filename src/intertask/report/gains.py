"""Gains over the baseline with their uncertainty: per cell, language and metric, the seeds and a
paired bootstrap of the test examples combined (significance.py), q-values over every gain, flags."""

from __future__ import annotations

import numpy as np
import pandas as pd

from intertask import metrics, significance
from intertask.config import NONE
from intertask.metrics import EXAMPLE_KEYS

KEYS = ["model", "intermediate", "target", "task", "split", "language", "metric"]
GAIN_COLUMNS = [
    *KEYS,
    "n_seeds",
    "seed_component",
    "examples",
    "transfer",
    "baseline",
    "gain",
    "se",
    "ci_low",
    "ci_high",
    "p",
    "q",
    "mde",
    "flag",
    "reading",
]
CELL = ["model", "intermediate", "target", "task", "split"]
CELL_KEYS = ["model", "intermediate", "target", "seed"]  # the tags that place a run in a study
QA_SCORE = "xtreme"  # XTREME's score of a QA task: (exact match + F1) / 2


def gains_table(scores: pd.DataFrame, examples: pd.DataFrame, kinds: dict[str, str], options) -> pd.DataFrame:
    """Every transfer cell against its baseline: per language and metric, the cross-language means and,
    for QA tasks, XTREME's (EM + F1) / 2; paired over seeds and test examples (module docstring)."""
    base = scores[scores.intermediate == NONE]
    transfer = scores[scores.intermediate != NONE]
    if base.empty or transfer.empty:
        return pd.DataFrame(columns=GAIN_COLUMNS)
    runs = _runs_by_arm(examples)
    rows = []
    for key, cell in transfer.groupby(CELL, sort=False, dropna=False):
        model, _, target, task, split = key
        baseline = base[
            (base.model == model) & (base.target == target) & (base.task == task) & (base.split == split)
        ]
        seeds = sorted(set(cell.seed) & set(baseline.seed))
        if seeds:
            rows.extend(_cell_gains(key, seeds, cell, baseline, runs, kinds.get(task), options))
    frame = pd.DataFrame(rows, columns=GAIN_COLUMNS)
    frame["q"] = significance.q_values(frame.p.to_numpy(float))
    cells = int(frame.p.notna().sum())
    readings = [
        significance.reading(
            g, p, q, m, options.fdr, options.smallest_effect, 1 - options.confidence, cells, int(n)
        )
        for g, p, q, m, n in zip(frame.gain, frame.p, frame.q, frame.mde, frame.n_seeds, strict=True)
    ]
    frame["flag"] = [f for f, _ in readings]
    frame["reading"] = [r for _, r in readings]
    return frame


def _runs_by_arm(examples: pd.DataFrame) -> dict:
    """(model, intermediate, target, task, split) -> (seed, language) -> that run's per-example
    statistics indexed by uid, grouped once for every cell of the report."""
    if examples.empty:
        return {}
    out: dict = {}
    for (*arm, seed, language), group in examples.groupby([*CELL, "seed", "language"], sort=False):
        out.setdefault(tuple(arm), {})[(seed, language)] = (
            group.set_index("uid").drop(columns=CELL_KEYS, errors="ignore").dropna(axis=1, how="all")
        )
    return out


def _cell_gains(key, seeds, cell, baseline, runs, kind, options) -> list[dict]:
    model, intermediate, target, task, split = key
    languages = [lang for lang in dict.fromkeys(cell.language) if not lang.startswith("mean_")]
    names = list(dict.fromkeys(cell.metric))
    arms = {"t": runs.get(key, {}), "b": runs.get((model, NONE, target, task, split), {})}
    found = kind is not None and all(
        (seed, lang) in arms[a] for a in arms for seed in seeds for lang in languages
    )
    if not found:
        return _gains_without_examples(key, seeds, cell, baseline)
    # per language and metric: (full_t (S,), full_b (S,), boot_t (S, B), boot_b (S, B)), and its size
    values: dict[str, dict[str, tuple]] = {name: {} for name in names}
    sizes = {}
    for lang in languages:
        frames = [arms[a][(seed, lang)] for a in ("t", "b") for seed in seeds]
        uids = sorted(set.intersection(*(set(f.index) for f in frames)))
        # a label column one run lacks (nobody predicted or had that label there) counts 0 for it
        columns = list(dict.fromkeys(c for f in frames for c in f.columns if c not in EXAMPLE_KEYS))
        stats = [f.reindex(columns=columns).loc[uids].fillna(0).to_numpy(float) for f in frames]
        weights = significance.example_weights(len(uids), options.bootstrap, significance.rng_for(*key, lang))
        sizes[lang] = len(uids)
        for name in names:

            def metric(sums, n, _name=name, _columns=tuple(columns)):
                return metrics.from_sums(kind, _name, {c: sums[..., j] for j, c in enumerate(_columns)}, n)

            values[name][lang] = significance.paired_replicates(
                stats[: len(seeds)], stats[len(seeds) :], metric, weights
            )
    if {"exact_match", "f1"} <= set(names):
        values[QA_SCORE] = {
            lang: tuple(
                (a + b) / 2 for a, b in zip(values["exact_match"][lang], values["f1"][lang], strict=True)
            )
            for lang in languages
        }
    levels = [(lang, [lang]) for lang in languages]
    for label in dict.fromkeys(cell.language):
        if label == metrics.MEAN_ALL:
            levels.append((label, languages))
        elif label.startswith("mean_non_"):
            levels.append((label, [lang for lang in languages if lang != label.removeprefix("mean_non_")]))
    rows = []
    for label, members in levels:
        for name, per_language in values.items():
            full_t, full_b, boot_t, boot_b = (
                np.mean([per_language[lang][i] for lang in members], axis=0) for i in range(4)
            )
            est = significance.estimate(full_t - full_b, boot_t - boot_b, options.confidence, options.power)
            rows.append(
                _gain_row(
                    key, label, name, est, full_t.mean(), full_b.mean(), sum(sizes[lang] for lang in members)
                )
            )
    return rows


def _gain_row(key, language, metric, est, transfer, baseline, examples) -> dict:
    model, intermediate, target, task, split = key
    return {
        "model": model,
        "intermediate": intermediate,
        "target": target,
        "task": task,
        "split": split,
        "language": language,
        "metric": metric,
        "n_seeds": est.n_seeds,
        "seed_component": "estimated" if est.n_seeds >= 3 else f"unestimated ({est.n_seeds} seed(s))",
        "examples": examples,
        "transfer": transfer,
        "baseline": baseline,
        "gain": est.gain,
        "se": est.se,
        "ci_low": est.ci_low,
        "ci_high": est.ci_high,
        "p": est.p,
        "mde": est.mde,
    }


def _gains_without_examples(key, seeds, cell, baseline) -> list[dict]:
    """Runs logged before per-example outcomes existed: the gains, nothing to test them with."""
    on = ["language", "metric", "seed"]
    paired = cell[cell.seed.isin(seeds)].merge(
        baseline[on + ["value"]].rename(columns={"value": "baseline"}), on=on
    )
    rows = []
    for (language, metric), group in paired.groupby(["language", "metric"], sort=False):
        nan = float("nan")
        est = significance.Estimate(
            float((group.value - group.baseline).mean()), nan, nan, nan, nan, nan, nan, nan, nan, len(group)
        )
        rows.append(_gain_row(key, language, metric, est, group.value.mean(), group.baseline.mean(), nan))
    return rows
