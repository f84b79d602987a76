"""One text or a text pair -> one label (softmax) or any subset of labels (sigmoid per label)."""

from __future__ import annotations

import numpy as np

from intertask import metrics
from intertask.data.readers import Record
from intertask.errors import DataError
from intertask.tasks.base import EncodedSet, Example, ExampleSet, TaskType, row_arrays


class ClassificationTask(TaskType):
    """AutoModelForSequenceClassification over one text or a pair."""

    kind = metrics.SINGLE
    head = "sequence_classification"

    def model_kwargs(self) -> dict:
        return {**self.label_kwargs(), "problem_type": "single_label_classification"}

    def example(self, uid: int, record: Record) -> Example:
        spec = self.spec
        self.require_fields(record, (*spec.text_fields, spec.label_field))
        return Example(uid, tuple(str(record.fields[f]) for f in spec.text_fields), self.parse_label(record))

    def parse_label(self, record: Record):
        raw = record.fields[self.spec.label_field]
        if isinstance(raw, list):
            raise DataError.at(
                record.file,
                record.where,
                f"a list in label field {self.spec.label_field!r}",
                raw,
                "one label (use type: multilabel_classification for several)",
            )
        return self.label_index(raw, record)

    def encode(self, data: ExampleSet, tokenizer, max_length: int) -> EncodedSet:
        columns = list(zip(*(e.texts for e in data.examples), strict=True)) if data.examples else [[]]
        pair = list(columns[1]) if len(columns) == 2 else None
        enc = tokenizer(list(columns[0]), pair, truncation=True, max_length=max_length)
        inputs = {k: row_arrays(enc[k]) for k in ("input_ids", "token_type_ids") if k in enc}
        return EncodedSet(inputs, {"labels": self.gold(data)}, data.uids)

    def gold(self, data: ExampleSet) -> np.ndarray:
        return np.array([e.label for e in data.examples], dtype=np.int64)

    def outputs(self, output, rows, encoded) -> list[np.ndarray]:
        return list(output.logits.float().cpu().numpy())

    def decode(self, outputs, encoded, data) -> list:
        return [int(np.argmax(o)) for o in outputs]

    def constant_predictions(self, train: ExampleSet, data: ExampleSet) -> list:
        counts = np.bincount([e.label for e in train.examples], minlength=len(self.spec.labels))
        return [int(np.argmax(counts))] * len(data)

    def chance_scores(self, data: ExampleSet) -> dict[str, float]:
        """Uniform guesses over k labels: accuracy 1/k; a class of share p gets F1 2 p (1/k) / (p + 1/k)
        (precision p, recall 1/k, in expectation), averaged over the classes present."""
        k = len(self.spec.labels)
        shares = np.bincount(self.gold(data), minlength=k) / max(1, len(data))
        present = shares[shares > 0]
        return {"accuracy": 1 / k, "macro_f1": float(np.mean(2 * present / k / (present + 1 / k)))}

    def metric_inputs(self, predictions, data) -> tuple:
        return np.asarray(predictions), self.gold(data), {}

    def show(self, prediction) -> str:
        return self.spec.labels[int(prediction)]

    def show_gold(self, example: Example) -> str:
        return self.show(example.label)


class MultiLabelTask(ClassificationTask):
    """One text -> any subset of the labels (sigmoid per label, threshold 0.5)."""

    kind = metrics.MULTI

    def model_kwargs(self) -> dict:
        return {**super().model_kwargs(), "problem_type": "multi_label_classification"}

    def parse_label(self, record: Record):
        raw = record.fields[self.spec.label_field]
        parts = (
            raw if isinstance(raw, list) else [p for p in raw.split(self.spec.label_separator) if p.strip()]
        )
        if not parts:
            raise DataError.at(record.file, record.where, "no labels", raw, "at least one label")
        return tuple(sorted({self.label_index(str(p), record) for p in parts}))

    def gold(self, data: ExampleSet) -> np.ndarray:
        out = np.zeros((len(data), len(self.spec.labels)), dtype=np.float32)
        for row, example in enumerate(data.examples):
            out[row, list(example.label)] = 1.0
        return out

    def decode(self, outputs, encoded, data) -> list:
        return [(o > 0).astype(np.int64) for o in outputs]  # sigmoid(x) > 0.5  <=>  x > 0

    def chance_scores(self, data: ExampleSet) -> dict[str, float]:
        return {}  # the constant model (usually the empty set) is the reference

    def constant_predictions(self, train: ExampleSet, data: ExampleSet) -> list:
        """Each label where most training examples have it (usually none: the empty set)."""
        common = (self.gold(train).mean(0) > 0.5).astype(np.int64)
        return [common.copy() for _ in data.examples]

    def metric_inputs(self, predictions, data) -> tuple:
        pred = np.stack(predictions) if predictions else np.zeros((0, len(self.spec.labels)), np.int64)
        return pred, self.gold(data).astype(np.int64), {}

    def show(self, prediction) -> str:
        return ",".join(self.spec.labels[i] for i in np.flatnonzero(prediction))

    def show_gold(self, example: Example) -> str:
        return ",".join(self.spec.labels[i] for i in example.label)
