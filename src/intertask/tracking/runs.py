"""The connection to the tracking store, runs (open, nest, close, find, reap), and logging values,
tables, figures and files into the active run."""

from __future__ import annotations

import html
import logging
import os
import platform
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from intertask.config import ExperimentConfig
from intertask.errors import ModelError, Problem, redact

TAG = "intertask."  # prefix of our tags


class TrackingError(ModelError):
    """The tracking server cannot be reached or refuses a request."""


def tracking_uri(cfg: ExperimentConfig) -> str:
    """tracking.uri, else $MLFLOW_TRACKING_URI, else the embedded default sqlite:///<cwd>/mlflow.db."""
    return (
        cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    )


# MLflow reads these from the environment only. What the user's environment sets wins; otherwise each
# call of `use` sets them from ITS config (not only the first config of a process).
_USER_ENV = {
    name: os.environ.get(name)
    for name in (
        "MLFLOW_DISABLE_TELEMETRY",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
    )
}


def use(cfg: ExperimentConfig, uri: str | None = None) -> str:
    """Point MLflow at the configured tracking store, or at `uri` (a job in another process gets the
    URI its driver resolved); nothing is created. Called by entry points only: it sets process state.
    A server URI with credentials (http://user:password@host) is split: MLflow gets the URI without
    them and the credentials through its own MLFLOW_TRACKING_USERNAME / _PASSWORD (a user part without
    a password, https://<token>@host, through MLFLOW_TRACKING_TOKEN), so that no link it prints or logs
    carries the secret."""
    uri = uri or tracking_uri(cfg)
    # every request rides through a server that is away for up to tracking.outage_seconds (a restart
    # for an upgrade), with MLflow's own retries, unless the environment says otherwise
    retries, factor = retry_plan(cfg.tracking.outage_seconds)
    chosen = {
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": f"{factor:g}",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(cfg.tracking.http_timeout_seconds),
    }
    for name, value in chosen.items():
        os.environ[name] = _USER_ENV[name] if _USER_ENV[name] is not None else value
    _watch_retries(cfg.tracking.outage_seconds)
    plain, user, password = split_credentials(uri)
    if user is not None and password is None:
        os.environ["MLFLOW_TRACKING_TOKEN"] = user
    elif user is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"] = user
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    mlflow.set_tracking_uri(plain)
    mlflow.set_system_metrics_sampling_interval(cfg.tracking.system_metrics_interval_seconds)
    return uri


