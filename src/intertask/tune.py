"""Optuna tuning of one training stage, one MLflow run per trial, shared through a study storage.

A study lives in an Optuna RDB storage (SQLite by default, PostgreSQL for many machines). The process
that creates it also creates the MLflow parent run and enqueues exactly `tuning.trials` empty trials;
every worker (this process, or `intertask tune` started again elsewhere with the same study name and
storage) pops WAITING trials one at a time -- an atomic update in the storage, so no trial runs twice
and the study ends with exactly the requested number -- until none is left. The sampler fills each
popped trial's parameters (reseeded per trial number: reproducible, and different across workers).

A trial is one run of the stage (`stages.train_stage`), nested under the parent, reporting its dev
score after every epoch so the pruner can stop it. Its state -- COMPLETE, PRUNED or FAIL -- is the tag
`intertask.trial_state`; a pruned trial's run ends KILLED and a failed one's FAILED, so neither looks
like a success. A worker killed mid-trial stops sending heartbeats; after `grace_seconds` its trial is
failed and enqueued again once with the same parameters (Optuna's retry callback), and its MLflow run
is marked KILLED. A worker that was merely slow (no heartbeat for `grace_seconds`, e.g. on a loaded
machine) finds its trial failed and re-queued by another worker: it stops that trial (run KILLED,
state FAIL), says so, and goes on with the next. Only the best trial's model is logged and registered
(alias `tuning.alias`).

A SQLite study storage is opened with a 60-second busy timeout (writers wait for each other instead of
failing after SQLite's default 5 s), and its tables are created under a file lock beside the database,
so workers that start at the same moment do not race to create them.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import random
import shutil
import sys
import threading
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import psutil
import yaml
from optuna.trial import TrialState

from intertask import plots, resolve, stages, tracking
from intertask.config import ExperimentConfig, TuningConfig
from intertask.errors import ConfigError, Problem
from intertask.workspace import Workspace

try:
    import fcntl  # POSIX: the SQLite creation lock (elsewhere workers should not start at the same moment)
except ImportError:  # pragma: no cover
    fcntl = None

TAG = "intertask."
PARENT_ATTR = "intertask.parent_run_id"
READY_ATTR = "intertask.ready"
SPEC_ATTR = "intertask.spec"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
MLFLOW_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def quiet_optuna() -> None:
    """Optuna's per-trial INFO lines and its warnings that heartbeats are experimental: off. Called by
    the entry points (cli.main), never at import."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class Pruned(optuna.TrialPruned):
    """Raised from the stage's epoch hook; its MLflow run ends KILLED, not FAILED."""

    run_status = "KILLED"


class TakenOver(Exception):
    """This worker's trial was failed as stale by another worker (and re-queued): stop it."""

    run_status = "KILLED"


@dataclass
class TuneResult:
    study_name: str
    storage: str
    parent_run_id: str
    trials: pd.DataFrame  # one row per trial: number, state, value, params, MLflow run id
    best_value: float | None
    best_params: dict
    best_params_file: Path | None  # dotted-key overrides that `finetune` / `main` accept as @FILE
    registered: str | None  # models:/<name>@<alias> of the best trial, when this worker logged it
    ran: int  # trials this worker ran


# --- study ----------------------------------------------------------------------------------------


def default_storage(cfg: ExperimentConfig) -> str:
    """sqlite optuna.db beside a SQLite MLflow store, else in the working folder."""
    uri = tracking.tracking_uri(cfg)
    folder = Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else Path.cwd()
    return f"sqlite:///{(folder / 'optuna.db').resolve()}"


def study_name(cfg: ExperimentConfig) -> str:
    return cfg.tuning.study_name or f"{cfg.name}-{cfg.tuning.stage}"


def _spec(cfg: ExperimentConfig) -> str:
    """What must agree between the workers of one study: the stage, objective and search space."""
    t = cfg.tuning
    stage = getattr(cfg, t.stage)
    return yaml.safe_dump(
        {
            "stage": t.stage,
            "tasks": list(stage.task_names),
            "metric": t.metric,
            "direction": t.direction,
            "trials": t.trials,
            "enqueue": [dict(v) for v in t.enqueue],
            "space": {k: dict(sorted(vars(v).items())) for k, v in sorted(t.space.items())},
        },
        sort_keys=True,
    )


