"""Users' data as they have it: nested JSON fields by dotted path, multiple choice from CSV/TSV/JSON with
any number of context fields, an evaluation task whose labels are a subset of the head's, language codes
as users write them, errors that name the fix, and tasks whose "languages" are domains. Each file here
is written by the test; every count and score is computed again from the rows written."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from intertask import cli
from intertask.config.validate import load_experiment
from intertask.errors import ConfigError, DataError
from intertask.tasks.base import head_fit
from intertask.tasks.examples import load_examples
from intertask.tasks.spec import load_task_file

from .conftest import finetune_and_evaluate, write_experiment, write_yaml

FRACTIONS = {"train": 0.8, "dev": 0.1, "test": 0.1}
# a classification task of text<TAB>label lines, the shape most of these tests declare
TSV_TEXT = {
    "type": "classification",
    "format": "tsv",
    "columns": ["text", "label"],
    "text_fields": ["text"],
    "labels": ["neg", "pos"],
}


def _task(tmp_path, decl: dict):
    return load_task_file(write_yaml(tmp_path / f"{decl['name']}.yaml", decl))


def _load(spec, tmp_path, split="test", language="en"):
    return load_examples(spec, language, split, root=tmp_path, fractions=FRACTIONS, seed=0)


# --- nested JSON ------------------------------------------------------------------------------------

NLI_ROWS = [
    ("A man sleeps.", "A person rests.", "entailment"),
    ("A dog runs.", "A cat sleeps.", "contradiction"),
    ("Kids play.", "Children are outside.", "neutral"),
]


def _nested_nli(tmp_path, text_fields=("input.premise", "input.hypothesis")):
    path = tmp_path / "nested.jsonl"
    path.write_text(
        "".join(
            json.dumps({"meta": {"lang": "en"}, "input": {"premise": p, "hypothesis": h}, "label": y}) + "\n"
            for p, h, y in NLI_ROWS
        ),
        encoding="utf-8",
    )
    return _task(
        tmp_path,
        {
            "name": "nested_nli",
            "type": "classification",
            "format": "jsonl",
            "files": {"test": str(path)},
            "text_fields": list(text_fields),
            "labels": ["entailment", "neutral", "contradiction"],
        },
    )


def test_nested_jsonl_fields_are_named_by_their_dotted_path(tmp_path):
    data = _load(_nested_nli(tmp_path), tmp_path)
    assert [(e.texts, e.label) for e in data.examples] == [
        ((p, h), ["entailment", "neutral", "contradiction"].index(y)) for p, h, y in NLI_ROWS
    ]


def test_a_missing_path_segment_is_named_with_what_is_there(tmp_path):
    spec = _nested_nli(tmp_path, ("input.premis", "input.hypothesis"))
    with pytest.raises(DataError) as err:
        _load(spec, tmp_path)
    message = str(err.value)
    assert "nested.jsonl: line 1: missing field(s) 'input.premis': 'input' has no 'premis'" in message
    assert "(it has 'hypothesis', 'premise'); did you mean 'input.premise'?" in message


def test_extractive_qa_from_nested_jsonl_through_the_tasks_fields(tmp_path):
    """QA rows as a user's JSONL has them (question under q.text, answers a list of objects): the
    task's `fields` say where its type's fields are; a wrong path is named with what is there."""
    rows = [
        {
            "q": {"text": "Where is Paris?"},
            "passage": "Paris is in France.",
            "answers": [{"text": "France", "start": 12}],
        },
        {
            "q": {"text": "Who wrote it?"},
            "passage": "Ann wrote it.",
            "answers": [{"text": "Ann", "start": 0}, {"text": "Ann wrote", "start": 0}],
        },
    ]
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    decl = {
        "name": "my_qa",
        "type": "extractive_qa",
        "format": "jsonl",
        "files": {"test": str(path)},
        "metrics": ["f1", "exact_match"],
        "fields": {
            "question": "q.text",
            "context": "passage",
            "answers": "answers.text",
            "answer_starts": "answers.start",
        },
    }
    data = _load(_task(tmp_path, decl), tmp_path)
    assert [(e.texts, e.label) for e in data.examples] == [
        (("Where is Paris?", "Paris is in France."), (("France", 12),)),
        (("Who wrote it?", "Ann wrote it."), (("Ann", 0), ("Ann wrote", 0))),
    ]
    wrong = _task(tmp_path, {**decl, "name": "my_qa2", "fields": {**decl["fields"], "question": "q.txt"}})
    with pytest.raises(DataError, match="missing field\\(s\\) 'q.txt': 'q' has no 'txt' \\(it has 'text'\\)"):
        _load(wrong, tmp_path)


# --- multiple choice from any file ----------------------------------------------------------------------

STORIES = [  # four context sentences, two endings, the right one 1 or 2 (a story-cloze layout)
    (
        "Ann woke up.",
        "She was late.",
        'She said "hurry, now".',
        "She ran out,\nkeys in hand.",
        "She made it.",
        "She flew.",
        "1",
    ),
    (
        "Tom cooked.",
        "The pan was hot.",
        "He burnt it.",
        "Smoke rose.",
        "He ate a feast.",
        "He opened a window.",
        "2",
    ),
    (
        "It rained.",
        "Joe had no coat.",
        "He got wet.",
        "He went home.",
        "He changed clothes.",
        "He sunbathed.",
        "1",
    ),
]
STORY_COLUMNS = ["s1", "s2", "s3", "s4", "ending1", "ending2", "right"]


def _csv_cell(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n') else value


def test_multiple_choice_from_a_csv_with_bom_crlf_and_quoted_fields(tmp_path):
    """A story-cloze CSV as a spreadsheet writes it: a byte-order mark, Windows line ends, the columns in
    another order than the task names them, and a field holding a comma, a quote and a line break."""
    order = ["right", "ending2", "s1", "s2", "s3", "s4", "ending1"]
    lines = [",".join(order)] + [
        ",".join(_csv_cell(dict(zip(STORY_COLUMNS, row, strict=True))[c]) for c in order) for row in STORIES
    ]
    path = tmp_path / "stories.csv"
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8"))
    spec = _task(
        tmp_path,
        {
            "name": "stories",
            "type": "multiple_choice",
            "format": "csv",
            "header": True,
            "files": {"test": str(path)},
            "text_fields": ["s1", "s2", "s3", "s4"],
            "choice_fields": ["ending1", "ending2"],
            "label_field": "right",
            "labels": ["1", "2"],
        },
    )
    data = _load(spec, tmp_path)
    assert [(e.texts, e.label) for e in data.examples] == [
        ((" ".join(row[:4]), row[4], row[5]), int(row[6]) - 1) for row in STORIES
    ]


def test_multiple_choice_from_a_json_array_with_a_list_of_objects_and_a_separator(tmp_path):
    """CommonsenseQA's layout in one JSON array: the choices a list of {label, text} objects
    (`choices.text`), the answer a letter; the context two fields joined by the declared separator."""
    rows = [
        {
            "q": {"stem": "Where do fish live?", "hint": "water"},
            "choices": [{"label": "A", "text": "sea"}, {"label": "B", "text": "sky"}],
            "answer": "A",
        },
        {
            "q": {"stem": "What is hot?", "hint": "fire"},
            "choices": [{"label": "A", "text": "ice"}, {"label": "B", "text": "sun"}],
            "answer": "B",
        },
    ]
    path = tmp_path / "csqa.json"
    path.write_text(json.dumps({"data": rows}), encoding="utf-8")
    spec = _task(
        tmp_path,
        {
            "name": "csqa_like",
            "type": "multiple_choice",
            "format": "json",
            "files": {"test": str(path)},
            "text_fields": ["q.stem", "q.hint"],
            "context_separator": " | ",
            "choices_field": "choices.text",
            "label_field": "answer",
            "labels": ["A", "B"],
        },
    )
    data = _load(spec, tmp_path)
    assert [e.label for e in data.examples] == [0, 1]
    assert [e.texts for e in data.examples] == [
        ("Where do fish live? | water", "sea", "sky"),
        ("What is hot? | fire", "ice", "sun"),
    ]


def test_multiple_choice_from_tsv(tmp_path):
    path = tmp_path / "stories.tsv"
    path.write_text(
        "".join(
            "\t".join(row) + "\n"
            for row in [STORY_COLUMNS, *[[c.replace("\n", " ") for c in r] for r in STORIES]]
        ),
        encoding="utf-8",
    )
    spec = _task(
        tmp_path,
        {
            "name": "stories_tsv",
            "type": "multiple_choice",
            "format": "tsv",
            "header": True,
            "files": {"test": str(path)},
            "text_fields": STORY_COLUMNS[:4],
            "choice_fields": ["ending1", "ending2"],
            "label_field": "right",
            "labels": ["1", "2"],
        },
    )
    assert [e.label for e in _load(spec, tmp_path).examples] == [0, 1, 0]


# --- errors that name the fix -------------------------------------------------------------------------


def test_a_quoted_tsv_read_without_quotechar_suggests_it(tmp_path):
    path = tmp_path / "quoted.tsv"
    path.write_text('text\tlabel\n"a tab\there, quoted"\tpos\n', encoding="utf-8")
    decl = {"name": "quoted", **TSV_TEXT, "header": True, "files": {"test": str(path)}}
    decl.pop("columns")
    with pytest.raises(DataError) as err:
        _load(_task(tmp_path, decl), tmp_path)
    assert "quoted.tsv: line 2: wrong number of tab-separated columns (got 3;" in str(err.value)
    assert "declare the task's `quotechar`" in str(err.value)
    quoted = _task(tmp_path, {**decl, "name": "quoted2", "quotechar": '"'})
    assert [e.texts for e in _load(quoted, tmp_path).examples] == [("a tab\there, quoted",)]


def test_a_latin1_file_read_as_utf8_suggests_the_encoding(tmp_path):
    path = tmp_path / "latin.tsv"
    path.write_bytes("caf\xe9 cr\xe8me\tpos\n".encode("latin-1"))
    spec = _task(
        tmp_path,
        {
            "name": "latin",
            "type": "classification",
            "format": "tsv",
            "columns": ["text", "label"],
            "files": {"test": str(path)},
            "text_fields": ["text"],
            "labels": ["neg", "pos"],
        },
    )
    with pytest.raises(DataError, match="set the task's `encoding`"):
        _load(spec, tmp_path)


# --- labels: a subset of the head's ----------------------------------------------------------------------

CONLL = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")


def test_a_task_whose_labels_are_a_subset_of_the_heads_fits_and_a_partial_overlap_does_not():
    without_misc = ("O", "B-LOC", "I-LOC", "B-PER", "I-PER", "B-ORG", "I-ORG")
    fit = head_fit(("token_classification", CONLL), ("token_classification", without_misc))
    assert fit.fits and fit.unused == ("B-MISC", "I-MISC")
    assert [CONLL[i] for i in fit.order] == list(without_misc)  # output i of the task = its own label
    partial = head_fit(("token_classification", CONLL), ("token_classification", ("O", "B-PER", "B-DATE")))
    assert not partial.fits and "the head has no ['B-DATE']" in partial.problem


@pytest.mark.slow
def test_a_subset_evaluation_is_scored_among_its_own_labels_and_said_by_validate_and_main(
    tmp_path, tiny_model, local_store, capsys
):
    """A target trained on [neg, neutral, pos]; an evaluation task of the same sentences declaring only
    [neg, pos]. Its predictions are argmax over neg and pos: never neutral, and equal to the full
    task's prediction wherever that was neg or pos; its accuracy is recomputed from them by hand.
    `intertask validate` prints the same notice `main` prints and records."""
    sentences = [(f"good film {i}", "pos") for i in range(24)] + [(f"bad film {i}", "neg") for i in range(12)]
    train = tmp_path / "train.tsv"
    train.write_text(
        "".join(f"{t}\t{y}\n" for t, y in sentences) + "".join(f"ok film {i}\tneutral\n" for i in range(12)),
        encoding="utf-8",
    )
    test = tmp_path / "test.tsv"
    rows = [(f"good story {i}", "pos") for i in range(15)] + [(f"bad story {i}", "neg") for i in range(9)]
    test.write_text("".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")
    base = {"type": "classification", "format": "tsv", "columns": ["text", "label"], "text_fields": ["text"]}
    files = [
        write_yaml(
            tmp_path / "three.yaml",
            {**base, "name": "three", "labels": ["neg", "neutral", "pos"], "files": {"all": str(train)}},
        ),
        write_yaml(
            tmp_path / "full.yaml",
            {**base, "name": "full", "labels": ["neg", "neutral", "pos"], "files": {"test": str(test)}},
        ),
        write_yaml(
            tmp_path / "two.yaml",
            {**base, "name": "two", "labels": ["neg", "pos"], "files": {"test": str(test)}},
        ),
    ]
    config = write_experiment(
        tmp_path,
        tiny_model,
        "subset",
        study=False,
        data={"task_files": [str(f) for f in files]},
        target={"task": "three", "language": "en"},
        training={"epochs": 1},
        evaluation={
            "tasks": [{"task": "full", "languages": ["en"]}, {"task": "two", "languages": ["en"]}],
            "save_predictions": True,
        },
    )
    line = (
        "two: labels ['neg', 'pos'] scored by the head of three, whose labels are ['neg', 'neutral', 'pos']: "
        "predictions restricted to the task's labels (the head's ['neutral'] are never predicted)"
    )
    assert cli.main(["validate", str(config)]) == 0
    assert f"note: {line}" in capsys.readouterr().err
    assert cli.main(["main", str(config)]) == 0
    assert f"note: {line}" in capsys.readouterr().err
    client = MlflowClient()
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`intertask.stage` = 'evaluate'"
    )
    assert run.data.tags["intertask.notice.labels_restricted.two"] == line
    predictions = pd.read_csv(
        client.download_artifacts(run.info.run_id, "evaluation/predictions.csv", str(tmp_path))
    )
    full = predictions[predictions.task == "full"].prediction.tolist()
    two = predictions[predictions.task == "two"].prediction.tolist()
    assert set(two) <= {"neg", "pos"}
    assert all(t == f for t, f in zip(two, full, strict=True) if f != "neutral")
    by_hand = float(np.mean([p == gold for p, (_, gold) in zip(two, rows, strict=True)]))
    assert run.data.metrics["two/test/en/accuracy"] == pytest.approx(by_hand)


# --- language codes as users write them ----------------------------------------------------------------


def test_language_codes_as_the_data_or_iso_spell_them_are_one_language(shared_data):
    from intertask.tasks import builtin_catalog

    tatoeba = builtin_catalog().spec("tatoeba")
    assert tatoeba.language_named("deu") == "de"  # the files' own code (tatoeba.deu-eng.deu)
    assert tatoeba.language_named("ger") == "de"  # ISO 639-2/B
    assert tatoeba.language_named("cmn") == "zh"  # a macrolanguage's member
    assert tatoeba.language_named("de") == "de"
    assert tatoeba.language_named("xx") is None
    xnli = builtin_catalog().spec("xnli")
    assert xnli.language_named("fra") == "fr" and xnli.language_named("swh") == "sw"


def test_a_probe_in_iso_639_3_is_read_in_the_tasks_form_and_an_unknown_code_reads_as_a_sentence(
    tmp_path, tiny_model, shared_data, capsys
):
    config = write_experiment(
        tmp_path,
        tiny_model,
        "codes",
        probes=[{"task": "tatoeba", "languages": ["deu", "fra"], "after": ["base"]}],
    )
    cfg = load_experiment(config)
    assert cfg.probes[0].languages == ("de", "fr")
    err = capsys.readouterr().err
    assert "note: probes[0].languages[0]: language 'deu' read as 'de' (tatoeba's name for it)" in err
    config = write_experiment(
        tmp_path, tiny_model, "codes", probes=[{"task": "tatoeba", "languages": ["dex"], "after": ["base"]}]
    )
    with pytest.raises(ConfigError) as raised:
        load_experiment(config)
    message = str(raised.value)
    assert "probes[0].languages[0]: task 'tatoeba' has no language 'dex'; did you mean" in message
    assert "(got 'dex'; expected one of its 112 languages (" in message


# --- domains declared as languages ---------------------------------------------------------------------


def test_a_task_whose_languages_are_domains_gets_a_mean_over_domains_and_no_mean_non(
    tmp_path, tiny_model, local_store
):
    folder = tmp_path / "reviews"
    folder.mkdir()
    for domain, words in (("books", "novel"), ("dvd", "film"), ("kitchen", "pan")):
        rows = [f"great {words} {i}\tpos\n" for i in range(20)] + [
            f"awful {words} {i}\tneg\n" for i in range(20)
        ]
        (folder / f"{domain}.tsv").write_text("".join(rows), encoding="utf-8")
    decl = write_yaml(
        tmp_path / "reviews.yaml",
        {
            "name": "reviews",
            **TSV_TEXT,
            "languages": ["books", "dvd", "kitchen"],
            "languages_are": "domains",
            "files": {"all": str(folder / "{lang}.tsv")},
        },
    )
    config = write_experiment(
        tmp_path,
        tiny_model,
        "domains",
        study=False,
        data={"task_files": [str(decl)]},
        target={"task": "reviews", "language": "books"},
        training={"epochs": 1},
        evaluation={"languages": ["books", "dvd", "kitchen"]},
    )
    _, evaluated = finetune_and_evaluate(load_experiment(config))
    table = evaluated.table
    languages = set(table.language)
    assert languages == {"books", "dvd", "kitchen", "mean_all"}
    per = table[table.language.isin(["books", "dvd", "kitchen"]) & (table.metric == "accuracy")].value
    mean = table[(table.language == "mean_all") & (table.metric == "accuracy")].value.item()
    assert mean == pytest.approx(per.mean())


@pytest.mark.slow
def test_validate_foresees_the_leakage_guard_as_the_evaluation_records_it(
    tmp_path, tiny_model, local_store, capsys
):
    """One file declared as both the train and the test set: `intertask validate` says, before anything
    trains, the line the evaluation stage then prints and records (every test example was seen)."""
    path = tmp_path / "same.tsv"
    path.write_text(
        "".join(
            f"film {i} was {'good' if i % 2 else 'bad'}\t{'pos' if i % 2 else 'neg'}\n" for i in range(30)
        )
    )
    decl = write_yaml(
        tmp_path / "same.yaml",
        {
            "name": "same",
            **TSV_TEXT,
            "files": {"train": str(path), "test": str(path)},
        },
    )
    config = write_experiment(
        tmp_path,
        tiny_model,
        "leaky",
        study=False,
        data={"task_files": [str(decl)]},
        target={"task": "same", "language": "en", "max_examples": {"train": 20, "dev": 4}},
        training={"epochs": 1},
        evaluation={"languages": ["en"]},
    )
    assert cli.main(["validate", str(config)]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "leakage guard" in line]
    assert said and all("the same text was seen in training" in line for line in said), said
    assert cli.main(["main", str(config)]) == 0
    client = MlflowClient()
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`intertask.stage` = 'evaluate'"
    )
    recorded = {v for k, v in run.data.tags.items() if k.startswith("intertask.notice.leakage_guard.")}
    assert recorded == {line.removeprefix("note: ") for line in said}
