"""Loading a task's examples for one (language, split): files or hub -> records -> examples.

Which file a split comes from, per language:
- a language with one set named `dev` or `all` (XTREME ships only dev for XNLI and PAWS-X; SMS spam is
  one file) has it cut by example index into train/dev/test with the configured fractions;
- a language with `train` but without `dev`/`test` has those carved out of train (RTE's dev);
- otherwise a split is read as shipped (a language with only `test` is evaluation data: XQuAD);
- with `whole` (a split only evaluated, see resolve.read_whole), a split the task ships under that name
  is read whole, even where it is the task's only set (a user's `dev:` file: MLQA's dev set);
- with `resplit` (data.resplit) every shipped set is pooled, in train/dev/test order, and the pool is cut
  with the fractions: the same proportions for every task.
Every example keeps `uid`, its position in the source set: it lines up translations of a line-parallel
task, and it is what the leakage guard compares.
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from intertask.data.fingerprint import combine, file_fingerprint
from intertask.data.formats import READERS
from intertask.data.readers import ReadOptions, Record, flatten
from intertask.data.splits import SPLITS, split_indices
from intertask.errors import DataError
from intertask.tasks.base import Example, ExampleSet, require_paths
from intertask.tasks.spec import TaskSpec
from intertask.tasks.types import task_type

__all__ = ["Example", "ExampleSet", "load_examples", "plan_split", "select"]


POOL = "pool"  # the source of a resplit task: all of its shipped sets, concatenated


@dataclass(frozen=True)
class SplitPlan:
    source: str  # the shipped split the examples come from
    derived: bool  # True when cut out of the source by fractions
    fractions: dict[str, float]  # the partition of the source when derived


def plan_split(
    spec: TaskSpec,
    split: str,
    language: str,
    fractions: dict[str, float],
    origin: str = "local",
    whole: bool = False,
    resplit: bool = False,
) -> SplitPlan:
    """Which shipped split `split` comes from for `language`, and how it is cut out of it."""
    given = spec.splits_for(language, origin)
    if resplit and given and split in SPLITS:
        return SplitPlan(POOL, True, dict(fractions))
    if whole and split in given:
        return SplitPlan(split, False, {})
    if spec.train_split != "train" and spec.train_split in given and split in ("train", "dev"):
        # the declared split that trains (a dataset shipping only validation and test): train and dev
        # cut out of it in the train:dev proportion, the other splits as shipped
        both = fractions["train"] + fractions["dev"]
        return SplitPlan(
            spec.train_split, True, {"train": fractions["train"] / both, "dev": fractions["dev"] / both}
        )
    if len(given) == 1 and given[0] in ("dev", "all"):
        return SplitPlan(given[0], True, dict(fractions))
    missing = [s for s in SPLITS if s not in given]
    if "train" in given and (split in missing or split == "train") and missing:
        carve = {s: fractions[s] for s in missing}
        return SplitPlan("train", True, {"train": 1.0 - sum(carve.values()), **carve})
    if split in given:
        return SplitPlan(split, False, {})
    raise DataError.at(
        f"task {spec.name!r}",
        f"language {language!r}",
        f"no {split} split",
        split,
        f"one of the shipped splits {list(given)} (or a task with train data)",
    )


def _local_records(spec: TaskSpec, source: str, language: str, root: Path) -> tuple[list[Record], list[Path]]:
    options = ReadOptions(
        header=spec.header,
        columns=spec.columns,
        encoding=spec.encoding,
        delimiter=spec.delimiter,
        quotechar=spec.quotechar,
    )
    paths = spec.paths(source, language, root)
    records: list[Record] = []
    for path in paths:
        records.extend(READERS[spec.format](path, options))
    return [_named(spec, r) for r in records] if spec.fields else records, paths


def _named(spec: TaskSpec, record: Record) -> Record:
    """A record with the task's `fields` (its type's field -> the data's path) filled in; a path the
    record lacks is named with what is there."""
    require_paths(record, spec.fields.values(), f"the paths of the task's `fields` {dict(spec.fields)}")
    return Record(
        {**record.fields, **{k: record.fields[v] for k, v in spec.fields.items()}}, record.file, record.where
    )


def _hub_records(
    spec: TaskSpec, source: str, language: str, limit: int | None = None
) -> tuple[list[Record], str]:
    import datasets  # only users of hub sources pay for the import

    hub = spec.hub
    name = hub.name.format(lang=language) if hub.name else None
    where = hub_where(hub, name, hub.splits[source])
    split = hub.splits[source] + (f"[:{limit}]" if limit else "")
    commit = hub_commit(hub)
    try:
        rows = datasets.load_dataset(hub.path, name, split=split, **hub_options(hub, language, commit))
    except Exception as err:  # network, missing dataset or config: report, naming the dataset
        raise DataError.at(where, "", hub_problem(hub, err)) from None
    label_col = next((k for k, v in hub.columns.items() if v == spec.label_field), spec.label_field)
    records = []
    for i, row in enumerate(rows):
        fields = {}
        for key, value in flatten(row).items():  # nested features as dotted fields
            if key == label_col and hub.label_names:
                value = _label_name(hub.label_names, value, where, f"row {i + 1}", key)
            fields[hub.columns.get(key, key)] = (
                [str(v) for v in value] if isinstance(value, list) else str(value)
            )
        records.append(Record(fields, where, f"row {i + 1}"))
    pinned = f"#commit={commit or 'unresolved'}" if _hub_repository(hub) else ""
    return records, f"{where}{pinned}@{getattr(rows, '_fingerprint', '')}"


def hub_where(hub, name: str | None, split: str) -> str:
    """How problems and fingerprints name a hub source: hub:<path>[@revision][/config][split]."""
    revision = f"@{hub.revision}" if hub.revision else ""
    return f"hub:{hub.path}{revision}" + (f"/{name}" if name else "") + f"[{split}]"


# datasets' own builders, which read the data_files given (no hub repository, nothing to pin)
PACKAGED_BUILDERS = frozenset({"csv", "json", "parquet", "text", "arrow", "pandas", "xml", "sql"})


def _hub_repository(hub) -> bool:
    """Whether a hub source is a repository on the hub: not one of datasets' builders, not a local folder."""
    return hub.path not in PACKAGED_BUILDERS and not Path(hub.path).expanduser().exists()


