"""The whole study for one config: the transfer arm (intermediate -> target -> evaluate) and the
baseline arm (target -> evaluate) as child runs of one parent run, which holds the comparison.

    main (parent)
    |-- arm transfer: xnli -> pawsx
    |   |-- intermediate xnli (en)
    |   |-- finetune pawsx (en)
    |   `-- evaluate pawsx/test
    `-- arm baseline: pawsx
        |-- finetune pawsx (en)
        `-- evaluate pawsx/test
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from intertask import modeling, plots, tracking
from intertask.config import STAGES
from intertask.errors import DataError, Problem
from intertask.evaluation import table_metrics
from intertask.stages import (
    Evaluated,
    Workspace,
    evaluate,
    intermediate,
    recorded_run,
    stage_data,
    train_stage,
)

ARMS = ("transfer", "baseline")


@dataclass(frozen=True)
class StudyResult:
    parent_run_id: str
    comparison: pd.DataFrame  # task, split, language, metric, transfer, baseline, gain
    arms: dict[str, Evaluated]


def preflight(ws: Workspace, stages: tuple[str, ...] = STAGES, evaluation: bool = True) -> None:
    """Load every data set and model reference the given steps need, so bad input fails before any run."""
    cfg = ws.cfg
    loaded = []
    for which in stages:
        stage = getattr(cfg, which)
        if stage is not None:
            loaded.extend(stage_data(ws, stage))
    if evaluation and cfg.eval_task:
        loaded.extend(
            ws.examples(cfg.eval_task, lang, cfg.evaluation.split, None) for lang in cfg.eval_languages()
        )
    _check_parallel(ws, loaded)
    source = modeling.resolve_source(cfg.model.name_or_path)
    modeling.load_config(source)
    modeling.load_tokenizer(source)
    if "target" in stages and cfg.target is not None and cfg.target.init:
        tracking.resolve_reference(cfg.target.init, "target.init")
    if evaluation and cfg.evaluation.model:
        tracking.resolve_reference(cfg.evaluation.model, "evaluation.model")


def _check_parallel(ws: Workspace, loaded: list) -> None:
    """Line-parallel tasks must have the same number of lines in every language (the guard relies on it)."""
    problems = []
    for task in {d.task for d in loaded}:
        if not ws.cfg.catalog().spec(task).parallel:
            continue
        sizes = {(d.language, d.source): d for d in loaded if d.task == task}
        by_source: dict[str, set[int]] = {}
        for (_, source), data in sizes.items():
            by_source.setdefault(source, set()).add(data.source_size)
        for source, counts in by_source.items():
            if len(counts) > 1:
                detail = {f"{lang}": d.source_size for (lang, s), d in sizes.items() if s == source}
                problems.append(
                    Problem(
                        ", ".join(sorted({f for d in sizes.values() for f in d.files})),
                        "",
                        f"task {task!r} is declared parallel but its {source!r} files differ in length",
                        detail,
                        "the same number of lines in every language",
                    )
                )
    if problems:
        raise DataError(problems)


def compare(arms: dict[str, Evaluated]) -> pd.DataFrame:
    """transfer vs baseline per (task, split, language, metric); gain = transfer - baseline."""
    keys = ["task", "split", "language", "metric"]
    frames = [e.table[keys + ["value"]].rename(columns={"value": arm}) for arm, e in arms.items()]
    table = frames[0]
    for frame in frames[1:]:
        table = table.merge(frame, on=keys, how="left")  # both arms evaluate the same rows, in order
    if set(ARMS) <= set(table.columns):
        table["gain"] = table["transfer"] - table["baseline"]
    return table


def _log_comparison(cfg, table: pd.DataFrame, arms: dict[str, Evaluated]) -> None:
    tracking.log_table(table, "comparison/gain_by_language")
    if "gain" in table:
        tracking.log_metrics(
            {f"gain/{r.task}/{r.split}/{r.language}/{r.metric}": r.gain for r in table.itertuples()}
        )
    for arm_name, result in arms.items():
        tracking.log_metrics({f"{arm_name}/{k}": v for k, v in table_metrics(result.table).items()})
    spec = cfg.catalog().spec(cfg.eval_task)
    metric = spec.metrics[0]
    chance = 1 / len(spec.labels) if metric == "accuracy" and spec.type == "classification" else None
    figure = plots.transfer_comparison(table, metric, f"{cfg.eval_task}/{cfg.evaluation.split}", chance)
    tracking.log_figure(figure, "comparison/gain_by_language.png")
    plots.close(figure)


def run_main(ws: Workspace) -> StudyResult:
    """Both arms of the study as child runs of one parent run; the parent gets the comparison."""
    cfg = ws.cfg
    preflight(ws)
    stage, arm_tag = f"{tracking.TAG}stage", f"{tracking.TAG}arm"
    arms: dict[str, Evaluated] = {}
    with recorded_run(ws, f"main {cfg.name}", {stage: "main"}) as parent:
        if cfg.intermediate is not None:
            name = f"arm transfer: {cfg.intermediate.task} -> {cfg.target.task}"
            with recorded_run(ws, name, {stage: "arm", arm_tag: "transfer"}, parent) as arm:
                first = intermediate(ws, arm)
                second = train_stage(ws, "target", first, arm)
                arms["transfer"] = evaluate(ws, second, arm)
        name = f"arm baseline: {cfg.target.task}"
        with recorded_run(ws, name, {stage: "arm", arm_tag: "baseline"}, parent) as arm:
            only = train_stage(ws, "target", None, arm)
            arms["baseline"] = evaluate(ws, only, arm)
        table = compare(arms)
        _log_comparison(cfg, table, arms)
    return StudyResult(parent, table, arms)
