"""Gains over the baseline with their uncertainty: per cell, language and metric, the seeds and a
paired bootstrap of the test examples combined (significance.py), q-values within stated families,
flags and readings.

Joint draws. Every bootstrap draw of a cell is shared by both arms and every seed. For a task whose
languages are translations of the same items (`parallel: true`: XNLI, PAWS-X, XQuAD), one draw of the
items serves every language, so a language mean is resampled as the items it rests on: its outcomes
correlate across languages (an item hard in English is hard in German), and independent draws per
language would understate the mean's variance several-fold. Such a mean counts its distinct items, not
each translation. Other tasks draw each language independently.

Families (`report.correction`, Benjamini-Hochberg by default, Benjamini-Yekutieli as an option), read
hierarchically:
- headline: one row per model x intermediate x target x evaluation task, the task's headline metric
  (or, for a task that declares none, its first) on the study's headline language mean
  (`report.headline_language`, default mean_all), corrected together: the report's findings;
- headline copy: a row whose test is its cell's headline test (the same metric, gain, standard error
  and p: a one-language task's language row); it takes the headline's q and flag, not a second test;
- cell: the other rows of each cell (per language, secondary metrics, other means, XTREME groups).
  They are tested only in the cells the headline family selects (the headline flagged), at the level
  Benjamini and Bogomolov (2014) give families read after selection: within the cell
  Benjamini-Hochberg at fdr x R / m, R the cells selected of the m screened (q is reported scaled by
  m / R, so a flag is still q <= fdr). A cell without a headline row of its own (XTREME group rows) is
  selected when a headline of its model, intermediate, target and split is. Rows of cells not selected
  get no q and say they were not tested. What a flag on such a row promises: it appears only in a cell
  whose headline is a finding, and over the selected cells the expected share of false flags among a
  cell's flagged rows is at most fdr on average (proved for independent cells; the cells of one target
  share its baseline, and tests/test_calibration.py measures that case);
- none: rows with fewer than 3 seeds (never findings, and their p leaves the seed part out) and rows
  without per-example outcomes; their q is empty.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from intertask import metrics
from intertask.config import NONE
from intertask.metrics import EXAMPLE_KEYS
from intertask.report import significance
from intertask.report.flags import CELL, MIN_SEEDS, XTREME_TASK, TaskFacts, flagged

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
    "df",
    "ci_low",
    "ci_high",
    "p",
    "family",
    "q",
    "mde",
    "flag",
    "reading",
    "note",
    "example_var",  # the test-sample part of se^2 (significance.py); the rest is the seed part
]


CELL_KEYS = ["model", "intermediate", "target", "seed"]  # the tags that place a run in a study
QA_SCORE = "xtreme"  # XTREME's score of a QA task: (exact match + F1) / 2


XTREME_METRIC = "score"


def gains_table(
    scores: pd.DataFrame, examples: pd.DataFrame, tasks: Mapping[str, TaskFacts | str], options
) -> pd.DataFrame:
    """Every transfer cell against its baseline: per language and metric, the cross-language means, for
    QA tasks XTREME's (EM + F1) / 2, and XTREME's group scores of the tasks a cell evaluated; paired over
    seeds and test examples, q-values per family (module docstring)."""
    facts = {t: f if isinstance(f, TaskFacts) else TaskFacts(f) for t, f in tasks.items()}
    base = scores[scores.intermediate == NONE]
    transfer = scores[scores.intermediate != NONE]
    if base.empty or transfer.empty:
        return pd.DataFrame(columns=GAIN_COLUMNS)
    runs = _runs_by_arm(examples)
    rows, xtreme = [], {}
    for key, cell in transfer.groupby(CELL, sort=False, dropna=False):
        model, _, target, task, split = key
        baseline = base[
            (base.model == model) & (base.target == target) & (base.task == task) & (base.split == split)
        ]
        seeds = sorted(set(cell.seed) & set(baseline.seed))
        if not seeds:  # said in the table, not left out of it
            rows.extend(_unpaired_rows(key, cell, baseline))
            continue
        note = "; ".join(
            filter(None, [_unpaired_seeds(set(cell.seed), set(baseline.seed)), _left_out(cell, baseline)])
        )
        fact = facts.get(task, TaskFacts(None))
        found, values, items = _cell_gains(key, seeds, cell, baseline, runs, fact, options, note)
        rows.extend(found)
        if values is not None and task in metrics.XTREME_LANGUAGES:
            xtreme.setdefault((model, key[1], target, split), {})[task] = (tuple(seeds), values, items)
    rows.extend(_xtreme_group_rows(xtreme, options))
    frame = pd.DataFrame(rows, columns=GAIN_COLUMNS)
    return flagged(frame, facts, options)


def _unpaired_seeds(transfer: set, baseline: set) -> str:
    parts = []
    if transfer - baseline:
        parts.append(f"seed(s) {_listed(transfer - baseline)} missing in the baseline arm")
    if baseline - transfer:
        parts.append(f"seed(s) {_listed(baseline - transfer)} missing in the transfer arm")
    if not parts:
        return ""
    return f"{len(transfer & baseline)} paired seed(s): " + "; ".join(parts)


def cell_notes(gains: pd.DataFrame) -> list[str]:
    """One line per cell whose comparison is not the whole of what its config asked for (seeds one arm
    lacks, test examples not scored in every run or left out by the leakage guard, no interval)."""
    if gains.empty or "note" not in gains:
        return []
    noted = gains[gains.note.fillna("") != ""].drop_duplicates([*CELL, "note"])
    return [
        f"{r.intermediate} -> {r.target} ({r.task} {r.split}, {r.model}): {r.note}"
        for r in noted.itertuples()
    ]


def _unpaired_rows(key, cell: pd.DataFrame, baseline: pd.DataFrame) -> list[dict]:
    """A cell with no seed in common with its baseline: its rows, no gain, and why."""
    nan = float("nan")
    why = f"no gain: no baseline run of seed(s) {_listed(set(cell.seed))}" + (
        f" (the baseline arm has seed(s) {_listed(set(baseline.seed))})" if len(baseline) else ""
    )
    rows = []
    for (language, metric), group in cell.groupby(["language", "metric"], sort=False):
        est = significance.Estimate(nan, nan, nan, nan, nan, nan, nan, nan, nan, 0)
        rows.append(_gain_row(key, language, metric, est, group.value.mean(), nan, nan, why))
    return rows


def _left_out(cell: pd.DataFrame, baseline: pd.DataFrame) -> str:
    """The leakage guard's exclusions in either arm's runs, per language (the most of any run)."""
    both = pd.concat([cell, baseline])
    if "left_out" not in both or not (both.left_out > 0).any():
        return ""
    plain = both[~both.language.str.startswith("mean_") & (both.left_out > 0)]
    per_language = plain.groupby("language", sort=False).left_out.max()
    listed = ", ".join(f"{lang} {int(n)}" for lang, n in per_language.items())
    return f"leakage guard: test examples seen in training left out ({listed})"


def _listed(values) -> str:
    return ", ".join(map(str, sorted(values)))


def _runs_by_arm(examples: pd.DataFrame) -> dict:
    """(model, intermediate, target, task, split) -> (seed, language) -> that run's per-example
    statistics indexed by uid, grouped once for every cell of the report."""
    if examples.empty:
        return {}
    keys = [*CELL, "seed", "language"]
    columns = [c for c in examples.columns if c not in {*keys, *CELL_KEYS, *EXAMPLE_KEYS}]
    values, uids = examples[columns].to_numpy(float), examples.uid.to_numpy()
    out: dict = {}
    for (*arm, seed, language), rows in examples.groupby(keys, sort=False).indices.items():
        block = values[rows]
        kept = ~np.isnan(block).all(0)  # a column another task's rows brought in
        out.setdefault(tuple(arm), {})[(seed, language)] = pd.DataFrame(
            block[:, kept], index=uids[rows], columns=[c for c, k in zip(columns, kept, strict=True) if k]
        )
    return out


def _cell_gains(key, seeds, cell, baseline, runs, fact: TaskFacts, options, note: str):
    """(rows, per metric and language the paired arrays of `significance.paired_replicates` and the
    test items of all languages, or None, None when the runs logged no per-example outcomes)."""
    model, intermediate, target, task, split = key
    languages = [lang for lang in dict.fromkeys(cell.language) if not lang.startswith("mean_")]
    arms = {"transfer": runs.get(key, {}), "baseline": runs.get((model, NONE, target, task, split), {})}
    found = fact.kind is not None and all(
        (seed, lang) in arms[a] for a in arms for seed in seeds for lang in languages
    )
    if not found:
        if fact.kind is not None and arms["transfer"] | arms["baseline"]:
            note = _joined(note, _lacking(arms, seeds, languages))
        return _gains_without_examples(key, seeds, cell, baseline, note), None, None
    # per language: the transfer seeds' frames, then the baseline seeds'
    frames = {lang: [arms[a][(seed, lang)] for a in arms for seed in seeds] for lang in languages}
    uids, dropped = _common_items(frames)
    if dropped:
        listed = ", ".join(f"{lang} {n}" for lang, n in dropped.items())
        note = _joined(note, f"test examples not scored in every run left out of the comparison ({listed})")
    weights = _draws(key, uids, fact.parallel, options.bootstrap)
    values, paired = _replicates(frames, uids, list(dict.fromkeys(cell.metric)), len(seeds), fact, weights)
    rows = []
    for label, members in _levels(cell, languages):
        items = _items(uids, members, fact.parallel)
        for name, per_language in values.items():
            arrays = _mean_over(per_language, members)
            outcomes = [
                significance.Outcomes(t, b, paired[name][lang][1], 1 / (len(seeds) * len(members)))
                for lang in members
                for t, b in paired[name][lang][0]
            ]
            rows.append(_estimated_row(key, label, name, arrays, items, options, note, outcomes, members))
    return rows, values, _items(uids, languages, fact.parallel)


def _joined(note: str, more: str) -> str:
    return "; ".join(filter(None, [note, more]))


def _lacking(arms: dict, seeds, languages) -> str:
    """The note of a cell some of whose runs logged no per-example outcomes, naming them."""
    lacking = sorted(
        {
            f"{arm} seed {seed} {lang}"
            for arm, outcomes in arms.items()
            for seed in seeds
            for lang in languages
            if (seed, lang) not in outcomes
        }
    )
    return f"no interval: per-example outcomes missing for {', '.join(lacking)}"


def _common_items(frames: dict[str, list[pd.DataFrame]]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Per language the test items every run scored (sorted), and how many others some run scored."""
    uids, dropped = {}, {}
    for lang, group in frames.items():
        every = [set(f.index) for f in group]
        uids[lang] = np.array(sorted(set.intersection(*every)))
        if missing := len(set.union(*every)) - len(uids[lang]):
            dropped[lang] = missing
    return uids, dropped


