"""The whole study for one config: its grid as stage jobs under one parent run, then the report.

    main (parent: the report -- tables, gains with confidence intervals, heatmap, HTML)
    |-- probe base model (e5-small)               (when probes are configured)
    |-- seed 13 · arm transfer: rte (e5-small)    one arm per (model, intermediate choice, seed)
    |   |-- intermediate rte (en)                 trained once, reused by every target of the arm
    |   |-- finetune xnli (en) / evaluate xnli
    |   `-- finetune pawsx (en) / evaluate pawsx
    `-- seed 13 · arm baseline (e5-small)         intermediate `none`: targets from the base model
        |-- finetune xnli (en) / evaluate xnli
        `-- ...

A job whose content key (grid.job_key) matches a FINISHED run of the experiment is reused, not run; a
restarted pipeline continues the same parent and arm runs, so a study killed half way resumes where it
stopped. `force` re-runs every job of the given kinds ("all" for every job).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from intertask import tracking
from intertask.config import BASE_MODEL, STAGES, ExperimentConfig, resolve
from intertask.config.schema import to_dict
from intertask.errors import DataError, Problem
from intertask.study import grid
from intertask.study.executors import JobSpec, Outcome, executor_for, reused
from intertask.study.grid import Job
from intertask.study.identity import code_version, content_hash
from intertask.study.workspace import HubNotRead, Workspace, stage_data
from intertask.tracking import leases

TAG = tracking.TAG


@dataclass(frozen=True)
class StudyResult:
    parent_run_id: str
    outcomes: dict[str, Outcome]  # job id -> what it produced (run, model, table)
    report: object  # report.Report


# --- checks before anything runs ---------------------------------------------------------------------


def _job_sets(ws: Workspace, job: Job) -> list:
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
    _check_parallel(ws, loaded)
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
    from intertask import models

    skipped = []
    for model in dict.fromkeys(job.cell.model for job in jobs):
        local = model in models.OFFLINE_MODELS or Path(model).expanduser().exists()
        if hub or local:
            _check_model(model)
        else:
            skipped.append(model)
    return skipped


def _check_parallel(ws: Workspace, loaded: list) -> None:
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
        sets = _job_sets(cell_ws, job)
        loaded.extend(sets)
        upstream = [keys[d] for d in job.deps]
        keys[job.id] = grid.job_key(job, configs[job.id], [s.fingerprint for s in sets], upstream)
        mine = {id(s) for s in sets}
        data[job.id] = {k: (s.fingerprint, list(s.files)) for k, s in ws.loaded.items() if id(s) in mine}
    _check_parallel(ws, loaded)
    return Plan(jobs, configs, keys, study_notices(cfg), data, kept, started)


def _explicit(cfg: ExperimentConfig, task: str) -> bool:
    """Whether evaluation.tasks names the task's languages itself (then validate checks each)."""
    return any(e.task == task and e.languages for e in cfg.evaluation.tasks)


def study_notices(cfg: ExperimentConfig) -> tuple[tuple[str, str], ...]:
    """(what, line) for each place a study does other than its config literally says, decided when
    the grid is expanded: an evaluation task one cell's head cannot score while another cell's can (a
    grid of targets with different labels), a language of evaluation.languages a task lacks, a grid
    task trained in another language than its stage's (Allocine is French only), a multi-task stage's
    selection_task that a cell does not train. Printed, and tagged on the study's run."""
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
        scored, left = grid.evaluation_fit(cfg, cell)
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


# --- running ---------------------------------------------------------------------------------------------


def main_key(cfg: ExperimentConfig) -> str:
    """The identity of a study: its config (without tracking and executor) and the code version."""
    study = {k: v for k, v in to_dict(cfg).items() if k not in ("tracking", "executor", "report")}
    return content_hash([study, code_version()])


