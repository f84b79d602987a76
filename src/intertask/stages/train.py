"""The training stages: `intermediate` (one or several tasks) and `target`, each from the base model
or from a model an earlier stage (or a registry reference) hands on."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from intertask import pretrained, tracking
from intertask.compute import adapters, checkpoints, hardware, modeling
from intertask.compute.checkpoints import Checkpointer
from intertask.compute.evaluation import predict_outputs
from intertask.compute.training import TrainPart, train
from intertask.config import StageConfig, resolve
from intertask.data import leakage
from intertask.metrics import BEST_DEV, REFERENCE_DEV, learnt_margin
from intertask.report import plots
from intertask.stages.common import (
    SEEN_ARTIFACT,
    TAG,
    StartPoint,
    TrainedModel,
    missing_head,
    recorded_run,
    stage_runtime,
)
from intertask.stages.probes import run_probes
from intertask.stages.publish import log_stage_model
from intertask.study import identity
from intertask.study.workspace import Workspace, stage_data
from intertask.tasks.base import ExampleSet, TaskType
from intertask.tasks.qa import NULL_THRESHOLDS
from intertask.tracking import remote_checkpoints, serving


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


@dataclass(frozen=True)
class _Loaded:
    """Everything a training stage needs, loaded and checked before its run opens."""

    which: str  # "intermediate" or "target"
    stage: StageConfig
    types: dict[str, TaskType]
    data: dict[str, tuple[ExampleSet, ExampleSet]]  # task -> (train, dev)
    start: StartPoint
    heads: list[modeling.HeadSpec]
    tokenizer: object
    nets: dict[str, torch.nn.Module]
    peft_params: dict[str, object]
    stacked: Path | None  # the start model's adapter this stage stacks on
    runtime: hardware.Runtime

    @property
    def tasks(self) -> str:
        return "+".join(self.types)

    @property
    def chain(self) -> tuple[str, ...]:
        return (*self.start.task_chain, self.tasks)

    @property
    def sets(self) -> list[ExampleSet]:
        return [s for pair in self.data.values() for s in pair]

    @property
    def encoder(self):
        return next(iter(self.nets.values())).base_model


def _load(ws: Workspace, which: str, init: TrainedModel | str | None) -> _Loaded:
    """Data, start model, tokenizer and heads (with adapters attached), on the stage's device."""
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
            raise missing_head(types[spec.task], start.label, "target.keep_head")
    tokenizer = modeling.load_tokenizer(str(start.files.tokenizer_dir))
    nets = modeling.build_models(
        str(start.files.model_dir),
        heads,
        seed=cfg.seed,
        freeze_word_embeddings=cfg.model.freeze_word_embeddings,
        sparse_word_embeddings=cfg.model.sparse_word_embeddings,
    )
    encoder = next(iter(nets.values())).base_model
    peft_params, stacked = {}, None
    if cfg.peft is not None:
        if cfg.peft.between_stages == "stack":
            stacked = _start_adapter(start)
        torch.manual_seed(cfg.seed)  # the adapters' initialisation
        peft_params = adapters.attach(encoder, cfg.peft, encoder.config.model_type, stacked, start.label)
    runtime = stage_runtime(stage.training)
    for net in nets.values():
        net.to(modeling.device())
    return _Loaded(which, stage, types, data, start, heads, tokenizer, nets, peft_params, stacked, runtime)


def _checkpointer(ws: Workspace, loaded: _Loaded, stage_key: str | None, tags: dict):
    """The stage's checkpoint folder, named by its content key, and this process's claim on it; a
    checkpoint left there by an interrupted run is continued, and the new run is tagged with the run
    it resumes. While another process trains the same stage (and holds the claim), this one keeps no
    checkpoints: (None, None)."""
    key = stage_key or resume_key(ws, loaded.which, loaded.start, loaded.sets)
    # with a tracking server, checkpoints go to the stage run's artifacts as well: a retry on a node
    # that does not see this disk resumes from there (tracking/remote_checkpoints.py)
    remote = stage_key is not None and remote_checkpoints.wanted(
        ws.cfg.tracking.checkpoint_artifacts, tracking.current_uri()
    )
    checkpointer = Checkpointer(
        checkpoint_folder(key),
        loaded.stage.training.checkpoint_every_steps,
        remote_checkpoints.Uploader() if remote else None,
    )
    held = checkpoints.claim(checkpointer.folder)
    if held is None:
        print(
            f"{checkpointer.folder}: another process is training this stage now; this run keeps no "
            "checkpoints",
            file=sys.stderr,
        )
        return None, None
    owner = checkpointer.folder / "run.json"
    if remote and not (checkpointer.folder / "latest").is_file():
        earlier = remote_checkpoints.fetch(ws.experiment(), key, checkpointer.folder)
        if earlier is not None:
            owner.write_text(json.dumps({"run_id": earlier}))
    if (checkpointer.folder / "latest").is_file() and owner.is_file():
        tags[f"{TAG}resumed_from_run"] = json.loads(owner.read_text())["run_id"]
    return checkpointer, held