def _replicates(frames, uids, names: list[str], n_seeds: int, fact: TaskFacts, weights) -> tuple[dict, dict]:
    """Per metric and language: (full_t (S,), full_b (S,), boot_t (S, B), boot_b (S, B)) from the
    runs' per-example sums on the common items; QA adds the XTREME score, the mean of EM and F1. And
    per metric and language the per-seed (transfer, baseline) statistics with the metric of their sums,
    for the permutation test."""
    values: dict[str, dict[str, tuple]] = {name: {} for name in names}
    paired: dict[str, dict[str, tuple]] = {name: {} for name in names}
    for lang, group in frames.items():
        columns = list(dict.fromkeys(c for f in group for c in f.columns if c not in EXAMPLE_KEYS))
        # a label column one run lacks (nobody predicted or had that label there) counts 0 for it
        stats = [_aligned(f, uids[lang], columns) for f in group]
        for name in names:

            def metric(sums, n, _name=name, _columns=tuple(columns)):
                return metrics.from_sums(
                    fact.kind, _name, {c: sums[..., j] for j, c in enumerate(_columns)}, n
                )

            values[name][lang] = significance.paired_replicates(
                stats[:n_seeds], stats[n_seeds:], metric, weights[lang]
            )
            paired[name][lang] = (list(zip(stats[:n_seeds], stats[n_seeds:], strict=True)), metric)
    if {"exact_match", "f1"} <= set(names):
        values[QA_SCORE] = {
            lang: tuple(
                (a + b) / 2 for a, b in zip(values["exact_match"][lang], values["f1"][lang], strict=True)
            )
            for lang in frames
        }
        paired[QA_SCORE] = {lang: (paired["f1"][lang][0], _qa_score(paired, lang)) for lang in frames}
    return values, paired


