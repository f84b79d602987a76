"""Families, q-values and flags of the gains table (gains.py's docstring says why): each row's family (the
headline family: one row per cell; a cell's other rows only where its headline is flagged), q-values
per family (Benjamini-Hochberg, then Benjamini-Bogomolov's level for a family read after selection),
and each row's flag and reading."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from intertask import metrics
from intertask.report import significance

CELL = ["model", "intermediate", "target", "task", "split"]


XTREME_TASK = "xtreme"  # the task column of XTREME group / overall rows


HEADLINE, SAME, WITHIN_CELL, OUTSIDE = "headline", "headline copy", "cell", "none"
MIN_SEEDS = 3


@dataclass(frozen=True)
class TaskFacts:
    """What the report needs of an evaluation task: its label kind (how metrics are recomputed), whether
    its languages are translations of the same items, and its headline metric."""

    kind: str | None
    parallel: bool = False
    headline_metric: str | None = None


def families(frame: pd.DataFrame, facts: Mapping[str, TaskFacts], headline_language: str) -> pd.Series:
    """Each row's family (module docstring): `headline`, `headline copy` (a row whose test is its
    cell's headline test: the same metric, gain, standard error and p, as a one-language task's
    language row), `cell` or `none`."""
    if frame.empty:
        return pd.Series([], dtype=object)
    declared = frame.task.map(lambda t: facts[t].headline_metric if t in facts else None)
    first = frame.groupby(CELL, sort=False, dropna=False).metric.transform("first")
    headline_metric = declared.where(declared.notna(), first)  # a task that declares none: its first
    headline_metric[frame.task == XTREME_TASK] = None  # XTREME's group rows summarise other cells
    language = _headline_languages(frame, headline_language)
    is_headline = (frame.metric == headline_metric) & (frame.language == language)
    testable = (frame.n_seeds >= MIN_SEEDS) & frame.p.notna()
    family = pd.Series(
        np.where(~testable, OUTSIDE, np.where(is_headline, HEADLINE, WITHIN_CELL)), index=frame.index
    )
    same = ["metric", "gain", "se", "p"]
    heads = frame[family == HEADLINE][[*CELL, *same]]
    rows = frame[family == WITHIN_CELL][[*CELL, *same]].reset_index()
    copies = rows.merge(heads, on=[*CELL, *same], how="inner")["index"]
    family[copies.to_numpy()] = SAME
    return family


def _headline_languages(frame: pd.DataFrame, wanted: str) -> pd.Series:
    """Per row the headline language of its cell: `wanted` where the cell evaluated it, else mean_all."""
    has = frame.groupby(CELL, sort=False, dropna=False).language.transform(lambda s: wanted in set(s))
    return pd.Series(np.where(has, wanted, metrics.MEAN_ALL), index=frame.index)


def _selected_cells(frame: pd.DataFrame, fdr: float) -> tuple[set, int]:
    """The cells whose rows are read (module docstring, hierarchical reading), and how many cells were
    screened. A cell is screened by its headline; a cell without a headline row of its own (XTREME
    group rows, task `xtreme`) by the headlines of its model, intermediate, target and split: it is
    selected when one of them is."""
    tested = frame[frame.family.isin([HEADLINE, WITHIN_CELL])]
    cells = set(tested[CELL].itertuples(index=False, name=None))
    heads = frame[frame.family == HEADLINE]
    flagged = {tuple(r) for r in heads[heads.q <= fdr][CELL].itertuples(index=False, name=None)}
    screened = {tuple(r) for r in heads[CELL].itertuples(index=False, name=None)}
    parents = {(m, i, t, s) for m, i, t, _, s in flagged}
    selected = {
        c for c in cells if c in flagged or (c not in screened and (c[0], c[1], c[2], c[4]) in parents)
    }
    return selected, len(cells)


def flagged(frame: pd.DataFrame, facts: Mapping[str, TaskFacts], options) -> pd.DataFrame:
    """q-values, hierarchically (module docstring): the headline family first, then the rows of the
    cells it selects, at the level Benjamini-Bogomolov give a family read after selection; then each
    row's flag and reading."""
    frame["family"] = families(frame, facts, options.headline_language)
    frame["q"] = np.nan
    sizes = pd.Series(0, index=frame.index)
    tested = pd.Series(True, index=frame.index)
    headline = frame.family == HEADLINE
    if headline.any():
        frame.loc[headline, "q"] = significance.q_values(
            frame.p[headline].to_numpy(float), options.correction
        )
        sizes[headline] = int(headline.sum())
        head_q = frame[headline].set_index(CELL).q
        copies = frame.family == SAME
        frame.loc[copies, "q"] = [head_q.get(tuple(r)) for r in frame[copies][CELL].itertuples(index=False)]
        sizes[copies] = int(headline.sum())
    selected, screened = _selected_cells(frame, options.fdr)
    within = frame[frame.family == WITHIN_CELL]
    for cell, members in within.groupby(CELL, sort=False, dropna=False):
        if cell not in selected:
            tested[members.index] = False
            continue
        q = significance.q_values(members.p.to_numpy(float), options.correction)
        frame.loc[members.index, "q"] = np.minimum(1.0, q * screened / len(selected))
        sizes[members.index] = len(members)
    readings = [
        significance.reading(
            r.gain,
            r.p,
            r.q,
            (r.ci_low, r.ci_high),
            options.fdr,
            options.smallest_effect,
            1 - options.confidence,
            int(size),
            int(r.n_seeds),
            bool(read),
        )
        for r, size, read in zip(frame.itertuples(), sizes, tested, strict=True)
    ]
    frame["flag"] = [f for f, _ in readings]
    frame["reading"] = [r for _, r in readings]
    return frame
