"""Experiment configuration: frozen dataclasses, YAML loading, `key=value` overrides, validation.

An experiment is one YAML file in pipelines/. Its keys equal the field names below; defaults live here
and nowhere else. `load_experiment` reports every problem at once, before anything is trained, as
`<file>: <dotted.field>: <problem> (got ...; expected ...)`.

The top-level `training:` block holds the defaults of every stage; a stage's own `training:` block
overrides it field by field.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from intertask import models
from intertask.data import data_root
from intertask.errors import ConfigError, Problems
from intertask.registry import close_matches, suggest
from intertask.schema import FieldChecks, build, coerce_fields, construct, field_type, read_yaml, to_dict
from intertask.tasks import TaskCatalog, catalog_for

STAGES = ("intermediate", "target")
OVERRIDES = "<overrides>"  # the "file" named by problems in command-line overrides
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    name_or_path: str = "e5-small"  # offline model name (`intertask model list`), local folder or hub id
    freeze_word_embeddings: bool = False  # keep the input embedding matrix fixed (96M of e5-small's 118M)
    max_length: int = 128  # tokens per example after truncation

    def __post_init__(self) -> None:
        c = FieldChecks()
        c.require(8 <= self.max_length <= 4096, "max_length", "out of range", self.max_length, "8..4096")
        c.done()


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    epochs: int = 3  # passes over the training set
    batch_size: int = 16  # examples per optimizer step
    learning_rate: float = 3e-5  # peak AdamW learning rate
    weight_decay: float = 0.01  # AdamW decoupled weight decay (not on biases and layer norms)
    warmup_ratio: float = 0.1  # share of steps with linear warm-up, then linear decay to 0
    max_grad_norm: float = 1.0  # gradient clipping (0 turns it off)
    bf16: bool = False  # bf16 autocast for forward and backward (about 2x on CPUs with avx512_bf16)
    group_by_length: bool = True  # batches of similar length (less padding); batch order still shuffled
    eval_batch_tokens: int = 2048  # evaluation batches: length-sorted, padded size up to this many tokens
    log_every_steps: int = 10  # training loss is logged every N optimizer steps
    threads: int | None = None  # torch CPU threads (None: torch's default)

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
            self.eval_batch_tokens >= 64, "eval_batch_tokens", "too small", self.eval_batch_tokens, ">= 64"
        )
        c.require(
            self.log_every_steps >= 1, "log_every_steps", "must be positive", self.log_every_steps, ">= 1"
        )
        c.require(
            self.threads is None or self.threads >= 1, "threads", "must be positive", self.threads, ">= 1"
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
class StageConfig:
    task: str  # task name (built-in, or declared in data.task_files)
    language: str = "en"  # training language
    max_examples: SizesConfig = field(default_factory=SizesConfig)  # quick runs: cap each split
    selection_metric: str | None = None  # dev metric that picks the best epoch (default: the task's first)
    training: TrainingConfig = field(default_factory=TrainingConfig)  # merged over the top-level training
    init: str | None = (
        None  # target only: start from models:/name@alias, models:/name/N, runs:/ID/model or a run id
    )
    keep_head: bool = False  # target only: keep the intermediate task head (label spaces must be equal)

    def __post_init__(self) -> None:
        c = FieldChecks()
        c.require(
            self.init is None or is_model_reference(self.init),
            "init",
            "not a model reference",
            self.init,
            "models:/name@alias, models:/name/version, runs:/<run id>/model or a 32-hex run id",
        )
        c.done()


@dataclass(frozen=True, kw_only=True)
class EvaluationConfig:
    task: str | None = None  # task to evaluate zero-shot (default: the target task)
    languages: tuple[str, ...] = ()  # languages to evaluate (default: every language of the task)
    split: Literal["train", "dev", "test"] = "test"  # which split of each language
    max_examples: int | None = None  # per language, seeded subset; None = all
    model: str | None = None  # the `evaluate` entry point: models:/name@alias, runs:/ID/model or a run id
    save_predictions: bool = True  # log per-example predictions as an artifact

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
            self.model is None or is_model_reference(self.model),
            "model",
            "not a model reference",
            self.model,
            "models:/name@alias, models:/name/version, runs:/<run id>/model or a 32-hex run id",
        )
        c.done()


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
    log_models: bool = True  # log models with the MLflow transformers flavor (needed to register)

    def __post_init__(self) -> None:
        c = FieldChecks()
        c.require(
            self.log_models or not self.register_models,
            "register_models",
            "registering needs logged models",
            self.register_models,
            "false when log_models is false",
        )
        c.done()


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    name: str  # experiment name: MLflow experiment and prefix of registered model names
    seed: int = 42  # seeds weights of new heads, data order, dropout and derived splits
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)  # defaults for every stage
    intermediate: StageConfig | None = None  # the intermediate task (null: baseline arm only)
    target: StageConfig | None = None  # the target task
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

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

    def catalog(self) -> TaskCatalog:
        return catalog_for(self.data.task_files)

    def data_root(self) -> Path:
        return data_root(self.data.root)

    @property
    def eval_task(self) -> str | None:
        if self.evaluation.task:
            return self.evaluation.task
        stage = self.target or self.intermediate
        return stage.task if stage else None

    def eval_languages(self) -> tuple[str, ...]:
        task = self.eval_task
        if self.evaluation.languages or task is None:
            return self.evaluation.languages
        return self.catalog().spec(task).languages

    def selection_metric(self, stage: StageConfig) -> str:
        return stage.selection_metric or self.catalog().spec(stage.task).metrics[0]

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def is_model_reference(value: str) -> bool:
    return value.startswith(("models:/", "runs:/")) or bool(_RUN_ID.match(value))


# --- overrides ------------------------------------------------------------------------------------


def parse_overrides(items: list[str]) -> tuple[list[tuple[str, Any]], Problems]:
    """`a.b=value` strings -> (key, YAML-parsed value) pairs; bad items are problems of <overrides>."""
    pairs, problems = [], Problems()
    for item in items:
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
            field_type(ExperimentConfig, key)
        except KeyError:
            problems.add(OVERRIDES, key, "unknown key", item, _key_hint(key))
            continue
        pairs.append((key, value))
    return pairs, problems


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
    """Set each dotted key in a copy of the raw YAML mapping, creating nested mappings as needed."""
    out = _deep_copy(raw)
    for key, value in pairs:
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return out


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
            own_training[stage] = own if own is not None else {}
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


def load_experiment(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read, override, type-check and resolve an experiment; raise ConfigError listing every problem."""
    path = Path(path)
    problems = Problems()
    pairs, override_problems = parse_overrides(list(overrides))
    problems.items.extend(override_problems.items)
    raw = read_yaml(path, problems, "config file")
    if raw is None:
        problems.raise_if_any()
    raw = _resolve_paths(apply_overrides(raw, pairs), path.resolve().parent)
    cfg = build_experiment(raw, str(path), problems)
    if cfg is not None:
        check_experiment(cfg, str(path), problems)
    _blame_overrides(problems, [key for key, _ in pairs])
    problems.raise_if_any()
    return cfg


