"""The whole study for one config, as child runs of one parent run that holds the comparison.

main (parent: comparison, XTREME aggregate, probe table)
|-- probe base model                  (when probes are configured)
|-- arm transfer: xnli -> pawsx       (arm zero-shot: a+b+c when there is no target)
|   |-- intermediate xnli (en)        (several tasks: one run, shared encoder, a head each)
|   |-- finetune pawsx (en)
|   `-- evaluate pawsx
`-- arm baseline: pawsx               (when there is a target)
    |-- finetune pawsx (en)
    `-- evaluate pawsx
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from intertask import metrics, modeling, plots, tracking
from intertask.config import BASE_MODEL, STAGES
from intertask.errors import DataError, Problem
from intertask.evaluation import table_metrics
from intertask.stages import (
    Evaluated,
    TrainedModel,
    Workspace,
    evaluate,
    intermediate,
    recorded_run,
    run_probes,
    stage_data,
    train_stage,
)

ARMS = ("transfer", "baseline")


@dataclass(frozen=True)
class StudyResult:
    parent_run_id: str
    comparison: pd.DataFrame  # task, split, language, metric, transfer, baseline, gain
    arms: dict[str, Evaluated]
    xtreme: dict[str, dict[str, float]]  # arm -> XTREME task / group / overall scores
    probes: pd.DataFrame | None  # point, task, split, language, metric, value


def preflight(ws: Workspace, stages: tuple[str, ...] = STAGES, evaluation: bool = True) -> None:
    """Load every data set and model reference the given steps need, so bad input fails before any run."""
    cfg = ws.cfg
    loaded = []
    for which in stages:
        stage = getattr(cfg, which)
        if stage is not None:
            for task in stage.task_names:
                loaded.extend(stage_data(ws, stage, task))
    if evaluation:
        for entry in cfg.evaluation_tasks():
            loaded.extend(ws.examples(entry.task, lang, entry.split, None) for lang in entry.languages)
    for probe in cfg.probes:
        spec = cfg.catalog().spec(probe.task)
        loaded.extend(
            ws.examples(probe.task, lang, probe.split, None) for lang in probe.languages or spec.evaluated_languages
        )
    _check_parallel(ws, loaded)
    source = modeling.resolve_source(cfg.model.name_or_path)
    modeling.load_config(source)
    modeling.load_tokenizer(source)
    if "target" in stages and cfg.target is not None and cfg.target.init:
        tracking.resolve_reference(cfg.target.init, "target.init")
    if evaluation and cfg.evaluation.model and cfg.evaluation.model != BASE_MODEL:
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
                detail = {lang: d.source_size for (lang, s), d in sizes.items() if s == source}
                names = sorted({f for d in sizes.values() for f in d.files})
                files = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
                problems.append(
                    Problem(
                        files,
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


def xtreme_scores(table: pd.DataFrame) -> tuple[dict[str, float], pd.DataFrame]:
    """XTREME's per-task scores (mean over the evaluated languages) and group / overall aggregates for
    the XTREME tasks in an evaluation table; rows list the XTREME languages that were not evaluated."""
    per_task, rows = {}, []
    for task, group in table[~table.language.str.startswith("mean_")].groupby("task", sort=False):
        if task not in metrics.XTREME_LANGUAGES:
            continue
        per_language = {
            lang: dict(zip(g.metric, g.value, strict=True)) for lang, g in group.groupby("language")
        }
        scores = metrics.xtreme_task_score(task, per_language)
        per_task[task] = scores["avg_metric"]
        missing = sorted(set(metrics.XTREME_LANGUAGES[task]) - set(per_language))
        rows.append(
            {
                "task": task,
                **scores,
                "languages": len(per_language),
                "xtreme_languages_missing": " ".join(missing),
            }
        )
    flat = {f"task/{t}": v for t, v in per_task.items()}
    for name, value in metrics.xtreme_aggregate(per_task).items():
        flat["overall" if name == "overall" else f"group/{name}"] = value
    return flat, pd.DataFrame(rows)


def _log_comparison(cfg, table: pd.DataFrame, arms: dict[str, Evaluated]) -> dict[str, dict[str, float]]:
    tracking.log_table(table, "comparison/gain_by_language")
    if "gain" in table:
        tracking.log_metrics(
            {f"gain/{r.task}/{r.split}/{r.language}/{r.metric}": r.gain for r in table.itertuples()}
        )
    xtreme = {}
    for arm_name, result in arms.items():
        tracking.log_metrics(table_metrics(result.table, prefix=f"{arm_name}/"))
        xtreme[arm_name], details = xtreme_scores(result.table)
        if xtreme[arm_name]:
            tracking.log_metrics({f"xtreme/{arm_name}/{k}": v for k, v in xtreme[arm_name].items()})
            tracking.log_table(details, f"xtreme/{arm_name}")
    for task in table.task.unique():
        spec = cfg.catalog().spec(task)
        metric = spec.metrics[0]
        chance = 1 / len(spec.labels) if metric == "accuracy" and spec.type == "classification" else None
        figure = plots.transfer_comparison(table[table.task == task], metric, f"{task}", chance)
        tracking.log_figure(figure, f"comparison/{task}.png")
        plots.close(figure)
    return xtreme


def _log_probes(tables: list[pd.DataFrame | None]) -> pd.DataFrame | None:
    present = [t for t in tables if t is not None]
    if not present:
        return None
    table = pd.concat(present, ignore_index=True)
    tracking.log_table(table, "probes/by_stage")
    figure = plots.probe_changes(table)
    tracking.log_figure(figure, "probes/by_stage.png")
    plots.close(figure)
    return table


def _arm_name(cfg) -> str:
    tasks = "+".join(cfg.intermediate.task_names)
    return f"arm transfer: {tasks} -> {cfg.target.task}" if cfg.target else f"arm zero-shot: {tasks}"


def run_main(ws: Workspace) -> StudyResult:
    """The arms of the study as child runs of one parent run; the parent gets the comparison."""
    cfg = ws.cfg
    preflight(ws)
    stage, arm_tag = f"{tracking.TAG}stage", f"{tracking.TAG}arm"
    arms: dict[str, Evaluated] = {}
    probes: list[pd.DataFrame | None] = []
    with recorded_run(ws, f"main {cfg.name}", {stage: "main"}) as parent:
        if any("base" in p.after for p in cfg.probes):
            with recorded_run(ws, "probe base model", {stage: "probe"}, parent):
                source = modeling.resolve_source(cfg.model.name_or_path)
                encoder = modeling.load_encoder(source).to(modeling.device())
                base = run_probes(ws, encoder, modeling.load_tokenizer(source), "base")
                probes.append(base.assign(arm="base"))
        if cfg.intermediate is not None:
            with recorded_run(ws, _arm_name(cfg), {stage: "arm", arm_tag: "transfer"}, parent) as arm:
                trained: list[TrainedModel] = [intermediate(ws, arm)]
                if cfg.target is not None:
                    trained.append(train_stage(ws, "target", trained[0], arm))
                probes.extend(t.probes.assign(arm="transfer") for t in trained if t.probes is not None)
                arms["transfer"] = evaluate(ws, trained[-1], arm)
        if cfg.target is not None:
            name = f"arm baseline: {cfg.target.task}"
            with recorded_run(ws, name, {stage: "arm", arm_tag: "baseline"}, parent) as arm:
                only = train_stage(ws, "target", None, arm)
                if only.probes is not None:
                    probes.append(only.probes.assign(arm="baseline"))
                arms["baseline"] = evaluate(ws, only, arm)
        table = compare(arms)
        xtreme = _log_comparison(cfg, table, arms)
        probe_table = _log_probes(probes)
    return StudyResult(parent, table, arms, xtreme, probe_table)
