"""The stages: intermediate(), finetune(), evaluate(): a config in, an MLflow run (+ model) out.

Each stage first loads and checks everything it needs (data, the model it starts from, tokenizer,
head) and only then opens its run, so bad input never leaves a half-written run behind.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification

from intertask import encoding, leakage, modeling, models, plots, tracking
from intertask.config import ExperimentConfig, StageConfig
from intertask.data.splits import subsample
from intertask.errors import DataError, ModelError, Problem
from intertask.evaluation import language_table, predict_logits, prediction_rows, score_set, table_metrics
from intertask.tasks.examples import ExampleSet, load_examples, select
from intertask.tasks.types import ClassificationTask
from intertask.training import train

SEEN_ARTIFACT = "data/seen_examples.json"
ALIASES = {"intermediate": "intermediate", "target": "target"}


@dataclass
class Workspace:
    """What the stages of one process share: the experiment, loaded data, a scratch folder.

    The MLflow experiment is created on first use, after the checks, so bad input creates nothing.
    """

    cfg: ExperimentConfig
    config_file: str | None = None  # where cfg was loaded from (recorded on every run)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="intertask-")))
    _data: dict = field(default_factory=dict)
    _experiment_id: str | None = None

    def __post_init__(self) -> None:
        modeling.quiet_transformers()
        tracking.use(self.cfg)

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = tracking.connect(self.cfg)
        return self._experiment_id

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def examples(self, task: str, language: str, split: str, max_examples: int | None) -> ExampleSet:
        key = (task, language, split, max_examples)
        if key not in self._data:
            cfg = self.cfg
            self._data[key] = load_examples(
                cfg.catalog().spec(task),
                language,
                split,
                root=cfg.data_root(),
                fractions=cfg.data.split_fractions.as_dict(),
                seed=cfg.split_seed,
                max_examples=max_examples,
                origin=cfg.data.source,
            )
        return self._data[key]

    def encode(self, task: ClassificationTask, data: ExampleSet, tokenizer):
        cache = models.cache_root() / "tokens" if self.cfg.data.cache_tokenization else None
        return encoding.encode(task, data, tokenizer, self.cfg.model.max_length, cache)


@dataclass(frozen=True)
class TrainedModel:
    """What a training stage hands to the next: local files, MLflow identity, lineage, seen examples."""

    run_id: str
    files: tracking.ModelFiles
    logged: tracking.LoggedModel | None
    task_chain: tuple[str, ...]
    seen: leakage.Seen
    best_dev: dict[str, float]
    language: str  # the training language

    @property
    def uri(self) -> str:
        return self.logged.uri if self.logged else f"local:{self.files.model_dir}"


@dataclass(frozen=True)
class Evaluated:
    run_id: str
    table: pd.DataFrame  # task, split, language, metric, value, examples
    excluded: dict[str, int]  # leakage guard: examples dropped per language


@dataclass(frozen=True)
class StartPoint:
    """Where a training stage starts: files to load plus what to record about them."""

    files: tracking.ModelFiles
    label: str  # base model name, or the URI of the model it starts from
    run_id: str | None
    task_chain: tuple[str, ...]
    seen: leakage.Seen


def _start_point(ws: Workspace, init: TrainedModel | str | None) -> StartPoint:
    if init is None:
        source = Path(modeling.resolve_source(ws.cfg.model.name_or_path))
        return StartPoint(tracking.ModelFiles(source, source), ws.cfg.model.name_or_path, None, (), {})
    if isinstance(init, TrainedModel):
        return StartPoint(init.files, init.uri, init.run_id, init.task_chain, init.seen)
    reference = tracking.resolve_reference(init, "target.init")
    chain = tuple(filter(None, (reference.tags or {}).get(f"{tracking.TAG}task_chain", "").split("-")))
    seen = tracking.read_run_json(reference.run_id, SEEN_ARTIFACT) or {}
    return StartPoint(tracking.download_model(reference), init, reference.run_id, chain, seen)


def _check_head(model_dir: Path, task: ClassificationTask, source: str) -> None:
    config = modeling.load_config(str(model_dir))
    labels = [config.id2label[i] for i in sorted(config.id2label)] if config.id2label else []
    if labels != list(task.spec.labels):
        raise ModelError(
            [
                Problem(
                    "<model>",
                    "head",
                    f"the model's head does not fit task {task.name!r}",
                    source,
                    f"a head with labels {list(task.spec.labels)} (the model has {labels})",
                )
            ]
        )


def stage_data(ws: Workspace, stage: StageConfig) -> tuple[ExampleSet, ExampleSet]:
    train_set = ws.examples(stage.task, stage.language, "train", stage.max_examples.train)
    dev_set = ws.examples(stage.task, stage.language, "dev", stage.max_examples.dev)
    for data in (train_set, dev_set):
        if len(data) == 0:
            raise DataError.at(
                ", ".join(data.files), "", f"no {data.split} examples", 0, "at least one example"
            )
    return train_set, dev_set


def _fingerprint_rows(sets: list[ExampleSet]) -> list[dict]:
    return [
        {
            "task": s.task,
            "language": s.language,
            "split": s.split,
            "examples": len(s),
            "source": s.source,
            "fingerprint": s.fingerprint,
            "files": list(s.files),
        }
        for s in sets
    ]


@contextmanager
def recorded_run(
    ws: Workspace,
    name: str,
    tags: dict[str, str],
    parent_run_id: str | None = None,
    sets: list[ExampleSet] | None = None,
) -> Iterator[str]:
    """A run that records the resolved config, provenance and the fingerprints of the data it reads."""
    with tracking.run(name, experiment_id=ws.experiment_id, parent_run_id=parent_run_id, tags=tags) as run_id:
        tracking.log_config(ws.cfg, ws.config_file)
        tracking.log_provenance()
        if sets:
            tracking.log_data_fingerprints(_fingerprint_rows(sets))
        yield run_id


def train_stage(
    ws: Workspace, which: str, init: TrainedModel | str | None = None, parent_run_id: str | None = None
) -> TrainedModel:
    """Train the `intermediate` or `target` stage of ws.cfg, starting from `init` (None: the base model)."""
    cfg = ws.cfg
    stage: StageConfig = getattr(cfg, which)
    task = cfg.catalog().task(stage.task)
    train_set, dev_set = stage_data(ws, stage)
    start = _start_point(ws, init)
    if stage.keep_head:
        _check_head(start.files.model_dir, task, start.label)
    tokenizer = modeling.load_tokenizer(str(start.files.tokenizer_dir))
    model = modeling.build_model(
        str(start.files.model_dir),
        task.head,
        task.model_kwargs(),
        seed=cfg.seed,
        keep_head=stage.keep_head,
        freeze_word_embeddings=cfg.model.freeze_word_embeddings,
    )
    model.to(modeling.device())
    chain = (*start.task_chain, stage.task)
    metric = cfg.selection_metric(stage)
    name = "intermediate" if which == "intermediate" else "finetune"
    tags = {
        f"{tracking.TAG}stage": name,
        f"{tracking.TAG}task": stage.task,
        f"{tracking.TAG}language": stage.language,
        f"{tracking.TAG}task_chain": "-".join(chain),
        f"{tracking.TAG}init_model": start.label,
        f"{tracking.TAG}init_run_id": start.run_id or "",
    }
    title = f"{name} {stage.task} ({stage.language})"
    with recorded_run(ws, title, tags, parent_run_id, [train_set, dev_set]) as run_id:
        tracking.log_params({"stage.selection_metric": metric, **modeling.parameter_counts(model)})
        steps: list[tuple[int, float]] = []

        def log(values: dict[str, float], step: int) -> None:
            if "train/loss" in values:
                steps.append((step, values["train/loss"]))
            tracking.log_metrics(values, step)

        result = train(
            model,
            task,
            ws.encode(task, train_set, tokenizer),
            ws.encode(task, dev_set, tokenizer),
            stage.training,
            seed=cfg.seed,
            pad_id=tokenizer.pad_token_id,
            selection_metric=metric,
            dev_metrics=task.spec.metrics,
            log=log,
            desc=f"{name} {stage.task}",
        )
        tracking.log_metrics(
            {f"best_dev/{k}": v for k, v in result.best_dev.items()}
            | {
                "best_epoch": result.best_epoch,
                "train_seconds": result.train_seconds,
                "train_examples_per_second": result.examples_per_second,
            }
        )
        tracking.log_table(result.history, "training/history")
        figure = plots.training_curves(steps, result.history, f"{name} {stage.task}")
        tracking.log_figure(figure, "training/curves.png")
        plots.close(figure)
        seen = leakage.merge(
            start.seen,
            leakage.record({}, train_set, task.spec.parallel),
            leakage.record({}, dev_set, task.spec.parallel),
        )
        tracking.log_json(seen, SEEN_ARTIFACT)
        folder = ws.workdir / run_id
        modeling.save(model, tokenizer, folder)
        logged = _log_model(ws, model, tokenizer, which, stage.language, chain, start, run_id)
    files = tracking.ModelFiles(folder, folder)
    return TrainedModel(run_id, files, logged, chain, seen, result.best_dev, stage.language)


def _log_model(
    ws, model, tokenizer, which, language, chain, start: StartPoint, run_id
) -> tracking.LoggedModel | None:
    cfg = ws.cfg
    if not cfg.tracking.log_models:
        return None
    register_as = tracking.registered_name(cfg.name, cfg.model.name_or_path, list(chain))
    tags = {
        f"{tracking.TAG}stage": which,
        f"{tracking.TAG}task_chain": "-".join(chain),
        f"{tracking.TAG}language": language,
        f"{tracking.TAG}base_model": cfg.model.name_or_path,
        f"{tracking.TAG}init_model": start.label,
        f"{tracking.TAG}init_run_id": start.run_id or "",
        f"{tracking.TAG}run_id": run_id,
    }
    return tracking.log_model(
        model,
        tokenizer,
        register_as=register_as if cfg.tracking.register_models else None,
        alias=ALIASES[which],
        tags=tags,
    )


def intermediate(ws: Workspace, parent_run_id: str | None = None) -> TrainedModel:
    """Train the intermediate task from the base model; register it with alias `intermediate`."""
    return train_stage(ws, "intermediate", None, parent_run_id)


def finetune(
    ws: Workspace, init: TrainedModel | str | None = None, parent_run_id: str | None = None
) -> TrainedModel:
    """Train the target task from the base model or from `init` (a TrainedModel, URI or run id)."""
    if init is None and ws.cfg.target.init:
        init = ws.cfg.target.init
    return train_stage(ws, "target", init, parent_run_id)


# --- evaluation -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _EvalModel:
    files: tracking.ModelFiles
    label: str  # how the model was given
    seen: leakage.Seen
    tags: dict[str, str]
    language: str | None  # its training language, when recorded


def _eval_model(model: TrainedModel | str) -> _EvalModel:
    if isinstance(model, TrainedModel):
        tags = {f"{tracking.TAG}model_run_id": model.run_id}
        return _EvalModel(model.files, model.uri, model.seen, tags, model.language)
    reference = tracking.resolve_reference(model, "evaluation.model")
    seen = tracking.read_run_json(reference.run_id, SEEN_ARTIFACT) or {}
    tags = {f"{tracking.TAG}model_run_id": reference.run_id}
    if reference.name:
        tags[f"{tracking.TAG}model_version"] = f"{reference.name}/{reference.version}"
    language = (reference.tags or {}).get(f"{tracking.TAG}language")
    return _EvalModel(tracking.download_model(reference), model, seen, tags, language)


def _eval_sets(ws: Workspace, task: str, seen: leakage.Seen) -> tuple[dict[str, ExampleSet], dict[str, int]]:
    cfg = ws.cfg
    sets, excluded = {}, {}
    for language in cfg.eval_languages():
        data = ws.examples(task, language, cfg.evaluation.split, None)
        kept, dropped = leakage.exclude_seen(data, seen)
        if cfg.evaluation.max_examples is not None:
            keep = subsample(kept.uids, cfg.evaluation.max_examples, cfg.split_seed)
            kept = select(kept, keep, f"max_examples={cfg.evaluation.max_examples}")
        if len(kept) == 0:
            raise DataError.at(
                ", ".join(data.files),
                "",
                f"no {data.split} examples left for {language!r} after removing {dropped} seen in training",
                0,
                "held-out examples",
            )
        sets[language], excluded[language] = kept, dropped
    return sets, excluded


def evaluate(ws: Workspace, model: TrainedModel | str, parent_run_id: str | None = None) -> Evaluated:
    """Zero-shot evaluation of `model` on every configured language in ONE run.

    Precision and batching follow the target stage's training settings; `mean_non_<lang>` excludes the
    model's recorded training language (else the target stage's language).
    """
    cfg = ws.cfg
    task_name = cfg.eval_task
    task = cfg.catalog().task(task_name)
    source = _eval_model(model)
    sets, excluded = _eval_sets(ws, task_name, source.seen)
    _check_head(source.files.model_dir, task, source.label)
    tokenizer = modeling.load_tokenizer(str(source.files.tokenizer_dir))
    net = AutoModelForSequenceClassification.from_pretrained(str(source.files.model_dir)).to(
        modeling.device()
    )
    train_language = source.language or (cfg.target.language if cfg.target else None)
    split, training = cfg.evaluation.split, cfg.target.training if cfg.target else cfg.training
    tags = source.tags | {
        f"{tracking.TAG}stage": "evaluate",
        f"{tracking.TAG}task": task_name,
        f"{tracking.TAG}model": source.label,
    }
    with recorded_run(
        ws, f"evaluate {task_name}/{split}", tags, parent_run_id, list(sets.values())
    ) as run_id:
        tracking.log_metrics(
            {f"leakage_guard/{task_name}/{lang}/excluded": n for lang, n in excluded.items()}
        )
        per_language, predictions = {}, []
        for language, data in tqdm(sets.items(), desc=f"evaluate {task_name}", leave=False):
            encoded = ws.encode(task, data, tokenizer)
            logits = predict_logits(
                net,
                encoded,
                pad_id=tokenizer.pad_token_id,
                batch_tokens=training.eval_batch_tokens,
                bf16=training.bf16,
            )
            scored = score_set(task, logits, encoded, task.spec.metrics)
            per_language[language] = scored.scores
            predictions.append(prediction_rows(task, data, scored.predictions))
        table = language_table(
            task_name, split, per_language, {k: len(v) for k, v in sets.items()}, train_language
        )
        tracking.log_metrics(table_metrics(table))
        tracking.log_table(table, "evaluation/languages")
        if cfg.evaluation.save_predictions:
            tracking.log_table(pd.concat(predictions, ignore_index=True), "evaluation/predictions")
        figure = plots.language_scores(table, task.spec.metrics[0], f"{task_name}/{split}")
        tracking.log_figure(figure, "evaluation/languages.png")
        plots.close(figure)
    return Evaluated(run_id, table, excluded)