SQLITE_BUSY_SECONDS = 60


@contextlib.contextmanager
def _creation_lock(url: str):
    """An exclusive lock on `<database>.lock` while a SQLite storage creates its tables (Optuna's
    create-if-missing is not atomic across processes); other storages need none."""
    path = url.removeprefix("sqlite:///")
    if fcntl is None or not url.startswith("sqlite:///") or path in ("", ":memory:"):
        yield
        return
    with open(f"{path}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _storage(url: str, t: TuningConfig) -> optuna.storages.RDBStorage:
    engine = {"connect_args": {"timeout": SQLITE_BUSY_SECONDS}} if url.startswith("sqlite") else None
    try:
        with _creation_lock(url):
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=t.heartbeat_seconds,
                grace_period=t.grace_seconds,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
    except Exception as err:  # bad URL, unreachable database, missing driver
        raise ConfigError(
            [
                Problem(
                    "<tuning>", "storage", f"cannot open the study storage: {err}", url, "an Optuna RDB URL"
                )
            ]
        ) from None


def open_study(cfg: ExperimentConfig, ws: Workspace, name: str, url: str) -> tuple[optuna.Study, str]:
    """Create the study (with its parent run and its queue of trials), or join it."""
    t = cfg.tuning
    storage = _storage(url, t)
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction=t.direction)
    except optuna.exceptions.DuplicatedStudyError:
        return _join(cfg, storage, name, url)
    except Exception as err:  # the database answers but is not usable (permissions, old schema)
        raise ConfigError(
            [
                Problem(
                    "<tuning>",
                    "storage",
                    f"cannot create the study: {err}",
                    _safe_url(url),
                    "a writable storage",
                )
            ]
        ) from None
    parent = tracking.open_run(
        f"tune {name}",
        experiment_id=ws.experiment(),
        key=f"tune|{name}|{url}",
        resume=False,
        tags={f"{TAG}stage": "tune", f"{TAG}study": name, f"{TAG}study_storage": _safe_url(url)},
    )
    with tracking.logging_to(parent):
        tracking.log_config(cfg, ws.config_file)
        tracking.log_provenance()
        tracking.log_params(
            {"tuning.trials": t.trials, "tuning.sampler": t.sampler.kind, "tuning.pruner": t.pruner.kind}
        )
    study.set_user_attr(PARENT_ATTR, parent)
    study.set_user_attr(SPEC_ATTR, _spec(cfg))
    for values in initial_trials(t, cfg.seed if t.sampler.seed is None else t.sampler.seed):
        study.enqueue_trial(values, skip_if_exists=False)
    study.set_user_attr(READY_ATTR, True)
    return study, parent


def initial_trials(t: TuningConfig, seed: int) -> list[dict]:
    """The study's queue: the given values first, then empty trials the sampler fills. A grid search
    queues whole grid points instead (Optuna's grid sampler takes only complete enqueued trials):
    given values completed by the first unused point that agrees with them, then unused points in a
    seeded order."""
    if t.sampler.kind != "grid":
        return [dict(v) for v in t.enqueue] + [{} for _ in range(t.trials - len(t.enqueue))]
    names = list(t.space)
    points = [
        dict(zip(names, combo, strict=True))
        for combo in itertools.product(*(t.space[n].grid_values() for n in names))
    ]
    random.Random(seed).shuffle(points)
    queue = []
    for given in t.enqueue:
        match = next(p for p in points if all(p[k] == v for k, v in given.items()))
        points.remove(match)
        queue.append(match)
    return queue + points[: t.trials - len(queue)]


def _join(cfg: ExperimentConfig, storage, name: str, url: str) -> tuple[optuna.Study, str]:
    study = optuna.load_study(study_name=name, storage=storage)
    deadline = time.monotonic() + 60
    while not study.user_attrs.get(READY_ATTR):  # its creator is still enqueueing
        if time.monotonic() > deadline:
            raise ConfigError(
                [
                    Problem(
                        "<tuning>", "study_name", "the study exists but was never set up", name, "a new name"
                    )
                ]
            )
        time.sleep(0.5)
    if study.user_attrs.get(SPEC_ATTR) != _spec(cfg):
        raise ConfigError(
            [
                Problem(
                    "<tuning>",
                    "study_name",
                    f"study {name!r} in {_safe_url(url)} was made for another stage, objective or search space",
                    name,
                    "the same tuning section as the study's first worker, or another --study-name",
                )
            ]
        )
    return study, study.user_attrs[PARENT_ATTR]


