"""The stages: intermediate(), finetune(), evaluate(): a config in, an MLflow run (+ model) out.

Each stage first loads and checks everything it needs (data, the model it starts from, tokenizer,
heads) and only then opens its run, so bad input never leaves a half-written run behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from intertask import adapters, hardware, identity, leakage, modeling, models, plots, resolve, tracking
from intertask.checkpoints import Checkpointer
from intertask.config import (
    BASE_MODEL,
    EvalTaskConfig,
    ExperimentConfig,
    StageConfig,
    TrainingConfig,
)
from intertask.errors import DataError, ModelError, Problem
from intertask.evaluation import (
    evaluate_set,
    example_rows,
    language_table,
    prediction_rows,
    table_metrics,
)
from intertask.metrics import EXAMPLES_ARTIFACT
from intertask.tasks.base import EncodedSet, ExampleSet, TaskType
from intertask.tasks.examples import select
from intertask.tasks.retrieval import RetrievalTask
from intertask.tracking import serving
from intertask.training import TrainPart, train
from intertask.workspace import Workspace, stage_data

SEEN_ARTIFACT = "data/seen_examples.json"
TAG = tracking.TAG


@dataclass(frozen=True)
class TrainedModel:
    """What a training stage hands to the next: local files, MLflow identity, lineage, seen examples."""

    run_id: str
    files: tracking.ModelFiles
    logged: tracking.LoggedModel | None
    task_chain: tuple[str, ...]
    seen: leakage.Seen
    best_dev: dict[str, dict[str, float]]  # task -> metric -> value at the best epoch
    language: str  # the training language
    probes: pd.DataFrame | None = None  # probe results after this stage

    @property
    def uri(self) -> str:
        return self.logged.uri if self.logged else f"local:{self.files.model_dir}"


@dataclass(frozen=True)
class Evaluated:
    run_id: str
    table: pd.DataFrame  # task, split, language, metric, value, examples
    excluded: dict[str, int]  # leakage guard: examples dropped, key "<task>/<language>"
    examples: pd.DataFrame | None = None  # per-example statistics (evaluation/examples.parquet)


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
    chain = tuple(filter(None, (reference.tags or {}).get(f"{TAG}task_chain", "").split("-")))
    seen = tracking.read_run_json(reference.run_id, SEEN_ARTIFACT) or {}
    return StartPoint(tracking.download_model(reference), init, reference.run_id, chain, seen)


def _start_adapter(start: StartPoint) -> Path | None:
    """The adapter the start model was trained with, to stack on (None: it was trained without one)."""
    folder = adapters.start_adapter(start.files.model_dir)
    if folder is None and start.run_id:  # a registered model: its run logged the adapter on its own
        folder = tracking.download_folder(start.run_id, adapters.ADAPTER_DIR)
    return folder


def _missing_head(task: TaskType, source: str, field_name: str) -> ModelError:
    return ModelError(
        [
            Problem(
                "<model>",
                field_name,
                f"the model has no head that fits task {task.name!r}",
                source,
                f"a head trained on {_article(task.spec.type)} {task.spec.type} task with labels "
                f"{list(task.spec.labels)}",
            )
        ]
    )


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


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


def eval_training(cfg: ExperimentConfig) -> TrainingConfig:
    """The training settings evaluation and probes follow (precision, threads, batch tokens): the
    target stage's, else the top-level ones."""
    return cfg.target.training if cfg.target else cfg.training


def stage_runtime(training: TrainingConfig) -> hardware.Runtime:
    """Precision and threads of a stage on this machine (torch's thread count is set here)."""
    return hardware.runtime(training.precision, training.threads)


@contextmanager
def recorded_run(
    ws: Workspace,
    name: str,
    tags: dict[str, str],
    parent_run_id: str | None = None,
    sets: list[ExampleSet] | None = None,
    runtime: hardware.Runtime | None = None,
) -> Iterator[str]:
    """A run that records the resolved config, provenance, the machine and precision it ran with, and
    the fingerprints of the data it reads."""
    tags = {**ws.tags, **tracking.process_tags(), **tags}
    with tracking.run(name, experiment_id=ws.experiment(), parent_run_id=parent_run_id, tags=tags) as run_id:
        tracking.log_config(ws.cfg, ws.config_file)
        tracking.log_provenance()
        if runtime is not None:
            tracking.log_params(runtime.params())
        if sets:
            tracking.log_data_fingerprints(_fingerprint_rows(sets))
        yield run_id


