"""What every task type shares: examples, encoded rows, and the interface a type implements.

The flow for any task: records -> `example()` -> ExampleSet -> `encode()` -> EncodedSet (rows; a long QA
context becomes several rows) -> model -> `outputs()` per row -> `decode()` one prediction per example
-> `score()`.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from intertask import metrics
from intertask.data.readers import Record
from intertask.data.splits import subsample
from intertask.errors import DataError
from intertask.tasks.spec import TaskSpec


@dataclass(frozen=True)
class Example:
    uid: int  # position in the source set (the line index for line-parallel tasks)
    texts: tuple[str, ...]  # the text(s); tokens for tagging; (context, choices...) for multiple choice
    label: Any  # class index, label indices, tag indices, ((answer, start), ...), ...
    key: str = ""  # the dataset's own id (SQuAD question id, BUCC sentence id)


@dataclass(frozen=True)
class ExampleSet:
    task: str
    language: str
    split: str
    source: str  # given split the examples were taken from
    examples: tuple[Example, ...]
    files: tuple[str, ...]  # files read (or the hub dataset id)
    fingerprint: str  # content of the files + which examples were selected
    source_size: int  # number of examples in the whole source set
    unlabelled: int = 0  # rows of the source set left out for having no label (-1 or empty)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def uids(self) -> np.ndarray:
        return np.array([e.uid for e in self.examples], dtype=np.int64)

    @cached_property
    def content_digests(self) -> tuple[str, ...]:
        """A short digest per example of what a model reads of it, its text(s): what the leakage guard
        matches across splits and files. Computed once per set (`intertask validate` checks one
        evaluation set against every training stage upstream of each evaluation job)."""
        return tuple(
            hashlib.sha1("\x1f".join(map(str, e.texts)).encode()).hexdigest()[:12] for e in self.examples
        )


@dataclass(frozen=True)
class EncodedSet:
    """Tokenized rows, unpadded. A row is one model input: an example, a window of one, or (multiple
    choice) one example's choices as a 2-d array."""

    inputs: dict[str, list[np.ndarray]]  # model inputs per row: 1-d tokens, or 2-d choices x tokens
    targets: dict[str, Any]  # training targets: an array per row, or a list of per-token arrays
    uids: np.ndarray  # row -> example uid
    meta: dict[str, list[np.ndarray]] = field(default_factory=dict)  # per-row decoding aids

    def __len__(self) -> int:
        return len(self.uids)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per row as the model sees them (choices x longest choice for 2-d rows)."""
        return np.array(
            [ids.size if ids.ndim == 1 else ids.shape[0] * ids.shape[1] for ids in self.inputs["input_ids"]],
            dtype=np.int64,
        )


@dataclass(frozen=True)
class HeadFit:
    """Whether a trained head can score a task, matched by label names (not positions).

    `order[i]` is the head output that scores the task's label i, when the same label names come in
    another order (XNLI's [contradiction, entailment, neutral] head scoring a user's [entailment,
    neutral, contradiction] set); None when the order is the same. `problem` says why it does not fit.
    """

    fits: bool
    order: tuple[int, ...] | None = None
    problem: str = ""
    # a task whose labels are a subset of the head's: the head's other labels, never predicted (the
    # task's labels are scored by argmax over their own outputs: order selects them)
    unused: tuple[str, ...] = ()

    @property
    def reordered(self) -> bool:
        """Matched by name: in another order, or a subset of the head's labels."""
        return self.order is not None


