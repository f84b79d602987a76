"""Where stage jobs run: in this process (the default), or as Ray tasks that run independent stages in
parallel. Either way a job opens its own MLflow run under its arm's run and logs to the same store.

A job that runs elsewhere gets everything as plain data (a JobSpec) and hands its model on by MLflow
reference (runs:/... or models:/...), never by local folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from intertask.config import BASE_MODEL, ExperimentConfig
from intertask.errors import ClusterError, Terminated
from intertask.study.grid import Job
from intertask.study.identity import STAGE_KINDS, cell_tags


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
    # the example sets planning keyed the job on: Workspace key -> (fingerprint, files), and the data
    # root they were read under; a worker that reads other data stops before training
    expected: dict = field(default_factory=dict)
    data_root: str = ""
    # several drivers on one study (tracking/leases.py): the study's parent run the stage is claimed
    # on, the driver this job runs for, and after how long a silent driver's claim lapses
    study_run_id: str = ""
    driver: str = ""
    stale_seconds: float = 120.0
    # when the driver planned (unix ms): a run of this stage that finished before was the plan's to
    # reuse or not (forced, or its model wanted and not logged); one that finished since is another
    # driver's, and is reused
    planned_at_ms: int = 0


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


def reused(experiment_id: str, job: Job, key: str, ended_after_ms: int = 0) -> Outcome | None:
    """The outcome of the newest FINISHED run of this content key (ended at or after
    `ended_after_ms`), or None: its model by reference (None when that run did not log it), its scores
    read back."""
    from intertask import tracking

    found = tracking.finished_stage(experiment_id, key, ended_after_ms)
    if found is None:
        return None
    run_id = found.info.run_id
    cell = cell_tags(found.data.tags)
    if job.kind in ("intermediate", "finetune"):
        model = tracking.reference_of(found) if tracking.holds_model(found) else None
        return Outcome(job.id, job.kind, run_id, key, model=model, reused=True, cell=cell)
    table = tracking.read_run_table(
        run_id, "probes/base.csv" if job.kind == "probe" else "evaluation/languages.csv"
    )
    return Outcome(job.id, job.kind, run_id, key, table=table, reused=True, cell=cell)


WAIT_SECONDS = 5.0  # how often a job another driver runs is looked at


def _claim_or_reuse(spec: JobSpec, upstream: tuple[Outcome, ...]) -> Outcome | None:
    """With several drivers on the study: None once this driver owns the stage (it runs it), or the
    outcome of the run another driver made of it, waited for while that driver lives."""
    from intertask.tracking import leases

    said = False
    while True:
        if (done := reused(spec.experiment_id, spec.job, spec.key, spec.planned_at_ms)) is not None:
            return done
        needs_model = spec.job.kind != "probe" and any(
            o.kind in ("intermediate", "finetune") and o.model is None for o in upstream
        )
        holder = None
        if not needs_model:
            holder = leases.claim(spec.study_run_id, spec.key, spec.stale_seconds, spec.driver)
            if holder is None:  # ours; unless it finished just now
                return reused(spec.experiment_id, spec.job, spec.key, spec.planned_at_ms)
        elif not leases.live_drivers(spec.study_run_id, spec.stale_seconds) - {spec.driver}:
            raise ClusterError(
                f"{spec.job.id} starts from a model another driver of this study trained without logging "
                "it (tracking.log_models), and that driver is gone: run the study again (that stage is "
                "trained again)"
            )
        if not said:
            who = f"driver {holder}" if holder else "the driver that trained its start model"
            print(f"note: {spec.job.id} is run by {who} of this study; waiting for its run", file=sys.stderr)
            said = True
        time.sleep(WAIT_SECONDS)


def run_job(
    spec: JobSpec, *upstream: Outcome, workdir: Path | None = None, data: dict | None = None
) -> Outcome:
    """Run one job here: a Workspace for its cell config (models saved under `workdir`), then its stage.
    `data` is the example sets planning loaded already (in-process: they are not read again). MLflow
    already points at the study's store (the entry point, or `_ray_job` in a Ray worker). With a
    `spec.driver`, the stage is claimed first: one that another driver of the study runs is waited for
    and its run reused."""
    from intertask.study.workspace import Workspace

    if spec.driver and (done := _claim_or_reuse(spec, upstream)) is not None:
        return done

    shared = {"workdir": workdir} if workdir is not None else {}  # else a folder of its own, removed after
    if data is not None:
        shared["loaded"] = data
    ws = Workspace(
        spec.config,
        spec.config_file,
        tags=spec.tags,
        experiment_id=spec.experiment_id,
        expected=spec.expected,
        planned_root=spec.data_root,
        **shared,
    )
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

    def run(self, specs: list[JobSpec], ready: dict[str, Outcome], watch=None) -> dict[str, Outcome]:
        """`watch` is for executors whose stages run in other processes; here a stage is this process."""
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
    import ray

    from intertask import tracking
    from intertask.compute import hardware

    tracking.use(spec.config, spec.tracking_uri)
    node = ray.get_runtime_context().get_node_id()
    spec = replace(spec, tags={**spec.tags, f"{tracking.TAG}ray_node": node})  # which node ran it, on its run
    if spec.threads:
        os.environ[hardware.THREADS_ENV] = str(spec.threads)
    workdir = Path(tempfile.mkdtemp(prefix="intertask-ray-"))
    try:
        return _portable(run_job(spec, *upstream, workdir=workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# what a stage's process takes from the driver's environment besides its JobSpec: where models, token
# caches and checkpoints live, how to reach the Hugging Face hub, the tracking server's credentials and
# TLS settings, an S3-compatible artifact store's. Values travel in the Ray job's runtime_env (Ray keeps
# them in its control store; they are never logged by us).
WORKER_ENV = (
    "INTERTASK_CACHE",
    "INTERTASK_CHECKPOINTS",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_TOKEN",
    "HF_ENDPOINT",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "TOKENIZERS_PARALLELISM",
    "MLFLOW_DISABLE_TELEMETRY",
)


def worker_env(data_root: str) -> dict[str, str]:
    """The environment variables every stage process gets: WORKER_ENV as the driver has them, and the
    data root the driver planned on (a worker reading its own default would train on other files)."""
    from intertask.data import DATA_ENV

    env = {name: os.environ[name] for name in WORKER_ENV if name in os.environ}
    env[DATA_ENV] = data_root
    return env


class RayExecutor:
    """Every job a Ray task; a job waits only for the jobs it starts from, so independent stages
    (the baseline arm and the intermediate stage, different seeds or targets) run side by side. A
    task whose worker or node died is retried `max_retries` times; while no node can take a waiting
    stage the driver says so, and after `stall_seconds` of that it ends with ClusterError."""

    POLL_SECONDS = 5.0

    def __init__(
        self,
        address: str | None,
        cpus: int | None,
        cpus_per_stage: float,
        gpus_per_stage: float,
        max_retries: int = 1,
        stall_seconds: float = 600,
        watch_seconds: float = 30,
    ):
        self.address, self.cpus = address, cpus
        self.resources = {"num_cpus": cpus_per_stage, "num_gpus": gpus_per_stage}
        self.threads = max(1, int(cpus_per_stage))  # torch threads per stage: its CPUs, not the host's
        self.max_retries, self.stall_seconds = max_retries, stall_seconds
        self.watch_seconds = watch_seconds

    def run(self, specs: list[JobSpec], ready: dict[str, Outcome], watch=None) -> dict[str, Outcome]:
        """Every job not in `ready`, as Ray tasks; `watch()` is called every heartbeat interval while they
        run (the pipeline closes the runs of stages whose heartbeat stopped)."""
        import ray

        main_thread = threading.current_thread() is threading.main_thread()
        ours = signal.getsignal(signal.SIGTERM) if main_thread else None
        if not ray.is_initialized():
            # no address: a Ray of its own, as configured -- not the cluster Ray would otherwise join
            # (RAY_ADDRESS, or the last one started on this machine by anyone: another study, a test);
            # `address: auto` asks for that one
            where = {"address": self.address} if self.address else {"address": "local", "num_cpus": self.cpus}
            ray.init(**where, include_dashboard=False, log_to_driver=False)
        env = worker_env(specs[0].data_root) if specs else {}
        remote = ray.remote(_ray_job).options(
            **self.resources, max_retries=self.max_retries, runtime_env={"env_vars": env}
        )
        refs: dict[str, object] = {job_id: ray.put(outcome) for job_id, outcome in ready.items()}
        pending = {}
        for spec in specs:
            if spec.job.id in refs:
                continue
            deps = [refs[d] for d in spec.job.deps]
            share = replace(spec, threads=self.threads)
            refs[spec.job.id] = pending[spec.job.id] = remote.remote(share, *deps)
        # ray.init puts in a SIGTERM handler that exits at once (runs left RUNNING), and an interrupted
        # ray.wait raises a plain KeyboardInterrupt: ours goes back in, and a SIGTERM is told apart
        terms: list[int] = []
        if callable(ours):

            def on_sigterm(signum, frame):
                terms.append(signum)
                ours(signum, frame)

            signal.signal(signal.SIGTERM, on_sigterm)
        try:
            return self._collect(ray, pending, dict(ready), watch)
        except KeyboardInterrupt as err:
            if terms and not isinstance(err, Terminated):
                raise Terminated() from None
            raise
        finally:
            if callable(ours):
                signal.signal(signal.SIGTERM, ours)

    def _collect(
        self, ray, pending: dict[str, object], outcomes: dict[str, Outcome], watch
    ) -> dict[str, Outcome]:
        """Each job's outcome as it finishes; what is left is cancelled when the driver stops."""
        names = {ref: job_id for job_id, ref in pending.items()}
        waiting = list(pending.values())
        stalled_since, watched = None, time.monotonic()
        try:
            while waiting:
                if watch is not None and time.monotonic() - watched >= self.watch_seconds:
                    watch()
                    watched = time.monotonic()
                done, waiting = ray.wait(
                    waiting, num_returns=1, timeout=min(self.POLL_SECONDS, self.watch_seconds)
                )
                if done:
                    outcome = ray.get(done[0])
                    outcomes[outcome.job_id] = outcome
                    stalled_since = None
                    continue
                stalled_since = self._check_stall(ray, [names[r] for r in waiting], stalled_since)
        except BaseException:
            for ref in waiting:
                ray.cancel(ref, force=True)
            raise
        return outcomes

    def _check_stall(self, ray, waiting: list[str], since: float | None) -> float | None:
        """None while some live node could take a stage (busy or not: Ray starts it once that node is
        free); else when that stopped, ending the study after stall_seconds. A stage is placed on one
        node, so each live node is compared with its needs, not the cluster's total; dead nodes do not
        count. What the driver waits for, and what each live node has, is printed at once and every
        minute of a stall."""
        needs = {"CPU": self.resources["num_cpus"], "GPU": self.resources["num_gpus"]}
        live = [n for n in ray.nodes() if n.get("Alive")]
        if any(fits(node.get("Resources", {}), needs) for node in live):
            return None
        now = time.monotonic()
        since = since or now
        nodes = "; ".join(describe_node(n) for n in live) or "none"
        line = (
            f"waiting for {len(waiting)} stage(s) ({', '.join(waiting[:5])}{', ...' if len(waiting) > 5 else ''}): "
            f"each needs {needs['CPU']:g} CPU and {needs['GPU']:g} GPU on one node, and no live node has "
            f"that (live nodes: {nodes})"
        )
        if now - since >= self.stall_seconds:
            raise ClusterError(
                f"{line}; none could take them for {self.stall_seconds:g} s (executor.stall_seconds): "
                "add a node that large or lower executor.cpus_per_stage / gpus_per_stage, then run the "
                "study again (finished stages are reused)"
            )
        if now == since or int(now - since) // 60 != int(now - since - self.POLL_SECONDS) // 60:
            print(f"note: {line}", file=sys.stderr, flush=True)
        return since


def fits(resources: dict[str, float], needs: dict[str, float]) -> bool:
    """Whether a node with these total resources can run a stage needing `needs` (CPU, GPU)."""
    return all(resources.get(name, 0.0) >= amount for name, amount in needs.items() if amount > 0)


def describe_node(node: dict) -> str:
    """One live Ray node as the stall message shows it: address, id and its CPUs and GPUs."""
    have = node.get("Resources", {})
    return (
        f"{node.get('NodeManagerAddress', '?')} {str(node.get('NodeID', ''))[:12]} with "
        f"{have.get('CPU', 0.0):g} CPU, {have.get('GPU', 0.0):g} GPU"
    )


def executor_for(cfg: ExperimentConfig, workdir: Path, data: dict | None = None):
    """Ray when configured (each job in a worker process reads its own data), else in-process."""
    if cfg.executor.kind == "ray":
        e = cfg.executor
        return RayExecutor(
            e.address,
            e.cpus,
            e.cpus_per_stage,
            e.gpus_per_stage,
            e.max_retries,
            e.stall_seconds,
            e.heartbeat_seconds,
        )
    return InProcessExecutor(workdir, data)