# --- training stages --------------------------------------------------------------------------------


def train_stage(
    ws: Workspace,
    which: str,
    init: TrainedModel | str | None = None,
    parent_run_id: str | None = None,
    stage_key: str | None = None,
    on_epoch=None,
    log_model: bool = True,
    resumable: bool = True,
) -> TrainedModel:
    """Train the `intermediate` (one or several tasks) or `target` stage, starting from `init`.

    `on_epoch(epoch, dev score)` sees every epoch (tuning reports and prunes there); `log_model=False`
    keeps the trained model in the workdir only (a tuning trial: only the best one is logged).
    A resumable stage checkpoints into a folder named by its content key; when this stage was
    interrupted before (same config, data, start point and code), it continues from there in a new run
    tagged `intertask.resumed_from_run` (and `resumed_at_step`)."""
    cfg = ws.cfg
    stage: StageConfig = getattr(cfg, which)
    types = {name: resolve.catalog(cfg).task(name) for name in stage.task_names}
    data = {name: stage_data(ws, stage, name) for name in types}
    start = _start_point(ws, init)
    heads = [
        modeling.HeadSpec(n, t.head, t.model_kwargs(), t.head_signature(), keep=stage.keep_head)
        for n, t in types.items()
    ]
    for spec in heads:
        if spec.keep and modeling.find_head(start.files.model_dir, spec.task, spec.signature) is None:
            raise _missing_head(types[spec.task], start.label, "target.keep_head")
    tokenizer = modeling.load_tokenizer(str(start.files.tokenizer_dir))
    nets = modeling.build_models(
        str(start.files.model_dir),
        heads,
        seed=cfg.seed,
        freeze_word_embeddings=cfg.model.freeze_word_embeddings,
        sparse_word_embeddings=cfg.model.sparse_word_embeddings,
    )
    encoder = next(iter(nets.values())).base_model
    model_type = encoder.config.model_type
    peft_params, stacked = {}, None
    if cfg.peft is not None:
        if cfg.peft.between_stages == "stack":
            stacked = _start_adapter(start)
        torch.manual_seed(cfg.seed)  # the adapters' initialisation
        peft_params = adapters.attach(encoder, cfg.peft, model_type, stacked, start.label)
    runtime = stage_runtime(stage.training)
    for net in nets.values():
        net.to(modeling.device())
    chain = (*start.task_chain, "+".join(types))
    name = identity.BY_STAGE[which].job
    tags = {
        f"{TAG}stage": name,
        f"{TAG}task": "+".join(types),
        f"{TAG}language": stage.language,
        f"{TAG}task_chain": "-".join(chain),
        f"{TAG}init_model": start.label,
        f"{TAG}init_run_id": start.run_id or "",
        f"{TAG}stage_key": stage_key or "",
    }
    sets = [s for pair in data.values() for s in pair]
    checkpointer = None
    if resumable and stage.training.checkpoints:
        key = stage_key or resume_key(ws, which, start, sets)
        checkpointer = Checkpointer(checkpoint_folder(key), stage.training.checkpoint_every_steps)
        owner = checkpointer.folder / "run.json"
        if (checkpointer.folder / "latest").is_file() and owner.is_file():
            tags[f"{TAG}resumed_from_run"] = json.loads(owner.read_text())["run_id"]
    with recorded_run(
        ws, f"{name} {'+'.join(types)} ({stage.language})", tags, parent_run_id, sets, runtime
    ) as run_id:
        if checkpointer is not None:
            checkpointer.folder.mkdir(parents=True, exist_ok=True)
            (checkpointer.folder / "run.json").write_text(json.dumps({"run_id": run_id}))
        tracking.log_params(
            modeling.parameter_counts(nets)
            | peft_params
            | {f"stage.selection_metric.{n}": resolve.selection_metric(cfg, stage, n) for n in types}
        )
        result, steps = _train(ws, stage, types, data, nets, tokenizer, name, runtime, on_epoch, checkpointer)
        if result.resumed_at_step is not None:
            tracking.set_tags({f"{TAG}resumed_at_step": result.resumed_at_step})
        _log_training(result, steps, f"{name} {'+'.join(types)}")
        seen = leakage.merge(start.seen, *(leakage.record({}, s, types[s.task].spec.parallel) for s in sets))
        tracking.log_json(seen, SEEN_ARTIFACT)
        folder = ws.workdir / run_id
        if cfg.peft is not None:  # adapter weights on their own, then merged: a plain model is saved
            merged = adapters.save_and_merge(encoder, cfg.peft, model_type, start.label, folder, stacked)
            tracking.log_artifacts(folder / adapters.ADAPTER_DIR, "adapter")
            tracking.log_metrics({"peft/merged_layers": merged})
        modeling.save(nets, heads, tokenizer, folder)
        serving.write_task(folder, types[heads[0].task].spec, cfg.model.max_length)
        probes = run_probes(ws, nets[heads[0].task].base_model, tokenizer, which, runtime.precision)
        logged = (
            _log_model(ws, folder, heads[0].head, which, stage.language, chain, start, run_id)
            if log_model
            else None
        )
    if checkpointer is not None:
        checkpointer.clear()  # the stage is done: nothing to resume
    files = tracking.ModelFiles(folder, folder)
    return TrainedModel(run_id, files, logged, chain, seen, result.best_dev, stage.language, probes)