def _safe_url(url: str) -> str:
    """A storage URL without its password."""
    head, sep, tail = url.partition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, credentials = head.partition("://")
    return f"{scheme}://{credentials.split(':')[0]}@{tail}"


def trial_seed(seed: int, number: int) -> int:
    """The sampler's seed for trial `number`: from numpy's SeedSequence, so that trials 0, 1, 2 do not
    start from nearly the same state (consecutive integer seeds gave a random sampler 2.81e-5, 2.89e-5
    and 2.82e-5 from a log-uniform [1e-5, 3e-4])."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def sampler_for(t: TuningConfig, seed: int) -> optuna.samplers.BaseSampler:
    if t.sampler.kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if t.sampler.kind == "grid":
        return optuna.samplers.GridSampler({k: list(v.grid_values()) for k, v in t.space.items()}, seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=t.sampler.startup_trials)


def pruner_for(t: TuningConfig) -> optuna.pruners.BasePruner:
    p = t.pruner
    if p.kind == "median":
        # steps are 1-based epochs: epochs 1..warmup_epochs are never pruned
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_epochs + 1
        )
    if p.kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=p.min_epochs, reduction_factor=p.reduction_factor
        )
    if p.kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.min_epochs, reduction_factor=p.reduction_factor)
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.Trial, t: TuningConfig) -> dict:
    params = {}
    for name, space in t.space.items():
        if space.type == "categorical":
            params[name] = trial.suggest_categorical(name, list(space.choices))
        elif space.type == "int":
            step = int(space.step or 1)
            params[name] = trial.suggest_int(name, int(space.low), int(space.high), step=step, log=space.log)
        else:
            params[name] = trial.suggest_float(name, space.low, space.high, step=space.step, log=space.log)
    return params


def trial_config(cfg: ExperimentConfig, params: dict) -> ExperimentConfig:
    """The experiment with the tuned stage's training values replaced (and no probes)."""
    t = cfg.tuning
    stage = getattr(cfg, t.stage)
    training = {k: v for k, v in params.items() if not k.startswith("peft.")}
    peft = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("peft.")}
    stage = replace(
        stage,
        training=replace(stage.training, **training),
        selection_metric=t.metric or stage.selection_metric,
    )
    extra = {"peft": replace(cfg.peft, **peft)} if peft else {}
    return replace(cfg, **{t.stage: stage}, probes=(), **extra)


# --- the worker loop ------------------------------------------------------------------------------


@dataclass
class _Kept:
    number: int
    value: float
    trained: stages.TrainedModel
    cfg: ExperimentConfig


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
    url = storage or t.storage or default_storage(cfg)
    study, parent = open_study(cfg, ws, name, url)
    seed = cfg.seed if t.sampler.seed is None else t.sampler.seed
    study.pruner = pruner_for(t)
    kept: _Kept | None = None
    ran = 0
    while True:
        optuna.storages.fail_stale_trials(study)
        _close_lost_runs(ws, study, name)
        trial_id = study._pop_waiting_trial_id()  # atomic: WAITING -> RUNNING for exactly one worker
        if trial_id is None:
            if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                time.sleep(poll_seconds)  # another worker's trial, or a stale one coming back
                continue
            break
        number = study._storage.get_trial_number_from_id(trial_id)  # the storage API, via the study
        study.sampler = sampler_for(t, trial_seed(seed, number))
        trial = optuna.Trial(study, trial_id)
        kept = _run_trial(ws, study, trial, name, parent, init, kept)
        ran += 1
    return _summarise(ws, study, name, url, parent, kept, ran)


