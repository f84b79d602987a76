"""The transfer report: tidy scores of every cell, gains over the baseline with their uncertainty,
flags, aggregates per model group and intermediate-task family, the XTREME aggregate, domain
divergence against the gains, robustness under domain shift, a heatmap and a self-contained HTML page.

Gain of a cell = score(intermediate -> target) - score(target only), same model, seed, evaluation task,
language and metric, averaged over seeds. Its interval, p-value and minimum detectable effect combine
the seeds and a paired bootstrap of the test examples (significance.py: the metric is recomputed on
each resample from the per-example statistics every evaluation logs, one draw of the items for all
languages of a translated test set); q-values are Benjamini-Hochberg within a family (the headline
family: one row per cell; a cell's other rows only where its headline is flagged, at the
Benjamini-Bogomolov level; gains.py), and the flag reads q: `positive` /
`negative` at q <= report.fdr, else `no effect` when the whole interval lies inside
+-report.smallest_effect, else `inconclusive`; with fewer than 3 seeds always `inconclusive` (one seed is
not a finding), the reading saying what the test sample alone shows. A target whose baseline was not
learnt, or an intermediate stage that learnt nothing, has every gain it touches say so (controls.py).

    tables     scores, XTREME, divergence of the tasks' texts, robustness (data frames in and out)
    gains      gains over the baseline with intervals, p, q (per family), minimum detectable effect, flags
    questions  answers read across cells, with intervals: gain against divergence (slope, rho), by
               family, same family against other, model groups, cross-lingual degradation
    estimators transferability estimators scored against the measured gains, beside two baselines
    controls   the instrument's checks: a trained model that learnt nothing, the A/A check
    render  figures, the HTML page, the report as files
The report reads nothing from the tracking store: study/collect.py gathers the same frames from runs.
"""

from __future__ import annotations

import pandas as pd

from intertask.config import ExperimentConfig
from intertask.report import questions
from intertask.report.controls import (
    LEARNING_COLUMNS,
    learnt_table,
    mark_not_learnt,
    not_learnt_text,
    null_check,
    null_summary,
    unchecked,
)
from intertask.report.estimators import ESTIMATE_COLUMNS, estimator_scores
from intertask.report.gains import GAIN_COLUMNS, cell_notes, gains_table
from intertask.report.questions import groups_table
from intertask.report.render import TABLES, figures, render_html, write
from intertask.report.tables import (
    SCORE_COLUMNS,
    Report,
    divergence_table,
    examples_table,
    robustness_table,
    scores_table,
    summary_rows,
    task_facts,
    text_of,
    training_sample,
    xtreme_table,
)

__all__ = [
    "ESTIMATE_COLUMNS",
    "GAIN_COLUMNS",
    "LEARNING_COLUMNS",
    "SCORE_COLUMNS",
    "TABLES",
    "Report",
    "assemble",
    "cell_notes",
    "estimator_scores",
    "gains_table",
    "not_learnt_text",
    "groups_table",
    "render_html",
    "robustness_table",
    "summary_rows",
    "text_of",
    "training_sample",
    "write",
    "xtreme_table",
]


def assemble(
    cfg: ExperimentConfig,
    evaluations,
    probe_frames,
    ws=None,
    embed_texts=None,
    estimates=None,
    learning: pd.DataFrame | None = None,
) -> Report:
    """The report from data frames: `evaluations` as (cell tags, languages table, per-example statistics
    or None) per evaluation run, `probe_frames` the retrieval probes' tables, `estimates` the
    transferability estimates of `intertask predict` (or None), `learning` every training stage's
    dev scores against a model that learnt nothing (LEARNING_COLUMNS, or None). Nothing here reads the
    tracking store (study/collect.py does)."""
    scores = scores_table(cfg, evaluations)
    examples = examples_table(evaluations)
    facts = task_facts(cfg, scores)
    learning = learning if learning is not None else pd.DataFrame(columns=LEARNING_COLUMNS)
    learnt = learnt_table(learning)
    gains = mark_not_learnt(gains_table(scores, examples, facts, cfg.report), learnt)
    diverge = divergence_table(cfg, gains, ws, embed_texts) if cfg.report.divergence else pd.DataFrame()
    probes = pd.concat(probe_frames, ignore_index=True) if probe_frames else pd.DataFrame()
    cells = questions.cell_gains(cfg, gains, scores)
    built = Report(
        scores,
        gains,
        questions.family_table(cfg, cells, gains),
        xtreme_table(scores),
        diverge,
        questions.divergence_answers(cfg, cells, diverge),
        robustness_table(cfg, scores),
        probes,
    )
    built.learnt = learnt
    built.unchecked = unchecked(learning)
    built.contrasts = questions.contrasts_table(cfg, cells)
    built.degradation = questions.degradation_table(cfg, scores, gains)
    if not diverge.empty:
        built.points = cells.merge(diverge.drop(columns=["gain"]), on=["intermediate", "target"])
    if cfg.report.null_check:
        built.null_check = null_check(scores, examples, facts, cfg.report)
        built.null_note = null_summary(built.null_check, 1 - cfg.report.confidence)
    built.estimators, built.estimators_note = estimator_scores(cfg, gains, estimates)
    built.figures = figures(cfg, built)
    built.html = render_html(cfg, built)
    return built