def checkpoint_folder(key: str) -> Path:
    """Where a stage's resumable checkpoints live: $INTERTASK_CHECKPOINTS, else <cache>/checkpoints."""
    root = os.environ.get("INTERTASK_CHECKPOINTS") or models.cache_root() / "checkpoints"
    return Path(root).expanduser() / key[:32]


def resume_key(ws: Workspace, which: str, start: StartPoint, sets: list[ExampleSet]) -> str:
    """A stage run outside a pipeline: what it trains, from what, on which data, with which code."""
    parts = identity.training_inputs(ws.cfg, identity.BY_STAGE[which].job) | {
        "start": [start.label, start.run_id],
        "data": sorted(s.fingerprint for s in sets),
    }
    return identity.content_hash(parts)


def _train(ws, stage, types, data, nets, tokenizer, name, runtime, on_epoch=None, checkpointer=None):
    cfg = ws.cfg
    parts = [
        TrainPart(
            n,
            t,
            nets[n],
            ws.encode(t, data[n][0], tokenizer),
            ws.encode(t, data[n][1], tokenizer),
            data[n][1],
            resolve.selection_metric(cfg, stage, n),
        )
        for n, t in types.items()
    ]
    steps: list[tuple[int, float]] = []

    def log(values: dict[str, float], step: int) -> None:
        if "train/loss" in values:
            steps.append((step, values["train/loss"]))
        tracking.log_metrics(values, step)

    result = train(
        parts,
        stage.training,
        seed=cfg.seed,
        pad_id=tokenizer.pad_token_id,
        sampling=stage.sampling,
        selection_task=stage.selection_task,
        log=log,
        desc=f"{name} {'+'.join(types)}",
        on_epoch=on_epoch,
        checkpointer=checkpointer,
        runtime=runtime,
    )
    return result, steps


def _log_training(result, steps, title: str) -> None:
    best = {f"best_dev/{task}/{m}": v for task, scores in result.best_dev.items() for m, v in scores.items()}
    tracking.log_metrics(
        best
        | {
            "best_epoch": result.best_epoch,
            "best_dev/selection": result.best_score,
            "train_seconds": result.train_seconds,
            "train_examples_per_second": result.examples_per_second,
        }
        | {f"train/{t}/batches": n for t, n in result.batches_per_task.items()}
    )
    tracking.log_table(result.history, "training/history")
    figure = plots.training_curves(steps, result.history, title)
    tracking.log_figure(figure, "training/curves.png")
    plots.close(figure)