def _arm_name(cell: grid.Cell, several_models: bool, several_seeds: bool, targets: bool) -> str:
    """`targets`: whether the arm trains a target (the job opening it may be its intermediate stage).
    The seed comes first: arms differ by it, and the UI's name column cuts the end of a long name."""
    kind = "baseline" if not cell.intermediate else ("transfer: " if targets else "zero-shot: ")
    label = kind + ("+".join(cell.intermediate) if cell.intermediate else "")
    seed = f"seed {cell.seed} · " if several_seeds else ""
    return f"{seed}arm {label}" + (f" ({cell.model})" if several_models else "")


def run_main(ws: Workspace, force: tuple[str, ...] = ()) -> StudyResult:
    """Every job of the study (reusing finished ones), then the report on the parent run."""
    cfg = ws.cfg
    study = plan(ws)
    done_before = "all" not in force and ws.known_experiment() is not None
    foresight = None
    if cfg.predict.before_training or cfg.predict.train_top_k:
        foresight = _predict_first(ws, study, done_before)
        if foresight.skipped:  # train_top_k: the grid without the choices ranked below the top k
            ws = replace(ws, cfg=foresight.config)
            cfg, study = ws.cfg, plan(ws)
    ready = _finished_jobs(ws, study, force) if done_before else {}
    check_models([job for job in study.jobs if job.id not in ready])  # a study all done needs none
    experiment = ws.experiment()
    launched = os.environ.pop("MLFLOW_RUN_ID", None)  # `mlflow run` made the parent already
    parent, created = (launched, None) if launched else _open_parent(cfg, experiment)
    if created is not None:  # a new parent: described while another driver might make its own
        _describe_parent(ws, study, parent)
        parent = leases.elect(experiment, main_key(cfg), parent, created)
    status, cleanup, arms = "FAILED", tracking.Cleanup(), {}
    beat = cfg.executor.heartbeat_seconds
    try:
        leases.renew(parent)
        with tracking.heartbeat(parent, beat, tag=f"{leases.DRIVER}{leases.me()}", value=leases.beat):
            if created is None:
                _describe_parent(ws, study, parent)
            if foresight is not None:
                _log_foresight(ws, foresight, parent)
            outcomes = _run_jobs(ws, study, parent, ready, cleanup, arms)
            built = _report(ws, outcomes, parent, foresight)
        status = "FINISHED"
        return StudyResult(parent, outcomes, built)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        _close_study(parent, arms, status, cleanup, stale=4 * beat)


def _open_parent(cfg: ExperimentConfig, experiment: str) -> tuple[str, float | None]:
    """The study's parent run: the one an earlier or concurrent driver of this study opened (and
    None), else a new one and when it was made (time.monotonic(): leases.elect picks one among those
    two drivers starting at the same moment made)."""
    key = main_key(cfg)
    known = tracking.find_runs(experiment, f"{TAG}run_key", key)
    parent = tracking.open_run(  # (resumed from the search above; a new one needs no second search)
        f"main {cfg.name}",
        experiment_id=experiment,
        key=key,
        tags={f"{TAG}stage": "main"},
        resume=bool(known),
    )
    return parent, (None if known else time.monotonic())


def _close_study(parent: str, arms: dict, status: str, cleanup, stale: float) -> None:
    """This driver leaves the study; the last driver to leave closes its arms and parent run (another
    driver still running the study closes them when it ends)."""
    cleanup(leases.leave, parent)
    others: set[str] = set()
    cleanup(lambda: others.update(leases.live_drivers(parent, stale) - {leases.me()}))
    if others:
        print(
            f"note: {len(others)} other driver(s) still run this study: they close its runs", file=sys.stderr
        )
        return
    for arm in arms.values():
        cleanup(tracking.close_run, arm, status)
    cleanup(tracking.close_run, parent, status)


def _describe_parent(ws: Workspace, study: Plan, parent: str) -> None:
    """The parent run's description, provenance, resolved config and the study's notices."""
    with tracking.logging_to(parent):
        tracking.set_tags(
            {
                tracking.DESCRIPTION: tracking.describe(ws.cfg)
                + " The headline gains appear here when it finishes.",
                f"{TAG}stage": "main",
                "mlflow.runName": f"main {ws.cfg.name}",  # `mlflow run` made it with a random name
                f"{TAG}code_version": code_version(),
                **tracking.process_tags(),  # which driver holds it (close_dead_runs)
            }
        )
        tracking.log_config(ws.cfg, ws.config_file)
        tracking.log_provenance()
        tracking.record_notices(list(study.notices))


