"""The sections of an experiment and the experiment itself, each a frozen dataclass that checks its
own fields. Defaults live here and nowhere else; one comment per field."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from intertask.config.operations import ExecutorConfig, PredictConfig, ReportConfig, TrackingConfig
from intertask.config.schema import FieldChecks, to_dict
from intertask.config.tuning import TuningConfig

STAGES = ("intermediate", "target")
PROBE_POINTS = ("base", "intermediate", "target")
OVERRIDES = "<overrides>"  # the "file" named by problems in command-line overrides
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
BASE_MODEL = "base"  # evaluation.model: the configured pretrained model itself (retrieval needs no head)
REFERENCE_FORMS = "models:/name@alias, models:/name/version, models:/<model id>, runs:/<run id>/<model name> or a 32-hex run id"
Split = Literal["train", "dev", "test"]


TRAINING_BLOCKS = ("training", "intermediate.training", "target.training")
DEPRECATED_KEYS = frozenset(f"{block}.bf16" for block in TRAINING_BLOCKS)  # read as <block>.precision


class ConfigDeprecationWarning(FutureWarning):
    """A config key that is still read under its old name (shown to users: a FutureWarning)."""


def is_model_reference(value: str) -> bool:
    return value.startswith(("models:/", "runs:/")) or bool(_RUN_ID.match(value))


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    name_or_path: str = "e5-small"  # offline model name (`intertask model list`), local folder or hub id
    freeze_word_embeddings: bool = False  # keep the input embedding matrix fixed (96M of e5-small's 118M)
    sparse_word_embeddings: bool = False  # train it with sparse gradients: only a step's token rows move
    max_length: int = 128  # tokens per example (per window for QA) after truncation

    def __post_init__(self) -> None:
        c = FieldChecks()
        c.require(
            not (self.freeze_word_embeddings and self.sparse_word_embeddings),
            "sparse_word_embeddings",
            "conflicts with freeze_word_embeddings: true",
            True,
            "at most one of freeze_word_embeddings and sparse_word_embeddings",
        )
        c.require(8 <= self.max_length <= 4096, "max_length", "out of range", self.max_length, "8..4096")
        c.done()


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    epochs: int = 3  # passes over the training set
    batch_size: int = 16  # examples (rows) per forward pass; per optimizer step with accumulation 1
    # micro-batches summed into one optimizer step: the effective batch is batch_size x this
    gradient_accumulation_steps: int = 1
    learning_rate: float = 3e-5  # peak AdamW learning rate
    weight_decay: float = 0.01  # AdamW decoupled weight decay (not on biases and layer norms)
    warmup_ratio: float = 0.1  # share of steps with linear warm-up, then linear decay to 0
    max_grad_norm: float = 1.0  # gradient clipping (0 turns it off)
    # autocast precision of training and evaluation; auto: bf16 on GPUs and CPUs that have it natively,
    # fp16 + loss scaling on older GPUs, else fp32 (hardware.resolve_precision). `bf16: true/false` is a
    # deprecated spelling of precision: bf16 / fp32.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    fast_cpu_dropout: bool = True  # CPU training: dropout masks from 16 random bits (dropout.py; ~4x faster)
    group_by_length: bool = True  # batches of similar length (less padding); batch order still shuffled
    length_group_window: int = 8  # group_by_length sorts within windows of this many batches
    eval_batch_tokens: int = 2048  # evaluation batches: length-sorted, padded size up to this many tokens
    log_every_steps: int = 10  # training loss is logged every N optimizer steps
    threads: int | None = None  # torch CPU threads of training and evaluation (None: the usable cores)
    checkpoints: bool = True  # resumable checkpoints; a stage restarted after a crash continues from the last
    checkpoint_every_steps: int = (
        200  # ... every N optimizer steps and after every epoch (0: epoch ends only)
    )

    def __post_init__(self) -> None:
        c = FieldChecks()
        c.require(self.epochs >= 1, "epochs", "must be positive", self.epochs, ">= 1")
        c.require(self.batch_size >= 1, "batch_size", "must be positive", self.batch_size, ">= 1")
        c.require(
            self.gradient_accumulation_steps >= 1,
            "gradient_accumulation_steps",
            "must be positive",
            self.gradient_accumulation_steps,
            ">= 1 (1: no accumulation)",
        )
        c.require(
            0 < self.learning_rate < 1, "learning_rate", "out of range", self.learning_rate, "0 < lr < 1"
        )
        c.require(self.weight_decay >= 0, "weight_decay", "must not be negative", self.weight_decay, ">= 0")
        c.require(0 <= self.warmup_ratio < 1, "warmup_ratio", "out of range", self.warmup_ratio, "0 <= r < 1")
        c.require(
            self.max_grad_norm >= 0, "max_grad_norm", "must not be negative", self.max_grad_norm, ">= 0"
        )
        c.require(
            self.length_group_window >= 1,
            "length_group_window",
            "must be positive",
            self.length_group_window,
            ">= 1 (batches per sorting window)",
        )
        c.require(
            self.eval_batch_tokens >= 64, "eval_batch_tokens", "too small", self.eval_batch_tokens, ">= 64"
        )
        c.require(
            self.log_every_steps >= 1, "log_every_steps", "must be positive", self.log_every_steps, ">= 1"
        )
        c.require(
            self.threads is None or self.threads >= 1, "threads", "must be positive", self.threads, ">= 1"
        )
        c.require(
            self.checkpoint_every_steps >= 0,
            "checkpoint_every_steps",
            "must not be negative",
            self.checkpoint_every_steps,
            ">= 0",
        )
        c.done()


@dataclass(frozen=True, kw_only=True)
class SizesConfig:
    train: int | None = None  # at most this many training examples (seeded subset); None = all
    dev: int | None = None  # at most this many dev examples
    test: int | None = None  # at most this many test examples

    def __post_init__(self) -> None:
        c = FieldChecks()
        for name in ("train", "dev", "test"):
            value = getattr(self, name)
            c.require(value is None or value >= 1, name, "must be positive", value, ">= 1 or null")
        c.done()


@dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    strategy: Literal["proportional", "uniform", "temperature"] = "proportional"  # how the next task is drawn
    temperature: float = 2.0  # temperature sampling: p_i ~ n_i^(1/T) (T=1 proportional, large T ~ uniform)
    examples_cap: int | None = None  # n_i = min(n_i, cap) before proportional / temperature weights

    def __post_init__(self) -> None:
        c = FieldChecks()
        c.require(self.temperature > 0, "temperature", "must be positive", self.temperature, "> 0")
        c.require(
            self.examples_cap is None or self.examples_cap >= 1,
            "examples_cap",
            "must be positive",
            self.examples_cap,
            ">= 1 or null",
        )
        c.done()


@dataclass(frozen=True, kw_only=True)
class StageConfig:
    task: str | None = None  # the task (built-in, or declared in data.task_files)
    tasks: tuple[str, ...] = ()  # intermediate only: several tasks at once, shared encoder, a head each
    language: str = "en"  # training language (of every task)
    max_examples: SizesConfig = field(default_factory=SizesConfig)  # quick runs: cap each split of each task
    selection_metric: str | None = None  # dev metric that picks the best epoch (default: the task's first)
    selection_task: str | None = None  # multi-task: select on this task (default: mean over all tasks)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # multi-task: which task's batch next
    training: TrainingConfig = field(default_factory=TrainingConfig)  # merged over the top-level training
    init: str | None = None  # target only: start from a model reference (see REFERENCE_FORMS)
    keep_head: bool = False  # target only: keep the previous head when type and labels are equal

    def __post_init__(self) -> None:
        c = FieldChecks()
        c.require(
            (self.task is None) != (not self.tasks),
            "task",
            "give exactly one of `task` and `tasks`",
            {"task": self.task, "tasks": list(self.tasks)},
            "task: name, or tasks: [names]",
        )
        c.require(
            len(set(self.tasks)) == len(self.tasks),
            "tasks",
            "a task is listed twice",
            list(self.tasks),
            "distinct tasks",
        )
        c.require(
            self.selection_task is None or self.selection_task in self.task_names,
            "selection_task",
            "not one of the stage's tasks",
            self.selection_task,
            f"one of {list(self.task_names)}",
        )
        c.require(
            self.init is None or is_model_reference(self.init),
            "init",
            "not a model reference",
            self.init,
            REFERENCE_FORMS,
        )
        c.done()

    @property
    def task_names(self) -> tuple[str, ...]:
        return (self.task,) if self.task else self.tasks


@dataclass(frozen=True, kw_only=True)
class EvalTaskConfig:
    task: str  # a task to evaluate zero-shot
    languages: tuple[str, ...] = ()  # default: every language of the task
    split: Split | None = None  # default: evaluation.split
    max_examples: int | None = None  # per language (default: evaluation.max_examples)


@dataclass(frozen=True, kw_only=True)
class RetrievalConfig:
    layer: int = (
        -1
    )  # hidden layer whose mean-pooled states are the sentence embedding (-1 last, 0 embeddings)
    prefix: str = ""  # text put before every sentence (e5 models expect "query: ")
    max_length: int = 128  # tokens per sentence


@dataclass(frozen=True, kw_only=True)
class EvaluationConfig:
    task: str | None = None  # one task to evaluate (default: the target task, else the intermediate tasks)
    languages: tuple[str, ...] = ()  # its languages (default: every language of the task)
    tasks: tuple[EvalTaskConfig, ...] = ()  # several tasks instead of `task`, each with its languages
    split: Split = "test"  # which split of each language
    max_examples: int | None = None  # per language, seeded subset; None = all
    model: str | None = None  # the `evaluate` entry point: the model reference to evaluate
    save_predictions: bool = True  # log per-example predictions as an artifact
    # tasks whose evaluation split is cut out of a single shipped set as a trained task's is, even
    # where no stage here trains them (otherwise a split the task ships, e.g. a user's only `dev:`
    # file, is evaluated whole); a grid's cells get every task the study trains
    cut_tasks: tuple[str, ...] = ()
    retrieval: RetrievalConfig = field(
        default_factory=RetrievalConfig
    )  # sentence embeddings (retrieval tasks)

    def __post_init__(self) -> None:
        c = FieldChecks()
        c.require(
            self.max_examples is None or self.max_examples >= 1,
            "max_examples",
            "must be positive",
            self.max_examples,
            ">= 1 or null",
        )
        c.require(
            self.model is None or self.model == BASE_MODEL or is_model_reference(self.model),
            "model",
            "not a model reference",
            self.model,
            f"{REFERENCE_FORMS}, or {BASE_MODEL!r} (the untrained model)",
        )
        c.require(
            not (self.tasks and (self.task or self.languages)),
            "tasks",
            "give `tasks` or `task`/`languages`",
            [t.task for t in self.tasks],
            "one of the two forms",
        )
        c.done()


@dataclass(frozen=True, kw_only=True)
class ProbeConfig:
    task: str  # a retrieval task (tatoeba, bucc2018) run on the encoder without training
    languages: tuple[str, ...] = ()  # default: every language of the task
    split: Split = "test"
    max_examples: int | None = None  # sentences per language
    after: tuple[Literal["base", "intermediate", "target"], ...] = PROBE_POINTS  # when to probe


@dataclass(frozen=True, kw_only=True)
class SplitFractions:
    train: float = 0.6  # share of a single-set dataset used for training
    dev: float = 0.1  # ... for checkpoint selection
    test: float = 0.3  # ... held out for evaluation (train+dev : test = 70 : 30, as the seed papers)

    def __post_init__(self) -> None:
        c = FieldChecks()
        for name in ("train", "dev", "test"):
            value = getattr(self, name)
            c.require(0 < value < 1, name, "out of range", value, "0 < fraction < 1")
        total = self.train + self.dev + self.test
        c.require(
            abs(total - 1) < 1e-6,
            "train",
            "fractions do not sum to 1",
            round(total, 6),
            "train + dev + test = 1",
        )
        c.done()

    def as_dict(self) -> dict[str, float]:
        return {"train": self.train, "dev": self.dev, "test": self.test}


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    root: str | None = None  # data root (default: $INTERTASK_DATA, else ../shared/data)
    source: Literal["local", "hub"] = "local"  # task files under root, or datasets.load_dataset (internet)
    hub_tasks: tuple[str, ...] = ()  # these tasks come from the hub even when source is local
    split_fractions: SplitFractions = field(default_factory=SplitFractions)  # for tasks shipping one set
    # pool every set a task ships (train, dev, test) and cut the pool by split_fractions, so that every
    # task gets the same train+dev : test proportion (Mohapatra & Mohapatra's 70/30 for all)
    resplit: bool = False
    split_seed: int | None = None  # seed of derived splits and subsets (default: the experiment seed)
    task_files: tuple[str, ...] = ()  # your own task declarations (YAML), relative to the config file
    cache_tokenization: bool = True  # keep tokenized sets in the cache folder, keyed by content


NONE = "none"  # grid.intermediate: the baseline arm (target trained from the base model)


@dataclass(frozen=True, kw_only=True)
class GridConfig:
    models: tuple[str, ...] = ()  # base models (default: model.name_or_path)
    intermediate: tuple[str | tuple[str, ...], ...] = ()  # tasks, [task, task] mixes, and "none" (baseline)
    target: tuple[str, ...] = ()  # target tasks (default: target.task)
    seeds: tuple[int, ...] = ()  # seeds (default: seed); data splits stay those of the experiment seed
    model_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # report: group -> models
    # [intermediate, target] pairs of the cross product left out (the intermediate as in `intermediate`,
    # a mix joined by "+"), or [model, intermediate, target] triples, where "*" stands for any value
    # (e.g. [all-minilm-l6-v2, "*", conll2003]); `predict.train_top_k` adds the pairs it skips
    exclude: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        c = FieldChecks()
        for pair in self.exclude:
            c.require(
                len(pair) in (2, 3),
                "exclude",
                "not an [intermediate, target] pair or a [model, intermediate, target] triple",
                list(pair),
                "two or three names",
            )
        for name in ("models", "intermediate", "target", "seeds"):
            values = [v if isinstance(v, str | int) else tuple(v) for v in getattr(self, name)]
            c.require(
                len(set(values)) == len(values),
                name,
                "a value is listed twice",
                list(values),
                "distinct values",
            )
        c.done()


@dataclass(frozen=True, kw_only=True)
class PeftConfig:
    """Parameter-efficient training of the encoder (see adapters.py); heads are always fully trained."""

    method: Literal["lora", "ia3"] = "lora"
    rank: int = 8  # lora: rank r of the update B @ A
    alpha: int = 16  # lora: scaling alpha / r
    dropout: float = 0.1  # lora: dropout on the adapter's input
    target_modules: tuple[str, ...] | None = None  # nn.Linear module names (default: per architecture)
    feedforward_modules: tuple[str, ...] | None = (
        None  # ia3: which targets scale inputs (default: per architecture)
    )
    # merge: a stage starting from an adapter-trained model trains a new adapter on its merged weights;
    # stack: the start model's adapter goes back in, frozen, under the new one (adapters.py)
    between_stages: Literal["merge", "stack"] = "merge"

    def __post_init__(self) -> None:
        c = FieldChecks()
        c.require(self.rank >= 1, "rank", "must be positive", self.rank, ">= 1")
        c.require(self.alpha >= 1, "alpha", "must be positive", self.alpha, ">= 1")
        c.require(0 <= self.dropout < 1, "dropout", "out of range", self.dropout, "0 <= p < 1")
        c.require(
            self.target_modules is None or bool(self.target_modules),
            "target_modules",
            "empty",
            [],
            "null (architecture default) or module names",
        )
        c.done()


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    name: str  # experiment name: MLflow experiment and prefix of registered model names
    seed: int = 42  # seeds weights of new heads, data order, dropout and derived splits
    model: ModelConfig = field(default_factory=ModelConfig)
    peft: PeftConfig | None = None  # adapters (LoRA, IA3) instead of training the whole encoder
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)  # defaults for every stage
    intermediate: StageConfig | None = None  # the intermediate task(s) (null: no transfer arm)
    target: StageConfig | None = None  # the target task (null: evaluate the intermediate model zero-shot)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    probes: tuple[ProbeConfig, ...] = ()  # retrieval probes of the encoder before and after each stage
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    grid: GridConfig | None = None  # lists of models x intermediate choices x targets x seeds
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)  # in-process, or Ray
    report: ReportConfig = field(default_factory=ReportConfig)  # the transfer report after `main`
    predict: PredictConfig = field(default_factory=PredictConfig)  # transferability estimates (`predict`)
    tuning: TuningConfig | None = None  # the `tune` entry point: an Optuna study over one stage
    # task -> training fields for any stage that trains it, merged over that stage's training (e.g.
    # XTREME's xnli: {epochs: 2}, udpos: {epochs: 10}); part of the stage, so of its content key
    training_per_task: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        c = FieldChecks()
        c.require(
            bool(_NAME.match(self.name)),
            "name",
            "not a usable name",
            self.name,
            "letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
        c.done()

    @property
    def split_seed(self) -> int:
        return self.seed if self.data.split_seed is None else self.data.split_seed

    def origin(self, task: str) -> str:
        """Where a task's data comes from: "hub" or "local"."""
        return "hub" if self.data.source == "hub" or task in self.data.hub_tasks else "local"

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)
