"""Batched prediction and scoring for any task type, one language or many -> pandas tables."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from intertask import metrics
from intertask.compute.batching import collate, token_budget_batches
from intertask.compute.hardware import FP32, Precision
from intertask.metrics import EXAMPLE_KEYS
from intertask.tasks.base import EncodedSet, ExampleSet, TaskType

TABLE_COLUMNS = ["task", "split", "language", "metric", "value", "examples", "left_out"]


@torch.inference_mode()
def predict_outputs(
    model,
    task: TaskType,
    encoded: EncodedSet,
    *,
    pad_id: int,
    batch_tokens: int,
    precision: Precision = FP32,
    desc: str | None = None,
) -> list[np.ndarray]:
    """The task's per-row outputs for every row of `encoded`, in its order (length-sorted batches)."""
    model.eval()
    device = next(model.parameters()).device
    outputs: list = [None] * len(encoded)
    batches = token_budget_batches(encoded.lengths, batch_tokens)
    for rows in tqdm(batches, desc=desc, disable=desc is None, leave=False, mininterval=2):
        batch = {k: v.to(device) for k, v in collate(encoded, rows, pad_id, with_targets=False).items()}
        with precision.autocast(device.type):
            output = model(**batch)
        for row, value in zip(rows, task.outputs(output, rows, encoded), strict=True):
            outputs[row] = value
    return outputs


@dataclass(frozen=True)
class Scored:
    scores: dict[str, float]
    predictions: list  # one per example


def evaluate_set(
    model,
    task: TaskType,
    data: ExampleSet,
    encoded: EncodedSet,
    *,
    pad_id: int,
    batch_tokens: int,
    precision: Precision = FP32,
    names: tuple[str, ...] | None = None,
) -> Scored:
    outputs = predict_outputs(
        model, task, encoded, pad_id=pad_id, batch_tokens=batch_tokens, precision=precision
    )
    predictions = task.decode(outputs, encoded, data)
    return Scored(task.score(predictions, data, names or task.spec.metrics), predictions)


def language_table(
    task: str,
    split: str,
    per_language: dict[str, dict[str, float]],
    sizes: dict[str, int],
    train_language: str | None,
    left_out: dict[str, int] | None = None,
) -> pd.DataFrame:
    """Tidy rows (task, split, language, metric, value, examples, left_out) plus the cross-language
    means; `left_out`: test examples the leakage guard removed per language (a mean: the sum over the
    languages it averages, as `examples`)."""
    left = left_out or {}
    rows = [
        {
            "task": task,
            "split": split,
            "language": lang,
            "metric": m,
            "value": v,
            "examples": sizes[lang],
            "left_out": left.get(lang, 0),
        }
        for lang, scores in per_language.items()
        for m, v in scores.items()
    ]
    metric_names = next(iter(per_language.values())).keys() if per_language else []
    aggregates = [(metrics.MEAN_ALL, ())]
    if train_language is not None and any(lang != train_language for lang in per_language):
        aggregates.append((f"mean_non_{train_language}", (train_language,)))
    for label, exclude in aggregates:
        for m in metric_names:
            value = metrics.mean_over_languages({lang: s[m] for lang, s in per_language.items()}, exclude)
            n = sum(size for lang, size in sizes.items() if lang not in exclude)
            gone = sum(left.get(lang, 0) for lang in sizes if lang not in exclude)
            rows.append(
                {
                    "task": task,
                    "split": split,
                    "language": label,
                    "metric": m,
                    "value": value,
                    "examples": n,
                    "left_out": gone,
                }
            )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def prediction_rows(task: TaskType, data: ExampleSet, predictions: list) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "task": data.task,
            "language": data.language,
            "split": data.split,
            "uid": data.uids,
            "key": [e.key for e in data.examples],
            "text": [" ||| ".join(e.texts) for e in data.examples],
            "gold": [task.show_gold(e) for e in data.examples],
            "prediction": [task.show(p) for p in predictions],
        }
    )


def example_rows(data: ExampleSet, stats: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per evaluated example: its uid (its position in the split's file, the same in every arm,
    so two models pair on it) and the statistics its metrics are recomputed from on a resample."""
    columns = {k: v for k, v in stats.items() if k != "uid"}
    uids = stats.get("uid", data.uids)
    frame = pd.DataFrame({"uid": np.asarray(uids, np.int64), **columns})
    return frame.assign(task=data.task, split=data.split, language=data.language)[[*EXAMPLE_KEYS, *columns]]


def metric_key(task: str, split: str, language: str, metric: str) -> str:
    """The one metric naming scheme: <task>/<split>/<language>/<metric>."""
    return f"{task}/{split}/{language}/{metric}"


def table_metrics(table: pd.DataFrame, prefix: str = "") -> dict[str, float]:
    return {
        prefix + metric_key(r.task, r.split, r.language, r.metric): float(r.value)
        for r in table.itertuples()
        if r.value is not None and not pd.isna(r.value)
    }
