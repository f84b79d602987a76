"""Optuna tuning against real storages (SQLite; PostgreSQL when CI provides one) and a real MLflow
server: two worker processes share one study, a diverging trial is pruned, a killed study resumes,
bad search spaces are refused before the first trial."""

import gc
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import optuna
import pytest
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.exceptions import StorageInternalError
from optuna.trial import TrialState
from sqlalchemy.exc import OperationalError

from intertask import cli, tracking
from intertask.config import TuningConfig
from intertask.config.validate import load_experiment
from intertask.errors import ConfigError
from intertask.tune.summary import planned

from .conftest import Relay, write_experiment

STATE_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def _config(folder, tiny_model, name, tuning, **extra):
    default_tuning = {
        "stage": "target",
        "metric": "f1",
        "trials": 4,
        "heartbeat_seconds": 1,
        "grace_seconds": 3,
        "space": {
            "learning_rate": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True},
            "batch_size": {"type": "categorical", "choices": [8, 16]},
        },
    }
    return write_experiment(
        folder,
        tiny_model,
        name,
        {
            "seed": 5,
            "model": {"max_length": 48},
            "training": {"learning_rate": 3.0e-3},
            "target": {"task": "udpos", "max_examples": {"train": 160, "dev": 48}},
            "tuning": {**default_tuning, **tuning},
        },
        study=False,
        **extra,
    )


