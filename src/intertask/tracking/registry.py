"""Models: logging a trained model (intertask's pyfunc model, from code), registering it with an
alias, resolving models:/ and runs:/ references, and downloading a logged model once into the cache."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import yaml
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from intertask import pretrained
from intertask.config import REFERENCE_FORMS
from intertask.errors import ModelError, Problem
from intertask.tracking.connection import clash_retried


def registered_name(experiment: str, model_name: str, task_chain: list[str]) -> str:
    """<experiment>.<model>.<task chain>, e.g. demo.e5-small.xnli-pawsx: two experiments of one config
    register different names."""
    short = Path(model_name.rstrip("/")).name if model_name not in pretrained.OFFLINE_MODELS else model_name
    return f"{safe_name(experiment)}.{safe_name(short)}.{'-'.join(task_chain)}"


def safe_name(text: str) -> str:
    """`text` with every character but letters, digits, - and _ replaced by -: a registered model name
    part or a folder name (an experiment may be named /Users/me/study)."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text).strip("-") or "-"


# What the served model imports (intertask's serving path: tracking/serving.py and what it loads), pinned
# to this environment's versions; MLflow adds itself. intertask travels with the model as code
# (`code_paths`), so an environment built from the model's requirements.txt alone loads it.
SERVING_PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "numpy",
    "pandas",
    "scipy",
    "pyyaml",
    "tqdm",
)


def _pip_requirements() -> list[str]:
    import importlib.metadata

    # a local build's version suffix (2.13.0+cpu) is no release on the package index
    return [f"{name}=={importlib.metadata.version(name).split('+')[0]}" for name in SERVING_PACKAGES]


def _package_zip(folder: Path) -> Path:
    """intertask's source, without byte code, as `folder`/intertask.zip: what the model carries as its
    code, one artifact where a copy of the package was one upload per module (task_model.py unpacks it
    on load). Entries sorted and dated 1980-01-01: the same source gives the same bytes."""
    import intertask

    source = Path(intertask.__file__).parent
    target = folder / "intertask.zip"
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(source.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"):
                entry = zipfile.ZipInfo(
                    f"intertask/{path.relative_to(source).as_posix()}", (1980, 1, 1, 0, 0, 0)
                )
                archive.writestr(entry, path.read_bytes(), compress_type=zipfile.ZIP_DEFLATED)
    return target


@dataclass(frozen=True)
class LoggedModel:
    uri: str  # the URI to use from now on: models:/name/version if registered, else models:/<model id>
    run_id: str
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    model_id: str | None = None  # MLflow 3's logged model (models:/m-...): metrics and params link to it


HEADS_ARTIFACT = "model_heads"  # run artifact: the head index and any further heads of the logged model


def log_model(
    folder: Path,
    head: str,
    *,
    name: str,
    register_as: str | None,
    alias: str | None,
    tags: dict[str, str],
    changed_from: str | None = None,
    slim_only_if_half: bool = False,
    descriptions: tuple[str, str] | None = None,
    model_tags: dict[str, str] | None = None,
) -> LoggedModel:
    """Log a saved model folder as logged model `name` and register it only after every upload
    succeeded.

    Every head is served by intertask's pyfunc model, logged from code (serving.py, task_model.py).
    The head index and further heads of a multi-task model go to the run's `model_heads/` artifacts.
    With `changed_from` (a base model), the logged folder holds only the tensors that differ from that
    base (compute/weights.py), put over the base in memory when loaded; with `slim_only_if_half` only
    when at least half of the bytes are the base's (a fully fine-tuned model is logged whole).
    The run's metrics linked to the model are its scores (`link_metrics`), not its system metrics.
    `descriptions` (the registered model's, the version's) and `model_tags` describe it in the Model
    registry.
    """
    run_id = mlflow.active_run().info.run_id
    from intertask.compute import weights

    with tempfile.TemporaryDirectory(prefix="intertask-slim-") as slim:
        slimmed = False
        if changed_from is not None:  # compared first: a model logged whole is not copied
            found = weights.changes(folder, changed_from)
            sizes = found.sizes()
            slimmed = not slim_only_if_half or sizes["bytes_omitted"] >= sizes["bytes_kept"]
            mlflow.log_metrics(
                {f"logged_model/{k}": v for k, v in sizes.items()} | {"logged_model/changed_only": slimmed}
            )
            if slimmed:
                weights.write_slim(found, Path(slim) / "model")
                folder = Path(slim) / "model"
        info = _log_pyfunc(folder, head, safe_name(name))
        for path in (p for p in (folder / "heads.json", folder / "heads") if p.exists()):
            (mlflow.log_artifacts if path.is_dir() else mlflow.log_artifact)(
                str(path), f"{HEADS_ARTIFACT}/heads" if path.is_dir() else HEADS_ARTIFACT
            )
    link_metrics(run_id, info.model_id)
    if register_as is None:
        return LoggedModel(info.model_uri, run_id, model_id=info.model_id)
    version = mlflow.register_model(info.model_uri, register_as, tags=tags).version
    client = MlflowClient()
    if alias:
        clash_retried(client.set_registered_model_alias, register_as, alias, version)
    if descriptions:  # what the Model registry page says: the model's, then this version's
        client.update_registered_model(register_as, description=descriptions[0])
        client.update_model_version(register_as, version, description=descriptions[1])
    for key, value in (model_tags or {}).items():
        clash_retried(client.set_registered_model_tag, register_as, key, value)
    return LoggedModel(
        f"models:/{register_as}/{version}", run_id, register_as, str(version), alias, info.model_id
    )


# MLflow links to a model logged at step s every metric its run has at step s, system metrics too, and
# every step-s metric the run logs after it: models are logged at a step no metric uses, and
# link_metrics links what describes the model
MODEL_STEP = 2**31 - 1
SYSTEM_METRICS = "system/"


class _ValidationFailures(logging.Handler):
    """MLflow loads a model it logs and predicts its input example, but only warns when that fails."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.failures: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "Failed to validate serving input" in message:
            self.failures.append(message.rpartition("Got error:")[2].strip()[:300])


def _log_pyfunc(folder: Path, head: str, name: str):
    """Logged from code; a model that MLflow cannot load and ask its input example is an error (before
    it is registered), not MLflow's warning."""
    validation = _ValidationFailures()
    logger = logging.getLogger("mlflow.models.model")
    logger.addHandler(validation)
    try:
        info = _log_from_code(folder, head, name)
    finally:
        logger.removeHandler(validation)
    if validation.failures:  # not left in the Models tab either
        MlflowClient().delete_logged_model(info.model_id)
        problem = f"the logged model does not load and predict its input example: {validation.failures[0]}"
        raise ModelError([Problem(str(folder), "model", problem, name, "a model that loads")])
    return info


def _log_from_code(folder: Path, head: str, name: str):
    from intertask.tracking.serving import ARTIFACT, CODE_FILE, input_example, output_example, read_task

    spec, _ = read_task(folder)  # the task the model was trained for: its input and output columns
    example = input_example(spec, head)
    with tempfile.TemporaryDirectory(prefix="intertask-code-") as code:
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(CODE_FILE),  # models from code: nothing pickled
            artifacts={ARTIFACT: str(folder)},
            code_paths=[str(_package_zip(Path(code)))],  # the model loads where intertask is not installed
            pip_requirements=_pip_requirements(),
            signature=mlflow.models.infer_signature(example, output_example(spec, head)),
            input_example=example,
            step=MODEL_STEP,
        )


