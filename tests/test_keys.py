"""Content keys (issue 29): a stale input changes a stage's key, a documentation edit does not."""

import dataclasses
import os

from intertask.compute import hardware, machine
from intertask.config import ExperimentConfig, StageConfig, TrainingConfig
from intertask.study import identity


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


def test_precision_auto_enters_the_key_with_what_it_resolves_on(monkeypatch):
    """`auto` is keyed by the facts it decides on (native bf16, oneDNN's cap, the GPU models), read
    without torch; an explicit precision by itself."""
    cfg = ExperimentConfig(
        name="k", target=StageConfig(task="pawsx", training=TrainingConfig(precision="auto"))
    )
    monkeypatch.setattr(machine, "gpu_models", lambda: ())
    keys = {}
    for flags in (frozenset({"avx2", "avx512_bf16"}), frozenset({"avx2"})):
        monkeypatch.setattr(machine, "cpu_flags", lambda flags=flags: flags)
        keys[flags] = identity.content_hash(identity.training_inputs(cfg, "finetune"))
    assert len(set(keys.values())) == 2  # a bf16 stage is not reused where auto would train fp32
    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # bf16 capped away: another key
    assert identity.training_inputs(cfg, "finetune")["precision"] == "auto@cpu:bf16:AVX2"
    monkeypatch.setattr(machine, "gpu_models", lambda: ("NVIDIA H200",))
    assert identity.training_inputs(cfg, "finetune")["precision"] == "auto@cuda:NVIDIA H200"
    fixed = dataclasses.replace(
        cfg, target=StageConfig(task="pawsx", training=TrainingConfig(precision="fp32"))
    )
    assert identity.training_inputs(fixed, "finetune")["precision"] == "fp32"
    # the facts agree with what the training stage resolves on this machine
    monkeypatch.undo()
    here = hardware.resolve_precision("auto", hardware.probe()).name
    facts = identity.training_inputs(cfg, "finetune")["precision"]
    assert (here == "bf16") == facts.startswith("auto@cpu:bf16:") or facts.startswith("auto@cuda:")


def _cached_hub_model(cache, repo: str, commit: str, ref: str = "main"):
    """A model in a Hugging Face cache as the hub client lays it out: refs/<ref> -> snapshots/<commit>."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / ref).write_text(commit)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / "config.json").write_text('{"model_type": "bert"}')
    return snapshot


def test_a_hub_model_is_keyed_by_the_commit_its_revision_stands_for(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from intertask import pretrained
    from intertask.compute import weights

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # here the hub cannot be asked: the cache says
    pretrained.repo_commit.cache_clear()
    old, new = "a" * 40, "b" * 40
    _cached_hub_model(tmp_path, "org/model", old)
    assert identity.model_identity("org/model") == f"org/model@{old}"
    assert weights.pinned("org/model") == f"org/model@{old}"  # what a slim model records as its base
    _cached_hub_model(tmp_path, "org/model", new)  # the model was updated on the hub and fetched again
    pretrained.repo_commit.cache_clear()
    assert identity.model_identity("org/model") == f"org/model@{new}"
    assert identity.model_identity(f"org/model@{old}") == f"org/model@{old}"  # pinned: a commit is itself
    _cached_hub_model(tmp_path, "org/model", old, ref="v1.0")
    assert identity.model_identity("org/model@v1.0") == f"org/model@{old}"
    assert identity.model_identity("org/unknown") == "org/unknown@unresolved"
    assert pretrained.split_revision("org/model@v1.0") == ("org/model", "v1.0")
    assert pretrained.split_revision("./folder@2") == ("./folder@2", None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert pretrained.resolve("org/model@v1.0") == str(tmp_path / "models--org--model" / "snapshots" / old)


def test_a_hub_dataset_branch_is_read_at_the_commit_it_stands_for(tmp_path, monkeypatch):
    """refs/convert/parquet moves; the data are loaded at its current commit (when the hub can be asked)
    and that commit is part of the set's fingerprint, so a moved branch cannot reuse stale runs."""
    from huggingface_hub import constants

    from intertask import pretrained
    from intertask.tasks.examples import hub_commit, hub_options
    from intertask.tasks.spec import HubSource

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    pretrained.repo_commit.cache_clear()
    hub = HubSource(path="org/data", revision="refs/convert/parquet")
    ref = tmp_path / "datasets--org--data" / "refs" / "refs" / "convert" / "parquet"
    ref.parent.mkdir(parents=True)
    ref.write_text("c" * 40)
    assert hub_commit(hub) == "c" * 40
    assert (
        hub_options(hub, "en", hub_commit(hub))["revision"] == "refs/convert/parquet"
    )  # offline: the cache's
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert hub_options(hub, "en", hub_commit(hub))["revision"] == "c" * 40  # online: pinned to the commit
    ref.write_text("d" * 40)  # the branch moved
    pretrained.repo_commit.cache_clear()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub_commit(hub) == "d" * 40
    assert hub_commit(HubSource(path="org/data", revision="e" * 40)) == "e" * 40  # a commit is itself
    assert hub_commit(HubSource(path="csv", data_files={"train": "x.csv"})) is None  # nothing to pin
    assert hub_commit(HubSource(path=str(tmp_path))) is None  # a local folder
    assert hub_commit(HubSource(path="org/uncached")) is None