def _worker(config, storage, tracking_uri, *extra):
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    return subprocess.Popen(
        [sys.executable, "-m", "intertask", "tune", str(config), "--storage", storage, *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _check_study_and_runs(client, study, experiment_name, trials, killed=()):
    """Exactly `trials` trials finished, each once, each a nested run of the tuning parent whose
    status and state tag say what Optuna says (a trial failed as stale -- its worker killed, or too
    slow -- and retried: FAIL, run KILLED). A trial Optuna's ask() added when two workers raced for the
    last queued one is FAIL, marked unplanned, and has no run."""
    from intertask.tune.optuna_study import UNPLANNED_ATTR

    every = study.trials
    study_trials = planned(study)
    extra = [t for t in every if UNPLANNED_ATTR in t.user_attrs]
    assert len(extra) + len(study_trials) == len(every) and all(
        t.state == TrialState.FAIL and UNPLANNED_ATTR in t.user_attrs for t in extra
    ), extra
    retried = {t.system_attrs["failed_trial"] for t in study_trials if "failed_trial" in t.system_attrs}
    killed = set(killed) | retried
    finished = [t for t in study_trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == trials, [(t.number, t.state) for t in every]
    assert not [t for t in every if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    experiment = client.get_experiment_by_name(experiment_name).experiment_id
    runs = client.search_runs([experiment], max_results=500)
    (parent,) = [r for r in runs if r.data.tags.get("intertask.stage") == "tune"]
    assert (
        parent.info.status == "FINISHED" and parent.info.run_id == study.user_attrs["intertask.parent_run_id"]
    )
    trial_runs = [r for r in runs if "intertask.trial_key" in r.data.tags]
    keys = [r.data.tags["intertask.trial_key"] for r in trial_runs]
    assert len(keys) == len(set(keys)) == len(study_trials)  # one run per trial, none twice
    for trial in study_trials:
        (run,) = [r for r in trial_runs if r.data.tags["intertask.trial_number"] == str(trial.number)]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["intertask.trial_state"] == trial.state.name
        if trial.number not in killed:  # a worker killed just after opening the run logged nothing more
            assert run.data.params["trial_number"] == str(trial.number)  # a param, for the UI's charts
        expected = "KILLED" if trial.number in killed else STATE_STATUS[trial.state.name]
        assert run.info.status == expected, (trial.number, trial.state)
    complete = [t for t in study_trials if t.state == TrialState.COMPLETE]
    if complete:
        assert parent.data.tags["intertask.best_trial_run_id"] == study.best_trial.user_attrs["mlflow_run_id"]
    return parent, trial_runs


SHARED = {"pruner": {"kind": "none"}, "heartbeat_seconds": 2, "grace_seconds": 20}  # slow is not dead


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(tiny_model, tmp_path, mlflow_server, shared_data):
    config = _config(tmp_path, tiny_model, "tune-two", {"trials": 4, **SHARED})
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    _run_two_workers(config, storage, mlflow_server, "tune-two", 4, tiny_model.name)


class _Trials:
    """The trials of a study as the workers make them, read through one storage and its connection
    pool (a storage per look leaves its connections open until collected: on PostgreSQL, polled ten
    times a second, that used up the server's connections within a minute and stalled the workers)."""

    def __init__(self, url: str, name: str):
        self.url, self.name, self.storage = url, name, None

    def __call__(self) -> list[optuna.trial.FrozenTrial]:
        try:
            if self.storage is None:  # the tables are the first worker's to create
                self.storage = optuna.storages.RDBStorage(self.url, skip_table_creation=True)
            study = optuna.load_study(study_name=self.name, storage=self.storage)
        except Exception:  # noqa: BLE001 -- no tables or no study yet
            gc.collect()  # (a storage that failed half way: its pool closed now)
            return []
        return study.get_trials(deepcopy=False)

    def close(self) -> None:
        if self.storage is not None:
            self.storage.engine.dispose()


def _wait_for(what: str, condition, workers) -> None:
    deadline = time.time() + 300
    while not condition():
        if time.time() > deadline or any(w.poll() is not None for w in workers):
            for w in workers:  # (a worker still running would hold its output back)
                w.kill()
            pytest.fail(f"no {what}: " + "\n\n".join(w.communicate()[0][-2000:] for w in workers))
        time.sleep(0.1)


def _run_two_workers(config, storage, tracking_uri, name, trials, model_name):
    """Two workers on one study, each seen to run a trial -- by barriers, not by how long a trial takes:
    the first reaches MLflow through a relay, held once its first trial runs (the trial waits on its
    tracking calls; its heartbeat goes to the Optuna storage and goes on), and released once the second
    worker has popped a trial from the same queue."""
    relay = Relay(int(tracking_uri.rsplit(":", 1)[1]))
    workers = [_worker(config, storage, relay.uri)]
    seen = _Trials(storage, f"{name}-target")
    _wait_for("a running trial", lambda: any(t.state == TrialState.RUNNING for t in seen()), workers)
    relay.hold()
    try:
        workers.append(_worker(config, storage, tracking_uri))
        second = str(workers[1].pid)
        _wait_for(
            "the second worker's trial",
            lambda: any(t.user_attrs.get("host_pid", {}).get("intertask.pid") == second for t in seen()),
            workers,
        )
    finally:
        relay.release()
        seen.close()
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    failed = [(i, w.returncode, out[-3000:]) for i, (w, out) in enumerate(zip(workers, outputs, strict=True))]
    assert all(w.returncode == 0 for w in workers), "\n\n".join(
        f"--- worker {i} exited {code} ---\n{tail}" for i, code, tail in failed
    )
    study = optuna.load_study(study_name=f"{name}-target", storage=storage)
    client = MlflowClient(tracking_uri)
    _check_study_and_runs(client, study, name, trials)
    parent = client.get_run(study.user_attrs["intertask.parent_run_id"])
    study_trials = planned(study)
    unplanned = len(study.trials) - len(study_trials)  # (the workers' race for the last queued trial)
    assert parent.data.metrics["trials/unplanned"] == unplanned
    pids = {t.user_attrs["host_pid"]["intertask.pid"] for t in study_trials}
    assert len(pids) == 2, "both workers should have run trials"
    best = study.best_trial
    values = [t.value for t in study_trials if t.state == TrialState.COMPLETE]
    # the trials score differently, so "best" is chosen (two trials may still share the top score:
    # which configurations the sampler proposes depends on the order the two workers finish in)
    assert len(set(values)) > 1 and best.value == max(values), values
    version = client.get_model_version_by_alias(f"{name}.{model_name}.udpos", "tuned")
    assert version.run_id == best.user_attrs["mlflow_run_id"]  # the best trial's model, registered
    return study


def test_a_diverging_trial_is_pruned_and_the_best_params_feed_finetune(
    tiny_model, tmp_path, local_store, shared_data, capsys
):
    config = _config(
        tmp_path,
        tiny_model,
        "tune-prune",
        {
            "trials": 3,
            "enqueue": [{"learning_rate": 5.0e-3, "batch_size": 8}, {"learning_rate": 0.9, "batch_size": 8}],
            "space": {
                "learning_rate": {"type": "float", "low": 1.0e-3, "high": 0.95, "log": True},
                "batch_size": {"type": "categorical", "choices": [8, 16]},
            },
            "pruner": {"kind": "median", "startup_trials": 1, "warmup_epochs": 0},
        },
        training={"epochs": 3, "batch_size": 16, "learning_rate": 3.0e-3},
    )
    assert cli.main(["tune", str(config)]) == 0
    out = capsys.readouterr().out
    study = optuna.load_study(study_name="tune-prune-target", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    states = {t.number: t.state for t in study.trials}
    assert states[0] == TrialState.COMPLETE and states[1] == TrialState.PRUNED, (states, out)
    pruned = study.trials[1]
    assert len(pruned.intermediate_values) < 3  # stopped before its last epoch
    client = MlflowClient()
    parent, runs = _check_study_and_runs(client, study, "tune-prune", 3)
    assert parent.data.metrics["trials/pruned"] >= 1
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "tuning")}
    assert {"tuning/trials.csv", "tuning/trials.html", "tuning/best_params.yaml"} <= artifacts
    assert "tuning/optimization_history.png" in artifacts
    # the best values as an override file that finetune accepts
    best_file = tmp_path / "tuning" / "tune-prune-target" / "best_params.yaml"
    overrides = yaml.safe_load(best_file.read_text())
    assert overrides == {f"target.training.{k}": v for k, v in study.best_params.items()}
    cfg = load_experiment(config, [f"@{best_file}"])
    assert cfg.target.training.learning_rate == pytest.approx(study.best_params["learning_rate"])
    assert cli.main(["finetune", str(config), f"@{best_file}"]) == 0


def _has_run(uri: str, number: int) -> bool:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tune-kill")
    if experiment is None:
        return False
    found = client.search_runs(
        [experiment.experiment_id], f"tags.`intertask.trial_key` = 'tune-kill-target#{number}'"
    )
    return bool(found)


@pytest.mark.slow
def test_a_killed_study_resumes_where_it_stopped(tiny_model, tmp_path, shared_data, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    config = _config(tmp_path, tiny_model, "tune-kill", {"trials": 4, "pruner": {"kind": "none"}})
    worker = _worker(config, storage, uri)
    deadline = time.time() + 300
    study = None
    while time.time() < deadline:
        time.sleep(0.5)
        # look while the worker is stopped: a trial seen running cannot finish before the kill
        worker.send_signal(signal.SIGSTOP)
        try:
            study = optuna.load_study(study_name="tune-kill-target", storage=storage)
            trials = study.get_trials(deepcopy=False)
            running = [t.number for t in trials if t.state == TrialState.RUNNING]
            done = sum(t.state == TrialState.COMPLETE for t in trials)
            if done >= 1 and running and _has_run(uri, running[0]):
                break  # killed while it trains: its nested run exists (before that, it is still loading)
        except (KeyError, OperationalError, StorageInternalError, MlflowException):
            pass  # no study yet, or the stopped worker holds a store's lock: look again
        worker.send_signal(signal.SIGCONT)
        assert worker.poll() is None, worker.communicate()[0][-2000:]
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    killed = [t.number for t in study.get_trials() if t.state == TrialState.RUNNING]
    assert len(killed) == 1

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["tune", str(config), "--storage", storage]) == 0
    study = optuna.load_study(study_name="tune-kill-target", storage=storage)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == killed  # the killed trial: failed as stale ...
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed[0]]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE  # ... and run again, same values
    assert retry[0].params == failed[0].params
    client = MlflowClient(uri)
    _check_study_and_runs(client, study, "tune-kill", 4, killed=killed)


def test_a_worker_whose_trial_was_failed_as_stale_stops_it_and_goes_on(
    tiny_model, tmp_path, monkeypatch, shared_data, capsys
):
    """A slow worker (no heartbeat for grace_seconds on a loaded machine) finds its trial failed and
    re-queued by another worker: it stops training it (run KILLED, state FAIL), says so, and the study
    still ends with every trial done once (the retry). Before, the worker crashed at its next report."""
    from intertask import tune
    from intertask.study.workspace import Workspace
    from intertask.tune.worker import ask_queued, run_trial, storage_trial_id

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    config = _config(
        tmp_path,
        tiny_model,
        "tune-lost",
        {"trials": 2, "pruner": {"kind": "none"}},
        training={"epochs": 4, "batch_size": 8, "learning_rate": 3.0e-3},
    )
    cfg = load_experiment(config)
    tracking.use(cfg)  # what an entry point does first
    ws = Workspace(cfg, str(config))
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study, parent, storage = tune.open_study(cfg, ws, "tune-lost-target", url)
    trial = ask_queued(study)
    trial_id = storage_trial_id(storage, "tune-lost-target", trial.number)

    def another_worker():  # what a worker does on finding this trial silent for grace_seconds
        client = MlflowClient()
        experiment = client.get_experiment_by_name("tune-lost").experiment_id
        while not client.search_runs([experiment], "tags.`intertask.trial_key` = 'tune-lost-target#0'"):
            time.sleep(0.2)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)(study, storage.get_trial(trial_id))

    other = threading.Thread(target=another_worker)
    other.start()
    kept = run_trial(ws, study, storage, trial, "tune-lost-target", parent, None, None)
    other.join()
    assert kept is None  # nothing of the lost trial is kept
    assert "warning: trial 0 was failed as stale by another worker" in capsys.readouterr().err
    result = tune.tune(ws, name="tune-lost-target", storage=url)  # the same worker finishes the study
    assert result.best_params
    study = optuna.load_study(study_name="tune-lost-target", storage=url)
    assert [t.state for t in study.trials].count(TrialState.COMPLETE) == 2
    client = MlflowClient()
    _check_study_and_runs(client, study, "tune-lost", 2, killed=[0])
    ws.close()


BAD_SPACES = [
    (
        {"space": {"learning_rate": {"type": "float", "low": 1e-2, "high": 1e-4}}},
        "tuning.space.learning_rate.low",
        "low is above high",
    ),
    (
        {"space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2}}},
        "tuning.space.lr",
        "unknown parameter name",
    ),
    (
        {"space": {"learning_rate": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}},
        "tuning.space.learning_rate.low",
        "log scale needs a positive lower bound",
    ),
    ({"sampler": {"kind": "bayesian"}}, "tuning.sampler.kind", "unknown value"),
    ({"pruner": {"kind": "asha"}}, "tuning.pruner.kind", "unknown value"),
    (
        {"space": {"epochs": {"type": "int", "low": 1, "high": 2.5}}},
        "tuning.space.epochs.high",
        "whole numbers",
    ),
    ({"space": {"batch_size": {"type": "categorical"}}}, "tuning.space.batch_size.choices", "needs choices"),
    (
        {"space": {"learning_rate": {"type": "float", "low": 1e-4, "high": 2.0}}},
        "tuning.space.learning_rate.high",
        "not a valid training.learning_rate",
    ),
    ({"sampler": {"kind": "grid"}}, "tuning.space.learning_rate", "grid sampler needs a finite set"),
    ({"metric": "bleu"}, "tuning.metric", "not a metric of task 'udpos'"),
    ({"stage": "intermediate"}, "tuning.stage", "no intermediate stage"),
    ({"enqueue": [{"learning_rate": 0.5}]}, "tuning.enqueue[0].learning_rate", "outside the search space"),
    (
        {"space": {"peft.rank": {"type": "int", "low": 2, "high": 8}}},
        "tuning.space.peft.rank",
        "the config has no peft section",
    ),
]


@pytest.mark.parametrize("tuning,where,problem", BAD_SPACES, ids=[b[1] + ":" + b[2][:20] for b in BAD_SPACES])
def test_bad_search_spaces_are_refused_before_the_first_trial(
    tuning, where, problem, tiny_model, tmp_path, monkeypatch, shared_data, capsys
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path, tiny_model, "tune-bad", tuning)
    with pytest.raises(ConfigError) as err:
        load_experiment(config)
    assert any(p.where == where and problem in p.problem for p in err.value.problems), str(err.value)
    assert cli.main(["tune", str(config)]) != 0
    assert f"{where}:" in capsys.readouterr().err
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_two_workers_share_one_postgresql_study(
    tiny_model, tmp_path, mlflow_server, shared_data, postgres_url
):
    name = f"tune-pg-{os.getpid()}-{int(time.time())}"  # a fresh study in a database that outlives tests
    config = _config(tmp_path, tiny_model, name, {"trials": 4, **SHARED})
    _run_two_workers(config, postgres_url, mlflow_server, name, 4, tiny_model.name)


def test_the_lora_rank_is_tuned_when_peft_is_on(tiny_model, tmp_path, monkeypatch, shared_data, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    config = _config(
        tmp_path,
        tiny_model,
        "tune-lora",
        {
            "trials": 2,
            "pruner": {"kind": "none"},
            "sampler": {"kind": "grid"},
            "space": {"peft.rank": {"type": "categorical", "choices": [2, 4]}},
        },
        peft={"method": "lora", "alpha": 8},
        training={"epochs": 1, "batch_size": 16, "learning_rate": 5.0e-3},
    )
    assert cli.main(["tune", str(config)]) == 0
    study = optuna.load_study(study_name="tune-lora-target", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert sorted(t.params["peft.rank"] for t in study.trials) == [2, 4]
    client = MlflowClient()
    ranks = {
        r.data.params.get("peft.rank")
        for r in client.search_runs([client.get_experiment_by_name("tune-lora").experiment_id])
        if "intertask.trial_key" in r.data.tags
    }
    assert ranks == {"2", "4"}  # each trial trained with its own rank
    best = yaml.safe_load((tmp_path / "tuning" / "tune-lora-target" / "best_params.yaml").read_text())
    assert set(best) == {"peft.rank"}
    assert (
        load_experiment(
            config, [f"@{tmp_path / 'tuning' / 'tune-lora-target' / 'best_params.yaml'}"]
        ).peft.rank
        == best["peft.rank"]
    )


def test_the_first_trials_spread_over_the_range():
    """Per-trial sampler seeds from SeedSequence: the random sampler's first draws of a log-uniform
    learning rate are not near-copies (seed * 100_003 + number gave 2.81e-5, 2.89e-5, 2.82e-5)."""
    from optuna.distributions import FloatDistribution

    from intertask.config import ParamSpace, SamplerConfig
    from intertask.tune import sampler_for, trial_seed

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    t = TuningConfig(
        stage="target",
        metric="accuracy",
        sampler=SamplerConfig(kind="random"),
        space={"learning_rate": ParamSpace(type="float", low=1e-5, high=3e-4, log=True)},
    )
    space = {"learning_rate": FloatDistribution(1e-5, 3e-4, log=True)}
    study = optuna.create_study()
    draws = []
    for number in range(6):
        study.sampler = sampler_for(t, trial_seed(1, number))
        draws.append(study.ask(space).params["learning_rate"])
    assert max(draws[:3]) / min(draws[:3]) > 2 and max(draws) / min(draws) > 5, draws
    assert trial_seed(1, 0) == trial_seed(1, 0) != trial_seed(2, 0)  # reproducible, seed-dependent


def test_ask_takes_queued_trials_and_a_trial_it_adds_on_an_empty_queue_is_marked_and_left_out(
    tmp_path, capsys
):
    """The worker takes trials with Optuna's public ask(). ask() moves one queued trial to RUNNING,
    but adds a new trial when the queue has emptied (another worker took the last one in between):
    that trial is told FAIL at once, marked unplanned, said, and left out of the trials table. A
    stale trial's retry keeps its queue slot (Optuna copies user attributes), so it is run."""
    from intertask.tune.optuna_study import PLANNED_ATTR, UNPLANNED_ATTR
    from intertask.tune.summary import trials_table, unplanned
    from intertask.tune.worker import ask_queued, storage_trial_id

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat_interval=60)
    study = optuna.create_study(storage=storage, study_name="s")
    study.enqueue_trial({"x": 1.0}, user_attrs={PLANNED_ATTR: 0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ask()'s "heartbeat is for optimize()" warning is not shown
        first = ask_queued(study)
        assert first is not None and first.number == 0 and first.suggest_float("x", 0.0, 2.0) == 1.0
        assert ask_queued(study) is None  # the queue is empty: ask() added trial 1
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.RUNNING, TrialState.FAIL]
    assert UNPLANNED_ATTR in trials[1].user_attrs and PLANNED_ATTR not in trials[1].user_attrs
    assert "note: trial 1 was added by Optuna's ask()" in capsys.readouterr().err
    first_id = storage_trial_id(storage, "s", 0)
    storage.record_heartbeat(first_id)
    storage.set_trial_state_values(first_id, TrialState.FAIL)  # what fail_stale_trials does
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)(study, storage.get_trial(first_id))
    retry = ask_queued(study)
    assert retry is not None and retry.number == 2 and retry.user_attrs[PLANNED_ATTR] == 0
    study.tell(retry, 0.5)
    table = trials_table(study)
    assert table.number.tolist() == [0, 2] and table.state.tolist() == ["FAIL", "COMPLETE"]
    assert unplanned(study) == 1
