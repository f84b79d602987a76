"""Experiment configuration: frozen dataclasses, YAML reading and `key=value` overrides.

An experiment is one YAML file in pipelines/. Its keys equal the field names below; defaults live here
and nowhere else. Each dataclass checks its own fields; the checks that need the task catalog, the
data files, the model registry or the grid live above those layers, in `intertask.validate`, whose
`load_experiment` reports every problem at once, before anything is trained, as
`<file>: <dotted.field>: <problem> (got ...; expected ...)`.

The top-level `training:` block holds the defaults of every stage; a stage's own `training:` block
overrides it field by field.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from intertask.errors import Problems
from intertask.registry import close_matches
from intertask.schema import FieldChecks, build, coerce_fields, construct, field_type, read_yaml, to_dict

STAGES = ("intermediate", "target")
PROBE_POINTS = ("base", "intermediate", "target")
OVERRIDES = "<overrides>"  # the "file" named by problems in command-line overrides
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
BASE_MODEL = "base"  # evaluation.model: the configured pretrained model itself (retrieval needs no head)
REFERENCE_FORMS = "models:/name@alias, models:/name/version, runs:/<run id>/model or a 32-hex run id"
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
    batch_size: int = 16  # examples (rows) per optimizer step
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
    split_seed: int | None = None  # seed of derived splits and subsets (default: the experiment seed)
    task_files: tuple[str, ...] = ()  # your own task declarations (YAML), relative to the config file
    cache_tokenization: bool = True  # keep tokenized sets in the cache folder, keyed by content


@dataclass(frozen=True, kw_only=True)
class TrackingConfig:
    uri: str | None = (
        None  # MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)
    )
    experiment: str | None = None  # MLflow experiment name (default: the config's name)
    register_models: bool = True  # register trained models (<name>.<model>.<tasks>) with a stage alias
    log_models: bool = True  # log models to MLflow (needed to register)
    http_retries: int = 3  # a tracking server's transient errors are retried this often (backoff 1, 2, 4 s)
    http_timeout_seconds: int = 20  # each request to a tracking server waits at most this long

    def __post_init__(self) -> None:
        c = FieldChecks()
        c.require(self.http_retries >= 0, "http_retries", "must not be negative", self.http_retries, ">= 0")
        c.require(
            self.http_timeout_seconds >= 1,
            "http_timeout_seconds",
            "must be positive",
            self.http_timeout_seconds,
            ">= 1",
        )
        c.require(
            self.log_models or not self.register_models,
            "register_models",
            "registering needs logged models",
            self.register_models,
            "false when log_models is false",
        )
        c.done()


NONE = "none"  # grid.intermediate: the baseline arm (target trained from the base model)


@dataclass(frozen=True, kw_only=True)
class GridConfig:
    models: tuple[str, ...] = ()  # base models (default: model.name_or_path)
    intermediate: tuple[str | tuple[str, ...], ...] = ()  # tasks, [task, task] mixes, and "none" (baseline)
    target: tuple[str, ...] = ()  # target tasks (default: target.task)
    seeds: tuple[int, ...] = ()  # seeds (default: seed); data splits stay those of the experiment seed
    model_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # report: group -> models

    def __post_init__(self) -> None:
        c = FieldChecks()
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
class ExecutorConfig:
    kind: Literal["in_process", "ray"] = "in_process"  # where stages run; ray: independent stages in parallel
    address: str | None = None  # ray: a cluster address (default: start a local Ray on demand)
    cpus: int | None = None  # ray: CPUs of a local Ray (default: all of this machine)
    cpus_per_stage: float = 1.0  # ray: CPUs a stage reserves
    gpus_per_stage: float = 0.0  # ray: GPUs a stage reserves

    def __post_init__(self) -> None:
        c = FieldChecks()
        c.require(self.cpus_per_stage > 0, "cpus_per_stage", "must be positive", self.cpus_per_stage, "> 0")
        c.require(
            self.gpus_per_stage >= 0, "gpus_per_stage", "must not be negative", self.gpus_per_stage, ">= 0"
        )
        c.require(self.cpus is None or self.cpus >= 1, "cpus", "must be positive", self.cpus, ">= 1 or null")
        c.done()


@dataclass(frozen=True, kw_only=True)
class ReportConfig:
    bootstrap: int = 1000  # resamples of the test examples per cell (paired: the same draw for both arms)
    confidence: float = 0.95  # two-sided level of each gain's interval
    fdr: float = 0.05  # Benjamini-Hochberg level: a gain is flagged when its q-value is at most this
    power: float = 0.8  # for the minimum detectable effect of each cell
    smallest_effect: float = 0.02  # a non-significant cell whose detectable effect is at most this reads as
    #   "no effect >= X"; above it, "too small to tell" (metric units: 0.02 = 2 points)
    divergence: bool = True  # domain divergence between every intermediate and target training set
    top_k_words: int = 1000  # vocabulary overlap: Jaccard of the top-k word types of each set
    divergence_examples: int = 500  # sentences per set for the embedding distance (base model)

    def __post_init__(self) -> None:
        c = FieldChecks()
        c.require(self.bootstrap >= 100, "bootstrap", "too few resamples", self.bootstrap, ">= 100")
        c.require(0.5 < self.confidence < 1, "confidence", "out of range", self.confidence, "0.5 < level < 1")
        c.require(0 < self.fdr < 1, "fdr", "out of range", self.fdr, "0 < q < 1")
        c.require(0.5 <= self.power < 1, "power", "out of range", self.power, "0.5 <= power < 1")
        c.require(self.smallest_effect > 0, "smallest_effect", "out of range", self.smallest_effect, "> 0")
        c.require(self.top_k_words >= 10, "top_k_words", "too small", self.top_k_words, ">= 10")
        c.require(
            self.divergence_examples >= 10,
            "divergence_examples",
            "too small",
            self.divergence_examples,
            ">= 10",
        )
        c.done()


TUNABLE = ("learning_rate", "batch_size", "epochs", "warmup_ratio", "weight_decay", "max_grad_norm")
PEFT_TUNABLE = ("peft.rank", "peft.alpha", "peft.dropout")  # with a `peft:` section


@dataclass(frozen=True, kw_only=True)
class ParamSpace:
    """One searched hyperparameter of the tuned stage's `training` (see TUNABLE)."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None  # float / int: inclusive bounds
    high: float | None = None
    log: bool = False  # float / int: sample on a log scale (low > 0)
    step: float | None = (
        None  # float / int: a grid of low, low + step, ... (grid sampler needs it for floats)
    )
    choices: tuple[int | float | str | bool, ...] = ()  # categorical

    def __post_init__(self) -> None:
        c = FieldChecks()
        if self.type == "categorical":
            c.require(
                bool(self.choices), "choices", "a categorical parameter needs choices", [], "[a, b, ...]"
            )
        else:
            c.require(
                self.low is not None and self.high is not None,
                "low",
                f"a {self.type} parameter needs bounds",
                {"low": self.low, "high": self.high},
                "low and high",
            )
            if self.low is not None and self.high is not None:
                c.require(
                    self.low <= self.high, "low", "low is above high", self.low, f"<= high ({self.high})"
                )
                c.require(
                    not self.log or self.low > 0,
                    "low",
                    "a log scale needs a positive lower bound",
                    self.low,
                    "> 0 with log: true",
                )
            c.require(self.step is None or self.step > 0, "step", "must be positive", self.step, "> 0")
            c.require(
                not (self.log and self.step is not None),
                "step",
                "a log-scale parameter takes no step",
                self.step,
                "step: null with log: true",
            )
            if self.type == "int":
                for name in ("low", "high", "step"):
                    value = getattr(self, name)
                    c.require(
                        value is None or float(value).is_integer(),
                        name,
                        "an int parameter needs whole numbers",
                        value,
                        "an integer",
                    )
        c.done()

    def contains(self, value) -> bool:
        if self.type == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return self.low <= value <= self.high and (self.type == "float" or float(value).is_integer())

    def grid_values(self) -> tuple | None:
        """The values a grid search walks through (None: a continuous range without a step)."""
        if self.type == "categorical":
            return self.choices
        if self.type == "int":
            return tuple(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            return None
        count = int(round((self.high - self.low) / self.step)) + 1
        return tuple(round(self.low + i * self.step, 12) for i in range(count))


@dataclass(frozen=True, kw_only=True)
class SamplerConfig:
    kind: Literal["tpe", "random", "grid"] = "tpe"
    seed: int | None = None  # default: the experiment seed
    startup_trials: int = 4  # tpe: random trials before the model takes over


@dataclass(frozen=True, kw_only=True)
class PrunerConfig:
    kind: Literal["median", "successive_halving", "hyperband", "none"] = "median"
    startup_trials: int = 2  # median: trials that finish before anything is pruned
    warmup_epochs: int = 0  # median: epochs of every trial that are never pruned
    min_epochs: int = 1  # successive halving / hyperband: the smallest budget, in epochs
    reduction_factor: int = 3  # successive halving / hyperband: keep 1 in this many at each rung

    def __post_init__(self) -> None:
        c = FieldChecks()
        for name in ("startup_trials", "warmup_epochs"):
            c.require(getattr(self, name) >= 0, name, "must not be negative", getattr(self, name), ">= 0")
        c.require(self.min_epochs >= 1, "min_epochs", "must be positive", self.min_epochs, ">= 1")
        c.require(self.reduction_factor >= 2, "reduction_factor", "too small", self.reduction_factor, ">= 2")
        c.done()


@dataclass(frozen=True, kw_only=True)
class TuningConfig:
    stage: Literal["intermediate", "target"] = "target"  # the stage whose training is tuned
    metric: str | None = (
        None  # objective: this dev metric of the stage's task (default: its selection metric)
    )
    direction: Literal["maximize", "minimize"] = "maximize"
    trials: int = 20  # trials of the study in all, over every worker process
    space: dict[str, ParamSpace] = field(default_factory=dict)  # name (one of TUNABLE) -> range
    enqueue: tuple[dict[str, int | float | str | bool], ...] = ()  # first trials' values (e.g. the paper's)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    storage: str | None = None  # Optuna RDB URL (default: sqlite optuna.db beside the MLflow store)
    study_name: str | None = None  # default: <name>-<stage>
    alias: str = "tuned"  # registry alias of the best trial's model
    heartbeat_seconds: int = 10  # a trial's liveness signal in the study storage
    grace_seconds: int = 60  # a RUNNING trial silent this long is failed and retried once

    def __post_init__(self) -> None:
        c = FieldChecks()
        c.require(self.trials >= 1, "trials", "must be positive", self.trials, ">= 1")
        c.require(bool(self.space), "space", "nothing to search", {}, "at least one parameter")
        for name in self.space:
            hint = close_matches(name, list(TUNABLE + PEFT_TUNABLE))
            c.require(
                name in TUNABLE + PEFT_TUNABLE,
                f"space.{name}",
                "unknown parameter name",
                name,
                (f"did you mean {hint[0]!r}?; " if hint else "")
                + "one of: "
                + ", ".join(TUNABLE + PEFT_TUNABLE),
            )
        c.require(
            len(self.enqueue) <= self.trials,
            "enqueue",
            "more than `trials`",
            len(self.enqueue),
            f"<= {self.trials}",
        )
        for i, values in enumerate(self.enqueue):
            for name, value in values.items():
                space = self.space.get(name)
                c.require(
                    space is not None,
                    f"enqueue[{i}].{name}",
                    "not a searched parameter",
                    name,
                    "one of: " + ", ".join(self.space),
                )
                if space is not None:
                    c.require(
                        space.contains(value),
                        f"enqueue[{i}].{name}",
                        "outside the search space",
                        value,
                        f"in {list(space.choices)}"
                        if space.type == "categorical"
                        else f"{space.low}..{space.high}",
                    )
        if self.sampler.kind == "grid":
            for name, space in self.space.items():
                c.require(
                    space.grid_values() is not None,
                    f"space.{name}",
                    "the grid sampler needs a finite set of values",
                    name,
                    "choices, an int range, or a float range with a step",
                )
            for i, values in enumerate(self.enqueue):
                for name, value in values.items():
                    grid = self.space[name].grid_values() if name in self.space else None
                    c.require(
                        grid is None or value in grid,
                        f"enqueue[{i}].{name}",
                        "not a point of the grid",
                        value,
                        f"one of {list(grid or ())[:10]}",
                    )
            if all(space.grid_values() is not None for space in self.space.values()):
                size = math.prod(len(space.grid_values()) for space in self.space.values())
                c.require(
                    self.trials <= size,
                    "trials",
                    f"more trials than the grid has points ({size})",
                    self.trials,
                    f"<= {size}",
                )
        c.require(
            self.heartbeat_seconds >= 1, "heartbeat_seconds", "too small", self.heartbeat_seconds, ">= 1"
        )
        c.require(
            self.grace_seconds > self.heartbeat_seconds,
            "grace_seconds",
            "must exceed heartbeat_seconds",
            self.grace_seconds,
            f"> {self.heartbeat_seconds}",
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
    tuning: TuningConfig | None = None  # the `tune` entry point: an Optuna study over one stage

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


# --- overrides ------------------------------------------------------------------------------------


def parse_overrides(items: list[str]) -> tuple[list[tuple[str, Any]], Problems]:
    """`a.b=value` strings -> (key, YAML-parsed value) pairs; bad items are problems of <overrides>."""
    pairs, problems = [], Problems()
    items = _expand_override_files(items, problems)
    for item in items:
        if isinstance(item, tuple):  # from an override file: (key, value) already parsed
            key, value = item
            try:
                field_type(ExperimentConfig, key)
            except KeyError:
                problems.add(OVERRIDES, key, "unknown key", key, _key_hint(key))
                continue
            pairs.append(item)
            continue
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.add(OVERRIDES, item, "not a key=value override", item, "dotted.key=value")
            continue
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        try:
            if key not in DEPRECATED_KEYS:
                field_type(ExperimentConfig, key)
        except KeyError:
            problems.add(OVERRIDES, key, "unknown key", item, _key_hint(key))
            continue
        pairs.append((key, value))
    return pairs, problems


def _expand_override_files(items: list[str], problems: Problems) -> list:
    """`@path.yaml`: a file of `dotted.key: value` lines (what `tune` writes as best_params.yaml)."""
    out: list = []
    for item in items:
        if not item.startswith("@"):
            out.append(item)
            continue
        path = Path(item[1:])
        raw = read_yaml(path, problems, "override file")
        if raw is not None:
            out.extend((str(k), v) for k, v in raw.items())
    return out


def _key_hint(key: str) -> str:
    parent = key.rpartition(".")[0]
    try:
        hint = field_type(ExperimentConfig, parent) if parent else ExperimentConfig
        hint = next((a for a in getattr(hint, "__args__", (hint,)) if dataclasses.is_dataclass(a)), hint)
        names = [f.name for f in dataclasses.fields(hint)]
    except KeyError:
        names = [f.name for f in dataclasses.fields(ExperimentConfig)]
        parent = ""
    last = key.rpartition(".")[2]
    near = close_matches(last, names)
    prefix = f"{parent}." if parent else ""
    return (f"did you mean '{prefix}{near[0]}'?; " if near else "") + f"keys here: {', '.join(names)}"


def apply_overrides(raw: dict, pairs: list[tuple[str, Any]]) -> dict:
    """Set each dotted key in a copy of the raw YAML mapping, creating nested mappings as needed; a
    mapping given for a mapping is merged into it field by field (`x.max_examples={train: 9}` keeps
    `dev`), anything else replaces what was there."""
    out = _deep_copy(raw)
    for key, value in pairs:
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = _merged(node.get(parts[-1]), _deep_copy(value))
    return out


def _merged(old: Any, new: Any) -> Any:
    if isinstance(old, dict) and isinstance(new, dict):
        return {**old, **{k: _merged(old.get(k), v) for k, v in new.items()}}
    return new


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


# --- loading --------------------------------------------------------------------------------------


def _resolve_paths(raw: dict, base: Path) -> dict:
    """Make task_files and data.root relative to the config file's folder."""
    data = raw.get("data")
    if isinstance(data, dict):
        files = data.get("task_files")
        if isinstance(files, list):
            data["task_files"] = [str((base / str(f)).resolve()) for f in files]
        if isinstance(data.get("root"), str):
            data["root"] = str((base / data["root"]).resolve())
    return raw


def build_experiment(raw: dict, file: str, problems: Problems) -> ExperimentConfig | None:
    """Typed config from a raw mapping; stage `training:` blocks are merged over the top-level one."""
    raw = dict(raw)
    own_training: dict[str, dict] = {}
    for stage in STAGES:
        if isinstance(raw.get(stage), dict) and "training" in raw[stage]:
            raw[stage] = dict(raw[stage])
            own = coerce_fields(
                TrainingConfig, raw[stage].pop("training"), file, f"{stage}.training", problems
            )
            own_training[stage] = own or {}
    cfg = build(ExperimentConfig, raw, file=file, problems=problems)
    if cfg is None:
        return None
    base = {f.name: getattr(cfg.training, f.name) for f in dataclasses.fields(TrainingConfig)}
    for stage in STAGES:
        current = getattr(cfg, stage)
        if current is None:
            continue
        merged = construct(
            TrainingConfig, {**base, **own_training.get(stage, {})}, file, f"{stage}.training", problems
        )
        cfg = replace(cfg, **{stage: replace(current, training=merged or cfg.training)})
    return cfg


def read_experiment(
    path: str | Path, overrides: list[str] | tuple[str, ...], problems: Problems
) -> tuple[ExperimentConfig | None, list[str]]:
    """Read, override and type-check an experiment (no catalog, file or grid checks: see validate);
    adds to `problems`, returns the config (None where it could not be built) and the override keys."""
    path = Path(path)
    pairs, override_problems = parse_overrides(list(overrides))
    problems.items.extend(override_problems.items)
    keys = [key for key, _ in pairs]
    raw = read_yaml(path, problems, "config file")
    if raw is None:
        return None, keys
    raw = _resolve_paths(apply_overrides(raw, pairs), path.resolve().parent)
    raw = read_deprecated_keys(raw, str(path), set(keys), problems)
    return build_experiment(raw, str(path), problems), keys


def read_deprecated_keys(raw: dict, file: str, override_keys: set[str], problems: Problems) -> dict:
    """`bf16: true/false` in a training block is read as `precision: bf16/fp32`, with a warning that
    names where it was found; given beside a different `precision`, it is a problem."""
    for block in TRAINING_BLOCKS:
        parent, node = None, raw
        for part in block.split("."):
            parent, node = node, node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or "bf16" not in node:
            continue
        where = f"{block}.bf16"
        source = OVERRIDES if where in override_keys else file
        node = dict(node)
        value = node.pop("bf16")
        parent[block.rpartition(".")[2]] = node
        if not isinstance(value, bool):
            problems.add(source, where, "wrong type", value, "true or false (deprecated: use precision)")
            continue
        new = "bf16" if value else "fp32"
        if node.get("precision", new) != new:
            problems.add(
                source,
                where,
                f"conflicts with precision: {node['precision']}",
                value,
                "only precision: auto | fp32 | bf16 | fp16 (bf16 is its deprecated spelling)",
            )
            continue
        node["precision"] = new
        warnings.warn(
            f"{source}: {where}: deprecated, read as {block}.precision: {new} (precision: auto, the "
            "default, picks bf16 only where the hardware runs it natively)",
            ConfigDeprecationWarning,
            stacklevel=3,
        )
    return raw


def blame_overrides(problems: Problems, keys: list[str]) -> None:
    """Problems in a value that came from the command line name <overrides>, not the YAML file."""
    for i, p in enumerate(problems.items):
        if any(p.where == k or p.where.startswith((f"{k}.", f"{k}[")) for k in keys):
            problems.items[i] = dataclasses.replace(p, file=OVERRIDES)


def dump_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