def hub_commit(hub) -> str | None:
    """The commit a hub dataset's revision (default main; a branch such as refs/convert/parquet moves)
    stands for now, asked once per process: the data are read at that commit and the commit goes into
    the set's fingerprint, so a branch that moved gives new keys instead of reusing stale runs. None for
    packaged builders, and where neither the hub nor the local cache knows (then the branch is read)."""
    if not _hub_repository(hub):
        return None
    from intertask import pretrained

    return pretrained.repo_commit(hub.path, hub.revision or "main", "dataset")


def hub_options(hub, language: str, commit: str | None = None) -> dict:
    """The keyword arguments of `datasets.load_dataset` beyond path, config name and split. With the
    hub reachable the revision is the resolved `commit`; offline, the declared one (what the local
    datasets cache was filled under)."""
    from huggingface_hub import constants

    options = {}
    if hub.data_files:
        options["data_files"] = {k: v.format(lang=language) for k, v in hub.data_files.items()}
    if commit and not constants.HF_HUB_OFFLINE:
        options["revision"] = commit
    elif hub.revision:
        options["revision"] = hub.revision
    if hub.data_dir:
        options["data_dir"] = hub.data_dir.format(lang=language)
    return options


def hub_problem(hub, err: Exception) -> str:
    """What went wrong loading a hub source, with the fix for a repository that holds a script."""
    text = f"cannot load hub dataset: {type(err).__name__}: {err}"
    message = str(err)
    if "scripts are no longer supported" in message or (".py" in message and "script" in message.lower()):
        text += (
            f" -- the repository {hub.path!r} still holds a loading script, which datasets >= 4 refuses; "
            "its parquet copy loads: add `revision: refs/convert/parquet` to the task's hub section"
        )
    return text


def _label_name(names: tuple[str, ...], value, where: str, row: str, column: str):
    """A hub ClassLabel integer (or list of them, for tags) -> its name; -1, the hub's marker of an
    unlabelled row, -> "" (left out with the other unlabelled rows, see _labelled)."""
    if isinstance(value, list):
        return [_label_name(names, v, where, row, column) for v in value]
    if not isinstance(value, int):
        return value
    if value < 0:
        return ""
    if value >= len(names):
        raise DataError.at(
            where,
            row,
            f"label column {column!r} holds {value}",
            expected=f"a class index 0..{len(names) - 1} of {list(names)}",
        )
    return names[value]


SINGLE_LABEL_TYPES = ("classification", "multiple_choice")  # where an empty label means "unlabelled"


def _labelled(spec: TaskSpec, records: list[Record], where: str, source: str) -> tuple[list[Record], int]:
    """The records that have a label, and how many did not: a row with an empty label (or the hub's
    -1) is left out with a warning instead of stopping the run; a split of only such rows is an error."""
    if spec.type not in SINGLE_LABEL_TYPES:
        return records, 0
    empty = {v for v in ("", "-1") if v not in spec.label_map and v not in spec.labels}
    kept = [r for r in records if str(r.fields.get(spec.label_field, "")).strip() not in empty]
    left_out = len(records) - len(kept)
    if records and not kept:
        raise DataError.at(
            where,
            "",
            f"every row of the {source} set is unlabelled ({left_out} rows with an empty or -1 label)",
            expected=f"labelled rows in field {spec.label_field!r} (an unlabelled split cannot be used here)",
        )
    if left_out:
        warnings.warn(
            f"{where}: {left_out} of {len(records)} rows of the {source} set have no label (empty or -1) "
            "and are left out",
            UnlabelledRowsWarning,
            stacklevel=3,
        )
    return kept, left_out


