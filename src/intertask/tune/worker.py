"""The worker loop: take a queued trial (Optuna's ask(), atomic in the storage), run the stage with
the trial's parameters in a nested run, report each epoch's dev score to the pruner, keep a heartbeat,
and keep only the best trial's model files."""

from __future__ import annotations

import functools
import gc
import shutil
import sys
import threading
import time
import traceback
import warnings

import optuna
import psutil
from optuna.trial import TrialState

from intertask import stages, tracking
from intertask.config import ExperimentConfig, resolve
from intertask.errors import redact
from intertask.study.workspace import Workspace
from intertask.tune.optuna_study import (
    PLANNED_ATTR,
    TAG,
    UNPLANNED_ATTR,
    open_study,
    pruner_for,
    sampler_for,
    storage_url,
    study_name,
    suggest,
    trial_config,
    trial_seed,
)
from intertask.tune.summary import Kept, TuneResult, summarise


class Pruned(optuna.TrialPruned):
    """Raised from the stage's epoch hook; its MLflow run ends KILLED, not FAILED."""

    run_status = "KILLED"


class TakenOver(Exception):
    """This worker's trial was failed as stale by another worker (and re-queued): stop it."""

    run_status = "KILLED"


def tune(
    ws: Workspace,
    *,
    name: str | None = None,
    storage: str | None = None,
    init: str | None = None,
    poll_seconds: float = 1.0,
) -> TuneResult:
    """Work on the study until no trial is waiting or running; then summarise it on the parent run."""
    cfg = ws.cfg
    t = cfg.tuning
    name = name or study_name(cfg)
    url = storage_url(cfg, storage)
    study, parent, storage = open_study(cfg, ws, name, url)
    seed = cfg.seed if t.sampler.seed is None else t.sampler.seed
    study.pruner = pruner_for(t)
    kept: Kept | None = None
    ran = 0
    while True:
        optuna.storages.fail_stale_trials(study)
        _close_lost_runs(ws, study, name)
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                time.sleep(poll_seconds)  # another worker's trial, or a stale one coming back
                continue
            break
        trial = ask_queued(study)
        if trial is None:
            continue
        study.sampler = sampler_for(t, trial_seed(seed, trial.number))  # before the trial's first suggest
        kept = run_trial(ws, study, storage, trial, name, parent, init, kept)
        ran += 1
    return summarise(ws, study, name, url, parent, kept, ran)


def ask_queued(study: optuna.Study) -> optuna.Trial | None:
    """The next queued trial, through Optuna's public ask(): it moves one WAITING trial to RUNNING for
    exactly one worker, but when the queue emptied since this worker looked (another took the last
    trial) it adds a new trial instead. Such a trial is none the study planned: it is told FAIL at once,
    marked unplanned (the summary leaves it out and counts it), said, and None is returned."""
    with warnings.catch_warnings():  # ask() warns that heartbeats are meant for optimize(); this loop
        warnings.filterwarnings("ignore", message="Heartbeat of storage")  # keeps its own (run_trial)
        trial = study.ask()
    if PLANNED_ATTR in trial.user_attrs:
        return trial
    trial.set_user_attr(UNPLANNED_ATTR, "the queue was empty when this worker asked; not run")
    study.tell(trial, state=TrialState.FAIL)
    print(
        f"note: trial {trial.number} was added by Optuna's ask() after another worker took the last "
        "queued trial; it is marked unplanned, not run, and left out of the trials table",
        file=sys.stderr,
    )
    return None


