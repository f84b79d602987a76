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
from dataclasses import dataclass, replace

from intertask import tracking
from intertask.config import ExperimentConfig, resolve
from intertask.config.schema import to_dict
from intertask.errors import DataError, Problem
from intertask.study import grid
from intertask.study.executors import JobSpec, Outcome, executor_for, reused
from intertask.study.foresight import log_foresight, predict_first
from intertask.study.grid import Job
from intertask.study.identity import code_version, content_hash
from intertask.study.planning import Plan, check_models, plan
from intertask.study.workspace import Workspace
from intertask.tracking import leases

TAG = tracking.TAG


@dataclass(frozen=True)
class StudyResult:
    parent_run_id: str
    outcomes: dict[str, Outcome]  # job id -> what it produced (run, model, table)
    report: object  # report.Report


def stale_seconds(cfg: ExperimentConfig) -> float:
    """After how long without a heartbeat a stage process or a driver counts as gone, on whichever host."""
    return 4 * cfg.executor.heartbeat_seconds


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
        foresight = predict_first(ws, study, done_before)
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
                log_foresight(ws, foresight, parent)
            outcomes = _run_jobs(ws, study, parent, ready, cleanup, arms)
            built = _report(ws, outcomes, parent, foresight)
        status = "FINISHED"
        return StudyResult(parent, outcomes, built)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        _close_study(parent, arms, status, cleanup, stale=stale_seconds(cfg))


def _open_parent(cfg: ExperimentConfig, experiment: str) -> tuple[str, float | None]:
    """The study's parent run: the one an earlier or concurrent driver of this study opened (and
    None), else a new one and when it was made (time.monotonic(): leases.elect picks one among those
    two drivers starting at the same moment made)."""
    key = main_key(cfg)
    known = tracking.find_runs(experiment, f"{TAG}run_key", key)
    parent = tracking.open_run(
        f"main {cfg.name}", experiment_id=experiment, key=key, tags={f"{TAG}stage": "main"}, known=known
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
    if earlier == parent:
        return built
    # one driver of the study logs it (two at once would upload the same artifacts over each other);
    # the parent is closed by the last driver to leave (_close_study)
    holder = leases.claim(parent, content_hash(["report", inputs]), stale_seconds(cfg))
    if holder is not None:
        print(f"note: the report is logged on the study's run by driver {holder}", file=sys.stderr)
        return built
    with tracking.logging_to(parent):
        collect.log(built, cfg, outcomes)
        tracking.set_tags({f"{TAG}report_inputs": inputs})
    return built


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
    stale = stale_seconds(cfg)
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
