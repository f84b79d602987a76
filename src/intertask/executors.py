"""Where stage jobs run: in this process (the default), or as Ray tasks that run independent stages in
parallel. Either way a job opens its own MLflow run under its arm's run and logs to the same store.

A job that runs elsewhere gets everything as plain data (a JobSpec) and hands its model on by MLflow
reference (runs:/... or models:/...), never by local folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from intertask.config import BASE_MODEL, ExperimentConfig
from intertask.grid import Job
from intertask.identity import STAGE_KINDS, cell_tags


@dataclass(frozen=True)
class JobSpec:
    """What a job needs to run anywhere: its cell's config, where to log, and its content key."""

    job: Job
    config: ExperimentConfig
    config_file: str | None
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    key: str
    tags: dict[str, str] = field(default_factory=dict)
    threads: int | None = None  # the stage's share of the cores where stages run side by side (Ray)


@dataclass(frozen=True)
class Outcome:
    job_id: str
    kind: str
    run_id: str
    key: str
    model: object = None  # TrainedModel (in-process) or a model reference (reused, or from a Ray worker)
    table: pd.DataFrame | None = None  # evaluate / probe: the per-language scores
    reused: bool = False
    cell: dict | None = None  # the intertask.cell.* tags of its run (None: read them from the run)
    examples: pd.DataFrame | None = None  # evaluate: per-example statistics (None: read the artifact)


def run_job(
    spec: JobSpec, *upstream: Outcome, workdir: Path | None = None, data: dict | None = None
) -> Outcome:
    """Run one job here: a Workspace for its cell config (models saved under `workdir`), then its stage.
    `data` is the example sets planning loaded already (in-process: they are not read again). MLflow
    already points at the study's store (the entry point, or `_ray_job` in a Ray worker)."""
    from intertask.workspace import Workspace

    shared = {"workdir": workdir} if workdir is not None else {}  # else a folder of its own, removed after
    if data is not None:
        shared["loaded"] = data
    ws = Workspace(spec.config, spec.config_file, tags=spec.tags, experiment_id=spec.experiment_id, **shared)
    try:
        return _run_stage(ws, spec, upstream)
    finally:
        if workdir is None:
            ws.close()


def _run_stage(ws, spec: JobSpec, upstream: tuple[Outcome, ...]) -> Outcome:
    from intertask import stages

    start = upstream[0].model if upstream else None
    if spec.job.kind == "probe":
        run_id, table = stages.probe_base(ws, spec.parent_run_id, spec.key)
        return Outcome(spec.job.id, "probe", run_id, spec.key, table=table, cell=cell_tags(spec.tags))
    if spec.job.kind == "evaluate":
        evaluated = stages.evaluate(
            ws, start if start is not None else BASE_MODEL, spec.parent_run_id, stage_key=spec.key
        )
        return Outcome(
            spec.job.id,
            "evaluate",
            evaluated.run_id,
            spec.key,
            table=evaluated.table,
            cell=cell_tags(spec.tags),
            examples=evaluated.examples,
        )
    which = STAGE_KINDS[spec.job.kind].stage
    trained = stages.train_stage(ws, which, start, spec.parent_run_id, stage_key=spec.key)
    return Outcome(
        spec.job.id, spec.job.kind, trained.run_id, spec.key, model=trained, cell=cell_tags(spec.tags)
    )


class InProcessExecutor:
    """Jobs one after another in dependency order, models handed on in memory (saved under workdir),
    the example sets planning loaded handed on too. A trained model's folder is deleted as soon as
    every job starting from it is done (logged ones are in MLflow), so the scratch space a grid needs is
    that of the models still waiting for a job, not one model per stage (40 e5-small stages: 20 GB)."""

    def __init__(self, workdir: Path, data: dict | None = None):
        self.workdir = workdir
        self.data = data

    def run(
        self,
        specs: list[JobSpec],
        ready: dict[str, Outcome],
    ) -> dict[str, Outcome]:
        outcomes = dict(ready)
        waiting = {s.job.id: {o.job.id for o in specs if s.job.id in o.job.deps} for s in specs}
        for spec in specs:
            if spec.job.id in outcomes:
                continue
            outcome = run_job(
                spec, *(outcomes[d] for d in spec.job.deps), workdir=self.workdir, data=self.data
            )
            outcomes[spec.job.id] = outcome
            for dep in spec.job.deps:
                waiting.get(dep, set()).discard(spec.job.id)
                if not waiting.get(dep, {None}):
                    self._drop_folder(outcomes[dep])
        return outcomes

    def _drop_folder(self, outcome: Outcome) -> None:
        folder = getattr(getattr(outcome.model, "files", None), "model_dir", None)
        if folder is not None and Path(folder).is_relative_to(self.workdir):
            shutil.rmtree(folder, ignore_errors=True)


def _portable(outcome: Outcome) -> Outcome:
    """An outcome another process can use: a trained model becomes its MLflow reference."""
    uri = getattr(outcome.model, "uri", None)
    return replace(outcome, model=uri) if uri is not None else outcome


def _ray_job(spec: JobSpec, *upstream: Outcome) -> Outcome:
    """The entry point of a job in a Ray worker process: its tracking store and its share of threads."""
    from intertask import tracking
    from intertask.compute import hardware

    tracking.use(spec.config, spec.tracking_uri)
    if spec.threads:
        os.environ[hardware.THREADS_ENV] = str(spec.threads)
    workdir = Path(tempfile.mkdtemp(prefix="intertask-ray-"))
    try:
        return _portable(run_job(spec, *upstream, workdir=workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class RayExecutor:
    """Every job a Ray task; a job waits only for the jobs it starts from, so independent stages
    (the baseline arm and the intermediate stage, different seeds or targets) run side by side."""

    def __init__(self, address: str | None, cpus: int | None, cpus_per_stage: float, gpus_per_stage: float):
        self.address, self.cpus = address, cpus
        self.resources = {"num_cpus": cpus_per_stage, "num_gpus": gpus_per_stage}
        self.threads = max(1, int(cpus_per_stage))  # torch threads per stage: its CPUs, not the host's

    def run(
        self,
        specs: list[JobSpec],
        ready: dict[str, Outcome],
    ) -> dict[str, Outcome]:
        import ray

        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(num_cpus=self.cpus, include_dashboard=False, log_to_driver=False)
        remote = ray.remote(_ray_job)
        refs: dict[str, object] = {job_id: ray.put(outcome) for job_id, outcome in ready.items()}
        pending = {}
        for spec in specs:
            if spec.job.id in refs:
                continue
            deps = [refs[d] for d in spec.job.deps]
            share = replace(spec, threads=self.threads)
            refs[spec.job.id] = pending[spec.job.id] = remote.options(**self.resources).remote(share, *deps)
        outcomes = dict(ready)
        waiting = list(pending.values())
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1)
            outcome = ray.get(done[0])
            outcomes[outcome.job_id] = outcome
        return outcomes


def executor_for(cfg: ExperimentConfig, workdir: Path, data: dict | None = None):
    """Ray when configured (each job in a worker process reads its own data), else in-process."""
    if cfg.executor.kind == "ray":
        e = cfg.executor
        return RayExecutor(e.address, e.cpus, e.cpus_per_stage, e.gpus_per_stage)
    return InProcessExecutor(workdir, data)
