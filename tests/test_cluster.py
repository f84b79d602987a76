"""A study on a multi-node Ray cluster (`ray.cluster_utils.Cluster`: a head with no CPUs, worker nodes
of 1 CPU each) against a real `mlflow server` with proxied artifacts, as on machines that share no disk
with the server: stages run on the worker nodes, a worker node killed mid-stage leaves the study to
finish on the other and no run RUNNING, a re-run against a restarted cluster (a new address) continues
the same study and reuses every stage, a cluster that cannot take a stage ends the study with a clear
error, and a stage reading other data than its driver planned on stops before training."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
from mlflow.tracking import MlflowClient

from intertask import cli
from intertask.config.validate import load_experiment
from intertask.errors import DataError
from intertask.study.executors import JobSpec, run_job
from intertask.study.pipeline import plan
from intertask.study.workspace import Workspace

from .conftest import missing_component, write_experiment

try:
    import ray
    from ray.cluster_utils import Cluster
except ImportError:  # the dev extra installs it: under CI its absence fails
    missing_component("Ray is not installed (pip install 'intertask[ray]')")

STAGES = ("intermediate", "finetune", "evaluate")


def _config(folder, tiny_model, name, address, **extra):
    return write_experiment(
        folder,
        tiny_model,
        name,
        {
            "training": {"epochs": 1, "checkpoint_every_steps": 2},
            "intermediate": {"max_examples": {"train": 96, "dev": 32}},
            "target": {"max_examples": {"train": 96, "dev": 32}},
            "evaluation": {"languages": ["en", "de"], "max_examples": 32},
            "grid": {"intermediate": ["xnli", "none"], "target": ["pawsx"], "seeds": [1]},
            "executor": {"kind": "ray", "address": address, "cpus_per_stage": 1, "stall_seconds": 30},
            "report": {"divergence": False, "bootstrap": 200},
        },
        **extra,
    )


def _cluster(workers: int, **system) -> tuple[Cluster, list]:
    """A head with no CPUs and `workers` nodes of 1 CPU; `system`: Ray's _system_config settings."""
    head = {"num_cpus": 0, **({"_system_config": system} if system else {})}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    nodes = [cluster.add_node(num_cpus=1) for _ in range(workers)]
    cluster.wait_for_nodes()
    return cluster, nodes


def _runs(client, name):
    experiment = client.get_experiment_by_name(name)
    return client.search_runs([experiment.experiment_id], max_results=500) if experiment else []


def _stages(runs):
    return [r for r in runs if r.data.tags.get("intertask.stage") in STAGES]


@pytest.fixture
def cluster_env(monkeypatch, mlflow_server, tmp_path):
    monkeypatch.chdir(tmp_path)  # reports/<experiment> land here
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    yield mlflow_server
    ray.shutdown()


