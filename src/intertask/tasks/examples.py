"""Loading a task's examples for one (language, split): files or hub -> records -> labelled examples.

Splits a dataset does not ship are derived by example index (data/splits.py) from the split it does
ship: the only given set is cut into train/dev/test by fractions, or a missing dev/test is carved from
train. Every example keeps `uid`, its position in the source set, which is what lines up translations of
a line-parallel task and what the leakage guard compares.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from intertask.data.fingerprint import combine, file_fingerprint
from intertask.data.readers import READERS, ReadOptions, Record
from intertask.data.splits import SPLITS, split_indices, subsample
from intertask.errors import DataError
from intertask.tasks.spec import TaskSpec


@dataclass(frozen=True)
class Example:
    uid: int  # position in the source set (the line index for line-parallel tasks)
    texts: tuple[str, ...]
    label: int | tuple[int, ...]  # class index, or label indices (multi-label)


@dataclass(frozen=True)
class SplitPlan:
    source: str  # the given split the examples come from
    derived: bool  # True when cut out of the source by fractions
    fractions: dict[str, float]  # the partition of the source when derived


@dataclass(frozen=True)
class ExampleSet:
    task: str
    language: str
    split: str
    source: str  # given split the examples were taken from (see SplitPlan)
    examples: tuple[Example, ...]
    files: tuple[str, ...]  # files read (or the hub dataset id)
    fingerprint: str  # content of the files + which examples were selected
    source_size: int  # number of examples in the whole source set

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def uids(self) -> np.ndarray:
        return np.array([e.uid for e in self.examples], dtype=np.int64)


def given_splits(spec: TaskSpec, source: str) -> tuple[str, ...]:
    if source == "hub":
        return tuple(spec.hub.splits) if spec.hub else ()
    return tuple(spec.files)


def plan_split(spec: TaskSpec, split: str, fractions: dict[str, float], source: str = "local") -> SplitPlan:
    """Which given split `split` comes from, and how it is cut out of it."""
    given = given_splits(spec, source)
    if "train" not in given:  # one set only (XTREME ships just dev): cut it into train/dev/test
        return SplitPlan(given[0], True, dict(fractions))
    missing = [s for s in SPLITS if s not in given]
    if split in given and not (split == "train" and missing):
        return SplitPlan(split, False, {})
    # dev/test not shipped: carved out of train, and train is what remains
    carve = {s: fractions[s] for s in missing}
    return SplitPlan("train", True, {"train": 1.0 - sum(carve.values()), **carve})


def _local_records(spec: TaskSpec, source: str, language: str, root: Path) -> tuple[list[Record], list[Path]]:
    entry = spec.files[source]
    templates = (entry,) if isinstance(entry, str) else entry
    paths = [root / t.format(lang=language) for t in templates]
    options = ReadOptions(header=spec.header, columns=spec.columns, encoding=spec.encoding)
    records: list[Record] = []
    for path in paths:
        records.extend(READERS[spec.format](path, options))
    return records, paths


def _hub_records(spec: TaskSpec, source: str, language: str) -> tuple[list[Record], str]:
    import datasets  # only users of hub sources pay for the import

    hub = spec.hub
    name = hub.name.format(lang=language) if hub.name else None
    data_files = {k: v.format(lang=language) for k, v in hub.data_files.items()} if hub.data_files else None
    where = f"hub:{hub.path}" + (f"/{name}" if name else "") + f"[{hub.splits[source]}]"
    try:
        rows = datasets.load_dataset(hub.path, name, split=hub.splits[source], data_files=data_files)
    except Exception as err:  # network, missing dataset or config: report, naming the dataset
        raise DataError.at(where, "", f"cannot load hub dataset: {type(err).__name__}: {err}") from None
    label_col = next((k for k, v in hub.columns.items() if v == spec.label_field), spec.label_field)
    records = []
    for i, row in enumerate(rows):
        fields = {}
        for key, value in row.items():
            if key == label_col and hub.label_names and isinstance(value, int):
                value = hub.label_names[value]
            fields[hub.columns.get(key, key)] = (
                ",".join(map(str, value)) if isinstance(value, list) else str(value)
            )
        records.append(Record(fields, where, f"row {i + 1}"))
    return records, f"{where}@{getattr(rows, '_fingerprint', '')}"


def _label(spec: TaskSpec, raw: str, record: Record) -> int:
    value = spec.label_map.get(raw.strip(), raw.strip())
    if spec.labels_are_indices:
        if value.isdigit() and int(value) < len(spec.labels):
            return int(value)
    elif value in spec.labels:
        return spec.labels.index(value)
    expected = f"0..{len(spec.labels) - 1}" if spec.labels_are_indices else f"one of {list(spec.labels)}"
    if spec.label_map:
        expected += f" or a key of label_map {sorted(spec.label_map)}"
    raise DataError.at(
        record.file, record.where, f"unknown label in field {spec.label_field!r}", raw, expected
    )


def to_example(spec: TaskSpec, uid: int, record: Record) -> Example:
    missing = [f for f in (*spec.text_fields, spec.label_field) if f not in record.fields]
    if missing:
        raise DataError.at(
            record.file,
            record.where,
            f"missing field(s) {missing}",
            sorted(record.fields),
            f"fields {[*spec.text_fields, spec.label_field]}",
        )
    raw = record.fields[spec.label_field]
    if spec.type == "multilabel_classification":
        parts = [p for p in raw.split(spec.label_separator) if p.strip()]
        if not parts:
            raise DataError.at(record.file, record.where, "no labels", raw, "at least one label")
        label: int | tuple[int, ...] = tuple(sorted({_label(spec, p, record) for p in parts}))
    else:
        label = _label(spec, raw, record)
    return Example(uid, tuple(record.fields[f] for f in spec.text_fields), label)


def read_source(spec: TaskSpec, source: str, language: str, root: Path, origin: str = "local"):
    """All examples of one given split, plus the files (or hub id) and their fingerprint."""
    if origin == "hub":
        if spec.hub is None:
            raise DataError.at(spec.name, "hub", "task declares no hub source", expected="a `hub:` section")
        records, ident = _hub_records(spec, source, language)
        files, digest = (ident,), ident
    else:
        records, paths = _local_records(spec, source, language, root)
        files = tuple(str(p) for p in paths)
        digest = combine([file_fingerprint(p) for p in paths])
    examples = [to_example(spec, uid, r) for uid, r in enumerate(records)]
    return examples, files, digest


def load_examples(
    spec: TaskSpec,
    language: str,
    split: str,
    *,
    root: Path,
    fractions: dict[str, float],
    seed: int,
    max_examples: int | None = None,
    origin: str = "local",
) -> ExampleSet:
    """The examples of `spec` for one language and split (see the module docstring for derived splits)."""
    plan = plan_split(spec, split, fractions, origin)
    examples, files, digest = read_source(spec, plan.source, language, root, origin)
    indices = np.arange(len(examples))
    if plan.derived:
        indices = split_indices(len(examples), plan.fractions, seed)[split]
    indices = subsample(indices, max_examples, seed)
    chosen = tuple(examples[i] for i in indices)
    selection = f"{plan.source}:{sorted(plan.fractions.items())}:{seed}:{max_examples}"
    return ExampleSet(
        task=spec.name,
        language=language,
        split=split,
        source=plan.source,
        examples=chosen,
        files=files,
        fingerprint=combine([digest, selection]),
        source_size=len(examples),
    )


def select(data: ExampleSet, keep: np.ndarray, reason: str) -> ExampleSet:
    """The examples of `data` whose uid is in `keep`; the fingerprint records the selection."""
    mask = np.isin(data.uids, keep)
    kept = tuple(e for e, m in zip(data.examples, mask, strict=True) if m)
    fingerprint = combine([data.fingerprint, reason, ",".join(str(e.uid) for e in kept)])
    return replace(data, examples=kept, fingerprint=fingerprint)
