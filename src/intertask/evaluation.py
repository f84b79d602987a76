"""Batched prediction and scoring, one language or many -> pandas tables."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from intertask import metrics
from intertask.encoding import collate, token_budget_batches
from intertask.tasks.examples import ExampleSet
from intertask.tasks.types import ClassificationTask, EncodedSet

TABLE_COLUMNS = ["task", "split", "language", "metric", "value", "examples"]


@torch.inference_mode()
def predict_logits(
    model,
    encoded: EncodedSet,
    *,
    pad_id: int,
    batch_tokens: int,
    bf16: bool,
    desc: str | None = None,
) -> np.ndarray:
    """Logits for every row of `encoded`, in its order; batches are length-sorted by token budget."""
    model.eval()
    device = next(model.parameters()).device
    out: np.ndarray | None = None
    batches = token_budget_batches(encoded.lengths, batch_tokens)
    for rows in tqdm(batches, desc=desc, disable=desc is None, leave=False, mininterval=2):
        batch = {k: v.to(device) for k, v in collate(encoded, rows, pad_id, with_labels=False).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(**batch).logits.float().cpu().numpy()
        if out is None:
            out = np.zeros((len(encoded), logits.shape[-1]), dtype=np.float32)
        out[rows] = logits
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


@dataclass(frozen=True)
class Scored:
    scores: dict[str, float]
    predictions: np.ndarray


def score_set(
    task: ClassificationTask, logits: np.ndarray, encoded: EncodedSet, names: tuple[str, ...]
) -> Scored:
    predictions = task.predict(logits)
    return Scored(task.score(predictions, encoded.labels, names), predictions)


def language_table(
    task: str,
    split: str,
    per_language: dict[str, dict[str, float]],
    sizes: dict[str, int],
    train_language: str | None,
) -> pd.DataFrame:
    """Tidy rows (task, split, language, metric, value, examples) plus the cross-language means."""
    rows = [
        {"task": task, "split": split, "language": lang, "metric": m, "value": v, "examples": sizes[lang]}
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
            rows.append(
                {"task": task, "split": split, "language": label, "metric": m, "value": value, "examples": n}
            )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def prediction_rows(task: ClassificationTask, data: ExampleSet, predictions: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "task": data.task,
            "language": data.language,
            "split": data.split,
            "uid": data.uids,
            "text": [" ||| ".join(e.texts)[:300] for e in data.examples],
            "gold": [task.label_names(g) for g in task.gold(data)] if len(data) else [],
            "prediction": [task.label_names(p) for p in predictions],
        }
    )


def metric_key(task: str, split: str, language: str, metric: str) -> str:
    """The one metric naming scheme: <task>/<split>/<language>/<metric>."""
    return f"{task}/{split}/{language}/{metric}"


def table_metrics(table: pd.DataFrame) -> dict[str, float]:
    return {
        metric_key(r.task, r.split, r.language, r.metric): float(r.value)
        for r in table.itertuples()
        if r.value is not None and not pd.isna(r.value)
    }