def _log_model(
    ws, folder, head, which, language, chain, start: StartPoint, run_id, alias: str | None = None
) -> tracking.LoggedModel | None:
    cfg = ws.cfg
    if not cfg.tracking.log_models:
        return None
    register_as = tracking.registered_name(cfg.name, cfg.model.name_or_path, list(chain))
    tags = {
        f"{TAG}stage": which,
        f"{TAG}task_chain": "-".join(chain),
        f"{TAG}language": language,
        f"{TAG}base_model": cfg.model.name_or_path,
        f"{TAG}init_model": start.label,
        f"{TAG}init_run_id": start.run_id or "",
        f"{TAG}run_id": run_id,
    }
    logged = tracking.log_model(
        folder,
        head,
        register_as=register_as if cfg.tracking.register_models else None,
        alias=alias or which,
        tags=tags | {f"{TAG}seed": str(cfg.seed)},
    )
    tracking.set_tags({f"{TAG}model_uri": logged.uri})  # how a later run reuses this one
    return logged


def publish(ws: Workspace, which: str, trained: TrainedModel, alias: str) -> tracking.LoggedModel | None:
    """Log and register a model that `train_stage(..., log_model=False)` left in the workdir, into its
    own (finished) run: the best trial of a tuning study."""
    stage: StageConfig = getattr(ws.cfg, which)
    head = resolve.catalog(ws.cfg).task(stage.task_names[0]).head
    run = tracking.get_run(trained.run_id)
    start = StartPoint(
        files=trained.files,
        label=run.data.tags.get(f"{TAG}init_model", ""),
        run_id=run.data.tags.get(f"{TAG}init_run_id") or None,
        task_chain=trained.task_chain[:-1],
        seen={},
    )
    with tracking.run(run.info.run_name, experiment_id=ws.experiment(), run_id=trained.run_id):
        return _log_model(
            ws,
            trained.files.model_dir,
            head,
            which,
            trained.language,
            trained.task_chain,
            start,
            trained.run_id,
            alias,
        )


def intermediate(ws: Workspace, parent_run_id: str | None = None) -> TrainedModel:
    """Train the intermediate task(s) from the base model; register with alias `intermediate`."""
    return train_stage(ws, "intermediate", None, parent_run_id)


def finetune(
    ws: Workspace, init: TrainedModel | str | None = None, parent_run_id: str | None = None
) -> TrainedModel:
    """Train the target task from the base model or from `init` (a TrainedModel, URI or run id)."""
    if init is None and ws.cfg.target.init:
        init = ws.cfg.target.init
    return train_stage(ws, "target", init, parent_run_id)


# --- retrieval probes -------------------------------------------------------------------------------


def run_probes(
    ws: Workspace, encoder, tokenizer, point: str, precision: hardware.Precision
) -> pd.DataFrame | None:
    """Every probe configured for `point` (base / intermediate / target) on `encoder`, logged in the
    active run as probe/<task>/<split>/<language>/<metric>; the table gets a `point` column."""
    probes = [p for p in ws.cfg.probes if point in p.after]
    if not probes:
        return None
    tables = []
    for probe in probes:
        entry = EvalTaskConfig(
            task=probe.task, languages=probe.languages, split=probe.split, max_examples=probe.max_examples
        )
        task = resolve.catalog(ws.cfg).task(probe.task)
        sets = {
            lang: _limit(ws, ws.examples(probe.task, lang, probe.split, None), probe.max_examples)
            for lang in entry.languages or task.spec.evaluated_languages
        }
        table, _, _ = _retrieval_table(ws, task, sets, encoder, tokenizer, probe.split, precision)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True).assign(point=point)
    tracking.log_metrics(table_metrics(table, prefix="probe/"))
    tracking.log_table(table, f"probes/{point}")
    return table


def probe_base(
    ws: Workspace, parent_run_id: str | None, stage_key: str | None = None
) -> tuple[str, pd.DataFrame]:
    """The probes configured for `base`, on the untrained model, in a run of their own."""
    tags = {
        f"{TAG}stage": "probe",
        f"{TAG}stage_key": stage_key or "",
        f"{TAG}model": ws.cfg.model.name_or_path,
    }
    source = modeling.resolve_source(ws.cfg.model.name_or_path)
    runtime = stage_runtime(eval_training(ws.cfg))
    title = f"probe base model ({ws.cfg.model.name_or_path})"
    with recorded_run(ws, title, tags, parent_run_id, runtime=runtime) as run_id:
        encoder = modeling.load_encoder(Path(source)).to(modeling.device())
        table = run_probes(ws, encoder, modeling.load_tokenizer(source), "base", runtime.precision)
    return run_id, table