def _save(ws: Workspace, loaded: _Loaded, folder: Path) -> None:
    """The trained model into `folder` (with PEFT: the adapter is logged on its own, then merged, so
    that a plain model is saved), with the task description serving reads."""
    cfg = ws.cfg
    if cfg.peft is not None:
        encoder = loaded.encoder
        merged = adapters.save_and_merge(
            encoder, cfg.peft, encoder.config.model_type, loaded.start.label, folder, loaded.stacked
        )
        tracking.log_artifacts(folder / adapters.ADAPTER_DIR, "adapter")
        tracking.log_metrics({"peft/merged_layers": merged})
    modeling.save(loaded.nets, loaded.heads, loaded.tokenizer, folder)
    serving.write_task(folder, loaded.types[loaded.heads[0].task].spec, cfg.model.max_length)


def train_stage(
    ws: Workspace,
    which: str,
    init: TrainedModel | str | None = None,
    parent_run_id: str | None = None,
    stage_key: str | None = None,
    on_epoch=None,
    log_model: bool = True,
    resumable: bool = True,
    params: dict | None = None,
) -> TrainedModel:
    """Train the `intermediate` (one or several tasks) or `target` stage, starting from `init`.

    `on_epoch(epoch, dev score)` sees every epoch (tuning reports and prunes there); `log_model=False`
    keeps the trained model in the workdir only (a tuning trial: only the best one is logged).
    A resumable stage checkpoints into a folder named by its content key; when this stage was
    interrupted before (same config, data, start point and code), it continues from there in a new run
    tagged `intertask.resumed_from_run` (and `resumed_at_step`). `params` are logged on its run too
    (a tuning trial's number)."""
    loaded = _load(ws, which, init)
    stage, start = loaded.stage, loaded.start
    name = identity.BY_STAGE[which].job
    tags = {
        f"{TAG}stage": name,
        f"{TAG}task": loaded.tasks,
        f"{TAG}language": stage.language,
        f"{TAG}task_chain": "-".join(loaded.chain),
        f"{TAG}init_model": start.label,
        f"{TAG}init_run_id": start.run_id or "",
        f"{TAG}stage_key": stage_key or "",
    }
    checkpointer, held = None, None
    if resumable and stage.training.checkpoints:
        checkpointer, held = _checkpointer(ws, loaded, stage_key, tags)
    try:
        return _run(ws, loaded, name, tags, parent_run_id, on_epoch, log_model, checkpointer, params or {})
    finally:
        if held is not None:
            held.release()


def _run(ws, loaded: _Loaded, name, tags, parent_run_id, on_epoch, log_model, checkpointer, params):
    """The stage's run: train, log, save, probe, log the model; then its checkpoints go."""
    stage, start, types, which = loaded.stage, loaded.start, loaded.types, loaded.which
    title = f"{name} {loaded.tasks} ({stage.language})"
    logs = log_model and resolve.logs_model(ws.cfg, which)
    description = (
        f"Trains {loaded.tasks} ({stage.language}) for {stage.training.epochs} epoch(s) from "
        f"{start.label}; keeps the best dev epoch"
        + (" and logs the model" if logs else "; its model serves this run only (tracking.log_models)")
        + (" (registered)" if ws.cfg.tracking.register_models and logs else "")
        + "."
    )
    with recorded_run(ws, title, tags, parent_run_id, loaded.sets, loaded.runtime, description) as run_id:
        if params:  # first: a trial's number, even if its worker dies right after
            tracking.log_params(params)
        if checkpointer is not None:
            checkpointer.folder.mkdir(parents=True, exist_ok=True)
            (checkpointer.folder / "run.json").write_text(json.dumps({"run_id": run_id}))
        tracking.log_params(
            modeling.parameter_counts(loaded.nets)
            | loaded.peft_params
            | {f"stage.selection_metric.{n}": resolve.selection_metric(ws.cfg, stage, n) for n in types}
        )
        result, steps = _train(ws, loaded, name, on_epoch, checkpointer)
        if result.resumed_at_step is not None:
            tracking.set_tags({f"{TAG}resumed_at_step": result.resumed_at_step})
        _log_training(result, steps, f"{name} {loaded.tasks}")
        references = _references(loaded)
        tracking.log_metrics(references)
        tracking.record_notices(not_learnt_notices(ws, loaded, result.best_dev, references))
        seen = leakage.merge(
            start.seen, *(leakage.record({}, s, types[s.task].spec.parallel) for s in loaded.sets)
        )
        tracking.log_json(seen, SEEN_ARTIFACT)
        folder = ws.workdir / run_id
        _save(ws, loaded, folder)
        thresholds = _null_thresholds(ws, loaded)
        if thresholds:  # SQuAD v2.0-style tasks: chosen on dev, used by every evaluation of this model
            (folder / NULL_THRESHOLDS).write_text(json.dumps(thresholds))
            tracking.log_metrics({f"null_threshold/{task}": value for task, value in thresholds.items()})
        encoder = loaded.nets[loaded.heads[0].task].base_model
        probes = run_probes(ws, encoder, loaded.tokenizer, which, loaded.runtime.precision)
        logged = None
        if log_model:
            head = loaded.heads[0].head
            logged = log_stage_model(ws, folder, head, which, stage.language, loaded.chain, start, run_id)
    if checkpointer is not None:
        checkpointer.clear()  # the stage is done: nothing to resume
        if checkpointer.on_save is not None and checkpointer.on_save.saved:
            remote_checkpoints.remove(run_id)
    files = tracking.ModelFiles(folder, folder)
    return TrainedModel(run_id, files, logged, loaded.chain, seen, result.best_dev, stage.language, probes)


