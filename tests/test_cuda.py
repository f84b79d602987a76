"""The GPU path: a study trained in `auto` precision on the GPU (bf16, or fp16 with loss scaling on
GPUs without bf16), evaluated, embedded for retrieval, saved, registered and loaded back; and a training
run stopped mid-epoch that resumes on the device to the same dev history.

Skipped where torch sees no CUDA device. `benchmarks/gpu_check.sh` runs them on a GPU machine; with
INTERTASK_CUDA_TESTS_ON_CPU=1 they run on the CPU instead (to check the tests themselves)."""

from __future__ import annotations

import os

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from intertask import cli, tracking
from intertask.compute import hardware

ON_CPU = os.environ.get("INTERTASK_CUDA_TESTS_ON_CPU") == "1"
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available() and not ON_CPU,
        reason="no CUDA device (benchmarks/gpu_check.sh runs these on a GPU machine)",
    ),
]


def _expected_precision() -> str:
    return hardware.resolve_precision("auto", hardware.probe()).name


def test_a_study_trains_evaluates_embeds_and_registers_on_the_gpu(
    tiny_config, tiny_model, local_store, shared_data
):
    """intermediate -> finetune -> evaluate (+ a Tatoeba probe after each stage, i.e. retrieval
    embeddings) in `auto` precision; the registered target model loads back and predicts."""
    import mlflow

    config = tiny_config(
        "gpu",
        training={"epochs": 2, "batch_size": 16, "learning_rate": 1.0e-3, "checkpoint_every_steps": 4},
        evaluation={"languages": ["en", "de"], "max_examples": 48},
        probes=[
            {"task": "tatoeba", "languages": ["de"], "max_examples": 50, "after": ["intermediate", "target"]}
        ],
    )
    assert cli.main(["main", str(config)]) == 0
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("gpu").experiment_id])
    stages = [
        r for r in runs if r.data.tags.get("intertask.stage") in ("intermediate", "finetune", "evaluate")
    ]
    assert len(stages) == 5
    device = "cpu" if ON_CPU else "cuda"
    for run in stages:
        assert run.data.params["runtime.device"] == device
        assert run.data.params["runtime.precision"] == _expected_precision()
    evaluated = [r for r in stages if r.data.tags["intertask.stage"] == "evaluate"]
    for run in evaluated:
        accuracy = run.data.metrics["pawsx/test/de/accuracy"]
        assert 0.0 <= accuracy <= 1.0
    probed = [r for r in stages if "probe/tatoeba/test/de/accuracy" in r.data.metrics]
    assert len(probed) == 3  # after the intermediate stage and after both targets
    name = tracking.registered_name("gpu", str(tiny_model), ["xnli", "pawsx"])
    model = mlflow.pyfunc.load_model(f"models:/{name}@target")
    predictions = model.predict(
        pd.DataFrame({"text": ["a sentence", "another one"], "text_pair": ["a phrase", "one more"]})
    )
    assert len(predictions) == 2


def test_training_resumes_on_the_device_to_the_same_history(tiny_model, tmp_path, shared_data):
    """Stopped by an error in its second epoch, resumed from the last checkpoint on the GPU (weights,
    AdamW, scheduler, gradient scaler and the GPU's generator come back): the same dev history, to the
    GPU's reduction-order tolerance."""
    from intertask.compute.modeling import device
    from intertask.config import TrainingConfig

    from .test_reliability import _Udpos, interrupted_and_resumed

    udpos = _Udpos(tmp_path, tiny_model, "gpu-loop")
    try:
        training = TrainingConfig(
            epochs=2, batch_size=80, learning_rate=3e-3, warmup_ratio=0.2, log_every_steps=1
        )

        reference, resumed, per_epoch, _ = interrupted_and_resumed(
            udpos, training, tmp_path / "gpu-ckpt", device=device()
        )
        assert resumed.resumed_at_step is not None and resumed.resumed_at_step > per_epoch
        assert list(resumed.history.epoch) == list(reference.history.epoch)
        for column in reference.history.columns:
            assert resumed.history[column].tolist() == pytest.approx(
                reference.history[column].tolist(), abs=1e-3
            )
    finally:
        udpos.ws.close()