def embed_texts(ws: Workspace, texts: list[str]) -> np.ndarray:
    """Unit-length sentence embeddings of texts with the base model (retrieval settings)."""
    options = ws.cfg.evaluation.retrieval
    source = modeling.resolve_source(ws.cfg.model.name_or_path)
    if ws._encoder is None:
        ws._encoder = (
            modeling.load_encoder(Path(source)).to(modeling.device()),
            modeling.load_tokenizer(source),
        )
    encoder, tokenizer = ws._encoder
    enc = tokenizer([options.prefix + t for t in texts], truncation=True, max_length=options.max_length)
    encoded = EncodedSet(
        {"input_ids": [np.asarray(ids, np.int32) for ids in enc["input_ids"]]}, {}, np.arange(len(texts))
    )
    retrieval = RetrievalTask(resolve.catalog(ws.cfg).spec("tatoeba"))
    return retrieval.embed(
        encoder,
        encoded,
        layer=options.layer,
        pad_id=tokenizer.pad_token_id,
        batch_tokens=ws.cfg.training.eval_batch_tokens,
        precision=stage_runtime(ws.cfg.training).precision,
    )


def _limit(ws: Workspace, data: ExampleSet, k: int | None) -> ExampleSet:
    if k is None:
        return data
    positions = resolve.catalog(ws.cfg).task(data.task).choose(data.examples, k, ws.cfg.split_seed)
    return select(data, data.uids[positions], f"max_examples={k}")


def _retrieval_table(ws, task, sets: dict[str, ExampleSet], encoder, tokenizer, split: str, precision):
    options = ws.cfg.evaluation.retrieval
    training = eval_training(ws.cfg)
    per_language, predictions, examples = {}, [], []
    for language, data in sets.items():
        encoded = ws.encode(task, data, tokenizer, options.max_length, prefix=options.prefix)
        vectors = task.embed(
            encoder,
            encoded,
            layer=options.layer,
            pad_id=tokenizer.pad_token_id,
            batch_tokens=training.eval_batch_tokens,
            precision=precision,
        )
        per_language[language], found, stats = task.score_embeddings(vectors, data, task.spec.metrics)
        predictions.append(pd.DataFrame({"task": task.name, "language": language, "retrieved": found}))
        examples.append(example_rows(data, stats))
    sizes = {k: sum(e.label[0] == "source" for e in v.examples) for k, v in sets.items()}
    return language_table(task.name, split, per_language, sizes, "en"), predictions, examples


# --- evaluation ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _EvalModel:
    files: tracking.ModelFiles
    label: str  # how the model was given
    seen: leakage.Seen
    tags: dict[str, str]
    language: str | None  # its training language, when recorded


def _eval_model(ws: Workspace, model: TrainedModel | str) -> _EvalModel:
    if model == BASE_MODEL:
        source = Path(modeling.resolve_source(ws.cfg.model.name_or_path))
        return _EvalModel(tracking.ModelFiles(source, source), ws.cfg.model.name_or_path, {}, {}, None)
    if isinstance(model, TrainedModel):
        return _EvalModel(
            model.files, model.uri, model.seen, {f"{TAG}model_run_id": model.run_id}, model.language
        )
    reference = tracking.resolve_reference(model, "evaluation.model")
    seen = tracking.read_run_json(reference.run_id, SEEN_ARTIFACT) or {}
    tags = {f"{TAG}model_run_id": reference.run_id}
    if reference.name:
        tags[f"{TAG}model_version"] = f"{reference.name}/{reference.version}"
    language = (reference.tags or {}).get(f"{TAG}language")
    return _EvalModel(tracking.download_model(reference), model, seen, tags, language)


def _eval_sets(ws: Workspace, entry: EvalTaskConfig, seen: leakage.Seen):
    sets, excluded = {}, {}
    for language in entry.languages:
        data = ws.examples(entry.task, language, entry.split, None)
        kept, dropped = leakage.exclude_seen(data, seen)
        kept = _limit(ws, kept, entry.max_examples)
        if len(kept) == 0:
            raise DataError.at(
                ", ".join(data.files),
                "",
                f"no {data.split} examples left for {language!r} after removing {dropped} seen in training",
                0,
                "held-out examples",
            )
        sets[language], excluded[f"{entry.task}/{language}"] = kept, dropped
    return sets, excluded