def _report(ws: Workspace, outcomes: dict[str, Outcome], parent: str, foresight):
    """The study's report, logged on the parent run and closing it; an earlier parent's report over
    exactly these runs is loaded instead (a re-run of a finished study: its own parent then has it)."""
    from intertask.study import collect

    cfg, experiment = ws.cfg, ws.experiment()
    inputs = report_inputs(cfg, outcomes)
    earlier = _earlier_report(experiment, inputs, outcomes)
    if earlier:
        built = collect.load(earlier)
    else:
        estimates = foresight.estimates if foresight else None
        built = collect.from_outcomes(cfg, list(outcomes.values()), ws=ws, estimates=estimates)
    if earlier != parent:  # the parent is closed by the last driver of the study (_close_study)
        with tracking.logging_to(parent):
            collect.log(built, cfg, outcomes)
            tracking.set_tags({f"{TAG}report_inputs": inputs})
    return built


@dataclass(frozen=True)
class Foresight:
    """`predict` before training: the estimates, and with train_top_k the narrowed config."""

    estimates: pd.DataFrame
    seconds: float
    config: ExperimentConfig
    skipped: tuple[tuple[str, str], ...] = ()  # (intermediate, target) pairs not trained


def intermediate_models(ws: Workspace, study: Plan) -> dict[tuple[str, str], list[str]]:
    """(model, intermediate label) -> references of this study's finished intermediate stages that
    logged their model (found by content key: the same config, data and code)."""
    out: dict[tuple[str, str], list[str]] = {}
    if ws.known_experiment() is None:
        return out
    for job in study.jobs:
        if job.kind == "intermediate":
            found = tracking.finished_stage(ws.experiment(), study.keys[job.id])
            if found is not None and tracking.holds_model(found):
                label = job.cell.intermediate_label
                out.setdefault((job.cell.model, label), []).append(tracking.reference_of(found))
    return out


def _predict_first(ws: Workspace, study: Plan, done_before: bool) -> Foresight:
    import time

    from intertask.transferability import predict

    cfg = ws.cfg
    start = time.perf_counter()
    estimates = predict.estimate(ws, intermediate_models(ws, study) if done_before else {})
    seconds = time.perf_counter() - start
    k = cfg.predict.train_top_k
    if not k:
        return Foresight(estimates, seconds, cfg)
    by = cfg.predict.rank_by
    rows = estimates[estimates.estimator == by]
    if rows.empty or rows.value.isna().any():
        missing = sorted(set(rows[rows.value.isna()].target)) or ["every target"]
        raise DataError(
            [
                Problem(
                    "<config>",
                    "predict.rank_by",
                    f"no {by} estimate for {', '.join(missing)} before training",
                    by,
                    "an estimator computed without training (embedding_similarity, vocabulary_overlap, "
                    "neg_js_divergence, neg_mmd), or logme_intermediate once the intermediate models exist",
                )
            ]
        )
    kept = predict.top_k(estimates, by, k)
    pairs = {("+".join(inter), target) for _, inter, target in predict.triples(cfg)}
    keep = {(label, target) for (_, target), labels in kept.items() for label in labels}
    skipped = tuple(sorted(pairs - keep))
    narrowed = replace(cfg, grid=replace(cfg.grid, exclude=tuple(cfg.grid.exclude) + skipped))
    return Foresight(estimates, seconds, narrowed, skipped)


def _log_foresight(ws: Workspace, foresight: Foresight, parent: str) -> None:
    from intertask.transferability import predict

    predict.log(ws, foresight.estimates, foresight.seconds, parent)
    if foresight.skipped:
        k, by = ws.cfg.predict.train_top_k, ws.cfg.predict.rank_by
        lines = [f"{i} -> {t}: not among the top {k} by {by}" for i, t in foresight.skipped]
        with tracking.logging_to(parent):
            tracking.log_text("\n".join(lines) + "\n", "predict/skipped.txt")
            tracking.log_metrics({"predict/skipped_pairs": len(foresight.skipped)})