def _references(loaded: _Loaded) -> dict[str, float]:
    """What each task's dev set gives a model that learnt nothing (the training set's majority label
    for every example, or chance where that is higher), beside how many dev examples there are: the
    report reads a baseline within noise of it as a target that was not learnt."""
    out = {}
    for name, task in loaded.types.items():
        train, dev = loaded.data[name][0], loaded.data[name][1]
        for metric, value in task.reference_scores(train, dev).items():
            out[f"{REFERENCE_DEV}/{name}/{metric}"] = value
        out[f"dev_examples/{name}"] = len(dev)
    return out


def not_learnt_notices(
    ws: Workspace, loaded: _Loaded, best_dev: dict, references: dict
) -> list[tuple[str, str]]:
    """(what, line) for each task this stage trained whose kept dev score is within noise of a model
    that learnt nothing (metrics.learnt_margin, this one seed: the binomial part), said when the stage
    ends -- before any later stage or evaluation uses its model. Tasks with no such model (extractive
    QA) are not checked here."""
    out = []
    for name in loaded.types:
        metric = resolve.selection_metric(ws.cfg, loaded.stage, name)
        dev = best_dev.get(name, {}).get(metric)
        reference = references.get(f"{REFERENCE_DEV}/{name}/{metric}")
        if dev is None or reference is None:
            continue
        margin, noise = learnt_margin([dev], reference, references.get(f"dev_examples/{name}", 0))
        if margin <= noise:
            out.append(
                (
                    f"not_learnt.{loaded.which}.{name}",
                    f"{loaded.which} stage {name} learnt nothing: dev {metric} {100 * dev:.1f}, a model that "
                    f"learnt nothing {100 * reference:.1f} (noise +-{100 * noise:.1f}); what starts from it "
                    "measures an untrained stage",
                )
            )
    return out


def _null_thresholds(ws: Workspace, loaded: _Loaded) -> dict[str, float]:
    """For each trained QA task with "no answer": the null threshold with the best dev F1 of the model
    as trained (the best epoch's weights)."""
    out = {}
    for name, task in loaded.types.items():
        if not task.spec.no_answer:
            continue
        dev = loaded.data[name][1]
        encoded = ws.encode(task, dev, loaded.tokenizer)
        outputs = predict_outputs(
            loaded.nets[name],
            task,
            encoded,
            pad_id=loaded.tokenizer.pad_token_id,
            batch_tokens=loaded.stage.training.eval_batch_tokens,
            precision=loaded.runtime.precision,
        )
        out[name] = task.best_null_threshold(*task.spans_and_margins(outputs, encoded, dev), dev)
    return out


def checkpoint_folder(key: str) -> Path:
    """Where a stage's resumable checkpoints live: $INTERTASK_CHECKPOINTS, else <cache>/checkpoints."""
    root = os.environ.get("INTERTASK_CHECKPOINTS") or pretrained.cache_root() / "checkpoints"
    return Path(root).expanduser() / key[:32]


def resume_key(ws: Workspace, which: str, start: StartPoint, sets: list[ExampleSet]) -> str:
    """A stage run outside a pipeline: what it trains, from what, on which data, with which code."""
    parts = identity.training_inputs(ws.cfg, identity.BY_STAGE[which].job) | {
        "start": [start.label, start.run_id],
        "data": sorted(s.fingerprint for s in sets),
    }
    return identity.content_hash(parts)


def _train(ws: Workspace, loaded: _Loaded, name: str, on_epoch=None, checkpointer=None):
    cfg, stage, tokenizer = ws.cfg, loaded.stage, loaded.tokenizer
    parts = [
        TrainPart(
            n,
            t,
            loaded.nets[n],
            ws.encode(t, loaded.data[n][0], tokenizer),
            ws.encode(t, loaded.data[n][1], tokenizer),
            loaded.data[n][1],
            resolve.selection_metric(cfg, stage, n),
        )
        for n, t in loaded.types.items()
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
        desc=f"{name} {loaded.tasks}",
        on_epoch=on_epoch,
        checkpointer=checkpointer,
        runtime=loaded.runtime,
    )
    return result, steps


def _log_training(result, steps, title: str) -> None:
    best = {
        f"{BEST_DEV}/{task}/{m}": v for task, scores in result.best_dev.items() for m, v in scores.items()
    }
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
