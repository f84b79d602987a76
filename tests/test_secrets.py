"""A password in a URL never reaches the tracking store, the logged config or what a command prints
(issue 29): a study run against a real MLflow server whose URI carries credentials, with an Optuna
storage URL that carries another, and a tuning command whose storage cannot be opened."""

import os
import subprocess
import sys
import time

import pytest

from intertask import cli
from intertask.errors import redact

from .conftest import _free_port, start_mlflow_server, write_experiment

PASSWORD, STORAGE_PASSWORD = "s3cretTrackingPW", "s3cretStoragePW"


def test_redact_hides_url_passwords_only():
    assert (
        redact("postgresql+psycopg2://tuner:pa%40ss@db:5432/optuna")
        == "postgresql+psycopg2://tuner:***@db:5432/optuna"
    )
    assert redact("see http://u:p@h/x and mysql://a:b@c") == "see http://u:***@h/x and mysql://a:***@c"
    for plain in (
        "http://127.0.0.1:5000/#/experiments/1",
        "sqlite:////tmp/a.db",
        "user@example.org",
        "postgresql://u@h/db",
    ):
        assert redact(plain) == plain


@pytest.mark.slow
def test_no_planted_password_in_the_store_or_the_output(
    tiny_model, tmp_path, shared_data, capfd, monkeypatch
):
    root = tmp_path / "server"
    root.mkdir()
    port = _free_port()
    server = start_mlflow_server(root, port)
    try:
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        config = write_experiment(
            tmp_path,
            tiny_model,
            "secrets",
            study=False,
            target={"task": "pawsx", "max_examples": {"train": 32, "dev": 16}},
            training={"epochs": 1},
            evaluation={"languages": ["en"], "max_examples": 16},
            tracking={"uri": f"http://intertask:{PASSWORD}@127.0.0.1:{port}"},
            tuning={
                "stage": "target",
                "trials": 1,
                "storage": f"postgresql://tuner:{STORAGE_PASSWORD}@127.0.0.1:{_free_port()}/optuna",
                "space": {"learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-3, "log": True}},
            },
        )
        assert cli.main(["main", str(config)]) == 0
        assert cli.main(["tune", str(config)]) != 0  # nothing listens on the storage's port
        out = capfd.readouterr()
        printed = out.out + out.err
        assert "tuner:***@127.0.0.1" in printed  # the failing storage is named, without its password
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    for text in (printed, *(p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file())):
        leaks = [line for line in text.splitlines() if PASSWORD in line or STORAGE_PASSWORD in line]
        assert not leaks, leaks[:5]
    stored = (root / "mlflow.db").read_bytes().decode("latin-1")
    assert "intertask:***@127.0.0.1" in stored  # the tracking URI is logged, redacted


def test_redact_hides_tokens_and_password_parameters():
    assert redact("https://ghp_T0ken@mlflow:5000/") == "https://***@mlflow:5000/"  # a token as the user
    assert redact("postgresql://tuner@db/optuna?password=pw1&sslmode=require") == (
        "postgresql://tuner@db/optuna?password=***&sslmode=require"
    )
    assert redact("http://h/api?x=1&token=abc;secret=d") == "http://h/api?x=1&token=***;secret=***"
    assert redact("https://u:p@h?access_token=t") == "https://u:***@h?access_token=***"
    for plain in ("postgresql://tuner@db/optuna", "http://h/x?tokens_per_batch=4096", "a=b&c=d"):
        assert redact(plain) == plain


def test_a_token_in_the_tracking_uri_goes_to_mlflow_as_its_token():
    from intertask.tracking.connection import split_credentials

    assert split_credentials("https://T0ken@mlflow:5000") == ("https://mlflow:5000", "T0ken", None)
    assert split_credentials("http://u:p%40w@h:1/x") == ("http://h:1/x", "u", "p@w")
    assert split_credentials("postgresql://u:p@h/db") == ("postgresql://u:p@h/db", None, None)


def _scan(texts, secret: str) -> list[str]:
    return [line[:200] for text in texts for line in text.splitlines() if secret in line]


@pytest.mark.slow
def test_a_postgresql_study_leaves_its_password_nowhere(
    tiny_model, tmp_path, shared_data, postgres_url, capfd, monkeypatch
):
    """Four studies on a real PostgreSQL storage, the password given each way a user can: in the URL
    on the command line (--storage), in an override, as a `?password=` parameter in the config's
    tuning.storage, and -- through `mlflow run . -e tune`, whose parameters MLflow stores -- from the
    environment ($INTERTASK_TUNING_STORAGE with a plain postgresql:// URL, the password in $PGPASSWORD).
    Each study completes; then the tracking store, its artifacts, the working folder and everything
    printed are scanned for the password."""
    import urllib.parse

    from mlflow.tracking import MlflowClient

    from .conftest import mlflow_run

    parts = urllib.parse.urlsplit(postgres_url)
    password = urllib.parse.unquote(parts.password or "")
    if len(password) < 8 or password in "postgresql+psycopg2 intertask intertask_test 127.0.0.1":
        pytest.fail(
            f"the test database's password must be one found nowhere else (.ci/run sets one); got {len(password)} characters"
        )
    where = f"{parts.hostname}:{parts.port}{parts.path}"
    root, work, configs = tmp_path / "server", tmp_path / "work", tmp_path / "configs"
    for folder in (root, work, configs):
        folder.mkdir()
    port = _free_port()
    server = start_mlflow_server(root, port)
    uri = f"http://127.0.0.1:{port}"
    suffix = f"{os.getpid()}-{int(time.time())}"  # fresh studies in a database that outlives tests
    with_password = f"postgresql+psycopg2://{parts.username}:{password}@{where}"

    def config(name: str, storage: str | None = None):
        return write_experiment(
            configs,
            tiny_model,
            name,
            study=False,
            target={"task": "pawsx", "max_examples": {"train": 32, "dev": 16}},
            training={"epochs": 1},
            tracking={"uri": uri},
            tuning={
                "stage": "target",
                "study_name": f"{name}-{suffix}",
                "trials": 1,
                "pruner": {"kind": "none"},
                "storage": storage,
                "space": {"learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-3, "log": True}},
            },
        )

    printed = []
    try:
        monkeypatch.chdir(work)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        monkeypatch.delenv("PGPASSWORD", raising=False)
        command = [
            sys.executable,
            "-m",
            "intertask",
            "tune",
            str(config("pg-argv")),
            "--storage",
            with_password,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=work)
        printed += [done.stdout, done.stderr]
        assert done.returncode == 0, done.stderr[-3000:]
        assert "warning: a password or token is on this command line" in done.stderr
        assert cli.main(["tune", str(config("pg-override")), f"tuning.storage={with_password}"]) == 0
        query = f"postgresql+psycopg2://{parts.username}@{where}?password={urllib.parse.quote(password)}"
        assert cli.main(["tune", str(config("pg-query", query))]) == 0
        out = capfd.readouterr()
        printed += [out.out, out.err]
        assert "warning: a password or token is on this command line" in out.err
        assert f"{parts.username}:***@" in out.out  # the study's storage is named, redacted
        monkeypatch.setenv("INTERTASK_TUNING_STORAGE", f"postgresql://{parts.username}@{where}")
        monkeypatch.setenv("PGPASSWORD", password)
        done = mlflow_run("tune", config("pg-mlflow-run"), uri, "pg-mlflow-run", work)
        printed += [done.stdout, done.stderr]
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    parents = [r for r in client.search_runs(experiments) if r.data.tags.get("intertask.stage") == "tune"]
    assert len(parents) == 4, [r.info.run_name for r in parents]
    for run in parents:
        assert "postgresql" not in run.data.tags["intertask.run_key"]  # a hash of the URL, not the URL
        assert where in run.data.tags["intertask.study_storage"]  # the storage named, its secret not
        trials = [
            r for r in client.search_runs(experiments, f"tags.mlflow.parentRunId = '{run.info.run_id}'")
        ]
        assert trials and all(t.info.status == "FINISHED" for t in trials)
    files = [p for folder in (root, work) for p in folder.rglob("*") if p.is_file()]
    texts = [*printed, *(p.read_bytes().decode("latin-1") for p in files)]
    assert not _scan(texts, password), _scan(texts, password)[:5]
    assert not _scan(texts, urllib.parse.quote(password)), "the password, URL-quoted"
