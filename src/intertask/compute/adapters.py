"""Parameter-efficient training with PEFT: LoRA or IA3 adapters injected into the shared encoder.

The adapters go into the encoder object every task head shares (`peft.inject_adapter_in_model`), so
multi-task stages, heads and the training loop are unchanged; every encoder weight that is not an
adapter weight is frozen (heads stay trainable). When a stage ends, its adapter weights are saved on
their own (`adapter/`, with the resolved PEFT config and the base model) and then merged into the
encoder, so the saved and registered model is a plain `transformers` model that loads from
`models:/...` without PEFT or hub access. A stage starting from such a model either trains a fresh
adapter on the merged weights (`between_stages: merge`), or stacks (`between_stages: stack`): the
start model's adapted layers get their base weights back, its adapter goes back in as a second,
frozen adapter, and the fresh adapter trains on top of it, both active; at the end both are merged
and the stacked adapter is saved beside the new one (`adapter/stacked/`), so base + stacked adapter +
new adapter is the saved model. For LoRA the two differ only by LoRA dropout on the frozen adapter's
input; stacking keeps the adapters apart, e.g. to swap the intermediate adapter later.

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
import warnings
from pathlib import Path

import torch
from peft import (
    IA3Config,
    LoraConfig,
    get_peft_model_state_dict,
    inject_adapter_in_model,
    set_peft_model_state_dict,
)
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file, save_file

from intertask.config import PeftConfig
from intertask.errors import ModelError, Problem

ADAPTER_DIR = "adapter"
STACKED_DIR = "stacked"  # inside ADAPTER_DIR: the frozen adapter a stacked stage trained on top of
TRAINED = "default"  # PEFT's adapter name for the one a stage trains
STACKED = "stacked"  # the adapter name of the frozen one under it (no module of a supported model has it)
CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
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


def attach(
    encoder: torch.nn.Module,
    settings: PeftConfig,
    model_type: str,
    stacked: Path | None = None,
    stacked_on: str = "",
) -> dict:
    """Inject a fresh adapter into the encoder and freeze the rest of it; returns what to log.

    `stacked`: an adapter folder saved by the stage that trained this encoder (see `start_adapter`); it
    goes in first, frozen, under base weights restored from its base model, and stays active under the
    fresh adapter (`stacked_on` names where it came from, for the log)."""
    config = peft_config(settings, model_type)
    if stacked is not None:
        _stack(encoder, stacked)
    _inject(encoder, config)
    layers = [m for m in encoder.modules() if isinstance(m, BaseTunerLayer)]
    if stacked is not None:
        for layer in layers:
            layer.set_adapter([n for n in (STACKED, TRAINED) if n in _adapter_names(layer)])
    for name, param in encoder.named_parameters():
        param.requires_grad_(_is_adapter(name) and STACKED not in name.split("."))
    return {
        "peft.method": settings.method,
        "peft.target_modules": ",".join(sorted(config.target_modules)),
        "peft.adapted_layers": len(layers),
        "peft.between_stages": settings.between_stages,
        **({"peft.rank": settings.rank, "peft.alpha": settings.alpha} if settings.method == "lora" else {}),
        **({"peft.stacked_on": stacked_on or str(stacked)} if stacked is not None else {}),
    }


def _inject(encoder: torch.nn.Module, config, name: str = TRAINED) -> None:
    try:
        with warnings.catch_warnings():  # a second adapter (stacking) is meant here
            warnings.filterwarnings("ignore", "Already found a `peft_config` attribute")
            inject_adapter_in_model(config, encoder, adapter_name=name)
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


def _adapter_names(layer: BaseTunerLayer) -> set[str]:
    return set(getattr(layer, layer.adapter_layer_names[0]).keys())


def _saved_config(folder: Path):
    """The PEFT config an adapter folder was saved with (LoRA or IA3)."""
    settings = json.loads((folder / CONFIG_FILE).read_text())
    kind = {"LORA": LoraConfig, "IA3": IA3Config}.get(settings.get("peft_type"))
    if kind is None:
        raise _stack_error(folder / CONFIG_FILE, f"peft_type {settings.get('peft_type')!r}", "LORA or IA3")
    fields = kind.__dataclass_fields__
    return kind(**{k: v for k, v in settings.items() if k in fields and k != "peft_type"})


def _stack_error(
    where: Path, found, expected: str, problem: str = "cannot stack on this adapter"
) -> ModelError:
    return ModelError([Problem(str(where), "peft.between_stages", problem, found, expected)])


def start_adapter(model_dir: Path) -> Path | None:
    """The adapter folder a model saved by a PEFT stage carries (None: trained without adapters)."""
    folder = model_dir / ADAPTER_DIR
    return folder if (folder / CONFIG_FILE).is_file() else None


def _stack(encoder: torch.nn.Module, folder: Path) -> None:
    """Put the adapter saved in `folder` back into the encoder it was merged into, frozen: the adapted
    layers get their weights from the adapter's base model, every other weight must already equal it."""
    from transformers import AutoModel

    from intertask.compute.modeling import resolve_source

    if (folder / STACKED_DIR).exists():
        raise _stack_error(
            folder / STACKED_DIR,
            "an adapter stacked on another one",
            "a start model trained with one adapter (use between_stages: merge to go on from this one)",
        )
    config = _saved_config(folder)
    base = config.base_model_name_or_path
    try:
        reference, info = AutoModel.from_pretrained(resolve_source(base), output_loading_info=True)
    except (OSError, ValueError) as err:
        raise _stack_error(
            folder / CONFIG_FILE,
            base,
            "the base model the adapter was trained on (a model name or folder)",
            f"base_model_name_or_path does not load: {str(err).splitlines()[0][:160]}",
        ) from None
    _inject(encoder, config, STACKED)
    loaded = set_peft_model_state_dict(encoder, load_file(folder / WEIGHTS_FILE), adapter_name=STACKED)
    missing = [k for k in loaded.missing_keys if _is_adapter(k) and STACKED in k.split(".")]
    if loaded.unexpected_keys or missing:
        raise _stack_error(
            folder / WEIGHTS_FILE,
            (loaded.unexpected_keys or missing)[:3],
            f"the weights of every layer {CONFIG_FILE} targets, and only those",
            "the adapter weights do not fit this encoder",
        )
    base_state = reference.state_dict()
    adapted = set()
    with torch.no_grad():
        for name, module in encoder.named_modules():
            if isinstance(module, BaseTunerLayer):
                for key, param in module.get_base_layer().named_parameters():
                    param.copy_(base_state[f"{name}.{key}"])
                    adapted.add(f"{name}.{key}")
        checked = set(base_state) - adapted - set(info["missing_keys"])
        own = {_plain(k): v for k, v in encoder.state_dict().items() if not _is_adapter(k)}
        differ = [k for k in sorted(checked) if k in own and not torch.equal(own[k], base_state[k])]
    if differ:
        raise _stack_error(
            folder / CONFIG_FILE,
            base,
            "a start model whose stage trained the adapter only (use between_stages: merge)",
            f"{len(differ)} weights outside the adapter differ from its base model, e.g. {differ[0]}",
        )


