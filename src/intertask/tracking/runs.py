"""Runs: opened, nested, continued, closed and found (every page of a search)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
from mlflow.tracking import MlflowClient

from intertask.errors import redact
from intertask.tracking.connection import TAG, clash_retried
from intertask.tracking.records import set_tags


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
    known: list | None = None,
) -> str:
    """A RUNNING run outside the fluent run stack (a pipeline's parent or an arm): the latest run with
    the same `intertask.run_key` continues (a restarted pipeline keeps its run tree), else a new one.
    `known`: the runs of that key the caller has just searched for (not searched again); [] for a new
    run whatever there is."""
    client = MlflowClient()
    if known is None:
        known = find_runs(experiment_id, f"{TAG}run_key", key)
    if known:
        run_id = known[0].info.run_id
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
    for key, value in values.items():  # (two tuning workers may close one lost trial's run at once)
        clash_retried(client.set_tag, run_id, key, redact(str(value)))


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


def holds_model(found) -> bool:
    """Whether a finished training run logged its model (tracking.log_models kept it)."""
    return f"{TAG}model_uri" in found.data.tags


def reference_of(found) -> str:
    """How to load the model a finished training run logged."""
    return found.data.tags.get(f"{TAG}model_uri") or found.info.run_id  # a run id resolves to its model


def active_run_id() -> str | None:
    run = mlflow.active_run()
    return run.info.run_id if run else None
