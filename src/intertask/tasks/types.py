"""Task types: how a task's examples become model inputs, and model outputs become scored predictions.

A type is a small class around a TaskSpec. Later types (tagging, QA, multiple choice, retrieval) add
classes here behind the same methods.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from intertask import metrics
from intertask.tasks.examples import ExampleSet
from intertask.tasks.spec import TaskSpec


@dataclass(frozen=True)
class EncodedSet:
    """Tokenized examples, unpadded: one int32 array per example and feature."""

    features: dict[str, list[np.ndarray]]  # input_ids, token_type_ids (if the tokenizer makes them)
    labels: np.ndarray  # (n,) class indices or (n, labels) 0/1 floats
    uids: np.ndarray  # (n,) source positions

    def __len__(self) -> int:
        return len(self.uids)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(ids) for ids in self.features["input_ids"]], dtype=np.int64)


class ClassificationTask:
    """One text or a text pair -> one of the labels (AutoModelForSequenceClassification)."""

    head = "sequence_classification"
    label_kind = metrics.SINGLE
    version = 1  # bump when encode() changes, to invalidate tokenization caches

    def __init__(self, spec: TaskSpec):
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    def model_kwargs(self) -> dict:
        labels = self.spec.labels
        return {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)},
            "problem_type": "single_label_classification",
        }

    def encode(self, data: ExampleSet, tokenizer, max_length: int) -> EncodedSet:
        columns = list(zip(*(e.texts for e in data.examples), strict=True)) if data.examples else [[]]
        pair = columns[1] if len(columns) == 2 else None
        enc = tokenizer(
            list(columns[0]), list(pair) if pair else None, truncation=True, max_length=max_length
        )
        keep = [k for k in ("input_ids", "token_type_ids") if k in enc]
        features = {k: [np.asarray(v, dtype=np.int32) for v in enc[k]] for k in keep}
        return EncodedSet(features, self.gold(data), data.uids)

    def gold(self, data: ExampleSet) -> np.ndarray:
        return np.array([e.label for e in data.examples], dtype=np.int64)

    def predict(self, logits: np.ndarray) -> np.ndarray:
        return logits.argmax(axis=-1)

    def score(self, predictions: np.ndarray, gold: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
        return metrics.score(names, predictions, gold)

    def label_names(self, prediction) -> str:
        return self.spec.labels[int(prediction)]


class MultiLabelTask(ClassificationTask):
    """One text -> any subset of the labels (sigmoid per label, threshold 0.5)."""

    label_kind = metrics.MULTI

    def model_kwargs(self) -> dict:
        return {**super().model_kwargs(), "problem_type": "multi_label_classification"}

    def gold(self, data: ExampleSet) -> np.ndarray:
        out = np.zeros((len(data), len(self.spec.labels)), dtype=np.float32)
        for row, example in enumerate(data.examples):
            out[row, list(example.label)] = 1.0
        return out

    def predict(self, logits: np.ndarray) -> np.ndarray:
        return (logits > 0).astype(np.int64)  # sigmoid(x) > 0.5  <=>  x > 0

    def score(self, predictions: np.ndarray, gold: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
        return metrics.score(names, predictions, gold.astype(np.int64))

    def label_names(self, prediction) -> str:
        return ",".join(self.spec.labels[i] for i in np.flatnonzero(prediction))


TASK_TYPES = {"classification": ClassificationTask, "multilabel_classification": MultiLabelTask}


def task_type(spec: TaskSpec) -> ClassificationTask:
    return TASK_TYPES[spec.type](spec)