def _heartbeat(storage, trial_id: int, every: float, stop: threading.Event) -> None:
    while not stop.wait(every):
        with contextlib.suppress(Exception):  # a storage hiccup: the next beat retries (grace absorbs it)
            storage.record_heartbeat(trial_id)


def _run_trial(ws, study, trial, name, parent, init, kept: _Kept | None) -> _Kept | None:
    cfg = ws.cfg
    t = cfg.tuning
    storage = study._storage
    storage.record_heartbeat(trial._trial_id)
    stop = threading.Event()
    beat = threading.Thread(
        target=_heartbeat, args=(storage, trial._trial_id, t.heartbeat_seconds, stop), daemon=True
    )
    beat.start()
    _set_attr(trial, "host_pid", tracking.process_tags())
    key = f"{name}#{trial.number}"
    try:
        trial_cfg = trial_config(cfg, suggest(trial, t))
    except Exception as err:  # values the checks could not foresee (a retry enqueued by another space)
        stop.set()
        if _set_attr(trial, "error", f"{type(err).__name__}: {err}"[:500]):
            _tell(study, trial, state=TrialState.FAIL)
        return kept
    trial_ws = Workspace(
        cfg=trial_cfg,
        config_file=ws.config_file,
        tags={
            **ws.tags,
            f"{TAG}trial_key": key,
            f"{TAG}trial_number": str(trial.number),
            f"{TAG}trial_state": "RUNNING",
        },
        experiment_id=ws.experiment(),
        workdir=ws.workdir,
        _data=ws._data,
    )

    def on_epoch(epoch: int, score: float) -> None:
        try:
            trial.report(score, epoch)
        except optuna.exceptions.UpdateFinishedTrialError:
            raise TakenOver(f"trial {trial.number} was failed as stale by another worker") from None
        tracking.log_metrics({"trial/intermediate_value": score}, epoch)
        last = getattr(trial_cfg, t.stage).training.epochs
        if epoch < last and trial.should_prune():  # after the last epoch there is nothing left to save
            raise Pruned(f"trial {trial.number} pruned after epoch {epoch} (dev {score:.4f})")

    state, value, trained = "FAIL", None, None
    started = time.perf_counter()
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
        )
        value = objective(trial_cfg, trained)
        state = "COMPLETE"
    except optuna.TrialPruned:
        state = "PRUNED"
    except TakenOver:
        state = "LOST"
    except Exception as err:  # a failed trial is recorded and the study goes on
        _set_attr(trial, "error", f"{type(err).__name__}: {err}"[:500])
    finally:
        stop.set()
        beat.join()
    run_ids = [r.info.run_id for r in tracking.find_runs(ws.experiment(), f"{TAG}trial_key", key)]
    if state != "LOST":
        if run_ids:
            _set_attr(trial, "mlflow_run_id", run_ids[0])
        _set_attr(trial, "seconds", time.perf_counter() - started)
        if state == "COMPLETE":
            state = state if _tell(study, trial, value) else "LOST"
        else:
            told = _tell(study, trial, state=TrialState.PRUNED if state == "PRUNED" else TrialState.FAIL)
            state = state if told else "LOST"
    if state == "LOST":  # failed as stale by another worker, which re-queued it: this run is not the trial's
        print(
            f"warning: trial {trial.number} was failed as stale by another worker (no heartbeat for "
            f"{cfg.tuning.grace_seconds} s; it is retried once): this worker stopped it and goes on. On a busy "
            "machine raise tuning.grace_seconds.",
            file=sys.stderr,
        )
        value = None
        for run_id in run_ids:
            tracking.close_run(run_id, "KILLED")
    for run_id in run_ids:
        tracking.set_run_tags(run_id, {f"{TAG}trial_state": "FAIL" if state == "LOST" else state})
    kept = _keep_best(kept, trial.number, value, trained, trial_cfg, t.direction)
    del trained
    gc.collect()
    with tracking.logging_to(parent):
        tracking.log_metrics({"trials/rss_mb": psutil.Process().memory_info().rss / 2**20}, trial.number)
    return kept


