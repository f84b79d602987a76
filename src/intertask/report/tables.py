"""The report's tables from data frames: scores, the XTREME aggregate, divergence of the tasks' texts,
robustness under domain shift (the answers read across cells, and the family table: questions.py). Nothing here reads the
tracking store (study/collect.py does)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from intertask import metrics
from intertask.config import NONE, ExperimentConfig, resolve
from intertask.report import divergence
from intertask.report.flags import TaskFacts
from intertask.report.gains import CELL_KEYS
from intertask.study import grid
from intertask.study.identity import CELL_TAG

SCORE_COLUMNS = [
    "model",
    "model_group",
    "intermediate",
    "family",
    "target",
    "seed",
    "task",
    "split",
    "language",
    "metric",
    "value",
    "left_out",  # test examples the leakage guard removed (0 for runs logged before it was kept)
]


@dataclass
class Report:
    scores: (
        pd.DataFrame
    )  # model, model_group, intermediate, family, target, seed, task, split, language, metric, value
    gains: pd.DataFrame  # GAIN_COLUMNS: KEYS + seeds, examples, transfer, baseline, gain, se, interval, p, q, mde, flag, reading
    groups: pd.DataFrame  # gain per model group x target x intermediate family, with intervals
    xtreme: pd.DataFrame  # XTREME task / group / overall scores per model, intermediate, target, seed
    divergence: pd.DataFrame  # intermediate x target: overlap, JS, embedding distances, mean gain
    correlations: pd.DataFrame  # slope and Spearman of gain on each divergence measure, with intervals
    robustness: pd.DataFrame  # in-domain vs out-of-domain scores of the same model
    probes: pd.DataFrame  # retrieval probes: point, arm, task, language, metric, value
    figures: dict = field(default_factory=dict)  # name -> matplotlib figure
    html: str = ""
    images: dict = field(default_factory=dict)  # name -> PNG bytes (a report read back from its run)
    skipped: dict = field(default_factory=dict)  # why -> how many runs the report left out
    # transferability estimators scored against the measured gains (report/estimators.py), and why not
    estimators: pd.DataFrame = field(default_factory=pd.DataFrame)
    estimators_note: str = ""
    learnt: pd.DataFrame = field(default_factory=pd.DataFrame)  # baseline dev vs a model that learnt nothing
    null_check: pd.DataFrame = field(
        default_factory=pd.DataFrame
    )  # the A/A check's gains (report.null_check)
    null_note: str = ""  # its flag rates in one line
    contrasts: pd.DataFrame = field(default_factory=pd.DataFrame)  # same vs other family; model groups
    degradation: pd.DataFrame = field(
        default_factory=pd.DataFrame
    )  # cross-lingual drop, transfer vs baseline
    points: pd.DataFrame = field(default_factory=pd.DataFrame)  # each cell's gain beside its divergences
    unchecked: list = field(default_factory=list)  # trained stages with nothing to check learning against


def family_of(cfg: ExperimentConfig, intermediate: str) -> str:
    if intermediate == NONE:
        return NONE
    catalog = resolve.catalog(cfg)
    families = [catalog.spec(t).task_family if t in catalog else t for t in intermediate.split("+")]
    return families[0] if len(families) == 1 else "mix(" + "+".join(families) + ")"


def group_of(cfg: ExperimentConfig, model: str) -> str:
    groups = cfg.grid.model_groups if cfg.grid else {}
    return next((g for g, members in groups.items() if model in members), model)


def _cell_of(tags: dict) -> dict:  # a run's cell tags -> the cell's columns
    return {
        "model": tags.get(f"{CELL_TAG}model", ""),
        "intermediate": tags.get(f"{CELL_TAG}intermediate", NONE),
        "target": tags.get(f"{CELL_TAG}target", ""),
        "seed": int(tags.get(f"{CELL_TAG}seed", 0) or 0),
    }


def scores_table(cfg: ExperimentConfig, evaluations: list[tuple]) -> pd.DataFrame:
    """One row per (cell, seed, evaluation task, split, language, metric). `evaluations`: (run tags,
    languages table[, per-example statistics]) per evaluation run."""
    frames = [item[1].assign(**_cell_of(item[0])) for item in evaluations]
    if not frames:
        return pd.DataFrame(columns=SCORE_COLUMNS)
    scores = pd.concat(frames, ignore_index=True)
    scores["left_out"] = scores.get("left_out", pd.Series(0, index=scores.index)).fillna(0).astype(int)
    scores["model_group"] = scores.model.map(lambda m: group_of(cfg, m))
    scores["family"] = scores.intermediate.map(lambda i: family_of(cfg, i))
    return scores[SCORE_COLUMNS]


def examples_table(evaluations: list[tuple]) -> pd.DataFrame:
    """Every evaluation's per-example statistics, with the cell of its run."""
    frames = [
        item[2].assign(**_cell_of(item[0])) for item in evaluations if len(item) > 2 and item[2] is not None
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def task_facts(cfg: ExperimentConfig, scores: pd.DataFrame) -> dict[str, TaskFacts]:
    """What the gains need of each evaluated task: label kind, parallel languages, headline metric."""
    catalog = resolve.catalog(cfg)
    return {
        t: TaskFacts(catalog.task(t).kind, catalog.spec(t).parallel, catalog.spec(t).headline_metric)
        for t in scores.task.unique()
        if t in catalog
    }


def summary_rows(cfg: ExperimentConfig, table: pd.DataFrame) -> pd.DataFrame:
    """The headline row of each cell: the task's headline metric on the study's headline language mean
    (`report.headline_language`; mean_all where a cell did not report it). For gains, the rows the
    headline family holds, and those of cells that family leaves out (fewer than 3 seeds)."""
    if table.empty or not {"task", "metric", "language"} <= set(table.columns):
        return table.iloc[0:0]  # no rows (a study of baselines alone has no gains table to read back)
    catalog = resolve.catalog(cfg)
    primary = table.task.map(lambda t: catalog.spec(t).headline_metric if t in catalog else "")
    wanted = cfg.report.headline_language
    keys = [c for c in ("model", "intermediate", "target", "seed", "task", "split") if c in table]
    has = table.groupby(keys, sort=False, dropna=False).language.transform(lambda s: wanted in set(s))
    language = np.where(has, wanted, metrics.MEAN_ALL)
    return table[(table.metric == primary) & (table.language == language)]


def xtreme_table(scores: pd.DataFrame) -> pd.DataFrame:
    """XTREME scores of every (model, intermediate, target, seed) that evaluated XTREME tasks."""
    rows = []
    for key, cell in _xtreme_languages(scores).groupby(CELL_KEYS, sort=False):
        per_task = {}
        for task, group in cell.groupby("task", sort=False):
            langs = {lang: dict(zip(g.metric, g.value, strict=True)) for lang, g in group.groupby("language")}
            per_task[task] = metrics.xtreme_task_score(task, langs)["avg_metric"]
            rows.append(
                {
                    **dict(zip(CELL_KEYS, key, strict=True)),
                    "score": f"task/{task}",
                    "value": per_task[task],
                    "languages": len(langs),
                    # a count: the languages themselves are listed once per task (xtreme_missing)
                    "xtreme_languages_missing": len(set(metrics.XTREME_LANGUAGES[task]) - set(langs)),
                }
            )
        for name, value in metrics.xtreme_aggregate(per_task).items():
            rows.append(
                {
                    **dict(zip(CELL_KEYS, key, strict=True)),
                    "score": name if name == "overall" else f"group/{name}",
                    "value": value,
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            *CELL_KEYS,
            "score",
            "value",
            "languages",
            "xtreme_languages_missing",
        ],
    )


def xtreme_missing(scores: pd.DataFrame) -> dict[str, list[str]]:
    """Per XTREME task the study evaluated: its XTREME languages that no cell evaluated."""
    if scores.empty:
        return {}
    return {
        task: sorted(set(metrics.XTREME_LANGUAGES[task]) - set(group.language))
        for task, group in _xtreme_languages(scores).groupby("task", sort=False)
    }


def _xtreme_languages(scores: pd.DataFrame) -> pd.DataFrame:
    """The per-language rows (no means) of XTREME tasks."""
    return scores[~scores.language.str.startswith("mean_") & scores.task.isin(list(metrics.XTREME_LANGUAGES))]


def robustness_table(cfg: ExperimentConfig, scores: pd.DataFrame) -> pd.DataFrame:
    """For a model evaluated on its own target task and on other tasks with the same head: the drop of
    each metric (absolute and relative) from in-domain to each out-of-domain set, headline rows."""
    rows = []
    means = scores[scores.language == metrics.MEAN_ALL]
    for key, cell in means.groupby(CELL_KEYS, sort=False):
        own = cell[cell.task == key[2]]
        for (task, metric), ood in cell[cell.task != key[2]].groupby(["task", "metric"], sort=False):
            same = own[own.metric == metric]
            if same.empty:
                continue
            inside, outside = float(same.value.iloc[0]), float(ood.value.iloc[0])
            rows.append(
                {
                    **dict(zip(CELL_KEYS, key, strict=True)),
                    "out_of_domain": task,
                    "metric": metric,
                    "in_domain_value": inside,
                    "out_of_domain_value": outside,
                    "drop": inside - outside,
                    "relative_drop": (inside - outside) / inside if inside else float("nan"),
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            *CELL_KEYS,
            "out_of_domain",
            "metric",
            "in_domain_value",
            "out_of_domain_value",
            "drop",
            "relative_drop",
        ],
    )


def divergence_table(cfg: ExperimentConfig, gains: pd.DataFrame, ws, embed_texts) -> pd.DataFrame:
    """Every (intermediate task, target task) pair of the study: divergence of their training sets
    (`embed_texts(ws, texts)`: unit-length sentence embeddings with the base model)."""

    columns = [
        "intermediate",
        "target",
        "vocabulary_overlap",
        "js_divergence",
        "embedding_cosine_distance",
        "mmd",
        "gain",
    ]
    headline = summary_rows(cfg, gains)
    pairs = headline[["intermediate", "target"]].drop_duplicates()
    if pairs.empty or ws is None or embed_texts is None:
        return pd.DataFrame(columns=columns)
    options = cfg.report
    texts = {}
    for task in set(pairs.target) | {t for i in pairs.intermediate for t in i.split("+")}:
        texts[task] = [text_of(e) for e in training_sample(cfg, ws, task, options.divergence_examples)]
    vectors = {task: embed_texts(ws, values) for task, values in texts.items()}
    rows = []
    for inter, target in pairs.itertuples(index=False):
        parts = inter.split("+")
        a_texts = [t for p in parts for t in texts[p]]
        a_vec = np.concatenate([vectors[p] for p in parts])
        measures = divergence.between(a_texts, a_vec, texts[target], vectors[target], options.top_k_words)
        gain = headline[(headline.intermediate == inter) & (headline.target == target)].gain.mean()
        rows.append({"intermediate": inter, "target": target, **measures, "gain": gain})
    return pd.DataFrame(rows, columns=columns)


def training_sample(cfg: ExperimentConfig, ws, task: str, size: int) -> list:
    """A seeded sample (the split seed) of `size` examples of a task's training set, in the language
    its stage trains in: what the divergences and the transferability estimators read."""
    language = (cfg.target or cfg.intermediate).language if (cfg.target or cfg.intermediate) else "en"
    data = ws.examples(task, grid.training_language(cfg, language, (task,)), "train", None)
    chosen = np.random.default_rng(cfg.split_seed).permutation(len(data))[:size]
    return [data.examples[i] for i in sorted(chosen)]


def text_of(example) -> str:
    """An example's texts as one string (a pair's two texts joined)."""
    return " ".join(map(str, example.texts))
