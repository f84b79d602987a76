"""Precision and threads chosen for the machine: `auto` both ways (a driven probe, and this CPU with
oneDNN capped to AVX2 in a subprocess), the deprecated `bf16` key, usable cores, what every stage run
logs, and fp16 loss scaling through the real training loop."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from intertask import cli
from intertask.compute import hardware
from intertask.compute.hardware import Hardware, resolve_precision
from intertask.config import ConfigDeprecationWarning
from intertask.config.validate import load_experiment
from intertask.errors import ConfigError

from .conftest import write_yaml

CPU_NO_BF16 = Hardware(device="cpu", name="AMD EPYC (Zen 3)", cpu_isa="AVX2", cpu_bf16=False, cores=2)
CPU_BF16 = Hardware(device="cpu", name="Xeon (Sapphire Rapids)", cpu_isa="AVX512", cpu_bf16=True, cores=2)
GPU_BF16 = Hardware("cuda", "NVIDIA H100", "AVX512", False, cuda_bf16=True, cores=16)
GPU_OLD = Hardware("cuda", "Tesla V100", "AVX2", False, cuda_bf16=False, cores=8)


@pytest.mark.parametrize(
    ("hw", "expected", "scaled"),
    [
        (CPU_NO_BF16, "fp32", False),
        (CPU_BF16, "bf16", False),
        (GPU_BF16, "bf16", False),
        (GPU_OLD, "fp16", True),
    ],
    ids=["cpu-without-bf16", "cpu-with-bf16", "gpu-with-bf16", "gpu-without-bf16"],
)
def test_auto_resolves_to_the_fastest_native_precision(hw, expected, scaled):
    chosen = resolve_precision("auto", hw)
    assert (chosen.name, chosen.requested, chosen.scaled) == (expected, "auto", scaled)
    assert chosen.dtype == {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[expected]
    for explicit in ("fp32", "bf16", "fp16"):  # an explicit choice is kept on any machine
        assert resolve_precision(explicit, hw).name == explicit


def test_native_bf16_needs_the_instructions_and_onednn():
    native = hardware.native_cpu_bf16
    assert native(frozenset({"avx2", "avx512f", "avx512_bf16"}), onednn_bf16=True)
    assert native(frozenset({"avx2", "amx_bf16"}), onednn_bf16=True)
    # AVX-512 without bf16 instructions: oneDNN says yes but emulates
    assert not native(frozenset({"avx2", "avx512f", "avx512bw"}), onednn_bf16=True)
    # the instructions are there but oneDNN is capped below them (ONEDNN_MAX_CPU_ISA)
    assert not native(frozenset({"avx512_bf16"}), onednn_bf16=False)
    assert not native(frozenset({"avx2", "fma"}), onednn_bf16=False)


_PROBE = """
import json, warnings
from intertask.compute import hardware
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    auto = hardware.runtime("auto", announce=False)
    explicit = hardware.runtime("bf16")
print(json.dumps({"cpu_bf16": auto.hardware.cpu_bf16, "auto": auto.precision.name,
                  "warnings": [str(w.message) for w in caught]}))
"""


@pytest.mark.skipif(not hardware.cpu_flags(), reason="no /proc/cpuinfo flags on this system")
def test_this_cpu_capped_to_avx2_runs_fp32_and_warns_about_emulated_bf16():
    """The real probe, on this machine with oneDNN capped to AVX2 (as on an AMD EPYC Zen 3): no native
    bf16, `auto` is fp32, and an explicit bf16 warns with the slowdown measured here."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["cpu_bf16"] is False and out["auto"] == "fp32", out
    (message,) = [w for w in out["warnings"] if "emulated" in w]
    assert "bf16 is emulated here" in message and "x slower than in fp32" in message
    assert "precision bf16 -> bf16 (requested)" in done.stderr  # the line printed once at start


def test_this_machine_resolves_auto_from_its_own_probe():
    """Both ways, checked against what /proc/cpuinfo and the affinity mask say, not against the
    functions probe() itself calls."""
    hw = hardware.probe()
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").is_file() else set()
    native = bool(flags & {"avx512_bf16", "amx_bf16"}) and torch.backends.mkldnn.is_available()
    if hw.device == "cpu":
        assert hw.cpu_bf16 == native
        assert resolve_precision("auto", hw).name == ("bf16" if native else "fp32")
    assert 1 <= hw.cores <= len(os.sched_getaffinity(0))