def _plain(key: str) -> str:
    """A wrapped layer's parameter name as the unwrapped model has it."""
    return key.replace(".base_layer.", ".")


def _is_adapter(name: str) -> bool:
    return any(part.startswith(("lora_", "ia3_")) for part in name.split("."))


def save_and_merge(
    encoder: torch.nn.Module,
    settings: PeftConfig,
    model_type: str,
    base: str,
    folder: Path,
    stacked: Path | None = None,
) -> int:
    """Save the trained adapter's weights and config under folder/adapter/ (`base`: the model it was
    trained on; with a `stacked` adapter under it, that adapter's base, and a copy of it in
    adapter/stacked/), then merge every active adapter into the encoder's weights and remove the
    adapter layers. Returns the number of merged layers."""
    target = folder / ADAPTER_DIR
    target.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(encoder, adapter_name=TRAINED)
    save_file({k: v.detach().contiguous() for k, v in state.items()}, target / WEIGHTS_FILE)
    config = peft_config(settings, model_type).to_dict()
    config["base_model_name_or_path"] = (
        base if stacked is None else _saved_config(stacked).base_model_name_or_path
    )
    if stacked is not None:
        (target / STACKED_DIR).mkdir(exist_ok=True)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            (target / STACKED_DIR / name).write_bytes((stacked / name).read_bytes())
    (target / CONFIG_FILE).write_text(json.dumps(config, indent=1, default=list))
    return merge(encoder)


def merge(encoder: torch.nn.Module) -> int:
    """Fold every adapter layer (all its active adapters) into its base layer and put the plain layer
    back in its place."""
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
