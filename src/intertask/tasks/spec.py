"""A task declaration: everything the platform knows about a task, as one YAML file.

Built-in tasks live in tasks/builtin/*.yaml; users add their own with the same keys and list the files
under `data.task_files` in an experiment config. No code is needed for a CSV/TSV/JSONL task.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from intertask import metrics as M
from intertask.config.schema import FieldChecks, build, read_yaml
from intertask.errors import Problems

TaskTypeName = Literal[
    "classification", "multilabel_classification", "tagging", "extractive_qa", "multiple_choice", "retrieval"
]
FormatName = Literal[
    "tsv",
    "csv",
    "jsonl",
    "json",
    "rte_xml",
    "folders",
    "xtreme_tags",
    "conllu",
    "conll",
    "squad_json",
    "tatoeba",
    "bucc",
]
SPLITS = ("train", "dev", "test")

# formats each type can read, and the label kind its metrics must support
TYPE_FORMATS = {
    "classification": ("tsv", "csv", "jsonl", "json", "rte_xml", "folders"),
    "multilabel_classification": ("tsv", "csv", "jsonl", "json"),
    "tagging": ("xtreme_tags", "conllu", "conll"),
    "extractive_qa": ("squad_json", "jsonl", "json"),
    "multiple_choice": ("tsv", "csv", "jsonl", "json"),
    "retrieval": ("tatoeba", "bucc"),
}
TYPE_KIND = {
    "classification": M.SINGLE,
    "multilabel_classification": M.MULTI,
    "tagging": M.TAGS,
    "extractive_qa": M.SPANS,
    "multiple_choice": M.SINGLE,
}


@dataclass(frozen=True, kw_only=True)
class HubSource:
    """Where `datasets.load_dataset` finds the task for users with internet (data.source: hub)."""

    path: str  # dataset id on the hub, or a packaged builder such as "csv" / "json"
    name: str | None = None  # configuration name; "{lang}" is replaced by the language
    splits: dict[str, str] = field(
        default_factory=lambda: {"train": "train", "dev": "validation", "test": "test"}
    )
    data_files: dict[str, str] | None = None  # for packaged builders: split -> file ("{lang}" allowed)
    # the repository revision: "refs/convert/parquet" is the Hub's parquet copy of a dataset whose main
    # branch still holds a loading script (datasets >= 4 refuses scripts)
    revision: str | None = None
    data_dir: str | None = None  # a folder inside the repository ("{lang}" allowed)
    label_names: tuple[str, ...] = ()  # names of integer (ClassLabel) labels in the hub's order
    columns: dict[str, str] = field(default_factory=dict)  # hub column -> field name used by this task


SHUFFLABLE = ("classification", "multilabel_classification", "tagging")  # types shuffle_labels applies to


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    name: str  # registry name used in configs, e.g. "pawsx"
    type: TaskTypeName  # how examples are encoded, predicted and scored
    family: str | None = None  # for reports: nli, paraphrase, sentiment, qa, pos, ... (defaults to the type)
    description: str = ""  # one line for `intertask tasks`
    format: FormatName = "tsv"  # reader for the local files
    files: dict[str, str | tuple[str, ...]] = field(
        default_factory=dict
    )  # split -> path(s) under the data root
    languages: tuple[str, ...] = ("en",)  # languages the files exist for
    default_languages: tuple[str, ...] = ()  # evaluated when a config names none (default: all languages)
    language_codes: dict[str, str] = field(
        default_factory=dict
    )  # language -> "{code}" in paths (default: itself)
    split_languages: dict[str, tuple[str, ...]] = field(default_factory=dict)  # split -> languages having it
    parallel: bool = False  # files of different languages are line-by-line translations of each other
    # what `languages` stand for: "domains" (review sets' books, dvd, kitchen declared as languages)
    # are averaged as such (mean_all is the mean over domains) and get no mean_non_<training language>
    languages_are: Literal["languages", "domains"] = "languages"
    header: bool = False  # tsv/csv: the first line names the columns
    columns: tuple[str, ...] = ()  # tsv/csv without header, or conll: the column names
    encoding: str = "utf-8"  # text encoding of the files
    delimiter: str | None = None  # tsv/csv: the field separator (default: a tab / a comma)
    # tsv/csv: the character quoting fields that hold separators or newlines ('"' doubled inside);
    # default: none for tsv (the XTREME files have bare quotes), '"' for csv
    quotechar: str | None = None
    text_fields: tuple[
        str, ...
    ] = ()  # classification: 1 or 2 fields; tagging: the tokens; choice: the context
    label_field: str = "label"  # the field holding the label(s) or tags
    # a field the task's type reads -> where the local files hold it (a dotted path into nested JSON):
    # QA from JSONL, {question: q.text, context: passage, answers: answers.text, answer_starts:
    # answers.answer_start}; any other field may be named by its path where the task names it. A hub
    # source, whose rows are named otherwise, maps its own columns (hub.columns)
    fields: dict[str, str] = field(default_factory=dict)
    labels: tuple[str, ...] = ()  # the label (tag) space, in head order
    label_map: dict[str, str] = field(default_factory=dict)  # raw label value -> label name
    label_separator: str | None = None  # multilabel: separator between labels in the field
    labels_are_indices: bool = False  # raw labels are 0-based positions in `labels`
    choices_field: str | None = None  # multiple choice: the field with the list of choices
    choice_fields: tuple[str, ...] = ()  # multiple choice: or one field per choice (answer0, answer1, ...)
    # multiple choice: what joins the context's text_fields (any number: a story's four sentences)
    context_separator: str = " "
    normalization: Literal["squad", "mlqa"] = "squad"  # QA answer normalization (MLQA: per language)
    doc_stride: int = 128  # QA: tokens of overlap between windows over a long context
    max_answer_length: int = 30  # QA: longest answer span considered, in tokens
    n_best: int = 20  # QA: start and end candidates per window
    # QA, SQuAD v2.0: a question may have no answer; the model learns [CLS] for it and predicts "no
    # answer" where [CLS]'s score beats the best span's by more than null_threshold; scored with the
    # official v2.0 rules (an empty gold list is the answer "")
    no_answer: bool = False
    null_threshold: float = 0.0  # QA with no_answer: the null-score margin (HF run_squad's default 0)
    metrics: tuple[str, ...] = ("accuracy",)  # the first one is the default selection metric
    hub: HubSource | None = None  # optional: the same task from the Hugging Face hub
    # negative control: the train and dev labels are permuted among the examples (tagging: among all
    # tokens), seeded; every label keeps its frequency, its tie to the text is cut. Test labels stay.
    shuffle_labels: bool = False
    # the declared split that trains the task: `dev` for a dataset that ships only validation and test
    # files (a stage then cuts its train and dev sets out of the dev file with the train:dev fractions;
    # test stays as shipped)
    train_split: Literal["train", "dev", "test", "all"] = "train"

    def __post_init__(self) -> None:
        c = FieldChecks()
        self._check_sources(c)
        self._check_type(c)
        self._check_metrics(c)
        c.done()

    def _check_sources(self, c: FieldChecks) -> None:
        c.require(
            bool(self.languages), "languages", "needs at least one language", self.languages, "[en, ...]"
        )
        extra = sorted(set(self.default_languages) - set(self.languages))
        c.require(
            not extra, "default_languages", "not in `languages`", extra, f"among {list(self.languages)}"
        )
        c.require(
            bool(self.files) or self.hub is not None,
            "files",
            "no data source",
            self.files,
            "`files:` (split -> path) and/or `hub:`",
        )
        bad = sorted(set(self.files) - {*SPLITS, "all"})
        c.require(not bad, "files", "unknown split names", bad, "train, dev, test (or all)")
        for split, langs in self.split_languages.items():
            c.require(
                split in self.files,
                "split_languages",
                f"split {split!r} has no files",
                split,
                f"one of {sorted(self.files)}",
            )
            unknown = sorted(set(langs) - set(self.languages))
            c.require(
                not unknown,
                f"split_languages.{split}",
                "languages not in `languages`",
                unknown,
                f"among {list(self.languages)}",
            )
        self._check_train_split(c)
        self._check_format(c)

    def _check_train_split(self, c: FieldChecks) -> None:
        """`train_split` names a declared split, and no `train:` file competes with it."""
        if self.train_split == "train":
            return
        shipped = set(self.files) | (set(self.hub.splits) if self.hub else set())
        c.require(
            self.train_split in shipped,
            "train_split",
            "names a split the task does not declare",
            self.train_split,
            f"one of the declared splits {sorted(shipped)}",
        )
        c.require(
            "train" not in shipped,
            "train_split",
            "the task declares a train split too: which one trains is ambiguous",
            self.train_split,
            "train_split: train (the default), or no `train:` file",
        )

    def _check_format(self, c: FieldChecks) -> None:
        """The reader's options fit the format: type, header, delimiter, quote character, columns."""
        c.require(
            self.format in TYPE_FORMATS[self.type] or not self.files,
            "format",
            f"format does not fit type {self.type}",
            self.format,
            f"one of {list(TYPE_FORMATS[self.type])}",
        )
        c.require(
            self.format in ("tsv", "csv") or not self.header,
            "header",
            "only tsv/csv files have headers",
            self.header,
            "false",
        )
        for name in ("delimiter", "quotechar"):
            value = getattr(self, name)
            c.require(
                value is None or self.format in ("tsv", "csv"),
                name,
                "only tsv/csv files have one",
                value,
                "unset, or format: tsv / csv",
            )
            c.require(
                value is None or len(value) == 1, name, "must be one character", value, "e.g. ';' or '\"'"
            )
        c.require(
            self.quotechar is None
            or self.quotechar != (self.delimiter or ("," if self.format == "csv" else "\t")),
            "quotechar",
            "must differ from the delimiter",
            self.quotechar,
            "another character, e.g. '\"'",
        )
        c.require(
            not self.files or self.format not in ("tsv", "csv") or self.header or bool(self.columns),
            "columns",
            "tsv/csv without header needs column names",
            self.columns,
            "a list of column names",
        )

    def _check_type(self, c: FieldChecks) -> None:
        """What the task's type needs of the other fields."""
        kind = self.type
        c.require(
            not self.shuffle_labels or kind in SHUFFLABLE,
            "shuffle_labels",
            f"not for a {kind} task",
            self.shuffle_labels,
            f"a task of type {', '.join(SHUFFLABLE)}",
        )
        if kind in ("classification", "multilabel_classification", "tagging"):
            self._check_labels(c)
        self._check_fields(c)
        self._check_qa(c)

    def _check_labels(self, c: FieldChecks) -> None:
        """Classification and tagging: two or more unique label names, which label_map maps onto."""
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
        unknown = sorted(set(self.label_map.values()) - set(self.labels))
        c.require(
            not unknown,
            "label_map",
            "maps to labels not in `labels`",
            unknown,
            f"values among {list(self.labels)}",
        )

    def _check_fields(self, c: FieldChecks) -> None:
        """The text fields, label separator and choices the type reads."""
        kind = self.type
        wanted = {
            "classification": (1, 2),
            "multilabel_classification": (1, 1),
            "tagging": (1, 1),
            "multiple_choice": (1, 99),  # the context: any number of fields, joined by context_separator
        }.get(kind)
        if wanted:
            low, high = wanted
            needs = f"{low} or {high}" if high == 2 else f"{low} or more" if high > 2 else f"{low}"
            c.require(
                low <= len(self.text_fields) <= high,
                "text_fields",
                f"{kind} needs {needs} field(s)",
                self.text_fields,
                {2: "[text] or [text_a, text_b]", 1: "[field]"}.get(high, "[context field, ...]"),
            )
        c.require(
            kind != "multilabel_classification" or self.label_separator is not None,
            "label_separator",
            "multilabel tasks need a label separator",
            self.label_separator,
            'e.g. ","',
        )
        c.require(
            kind != "multiple_choice" or bool(self.choices_field) or len(self.choice_fields) >= 2,
            "choices_field",
            "multiple choice needs the field holding the choices (or two or more choice_fields)",
            self.choices_field,
            "e.g. endings",
        )

    def _check_qa(self, c: FieldChecks) -> None:
        """Answer normalization, no-answer prediction and the span search's settings."""
        unsupported = sorted(set(self.languages) - set(M.MLQA_ARTICLES))
        c.require(
            self.normalization != "mlqa" or not unsupported,
            "normalization",
            "MLQA normalization has no rules for these languages",
            unsupported,
            f"languages among {sorted(M.MLQA_ARTICLES)}, or normalization: squad",
        )
        c.require(
            not self.no_answer or (self.type == "extractive_qa" and self.normalization == "squad"),
            "no_answer",
            "only extractive QA with SQuAD normalization predicts no answer",
            self.no_answer,
            "type: extractive_qa, normalization: squad",
        )
        for name in ("doc_stride", "max_answer_length", "n_best"):
            c.require(getattr(self, name) >= 1, name, "must be positive", getattr(self, name), ">= 1")

    @property
    def label_kind(self) -> str:
        if self.type == "retrieval":
            return M.BITEXT if self.format == "bucc" else M.SINGLE
        return TYPE_KIND[self.type]

    def _check_metrics(self, c: FieldChecks) -> None:
        kind = self.label_kind
        allowed = [n for n in M.METRICS.names() if kind in M.METRICS.get(n).kinds]
        for m in self.metrics:
            if m not in M.METRICS:
                c.require(False, "metrics", "unknown metric", m, f"one of {M.METRICS.names()}")
            elif kind not in M.METRICS.get(m).kinds:
                c.require(
                    False,
                    "metrics",
                    f"metric does not apply to {self.type} ({kind})",
                    m,
                    f"metrics for {kind}: {allowed}",
                )
        c.require(
            bool(self.metrics), "metrics", "needs at least one metric", self.metrics, f"some of {allowed}"
        )

    @property
    def task_family(self) -> str:
        return self.family or self.type

    @property
    def headline_metric(self) -> str:
        """The task's first metric: what selects checkpoints by default, heads the report and the plots."""
        return self.metrics[0]

    @property
    def evaluated_languages(self) -> tuple[str, ...]:
        """The languages an evaluation or probe covers when it names none."""
        return self.default_languages or self.languages

    def code(self, language: str) -> str:
        return self.language_codes.get(language, language)

    def language_named(self, name: str) -> str | None:
        """The task's own name for a language as a user writes it: the name itself, the data's file
        code (Tatoeba's `deu`), or an ISO 639-1 / 639-2 / 639-3 alias of one (deu, ger -> de; cmn ->
        zh; tgl -> tl: langcodes, macrolanguages folded); None when no language, or several, answer."""
        if name in self.languages:
            return name
        by_file = [lang for lang in self.languages if self.code(lang) == name]
        if len(by_file) == 1:
            return by_file[0]
        tag = standard_language(name)
        same = [
            lang
            for lang in self.languages
            if tag and tag in {standard_language(lang), standard_language(self.code(lang))}
        ]
        return same[0] if len(same) == 1 else None

    def splits_for(self, language: str, origin: str = "local") -> tuple[str, ...]:
        """The splits shipped for a language (hub: the hub's split mapping)."""
        if origin == "hub":
            return tuple(self.hub.splits) if self.hub else ()
        return tuple(s for s in self.files if language in self.split_languages.get(s, self.languages))

    def paths(self, split: str, language: str, root: Path) -> list[Path]:
        entry = self.files[split]
        templates = (entry,) if isinstance(entry, str) else entry
        return [root / t.format(lang=language, code=self.code(language)) for t in templates]


@functools.cache
def standard_language(code: str) -> str | None:
    """A language code's standard form (BCP 47 via langcodes: ISO 639-2/3 codes with a 639-1 one
    become it, a macrolanguage's members become the macrolanguage); None for what is not a code."""
    import langcodes

    try:
        return langcodes.standardize_tag(code, macro=True).split("-")[0].lower()
    except (langcodes.LanguageTagError, ValueError):
        return None


def load_task_file(path: Path) -> TaskSpec:
    """Read and validate one task declaration file; raise ConfigError naming the file and fields."""
    problems = Problems()
    raw = read_yaml(path, problems, "task file")
    spec = build(TaskSpec, raw, file=str(path), problems=problems) if raw is not None else None
    problems.raise_if_any()
    return spec
