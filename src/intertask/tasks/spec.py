"""A task declaration: everything the platform knows about a task, as one YAML file.

Built-in tasks live in tasks/builtin/*.yaml; users add their own with the same keys and list the files
under `data.task_files` in an experiment config. No code is needed for a CSV/TSV/JSONL task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from intertask.errors import Problems
from intertask.metrics import METRICS, MULTI, SINGLE
from intertask.schema import FieldChecks, build, read_yaml

TaskTypeName = Literal["classification", "multilabel_classification"]
FormatName = Literal["tsv", "csv", "jsonl", "rte_xml", "folders"]
SplitName = Literal["train", "dev", "test"]


@dataclass(frozen=True, kw_only=True)
class HubSource:
    """Where `datasets.load_dataset` finds the task for users with internet (data.source: hub)."""

    path: str  # dataset id on the hub, or a packaged builder such as "csv" / "json"
    name: str | None = None  # configuration name; "{lang}" is replaced by the language
    splits: dict[str, str] = field(
        default_factory=lambda: {"train": "train", "dev": "validation", "test": "test"}
    )
    data_files: dict[str, str] | None = None  # for packaged builders: split -> file ("{lang}" allowed)
    label_names: tuple[str, ...] = ()  # names of integer (ClassLabel) labels in the hub's order
    columns: dict[str, str] = field(default_factory=dict)  # hub column -> field name used by this task


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    name: str  # registry name used in configs, e.g. "pawsx"
    type: TaskTypeName  # how examples are encoded, predicted and scored
    family: str | None = None  # for reports: nli, paraphrase, sentiment, ... (defaults to the type)
    description: str = ""  # one line for `intertask tasks`
    format: FormatName = "tsv"  # reader for the local files
    files: dict[str, str | tuple[str, ...]] = field(
        default_factory=dict
    )  # split -> path(s) under the data root, "{lang}"
    languages: tuple[str, ...] = ("en",)  # languages the files exist for
    parallel: bool = False  # files of different languages are line-by-line translations of each other
    header: bool = False  # tsv/csv: the first line names the columns
    columns: tuple[str, ...] = ()  # tsv/csv without header: the column names
    encoding: str = "utf-8"  # text encoding of the files
    text_fields: tuple[str, ...]  # one field (single text) or two (a pair)
    label_field: str = "label"  # the field holding the label(s)
    labels: tuple[str, ...]  # the label space, in head order
    label_map: dict[str, str] = field(default_factory=dict)  # raw label value -> label name
    label_separator: str | None = None  # multilabel: separator between labels in the field
    labels_are_indices: bool = False  # raw labels are 0-based positions in `labels`
    metrics: tuple[str, ...] = ("accuracy",)  # the first one is the default selection metric
    hub: HubSource | None = None  # optional: the same task from the Hugging Face hub

    def __post_init__(self) -> None:
        c = FieldChecks()
        c.require(
            1 <= len(self.text_fields) <= 2,
            "text_fields",
            "needs one or two fields",
            self.text_fields,
            "[text] or [text_a, text_b]",
        )
        c.require(
            len(self.labels) >= 2, "labels", "needs at least two labels", self.labels, "a list of labels"
        )
        c.require(
            len(set(self.labels)) == len(self.labels),
            "labels",
            "duplicate labels",
            self.labels,
            "unique label names",
        )
        unknown_targets = sorted(set(self.label_map.values()) - set(self.labels))
        c.require(
            not unknown_targets,
            "label_map",
            "maps to labels not in `labels`",
            unknown_targets,
            f"values among {list(self.labels)}",
        )
        c.require(
            bool(self.languages), "languages", "needs at least one language", self.languages, "[en, ...]"
        )
        c.require(
            bool(self.files) or self.hub is not None,
            "files",
            "no data source",
            self.files,
            "`files:` (split -> path) and/or `hub:`",
        )
        bad_splits = sorted(set(self.files) - {"train", "dev", "test", "all"})
        c.require(not bad_splits, "files", "unknown split names", bad_splits, "train, dev, test (or all)")
        c.require(
            "train" in self.files or len(self.files) <= 1,
            "files",
            "several splits but no train split",
            sorted(self.files),
            "a train split, or exactly one file set to split by fractions",
        )
        c.require(
            self.format in ("tsv", "csv") or not self.header,
            "header",
            "only tsv/csv files have headers",
            self.header,
            "false",
        )
        c.require(
            not self.files or self.format not in ("tsv", "csv") or self.header or bool(self.columns),
            "columns",
            "tsv/csv without header needs column names",
            self.columns,
            "a list of column names",
        )
        multi = self.type == "multilabel_classification"
        c.require(
            not multi or self.label_separator is not None,
            "label_separator",
            "multilabel tasks need a label separator",
            self.label_separator,
            'e.g. ","',
        )
        kind = MULTI if multi else SINGLE
        for m in self.metrics:
            if m not in METRICS:
                c.require(False, "metrics", "unknown metric", m, f"one of {METRICS.names()}")
            elif kind not in METRICS.get(m).kinds:
                c.require(
                    False,
                    "metrics",
                    f"metric does not apply to {self.type}",
                    m,
                    f"metrics for {kind}: {[n for n in METRICS.names() if kind in METRICS.get(n).kinds]}",
                )
        c.done()

    @property
    def task_family(self) -> str:
        return self.family or self.type

    @property
    def given_splits(self) -> tuple[str, ...]:
        return tuple(self.files)


def load_task_file(path: Path) -> TaskSpec:
    """Read and validate one task declaration file; raise ConfigError naming the file and fields."""
    problems = Problems()
    raw = read_yaml(path, problems, "task file")
    spec = build(TaskSpec, raw, file=str(path), problems=problems) if raw is not None else None
    problems.raise_if_any()
    return spec