def report_inputs(cfg: ExperimentConfig, outcomes: dict[str, Outcome]) -> str:
    """What a study's report is computed from: the study (config and code), the report settings and
    the run behind every job."""
    runs = sorted((job_id, o.run_id) for job_id, o in outcomes.items())
    return content_hash([main_key(cfg), to_dict(cfg.report), runs])


def _earlier_report(experiment: str, inputs: str, outcomes: dict[str, Outcome]) -> str | None:
    """The run that logged the report of exactly these inputs, when every job was reused: building it
    again (divergence embeddings, figures) would give the same tables."""
    if not all(o.reused for o in outcomes.values()):
        return None
    found = tracking.find_runs(experiment, f"{TAG}report_inputs", inputs)
    return found[0].info.run_id if found else None


def _open_arm(ws: Workspace, study: Plan, job: Job, parent: str, names: tuple[bool, bool]) -> str:
    """The arm run of a job's (model, intermediate, seed), continued if a restarted study made it. Its
    params and `intertask.cell.*` tags are the arm's coordinates -- model, intermediate, targets, seed
    and the headline each target is read on -- the same keys on every arm, so that MLflow's Compare
    lines arms up; its resolved config is an artifact, not params (a stage's config differs between a
    baseline and a transfer arm)."""
    targets = list(dict.fromkeys(j.cell.target for j in study.jobs if j.arm == job.arm and j.cell.target))
    name = _arm_name(job.cell, *names, bool(targets))
    coordinates = {
        "model": job.cell.model,
        "intermediate": job.cell.intermediate_label,
        "target": ",".join(targets) or "(zero-shot only)",
        "seed": job.cell.seed,
        "headline": headline_label(ws.cfg, targets),
    }
    tags = {
        **tracking.process_tags(),  # the driver that holds it open: closed by the next start if it dies
        f"{TAG}stage": "arm",
        f"{TAG}arm": "baseline" if not job.cell.intermediate else "transfer",
        **replace(job.cell, target=coordinates["target"]).tags(),  # an arm spans all of its targets
    }
    key = _arm_key(parent, job.arm)
    tags[tracking.DESCRIPTION] = (
        f"{name}: trains {' + '.join(job.cell.intermediate) or 'no intermediate task'}"
        + (" then each target" if job.cell.intermediate else ", each target from the base model")
        + f", model {job.cell.model}, seed {job.cell.seed}; its stages are its children. Metrics: "
        "headline_score/<target> (this arm), headline_gain_this_seed/<target> (minus the baseline arm "
        "of the same seed), headline_gain/<target> with _low/_high (the cell's gain over all seeds, "
        "with its 95 % interval; 0 on a baseline arm)."
    )
    arm = tracking.open_run(name, experiment_id=ws.experiment(), parent_run_id=parent, key=key, tags=tags)
    arm = leases.adopt(parent, key, arm)  # another driver of the study opened it at the same moment
    with tracking.logging_to(arm):  # the arm's own coordinates: the same whichever of its jobs opens it
        tracking.log_config(
            grid.cell_config(ws.cfg, replace(job.cell, target=None)), ws.config_file, params=False
        )
        tracking.log_params(coordinates)
        tracking.log_provenance()
    return arm


def headline_label(cfg: ExperimentConfig, targets: list[str]) -> str:
    """What an arm's headline metrics read, per target: `udpos: f1, mean_non_en`."""
    catalog = resolve.catalog(cfg)
    language = cfg.report.headline_language
    return "; ".join(
        f"{t}: {catalog.spec(t).headline_metric if t in catalog else '?'}, {language}" for t in targets
    )


