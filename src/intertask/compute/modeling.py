"""Build models and tokenizers: any `transformers` encoder through the Auto classes.

A stage trains one model per task that all share ONE encoder (`model.base_model_prefix`) and each have
their own head. Moving from one stage to the next keeps the encoder and gives each task a freshly
initialised head, unless the caller keeps a head of the same type and labels.

A saved model folder is a `save_pretrained` folder of the first task's model (encoder + head), plus,
when a stage trained several tasks, `heads/<task>/` (config + head weights only) and `heads.json`, the
index of every head in the folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from intertask import pretrained
from intertask.compute import weights
from intertask.compute.quiet import quiet_transformers
from intertask.errors import ModelError, Problem
from intertask.tasks.base import HeadFit, best_fit, head_fit

HEADS = {
    "sequence_classification": AutoModelForSequenceClassification,
    "token_classification": AutoModelForTokenClassification,
    "question_answering": AutoModelForQuestionAnswering,
    "multiple_choice": AutoModelForMultipleChoice,
}
HEAD_INDEX = "heads.json"
_ARCHITECTURE_SUFFIX = {
    "ForSequenceClassification": "sequence_classification",
    "ForTokenClassification": "token_classification",
    "ForQuestionAnswering": "question_answering",
    "ForMultipleChoice": "multiple_choice",
}


def resolve_source(name_or_path: str) -> str:
    """An offline model name becomes its prepared folder (built on first use); others pass through."""
    return pretrained.resolve(name_or_path)


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


def load_tokenizer_quickly(source: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a saved folder, built from its tokenizer.json by the `tokenizers` library and
    handed to its class (tokenizer_config.json's `tokenizer_class`) as a ready object: transformers 5's
    from_pretrained parses tokenizer.json in Python and converts it (2.7 s for XLM-R's 17 MB file on 2
    cores, against 1.3 s this way). For serving, where load time counts; the same settings, so the same
    encodings (tests/test_serving.py compares them on real text for every offline model). A folder
    this does not fit (no tokenizer.json, an unknown class, a class that does not take the object) is
    loaded the usual way -- the same tokenizer, only slower."""
    import transformers
    from tokenizers import Tokenizer

    folder = Path(source)
    config_file, tokenizer_file = folder / "tokenizer_config.json", folder / "tokenizer.json"
    if config_file.is_file() and tokenizer_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        cls = getattr(transformers, str(config.get("tokenizer_class") or ""), None)
        if isinstance(cls, type) and issubclass(cls, PreTrainedTokenizerBase):
            kwargs = {k: v for k, v in config.items() if k not in ("tokenizer_class", "auto_map", "backend")}
            try:
                tokenizer = cls(tokenizer_object=Tokenizer.from_file(str(tokenizer_file)), **kwargs)
            except (TypeError, ValueError, AttributeError):  # this class builds itself otherwise
                tokenizer = None
            if tokenizer is not None and tokenizer.pad_token_id is not None:
                tokenizer.name_or_path = source
                return tokenizer
    return load_tokenizer(source)


# --- what a saved folder holds --------------------------------------------------------------------


@dataclass(frozen=True)
class HeadInfo:
    task: str  # the task the head was trained on
    head: str  # key of HEADS
    signature: list  # TaskType.head_signature(): heads with equal signatures are interchangeable
    folder: str  # "" for the main model, else heads/<task>


def head_index(model_dir: Path) -> list[HeadInfo]:
    """The heads a folder holds; a plain save_pretrained folder holds its architecture's one head."""
    index = model_dir / HEAD_INDEX
    if index.is_file():
        return [HeadInfo(**h) for h in json.loads(index.read_text())]
    config = load_config(str(model_dir))
    architecture = (config.architectures or [""])[0]
    head = next((h for suffix, h in _ARCHITECTURE_SUFFIX.items() if architecture.endswith(suffix)), None)
    if head is None:
        return []
    labels = (
        [config.id2label[i] for i in sorted(config.id2label)]
        if head == "sequence_classification" or head == "token_classification"
        else []
    )
    signature = [head, labels] if labels else [head]
    return [HeadInfo("", head, signature, "")]


def find_head(model_dir: Path, task: str, signature: tuple) -> HeadInfo | None:
    """The head that scores `task` (see match_head), or None."""
    found = match_head(model_dir, task, signature)
    return found[0] if found else None


def match_head(model_dir: Path, task: str, signature: tuple) -> tuple[HeadInfo, HeadFit] | None:
    """The head trained on `task`, else the first with the same signature (type and labels in the same
    order), else the first with the same label names in another order, else the first whose labels
    the task's are a subset of (its outputs are then put in the task's order, or restricted to the
    task's labels: HeadFit.order); None when no head fits."""
    heads = [(h, head_fit(h.signature, signature)) for h in head_index(model_dir)]
    same_task = [(h, f) for h, f in heads if h.task == task and f.fits and not f.reordered]
    return (same_task or [None])[0] or best_fit(heads)


def head_problems(model_dir: Path, signature: tuple) -> list[str]:
    """Why each head of a folder does not fit a task (for the error that refuses it)."""
    return [
        f"{h.task or 'its head'}: {head_fit(h.signature, signature).problem}" for h in head_index(model_dir)
    ]


# --- building ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadSpec:
    task: str
    head: str  # key of HEADS
    kwargs: dict  # config overrides: labels, problem type
    signature: tuple
    keep: bool = False  # load this head's weights from the source (its signature must match one there)


