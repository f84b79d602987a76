"""What the stages share: the records a stage hands on, the run every stage records into, and the
settings evaluation and probes follow."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd

from intertask import tracking
from intertask.compute import hardware
from intertask.config import ExperimentConfig, TrainingConfig, resolve
from intertask.data import leakage
from intertask.errors import ModelError, Problem
from intertask.study.workspace import Workspace
from intertask.tasks.base import ExampleSet, TaskType

SEEN_ARTIFACT = "data/seen_examples.json"
TAG = tracking.TAG


@dataclass(frozen=True)
class TrainedModel:
    """What a training stage hands to the next: local files, MLflow identity, lineage, seen examples."""

    run_id: str
    files: tracking.ModelFiles
    logged: tracking.LoggedModel | None
    task_chain: tuple[str, ...]
    seen: leakage.Seen
    best_dev: dict[str, dict[str, float]]  # task -> metric -> value at the best epoch
    language: str  # the training language
    probes: pd.DataFrame | None = None  # probe results after this stage

    @property
    def uri(self) -> str:
        return self.logged.uri if self.logged else f"local:{self.files.model_dir}"


@dataclass(frozen=True)
class Evaluated:
    run_id: str
    table: pd.DataFrame  # task, split, language, metric, value, examples
    excluded: dict[str, int]  # leakage guard: examples dropped, key "<task>/<language>"
    examples: pd.DataFrame | None = None  # per-example statistics (evaluation/examples.parquet)


@dataclass(frozen=True)
class StartPoint:
    """Where a training stage starts: files to load plus what to record about them."""

    files: tracking.ModelFiles
    label: str  # base model name, or the URI of the model it starts from
    run_id: str | None
    task_chain: tuple[str, ...]
    seen: leakage.Seen


def eval_training(cfg: ExperimentConfig) -> TrainingConfig:
    """The training settings evaluation and probes follow (precision, threads, batch tokens): the
    target stage's, else the top-level ones."""
    return cfg.target.training if cfg.target else cfg.training


def stage_runtime(training: TrainingConfig) -> hardware.Runtime:
    """Precision and threads of a stage on this machine (torch's thread count is set here)."""
    return hardware.runtime(training.precision, training.threads)


@contextmanager
def recorded_run(
    ws: Workspace,
    name: str,
    tags: dict[str, str],
    parent_run_id: str | None = None,
    sets: list[ExampleSet] | None = None,
    runtime: hardware.Runtime | None = None,
    description: str = "",
) -> Iterator[str]:
    """A run that records the resolved config, provenance, the machine and precision it ran with, the
    data it reads (fingerprints, and MLflow dataset inputs the UI lists), its system metrics, and a
    description of what it does; while it runs, a heartbeat tag (tracking.heartbeat)."""
    tags = {**ws.tags, **tracking.process_tags(), **tags}
    if description:
        tags[tracking.DESCRIPTION] = description
    system = ws.cfg.tracking.system_metrics
    with (
        tracking.run(
            name, experiment_id=ws.experiment(), parent_run_id=parent_run_id, tags=tags, system_metrics=system
        ) as run_id,
        tracking.heartbeat(run_id, ws.cfg.executor.heartbeat_seconds),
    ):
        tracking.log_config(ws.cfg, ws.config_file)
        tracking.log_provenance()
        if runtime is not None:
            tracking.log_params(runtime.params())
        if sets:
            tracking.log_data_fingerprints(_fingerprint_rows(sets))
            tracking.log_datasets(
                _dataset_rows(ws, sets, evaluation=tags.get(f"{TAG}stage") in ("evaluate", "probe"))
            )
        yield run_id


def _dataset_rows(ws: Workspace, sets: list[ExampleSet], evaluation: bool) -> list[dict]:
    """What MLflow's dataset inputs say of each set: name, our fingerprint, where it comes from (the
    files, or the hub dataset with its config, split and revision), and its use in the run."""
    rows = []
    for s in sets:
        row = {
            "name": f"{s.task}/{s.language}/{s.split}",
            "digest": s.fingerprint,
            "files": list(s.files),
            "examples": len(s),
            "context": "evaluation" if evaluation else "training" if s.split == "train" else "validation",
        }
        if ws.cfg.origin(s.task) == "hub":
            hub = resolve.catalog(ws.cfg).spec(s.task).hub
            row["hub"] = {
                "path": hub.path,
                "config_name": hub.name.format(lang=s.language) if hub.name else None,
                "split": hub.splits.get(s.source, s.source),
                "revision": hub.revision,
                "data_dir": hub.data_dir.format(lang=s.language) if hub.data_dir else None,
            }
        rows.append(row)
    return rows


def _fingerprint_rows(sets: list[ExampleSet]) -> list[dict]:
    return [
        {
            "task": s.task,
            "language": s.language,
            "split": s.split,
            "examples": len(s),
            "unlabelled_rows_left_out": s.unlabelled,
            "source": s.source,
            "fingerprint": s.fingerprint,
            "files": list(s.files),
        }
        for s in sets
    ]


def missing_head(task: TaskType, source: str, field_name: str, why: list[str] = ()) -> ModelError:
    """`why`: what is wrong with each head the model has (modeling.head_problems)."""
    return ModelError(
        [
            Problem(
                "<model>",
                field_name,
                f"the model has no head that fits task {task.name!r}"
                + (f" ({'; '.join(why)})" if why else ""),
                source,
                f"a head trained on {_article(task.spec.type)} {task.spec.type} task with labels "
                f"{list(task.spec.labels)} (in any order), or a label_map in the task's declaration that "
                "maps its raw labels onto the head's",
            )
        ]
    )


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"