def _finished_jobs(ws: Workspace, study: Plan, force: tuple[str, ...]) -> dict[str, Outcome]:
    """The jobs a finished run of the same content key already did (unless their kind is forced). A
    finished training stage that did not log its model runs again when this study keeps its model
    (tracking.log_models asks for it now), or when a job still to run starts from it."""
    ready = {}
    for job in study.jobs:
        if job.kind not in force and (done := reused(ws.experiment(), job, study.keys[job.id])) is not None:
            if done.model is None and study.kept.get(job.id):
                print(
                    f"note: {job.id} finished in run {done.run_id} without logging its model, which "
                    "tracking.log_models now keeps: it is trained again (same config and seed) to log it",
                    file=sys.stderr,
                )
                continue
            ready[job.id] = done
    for job in reversed(study.jobs):  # dependents come after the jobs they start from
        outcome = ready.get(job.id)
        if outcome is None or job.kind not in ("intermediate", "finetune") or outcome.model is not None:
            continue
        if any(job.id in other.deps and other.id not in ready for other in study.jobs):
            del ready[job.id]  # its model was not logged and a job to run needs it: trained again
    return ready


def _run_jobs(
    ws: Workspace, study: Plan, parent: str, ready: dict[str, Outcome], cleanup, arms: dict
) -> dict[str, Outcome]:
    """Every job not `ready`, by the configured executor, under `arms` (the arm runs opened here,
    filled in for the caller to close)."""
    cfg = ws.cfg
    experiment = ws.experiment()
    names = (len({j.cell.model for j in study.jobs}) > 1, len({j.cell.seed for j in study.jobs}) > 1)
    stale = 4 * cfg.executor.heartbeat_seconds  # a stage process or a driver gone, on whichever host
    specs = []
    for job in study.jobs:
        key = study.keys[job.id]
        if job.id in ready:
            continue
        run_parent = parent
        if job.kind != "probe":
            if job.arm not in arms:
                arms[job.arm] = _open_arm(ws, study, job, parent, names)
            run_parent = arms[job.arm]
        specs.append(
            JobSpec(
                job,
                study.configs[job.id],
                ws.config_file,
                tracking.tracking_uri(cfg),
                experiment,
                run_parent,
                key,
                {**job.cell.tags(), f"{TAG}driver": leases.me()},
                expected=study.data.get(job.id, {}),
                data_root=str(resolve.data_root(cfg)),
                study_run_id=parent,
                driver=leases.me(),
                stale_seconds=stale,
                planned_at_ms=study.planned_at_ms,
            )
        )
    if specs and cfg.executor.kind == "ray":
        _require_portable(cfg)  # and every model a Ray job hands on is logged (see plan)
    try:

        def watch() -> None:
            tracking.close_stale_runs(experiment, [*arms.values(), parent], stale)

        outcomes = executor_for(cfg, ws.workdir, ws.loaded).run(specs, ready, watch=watch)
    finally:
        # a stage whose process died (its node lost, the study stopped) cannot close its run; the
        # stages another live driver of the study runs are its own
        others: set[str] = set()
        cleanup(lambda: others.update(leases.live_drivers(parent, stale) - {leases.me()}))
        cleanup(tracking.close_running_children, experiment, [*arms.values(), parent], "KILLED", others)
    for arm in {job.arm for job in study.jobs if job.kind != "probe"} - set(arms):
        for earlier in tracking.find_runs(experiment, f"{TAG}run_key", _arm_key(parent, arm)):
            if (
                earlier.info.status != "FINISHED"
            ):  # an arm whose every stage was reused: left open by a killed run
                tracking.close_run(earlier.info.run_id, "FINISHED")
    return outcomes


def _arm_key(parent: str, arm: tuple) -> str:
    return hashlib.sha256(f"{parent}|{arm}".encode()).hexdigest()


def _require_portable(cfg: ExperimentConfig) -> None:
    if cfg.tracking.log_models == "none":
        raise DataError(
            [
                Problem(
                    "<config>",
                    "executor.kind",
                    "Ray jobs hand models on through MLflow",
                    "ray",
                    "tracking.log_models other than none (or executor.kind: in_process)",
                )
            ]
        )
