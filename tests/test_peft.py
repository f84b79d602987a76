"""PEFT adapters: default target modules per architecture (BERT-style and XLNet-style), merging that
keeps the function, and LoRA intermediate -> target -> evaluate from the registry on a real server."""

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import AutoModel, XLNetConfig, XLNetModel

from intertask import adapters, cli, tracking
from intertask.config import PeftConfig
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


def test_lora_intermediate_target_and_evaluation_from_the_registry(
    tiny_model, tmp_path, mlflow_server, shared_data, monkeypatch, capsys
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.chdir(tmp_path)
    config = write_yaml(
        tmp_path / "lora.yaml",
        {
            "name": "lora-e2e",
            "seed": 4,
            "model": {"name_or_path": str(tiny_model), "max_length": 64},
            "peft": {"method": "lora", "rank": 4, "alpha": 8},
            "training": {"epochs": 1, "batch_size": 16, "learning_rate": 5.0e-3, "log_every_steps": 5},
            "intermediate": {"task": "xnli", "max_examples": {"train": 160, "dev": 48}},
            "target": {"task": "pawsx", "max_examples": {"train": 160, "dev": 48}},
            "evaluation": {"languages": ["en", "de"], "max_examples": 48},
        },
    )
    assert cli.main(["intermediate", str(config)]) == 0
    names = {
        c: tracking.registered_name("lora-e2e", str(tiny_model), c.split("-")) for c in ("xnli", "xnli-pawsx")
    }
    assert cli.main(["finetune", str(config), "--init", f"models:/{names['xnli']}@intermediate"]) == 0
    client = MlflowClient(mlflow_server)
    for chain, alias in (("xnli", "intermediate"), ("xnli-pawsx", "target")):
        version = client.get_model_version_by_alias(names[chain], alias)
        run = client.get_run(version.run_id)
        params = run.data.params
        assert params["peft.method"] == "lora" and params["peft.rank"] == "4"
        assert int(params["trainable_parameters"]) < int(params["parameters"]) / 2  # adapters and heads only
        artifacts = {a.path for a in client.list_artifacts(version.run_id, "adapter")}
        assert {"adapter/adapter_model.safetensors", "adapter/adapter_config.json"} <= artifacts
        assert run.data.metrics["peft/merged_layers"] == 4  # 2 layers x query, value
    # the merged model loads without PEFT (pyfunc, no hub) and the evaluate entry point scores it
    uri = f"models:/{names['xnli-pawsx']}@target"
    mlflow.set_tracking_uri(mlflow_server)
    predictions = mlflow.pyfunc.load_model(uri).predict(["The cat sat on the mat."])
    assert len(predictions) == 1
    capsys.readouterr()
    assert cli.main(["evaluate", str(config), "--model", uri]) == 0
    assert "pawsx" in capsys.readouterr().out