def link_metrics(run_id: str, model_id: str) -> None:
    """The run's single-value metrics (its scores, sizes and timings: latest step 0; not a per-epoch
    series, not `system/...`) linked to the logged model, with their own values, steps and times.
    Read from the run's own record (one request; a history request per metric took 10 ms each)."""
    client = MlflowClient()
    linked = [
        Metric(m.key, m.value, m.timestamp, m.step, model_id=model_id, run_id=run_id)
        for m in client.get_run(run_id).data.to_proto().metrics  # the latest value of each metric
        if m.step == 0 and not m.key.startswith(SYSTEM_METRICS)
    ]
    for start in range(0, len(linked), 500):
        client.log_batch(run_id, metrics=linked[start : start + 500])


@dataclass(frozen=True)
class ModelReference:
    """What a models:/ URI, runs:/ URI or run id points to."""

    given: str
    run_id: str
    download_uri: str
    name: str | None = None
    version: str | None = None
    tags: dict | None = None  # model version tags (lineage), or the run's tags
    model_id: str | None = None  # the MLflow 3 logged model a registered version is


def _reference_error(ref: str, problem: str, field: str) -> ModelError:
    return ModelError(
        [
            Problem(
                "<model>",
                field,
                problem,
                ref,
                REFERENCE_FORMS,
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
            elif body.startswith("m-"):  # a logged model's own id (one that was not registered)
                logged = client.get_logged_model(body)
                tags = dict(client.get_run(logged.source_run_id).data.tags)
                return ModelReference(ref, logged.source_run_id, ref, tags=tags, model_id=body)
            else:
                raise _reference_error(ref, "a models:/ URI needs @alias, /version or a model id", field)
            return ModelReference(
                ref,
                mv.run_id,
                f"models:/{mv.name}/{mv.version}",
                mv.name,
                str(mv.version),
                dict(mv.tags),
                getattr(mv, "model_id", None),
            )
        run_id = ref[len("runs:/") :].split("/", 1)[0] if ref.startswith("runs:/") else ref
        run_ = client.get_run(run_id)
        outputs = [o.model_id for o in (run_.outputs.model_outputs if run_.outputs else [])]
        uri = f"models:/{outputs[-1]}" if outputs else f"runs:/{run_id}/model"  # else: logged before MLflow 3
        return ModelReference(
            ref, run_id, uri, tags=dict(run_.data.tags), model_id=outputs[-1] if outputs else None
        )
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
    # a model logged as its changed weights stays so: loading puts them over its base in memory
    return ModelFiles(*_model_folder(target, reference))


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
    target = pretrained.cache_root() / cache / digest
    if not complete(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
        path = fetch(staging)
        if target.exists():
            shutil.rmtree(target)
        path.rename(target)  # `path` is the staging folder itself for a models:/ download
        shutil.rmtree(staging, ignore_errors=True)
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


def download_run_folder(run_id: str, path: str, dst: str | Path) -> Path:
    """A folder of a run's artifacts, downloaded into `dst`."""
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst)))
