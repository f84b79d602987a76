"""Crash and resume, signals, a tracking server that goes away, and two pipelines at once: real
processes, a real `mlflow server`, real checkpoints on disk."""

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from intertask import cli, tracking
from intertask.compute.checkpoints import Checkpointer
from intertask.config import resolve

from .conftest import SET_BY_ENTRY_POINTS, Relay, _free_port, start_mlflow_server, write_experiment


def _config(folder: Path, tiny_model, name: str, **extra) -> Path:
    return write_experiment(
        folder,
        tiny_model,
        name,
        {
            "seed": 11,
            "model": {"max_length": 48},
            "training": {"learning_rate": 3.0e-3, "checkpoint_every_steps": 5},
            "target": {"task": "udpos", "max_examples": {"train": 800, "dev": 64}},
            "evaluation": {"languages": ["en", "de"], "max_examples": 32},
        },
        study=False,
        **extra,
    )


def _start(args: list[str], env: dict) -> subprocess.Popen:
    """`intertask ARGS` in its own process, with what this process's entry points set left out."""
    clean = {k: v for k, v in os.environ.items() if k not in SET_BY_ENTRY_POINTS}
    return subprocess.Popen(
        [sys.executable, "-m", "intertask", *args],
        env={**clean, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for_checkpoint(root: Path, proc: subprocess.Popen, timeout: float = 300) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = list(root.glob("*/latest"))
        if found:
            return found[0]
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def _finetune_runs(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`intertask.stage` = 'finetune'")
    return sorted(runs, key=lambda r: r.info.start_time)


def _dev_history(client: MlflowClient, run_id: str) -> dict[str, list[float]]:
    keys = [k for k in client.get_run(run_id).data.metrics if k.startswith(("dev/", "best_dev/"))]
    return {
        k: [m.value for m in sorted(client.get_metric_history(run_id, k), key=lambda m: m.step)] for k in keys
    }


@pytest.mark.slow
def test_a_stage_killed_mid_epoch_resumes_to_the_same_metrics(tiny_model, tmp_path, shared_data, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = _config(tmp_path, tiny_model, "crash")
    # the reference: the same stage, uninterrupted
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("INTERTASK_CHECKPOINTS", str(tmp_path / "ckpt-reference"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["finetune", str(config)]) == 0
    client = MlflowClient(uri)
    (reference,) = _finetune_runs(client, "crash")
    assert not list((tmp_path / "ckpt-reference").glob("*/latest"))  # a finished stage leaves no checkpoint

    root = tmp_path / "ckpt"
    env = {"MLFLOW_TRACKING_URI": uri, "INTERTASK_CHECKPOINTS": str(root)}
    proc = _start(["finetune", str(config)], env)
    latest = _wait_for_checkpoint(root, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = int(latest.read_text().split("-")[1])
    assert step < 100  # 2 epochs x 50 steps: killed before the end
    killed = _finetune_runs(client, "crash")[-1]
    assert killed.info.status == "RUNNING"  # what SIGKILL leaves behind ...

    restarted = _start(["finetune", str(config)], env)
    output = restarted.communicate(timeout=600)[0]
    assert restarted.returncode == 0, output[-3000:]
    runs = _finetune_runs(client, "crash")
    assert client.get_run(killed.info.run_id).info.status == "KILLED"  # ... is marked on the next start
    resumed = runs[-1]
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags["intertask.resumed_from_run"] == killed.info.run_id
    assert int(resumed.data.tags["intertask.resumed_at_step"]) >= step
    expected, got = _dev_history(client, reference.info.run_id), _dev_history(client, resumed.info.run_id)
    assert set(expected) == set(got) and expected  # every epoch's dev metrics, restored ones included
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-9), key
    assert not list(root.glob("*/latest"))


class _Udpos:
    """A workspace with UD-POS English train/dev data and the tiny model, for driving the training loop
    directly: `part(sparse)` builds a fresh model (seed 3) and its TrainPart on that data."""

    def __init__(self, tmp_path: Path, tiny_model, name: str) -> None:
        from intertask.compute.modeling import load_tokenizer
        from intertask.config.validate import load_experiment
        from intertask.study.workspace import Workspace, stage_data

        cfg = load_experiment(_config(tmp_path, tiny_model, name))
        self.model_dir = str(tiny_model)
        tracking.use(cfg)  # what an entry point does first
        self.ws = Workspace(cfg=cfg)
        self.task = resolve.catalog(cfg).task("udpos")
        self.train_set, self.dev_set = stage_data(self.ws, cfg.target, "udpos")
        self.tokenizer = load_tokenizer(self.model_dir)

    def encoded(self, which: str):
        return self.ws.encode(self.task, self.train_set if which == "train" else self.dev_set, self.tokenizer)

    def part(self, *, sparse: bool = False):
        from intertask.compute.modeling import HeadSpec, build_models
        from intertask.compute.training import TrainPart

        task = self.task
        head = HeadSpec("udpos", task.head, task.model_kwargs(), task.head_signature())
        model = build_models(self.model_dir, [head], seed=3, sparse_word_embeddings=sparse)["udpos"]
        return TrainPart("udpos", task, model, self.encoded("train"), self.encoded("dev"), self.dev_set, "f1")


def interrupted_and_resumed(udpos, training, folder: Path, *, sparse: bool = False, device=None):
    """Train once through; then again with checkpoints every 3 steps into `folder`, stopped by an error
    at step per_epoch + 4 (in epoch 2, after a checkpoint at a multiple of 3 past the epoch end), and
    resumed from the last checkpoint. -> (reference, resumed, per_epoch, stop_at)"""
    from intertask.compute.training import train
    from intertask.config import SamplingConfig

    def run(checkpointer=None, stop_at=None):
        def log(values, step):
            if stop_at is not None and "train/loss" in values and step >= stop_at:
                raise RuntimeError("simulated crash")

        part = udpos.part(sparse=sparse)
        if device is not None:
            part.model.to(device)
        return train(
            [part],
            training,
            seed=3,
            pad_id=udpos.tokenizer.pad_token_id,
            sampling=SamplingConfig(),
            log=log,
            checkpointer=checkpointer,
        )

    reference = run()
    per_epoch = reference.steps // 2
    stop_at = per_epoch + 4
    checkpointer = Checkpointer(folder, every_steps=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(checkpointer, stop_at=stop_at)
    return reference, run(checkpointer), per_epoch, stop_at


@pytest.mark.parametrize(
    ("sparse", "precision"),
    [(False, "fp32"), (True, "fp32"), (False, "fp16")],
    ids=["dense", "sparse-embeddings", "fp16-loss-scaling"],
)
def test_training_resumes_from_a_checkpoint_in_process(sparse, precision, tiny_model, tmp_path, shared_data):
    """The loop itself: stopped by an error in its second epoch (checkpoints every 3 steps and at epoch
    ends), resumed from the last mid-epoch checkpoint: the same history as a run that never stopped.
    Also with sparse-gradient word embeddings (a second optimizer, SparseAdam, in the checkpoint), and in
    fp16, whose gradient scaler's state (scale, growth tracker) must come back too."""
    from intertask.config import TrainingConfig

    udpos = _Udpos(tmp_path, tiny_model, "loop")
    try:
        training = TrainingConfig(
            epochs=2,
            batch_size=80,
            learning_rate=3e-3,
            warmup_ratio=0.2,
            log_every_steps=1,
            precision=precision,
        )

        reference, resumed, per_epoch, stop_at = interrupted_and_resumed(
            udpos, training, tmp_path / "loop-ckpt", sparse=sparse
        )
        assert per_epoch < resumed.resumed_at_step < stop_at and resumed.resumed_at_step % 3 == 0
        assert resumed.history.to_dict() == reference.history.to_dict()
        assert resumed.best_epoch == reference.best_epoch and resumed.best_dev == reference.best_dev
    finally:
        udpos.ws.close()


@pytest.mark.slow
def test_sigterm_ends_the_run_killed(tiny_model, tmp_path, shared_data):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = _config(tmp_path, tiny_model, "term")
    root = tmp_path / "ckpt"
    proc = _start(["finetune", str(config)], {"MLFLOW_TRACKING_URI": uri, "INTERTASK_CHECKPOINTS": str(root)})
    _wait_for_checkpoint(root, proc)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, output[-2000:]
    assert "terminated (SIGTERM)" in output
    client = MlflowClient(uri)
    (run,) = _finetune_runs(client, "term")
    assert run.info.status == "KILLED"
    assert not client.search_registered_models()  # no model of an interrupted stage


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_a_tracking_server_that_dies_mid_run_gives_a_clear_error_and_no_registry_entry(
    tiny_model, tmp_path, shared_data
):
    store = tmp_path / "server"
    store.mkdir()
    port = _free_port()
    server = start_mlflow_server(store, port)
    uri = f"http://127.0.0.1:{port}"
    config = _config(tmp_path, tiny_model, "serverdown", tracking={"outage_seconds": 5})
    root = tmp_path / "ckpt"
    proc = _start(["finetune", str(config)], {"MLFLOW_TRACKING_URI": uri, "INTERTASK_CHECKPOINTS": str(root)})
    try:
        _wait_for_checkpoint(root, proc)
    finally:
        _stop(server)
    started = time.time()
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 3, output[-3000:]
    assert time.time() - started < 90  # tracking.outage_seconds bounds the retries
    assert "does not answer" in output and "retrying for up to 5 s (tracking.outage_seconds)" in output
    message = [line for line in output.splitlines() if line.startswith("error:")]
    assert message and uri in message[-1] and "tracking.uri: the tracking store failed" in message[-1], (
        output[-2000:]
    )
    assert "Traceback" not in output
    server = start_mlflow_server(store, port)  # the same store, back up
    try:
        client = MlflowClient(uri)
        assert not client.search_registered_models()  # nothing half-registered
        (run,) = _finetune_runs(client, "serverdown")
        assert run.info.status == "RUNNING"  # the server was gone when the run tried to end
        experiment = client.get_experiment_by_name("serverdown").experiment_id
        mlflow.set_tracking_uri(uri)
        assert tracking.close_dead_runs(experiment) == [run.info.run_id]  # what the next start does
        assert client.get_run(run.info.run_id).info.status == "KILLED"
    finally:
        _stop(server)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["registered model", "run", "experiment"])
def test_two_drivers_setting_the_same_tags_at_once_both_succeed(mlflow_server, target):
    """What failed a driver of the two-driver study (exit 1): MLflow's SQL store sets a tag (of a
    registered model, a run, an experiment) by select-then-insert, so two drivers writing one tag at the
    same moment collide on its unique key. Two threads set the same 30 tags, each pair at once (a
    barrier), through what intertask writes them with (tracking.clash_retried; set_run_tags for a run's):
    no error, every tag there. (Through the bare client, 12 to 15 of the 30 pairs failed here.)"""
    import threading

    from intertask.tracking.connection import clash_retried

    mlflow.set_tracking_uri(mlflow_server)  # what set_run_tags writes through (the guard sets it back)
    client = MlflowClient(mlflow_server)
    name = f"race-{target.replace(' ', '-')}-{os.getpid()}-{time.time_ns()}"
    if target == "registered model":
        client.create_registered_model(name)
        write = functools.partial(clash_retried, client.set_registered_model_tag, name)
        read = lambda: client.get_registered_model(name).tags  # noqa: E731
    elif target == "run":
        run_id = client.create_run(client.create_experiment(name)).info.run_id
        write = lambda key, value: tracking.set_run_tags(run_id, {key: value})  # noqa: E731
        read = lambda: client.get_run(run_id).data.tags  # noqa: E731
    else:
        experiment = client.create_experiment(name)
        write = functools.partial(clash_retried, client.set_experiment_tag, experiment)
        read = lambda: client.get_experiment(experiment).tags  # noqa: E731
    barrier, errors = threading.Barrier(2), []

    def driver() -> None:
        for i in range(30):
            barrier.wait(timeout=60)
            try:
                write(f"key{i}", "same value")
            except Exception as err:  # noqa: BLE001 -- collected and shown below
                errors.append(f"{type(err).__name__}: {err}"[:300])

    threads = [threading.Thread(target=driver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[:3]
    tags = read()
    assert {k: v for k, v in tags.items() if k.startswith("key")} == {
        f"key{i}": "same value" for i in range(30)
    }


@pytest.mark.slow
def test_two_drivers_of_one_study_run_each_stage_once_beside_another_study(
    tiny_model, tmp_path, shared_data, mlflow_server
):
    """Three `main` processes at once on one experiment: two drivers of the same config (study a) and
    one of another (study b). Study a's drivers share one parent run and one run per arm, each stage
    is run once (claimed through the tracking store: tracking/leases.py) and each model registered
    once; all three exit 0 and leave no run RUNNING, the parent closed by the last driver to finish.
    A later run of study a reuses everything."""
    common = {
        "training": {"epochs": 1, "batch_size": 16, "learning_rate": 3.0e-3, "log_every_steps": 5},
        "evaluation": {"languages": ["en", "de"], "max_examples": 32},
        "tracking": {"experiment": "shared-exp"},
    }
    a = _config(
        tmp_path,
        tiny_model,
        "pipe-a",
        intermediate={"task": "xnli", "max_examples": {"train": 160, "dev": 48}},
        target={"task": "pawsx", "max_examples": {"train": 160, "dev": 48}},
        **common,
    )
    b = _config(
        tmp_path,
        tiny_model,
        "pipe-b",
        intermediate={"task": "xnli", "max_examples": {"train": 96, "dev": 48}},
        target={"task": "pawsx", "max_examples": {"train": 96, "dev": 48}},
        **common,
    )
    env = {"MLFLOW_TRACKING_URI": mlflow_server, "INTERTASK_CHECKPOINTS": str(tmp_path / "ckpt")}
    procs = [_start(["main", str(a)], env), _start(["main", str(a)], env), _start(["main", str(b)], env)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    if any(p.returncode for p in procs):  # the whole output, shown under "Captured stdout" (not cut)
        print("\n\n===== next process =====\n\n".join(outputs))
    assert [p.returncode for p in procs] == [0, 0, 0], (
        "\n".join(  # a failing one's end, in the summary
            f"--- process {i} exited {p.returncode} ---\n{out[-3000:]}"
            for i, (p, out) in enumerate(zip(procs, outputs, strict=True))
            if p.returncode
        )
    )
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("shared-exp").experiment_id
    runs = client.search_runs([experiment], max_results=500)
    assert not [r for r in runs if r.info.status != "FINISHED"], [
        (r.info.run_name, r.info.status) for r in runs if r.info.status != "FINISHED"
    ]
    parents = [r for r in runs if r.data.tags.get("intertask.stage") == "main"]
    assert sorted(r.info.run_name for r in parents) == ["main pipe-a", "main pipe-b"]
    stages = [r for r in runs if r.data.tags.get("intertask.stage_key")]
    keys = [r.data.tags["intertask.stage_key"] for r in stages]
    assert len(stages) == 10 and len(set(keys)) == 10, sorted(keys)  # 5 stages a study, each run once
    assert len([r for r in runs if r.data.tags.get("intertask.stage") == "arm"]) == 4  # 2 arms a study
    versions = client.search_model_versions("name LIKE 'shared-exp%'")
    by_run = {r.info.run_id: r.data.tags["intertask.stage_key"] for r in stages}
    assert versions and len({by_run[v.run_id] for v in versions}) == len(versions)  # each model once
    assert "of this study; waiting for its run" in outputs[0] + outputs[1]  # one waited for the other
    for parent in parents:  # the report logged once per study, whichever driver logged it last
        local = Path(
            client.download_artifacts(parent.info.run_id, "report", str(tmp_path / parent.info.run_id))
        )
        table = json.loads((local / "gains_table.json").read_text(encoding="utf-8"))
        assert len(table["data"]) == len(pd.read_csv(local / "gains.csv")) > 0
    again = _start(["main", str(a)], env)
    output = again.communicate(timeout=600)[0]
    assert again.returncode == 0, output[-2000:]
    assert "5 stages (5 reused from finished runs)" in output
    assert len(client.search_runs([experiment], "tags.`intertask.stage_key` != ''", max_results=500)) == 10


OUTAGE = 10  # seconds the relay stays cut


@pytest.mark.slow
def test_a_tracking_outage_mid_study_is_ridden_through(tiny_model, tmp_path, shared_data, mlflow_server):
    """The tracking server is reached through a relay that is cut for 10 s while a stage trains (every
    connection reset, the port closed): the study waits, says so, and ends with exit 0, every stage
    FINISHED and no run left RUNNING. (10 s outlasts a request's first retries at tracking.outage_seconds
    600 -- at once and 4 s after its failure; the next comes 12 s after, tracking.connection.retry_plan.)"""
    relay = Relay(int(mlflow_server.rsplit(":", 1)[1]))
    config = _config(
        tmp_path,
        tiny_model,
        "outage",
        target={"task": "pawsx", "max_examples": {"train": 160, "dev": 48}},
        training={"epochs": 1, "batch_size": 16, "learning_rate": 3.0e-3, "log_every_steps": 2},
        evaluation={"languages": ["en", "de"], "max_examples": 32},
    )
    client = MlflowClient(mlflow_server)  # the server itself, past the relay
    proc = _start(["main", str(config)], {"MLFLOW_TRACKING_URI": relay.uri})
    cut_at = None
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            experiment = client.get_experiment_by_name("outage")
            stages = (
                client.search_runs([experiment.experiment_id], "tags.`intertask.stage` = 'finetune'")
                if experiment
                else []
            )
            if stages and stages[0].info.status == "RUNNING":
                relay.cut()
                cut_at = time.time()
                time.sleep(OUTAGE)
                relay.restore()
                break
            time.sleep(0.2)
        output = proc.communicate(timeout=600)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        relay.cut()
    assert cut_at is not None, "no stage was seen running"
    assert proc.returncode == 0, output[-4000:]
    assert "does not answer" in output and "(tracking.outage_seconds)" in output
    runs = client.search_runs([client.get_experiment_by_name("outage").experiment_id], max_results=100)
    assert not [r.info.run_name for r in runs if r.info.status != "FINISHED"]
    stages = [r for r in runs if r.data.tags.get("intertask.stage_key")]
    assert len(stages) == 2 and max(r.info.end_time for r in stages) / 1000 > cut_at + OUTAGE


def test_sparse_word_embeddings_move_only_the_rows_of_training_tokens(tiny_model, tmp_path, shared_data):
    """model.sparse_word_embeddings: the embedding rows of tokens that never occur in the training data
    stay exactly as loaded (SparseAdam is lazy, no weight decay), the rows of tokens that do occur are
    trained; with dense AdamW, weight decay moves every row."""
    from intertask.compute.training import train
    from intertask.config import SamplingConfig, TrainingConfig

    udpos = _Udpos(tmp_path, tiny_model, "sparse-rows")
    try:
        ids = udpos.encoded("train").inputs["input_ids"]
        seen = torch.from_numpy(np.unique(np.concatenate(ids))).long()
        training = TrainingConfig(epochs=1, batch_size=32, learning_rate=3e-3, warmup_ratio=0.0)

        def moved_rows(sparse: bool) -> tuple[torch.Tensor, torch.Tensor]:
            part = udpos.part(sparse=sparse)
            embedding = part.model.get_input_embeddings()
            before = embedding.weight.detach().clone()
            train([part], training, seed=3, pad_id=udpos.tokenizer.pad_token_id, sampling=SamplingConfig())
            assert embedding.sparse is sparse
            unseen = torch.ones(len(before), dtype=torch.bool).index_fill_(0, seen, False)
            return (embedding.weight.detach() != before).any(dim=1), unseen

        moved, unseen = moved_rows(sparse=True)
        assert unseen.sum() > 0 and not moved[unseen].any()  # no unseen token's row changed
        assert moved[seen].float().mean() > 0.95  # (a padding row gets no gradient)
        moved, unseen = moved_rows(sparse=False)
        # dense AdamW's weight decay moves every row (but an all-zero padding row)
        assert moved[unseen].float().mean() > 0.99
    finally:
        udpos.ws.close()


def test_one_process_at_a_time_claims_a_stage_checkpoint_folder(tmp_path):
    """Two studies sharing a stage trained it at once into one checkpoint folder, and one cleared it
    while the other was saving ('.step-5.tmp does not exist', found by test_two_pipelines_share_...
    with checkpoints every 5 steps). The folder is now claimed by one process; a second claim is
    refused until the first is released (a dead process releases its claim with it)."""
    from intertask.compute.checkpoints import claim

    folder = tmp_path / "ckpt" / "stage-key"
    first = claim(folder)
    assert first is not None and claim(folder) is None
    first.release()
    again = claim(folder)
    assert again is not None
    again.release()


def test_a_reused_pid_never_passes_for_the_live_run_it_once_was(tmp_path, monkeypatch):
    """close_dead_runs judges a RUNNING run by its process's identity -- host, PID namespace, PID and
    start time -- not by the PID alone: a live process whose PID a dead run recorded (a reused PID) does
    not keep that run open; a run of another PID namespace (a container sharing the host's name) is
    left to its own; a run of a live process stays RUNNING."""
    import psutil

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])  # not whatever an earlier test set globally
    experiment = client.create_experiment("liveness")
    parent = psutil.Process(os.getppid())
    mine = tracking.process_tags()
    live = {**mine, "intertask.pid": str(parent.pid), "intertask.pid_started": f"{parent.create_time():.2f}"}
    reused = {**live, "intertask.pid_started": f"{parent.create_time() - 3600:.2f}"}  # an hour earlier
    elsewhere = {**reused, "intertask.pid_ns": "pid:[1]"}
    runs = {
        name: client.create_run(experiment, tags=tags).info.run_id
        for name, tags in (("live", live), ("reused", reused), ("elsewhere", elsewhere))
    }
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    try:
        closed = tracking.close_dead_runs(experiment)
    finally:
        mlflow.set_tracking_uri(before)
    assert closed == [runs["reused"]]
    assert {n: client.get_run(r).info.status for n, r in runs.items()} == {
        "live": "RUNNING",
        "reused": "KILLED",
        "elsewhere": "RUNNING",
    }
    assert tracking.alive(parent.pid, parent.create_time()) and not tracking.alive(parent.pid, 1.0)