def test_a_stage_logs_the_precision_auto_chose_for_the_machine_it_ran_on(
    tiny_config, local_store, monkeypatch
):
    """The same config on a machine with native bf16 and on one without (a fake probe: the stage runs
    here either way); each run logs what auto chose there, and the stage key differs."""
    config = tiny_config(
        "precision",
        study=False,
        target={"task": "pawsx", "max_examples": {"train": 16, "dev": 16}},
        training={"epochs": 1, "batch_size": 16, "learning_rate": 1.0e-3},
        evaluation={"languages": ["en"], "max_examples": 16},
    )
    logged = {}
    for machine in (CPU_BF16, CPU_NO_BF16):
        monkeypatch.setattr(hardware, "probe", lambda machine=machine: dataclasses.replace(machine, cores=1))
        assert cli.main(["finetune", str(config)]) == 0
        client = MlflowClient()
        (run, *_) = client.search_runs(
            [client.get_experiment_by_name("precision").experiment_id],
            "tags.`intertask.stage` = 'finetune'",
            order_by=["attributes.start_time DESC"],
        )
        logged[machine.cpu_bf16] = (run.data.params["runtime.precision"], run.data.params["runtime.cpu_bf16"])
    assert logged == {True: ("bf16", "native"), False: ("fp32", "emulated")}


def test_usable_cores_follow_affinity_and_quota(monkeypatch):
    assert hardware.usable_cores(affinity=8, quota=None) == 8
    assert hardware.usable_cores(affinity=8, quota=2.5) == 2  # rounded down: no throttled thread
    assert hardware.usable_cores(affinity=2, quota=16.0) == 2
    assert hardware.usable_cores(affinity=4, quota=0.5) == 1
    if hasattr(os, "sched_getaffinity"):
        assert hardware.usable_cores(quota=None) == len(os.sched_getaffinity(0))
    monkeypatch.setenv(hardware.THREADS_ENV, "1")
    assert hardware.threads_for(None, CPU_BF16) == 1  # a Ray stage's share
    assert hardware.threads_for(3, CPU_BF16) == 3  # training.threads wins
    monkeypatch.setenv(hardware.THREADS_ENV, "64")
    assert hardware.threads_for(None, CPU_BF16) == 2  # a share never exceeds the usable cores


def test_deprecated_bf16_key_is_read_as_precision_with_a_warning(tmp_path, shared_data):
    path = write_yaml(
        tmp_path / "old.yaml",
        {"name": "old", "training": {"bf16": True}, "target": {"task": "pawsx", "training": {"bf16": False}}},
    )
    with pytest.warns(ConfigDeprecationWarning) as caught:
        cfg = load_experiment(path)
    assert cfg.training.precision == "bf16" and cfg.target.training.precision == "fp32"
    messages = [str(w.message) for w in caught]
    assert any(
        m.startswith(f"{path}: training.bf16: deprecated, read as training.precision: bf16") for m in messages
    )
    assert any(
        "target.training.bf16: deprecated, read as target.training.precision: fp32" in m for m in messages
    )
    with pytest.warns(ConfigDeprecationWarning, match=r"^<overrides>: training.bf16: deprecated"):
        cfg = load_experiment(path, ["training.bf16=false"])
    assert cfg.training.precision == "fp32"


def test_deprecated_bf16_beside_another_precision_is_refused(tmp_path, shared_data):
    path = write_yaml(
        tmp_path / "both.yaml",
        {"name": "both", "training": {"bf16": True, "precision": "fp32"}, "target": {"task": "pawsx"}},
    )
    with (
        warnings.catch_warnings(),
        pytest.raises(ConfigError, match=r"training.bf16: conflicts with precision: fp32"),
    ):
        warnings.simplefilter("ignore")
        load_experiment(path)


