"""What a config means once its task catalog is read: the catalog, the data root, the evaluation
entries with their defaults filled in, and the metric that selects a stage's checkpoint."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from intertask.config import NONE, EvalTaskConfig, ExperimentConfig, StageConfig
from intertask.data import data_root as _data_root
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