def storage_trial_id(storage, study_name: str, number: int) -> int:
    """The storage's id of trial `number` (what heartbeats and state reads take), by the storage's
    public API: Optuna keeps it private on the Trial."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)


def _heartbeat(storage, trial_id: int, every: float, stop: threading.Event) -> None:
    while not stop.wait(every):
        try:
            storage.record_heartbeat(trial_id)
        except Exception as err:  # a storage hiccup: said; the next beat retries (the grace absorbs one)
            print(
                f"note: trial heartbeat not recorded: {redact(f'{type(err).__name__}: {err}')}",
                file=sys.stderr,
            )


def run_trial(ws, study, storage, trial, name, parent, init, kept: Kept | None) -> Kept | None:
    """One trial of the worker's study: its config from the search space, trained as a nested run,
    scored, told to the study (or failed with its traceback as an artifact); returns the best kept."""
    t = ws.cfg.tuning
    trial_id = storage_trial_id(storage, study.study_name, trial.number)
    stop, beat = _start_heartbeat(storage, trial_id, t.heartbeat_seconds)
    _set_attr(trial, "host_pid", tracking.process_tags())
    key = f"{name}#{trial.number}"
    try:
        trial_cfg = trial_config(ws.cfg, suggest(trial, t))
    except Exception as err:  # values the checks could not foresee (a retry enqueued by another space)
        stop.set()
        if _set_attr(trial, "error", redact(f"{type(err).__name__}: {err}")[:500]):
            _tell(study, storage, trial_id, trial, state=TrialState.FAIL)
        return kept
    started = time.perf_counter()
    try:
        state, value, trained, failure = _train_trial(
            _trial_workspace(ws, trial_cfg, key, trial.number), trial, parent, init
        )
    finally:
        stop.set()
        beat.join()
    run_ids = [r.info.run_id for r in tracking.find_runs(ws.experiment(), f"{TAG}trial_key", key)]
    if state == "FAIL" and failure and run_ids:
        tracking.log_text_to(run_ids[0], redact(failure), "trial/traceback.txt")
    told = functools.partial(_tell, study, storage, trial_id, trial)
    state = _settle(told, trial, state, value, run_ids, time.perf_counter() - started, t.grace_seconds)
    value = None if state == "LOST" else value
    kept = _keep_best(kept, trial.number, value, trained, trial_cfg, t.direction)
    del trained
    gc.collect()
    with tracking.logging_to(parent):
        tracking.log_metrics({"trials/rss_mb": psutil.Process().memory_info().rss / 2**20}, trial.number)
    return kept


def _start_heartbeat(storage, trial_id: int, seconds: int) -> tuple[threading.Event, threading.Thread]:
    """A thread recording the trial's heartbeat every `seconds` until the event is set."""
    storage.record_heartbeat(trial_id)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(storage, trial_id, seconds, stop), daemon=True)
    beat.start()
    return stop, beat


def _train_trial(trial_ws: Workspace, trial, parent: str, init) -> tuple[str, float | None, object, str]:
    """Train the tuned stage of one trial: (state COMPLETE / PRUNED / LOST / FAIL, objective value,
    the trained stage, the traceback of a failure)."""
    trial_cfg, t = trial_ws.cfg, trial_ws.cfg.tuning

    def on_epoch(epoch: int, score: float) -> None:
        try:
            trial.report(score, epoch)
        except optuna.exceptions.UpdateFinishedTrialError:
            raise TakenOver(f"trial {trial.number} was failed as stale by another worker") from None
        tracking.log_metrics({"trial/intermediate_value": score}, epoch)
        last = getattr(trial_cfg, t.stage).training.epochs
        if epoch < last and trial.should_prune():  # after the last epoch there is nothing left to save
            raise Pruned(f"trial {trial.number} pruned after epoch {epoch} (dev {score:.4f})")

    trained = None
    try:
        start = init if init is not None else (trial_cfg.target.init if t.stage == "target" else None)
        trained = stages.train_stage(
            trial_ws,
            t.stage,
            start,
            parent_run_id=parent,
            on_epoch=on_epoch,
            log_model=False,
            resumable=False,
            params={"trial_number": trial.number},
        )
        return "COMPLETE", objective(trial_cfg, trained), trained, ""
    except optuna.TrialPruned:
        return "PRUNED", None, trained, ""
    except TakenOver:
        return "LOST", None, trained, ""
    except Exception as err:  # a failed trial is recorded (its traceback on its run) and the study goes on
        _set_attr(trial, "error", redact(f"{type(err).__name__}: {err}")[:500])
        return "FAIL", None, trained, traceback.format_exc()