@pytest.mark.slow
def test_a_worker_node_killed_mid_stage_leaves_the_study_to_the_other(
    tiny_model, tmp_path, cluster_env, capsys, monkeypatch
):
    """Stages on two worker nodes; one node dies while its stage has a checkpoint, and its disk with it (the stage's local checkpoint
    folder is deleted as the node is killed: no disk is shared): the stage is run again on the other
    node and resumes from the checkpoint it had uploaded to the stage run's artifacts (a tracking
    server: tracking.checkpoint_artifacts auto). Its first run, which no process can close, is marked
    KILLED by the driver once its heartbeat is stale (heartbeat 1 s: stale after 4 s). Run again
    against a restarted cluster (a new address), the same study continues and reuses every stage."""
    client = MlflowClient(cluster_env)
    disk = tmp_path / "node-disk"  # where a stage keeps its checkpoints on the node it runs on
    monkeypatch.setenv("INTERTASK_CHECKPOINTS", str(disk))
    cluster, nodes = _cluster(2)
    first_address = cluster.address  # (None once the cluster is shut down)
    by_id = {n.node_id: n for n in nodes}
    killed = []

    def uploaded(run) -> bool:
        listed = client.list_artifacts(run.info.run_id, "checkpoint")
        return "checkpoint/latest.json" in [a.path for a in listed]

    def kill_a_node_with_a_checkpoint():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            for run in _stages(_runs(client, "cluster-kill")):
                node, key = (
                    run.data.tags.get("intertask.ray_node"),
                    run.data.tags.get("intertask.stage_key", ""),
                )
                if run.info.status == "RUNNING" and node in by_id and key and uploaded(run):
                    cluster.remove_node(by_id[node], allow_graceful=False)
                    # the node's disk goes with it, once its worker (which may still be writing a
                    # checkpoint for a moment) is gone
                    worker = int(run.data.tags["intertask.pid"])
                    gone_by = time.time() + 30
                    while psutil.pid_exists(worker) and time.time() < gone_by:
                        time.sleep(0.05)
                    shutil.rmtree(disk / key[:32])
                    killed.append(run)
                    return
            time.sleep(0.1)

    config = _config(
        tmp_path,
        tiny_model,
        "cluster-kill",
        cluster.address,
        training={"epochs": 6, "checkpoint_every_steps": 2},  # long enough for the heartbeat to go stale
        executor={"heartbeat_seconds": 1},  # merged over _config's executor section
    )
    killer = threading.Thread(target=kill_a_node_with_a_checkpoint, daemon=True)
    killer.start()
    try:
        assert cli.main(["main", str(config)]) == 0
    finally:
        killer.join(timeout=5)
        ray.shutdown()
        cluster.shutdown()
    assert killed, "no stage was seen running on a worker node with a checkpoint"
    (dead,) = killed
    runs = _runs(client, "cluster-kill")
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    assert (
        client.get_run(dead.info.run_id).info.status == "KILLED"
    )  # the dead node's attempt, closed by the driver
    assert f"run {dead.info.run_id} marked KILLED: no heartbeat" in capsys.readouterr().err  # while it ran
    (retried,) = [
        r
        for r in _stages(runs)
        if r.data.tags.get("intertask.stage_key") == dead.data.tags["intertask.stage_key"]
        and r.info.status == "FINISHED"
    ]
    assert retried.data.tags["intertask.ray_node"] != dead.data.tags["intertask.ray_node"]
    assert int(retried.data.tags["intertask.resumed_at_step"]) >= 2  # from the uploaded checkpoint
    assert retried.data.tags["intertask.resumed_from_run"] == dead.info.run_id
    assert not client.list_artifacts(retried.info.run_id, "checkpoint")  # removed once finished
    finished = [r for r in _stages(runs) if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["intertask.stage"] for r in finished) == [
        "evaluate",
        "evaluate",
        "finetune",
        "finetune",
        "intermediate",
    ]
    assert all(float(r.data.tags["intertask.heartbeat"]) >= r.info.start_time / 1000 - 1 for r in finished)
    (main,) = [r for r in runs if r.data.tags.get("intertask.stage") == "main"]
    assert main.data.tags["intertask.setting.executor.address"] == first_address
    assert "executor.address" not in main.data.params  # a setting, not an immutable param
    registered = {m.name for m in client.search_registered_models("name LIKE 'cluster-kill%'")}
    assert registered  # named after the experiment, as README says
    assert (tmp_path / "reports" / "cluster-kill" / "report.html").is_file()

    cluster, _ = _cluster(1)  # the cluster restarted: another address; every finished stage reused
    address = cluster.address
    try:
        assert cli.main(["main", str(config), f"executor.address={cluster.address}"]) == 0
    finally:
        ray.shutdown()
        cluster.shutdown()
    again = _runs(client, "cluster-kill")
    assert len(_stages(again)) == len(_stages(runs))  # none ran again
    assert [r.info.run_id for r in again if r.data.tags.get("intertask.stage") == "main"] == [
        main.info.run_id
    ]
    assert client.get_run(main.info.run_id).data.tags["intertask.setting.executor.address"] == address