def build_models(
    source: str,
    heads: list[HeadSpec],
    *,
    seed: int,
    freeze_word_embeddings: bool = False,
    sparse_word_embeddings: bool = False,
) -> dict[str, PreTrainedModel]:
    """One model per task, all sharing the encoder loaded from `source`; new heads seeded with `seed`.

    `sparse_word_embeddings`: the input embedding matrix returns sparse gradients (rows of the batch's
    tokens only), which training updates with SparseAdam instead of a dense AdamW step over all rows.
    """
    quiet_transformers()
    try:
        # weights the checkpoint lacks are drawn from the global RNG (e5-small ships no pooler, which
        # sequence-classification heads read): seed it, or the first model of a process differs per run
        torch.manual_seed(seed)
        encoder = weights.load(AutoModel, source)  # a model saved as its changed weights too
        out = {}
        for spec in heads:
            torch.manual_seed(seed)
            model = HEADS[spec.head].from_config(load_config(source, **spec.kwargs))
            setattr(model, model.base_model_prefix, encoder)
            if spec.keep:
                _load_head_weights(model, Path(source), spec)
            out[spec.task] = model
    except (OSError, ValueError, RuntimeError) as err:
        raise _model_error(source, err) from None
    if freeze_word_embeddings:
        encoder.get_input_embeddings().weight.requires_grad_(False)
    if sparse_word_embeddings:
        embedding = encoder.get_input_embeddings()
        if not isinstance(embedding, torch.nn.Embedding):
            raise ModelError(
                [
                    Problem(
                        "<model>",
                        "sparse_word_embeddings",
                        f"the input embeddings are a {type(embedding).__name__}",
                        source,
                        "a torch.nn.Embedding",
                    )
                ]
            )
        embedding.sparse = True
    return out


def head_state(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    prefix = model.base_model_prefix + "."
    return {k: v for k, v in model.state_dict().items() if not k.startswith(prefix)}


def _load_head_weights(model: PreTrainedModel, folder: Path, spec: HeadSpec) -> None:
    info = find_head(folder, spec.task, spec.signature)
    if info is None:
        raise ModelError(
            [
                Problem(
                    "<model>",
                    "keep_head",
                    "no head of this type and label space to keep",
                    str(folder),
                    f"a head with signature {spec.signature}",
                )
            ]
        )
    if info.folder:
        state = load_file(folder / info.folder / "head.safetensors")
    else:
        state = head_state(weights.load(HEADS[info.head], folder))
    missing = set(head_state(model)) - set(state)
    if missing:
        raise ModelError(
            [
                Problem(
                    "<model>",
                    "keep_head",
                    "saved head weights do not fit",
                    sorted(missing)[:3],
                    "the same head architecture",
                )
            ]
        )
    model.load_state_dict(state, strict=False)


def load_for_task(model_dir: Path, task: str, signature: tuple) -> PreTrainedModel | None:
    """The model (encoder + the fitting head) for a task from a saved folder, or None if no head fits."""
    quiet_transformers()
    found = match_head(model_dir, task, signature)
    if found is None:
        return None
    info, fit = found
    if not info.folder:
        model = weights.load(HEADS[info.head], model_dir)
    else:
        config = AutoConfig.from_pretrained(str(model_dir / info.folder))
        model = HEADS[info.head].from_config(config)
        setattr(model, model.base_model_prefix, weights.load(AutoModel, model_dir))
        model.load_state_dict(load_file(model_dir / info.folder / "head.safetensors"), strict=False)
    if fit.reordered:
        in_task_order(model, fit.order, signature[1])
    return model


def in_task_order(model: PreTrainedModel, order: tuple[int, ...], labels: tuple[str, ...]) -> None:
    """A head whose labels are the task's in another order answers in the task's order: its logits'
    last axis is permuted on every forward pass (label i of the task <- head output order[i])."""
    index = torch.tensor(order, dtype=torch.long)

    def reorder(_module, _inputs, output):
        output["logits"] = output["logits"].index_select(-1, index.to(output["logits"].device))
        return output

    model.register_forward_hook(reorder)
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {name: i for i, name in enumerate(labels)}


def load_encoder(model_dir: Path) -> PreTrainedModel:
    quiet_transformers()
    try:
        return weights.load(AutoModel, model_dir)
    except (OSError, ValueError) as err:
        raise _model_error(str(model_dir), err, "model") from None


# --- saving -----------------------------------------------------------------------------------------


def save(models_by_task: dict[str, PreTrainedModel], heads: list[HeadSpec], tokenizer, folder: Path) -> None:
    """The first task's model as a save_pretrained folder, the other heads under heads/, and the index."""
    first, *others = heads
    models_by_task[first.task].save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    index = [HeadInfo(first.task, first.head, list(first.signature), "")]
    for spec in others:
        target = folder / "heads" / spec.task
        target.mkdir(parents=True, exist_ok=True)
        model = models_by_task[spec.task]
        model.config.to_json_file(target / "config.json")
        save_file({k: v.contiguous() for k, v in head_state(model).items()}, target / "head.safetensors")
        index.append(HeadInfo(spec.task, spec.head, list(spec.signature), f"heads/{spec.task}"))
    (folder / HEAD_INDEX).write_text(json.dumps([h.__dict__ for h in index], indent=1))


def parameter_counts(models_by_task: dict[str, PreTrainedModel] | PreTrainedModel) -> dict[str, int]:
    modules = models_by_task.values() if isinstance(models_by_task, dict) else [models_by_task]
    params = {id(p): p for m in modules for p in m.parameters()}.values()
    return {
        "parameters": sum(p.numel() for p in params),
        "trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
    }


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
