"""The study: its storage (SQLite with a busy timeout and a creation lock, or any RDB URL), its MLflow
parent run, the enqueued trials, and the sampler, pruner and search space of each trial."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import random
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import yaml
from filelock import FileLock
from optuna.trial import TrialState

from intertask import tracking
from intertask.config import ExperimentConfig, TuningConfig
from intertask.errors import ConfigError, Problem, redact
from intertask.study.workspace import Workspace

TAG = "intertask."
PARENT_ATTR = "intertask.parent_run_id"
READY_ATTR = "intertask.ready"
SPEC_ATTR = "intertask.spec"
PLANNED_ATTR = "intertask.queue_slot"  # on every queued trial (and, copied by Optuna, on its retry)
UNPLANNED_ATTR = "intertask.unplanned"  # on a trial Optuna's ask() added when the queue was empty
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
MLFLOW_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def quiet_optuna() -> None:
    """Optuna's per-trial INFO lines and its warnings that heartbeats are experimental: off. Called by
    the entry points (cli.main), never at import."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


STORAGE_ENV = "INTERTASK_TUNING_STORAGE"  # the storage URL from the environment (never a -P parameter)


def storage_url(cfg: ExperimentConfig, given: str | None = None) -> str:
    """The study's storage: --storage, else $INTERTASK_TUNING_STORAGE, else tuning.storage, else
    `default_storage`. A PostgreSQL password is best left out of the URL: libpq reads $PGPASSWORD
    and ~/.pgpass (postgresql://tuner@db/optuna)."""
    return given or os.environ.get(STORAGE_ENV) or cfg.tuning.storage or default_storage(cfg)


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
    """An exclusive lock on `<database>.lock` (`filelock`) while a SQLite storage creates its tables
    (Optuna's create-if-missing is not atomic across processes); other storages need none."""
    path = url.removeprefix("sqlite:///")
    if not url.startswith("sqlite:///") or path in ("", ":memory:"):
        yield
        return
    with FileLock(f"{path}.lock"):
        yield


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


def open_study(
    cfg: ExperimentConfig, ws: Workspace, name: str, url: str
) -> tuple[optuna.Study, str, optuna.storages.RDBStorage]:
    """Create the study (with its parent run and its queue of trials), or join it; returns the study,
    its MLflow parent run and its storage (the worker beats and reads trial states through it)."""
    t = cfg.tuning
    storage = _storage(url, t)
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction=t.direction)
    except optuna.exceptions.DuplicatedStudyError:
        return (*_join(cfg, storage, name, url), storage)
    except Exception as err:  # the database answers but is not usable (permissions, old schema)
        raise ConfigError(
            [
                Problem(
                    "<tuning>",
                    "storage",
                    f"cannot create the study: {err}",
                    redact(url),
                    "a writable storage",
                )
            ]
        ) from None
    parent = tracking.open_run(
        f"tune {name}",
        experiment_id=ws.experiment(),
        key=f"tune|{name}|{_storage_key(url)}",
        known=[],  # a new parent run each time a study is created
        tags={f"{TAG}stage": "tune", f"{TAG}study": name, f"{TAG}study_storage": redact(url)},
    )
    with tracking.logging_to(parent):
        tracking.log_config(cfg, ws.config_file)
        tracking.log_provenance()
        tracking.log_params(
            {"tuning.trials": t.trials, "tuning.sampler": t.sampler.kind, "tuning.pruner": t.pruner.kind}
        )
    study.set_user_attr(PARENT_ATTR, parent)
    study.set_user_attr(SPEC_ATTR, _spec(cfg))
    for slot, values in enumerate(initial_trials(t, cfg.seed if t.sampler.seed is None else t.sampler.seed)):
        study.enqueue_trial(values, user_attrs={PLANNED_ATTR: slot}, skip_if_exists=False)
    study.set_user_attr(READY_ATTR, True)
    return study, parent, storage


def _storage_key(url: str) -> str:
    """The storage in a run key (a tag): a hash of the URL without its secrets, never the URL."""
    return hashlib.sha256(redact(url).encode()).hexdigest()[:16]


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
                    f"study {name!r} in {redact(url)} was made for another stage, objective or search space",
                    name,
                    "the same tuning section as the study's first worker, or another --study-name",
                )
            ]
        )
    return study, study.user_attrs[PARENT_ATTR]


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
