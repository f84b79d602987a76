"""A password in a URL never reaches the tracking store, the logged config or what a command prints
(issue 29): a study run against a real MLflow server whose URI carries credentials, with an Optuna
storage URL that carries another, and a tuning command whose storage cannot be opened."""

import os

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
