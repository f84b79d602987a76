"""Parameter-efficient training with PEFT: LoRA or IA3 adapters injected into the shared encoder.

The adapters go into the encoder object every task head shares (`peft.inject_adapter_in_model`), so
multi-task stages, heads and the training loop are unchanged; every encoder weight that is not an
adapter weight is frozen (heads stay trainable). When a stage ends, its adapter weights are saved on
their own (`adapter/`, with the resolved PEFT config and the base model) and then merged into the
encoder, so the saved and registered model is a plain `transformers` model that loads from
`models:/...` without PEFT or hub access. A target stage starting from such a model trains a fresh
adapter on top of the merged intermediate one (`between_stages: merge`).

Default target modules by architecture (`config.model_type`):
- BERT, RoBERTa, XLM-R (e5), ELECTRA, CamemBERT: LoRA on the attention `query` and `value`
  projections; IA3 on `key`, `value` and `output.dense` (the last as feed-forward), PEFT's own defaults.
- XLNet: its attention projections q, k, v, o, r are raw 3-d `nn.Parameter`s used in einsums, not
  `nn.Linear` modules, so LoRA/IA3 cannot wrap them; the defaults target the feed-forward layers
  `layer_1` and `layer_2` instead.
- DistilBERT and DeBERTa-v2 use their own projection names (q_lin/v_lin, query_proj/value_proj).
Anything else needs `peft.target_modules`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import IA3Config, LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import save_file

from intertask.config import PeftConfig
from intertask.errors import ModelError, Problem

ADAPTER_DIR = "adapter"
_BERT_LIKE = ("bert", "roberta", "xlm-roberta", "electra", "camembert")
LORA_TARGETS = {
    **dict.fromkeys(_BERT_LIKE, ("query", "value")),
    "xlnet": ("layer_1", "layer_2"),
    "distilbert": ("q_lin", "v_lin"),
    "deberta-v2": ("query_proj", "value_proj"),
}
IA3_TARGETS = {  # (target modules, feed-forward modules among them)
    **dict.fromkeys(_BERT_LIKE, (("key", "value", "output.dense"), ("output.dense",))),
    "xlnet": (("layer_1", "layer_2"), ("layer_2",)),
    "distilbert": (("k_lin", "v_lin", "lin2"), ("lin2",)),
    "deberta-v2": (("key_proj", "value_proj", "output.dense"), ("output.dense",)),
}


def resolve_targets(settings: PeftConfig, model_type: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(target modules, feed-forward modules) for this architecture; the config's choice wins."""
    if settings.method == "lora":
        default, feedforward = LORA_TARGETS.get(model_type), ()
    else:
        default, feedforward = IA3_TARGETS.get(model_type, (None, ()))
    targets = settings.target_modules or default
    if not targets:
        known = ", ".join(sorted(LORA_TARGETS))
        raise ModelError(
            [
                Problem(
                    "<model>",
                    "peft.target_modules",
                    f"no default {settings.method} target modules for model type {model_type!r}",
                    model_type,
                    f"peft.target_modules (names of nn.Linear modules), or a model of type: {known}",
                )
            ]
        )
    if settings.feedforward_modules is not None:
        feedforward = settings.feedforward_modules
    elif settings.target_modules:
        feedforward = tuple(f for f in feedforward if f in targets)
    return tuple(targets), tuple(feedforward)


def peft_config(settings: PeftConfig, model_type: str):
    targets, feedforward = resolve_targets(settings, model_type)
    if settings.method == "lora":
        return LoraConfig(
            r=settings.rank,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=list(targets),
            bias="none",
        )
    return IA3Config(target_modules=list(targets), feedforward_modules=list(feedforward))


def attach(encoder: torch.nn.Module, settings: PeftConfig, model_type: str) -> dict:
    """Inject a fresh adapter into the encoder and freeze the rest of it; returns what to log."""
    config = peft_config(settings, model_type)
    try:
        inject_adapter_in_model(config, encoder)
    except ValueError as err:  # target modules not found in the model
        raise ModelError(
            [
                Problem(
                    "<model>",
                    "peft.target_modules",
                    f"cannot inject the adapter: {str(err).splitlines()[0][:200]}",
                    list(config.target_modules),
                    "names of nn.Linear modules of this encoder",
                )
            ]
        ) from None
    for name, param in encoder.named_parameters():
        param.requires_grad_(_is_adapter(name))
    layers = [m for m in encoder.modules() if isinstance(m, BaseTunerLayer)]
    return {
        "peft.method": settings.method,
        "peft.target_modules": ",".join(sorted(config.target_modules)),
        "peft.adapted_layers": len(layers),
        "peft.between_stages": settings.between_stages,
        **({"peft.rank": settings.rank, "peft.alpha": settings.alpha} if settings.method == "lora" else {}),
    }


def _is_adapter(name: str) -> bool:
    return any(part.startswith(("lora_", "ia3_")) for part in name.split("."))


def has_adapter(encoder: torch.nn.Module) -> bool:
    return any(isinstance(m, BaseTunerLayer) for m in encoder.modules())


def save_and_merge(
    encoder: torch.nn.Module, settings: PeftConfig, model_type: str, base: str, folder: Path
) -> int:
    """Save the adapter weights and config under folder/adapter/, then merge them into the encoder's
    weights and remove the adapter layers. Returns the number of merged layers."""
    target = folder / ADAPTER_DIR
    target.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(encoder)
    save_file({k: v.detach().contiguous() for k, v in state.items()}, target / "adapter_model.safetensors")
    config = peft_config(settings, model_type).to_dict()
    config["base_model_name_or_path"] = base
    (target / "adapter_config.json").write_text(json.dumps(config, indent=1, default=list))
    return merge(encoder)


def merge(encoder: torch.nn.Module) -> int:
    """Fold every adapter layer into its base layer and put the plain layer back in its place."""
    merged = 0
    for name, module in list(encoder.named_modules()):
        if not isinstance(module, BaseTunerLayer):
            continue
        module.merge()
        parent_name, _, child = name.rpartition(".")
        parent = encoder.get_submodule(parent_name) if parent_name else encoder
        setattr(parent, child, module.get_base_layer())
        merged += 1
    return merged
