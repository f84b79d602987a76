"""What a config means once its task catalog is read: the catalog, the data root, the evaluation
entries with their defaults filled in, and the metric that selects a stage's checkpoint."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from intertask.config import NONE, EvalTaskConfig, ExperimentConfig, StageConfig
from intertask.data import data_root as _data_root
from intertask.errors import ConfigError
from intertask.tasks import TaskCatalog, catalog_for


def catalog(cfg: ExperimentConfig) -> TaskCatalog:
    return catalog_for(cfg.data.task_files)


def data_root(cfg: ExperimentConfig) -> Path:
    return _data_root(cfg.data.root)


def evaluation_tasks(cfg: ExperimentConfig) -> list[EvalTaskConfig]:
    """Every evaluation task with its languages, split and size filled in."""
    ev = cfg.evaluation
    if ev.tasks:
        entries = ev.tasks
    elif ev.task:
        entries = (EvalTaskConfig(task=ev.task, languages=ev.languages),)
    else:
        stage = cfg.target or cfg.intermediate
        entries = tuple(
            EvalTaskConfig(task=t, languages=ev.languages) for t in (stage.task_names if stage else ())
        )
    tasks = catalog(cfg)
    return [
        replace(
            e,
            languages=e.languages or (tasks.spec(e.task).evaluated_languages if e.task in tasks else ()),
            split=e.split or ev.split,
            max_examples=e.max_examples if e.max_examples is not None else ev.max_examples,
        )
        for e in entries
    ]


def selection_metric(cfg: ExperimentConfig, stage: StageConfig, task: str) -> str:
    """The stage's selection_metric for its selection task, every other task's headline metric."""
    chosen = stage.selection_task or stage.task_names[0]
    if stage.selection_metric and task == chosen:
        return stage.selection_metric
    return catalog(cfg).spec(task).headline_metric


def trained_tasks(cfg: ExperimentConfig) -> set[str]:
    """Every task a stage of this config (or of any cell of its grid) trains."""
    tasks = {t for stage in (cfg.intermediate, cfg.target) if stage for t in stage.task_names}
    if cfg.grid is not None:
        for choice in cfg.grid.intermediate:
            if choice != NONE:
                tasks |= {choice} if isinstance(choice, str) else set(choice)
        tasks |= set(cfg.grid.target)
    return tasks


def read_whole(cfg: ExperimentConfig, task: str) -> bool:
    """An evaluation of `task` reads a split it ships whole: nothing trains the task here, and the
    user did not ask for it to be cut (evaluation.cut_tasks)."""
    return task not in trained_tasks(cfg) and task not in cfg.evaluation.cut_tasks


def logs_model(cfg: ExperimentConfig, which: str) -> bool:
    """Whether a stage run with this config logs its trained model (`which`: intermediate or target).
    A grid job's config says all or none already (grid.model_logging); a stage run on its own is the
    one model of its chain, so `registered` logs it and `final` logs a target only."""
    policy = cfg.tracking.log_models
    return policy in ("all", "registered") or (policy == "final" and which == "target")


def with_task_language_names(cfg: ExperimentConfig) -> ExperimentConfig:
    """The config with every language written as its task names it (TaskSpec.language_named: `deu`
    for Tatoeba's `de`, `ger` or `deu` for a task's `de`), so that runs, metric keys and reports show
    one form; each rename is said. A name no task answers to is left for the checks to refuse."""
    try:
        tasks_known = catalog(cfg)
    except ConfigError:
        return cfg  # check_experiment reports it

    def named(tasks, language: str, where: str) -> str:
        specs = [tasks_known.spec(t) for t in tasks if t in tasks_known]
        if not specs or any(language in s.languages for s in specs):
            return language
        found = next((n for s in specs if (n := s.language_named(language))), None)
        if found is None:
            return language
        print(
            f"note: {where}: language {language!r} read as {found!r} ({specs[0].name}'s name for it)",
            file=sys.stderr,
        )
        return found

    changes = {}
    for stage_name in ("intermediate", "target"):
        stage = getattr(cfg, stage_name)
        if stage is not None:
            language = named(stage.task_names, stage.language, f"{stage_name}.language")
            if language != stage.language:
                changes[stage_name] = replace(stage, language=language)

    def each(entries, where: str) -> tuple:  # evaluation.tasks or probes: each entry's task names its own
        return tuple(
            replace(
                e,
                languages=tuple(
                    named((e.task,), lang, f"{where}[{i}].languages[{j}]")
                    for j, lang in enumerate(e.languages)
                ),
            )
            for i, e in enumerate(entries)
        )

    ev = cfg.evaluation
    stage = cfg.target or cfg.intermediate
    own = (ev.task,) if ev.task else (stage.task_names if stage else ())
    languages = tuple(named(own, lang, f"evaluation.languages[{i}]") for i, lang in enumerate(ev.languages))
    tasks = each(ev.tasks, "evaluation.tasks")
    if languages != ev.languages or tasks != ev.tasks:
        changes["evaluation"] = replace(ev, languages=languages, tasks=tasks)
    probes = each(cfg.probes, "probes")
    if probes != cfg.probes:
        changes["probes"] = probes
    return replace(cfg, **changes) if changes else cfg
