"""Build models and tokenizers: any `transformers` encoder through the Auto classes.

Moving from one task to the next keeps the encoder (the base model, `model.base_model_prefix`) and
gives the new task a freshly initialised head, unless the caller keeps the head (same label space).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from intertask import models
from intertask.errors import ModelError, Problem

HEADS = {"sequence_classification": AutoModelForSequenceClassification}


def quiet_transformers() -> None:
    """transformers 5 prints a load report for every missing head weight; that is expected here."""
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def resolve_source(name_or_path: str) -> str:
    """An offline model name becomes its prepared folder (built on first use); others pass through."""
    return models.resolve(name_or_path)


def _model_error(source: str, err: Exception, field: str = "model.name_or_path") -> ModelError:
    return ModelError(
        [
            Problem(
                "<model>",
                field,
                f"cannot load model: {type(err).__name__}: {str(err).splitlines()[0][:200]}",
                source,
                "a folder saved with save_pretrained, an offline model name, or a hub id reachable from here",
            )
        ]
    )


def load_config(source: str, **overrides):
    try:
        return AutoConfig.from_pretrained(source, **overrides)
    except (OSError, ValueError) as err:
        raise _model_error(source, err) from None


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise _model_error(source, err) from None
    if tokenizer.pad_token_id is None:
        raise ModelError(
            [Problem("<model>", "tokenizer", "tokenizer has no padding token", source, "a pad token")]
        )
    return tokenizer


def build_model(
    source: str,
    head: str,
    head_kwargs: dict,
    *,
    seed: int,
    keep_head: bool = False,
    freeze_word_embeddings: bool = False,
) -> PreTrainedModel:
    """A model for a task: the encoder from `source` plus a head seeded with `seed`.

    keep_head=True loads the head of `source` as well (the caller has checked the label space is equal).
    """
    quiet_transformers()
    auto = HEADS[head]
    config = load_config(source, **head_kwargs)
    try:
        if keep_head:
            model = auto.from_pretrained(source, config=config)
        else:
            torch.manual_seed(seed)
            model = auto.from_config(config)
            encoder = AutoModel.from_pretrained(source, config=config)
            _copy_encoder(encoder, model)
    except (OSError, ValueError, RuntimeError) as err:
        raise _model_error(source, err) from None
    if freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    return model


def _copy_encoder(encoder: PreTrainedModel, model: PreTrainedModel) -> None:
    target = getattr(model, model.base_model_prefix)
    missing, unexpected = target.load_state_dict(encoder.state_dict(), strict=False)
    # a checkpoint without a pooler (e5-small) leaves the pooler as newly initialised by AutoModel
    if unexpected:
        raise RuntimeError(f"encoder weights do not fit the model: unexpected {unexpected[:5]}")
    if [k for k in missing if "pooler" not in k and not k.endswith("position_ids")]:
        raise RuntimeError(f"encoder weights missing: {missing[:5]}")


def parameter_counts(model: PreTrainedModel) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"parameters": total, "trainable_parameters": trainable}


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
