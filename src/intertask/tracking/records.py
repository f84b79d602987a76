"""Logging values, notices, tables, figures and files into the active run (or a given one), and reading
tables back."""

from __future__ import annotations

import html
import json
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

from intertask.errors import redact
from intertask.tracking.connection import TAG


def read_run_table(run_id: str, path: str) -> pd.DataFrame:
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path)
    return pd.read_csv(local)


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
    """A table as MLflow's own table artifact (`path` ending .json), which the UI's artifact view renders
    as a table and `mlflow.load_table` reads back: written as `mlflow.log_table` writes one (pandas'
    split JSON, the run's mlflow.loggedArtifacts tag naming it a table), except that a table already
    there is replaced -- `mlflow.log_table` appends to it, and a report logged again on its parent run
    (a resumed study, a second driver) must not double its rows, nor read a half-uploaded file."""
    run_id = mlflow.active_run().info.run_id
    mlflow.log_text(df.to_json(orient="split", index=False, date_format="iso"), path)
    client = MlflowClient()
    listed = json.loads(client.get_run(run_id).data.tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]"))
    entry = {"path": path, "type": "table"}
    if entry not in listed:
        client.set_tag(run_id, MLFLOW_LOGGED_ARTIFACTS, json.dumps([*listed, entry]))


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