class UnlabelledRowsWarning(UserWarning):
    """Rows without a label were left out of a split."""


def check_hub_source(spec: TaskSpec, source: str, language: str, rows: int = 5) -> None:
    """Open one hub source and read its first rows as a run would (columns, label names, the task's
    fields): a DataError names the dataset and what is wrong. For `intertask validate --hub`."""
    records, ident = _hub_records(spec, source, language, limit=rows)
    if not records:
        raise DataError.at(
            ident, "", "no rows", expected=f"rows in the hub split {spec.hub.splits[source]!r}"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnlabelledRowsWarning)  # a few rows say little about the split
        labelled, _ = _labelled(spec, records, ident, source)
    task_type(spec).examples(labelled)


def read_source(spec: TaskSpec, source: str, language: str, root: Path, origin: str = "local"):
    """All examples of one shipped split (or of the pool of them all), the files (or hub ids), their
    fingerprint, and how many unlabelled rows were left out."""
    if origin == "hub" and spec.hub is None:
        raise DataError.at(spec.name, "hub", "task declares no hub source", expected="a `hub:` section")
    records, files, digests = [], [], []
    for shipped in shipped_sources(spec, source, language, origin):
        if origin == "hub":
            rows, ident = _hub_records(spec, shipped, language)
            files.append(ident)
            digests.append(ident)
        else:
            rows, paths = _local_records(spec, shipped, language, root)
            files.extend(str(p) for p in paths)
            digests.extend(file_fingerprint(p) for p in paths)
        records.extend(rows)
    files, digest = tuple(files), combine(digests)
    records, unlabelled = _labelled(spec, records, ", ".join(files), source)
    return task_type(spec).examples(records), files, digest, unlabelled


def shipped_sources(spec: TaskSpec, source: str, language: str, origin: str = "local") -> list[str]:
    """The shipped sets a source stands for: itself, or for the pool every set, train/dev/test first."""
    if source != POOL:
        return [source]
    given = spec.splits_for(language, origin)
    return [s for s in SPLITS if s in given] + [s for s in given if s not in SPLITS]


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
    whole: bool = False,
    resplit: bool = False,
) -> ExampleSet:
    """The examples of `spec` for one language and split (see the module docstring for derived splits)."""
    plan = plan_split(spec, split, language, fractions, origin, whole, resplit)
    examples, files, digest, unlabelled = read_source(spec, plan.source, language, root, origin)
    indices = np.arange(len(examples))
    if plan.derived:
        indices = split_indices(len(examples), plan.fractions, seed)[split]
    in_split = tuple(examples[i] for i in indices)
    indices = indices[task_type(spec).choose(in_split, max_examples, seed)]
    chosen = tuple(examples[i] for i in indices)
    selection = f"{plan.source}:{sorted(plan.fractions.items())}:{seed}:{max_examples}"
    if spec.shuffle_labels and split in ("train", "dev"):
        chosen = shuffled_labels(chosen, spec.type, f"{spec.name}|{language}|{split}|{seed}")
        selection += ":labels shuffled"
    return ExampleSet(
        task=spec.name,
        language=language,
        split=split,
        source=plan.source,
        examples=chosen,
        files=files,
        fingerprint=combine([digest, selection]),
        source_size=len(examples),
        unlabelled=unlabelled,
    )


def shuffled_labels(examples: tuple[Example, ...], kind: str, key: str) -> tuple[Example, ...]:
    """The examples with their labels permuted among them (a tagging task's tags among all tokens, so
    every sentence keeps its length), seeded by `key`: the negative control of `shuffle_labels`."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    if kind == "tagging":
        tags = np.concatenate([np.asarray(e.label, np.int64) for e in examples]) if examples else []
        tags = rng.permutation(tags)
        ends = np.cumsum([len(e.label) for e in examples])
        labels = [
            tuple(int(t) for t in tags[end - len(e.label) : end])
            for e, end in zip(examples, ends, strict=True)
        ]
    else:
        labels = [examples[i].label for i in rng.permutation(len(examples))]
    return tuple(replace(e, label=label) for e, label in zip(examples, labels, strict=True))


def select(data: ExampleSet, keep: np.ndarray, reason: str) -> ExampleSet:
    """The examples of `data` whose uid is in `keep`; the fingerprint records the selection."""
    mask = np.isin(data.uids, keep)
    kept = tuple(e for e, m in zip(data.examples, mask, strict=True) if m)
    fingerprint = combine([data.fingerprint, reason, ",".join(str(e.uid) for e in kept)])
    return replace(data, examples=kept, fingerprint=fingerprint)