def _trial_workspace(ws: Workspace, trial_cfg: ExperimentConfig, key: str, number: int) -> Workspace:
    """The trial's own workspace: its config, and the tags that find its run again."""
    return Workspace(
        cfg=trial_cfg,
        config_file=ws.config_file,
        tags={
            **ws.tags,
            f"{TAG}trial_key": key,
            f"{TAG}trial_number": str(number),
            f"{TAG}trial_state": "RUNNING",
        },
        experiment_id=ws.experiment(),
        workdir=ws.workdir,
        loaded=ws.loaded,
    )


def _settle(tell, trial, state: str, value, run_ids: list[str], seconds: float, grace: int) -> str:
    """Tell the study how the trial ended and tag its runs; returns the final state, LOST when another
    worker had failed the trial as stale (its runs are then closed KILLED: they are not the trial's)."""
    if state != "LOST":
        if run_ids:
            _set_attr(trial, "mlflow_run_id", run_ids[0])
        _set_attr(trial, "seconds", seconds)
        if state == "COMPLETE":
            state = state if tell(value) else "LOST"
        else:
            told = tell(state=TrialState.PRUNED if state == "PRUNED" else TrialState.FAIL)
            state = state if told else "LOST"
    if state == "LOST":  # failed as stale by another worker, which re-queued it: this run is not the trial's
        print(
            f"warning: trial {trial.number} was failed as stale by another worker (no heartbeat for "
            f"{grace} s; it is retried once): this worker stopped it and goes on. On a busy "
            "machine raise tuning.grace_seconds.",
            file=sys.stderr,
        )
        for run_id in run_ids:
            tracking.close_run(run_id, "KILLED")
    for run_id in run_ids:
        tracking.set_run_tags(run_id, {f"{TAG}trial_state": "FAIL" if state == "LOST" else state})
    return state


def _set_attr(trial: optuna.Trial, key: str, value) -> bool:
    """Set a user attribute of a running trial; False when another worker has failed it as stale."""
    try:
        trial.set_user_attr(key, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    return True


def _tell(study: optuna.Study, storage, trial_id: int, trial: optuna.Trial, value=None, state=None) -> bool:
    """Finish a trial; False when another worker has failed it as stale first (and re-queued it)."""
    if storage.get_trial(trial_id).state.is_finished():
        return False
    try:
        study.tell(trial, value, state=state)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError):  # failed by another in between
        if storage.get_trial(trial_id).state.is_finished():
            return False
        raise
    return True


def objective(cfg: ExperimentConfig, trained: stages.TrainedModel) -> float:
    """The tuned stage's dev selection score at its best epoch (the tuning metric when given)."""
    stage = getattr(cfg, cfg.tuning.stage)
    chosen = [stage.selection_task] if stage.selection_task else list(stage.task_names)
    values = [trained.best_dev[task][resolve.selection_metric(cfg, stage, task)] for task in chosen]
    return float(sum(values) / len(values))


def _keep_best(kept, number, value, trained, trial_cfg, direction) -> Kept | None:
    """This worker's best model stays in the workdir; every other trial's files are removed."""
    if trained is None:
        return kept
    if value is None:
        _remove(trained)
        return kept
    better = kept is None or (value > kept.value if direction == "maximize" else value < kept.value)
    if better:
        if kept is not None:
            _remove(kept.trained)
        return Kept(number, value, trained, trial_cfg)
    _remove(trained)
    return kept


def _remove(trained: stages.TrainedModel) -> None:
    shutil.rmtree(trained.files.model_dir, ignore_errors=True)


def _close_lost_runs(ws, study, name: str) -> None:
    """MLflow runs of trials failed as stale (their worker died) end KILLED with state FAIL."""
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        for found in tracking.find_runs(ws.experiment(), f"{TAG}trial_key", f"{name}#{frozen.number}"):
            if found.data.tags.get(f"{TAG}trial_state") != "RUNNING":
                continue  # ended by its own worker
            if found.info.status == "RUNNING":  # (a start on the same host may have marked it already)
                tracking.close_run(found.info.run_id, "KILLED")
            tracking.set_run_tags(found.info.run_id, {f"{TAG}trial_state": "FAIL"})
