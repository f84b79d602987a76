"""A study's plan, before anything trains: the grid as jobs, each job's data read and checked and its
content key, every model resolved, the parallel plan checked against the machine, and the study's notices
(what it will do other than its config says)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from intertask import tracking
from intertask.config import BASE_MODEL, STAGES, ExperimentConfig, resolve
from intertask.errors import DataError, Problem
from intertask.study import grid
from intertask.study.grid import Job
from intertask.study.workspace import HubNotRead, Workspace, stage_data


def job_sets(ws: Workspace, job: Job) -> list:
    """The example sets a job reads (and that its content key fingerprints)."""
    cfg = ws.cfg
    if job.kind == "probe":
        return [
            s
            for p in cfg.probes
            for lang in p.languages or resolve.catalog(cfg).spec(p.task).evaluated_languages
            for s in _read(ws.evaluation_examples, p.task, lang, p.split)
        ]
    if job.kind in ("intermediate", "finetune"):
        stage = cfg.intermediate if job.kind == "intermediate" else cfg.target
        return [s for task in stage.task_names for s in _read(stage_data, ws, stage, task)]
    return [
        s
        for e in resolve.evaluation_tasks(cfg)
        for lang in e.languages
        for s in _read(ws.evaluation_examples, e.task, lang, e.split)
    ]


def _read(load, *args) -> list:
    """The set(s) `load` returns, or none where a hub source is left unread (validate without --hub)."""
    try:
        out = load(*args)
    except HubNotRead:
        return []
    return list(out) if isinstance(out, tuple) else [out]


def preflight(ws: Workspace, stages: tuple[str, ...] = STAGES, evaluation: bool = True) -> None:
    """Load every data set and model reference the given steps of a single config need."""
    cfg = ws.cfg
    loaded = []
    for which in stages:
        stage = getattr(cfg, which)
        if stage is not None:
            for task in stage.task_names:
                loaded.extend(stage_data(ws, stage, task))
    if evaluation:
        loaded.extend(
            ws.evaluation_examples(e.task, lang, e.split)
            for e in resolve.evaluation_tasks(cfg)
            for lang in e.languages
        )
    for probe in cfg.probes:
        spec = resolve.catalog(cfg).spec(probe.task)
        loaded.extend(
            ws.evaluation_examples(probe.task, lang, probe.split)
            for lang in probe.languages or spec.evaluated_languages
        )
    check_parallel(ws, loaded)
    _check_model(cfg.model.name_or_path)
    if "target" in stages and cfg.target is not None and cfg.target.init:
        tracking.resolve_reference(cfg.target.init, "target.init")
    if evaluation and cfg.evaluation.model and cfg.evaluation.model != BASE_MODEL:
        tracking.resolve_reference(cfg.evaluation.model, "evaluation.model")


def _check_model(name_or_path: str) -> None:
    from intertask.compute import modeling  # torch and transformers: only when a stage will run

    source = modeling.resolve_source(name_or_path)
    modeling.load_config(source)
    modeling.load_tokenizer(source)


def check_models(jobs: list[Job], hub: bool = True) -> list[str]:
    """Every base model the jobs start from loads (config and tokenizer), before any run exists; with
    hub=False a model that would come from the Hugging Face hub is not fetched but returned."""
    from intertask import pretrained

    skipped = []
    for model in dict.fromkeys(job.cell.model for job in jobs):
        local = model in pretrained.OFFLINE_MODELS or Path(model).expanduser().exists()
        if hub or local:
            _check_model(model)
        else:
            skipped.append(model)
    return skipped


def check_parallel(ws: Workspace, loaded: list) -> None:
    """Line-parallel tasks must have the same number of lines in every language (the guard relies on it)."""
    problems = []
    for task in {d.task for d in loaded}:
        if not resolve.catalog(ws.cfg).spec(task).parallel:
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


def _explicit(cfg: ExperimentConfig, task: str) -> bool:
    """Whether evaluation.tasks names the task's languages itself (then validate checks each)."""
    return any(e.task == task and e.languages for e in cfg.evaluation.tasks)