def _blame_overrides(problems: Problems, keys: list[str]) -> None:
    """Problems in a value that came from the command line name <overrides>, not the YAML file."""
    for i, p in enumerate(problems.items):
        if any(p.where == k or p.where.startswith((f"{k}.", f"{k}[")) for k in keys):
            problems.items[i] = dataclasses.replace(p, file=OVERRIDES)


# --- checks that need the registries --------------------------------------------------------------


def check_experiment(cfg: ExperimentConfig, file: str, problems: Problems) -> None:
    """Names (tasks, languages, metrics, models) and data files; adds to `problems`."""
    try:
        catalog = cfg.catalog()
    except ConfigError as err:
        problems.extend(err)
        return
    if cfg.intermediate is None and cfg.target is None and cfg.evaluation.model is None:
        problems.add(file, "target", "nothing to run", None, "a target (and optionally intermediate) stage")
    for stage_name in STAGES:
        stage = getattr(cfg, stage_name)
        if stage is not None:
            _check_stage(cfg, catalog, stage_name, stage, file, problems)
    _check_evaluation(cfg, catalog, file, problems)
    _check_model(cfg, file, problems)


def _check_task(catalog: TaskCatalog, name: str, file: str, where: str, problems: Problems):
    if name in catalog:
        return catalog.spec(name)
    problems.add(file, where, "unknown task", name, suggest(name, catalog.names()))
    return None


