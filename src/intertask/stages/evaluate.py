"""The evaluation stage: one run scores a model on every configured task and language."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from intertask import tracking
from intertask.compute import modeling
from intertask.compute.evaluation import (
    evaluate_set,
    example_rows,
    language_table,
    prediction_rows,
    table_metrics,
)
from intertask.config import BASE_MODEL, EvalTaskConfig, resolve
from intertask.data import leakage
from intertask.errors import DataError
from intertask.metrics import EXAMPLES_ARTIFACT
from intertask.report import plots
from intertask.stages.common import (
    SEEN_ARTIFACT,
    TAG,
    Evaluated,
    TrainedModel,
    eval_training,
    missing_head,
    recorded_run,
    stage_runtime,
)
from intertask.stages.probes import limit, retrieval_table
from intertask.study.workspace import Workspace
from intertask.tasks.base import TaskType, label_notice
from intertask.tasks.qa import NULL_THRESHOLDS
from intertask.tasks.types import task_type


@dataclass(frozen=True)
class _EvalModel:
    files: tracking.ModelFiles
    label: str  # how the model was given
    seen: leakage.Seen
    tags: dict[str, str]
    language: str | None  # its training language, when recorded
    model_id: str | None = None  # the MLflow logged model, when there is one: the metrics link to it


def _eval_model(ws: Workspace, model: TrainedModel | str) -> _EvalModel:
    if model == BASE_MODEL:
        source = Path(modeling.resolve_source(ws.cfg.model.name_or_path))
        return _EvalModel(tracking.ModelFiles(source, source), ws.cfg.model.name_or_path, {}, {}, None)
    if isinstance(model, TrainedModel):
        logged_id = model.logged.model_id if model.logged else None
        return _EvalModel(
            model.files,
            model.uri,
            model.seen,
            {f"{TAG}model_run_id": model.run_id},
            model.language,
            logged_id,
        )
    reference = tracking.resolve_reference(model, "evaluation.model")
    seen = tracking.read_run_json(reference.run_id, SEEN_ARTIFACT) or {}
    tags = {f"{TAG}model_run_id": reference.run_id}
    if reference.name:
        tags[f"{TAG}model_version"] = f"{reference.name}/{reference.version}"
    language = (reference.tags or {}).get(f"{TAG}language")
    return _EvalModel(tracking.download_model(reference), model, seen, tags, language, reference.model_id)


def _eval_sets(ws: Workspace, entry: EvalTaskConfig, seen: leakage.Seen):
    sets, excluded, notices = {}, {}, []
    for language in entry.languages:
        data = ws.evaluation_examples(entry.task, language, entry.split)
        kept, reasons = leakage.left_out(data, seen)
        dropped = sum(reasons.values())
        notices += leakage.notices(data, reasons)  # nothing silent: said here, a metric and a tag on the run
        kept = limit(ws, kept, entry.max_examples)
        if len(kept) == 0:
            raise DataError.at(
                ", ".join(data.files),
                "",
                f"no {data.split} examples left for {language!r} after removing {dropped} seen in training",
                0,
                "held-out examples",
            )
        sets[language], excluded[f"{entry.task}/{language}"] = kept, dropped
    return sets, excluded, notices


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
    reordered = _matched_heads(types.values(), source)
    plan = [(e, *_eval_sets(ws, e, source.seen)) for e in entries]
    tokenizer = modeling.load_tokenizer(str(source.files.tokenizer_dir))
    train_language = source.language or (cfg.target.language if cfg.target else "en")
    tags = source.tags | {
        f"{TAG}stage": "evaluate",
        f"{TAG}task": "+".join(types),
        f"{TAG}model": source.label,
        f"{TAG}stage_key": stage_key or "",
    }
    all_sets = [s for _, sets, *_ in plan for s in sets.values()]
    runtime = stage_runtime(eval_training(cfg))
    title = f"evaluate {'+'.join(types)}"
    description = _description(source, entries)
    with recorded_run(ws, title, tags, parent_run_id, all_sets, runtime, description) as run_id:
        excluded = {k: v for _, _, ex, _ in plan for k, v in ex.items()}
        tracking.log_metrics({f"leakage_guard/{k}/excluded": n for k, n in excluded.items()})
        notices = list(reordered.items())
        tracking.record_notices(notices + [n for *_, found in plan for n in found])
        tables, predictions, examples = _score(
            ws, plan, types, source, tokenizer, train_language, runtime.precision, excluded
        )
        table = pd.concat(tables, ignore_index=True)
        tracking.log_metrics(table_metrics(table), model_id=source.model_id)  # linked to the model
        tracking.log_table(table, "evaluation/languages")
        outcomes = pd.concat(examples, ignore_index=True)
        tracking.log_parquet(outcomes, EXAMPLES_ARTIFACT)
        if cfg.evaluation.save_predictions:
            shown = pd.concat(predictions, ignore_index=True)
            tagging = {name for name, t in types.items() if t.head == "token_classification"}
            tracking.log_table(shown, "evaluation/predictions", predictions_html(shown, tagging))
    return Evaluated(run_id, table, excluded, outcomes)


def _matched_heads(types, source: _EvalModel) -> dict[str, str]:
    """Each trainable task's head in the model, found by label names; a task without one stops the
    stage. Returns the notices (what -> line) of heads whose labels are the task's in another order,
    or a superset of them (predictions restricted to the task's labels)."""
    reordered = {}
    for task in types:
        if not task.trainable:
            continue
        found = modeling.match_head(source.files.model_dir, task.name, task.head_signature())
        if found is None:
            why = modeling.head_problems(source.files.model_dir, task.head_signature())
            raise missing_head(task, source.label, "head", why)
        if found[1].reordered:
            what, line = label_notice(
                task.name, task.spec.labels, found[0].task or "the model", found[0].signature[1], found[1]
            )
            reordered[what] = line
    return reordered


def _description(source: _EvalModel, entries) -> str:
    return (
        f"Evaluates {source.label} on "
        + "; ".join(f"{e.task} ({e.split}: {', '.join(e.languages)})" for e in entries)
        + ", one metric per task, split and language, and per-example statistics for the report."
    )


def _score(ws, plan, types, source: _EvalModel, tokenizer, train_language, precision, excluded):
    """Every planned task scored in the open run, its language plot logged: (language tables,
    prediction rows, per-example outcomes), each a list of frames."""
    tables, predictions, examples = [], [], []
    for entry, sets, *_ in plan:
        left_out = {lang: excluded[f"{entry.task}/{lang}"] for lang in sets}
        task = types[entry.task]
        table, rows, outcomes = _evaluate_task(
            ws, task, entry, sets, source, tokenizer, train_language, precision, left_out
        )
        tables.append(table)
        predictions.extend(rows)
        examples.extend(outcomes)
        figure = plots.language_scores(table, task.spec.headline_metric, f"{entry.task}/{entry.split}")
        tracking.log_figure(figure, f"evaluation/{entry.task}.png")
        plots.close(figure)
    return tables, predictions, examples


def _evaluate_task(
    ws,
    task: TaskType,
    entry: EvalTaskConfig,
    sets,
    source: _EvalModel,
    tokenizer,
    train_language,
    precision,
    left_out: dict[str, int],
):
    training = eval_training(ws.cfg)
    if not task.trainable:
        encoder = modeling.load_encoder(source.files.model_dir).to(modeling.device())
        return retrieval_table(ws, task, sets, encoder, tokenizer, entry.split, precision, left_out)
    net = modeling.load_for_task(source.files.model_dir, task.name, task.head_signature()).to(
        modeling.device()
    )
    thresholds = source.files.model_dir / NULL_THRESHOLDS
    if task.spec.no_answer and thresholds.is_file():  # chosen on dev by the model's training stage
        chosen = json.loads(thresholds.read_text()).get(task.name)
        if chosen is not None:
            task = task_type(replace(task.spec, null_threshold=chosen))
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
    across = train_language if task.spec.languages_are == "languages" else None  # domains: no mean_non_
    table = language_table(task.name, entry.split, per_language, sizes, across, left_out)
    return table, rows, examples


PREDICTIONS_STYLE = (
    "<style>body{font-family:sans-serif;font-size:14px} table{border-collapse:collapse;margin:4px 0 14px}"
    " td,th{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}"
    " .wrong{background:#fdd;color:#a00;font-weight:bold} th{background:#f4f4f4}</style>"
)


def predictions_html(frame: pd.DataFrame, tagging: set[str]) -> str:
    """The predictions page: a tagged sentence as one word per column with its gold and predicted tag
    beneath, a wrong tag in red; other tasks one example per row, a wrong prediction in red."""
    parts = [PREDICTIONS_STYLE]
    for (task, language), rows in frame.groupby(["task", "language"], sort=False):
        parts.append(f"<h3>{html.escape(str(task))} / {html.escape(str(language))}</h3>")
        rows = rows.dropna(axis=1, how="all")  # the columns of this task's rows (retrieval has its own)
        if not {"text", "gold", "prediction"} <= set(rows.columns):
            parts.append(rows.to_html(index=False, na_rep=""))
            continue
        if task in tagging:
            parts.extend(_tagged_html(r) for r in rows.itertuples())
            continue
        head = "<tr><th>uid</th><th>text</th><th>gold</th><th>prediction</th></tr>"
        body = "".join(
            f"<tr><td>{r.uid}</td><td>{'<br>'.join(html.escape(t) for t in str(r.text).split(' ||| '))}</td>"
            f"<td>{html.escape(str(r.gold))}</td><td class='{'' if r.gold == r.prediction else 'wrong'}'>"
            f"{html.escape(str(r.prediction))}</td></tr>"
            for r in rows.itertuples()
        )
        parts.append(f"<table>{head}{body}</table>")
    return "".join(parts)


def _tagged_html(r) -> str:
    words, gold, predicted = str(r.text).split(" ||| "), str(r.gold).split(), str(r.prediction).split()
    if not len(words) == len(gold) == len(predicted):  # a word that holds " ||| ": shown as text
        return f"<p>{html.escape(str(r.text))}<br>gold: {html.escape(str(r.gold))}<br>predicted: {html.escape(str(r.prediction))}</p>"
    marks = ["" if g == p else " class='wrong'" for g, p in zip(gold, predicted, strict=True)]

    def row(name, cells, cls=None):
        return (
            f"<tr><th>{name}</th>"
            + "".join(f"<td{cls[i] if cls else ''}>{html.escape(c)}</td>" for i, c in enumerate(cells))
            + "</tr>"
        )

    wrong = sum(1 for m in marks if m)
    return (
        f"<table><caption style='text-align:left'>uid {r.uid}: {wrong} of {len(words)} tag(s) wrong</caption>"
        + row("word", words)
        + row("gold", gold)
        + row("predicted", predicted, marks)
        + "</table>"
    )