def test_every_stage_run_logs_its_runtime_and_evaluation_uses_the_configured_threads(
    tiny_config, local_store, shared_data
):
    """intermediate -> finetune -> evaluate in process: each run records precision, device, CPU and
    threads; `training.threads: 1` holds in evaluation too (torch's thread count during the stage)."""
    config = tiny_config(
        "runtime",
        training={"epochs": 1, "batch_size": 16, "learning_rate": 1.0e-3, "threads": 1},
        evaluation={"languages": ["en", "de"], "max_examples": 32},
    )
    torch.set_num_threads(2)
    assert cli.main(["main", str(config)]) == 0
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("runtime").experiment_id])
    stage_runs = [
        r for r in runs if r.data.tags.get("intertask.stage") in ("intermediate", "finetune", "evaluate")
    ]
    assert len(stage_runs) == 5  # intermediate, 2 x finetune, 2 x evaluate
    expected = resolve_precision("auto", hardware.probe()).name
    for run in stage_runs:
        params = run.data.params
        assert params["runtime.precision"] == expected and params["runtime.precision_requested"] == "auto"
        assert params["runtime.threads"] == "1"
        assert params["runtime.device"] == hardware.probe().device
        assert params["runtime.cpu"] == hardware.cpu_model()
        assert params["runtime.cpu_bf16"] in ("native", "emulated")
    assert torch.get_num_threads() == 1  # the last stage (an evaluation) ran with training.threads


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_autocast_training_moves_the_weights_and_keeps_them_fp32(
    precision, tiny_model, tmp_path, shared_data
):
    """The training loop in a reduced precision (fp16 with a GradScaler, or bf16) on a real tiny model:
    the loss is finite, the master weights stay fp32 and move."""
    from intertask.compute.training import train
    from intertask.config import SamplingConfig, TrainingConfig

    from .test_reliability import _Udpos

    udpos = _Udpos(tmp_path, tiny_model, f"amp-{precision}")
    try:
        part = udpos.part()
        before = {k: v.detach().clone() for k, v in part.model.named_parameters()}
        training = TrainingConfig(
            epochs=1, batch_size=40, learning_rate=3e-3, precision=precision, checkpoints=False
        )
        result = train(
            [part], training, seed=3, pad_id=udpos.tokenizer.pad_token_id, sampling=SamplingConfig()
        )
        assert result.history.train_loss.notna().all() and (result.history.train_loss < 10).all()
        moved = [k for k, v in part.model.named_parameters() if not torch.equal(v, before[k])]
        assert len(moved) > len(before) // 2
        assert all(p.dtype == torch.float32 for p in part.model.parameters())
    finally:
        udpos.ws.close()


def test_a_checkpoint_keeps_the_gradient_scalers_state(tmp_path):
    """fp16 loss scaling through a checkpoint: a scale that backed off after overflowing gradients
    comes back as it was (a resumed run would otherwise skip steps the first run took)."""
    import numpy as np

    from intertask.compute.checkpoints import Checkpointer, RunState, capture, restore
    from intertask.compute.training import _schedule

    def parts():
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        return model, [optimizer], [_schedule(optimizer, 10, 0.0)], torch.amp.GradScaler("cpu")

    model, optimizers, schedulers, scaler = parts()
    for _ in range(3):  # overflowing gradients: every step is skipped and the scale halves
        loss = model(torch.full((2, 4), 1e38)).sum() * 1e38
        scaler.scale(loss).backward()
        scaler.step(optimizers[0])
        scaler.update()
        optimizers[0].zero_grad()
    assert scaler.get_scale() == 65536.0 / 8
    rng = np.random.Generator(np.random.PCG64(0))
    run = RunState(batches_per_task={"t": 3}, step=3)
    checkpointer = Checkpointer(tmp_path / "ckpt", every_steps=1)
    checkpointer.save(
        capture(run, torch.nn.ModuleList([model]), None, optimizers, schedulers, scaler, rng, {})
    )
    model2, optimizers2, schedulers2, scaler2 = parts()
    state2 = RunState(batches_per_task={"t": 0})
    restore(
        checkpointer.load(), torch.nn.ModuleList([model2]), optimizers2, schedulers2, scaler2, rng, {}, state2
    )
    assert scaler2.state_dict() == scaler.state_dict() and state2.step == 3