def _qa_score(paired: dict, lang: str):
    exact_match, f1 = paired["exact_match"][lang][1], paired["f1"][lang][1]
    return lambda sums, n: (exact_match(sums, n) + f1(sums, n)) / 2


def _aligned(frame: pd.DataFrame, uids: np.ndarray, columns: list[str]) -> np.ndarray:
    """A run's statistics on `uids` (rows) and `columns` (0 where the run lacks the column)."""
    out = np.zeros((len(uids), len(columns)))
    rows = frame.index.get_indexer(uids)
    for j, column in enumerate(columns):
        if column in frame.columns:
            out[:, j] = frame[column].to_numpy(float)[rows]
    return np.nan_to_num(out)


def _draws(key, uids: dict[str, np.ndarray], parallel: bool, resamples: int) -> dict[str, np.ndarray]:
    """Per language the (B, n) bootstrap multiplicities of its examples: for a parallel task one draw of
    the items shared by every language (each language reads the columns of its items), else a draw of
    its own."""
    if not parallel:
        return {
            lang: significance.example_weights(len(u), resamples, significance.rng_for(*key, lang))
            for lang, u in uids.items()
        }
    items = np.array(sorted(set().union(*(set(u) for u in uids.values()))))
    shared = significance.example_weights(len(items), resamples, significance.rng_for(*key))
    return {lang: shared[:, np.searchsorted(items, u)] for lang, u in uids.items()}