def head_fit(head: tuple, wanted: tuple) -> HeadFit:
    """How a head of signature `head` fits a task of signature `wanted` (TaskType.head_signature()):
    the same head type, and for a task with labels the same label NAMES, or a subset of them (the
    task's labels are then scored among themselves). A typo gets a did-you-mean; a partial overlap
    lists both sets."""
    head, wanted = _plain(head), _plain(wanted)
    if head[0] != wanted[0]:
        return HeadFit(False, problem=f"a {head[0]} head cannot score a {wanted[0]} task")
    if len(head) < 2 or len(wanted) < 2 or head[1] == wanted[1]:
        return HeadFit(True)
    theirs, mine = list(head[1]), list(wanted[1])
    if len(set(mine)) == len(mine) and set(mine) <= set(theirs):  # any order; or NER without MISC
        unused = tuple(label for label in theirs if label not in mine)  # a CoNLL head's MISC tags
        return HeadFit(True, tuple(theirs.index(label) for label in mine), unused=unused)
    missing = [label for label in mine if label not in theirs]
    spare = [label for label in theirs if label not in mine]
    near = {m: n[0] for m in missing if (n := difflib.get_close_matches(m, spare, n=1, cutoff=0.6))}
    problem = f"labels {mine} do not match the head's labels {theirs}: the head has no {missing}"
    if near:
        problem += " (did you mean " + ", ".join(f"{n!r} for {m!r}" for m, n in near.items()) + "?)"
    elif spare:
        problem += f", and the task has no {spare}"
    return HeadFit(False, problem=problem)


def label_notice(task: str, labels, head_task: str, head_labels, fit: HeadFit) -> tuple[str, str]:
    """(what, line) of a task scored by a head matched by label name: the same line whether
    `intertask validate` foresees it or the evaluation stage meets it."""
    if fit.unused:
        return (
            f"labels_restricted.{task}",
            f"{task}: labels {list(labels)} scored by the head of {head_task}, whose labels are "
            f"{list(head_labels)}: predictions restricted to the task's labels (the head's {list(fit.unused)} "
            "are never predicted)",
        )
    return (
        f"labels_mapped.{task}",
        f"{task}: labels {list(labels)} scored by the head of {head_task}, whose labels are "
        f"{list(head_labels)}: matched by name",
    )


def best_fit(fits):
    """Of (head, HeadFit) pairs, the one a task is scored by: an exact match, else the same labels in
    another order, else a head the task's labels are a subset of; None when none fits."""
    ranked = sorted(((h, f) for h, f in fits if f.fits), key=lambda hf: (hf[1].reordered, bool(hf[1].unused)))
    return ranked[0] if ranked else None


def require_paths(record: Record, names, expected: str) -> None:
    """A DataError naming each field (dotted path) of `names` the record lacks, with what is there."""
    missing = [name for name in names if name not in record.fields]
    if missing:
        raise DataError.at(
            record.file,
            record.where,
            "missing field(s) " + "; ".join(missing_field(record.fields, name) for name in missing),
            sorted(record.fields),
            expected,
        )


def missing_field(fields: dict, name: str) -> str:
    """What of a dotted path a record lacks: the first segment not found under the part that exists
    (`'input' has no 'premis' (it has 'hypothesis', 'premise'); did you mean 'input.premise'?`)."""
    parts = name.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:depth]) + "."
        under = sorted({f[len(prefix) :].split(".")[0] for f in fields if f.startswith(prefix)})
        if under:
            said = f"{name!r}: {prefix[:-1]!r} has no {parts[depth]!r} (it has {', '.join(map(repr, under))})"
            break
    else:
        said = repr(name)
    near = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.6)
    return said + (f"; did you mean {near[0]!r}?" if near else "")


def _plain(signature) -> tuple:
    return tuple(tuple(part) if isinstance(part, list | tuple) else part for part in signature)


