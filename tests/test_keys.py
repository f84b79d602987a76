"""Content keys (issue 29): a stale input changes a stage's key, a documentation edit does not."""

import dataclasses
import os

from intertask import hardware, identity
from intertask.config import ExperimentConfig, StageConfig, TrainingConfig


def test_a_docstring_or_comment_edit_keeps_the_code_key_and_a_code_edit_changes_it():
    before = 'def f(x):\n    """Add one."""\n    # the obvious way\n    return x + 1\n'
    reworded = 'def f(x):\n    """Adds one to x, as documented."""\n    return x + 1  # still obvious\n'
    changed = 'def f(x):\n    """Add one."""\n    return x + 2\n'
    assert identity.source_digest(before, ".py") == identity.source_digest(reworded, ".py")
    assert identity.source_digest(before, ".py") != identity.source_digest(changed, ".py")
    yaml_before = "name: t  # a task\nlabels: [a, b]\n"
    assert identity.source_digest(yaml_before, ".yaml") == identity.source_digest(
        "labels: [a, b]\nname: t\n", ".yaml"
    )
    assert identity.source_digest(yaml_before, ".yaml") != identity.source_digest(
        "name: t\nlabels: [b, a]\n", ".yaml"
    )
    assert len(identity.code_version()) == 64


def test_a_model_folder_retrained_in_place_with_the_same_shapes_gets_a_new_key(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERTASK_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 8}')
    weights = folder / "model.safetensors"
    weights.write_bytes(b"\x00" * 64)
    first = identity.model_identity(str(folder))
    assert identity.model_identity(str(folder)) == first  # read back from the digest book
    assert (tmp_path / "cache" / identity.DIGESTS).is_file()
    weights.write_bytes(b"\x01" * 64)  # same size, other weights
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert identity.model_identity(str(folder)) != first


def _machine(bf16: bool) -> hardware.Hardware:
    return hardware.Hardware(
        device="cpu", name="test CPU", cpu_isa="AVX512" if bf16 else "AVX2", cpu_bf16=bf16, cores=2
    )


def test_precision_auto_enters_the_key_resolved_for_this_machine(monkeypatch):
    cfg = ExperimentConfig(
        name="k", target=StageConfig(task="pawsx", training=TrainingConfig(precision="auto"))
    )
    keys = {}
    for bf16 in (True, False):
        monkeypatch.setattr(hardware, "probe", lambda bf16=bf16: _machine(bf16))
        inputs = identity.training_inputs(cfg, "finetune")
        keys[bf16] = identity.content_hash(inputs)
        assert inputs["precision"] == ("bf16" if bf16 else "fp32")
    assert keys[True] != keys[False]  # a bf16 stage is not reused where fp32 would train
    fixed = dataclasses.replace(
        cfg, target=StageConfig(task="pawsx", training=TrainingConfig(precision="fp32"))
    )
    assert identity.training_inputs(fixed, "finetune")["precision"] == "fp32"
    # on this machine, auto resolves the way the training stage resolves it
    monkeypatch.undo()
    here = hardware.resolve_precision("auto", hardware.probe()).name
    assert identity.training_inputs(cfg, "finetune")["precision"] == here