def evaluate(
    ws: Workspace, model: TrainedModel | str, parent_run_id: str | None = None, stage_key: str | None = None
) -> Evaluated:
    """Zero-shot evaluation of `model` on every configured task and language in ONE run.

    Each task is scored with the model's head trained on it, else a head of the same type and labels
    (XQuAD with a TyDiQA head); retrieval tasks use the encoder alone. Precision, threads and batching
    follow the target stage's training settings; `mean_non_<lang>` leaves out the model's training
    language.
    """
    cfg = ws.cfg
    source = _eval_model(ws, model)
    entries = resolve.evaluation_tasks(cfg)
    types = {e.task: resolve.catalog(cfg).task(e.task) for e in entries}
    for task in types.values():
        if (
            task.trainable
            and modeling.find_head(source.files.model_dir, task.name, task.head_signature()) is None
        ):
            raise _missing_head(task, source.label, "head")
    plan = [(e, *_eval_sets(ws, e, source.seen)) for e in entries]
    tokenizer = modeling.load_tokenizer(str(source.files.tokenizer_dir))
    train_language = source.language or (cfg.target.language if cfg.target else "en")
    tags = source.tags | {
        f"{TAG}stage": "evaluate",
        f"{TAG}task": "+".join(types),
        f"{TAG}model": source.label,
        f"{TAG}stage_key": stage_key or "",
    }
    all_sets = [s for _, sets, _ in plan for s in sets.values()]
    runtime = stage_runtime(eval_training(cfg))
    title = f"evaluate {'+'.join(types)}"
    with recorded_run(ws, title, tags, parent_run_id, all_sets, runtime) as run_id:
        excluded = {k: v for _, _, ex in plan for k, v in ex.items()}
        tracking.log_metrics({f"leakage_guard/{k}/excluded": n for k, n in excluded.items()})
        tables, predictions, examples = [], [], []
        for entry, sets, _ in plan:
            table, rows, outcomes = _evaluate_task(
                ws, types[entry.task], entry, sets, source, tokenizer, train_language, runtime.precision
            )
            tables.append(table)
            predictions.extend(rows)
            examples.extend(outcomes)
            figure = plots.language_scores(
                table, types[entry.task].spec.headline_metric, f"{entry.task}/{entry.split}"
            )
            tracking.log_figure(figure, f"evaluation/{entry.task}.png")
            plots.close(figure)
        table = pd.concat(tables, ignore_index=True)
        tracking.log_metrics(table_metrics(table))
        tracking.log_table(table, "evaluation/languages")
        outcomes = pd.concat(examples, ignore_index=True)
        tracking.log_parquet(outcomes, EXAMPLES_ARTIFACT)
        if cfg.evaluation.save_predictions:
            tracking.log_table(pd.concat(predictions, ignore_index=True), "evaluation/predictions")
    return Evaluated(run_id, table, excluded, outcomes)


def _evaluate_task(
    ws, task: TaskType, entry: EvalTaskConfig, sets, source: _EvalModel, tokenizer, train_language, precision
):
    training = eval_training(ws.cfg)
    if not task.trainable:
        encoder = modeling.load_encoder(source.files.model_dir).to(modeling.device())
        return _retrieval_table(ws, task, sets, encoder, tokenizer, entry.split, precision)
    net = modeling.load_for_task(source.files.model_dir, task.name, task.head_signature()).to(
        modeling.device()
    )
    per_language, rows, examples = {}, [], []
    for language, data in tqdm(sets.items(), desc=f"evaluate {task.name}", leave=False):
        encoded = ws.encode(task, data, tokenizer)
        scored = evaluate_set(
            net,
            task,
            data,
            encoded,
            pad_id=tokenizer.pad_token_id,
            batch_tokens=training.eval_batch_tokens,
            precision=precision,
        )
        per_language[language] = scored.scores
        rows.append(prediction_rows(task, data, scored.predictions))
        examples.append(example_rows(data, task.example_stats(scored.predictions, data)))
    sizes = {k: len(v) for k, v in sets.items()}
    return language_table(task.name, entry.split, per_language, sizes, train_language), rows, examples