def _levels(cell: pd.DataFrame, languages: list[str]) -> list[tuple[str, list[str]]]:
    """Each language alone, then the means the evaluation reported, with their member languages."""
    levels = [(lang, [lang]) for lang in languages]
    for label in dict.fromkeys(cell.language):
        if label == metrics.MEAN_ALL:
            levels.append((label, languages))
        elif label.startswith("mean_non_"):
            levels.append((label, [lang for lang in languages if lang != label.removeprefix("mean_non_")]))
    return levels


def _items(uids: dict[str, np.ndarray], members: list[str], parallel: bool) -> int:
    """Test items behind a row: a translated item counts once in a parallel task's mean."""
    if parallel:
        return len(set().union(*(set(uids[lang]) for lang in members)))
    return sum(len(uids[lang]) for lang in members)


def _mean_over(per_language: dict[str, tuple], members: list[str]) -> tuple:
    return tuple(np.mean([per_language[lang][i] for lang in members], axis=0) for i in range(4))


def _estimated_row(key, label, name, arrays, items, options, note, outcomes=None, members=()) -> dict:
    """A row's estimate; with its per-seed outcomes, also read by the permutation test where few items
    are discordant (near a ceiling or floor) or nothing varies (significance.with_permutation). The
    permutation's draws are keyed by the languages the row covers, so two rows of the same languages
    (a one-language task's language and its mean) are one test."""
    full_t, full_b, boot_t, boot_b = arrays
    est = significance.estimate(full_t - full_b, boot_t - boot_b, options.confidence, options.power, items)
    if outcomes and len(full_t) >= MIN_SEEDS:
        limit = significance.EXACT_UNITS if est.varies else np.inf
        rng = significance.rng_for(*key, *members, name, "permutation")
        permutation = significance.permutation_p(outcomes, rng, limit)
        est = significance.with_permutation(est, permutation, options.confidence)
    return _gain_row(key, label, name, est, full_t.mean(), full_b.mean(), items, note)


def _xtreme_group_rows(xtreme: dict, options) -> list[dict]:
    """XTREME's group scores (and `overall` when all nine tasks are there) of the tasks one transfer cell
    evaluated, as gains with intervals: each task's XTREME metric averaged over its languages, then
    over the group's tasks, on the same draws (different tasks' test sets are drawn independently)."""
    rows = []
    for (model, intermediate, target, split), per_task in xtreme.items():
        if len({seeds for seeds, _, _ in per_task.values()}) != 1:
            continue  # the tasks were scored with different seeds: no common draw to average
        arrays, items = {}, {}
        for task, (_, values, count) in per_task.items():
            name = _xtreme_metric(task, values)
            if name is not None:
                arrays[task], items[task] = _mean_over(values[name], list(values[name])), count
        key = (model, intermediate, target, XTREME_TASK, split)
        every = [t for tasks in metrics.XTREME_GROUPS.values() for t in tasks]
        groups = {f"group/{g}": tasks for g, tasks in metrics.XTREME_GROUPS.items()} | {"overall": every}
        for label, tasks in groups.items():
            if all(t in arrays for t in tasks):
                mean = tuple(np.mean([arrays[t][i] for t in tasks], axis=0) for i in range(4))
                count = sum(items[t] for t in tasks)
                rows.append(_estimated_row(key, label, XTREME_METRIC, mean, count, options, ""))
    return rows


def _xtreme_metric(task: str, values: dict) -> str | None:
    """The metric XTREME averages for a task: (EM + F1) / 2 for QA, else F1, else accuracy."""
    if task in metrics.XTREME_GROUPS["qa"]:
        return QA_SCORE if QA_SCORE in values else None
    return next((m for m in ("f1", "accuracy") if m in values), None)


def _gain_row(key, language, metric, est, transfer, baseline, examples, note="") -> dict:
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
        "seed_component": "estimated" if est.n_seeds >= MIN_SEEDS else f"unestimated ({est.n_seeds} seed(s))",
        "examples": examples,
        "transfer": transfer,
        "baseline": baseline,
        "gain": est.gain,
        "se": est.se,
        "df": est.df,
        "ci_low": est.ci_low,
        "ci_high": est.ci_high,
        "p": est.p,
        "mde": est.mde,
        "note": note,
        "example_var": est.example_var,
    }


def _gains_without_examples(key, seeds, cell, baseline, note) -> list[dict]:
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
        rows.append(
            _gain_row(key, language, metric, est, group.value.mean(), group.baseline.mean(), nan, note)
        )
    return rows
