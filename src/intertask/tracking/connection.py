"""The connection to the tracking store: its URI (entry points set it), credentials, the first contact,
MLflow's HTTP retries sized to ride through an outage, and the experiment a study logs into."""

from __future__ import annotations

import logging
import os
import sys
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
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


_USED: str | None = None  # the URI the last `use` pointed this process at


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
    global _USED
    _USED = uri
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


def pointed_at() -> str:
    """The tracking URI an entry point pointed this process at (`use`); library code reads it and never
    sets it. Without `use`, or when something else moved MLflow's URI since, a clear error: a store
    chosen by accident would take a study's runs silently."""
    current = current_uri()
    if _USED is None or split_credentials(_USED)[0] != current:
        raise TrackingError(
            [
                Problem(
                    "<tracking>",
                    "tracking.uri",
                    "MLflow is not pointed at a store chosen by an entry point (library code never sets it)",
                    redact(str(current)),
                    "tracking.use(cfg) called first, as every `intertask` command and each Ray job does",
                )
            ]
        )
    return _USED


def connect(cfg: ExperimentConfig, create: bool = True) -> str | None:
    """The experiment id for cfg in the tracking store this process was pointed at (`use`, called by
    entry points); the experiment is created if new, or None is returned with `create=False`."""
    uri = pointed_at()
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
    if EXPERIMENT_KIND not in experiment.tags:  # (two drivers may set it at once: clash_retried)
        clash_retried(client.set_experiment_tag, experiment.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
    if not experiment.tags.get(DESCRIPTION):
        clash_retried(client.set_experiment_tag, experiment.experiment_id, DESCRIPTION, redact(describe(cfg)))


UNIQUE_CLASH = ("UNIQUE constraint failed", "duplicate key value violates unique constraint")


def clash_retried(write, *args, tries: int = 3, pause: float = 0.1, **kwargs) -> None:
    """A write that MLflow's SQL store does by select-then-insert (a tag of a run, an experiment or a
    registered model, a registered model's alias, a run's dataset inputs), retried when another
    process inserted the same row in between: two drivers of one study, two tuning workers, or two
    studies on one experiment collide on its unique key (SQLite: "UNIQUE constraint failed",
    PostgreSQL: "duplicate key value") and the loser's request fails. The next try finds the other's
    row and updates or reuses it. Any other error is raised at once."""
    for attempt in range(tries):
        try:
            write(*args, **kwargs)
            return
        except MlflowException as err:
            if attempt == tries - 1 or not any(clash in str(err) for clash in UNIQUE_CLASH):
                raise
            time.sleep(pause * (attempt + 1))


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


def client() -> MlflowClient:
    """A client of the current tracking store (for the report's collector)."""
    return MlflowClient()


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