def study_notices(cfg: ExperimentConfig) -> tuple[tuple[str, str], ...]:
    """(what, line) for each place a study does other than its config literally says, decided when
    the grid is expanded: an evaluation task one cell's head cannot score while another cell's can (a
    grid of targets with different labels), a language of evaluation.languages a task lacks, a grid
    task trained in another language than its stage's (Allocine is French only), a multi-task stage's
    selection_task that a cell does not train, an evaluation task scored by a head matched by label
    name (another order, or a subset of its labels). Printed, and tagged on the study's run (and
    printed by `intertask validate`)."""
    out, left_out = {}, {}
    stages = {"intermediate": cfg.intermediate, "target": cfg.target}
    for cell in grid.distinct_cells(cfg):  # nothing here depends on the seed
        derived = grid.cell_config(cfg, cell)
        for name, stage in stages.items():
            mine = getattr(derived, name)
            if stage is None or mine is None:
                continue
            if mine.language != stage.language:
                out[f"language.{name}.{'+'.join(mine.task_names)}"] = (
                    f"grid: {'+'.join(mine.task_names)} has no {stage.language}: its {name} stage trains in "
                    f"{mine.language}"
                )
            if (
                stage.selection_task
                and mine.selection_task != stage.selection_task
                and len(mine.task_names) > 1
            ):
                out[f"selection_task.{'+'.join(mine.task_names)}"] = (
                    f"grid: {name}.selection_task {stage.selection_task} is not among "
                    f"{'+'.join(mine.task_names)}: the stage selects on {mine.task_names[0]}"
                )
        scored, left, by_name = grid.evaluation_fit(cfg, cell)
        out.update(by_name)
        for entry in scored:
            lacking = grid.missing_languages(cfg, entry.task) if not _explicit(cfg, entry.task) else ()
            if lacking:
                out[f"languages_left_out.{entry.task}"] = (
                    f"evaluation: {entry.task} has no {', '.join(lacking)} of evaluation.languages: scored in "
                    f"{', '.join(entry.languages)}"
                )
        for task, why in left:  # one line per target, task and reason, whatever the intermediate
            left_out.setdefault((cell.target or "zero-shot", task, why), []).append(cell.intermediate_label)
    for (target, task, why), labels in left_out.items():
        labels = list(dict.fromkeys(labels))
        what = f"evaluation_left_out.{target}.{task}"
        if what in out:  # zero-shot cells whose heads differ: one line per head
            what = f"evaluation_left_out.{labels[0]}.{target}.{task}"
        cells = labels[0] if len(labels) == 1 else f"({_listed(labels)})"
        out[what] = f"evaluation: {task} is not scored in the cells {cells} -> {target} ({why})"
    return tuple(out.items())


def _listed(labels: list[str], shown: int = 4) -> str:
    return ", ".join(labels[:shown]) + (f" and {len(labels) - shown} more" if len(labels) > shown else "")


@dataclass(frozen=True)
class Plan:
    jobs: list[Job]
    configs: dict[str, ExperimentConfig]  # job id -> its cell's config
    keys: dict[str, str]  # job id -> content key
    notices: tuple[tuple[str, str], ...] = ()  # (what, line): evaluation tasks a cell cannot score
    # job id -> the example sets it was keyed on: Workspace key -> (fingerprint, files)
    data: dict[str, dict] = field(default_factory=dict)
    kept: dict[str, bool] = field(default_factory=dict)  # training job id -> tracking.log_models keeps it
    planned_at_ms: int = 0  # when the finished runs were looked at (executors.JobSpec.planned_at_ms)


def plan(ws: Workspace) -> Plan:
    """Expand the grid, load and check every job's data, and key every job."""
    cfg = ws.cfg
    started = int(time.time() * 1000)  # before any finished run is looked at
    jobs = grid.jobs(cfg)
    kept = grid.model_logging(cfg, jobs)
    handed_on = cfg.executor.kind == "ray" and cfg.tracking.log_models != "none"  # by MLflow reference
    configs, keys, loaded, data = {}, {}, [], {}
    for job in jobs:
        configs[job.id] = grid.cell_config(cfg, job.cell)
        if job.id in kept:
            configs[job.id] = grid.with_model_logging(configs[job.id], kept[job.id], handed_on)
        cell_ws = Workspace(
            configs[job.id],
            ws.config_file,
            experiment_id="",
            workdir=ws.workdir,
            loaded=ws.loaded,
            read_hub=ws.read_hub,
            skipped_hub=ws.skipped_hub,
        )
        sets = job_sets(cell_ws, job)
        loaded.extend(sets)
        upstream = [keys[d] for d in job.deps]
        keys[job.id] = grid.job_key(job, configs[job.id], [s.fingerprint for s in sets], upstream)
        mine = {id(s) for s in sets}
        data[job.id] = {k: (s.fingerprint, list(s.files)) for k, s in ws.loaded.items() if id(s) in mine}
    check_parallel(ws, loaded)
    return Plan(jobs, configs, keys, study_notices(cfg), data, kept, started)


def leakage_notices(ws: Workspace, study: Plan) -> list[tuple[str, str]]:
    """What the leakage guard will leave out of each evaluation, foreseen from the planned sets: the
    train and dev examples of every training stage upstream of it (`intertask validate` prints these
    lines; the evaluation stage records the same ones when it runs)."""
    from intertask.data import leakage

    jobs = {job.id: job for job in study.jobs}
    catalog = resolve.catalog(ws.cfg)

    def sets(job_id: str) -> list:
        return [ws.loaded[key] for key in study.data.get(job_id, {}) if key in ws.loaded]

    def upstream(job_id: str) -> list[str]:
        found = []
        for dep in jobs[job_id].deps:
            found += (
                [dep, *upstream(dep)] if jobs[dep].kind in ("intermediate", "finetune") else upstream(dep)
            )
        return found

    trained: dict[str, leakage.Seen] = {}  # training job -> what it sees (once, whatever reads it)

    def seen_by(job_id: str) -> leakage.Seen:
        if job_id not in trained:
            trained[job_id] = leakage.merge(
                *(
                    leakage.record({}, s, catalog.spec(s.task).parallel)
                    for s in sets(job_id)
                    if s.split in ("train", "dev")
                )
            )
        return trained[job_id]

    out: dict[str, str] = {}
    for job in study.jobs:
        if job.kind != "evaluate":
            continue
        seen = leakage.merge(*(seen_by(dep) for dep in upstream(job.id)))
        for data in sets(job.id):
            out.update(leakage.notices(data, leakage.left_out(data, seen)[1]))
    return list(out.items())