@pytest.mark.slow
def test_a_stage_no_single_node_can_fit_ends_the_study_with_exit_4_naming_the_nodes(
    tiny_model, tmp_path, cluster_env, capsys
):
    """Two live 1-CPU nodes (and a 0-CPU head) hold 2 CPUs between them, but a stage needing 2 CPUs is
    placed on one node: no node can take it. Said at once, naming each live node, and the study ends
    with exit 4 after executor.stall_seconds; a dead node is not among them."""
    client = MlflowClient(cluster_env)
    # a node that dies is known dead after about a second (health checks every 0.5 s)
    cluster, nodes = _cluster(3, health_check_period_ms=500, health_check_failure_threshold=2)
    cluster.remove_node(nodes[2], allow_graceful=False)  # a dead node: not counted, not named
    try:
        ray.init(address=cluster.address, log_to_driver=False)  # the driver reuses this connection
        deadline = time.monotonic() + 60
        while any(n["NodeID"] == nodes[2].node_id and n["Alive"] for n in ray.nodes()):
            assert time.monotonic() < deadline, "the removed node was never known dead"
            time.sleep(0.5)
        config = _config(tmp_path, tiny_model, "cluster-stall", cluster.address)
        started = time.monotonic()
        code = cli.main(["main", str(config), "executor.stall_seconds=5", "executor.cpus_per_stage=2"])
        waited = time.monotonic() - started
    finally:
        ray.shutdown()
        cluster.shutdown()
    err = capsys.readouterr().err
    assert code == 4 and waited < 120, err[-2000:]
    assert "each needs 2 CPU and 0 GPU on one node, and no live node has that" in err
    assert "executor.stall_seconds" in err
    for node in nodes[:2]:
        assert node.node_id[:12] in err and "with 1 CPU" in err
    assert nodes[2].node_id[:12] not in err
    assert "with 0 CPU" in err  # the head
    assert not [r for r in _runs(client, "cluster-stall") if r.info.status == "RUNNING"]


def test_a_stage_reading_other_data_than_planned_stops_before_training(tiny_model, tmp_path, shared_data):
    """What a worker node with other files under the data root would do: the job's example sets are
    checked against the fingerprints the driver keyed it on, and the error names both roots."""
    config = _config(tmp_path, tiny_model, "cluster-data", None, executor={"kind": "in_process"})
    cfg = load_experiment(config)
    ws = Workspace(cfg, str(config), experiment_id="")
    study = plan(ws)
    job = next(j for j in study.jobs if j.kind == "intermediate")
    expected = {k: ("0" * 64, ["/driver/data/xnli/dev-en.tsv"]) for k in study.data[job.id]}
    spec = JobSpec(
        job,
        study.configs[job.id],
        str(config),
        "sqlite:///unused.db",
        "0",
        "parent",
        study.keys[job.id],
        expected=expected,
        data_root="/driver/data",
    )
    with pytest.raises(DataError) as err:
        run_job(spec, workdir=tmp_path / "work")
    text = str(err.value)
    assert "/driver/data" in text and str(shared_data) in text and "planned on" in text
    assert not (tmp_path / "unused.db").exists()  # nothing written: it stopped before any run


@pytest.mark.slow
def test_sigterm_ends_a_ray_study_with_143_and_its_runs_killed(tiny_model, tmp_path, cluster_env):
    """ray.init replaces the driver's SIGTERM handler with one that exits at once (134 here, runs left
    RUNNING); the driver puts its own back: 143, and the study's runs, stage runs included, KILLED."""
    client = MlflowClient(cluster_env)
    cluster, _ = _cluster(1)
    config = _config(
        tmp_path,
        tiny_model,
        "cluster-term",
        cluster.address,
        training={"epochs": 3, "checkpoint_every_steps": 2},
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "intertask", "main", str(config)],
        env={**os.environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if any(r.info.status == "RUNNING" for r in _stages(_runs(client, "cluster-term"))):
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        cluster.shutdown()
    assert proc.returncode == 128 + signal.SIGTERM, output[-2000:]
    assert "terminated (SIGTERM)" in output
    runs = _runs(client, "cluster-term")
    assert runs and not [r for r in runs if r.info.status == "RUNNING"]
    assert {r.info.status for r in runs if r.data.tags.get("intertask.stage") == "main"} == {"KILLED"}
    assert "KILLED" in {r.info.status for r in _stages(runs)}


@pytest.mark.slow
def test_a_ray_executor_without_an_address_starts_its_own_ray_beside_a_running_cluster(monkeypatch):
    """No `executor.address`: a Ray of its own with the configured CPUs, even where Ray would join
    another cluster (RAY_ADDRESS set, or one started on this machine: another study, another test) --
    seen in CI, where that join failed with "When connecting to an existing cluster, num_cpus ... must
    not be provided"."""
    from intertask.study.executors import RayExecutor

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    try:
        assert RayExecutor(None, 1, 1.0, 0.0).run([], {}) == {}
        assert ray.is_initialized()
        assert ray.get_runtime_context().gcs_address != cluster.address
        assert ray.cluster_resources().get("CPU") == 1  # the configured CPUs, not the cluster's 0
    finally:
        ray.shutdown()
        cluster.shutdown()