def _check_language(spec, language: str, file: str, where: str, problems: Problems) -> bool:
    if language in spec.languages:
        return True
    problems.add(
        file, where, f"unknown language for task {spec.name!r}", language, suggest(language, spec.languages)
    )
    return False


def _check_stage(cfg, catalog, stage_name, stage, file, problems) -> None:
    spec = _check_task(catalog, stage.task, file, f"{stage_name}.task", problems)
    if spec is None:
        return
    if _check_language(spec, stage.language, file, f"{stage_name}.language", problems):
        _check_files(cfg, spec, stage.language, file, f"{stage_name}.task", problems)
    metric = stage.selection_metric
    if metric is not None and metric not in spec.metrics:
        hint = close_matches(metric, list(spec.metrics))
        expected = (
            f"did you mean {hint[0]!r}?; " if hint else ""
        ) + f"one of the task's metrics {list(spec.metrics)}"
        problems.add(file, f"{stage_name}.selection_metric", "unknown metric for this task", metric, expected)
    if stage_name == "intermediate":
        for key in ("init", "keep_head"):
            if getattr(stage, key):
                problems.add(
                    file,
                    f"intermediate.{key}",
                    "only applies to the target stage",
                    getattr(stage, key),
                    "unset",
                )
    elif stage.keep_head:
        _check_keep_head(cfg, catalog, spec, file, problems)


def _check_keep_head(cfg, catalog, spec, file, problems) -> None:
    if cfg.intermediate is None and cfg.target.init is None:
        problems.add(file, "target.keep_head", "no intermediate head to keep", True, "an intermediate stage")
    elif cfg.intermediate is not None and cfg.intermediate.task in catalog:
        other = catalog.spec(cfg.intermediate.task)
        if (other.type, other.labels) != (spec.type, spec.labels):
            problems.add(
                file,
                "target.keep_head",
                "label spaces differ, the head cannot be kept",
                f"{other.name}: {list(other.labels)} vs {spec.name}: {list(spec.labels)}",
                "the same task type and labels, or keep_head: false",
            )


def _check_evaluation(cfg, catalog, file, problems) -> None:
    name = cfg.eval_task
    if name is None:
        return
    spec = _check_task(
        catalog, name, file, "evaluation.task" if cfg.evaluation.task else "target.task", problems
    )
    if spec is None:
        return
    for i, language in enumerate(cfg.evaluation.languages):
        if _check_language(spec, language, file, f"evaluation.languages[{i}]", problems):
            _check_files(cfg, spec, language, file, f"evaluation.languages[{i}]", problems)
    if not cfg.evaluation.languages:
        for language in spec.languages:
            _check_files(cfg, spec, language, file, "evaluation.languages", problems)


def _check_files(cfg, spec, language, file, where, problems) -> None:
    if cfg.data.source != "local":
        if spec.hub is None:
            problems.add(file, "data.source", f"task {spec.name!r} has no hub source", "hub", "local")
        return
    root = cfg.data_root()
    for split, entry in spec.files.items():
        for template in (entry,) if isinstance(entry, str) else entry:
            path = root / template.format(lang=language)
            if not path.exists():
                problems.add(
                    file,
                    where,
                    f"data file missing for task {spec.name!r}, language {language!r}, split {split!r}",
                    str(path),
                    f"an existing file under the data root {root} (set data.root or $INTERTASK_DATA)",
                )


def _check_model(cfg, file, problems) -> None:
    name = cfg.model.name_or_path
    if name in models.OFFLINE_MODELS:
        return
    looks_local = name.startswith((".", "/", "~")) or Path(name).expanduser().exists()
    path = Path(name).expanduser()
    if looks_local and not (path / "config.json").is_file():
        problems.add(
            file,
            "model.name_or_path",
            "model folder not found or has no config.json",
            name,
            f"an offline model ({', '.join(models.OFFLINE_MODELS.names())}), a folder saved with "
            "save_pretrained, or a hub id",
        )


def dump_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