def split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """(the URI without user:password@, user, password) for an http(s) URI that has them; a user part
    alone (a token) comes back as user with password None."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return uri, None, None
    host = parts.netloc.rpartition("@")[2]
    plain = urllib.parse.urlunsplit(parts._replace(netloc=host))
    password = None if parts.password is None else urllib.parse.unquote(parts.password)
    return plain, urllib.parse.unquote(parts.username or ""), password


def connect(cfg: ExperimentConfig, create: bool = True) -> str | None:
    """The experiment id for cfg in the tracking store (the experiment is created if new, or None is
    returned with `create=False`)."""
    uri = use(cfg)
    name = cfg.tracking.experiment or cfg.name
    try:
        with _patience(min(cfg.tracking.outage_seconds, FIRST_CONTACT_SECONDS)):
            return _connect(cfg, name, create)
    except MlflowException as err:
        raise TrackingError(
            [
                Problem(
                    "<tracking>",
                    "tracking.uri",
                    f"tracking store refused: {err.message[:200]}",
                    uri,
                    "a reachable MLflow tracking URI",
                )
            ]
        ) from None
    except Exception as err:  # connection errors surface as several exception types
        raise TrackingError(
            [
                Problem(
                    "<tracking>",
                    "tracking.uri",
                    f"cannot reach tracking store: {err}"[:300],
                    uri,
                    "a reachable MLflow tracking URI",
                )
            ]
        ) from None


def _connect(cfg: ExperimentConfig, name: str, create: bool) -> str | None:
    if os.environ.get("MLFLOW_RUN_ID"):  # launched by `mlflow run`: the launcher chose the experiment
        launched = MlflowClient().get_run(os.environ["MLFLOW_RUN_ID"]).info.experiment_id
        experiment = mlflow.get_experiment(launched)  # set up as one of ours (kind, description)
    else:
        experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        return _create_experiment(name, describe(cfg)) if create else None
    _set_up(experiment, cfg)
    return experiment.experiment_id


# --- riding through a tracking server that is away -------------------------------------------------------

FIRST_CONTACT_SECONDS = 20  # a study's first request: a wrong URI is said within this, not after minutes
_BACKOFF_MAX = 120.0  # urllib3's longest wait between two tries
_RETRY_LIMIT = 10  # MLflow refuses more retries than this


def waited(retries: int, factor: float) -> float:
    """Seconds urllib3 (MLflow's HTTP retries) waits in all over `retries` retries: nothing after the
    first failure, then factor * 2**(k-1) s after the k-th, at most 120 s each."""
    return sum(min(factor * 2 ** (k - 1), _BACKOFF_MAX) for k in range(2, retries + 1))


def retry_plan(outage_seconds: float) -> tuple[int, float]:
    """(retries, backoff factor) of MLflow's HTTP retries that wait at least `outage_seconds` in all:
    the fewest retries at factor 1, else 10 retries at the smallest factor (in halves) that do."""
    for retries in range(_RETRY_LIMIT + 1):
        if waited(retries, 1.0) >= outage_seconds:
            return retries, 1.0
    factor = 1.0
    while waited(_RETRY_LIMIT, factor) < outage_seconds and factor < _BACKOFF_MAX:
        factor += 0.5
    return _RETRY_LIMIT, factor


@contextmanager
def _patience(seconds: float) -> Iterator[None]:
    """Requests made in the block wait at most about `seconds` for an absent server."""
    saved = {
        n: os.environ.get(n)
        for n in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")
    }
    _set_retries(seconds)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class _RetrySeen(logging.Filter):
    """On urllib3's logger: a request to the tracking server retried (connection refused or broken, a
    5xx answer) is said on stderr -- at once, then at most every 30 s while it lasts -- instead of
    urllib3's raw warning, and remembered (`last_retry`): a driver then does not take a stage's
    heartbeat, which could not be written meanwhile, as a sign that its process died. Once the server
    has not answered for tracking.outage_seconds, later requests fail at once (closing runs, a stage's
    last logs: each would otherwise wait the whole outage again); the first answer restores the
    patience."""

    _RESPONSE = '%s://%s:%s "%s %s %s" %s %s'  # urllib3's debug line for every answer received

    def __init__(self) -> None:
        super().__init__()
        self.outage_seconds = 0.0
        self.last_retry = 0.0
        self.last_said = 0.0
        self.since: float | None = None  # when the present outage began
        self.gave_up = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == self._RESPONSE:
            self.since = None
            if self.gave_up:
                self.gave_up = False
                _set_retries(self.outage_seconds)
            return False
        retried = record.msg in ("Retrying (%r) after connection broken by '%r': %s", "Retry: %s")
        if not retried:
            return record.levelno > logging.DEBUG  # urllib3's other debug lines stay unseen
        now = time.time()
        self.since = self.since or now
        if now - self.last_retry > 60 or now - self.last_said >= 30:
            why = record.args[1] if record.msg.startswith("Retrying") and len(record.args) > 1 else "5xx"
            print(
                f"note: the tracking server {redact(mlflow.get_tracking_uri())} does not answer "
                f"({redact(str(why))[:160]}); retrying for up to {self.outage_seconds:g} s "
                "(tracking.outage_seconds)",
                file=sys.stderr,
                flush=True,
            )
            self.last_said = now
        self.last_retry = now
        if not self.gave_up and now - self.since >= self.outage_seconds:
            self.gave_up = True
            _set_retries(None)
            print(
                f"note: the tracking server has not answered for {now - self.since:.0f} s: further requests "
                "fail at once",
                file=sys.stderr,
                flush=True,
            )
        return False


def _set_retries(outage_seconds: float | None) -> None:
    """MLflow's retries sized for `outage_seconds`, or none (None); what the user's environment sets
    stays."""
    if _USER_ENV["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] is not None:
        return
    retries, factor = retry_plan(outage_seconds) if outage_seconds is not None else (0, 1.0)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = f"{factor:g}"


_RETRIES = _RetrySeen()


def _watch_retries(outage_seconds: float) -> None:
    _RETRIES.outage_seconds, _RETRIES.gave_up = outage_seconds, False  # `use` set full patience again
    pool = logging.getLogger("urllib3.connectionpool")
    if _RETRIES not in pool.filters:
        pool.addFilter(_RETRIES)
    if pool.getEffectiveLevel() > logging.DEBUG:
        pool.setLevel(logging.DEBUG)  # a retried 5xx answer is a debug line; the filter drops the rest


def last_retry() -> float:
    """When this process last retried a request to the tracking server (unix time; 0: never)."""
    return _RETRIES.last_retry


EXPERIMENT_KIND = "mlflow.experimentKind"  # the UI opens a model-training experiment on its runs
MODEL_TRAINING = "custom_model_development"  # (without it MLflow 3 opens an empty GenAI overview)
DESCRIPTION = "mlflow.note.content"  # an experiment's or a run's description in the UI (Markdown)
TAG_LIMIT = 8000  # MLflow's longest tag value


def describe(cfg: ExperimentConfig) -> str:
    """The experiment's description: what the study asks, in the UI's Markdown."""
    grid = cfg.grid
    if grid is not None:
        listed = grid.intermediate or (["+".join(cfg.intermediate.task_names)] if cfg.intermediate else [])
        choices = ", ".join("+".join(c) if not isinstance(c, str) else c for c in listed)
        targets = ", ".join(grid.target) or (cfg.target.task_names[0] if cfg.target else "none")
        shape = f"intermediate choices {choices}; targets {targets}"
    else:
        inter = "+".join(cfg.intermediate.task_names) if cfg.intermediate else "none"
        shape = f"intermediate {inter}; target {cfg.target.task_names[0] if cfg.target else 'none'}"
    return (
        f"**{cfg.name}** (intertask): does intermediate-task training help the target tasks? "
        f"{shape}; base model {cfg.model.name_or_path}. Each study is a `main` run with one child per "
        "arm and one per stage; its report (gains with intervals) is the parent run's artifact."
    )


def _set_up(experiment, cfg: ExperimentConfig) -> None:
    """An experiment made elsewhere (by `mlflow run`, an earlier version, by hand) gets what ours get
    when created: the model-training kind (else MLflow 3's UI opens an empty GenAI overview) and, when
    it has none, the study's description."""
    client = MlflowClient()
    if EXPERIMENT_KIND not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
    if not experiment.tags.get(DESCRIPTION):
        client.set_experiment_tag(experiment.experiment_id, DESCRIPTION, redact(describe(cfg)))


def _create_experiment(name: str, description: str = "") -> str:
    """Create the experiment as a model-training one with its description; another process creating
    it at the same moment is not an error."""
    tags = {EXPERIMENT_KIND: MODEL_TRAINING, **({DESCRIPTION: description} if description else {})}
    try:
        return mlflow.create_experiment(name, tags=tags)
    except MlflowException:  # RESOURCE_ALREADY_EXISTS from a server, a unique-key error from SQL stores
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def store_failure(err: BaseException, uri: str) -> TrackingError | None:
    """A TrackingError naming the URI when `err` is the tracking store failing (unreachable, timing
    out, answering 5xx after the retries) rather than a bug or bad input; else None."""
    import requests

    chain, seen = [], err
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    network = any(isinstance(e, requests.exceptions.RequestException | ConnectionError) for e in chain)
    text = " ".join(str(e) for e in chain)
    markers = ("Max retries exceeded", "Connection refused", "Read timed out", "too many 5")
    if not network and not any(m in text for m in markers):
        return None
    first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
    return TrackingError(
        [
            Problem(
                "<tracking>",
                "tracking.uri",
                f"the tracking store failed: {first.strip()}"[:400],
                uri,
                "a reachable MLflow tracking server (tracking.outage_seconds / http_timeout_seconds bound the wait)",
            )
        ]
    )


def experiment_name(experiment_id: str) -> str:
    return MlflowClient().get_experiment(experiment_id).name


@contextmanager
def run(
    name: str,
    *,
    experiment_id: str,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    run_id: str | None = None,
    system_metrics: bool = False,
) -> Iterator[str]:
    """A run that ends FINISHED, FAILED (exception) or KILLED (Ctrl-C); yields its id.

    `run_id` continues an existing run. Without a parent, a run started by `mlflow run` ($MLFLOW_RUN_ID)
    is resumed instead of a new one. `system_metrics`: CPU, memory and GPU usage sampled while it runs.
    """
    active = mlflow.active_run()
    nested = parent_run_id is not None or active is not None
    if nested and parent_run_id is None and run_id is None:
        parent_run_id = active.info.run_id
    if run_id is not None:
        started = mlflow.start_run(
            run_id=run_id, nested=active is not None, log_system_metrics=system_metrics
        )
    else:
        started = mlflow.start_run(
            run_name=name,
            experiment_id=experiment_id,
            nested=nested,
            parent_run_id=parent_run_id,
            tags={k: redact(str(v)) for k, v in (tags or {}).items()},
            log_system_metrics=system_metrics,
        )
    if tags:
        set_tags(tags)  # a resumed run ignores start_run's tags
    mlflow.set_tag("mlflow.runName", name)
    try:
        yield started.info.run_id
    except KeyboardInterrupt:
        _end_quietly("KILLED")
        raise
    except BaseException as err:  # an exception may say how its run ends (a pruned trial: KILLED)
        _end_quietly(getattr(err, "run_status", "FAILED"))
        raise
    mlflow.end_run("FINISHED")


def _end_quietly(status: str) -> None:
    """End the active run after an error; when the store is what failed, the first error is the one
    shown (the run is marked KILLED by the next start on this host, as its process is gone)."""
    try:
        mlflow.end_run(status)  # pops the run first, so a failing store leaves no active run behind
    except Exception:
        logging.getLogger(__name__).warning("could not end the run as %s: the tracking store failed", status)


def get_run(run_id: str):
    return mlflow.MlflowClient().get_run(run_id)


def open_run(
    name: str,
    *,
    experiment_id: str,
    key: str,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    resume: bool = True,
) -> str:
    """A RUNNING run outside the fluent run stack (a pipeline's parent or an arm): the latest run with
    the same `intertask.run_key` continues (a restarted pipeline keeps its run tree), else a new one."""
    client = MlflowClient()
    existing = find_runs(experiment_id, f"{TAG}run_key", key) if resume else []
    if existing:
        run_id = existing[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        if tags:  # which process holds it now, among them
            from mlflow.entities import RunTag

            client.log_batch(run_id, tags=[RunTag(k, redact(str(v))) for k, v in tags.items()])
    else:
        all_tags = {
            **{k: redact(str(v)) for k, v in (tags or {}).items()},
            f"{TAG}run_key": key,
            "mlflow.runName": name,
        }
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run_id = client.create_run(experiment_id, tags=all_tags, run_name=name).info.run_id
    return run_id


@contextmanager
def logging_to(run_id: str) -> Iterator[str]:
    """Log into an open run (a pipeline's parent) for a moment, leaving it RUNNING afterwards."""
    mlflow.start_run(run_id=run_id)
    try:
        yield run_id
    finally:
        mlflow.end_run()
        MlflowClient().update_run(run_id, status="RUNNING")


def log_text_to(run_id: str, text: str, path: str) -> None:
    """A text artifact on any run, open or ended (a failed tuning trial's traceback)."""
    MlflowClient().log_text(run_id, text, path)


def close_run(run_id: str, status: str) -> None:
    MlflowClient().set_terminated(run_id, status)


def set_run_tags(run_id: str, values: dict[str, object]) -> None:
    """Tags on any run, open or ended (a tuning trial's final state)."""
    client = MlflowClient()
    for key, value in values.items():
        client.set_tag(run_id, key, redact(str(value)))


def find_runs(experiment_id: str, tag: str, value: str, status: str | None = None) -> list:
    """Runs of the experiment with tag == value (newest first), optionally in one status; every page.
    Any value is matched exactly, quotes included (a study named "bob's")."""
    literal = filter_literal(value)
    parts = [f"tags.`{tag}` = {literal}"] if literal is not None else []
    parts += [f"attributes.status = '{status}'"] if status else []
    found = search_pages([experiment_id], " and ".join(parts), order_by=["attributes.start_time DESC"])
    return found if literal is not None else [r for r in found if r.data.tags.get(tag) == value]


def filter_literal(value: str) -> str | None:
    """`value` as a string literal of MLflow's search syntax, which has no escape character: in single
    quotes, or double quotes when it holds a single quote; None when it holds both (the caller then
    compares after the search)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def search_pages(experiment_ids: list[str], query: str, order_by: list[str] | None = None) -> list:
    """Every run matching `query`, page after page (MLflow returns at most 1,000 at a time)."""
    client, runs, token = MlflowClient(), [], None
    while True:
        page = client.search_runs(
            experiment_ids, query, order_by=order_by, max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def finished_stage(experiment_id: str, key: str, ended_after_ms: int = 0):
    """The newest FINISHED stage run with this content key (that ended at or after `ended_after_ms`,
    unix ms), or None."""
    runs = find_runs(experiment_id, f"{TAG}stage_key", key, "FINISHED")
    return next((r for r in runs if (r.info.end_time or 0) >= ended_after_ms), None)


def close_dead_runs(experiment_id: str) -> list[str]:
    """Mark KILLED every run of the experiment left RUNNING by a process of this host that is gone
    (SIGKILL, power loss): no run stays RUNNING after a crash once anything runs here again."""
    closed, mine = [], process_tags()
    for found in search_pages([experiment_id], "attributes.status = 'RUNNING'"):
        tags = found.data.tags
        pid = int(tags.get(f"{TAG}pid", "0") or 0)
        here = tags.get(f"{TAG}host") == mine[f"{TAG}host"] and pid and pid != os.getpid()
        # a container sharing the host's name sees other PIDs: only runs of this PID namespace are judged
        here = here and tags.get(f"{TAG}pid_ns", mine[f"{TAG}pid_ns"]) == mine[f"{TAG}pid_ns"]
        if here and not alive(pid, tags.get(f"{TAG}pid_started")):
            close_run(found.info.run_id, "KILLED")
            closed.append(found.info.run_id)
    if closed:
        logging.getLogger(__name__).warning("marked %d run(s) of dead processes KILLED", len(closed))
    return closed


HEARTBEAT = f"{TAG}heartbeat"  # tag: unix time of a running stage's latest sign of life


@contextmanager
def heartbeat(run_id: str, seconds: float, tag: str = HEARTBEAT, value=None) -> Iterator[None]:
    """While the block runs, tag the run with the time every `seconds` (a thread): a driver on another
    host tells a stage whose process died (its node lost) from a slow one by this tag going stale (a
    driver's own sign of life on its study's parent: `tag` intertask.driver.<id>, tracking/leases.py)."""
    stop = threading.Event()

    def beat() -> None:
        client = MlflowClient()
        while True:
            try:
                client.set_tag(run_id, tag, value() if value is not None else str(int(time.time())))
            except Exception as err:  # noqa: BLE001 -- a missed beat is said, and the next one tried
                print(
                    f"note: heartbeat of run {run_id} not recorded: {redact(str(err))[:300]}", file=sys.stderr
                )
            if stop.wait(seconds):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{run_id[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)  # a beat waiting for an absent server is not waited for (a daemon)


def close_stale_runs(experiment_id: str, parents: list[str], stale_seconds: float) -> list[str]:
    """Mark KILLED the runs RUNNING under `parents` whose heartbeat (else start) is older than
    `stale_seconds`: their process is gone, wherever it ran. Returns their ids. A heartbeat missed
    while the tracking server was away is no sign of death: the clock starts again when this process
    last had to retry a request (`last_retry`)."""
    now, closed = time.time(), []
    for found in _running_children(experiment_id, parents):
        beat = float(found.data.tags.get(HEARTBEAT) or found.info.start_time / 1000)
        if now - max(beat, last_retry()) > stale_seconds:
            close_run(found.info.run_id, "KILLED")
            closed.append(found.info.run_id)
            print(
                f"note: run {found.info.run_id} marked KILLED: no heartbeat for over {stale_seconds:g} s",
                file=sys.stderr,
            )
    return closed


def _running_children(experiment_id: str, parents: list[str]) -> Iterator:
    """The runs RUNNING under one of `parents` (not one of them)."""
    for parent in parents:
        query = f"attributes.status = 'RUNNING' and tags.mlflow.parentRunId = '{parent}'"  # a run id: hex
        yield from (r for r in search_pages([experiment_id], query) if r.info.run_id not in parents)


def close_running_children(
    experiment_id: str, parents: list[str], status: str = "KILLED", others: set[str] = frozenset()
) -> list[str]:
    """Mark `status` every run still RUNNING under one of `parents` (and not one of them): a stage
    whose process died -- its Ray node lost, its worker killed, on whichever host -- cannot close its
    own run, and a retried stage leaves its first attempt's run behind. Runs of the live drivers
    `others` (another `main` on the same study) are theirs to close."""
    closed = [
        found.info.run_id
        for found in _running_children(experiment_id, parents)
        if found.data.tags.get(f"{TAG}driver") not in others
    ]
    for run_id in closed:
        close_run(run_id, status)
    if closed:
        logging.getLogger(__name__).warning("marked %d stage run(s) left RUNNING %s", len(closed), status)
    return closed


class Cleanup:
    """Closing a study's runs whatever ended it: each step's requests ride through an outage like any
    other (tracking.outage_seconds); once one fails for good, the rest are left RUNNING and said -- the
    next `main` of the study closes them (close_dead_runs, and its own clean-up of the same runs) --
    rather than each waiting out the outage again."""

    def __init__(self) -> None:
        self.gave_up = False

    def __call__(self, step, *args) -> None:
        if self.gave_up:
            return
        try:
            step(*args)
        except Exception as err:  # noqa: BLE001 -- said; the study's own error is the one raised
            if store_failure(err, current_uri()) is None:
                raise
            self.gave_up = True
            print(
                "note: the tracking server did not answer while closing the study's runs "
                f"({redact(str(err)).splitlines()[0][:200] if str(err) else type(err).__name__}); what is "
                "still RUNNING is closed by the next `intertask main` of this study",
                file=sys.stderr,
                flush=True,
            )


def alive(pid: int, started: str | float | None = None) -> bool:
    """Whether process `pid` of this host runs, and is the one that started at `started` (its start
    time, unix seconds, as process_tags records it): a PID reused by a later process is not alive."""
    import psutil

    try:
        process = psutil.Process(pid)
        if started in (None, ""):
            return process.is_running()
        return abs(process.create_time() - float(started)) < 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's process: it exists; its start time unread
        return True


def holds_model(found) -> bool:
    """Whether a finished training run logged its model (tracking.log_models kept it)."""
    return f"{TAG}model_uri" in found.data.tags


def reference_of(found) -> str:
    """How to load the model a finished training run logged."""
    return found.data.tags.get(f"{TAG}model_uri") or found.info.run_id  # a run id resolves to its model


def read_run_table(run_id: str, path: str) -> pd.DataFrame:
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path)
    return pd.read_csv(local)


def process_tags() -> dict[str, str]:
    """Which process runs a run -- host, PID namespace, PID and the process's start time -- so that a
    run left RUNNING by a dead process of this host is told from a live one (close_dead_runs), even
    where the PID was since reused or a container shares the host's name."""
    import psutil

    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:  # not Linux
        namespace = ""
    return {
        f"{TAG}host": platform.node(),
        f"{TAG}pid_ns": namespace,
        f"{TAG}pid": str(os.getpid()),
        f"{TAG}pid_started": f"{psutil.Process().create_time():.2f}",
    }


def log_metrics(values: dict[str, float], step: int | None = None, model_id: str | None = None) -> None:
    """Metrics of the active run (NaN and None left out); with `model_id`, linked to that logged model
    too, so the experiment's Models tab shows what each model scored."""
    clean = {k: float(v) for k, v in values.items() if v is not None and v == v}
    if clean:
        mlflow.log_metrics(clean, step=step, model_id=model_id)


def log_run_metrics(run_id: str, values: dict[str, float]) -> None:
    """Metrics of any run, open or ended (an arm's scores once the study's report is built)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    clean = [Metric(k, float(v), now, 0) for k, v in values.items() if v is not None and v == v]
    for start in range(0, len(clean), 1000):  # MLflow's batch limit
        MlflowClient().log_batch(run_id, metrics=clean[start : start + 1000])


def log_params(values: dict[str, object]) -> None:
    """Params as text, URL passwords redacted (errors.redact)."""
    mlflow.log_params({k: redact(str(v))[:6000] for k, v in values.items()})


def set_tags(values: dict[str, object]) -> None:
    """Tags as text, URL passwords redacted (errors.redact)."""
    mlflow.set_tags({k: redact(str(v)) for k, v in values.items()})


NOTICE = f"{TAG}notice."  # tag prefix: where a stage or study did other than its config says


def record_notices(notices: list[tuple[str, str]]) -> None:
    """Nothing silent: each (what, line) where a stage or study did other than its config says
    (examples left out, labels matched by name, an evaluation task a cell cannot score) is printed and
    kept on the active run as tag intertask.notice.<what>."""
    for _, line in notices:
        print(f"note: {line}", file=sys.stderr)
    if notices:
        set_tags({f"{NOTICE}{what}": line for what, line in notices})


def log_table(df: pd.DataFrame, path: str, html_body: str | None = None) -> None:
    """A pandas table as CSV and HTML artifacts (`path` without extension); the HTML a whole page that
    declares UTF-8, so that the artifact viewer shows Arabic, Hindi, Thai or Chinese text as written
    (`html_body`: the page's own body instead of the plain table)."""
    mlflow.log_text(df.to_csv(index=False), f"{path}.csv")
    table = html_body or df.to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep="")
    mlflow.log_text(html_page(Path(path).name, table), f"{path}.html")


def log_mlflow_table(df: pd.DataFrame, path: str) -> None:
    """A table as MLflow's own table artifact (`mlflow.log_table`, `path` ending .json), which the UI's
    artifact view renders as a table (and `mlflow.load_table` reads back)."""
    mlflow.log_table(df, artifact_file=path)


def html_page(title: str, body: str) -> str:
    """An HTML page around `body` that declares its encoding (a bare fragment is read as Latin-1)."""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body>{body}</body></html>"
    )


def log_parquet(df: pd.DataFrame, path: str) -> None:
    """A pandas table as one Parquet artifact (`path` with its extension)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(path).name
        df.to_parquet(local, index=False)
        parent = str(Path(path).parent)
        mlflow.log_artifact(str(local), None if parent == "." else parent)


def read_run_parquet(run_id: str, path: str) -> pd.DataFrame | None:
    """A Parquet artifact of a run, or None if the run has none."""
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path)
    except (MlflowException, OSError):
        return None
    return pd.read_parquet(local)


def log_figure(figure, path: str) -> None:
    """A matplotlib figure as a PNG artifact, cropped to what it draws (a colour bar's label included:
    the default canvas cut it off), as the local report's copies are; at 110 dpi, or the figure's own
    when it asks for more (the heatmap: 150)."""
    dpi = max(110, figure.get_dpi())
    mlflow.log_figure(figure, path, save_kwargs={"dpi": dpi, "bbox_inches": "tight"})


def log_text(text: str, path: str) -> None:
    mlflow.log_text(text, path)


def log_artifacts(folder: Path, path: str) -> None:
    mlflow.log_artifacts(str(folder), path)


def log_bytes(data: bytes, path: str) -> None:
    """Raw bytes (a PNG) as the artifact `path`."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(path).name
        local.write_bytes(data)
        parent = str(Path(path).parent)
        mlflow.log_artifact(str(local), None if parent == "." else parent)


def log_json(data: object, path: str) -> None:
    mlflow.log_dict(data, path)


def client() -> MlflowClient:
    """A client of the current tracking store (for the report's collector)."""
    return MlflowClient()


def active_run_id() -> str | None:
    run = mlflow.active_run()
    return run.info.run_id if run else None


def current_uri() -> str:
    return mlflow.get_tracking_uri()


def experiment_page(server: str, experiment_id: str) -> str:
    """The experiment's runs in the MLflow UI's model-training view. MLflow 3.17's UI keeps a per-browser
    choice between its GenAI and model-training views (GenAI until changed); the URL parameter sets it."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def ui_command(experiment_id: str | None = None) -> str:
    """How to browse the runs: the page to open (a tracking server), or the `mlflow ui` to start first."""
    uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")):
        return redact(f"open {experiment_page(uri, experiment_id) if experiment_id else uri}")
    page = f", then open {experiment_page('http://127.0.0.1:5000', experiment_id)}" if experiment_id else ""
    # --app-name intertask (tracking/server_app.py): a fresh browser opens experiments on their runs
    return redact(f"mlflow ui --app-name intertask --backend-store-uri {uri} --workers 1{page}")