def _set_attr(trial: optuna.Trial, key: str, value) -> bool:
    """Set a user attribute of a running trial; False when another worker has failed it as stale."""
    try:
        trial.set_user_attr(key, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    return True


def _tell(study: optuna.Study, trial: optuna.Trial, value=None, state=None) -> bool:
    """Finish a trial; False when another worker has failed it as stale first (and re-queued it)."""
    if study._storage.get_trial(trial._trial_id).state.is_finished():
        return False
    try:
        study.tell(trial, value, state=state)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError):  # failed by another in between
        if study._storage.get_trial(trial._trial_id).state.is_finished():
            return False
        raise
    return True


def objective(cfg: ExperimentConfig, trained: stages.TrainedModel) -> float:
    """The tuned stage's dev selection score at its best epoch (the tuning metric when given)."""
    stage = getattr(cfg, cfg.tuning.stage)
    chosen = [stage.selection_task] if stage.selection_task else list(stage.task_names)
    values = [trained.best_dev[task][resolve.selection_metric(cfg, stage, task)] for task in chosen]
    return float(sum(values) / len(values))


def _keep_best(kept, number, value, trained, trial_cfg, direction) -> _Kept | None:
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
        return _Kept(number, value, trained, trial_cfg)
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


# --- summary --------------------------------------------------------------------------------------


def trials_table(study: optuna.Study) -> pd.DataFrame:
    rows = []
    for trial in study.get_trials(deepcopy=False):
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "value": trial.value,
                **{f"params_{k}": v for k, v in trial.params.items()},
                "epochs_reported": len(trial.intermediate_values),
                "retry_of": trial.system_attrs.get("failed_trial"),
                "mlflow_run_id": trial.user_attrs.get("mlflow_run_id"),
                "error": trial.user_attrs.get("error"),
                "seconds": trial.user_attrs.get("seconds"),
            }
        )
    return pd.DataFrame(rows)


def best_params_overrides(cfg: ExperimentConfig, params: dict) -> dict:
    return {k if k.startswith("peft.") else f"{cfg.tuning.stage}.training.{k}": v for k, v in params.items()}


def _summarise(ws, study, name, url, parent, kept: _Kept | None, ran: int) -> TuneResult:
    cfg = ws.cfg
    table = trials_table(study)
    complete = [tr for tr in study.get_trials(deepcopy=False) if tr.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    registered = None
    folder = Path("tuning") / name
    folder.mkdir(parents=True, exist_ok=True)
    best_file = None
    if best is not None:
        overrides = best_params_overrides(cfg, best.params)
        best_file = folder / "best_params.yaml"
        best_file.write_text(yaml.safe_dump(overrides, sort_keys=True), encoding="utf-8")
        if kept is not None and kept.number == best.number:  # this worker holds the best model's files
            logged = stages.publish(
                Workspace(cfg=kept.cfg, experiment_id=ws.experiment(), workdir=ws.workdir),
                cfg.tuning.stage,
                kept.trained,
                cfg.tuning.alias,
            )
            if logged is not None:
                registered = f"models:/{logged.name}@{logged.alias}" if logged.name else logged.uri
    table.to_csv(folder / "trials.csv", index=False)
    done = not study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
    with tracking.logging_to(parent):
        tracking.log_table(table, "tuning/trials")
        tracking.log_text(table.to_html(index=False), "tuning/trials.html")
        if best is not None:
            tracking.log_metrics({"best_value": best.value, "best_trial": best.number})
            tracking.log_params({f"best.{k}": v for k, v in best.params.items()})
            tracking.log_text(best_file.read_text(encoding="utf-8"), "tuning/best_params.yaml")
        counts = table.state.value_counts().to_dict() if not table.empty else {}
        tracking.log_metrics(
            {f"trials/{state.lower()}": counts.get(state, 0) for state in ("COMPLETE", "PRUNED", "FAIL")}
        )
        for figure_name, figure in plots.tuning_figures(study).items():
            tracking.log_figure(figure, f"tuning/{figure_name}.png")
            figure.savefig(folder / f"{figure_name}.png", dpi=110, bbox_inches="tight")
            plots.close(figure)
    if done:
        tracking.close_run(parent, "FINISHED")
    return TuneResult(
        name,
        _safe_url(url),
        parent,
        table,
        best.value if best else None,
        dict(best.params) if best else {},
        best_file,
        registered,
        ran,
    )
