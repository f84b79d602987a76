"""The instrument's own checks on a real study: was the target learnt at all, and does the gain
machinery stay quiet when there is nothing to find (an A/A check), both from runs the study already has.

- Not learnt. A baseline whose dev score (its selection metric, mean over seeds) is within twice its
  own standard error of what a model that learnt nothing scores there (the training set's majority
  label for every example, or chance where that is higher; logged by every training stage as
  reference_dev/<task>/<metric>) has no skill for an intermediate task to improve or damage: every gain
  of that target says so in its reading ("target not learnt: gains are uninformative"), the page and
  the command line too. The standard error: sqrt(s^2 / S + m (1 - m) / n), the seeds' spread and the
  binomial error of a score m on n dev examples.
- A/A (`report.null_check`). A target's baseline seeds (at least 6) split into two pseudo-arms, the
  first half against the second paired in order, run through the same gains_table: nothing differs
  between them but the seeds, so a well-calibrated instrument flags about `report.fdr` of such cells
  after correction (usually none) and gives p <= 0.05 to about 5 % of rows before it. It costs no
  training.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from intertask.config import NONE
from intertask.report.gains import HEADLINE, OUTSIDE, gains_table

LEARNING_COLUMNS = ["model", "target", "seed", "metric", "dev", "reference", "dev_examples"]
LEARNT_COLUMNS = [
    "model",
    "target",
    "metric",
    "seeds",
    "dev",
    "dev_sd",
    "reference",
    "dev_examples",
    "margin",
    "noise",
    "learnt",
]
NOT_LEARNT = "target not learnt: gains are uninformative"
AA = "A/A"  # the pseudo intermediate of the A/A check
AA_MIN_SEEDS = 6


def learnt_table(learning: pd.DataFrame) -> pd.DataFrame:
    """Per model and target: the baseline's dev score against a model that learnt nothing."""
    rows = []
    known = learning.dropna(subset=["dev", "reference"])
    for (model, target, metric), group in known.groupby(["model", "target", "metric"], sort=False):
        dev = group.dev.to_numpy(float)
        mean, sd = float(dev.mean()), float(dev.std(ddof=1)) if len(dev) > 1 else 0.0
        n = float(group.dev_examples.max()) if group.dev_examples.notna().any() else np.nan
        binomial = min(max(mean, 0.0), 1.0) * (1 - min(max(mean, 0.0), 1.0)) / n if n and n > 0 else 0.0
        noise = 2 * float(np.sqrt(sd**2 / len(dev) + binomial))
        reference = float(group.reference.max())
        rows.append(
            (
                model,
                target,
                metric,
                len(dev),
                mean,
                sd,
                reference,
                n,
                mean - reference,
                noise,
                mean - reference > noise,
            )
        )
    return pd.DataFrame(rows, columns=LEARNT_COLUMNS)


def not_learnt_text(row) -> str:
    return (
        f"{NOT_LEARNT} (baseline dev {row.metric} {100 * row.dev:.1f} over {row.seeds} seed(s), a model that "
        f"learnt nothing {100 * row.reference:.1f}, noise +-{100 * row.noise:.1f})"
    )


def mark_not_learnt(gains: pd.DataFrame, learnt: pd.DataFrame) -> pd.DataFrame:
    """Every gain of a (model, target) whose baseline was not learnt says so first in its reading."""
    if gains.empty or learnt.empty:
        return gains
    gains = gains.copy()
    for row in learnt[~learnt.learnt.astype(bool)].itertuples():
        rows = (gains.model == row.model) & (gains.target == row.target)
        gains.loc[rows, "reading"] = not_learnt_text(row) + "; " + gains.loc[rows, "reading"]
    return gains


def null_check(scores: pd.DataFrame, examples: pd.DataFrame, facts, options) -> pd.DataFrame:
    """The A/A check: each (model, target, task, split) baseline with >= 6 seeds, its first half of
    seeds as a pseudo transfer arm against its second half, through gains_table."""
    baseline = scores[scores.intermediate == NONE]
    frames, example_frames = [], []
    for (model, target), group in baseline.groupby(["model", "target"], sort=False):
        seeds = sorted(set(group.seed))
        if len(seeds) < AA_MIN_SEEDS:
            continue
        half = len(seeds) // 2
        first = dict(zip(seeds[:half], range(1, half + 1), strict=True))
        second = dict(zip(seeds[half : 2 * half], range(1, half + 1), strict=True))
        for arm, renumber in ((AA, first), (NONE, second)):
            chosen = group[group.seed.isin(renumber)]
            frames.append(chosen.assign(intermediate=arm, seed=chosen.seed.map(renumber)))
            if not examples.empty:
                mine = examples[
                    (examples.model == model)
                    & (examples.target == target)
                    & (examples.intermediate == NONE)
                    & examples.seed.isin(renumber)
                ]
                example_frames.append(mine.assign(intermediate=arm, seed=mine.seed.map(renumber)))
    if not frames:
        return pd.DataFrame()
    pseudo = pd.concat(frames, ignore_index=True)
    pseudo_examples = pd.concat(example_frames, ignore_index=True) if example_frames else pd.DataFrame()
    return gains_table(pseudo, pseudo_examples, facts, options)


def null_summary(table: pd.DataFrame, alpha: float) -> str:
    """One line: how often the A/A check flags, against the nominal rates."""
    if table.empty:
        return f"A/A check: no baseline with {AA_MIN_SEEDS} or more seeds"
    tested = table[table.family != OUTSIDE]
    headline = tested[tested.family == HEADLINE]
    flagged = tested.flag.isin(["positive", "negative"])
    return (
        f"A/A check ({len(headline)} headline cell(s), {len(tested)} rows): "
        f"{int(flagged[headline.index].sum())} headline and {int(flagged.sum())} rows flagged after correction; "
        f"p <= {alpha:g} in {100 * float((tested.p <= alpha).mean()):.1f} % of rows (nominal {100 * alpha:.0f} %)"
    )