class TaskType:
    """One kind of task. Subclasses set `kind` (how metrics read predictions) and `head`."""

    kind = metrics.SINGLE
    head = "sequence_classification"  # key of modeling.HEADS; "none" for retrieval
    trainable = True
    version = 1  # bump when encode() changes, to invalidate tokenization caches

    def __init__(self, spec: TaskSpec):
        self.spec = spec
        self._label_indices: dict[str, int] = {}  # raw label -> index, as label_index found it

    @property
    def name(self) -> str:
        return self.spec.name

    def model_kwargs(self) -> dict:
        return {}

    def label_kwargs(self) -> dict:
        """Head configuration for a task with a label space: sizes and names."""
        labels = self.spec.labels
        return {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)},
        }

    def head_signature(self) -> tuple:
        """Two tasks whose signatures are equal can share a trained head (same type and labels)."""
        return (self.head, tuple(self.spec.labels))

    def example(self, uid: int, record: Record) -> Example:
        raise NotImplementedError

    def examples(self, records: list[Record]) -> list[Example]:
        """Examples in record order; uid = position. A type may check the set as a whole here."""
        return [self.example(uid, r) for uid, r in enumerate(records)]

    def choose(self, examples: tuple[Example, ...], k: int | None, seed: int) -> np.ndarray:
        """Positions of a seeded subset of k examples (all when k is None), in order."""
        return subsample(np.arange(len(examples)), k, seed)

    def encode(self, data: ExampleSet, tokenizer, max_length: int) -> EncodedSet:
        raise NotImplementedError

    def outputs(self, output, rows: np.ndarray, encoded: EncodedSet) -> list[np.ndarray]:
        """Per-row arrays (padding removed) from a model output for the batch `rows`."""
        raise NotImplementedError

    def decode(self, outputs: list[np.ndarray], encoded: EncodedSet, data: ExampleSet) -> list:
        """One prediction per example of `data`, in its order."""
        raise NotImplementedError

    def metric_inputs(self, predictions: list, data: ExampleSet) -> tuple:
        """(predicted, gold, options) as the metrics of this type's label kind read them."""
        raise NotImplementedError

    def score(self, predictions: list, data: ExampleSet, names: tuple[str, ...]) -> dict[str, float]:
        pred, gold, options = self.metric_inputs(predictions, data)
        return metrics.score(self.kind, names, pred, gold, **options)

    def example_stats(self, predictions: list, data: ExampleSet) -> dict[str, np.ndarray]:
        """Per-example statistics from which every metric of a resample is recomputed (metrics.from_sums)."""
        pred, gold, options = self.metric_inputs(predictions, data)
        return metrics.example_stats(self.kind, pred, gold, **options)

    def constant_predictions(self, train: ExampleSet, data: ExampleSet) -> list | None:
        """The predictions of the trivial model that ignores its input: the training set's most frequent
        label for every example (token) of `data`; what a target that was not learnt scores. None
        where there is no such model (extractive QA, retrieval)."""
        return None

    def chance_scores(self, data: ExampleSet) -> dict[str, float]:
        """Expected metrics of predictions drawn uniformly at random, where known ({} otherwise)."""
        return {}

    def reference_scores(self, train: ExampleSet, data: ExampleSet) -> dict[str, float]:
        """Per metric the better of the constant model's score and chance on `data`: a model within
        noise of it has learnt nothing ({} where neither exists)."""
        constant = self.constant_predictions(train, data)
        if constant is None or not len(data):
            return {}
        scores = self.score(constant, data, self.spec.metrics)
        chance = self.chance_scores(data)
        return {m: max(v, chance.get(m, v)) for m, v in scores.items()}

    def show(self, prediction) -> str:
        """A prediction as text, for the predictions table."""
        return str(prediction)

    def show_gold(self, example: Example) -> str:
        return str(example.label)

    # --- helpers shared by the types ---

    def require_fields(self, record: Record, names: tuple[str, ...]) -> None:
        require_paths(
            record, names, f"fields {list(names)} (a nested JSON field by its dotted path: input.premise)"
        )

    def label_index(self, raw: str, record: Record) -> int:
        known = self._label_indices.get(raw)  # a tagged corpus repeats a few labels millions of times
        if known is not None:
            return known
        spec = self.spec
        value = spec.label_map.get(raw.strip(), raw.strip())
        if spec.labels_are_indices:
            if value.isdigit() and int(value) < len(spec.labels):
                return self._label_indices.setdefault(raw, int(value))
        elif value in spec.labels:
            return self._label_indices.setdefault(raw, spec.labels.index(value))
        expected = f"0..{len(spec.labels) - 1}" if spec.labels_are_indices else f"one of {list(spec.labels)}"
        if spec.label_map:
            expected += f" or a key of label_map {sorted(spec.label_map)}"
        raise DataError.at(
            record.file, record.where, f"unknown label in field {spec.label_field!r}", raw, expected
        )


def row_arrays(values: list[list[int]], dtype=np.int32) -> list[np.ndarray]:
    return [np.asarray(v, dtype=dtype) for v in values]
