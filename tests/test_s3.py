"""Ray workers and an S3-compatible artifact store: moto's standalone S3 server (a real HTTP server
speaking the S3 API) behind a real `mlflow server --artifacts-destination s3://...`. A study whose
stages run side by side as Ray tasks on a local Ray of 2 CPUs logs its models there and hands them on
through it; a registered model is served from it; run again in process, every stage is reused."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest
from mlflow.tracking import MlflowClient

from intertask import cli

from .conftest import _free_port, missing_component, start_mlflow_server, write_experiment
from .test_serving import _post, _serve

try:
    import ray
except ImportError:  # the dev extra installs it: under CI its absence fails
    missing_component("Ray is not installed (pip install 'intertask[ray]')")

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "moto-test-key",
    "AWS_SECRET_ACCESS_KEY": "moto-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _moto(port: int, log) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "moto's S3 server ended"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).close()
            return proc
        except OSError:
            time.sleep(0.3)
    raise AssertionError("moto's S3 server did not answer in 60 s")


@pytest.mark.slow
def test_a_ray_study_logs_loads_and_serves_models_through_an_s3_artifact_store(
    tiny_model, tmp_path, monkeypatch, capsys
):
    s3_port, port = _free_port(), _free_port()
    endpoint = f"http://127.0.0.1:{s3_port}"
    with open(tmp_path / "moto.log", "w") as log:
        moto = _moto(s3_port, log)
    server = None
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, **_credentials())
        s3.create_bucket(Bucket="intertask-artifacts")
        server = start_mlflow_server(
            tmp_path, port, "s3://intertask-artifacts/mlflow", {**S3_ENV, "MLFLOW_S3_ENDPOINT_URL": endpoint}
        )
        uri = f"http://127.0.0.1:{port}"
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
        config = write_experiment(
            tmp_path,
            tiny_model,
            "on-s3",
            training={"epochs": 1, "checkpoint_every_steps": 3},
            intermediate={"max_examples": {"train": 64, "dev": 32}},
            target={"max_examples": {"train": 64, "dev": 32}},
            evaluation={"languages": ["en", "de"], "max_examples": 32},
            grid={"intermediate": ["xnli", "none"], "target": ["pawsx"], "seeds": [1]},
            executor={"kind": "ray", "cpus": 2, "cpus_per_stage": 1},
            report={"divergence": False, "bootstrap": 200},
            tracking={"log_models": "final"},
        )
        try:
            assert cli.main(["main", str(config)]) == 0
        finally:
            ray.shutdown()
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("on-s3")
        stages = _stages(client, experiment.experiment_id)
        assert sorted(r.data.tags["intertask.stage"] for r in stages) == [
            "evaluate",
            "evaluate",
            "finetune",
            "finetune",
            "intermediate",
        ]
        assert all(r.info.status == "FINISHED" for r in stages)
        assert all(r.data.tags["intertask.pid"] != str(os.getpid()) for r in stages)  # ran in Ray workers
        assert {r.data.params["runtime.threads"] for r in stages} == {"1"}  # each stage's share of 2 CPUs
        intermediate = next(r for r in stages if r.data.tags["intertask.stage"] == "intermediate")
        baseline, transfer = (
            next(
                r
                for r in stages
                if r.data.tags["intertask.stage"] == "finetune"
                and r.data.tags["intertask.cell.intermediate"] == i
            )
            for i in ("none", "xnli")
        )
        overlap = min(intermediate.info.end_time, baseline.info.end_time) - max(
            intermediate.info.start_time, baseline.info.start_time
        )
        assert overlap > 0, "independent stages ran one after the other"
        assert transfer.data.tags["intertask.init_run_id"] == intermediate.info.run_id  # loaded through S3
        keys = [
            o["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket="intertask-artifacts")
            for o in page.get("Contents", [])
        ]
        assert any(k.endswith("/MLmodel") for k in keys)  # the logged models are in the bucket
        assert not (tmp_path / "mlartifacts").exists()  # and nowhere on this disk
        (registered,) = [
            m for m in client.search_registered_models("name LIKE 'on-s3%pawsx'") if "xnli" in m.name
        ]
        alias = next(iter(registered.aliases))
        serve_port = _free_port()
        served = _serve(
            Path(sys.executable),
            f"models:/{registered.name}@{alias}",
            serve_port,
            {  # serve starts this environment's uvicorn
                **os.environ,
                "MLFLOW_TRACKING_URI": uri,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            },
            tmp_path,
        )
        try:
            answer = _post(
                serve_port, {"inputs": {"text": ["A dog runs."], "text_pair": ["A dog is running."]}}
            )
        finally:
            served.terminate()
            served.wait(timeout=60)
        assert len(answer["predictions"]) == 1 and "label" in answer["predictions"][0], json.dumps(answer)[
            :500
        ]

        # the executor and the models Ray logged to hand them on (`log_models: final` keeps no
        # intermediate model in process) are not part of a stage's key: in process, all is reused
        capsys.readouterr()
        assert cli.main(["main", str(config), "executor.kind=in_process"]) == 0
        assert "5 stages (5 reused from finished runs)" in capsys.readouterr().out
        assert len(_stages(client, experiment.experiment_id)) == 5  # none ran again
    finally:
        for proc in (server, moto):
            if proc is not None:
                os.killpg(proc.pid, 15)
                proc.wait(timeout=30)


def _stages(client, experiment_id: str) -> list:
    runs = client.search_runs([experiment_id], max_results=100)
    return [r for r in runs if r.data.tags.get("intertask.stage_key")]


def _credentials() -> dict:
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENV["AWS_DEFAULT_REGION"],
    }
