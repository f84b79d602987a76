"""PEFT adapters: default target modules per architecture (BERT-style and XLNet-style), merging that
keeps the function, and LoRA intermediate -> target -> evaluate from the registry on a real server."""

import copy
import json
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file, save_file
from transformers import AutoModel, XLNetConfig, XLNetModel

from intertask import cli, tracking
from intertask.compute import adapters, weights
from intertask.config import PeftConfig
from intertask.config.validate import load_experiment
from intertask.errors import ConfigError, ModelError

from .conftest import write_yaml


def _tiny_xlnet() -> XLNetModel:
    torch.manual_seed(0)
    return XLNetModel(XLNetConfig(vocab_size=120, d_model=32, n_layer=2, n_head=2, d_inner=64))


def _adapted(model) -> list[str]:
    return sorted(name for name, m in model.named_modules() if isinstance(m, BaseTunerLayer))


def _perturb_adapters(model) -> None:
    """LoRA's B starts at zero (and IA3 at one): move them so merging has something to fold in."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name or "ia3_" in name:
                param.add_(torch.randn_like(param) * 0.05)


def _inputs(vocab: int) -> dict:
    torch.manual_seed(1)
    return {
        "input_ids": torch.randint(5, vocab, (3, 9)),
        "attention_mask": torch.ones(3, 9, dtype=torch.long),
    }


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_bert_style_targets_attention_and_merging_keeps_the_function(method, tiny_model):
    model = AutoModel.from_pretrained(str(tiny_model)).eval()
    assert model.config.model_type == "bert"
    info = adapters.attach(model, PeftConfig(method=method, dropout=0.0), "bert")
    names = _adapted(model)
    suffixes = {"lora": ("query", "value"), "ia3": ("key", "value", "output.dense")}[method]
    assert names and all(n.endswith(suffixes) for n in names)
    assert info["peft.adapted_layers"] == len(names) == 2 * len(suffixes) + (2 if method == "ia3" else 0)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(("lora_" in n or "ia3_" in n) for n in trainable)
    _perturb_adapters(model)
    inputs = _inputs(model.config.vocab_size)
    with torch.no_grad():
        before = model(**inputs).last_hidden_state
    merged = adapters.merge(model)
    assert merged == len(names) and not _adapted(model)
    with torch.no_grad():
        after = model(**inputs).last_hidden_state
    assert torch.allclose(before, after, atol=1e-5)


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_xlnet_style_targets_the_feed_forward_layers(method):
    model = _tiny_xlnet().eval()
    targets, feedforward = adapters.resolve_targets(PeftConfig(method=method), "xlnet")
    assert targets == ("layer_1", "layer_2")  # q/k/v/o/r are raw parameters, not nn.Linear
    assert feedforward == (("layer_2",) if method == "ia3" else ())
    adapters.attach(model, PeftConfig(method=method, dropout=0.0), "xlnet")
    names = _adapted(model)
    assert names == sorted(f"layer.{i}.ff.{n}" for i in range(2) for n in ("layer_1", "layer_2"))
    _perturb_adapters(model)
    inputs = _inputs(120)
    with torch.no_grad():
        before = model(**inputs).last_hidden_state
    adapters.merge(model)
    with torch.no_grad():
        assert torch.allclose(before, model(**inputs).last_hidden_state, atol=1e-5)


def test_unknown_architecture_and_bad_targets_are_named():
    with pytest.raises(
        ModelError, match="peft.target_modules: no default lora target modules for model type 'gpt9'"
    ):
        adapters.resolve_targets(PeftConfig(), "gpt9")
    with pytest.raises(ModelError, match="peft.target_modules: cannot inject the adapter"):
        adapters.attach(_tiny_xlnet(), PeftConfig(target_modules=("no_such_linear",)), "xlnet")
    with pytest.raises(ConfigError, match="rank: must be positive"):
        PeftConfig(rank=0)


def _lora_delta(adapter_folder, scaling: float) -> dict[str, torch.Tensor]:
    """Encoder weight name -> the update (alpha / r) B @ A a saved LoRA adapter adds to it."""
    state = load_file(adapter_folder / "adapter_model.safetensors")
    return {
        key.replace(".lora_A.weight", ".weight"): scaling
        * state[key.replace("lora_A", "lora_B")]
        @ state[key]
        for key in state
        if key.endswith("lora_A.weight")
    }


@pytest.mark.parametrize("between", ["merge", "stack"])
def test_lora_intermediate_target_and_evaluation_from_the_registry(
    between, tiny_model, tmp_path, mlflow_server, shared_data, monkeypatch, capsys
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.chdir(tmp_path)
    experiment = f"lora-e2e-{between}"
    config = write_yaml(
        tmp_path / "lora.yaml",
        {
            "name": experiment,
            "seed": 4,
            "model": {"name_or_path": str(tiny_model), "max_length": 64},
            "peft": {"method": "lora", "rank": 4, "alpha": 8, "between_stages": between},
            "training": {"epochs": 1, "batch_size": 16, "learning_rate": 5.0e-3, "log_every_steps": 5},
            "intermediate": {"task": "xnli", "max_examples": {"train": 160, "dev": 48}},
            "target": {"task": "pawsx", "max_examples": {"train": 160, "dev": 48}},
            "evaluation": {"languages": ["en", "de"], "max_examples": 48},
        },
    )
    assert cli.main(["intermediate", str(config)]) == 0
    names = {
        c: tracking.registered_name(experiment, str(tiny_model), c.split("-")) for c in ("xnli", "xnli-pawsx")
    }
    start = f"models:/{names['xnli']}@intermediate"
    assert cli.main(["finetune", str(config), "--init", start]) == 0
    client = MlflowClient(mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    adapter_of, params_of = {}, {}
    for chain, alias in (("xnli", "intermediate"), ("xnli-pawsx", "target")):
        version = client.get_model_version_by_alias(names[chain], alias)
        run = client.get_run(version.run_id)
        params = params_of[chain] = run.data.params
        assert params["peft.method"] == "lora" and params["peft.rank"] == "4"
        assert params["peft.between_stages"] == between
        assert int(params["trainable_parameters"]) < int(params["parameters"]) / 2  # adapters and heads only
        artifacts = {a.path for a in client.list_artifacts(version.run_id, "adapter")}
        assert {"adapter/adapter_model.safetensors", "adapter/adapter_config.json"} <= artifacts
        assert run.data.metrics["peft/merged_layers"] == 4  # 2 layers x query, value
        adapter_of[chain] = Path(
            mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path="adapter")
        )
    target_params = params_of["xnli-pawsx"]
    trained_on = json.loads((adapter_of["xnli-pawsx"] / "adapter_config.json").read_text())
    if between == "stack":
        assert target_params["peft.stacked_on"] == start
        assert (adapter_of["xnli-pawsx"] / "stacked" / "adapter_model.safetensors").is_file()
        assert trained_on["base_model_name_or_path"] == str(tiny_model)
    else:
        assert "peft.stacked_on" not in target_params and not (adapter_of["xnli-pawsx"] / "stacked").exists()
        assert trained_on["base_model_name_or_path"] == start
    # either way the registered target encoder is the base plus both adapters' updates: under `stack` the
    # intermediate adapter stayed frozen, and everything outside the adapters stayed the base's
    uri = f"models:/{names['xnli-pawsx']}@target"
    downloaded = tracking.download_model(tracking.resolve_reference(uri, "model")).model_dir
    final = weights.load(AutoModel, downloaded).state_dict()  # logged as its changed weights, or whole
    base = AutoModel.from_pretrained(str(tiny_model)).state_dict()
    deltas = [_lora_delta(adapter_of[c], 8 / 4) for c in ("xnli", "xnli-pawsx")]
    assert set(deltas[0]) == set(deltas[1]) and len(deltas[0]) == 4
    for key in [k for k in base if not k.startswith("pooler.")]:
        expected = base[key] + sum(d[key] for d in deltas if key in d)
        assert torch.allclose(final[key], expected, atol=1e-5), key
    # the merged model loads without PEFT (pyfunc, no hub) and the evaluate entry point scores it
    pair = pd.DataFrame({"text": ["The cat sat on the mat."], "text_pair": ["A cat sits."]})
    predictions = mlflow.pyfunc.load_model(uri).predict(pair)
    assert len(predictions) == 1
    capsys.readouterr()
    assert cli.main(["evaluate", str(config), "--model", uri]) == 0
    assert "pawsx" in capsys.readouterr().out


def _trained_and_merged(tiny_model, method: str, folder):
    """An encoder whose adapter was 'trained' (moved off its start), saved to folder/adapter and merged."""
    model = AutoModel.from_pretrained(str(tiny_model)).eval()
    settings = PeftConfig(method=method, dropout=0.0)
    adapters.attach(model, settings, "bert")
    _perturb_adapters(model)
    adapters.save_and_merge(model, settings, "bert", str(tiny_model), folder)
    return model, settings


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_stacking_restores_the_base_under_a_frozen_adapter_and_merges_both(method, tiny_model, tmp_path):
    first, settings = _trained_and_merged(tiny_model, method, tmp_path / "first")
    inputs = _inputs(first.config.vocab_size)
    with torch.no_grad():
        merged_first = first(**inputs).last_hidden_state
    second = copy.deepcopy(first)
    info = adapters.attach(
        second, settings, "bert", tmp_path / "first" / "adapter", "models:/first@intermediate"
    )
    assert info["peft.stacked_on"] == "models:/first@intermediate"
    base = AutoModel.from_pretrained(str(tiny_model)).state_dict()
    for name, module in second.named_modules():
        if isinstance(module, BaseTunerLayer):
            assert module.active_adapters == ["stacked", "default"]
            assert torch.equal(module.get_base_layer().weight, base[f"{name}.weight"])  # base restored
    trainable = [n for n, p in second.named_parameters() if p.requires_grad]
    assert trainable and all(".default" in n for n in trainable)  # the stacked adapter is frozen
    with torch.no_grad():  # a fresh adapter is the identity: base + stacked adapter = the merged model
        assert torch.allclose(second(**inputs).last_hidden_state, merged_first, atol=1e-5)
        for param in second.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.05)
        stacked_out = second(**inputs).last_hidden_state
    assert not torch.allclose(stacked_out, merged_first, atol=1e-4)
    stacked = tmp_path / "first" / "adapter"
    adapters.save_and_merge(
        second, settings, "bert", "models:/first@intermediate", tmp_path / "second", stacked
    )
    with torch.no_grad():
        assert torch.allclose(second(**inputs).last_hidden_state, stacked_out, atol=1e-5)
    saved = tmp_path / "second" / "adapter"
    assert (saved / "stacked" / "adapter_model.safetensors").is_file()
    # the new adapter's base is the stacked one's base: base + stacked + new = the saved model
    assert json.loads((saved / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        tiny_model
    )


def test_stacking_refuses_start_models_it_cannot_rebuild(tiny_model, tmp_path):
    first, settings = _trained_and_merged(tiny_model, "lora", tmp_path / "first")
    folder = tmp_path / "first" / "adapter"
    changed = copy.deepcopy(first)
    with torch.no_grad():  # a weight the adapter's stage could not have changed
        changed.encoder.layer[0].output.LayerNorm.weight.add_(0.1)
    with pytest.raises(
        ModelError,
        match="1 weights outside the adapter differ from its base model, e.g. encoder.layer.0.output.LayerNorm",
    ):
        adapters.attach(changed, settings, "bert", folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    (moved / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": str(tmp_path)})
    )
    with pytest.raises(
        ModelError, match=r"moved/adapter_config.json: peft.between_stages: base_model_name_or_path"
    ):
        adapters.attach(copy.deepcopy(first), settings, "bert", moved)
    (folder / "stacked").mkdir()
    with pytest.raises(ModelError, match="an adapter stacked on another one"):
        adapters.attach(copy.deepcopy(first), settings, "bert", folder)
    config = write_yaml(tmp_path / "bad.yaml", {"name": "x", "peft": {"between_stages": "nest"}})
    with pytest.raises(
        ConfigError, match=r"peft.between_stages: unknown value \(got 'nest'; expected one of: merge, stack"
    ):
        load_experiment(str(config))


def test_stacking_refuses_adapter_weights_that_do_not_fit(tiny_model, tmp_path):
    first, settings = _trained_and_merged(tiny_model, "lora", tmp_path / "first")
    folder = tmp_path / "first" / "adapter"
    weights = load_file(folder / "adapter_model.safetensors")
    dropped = next(iter(weights))
    save_file({k: v for k, v in weights.items() if k != dropped}, folder / "adapter_model.safetensors")
    with pytest.raises(
        ModelError, match="adapter_model.safetensors: peft.between_stages: the adapter weights do not fit"
    ):
        adapters.attach(first, settings, "bert", folder)
