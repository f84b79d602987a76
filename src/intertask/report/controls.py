"""The instrument's own checks on a real study: was every trained model learnt at all, and does the
gain machinery stay quiet when there is nothing to find (an A/A check), both from runs the study has.

- Not learnt. A trained model whose dev score (its selection metric, mean over seeds) is within twice
  its own standard error of what a model that learnt nothing scores there (the training set's majority
  label for every example, or chance where that is higher; logged by every training stage as
  reference_dev/<task>/<metric>) learnt nothing. The standard error: sqrt(s^2 / S + m (1 - m) / n), the
  seeds' spread and the binomial error of a score m on n dev examples (learnt_margin). Checked for every
  training stage: intermediate stages, baseline targets, and the targets of transfer arms.
  - A baseline not learnt has no skill for an intermediate task to improve or damage: every gain of
    that target says so in its reading ("target not learnt: gains are uninformative").
  - An intermediate stage not learnt hands on a model that is the base model plus noise: every gain of
    its cells says so ("intermediate not learnt"). The stage itself says so when it ends, before its
    model is used (a notice printed and tagged on its run: stages/train.py), from its one seed.
  - A transfer arm's target not learnt is a result (the intermediate stage may have destroyed what the
    target needs), not a fault: listed, not marked -- unless the study has no baseline arm, where the
    table and the command line are the only check there is.
  The selection is biased, and said so: the same dev scores pick the best epoch. Extractive QA and
  retrieval have no model that learnt nothing to compare with: their stages are listed as not checked.
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
from intertask.metrics import learnt_margin
from intertask.report.flags import HEADLINE, OUTSIDE
from intertask.report.gains import gains_table

# stage: intermediate or target; intermediate: the arm's intermediate label (none for a baseline);
# task: the task the stage trained (one row per task of a multi-task stage)
LEARNING_COLUMNS = [
    "stage",
    "model",
    "intermediate",
    "task",
    "seed",
    "metric",
    "dev",
    "reference",
    "dev_examples",
]
LEARNT_COLUMNS = [
    "stage",
    "model",
    "intermediate",
    "task",
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
INTERMEDIATE_NOT_LEARNT = "intermediate not learnt"
AA = "A/A"  # the pseudo intermediate of the A/A check
AA_MIN_SEEDS = 6


def learnt_table(learning: pd.DataFrame) -> pd.DataFrame:
    """Per stage, model, arm and trained task: the dev score against a model that learnt nothing."""
    rows = []
    known = learning.dropna(subset=["dev", "reference"])
    keys = ["stage", "model", "intermediate", "task", "metric"]
    for key, group in known.groupby(keys, sort=False):
        dev = group.dev.to_numpy(float)
        n = float(group.dev_examples.max()) if group.dev_examples.notna().any() else np.nan
        reference = float(group.reference.max())
        margin, noise = learnt_margin(dev, reference, n)
        sd = float(dev.std(ddof=1)) if len(dev) > 1 else 0.0
        rows.append((*key, len(dev), float(dev.mean()), sd, reference, n, margin, noise, margin > noise))
    return pd.DataFrame(rows, columns=LEARNT_COLUMNS)


def unchecked(learning: pd.DataFrame) -> list[str]:
    """Trained (stage, task)s with no reference to check them against (extractive QA)."""
    missing = learning[learning.reference.isna()]
    return sorted({f"{r.stage} {r.task} ({r.model})" for r in missing.itertuples()})


def not_learnt_text(row) -> str:
    scores = (
        f"dev {row.metric} {100 * row.dev:.1f} over {row.seeds} seed(s), a model that learnt nothing "
        f"{100 * row.reference:.1f}, noise +-{100 * row.noise:.1f}"
    )
    if row.stage == "intermediate":
        return f"{INTERMEDIATE_NOT_LEARNT} ({row.task} {scores})"
    if row.intermediate == NONE:
        return f"{NOT_LEARNT} (baseline {scores})"
    return f"target not learnt after {row.intermediate} ({scores})"


def mark_not_learnt(gains: pd.DataFrame, learnt: pd.DataFrame) -> pd.DataFrame:
    """Every gain of a (model, target) whose baseline was not learnt, and of a (model, intermediate)
    whose intermediate stage was not learnt, says so first in its reading."""
    if gains.empty or learnt.empty:
        return gains
    gains = gains.copy()
    for row in learnt[~learnt.learnt.astype(bool)].itertuples():
        if row.stage == "intermediate":
            rows = (gains.model == row.model) & (gains.intermediate == row.intermediate)
        elif row.intermediate == NONE:
            rows = (gains.model == row.model) & (gains.target == row.task)
        else:
            continue  # a transfer arm's target: a result, listed in the table
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
