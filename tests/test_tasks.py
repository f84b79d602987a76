"""Every built-in task loads, encodes, predicts and scores its real slice; user tasks need no code;
every broken data file is reported with its file and line before anything trains."""

import json
import re

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from intertask.compute import modeling
from intertask.compute.batching import collate
from intertask.compute.encoding import encode
from intertask.compute.evaluation import evaluate_set
from intertask.errors import ConfigError, DataError
from intertask.tasks import builtin_catalog
from intertask.tasks.examples import load_examples, plan_split
from intertask.tasks.spec import load_task_file
from intertask.tasks.types import task_type

from .conftest import write_yaml

FRACTIONS = {"train": 0.6, "dev": 0.1, "test": 0.3}
CATALOG = builtin_catalog()
FIXTURE_TASKS = {
    "mlqa",
    "bucc2018",
    "hellaswag",
    "panx",
    "squad_v2",
}  # not in ../shared/data: tests/fixtures.py writes them
# per built-in task: (language, split) slices to load, encode, predict and score
CASES = {
    "xnli": [("en", "train"), ("de", "test")],
    "pawsx": [("en", "train"), ("ja", "test")],
    "sst2": [("en", "train"), ("en", "test")],
    "sms_spam": [("en", "train"), ("en", "test")],
    "movie_reviews": [("en", "train"), ("en", "test")],
    "rte": [("en", "train"), ("en", "test")],
    "goemotions": [("en", "train"), ("en", "test")],
    "udpos": [("en", "train"), ("de", "test"), ("zh", "test")],
    "udpos_shuffled": [("en", "train"), ("de", "test")],
    "ud": [("en", "train"), ("fr", "test")],
    "conll2003": [("en", "train"), ("en", "test")],
    "conll2002": [("es", "train"), ("nl", "test")],
    "xquad": [("de", "test"), ("zh", "test")],
    "tydiqa": [("en", "train"), ("en", "dev")],  # the dev (= test) files here have no answers
    "mlqa": [("en", "test"), ("zh", "dev")],
    "tatoeba": [("fr", "test"), ("de", "test")],
    "bucc2018": [("de", "test"), ("fr", "test")],
    "hellaswag": [("en", "train"), ("en", "dev")],
    "panx": [("en", "train"), ("de", "test"), ("zh", "test")],
    "squad_v2": [("en", "train"), ("en", "dev")],
}


def test_every_builtin_task_has_a_case():
    hub_only = {n for n in CATALOG.names() if not CATALOG.spec(n).files}  # tests/test_hub_tasks.py
    assert hub_only == {
        "mnli",
        "anli",
        "qqp",
        "squad",
        "cosmos_qa",
        "commonsense_qa",
        "imdb",
        "allocine",
        "muchocine",
    }
    assert set(CATALOG.names()) - hub_only == set(CASES)


def _load(name, language, split, shared_data, fixture_data, k=24):
    root = fixture_data if name in FIXTURE_TASKS else shared_data
    return load_examples(
        CATALOG.spec(name), language, split, root=root, fractions=FRACTIONS, seed=1, max_examples=k
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_builtin_task_loads_encodes_predicts_and_scores(name, shared_data, fixture_data, tiny_model):
    spec = CATALOG.spec(name)
    task = task_type(spec)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    if task.trainable:
        model = modeling.build_models(
            str(tiny_model),
            [modeling.HeadSpec(name, task.head, task.model_kwargs(), task.head_signature())],
            seed=0,
        )[name]
    for language, split in CASES[name]:
        data = _load(name, language, split, shared_data, fixture_data)
        assert 0 < len(data) <= (24 if task.trainable else len(data)), (language, split)
        if task.trainable:
            encoded = encode(task, data, tokenizer, 64, cache_dir=None)
            assert max(encoded.lengths) <= 64 * (
                len(data.examples[0].texts) - 1 if task.head == "multiple_choice" else 1
            )
            scored = evaluate_set(model, task, data, encoded, pad_id=tokenizer.pad_token_id, batch_tokens=512)
            scores = scored.scores
            assert len(scored.predictions) == len(data)
            if split == "train":  # the training path: targets collate and give a finite loss
                batch = collate(encoded, np.arange(min(4, len(encoded))), tokenizer.pad_token_id)
                assert torch.isfinite(model(**batch).loss)
        else:
            encoder = AutoModel.from_pretrained(tiny_model)
            encoded = task.encode(data, tokenizer, 64)
            vectors = task.embed(encoder, encoded, layer=-1, pad_id=tokenizer.pad_token_id, batch_tokens=512)
            assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
            scores, _, _ = task.score_embeddings(vectors, data, spec.metrics)
        assert set(scores) == set(spec.metrics), (language, split)
        assert all(0.0 <= v <= 1.0 for v in scores.values()), scores


def test_multilabel_goemotions_labels_are_sets_of_indices(shared_data):
    spec = CATALOG.spec("goemotions")
    data = load_examples(spec, "en", "dev", root=shared_data, fractions=FRACTIONS, seed=1)
    assert len(data) == 5426
    assert data.examples[1].label == (4, 27)  # "...don’t avoid them!\t4,27" -> approval, neutral
    gold = task_type(spec).gold(data)
    assert gold.shape == (5426, 28) and gold[1, 4] == gold[1, 27] == 1 and gold[1].sum() == 2


def test_rte_maps_both_label_vocabularies(shared_data):
    spec = CATALOG.spec("rte")
    train = load_examples(spec, "en", "train", root=shared_data, fractions=FRACTIONS, seed=1)
    dev = load_examples(spec, "en", "dev", root=shared_data, fractions=FRACTIONS, seed=1)
    test = load_examples(spec, "en", "test", root=shared_data, fractions=FRACTIONS, seed=1)
    assert len(train) + len(dev) == 567 + 800 + 400 + 800 + 800 and len(test) == 800
    assert not set(train.uids) & set(dev.uids)
    assert {e.label for e in train.examples} == {0, 1}


def test_single_file_sets_are_cut_by_fractions(shared_data):
    spec = CATALOG.spec("sms_spam")
    sizes = {
        s: len(load_examples(spec, "en", s, root=shared_data, fractions=FRACTIONS, seed=5))
        for s in ("train", "dev", "test")
    }
    assert (
        sum(sizes.values()) == 5574 and sizes["test"] == int(5574 * 0.3) and sizes["dev"] == int(5574 * 0.1)
    )
    assert plan_split(spec, "test", "en", FRACTIONS).derived


# --- user tasks from YAML ---------------------------------------------------------------------------


def _user_task(tmp_path, fmt, body, **extra):
    data_file = tmp_path / f"data.{fmt}"
    data_file.write_text(body, encoding="utf-8")
    decl = {
        "name": f"my_{fmt}",
        "type": "classification",
        "format": fmt,
        "files": {"all": str(data_file)},
        "text_fields": ["text"],
        "labels": ["neg", "pos"],
        **extra,
    }
    return load_task_file(write_yaml(tmp_path / f"{fmt}.yaml", decl)), data_file


@pytest.mark.parametrize(
    "fmt, body, extra",
    [
        ("csv", "text,label\n" + '"hello, world",pos\nbad day,neg\n' * 10, {"header": True}),
        ("tsv", "hello world\tpos\nbad day\tneg\n" * 10, {"columns": ["text", "label"]}),
        (
            "jsonl",
            "".join(
                json.dumps({"text": t, "label": lab}) + "\n" for t, lab in [("hi", "pos"), ("no", "neg")] * 10
            ),
            {},
        ),
    ],
)
def test_user_task_from_yaml_without_code(tmp_path, fmt, body, extra):
    spec, _ = _user_task(tmp_path, fmt, body, **extra)
    data = load_examples(spec, "en", "train", root=tmp_path, fractions=FRACTIONS, seed=0)
    assert len(data) == 12 and {e.label for e in data.examples} == {0, 1}
    if fmt == "csv":
        assert any(e.texts == ("hello, world",) for e in data.examples)


def _csv_hub_task(tmp_path, labels: list[int]):
    """A `hub:` declaration served by `datasets`' packaged csv builder: one row per label (ClassLabel
    integers; -1 is the hub's unlabelled marker)."""
    csv = tmp_path / "train.csv"
    csv.write_text("sentence,label\n" + "".join(f"text {i},{label}\n" for i, label in enumerate(labels)))
    decl = {
        "name": "hubby",
        "type": "classification",
        "text_fields": ["sentence"],
        "labels": ["neg", "pos"],
        "hub": {
            "path": "csv",
            "data_files": {"train": str(csv)},
            "splits": {"train": "train"},
            "label_names": ["neg", "pos"],
        },
    }
    return load_task_file(write_yaml(tmp_path / "hub.yaml", decl))


def test_hub_source_goes_through_datasets_load_dataset(tmp_path):
    """The hub code path, offline: `datasets`' packaged csv builder behind a `hub:` declaration."""
    spec = _csv_hub_task(tmp_path, [i % 2 for i in range(30)])
    train = load_examples(spec, "en", "train", root=tmp_path, fractions=FRACTIONS, seed=0, origin="hub")
    test = load_examples(spec, "en", "test", root=tmp_path, fractions=FRACTIONS, seed=0, origin="hub")
    assert len(train) + len(test) < 30 and len(test) == 9
    assert {e.label for e in train.examples} == {0, 1}


# --- bad task declarations and bad data ---------------------------------------------------------------


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"type": "ner"}, "type: unknown value (got 'ner'"),
        ({"text_fields": []}, "text_fields: classification needs 1 or 2 field(s)"),
        (
            {"metrics": ["micro_f1"]},
            "metrics: metric does not apply to classification (single_label) (got 'micro_f1'",
        ),
        ({"metrics": ["acc"]}, "metrics: unknown metric (got 'acc'"),
        ({"label_map": {"x": "maybe"}}, "label_map: maps to labels not in `labels`"),
        ({"files": {"validation": "x.tsv"}}, "files: unknown split names (got ['validation']"),
        ({"format": "parquet"}, "format: unknown value (got 'parquet'"),
        ({"colums": ["a"]}, "colums: unknown key (got 'colums'; expected did you mean 'columns'?"),
        ({"delimiter": ";;"}, "delimiter: must be one character (got ';;'"),
        ({"quotechar": "\t"}, "quotechar: must differ from the delimiter (got '\\t'"),
        ({"format": "jsonl", "delimiter": ";"}, "delimiter: only tsv/csv files have one (got ';'"),
    ],
)
def test_bad_task_declaration_names_file_and_field(tmp_path, change, expected):
    decl = {
        "name": "t",
        "type": "classification",
        "format": "tsv",
        "columns": ["text", "label"],
        "files": {"all": "x.tsv"},
        "text_fields": ["text"],
        "labels": ["a", "b"],
        **change,
    }
    path = write_yaml(tmp_path / "task.yaml", decl)
    with pytest.raises(ConfigError) as info:
        load_task_file(path)
    assert any(str(p).startswith(f"{path}: ") and expected in str(p) for p in info.value.problems), info.value


def _load_bad(tmp_path, fmt, content: bytes, **extra):
    path = tmp_path / f"bad.{fmt}"
    path.write_bytes(content)
    decl = {
        "name": "bad",
        "type": "classification",
        "format": fmt,
        "files": {"all": str(path)},
        "text_fields": ["text"],
        "labels": ["neg", "pos"],
        **extra,
    }
    spec = load_task_file(write_yaml(tmp_path / "bad.yaml", decl))
    with pytest.raises(DataError) as info:
        load_examples(spec, "en", "train", root=tmp_path, fractions=FRACTIONS, seed=0)
    return str(info.value), path


@pytest.mark.parametrize(
    "fmt, content, extra, expected",
    [
        (
            "tsv",
            b"a\tpos\nb\tneg\tEXTRA\n",
            {"columns": ["text", "label"]},
            "line 2: wrong number of tab-separated columns (got 3; expected 2 columns (text, label))",
        ),
        (
            "tsv",
            b"a\tpos\nb\tmaybe\n",
            {"columns": ["text", "label"]},
            "line 2: unknown label in field 'label' (got 'maybe'; expected one of ['neg', 'pos'])",
        ),
        (
            "tsv",
            b"a\tpos\n\xff\xfe broken\tneg\n",
            {"columns": ["text", "label"]},
            "line 2: cannot be decoded as utf-8 at byte 0",
        ),
        ("tsv", b"", {"columns": ["text", "label"]}, "data file is empty"),
        ("csv", b"text,label\n", {"header": True}, "no records after the header"),
        (
            "jsonl",
            b'{"text": "a", "label": "pos"}\n{"text": "b", "label": \n',
            {},
            "line 2: invalid JSON: Expecting value at column 24",
        ),
        ("jsonl", b'{"text": "a", "label": "pos"}\n["b", "neg"]\n', {}, "line 2: not a JSON object"),
        (
            "jsonl",
            b'{"text": "a", "label": "pos"}\n{"txt": "b", "label": "neg"}\n',
            {},
            "line 2: missing field(s) 'text'; did you mean 'txt'?",
        ),
    ],
)
def test_bad_data_names_file_and_line(tmp_path, fmt, content, extra, expected):
    message, path = _load_bad(tmp_path, fmt, content, **extra)
    assert message.startswith(f"{path}: ") and expected in message, message


def test_missing_data_file(tmp_path):
    spec = load_task_file(
        write_yaml(
            tmp_path / "t.yaml",
            {
                "name": "t",
                "type": "classification",
                "format": "tsv",
                "columns": ["text", "label"],
                "files": {"all": "nowhere/x.tsv"},
                "text_fields": ["text"],
                "labels": ["a", "b"],
            },
        )
    )
    with pytest.raises(DataError, match=r"nowhere/x.tsv: data file not found"):
        load_examples(spec, "en", "train", root=tmp_path, fractions=FRACTIONS, seed=0)


def test_user_task_name_clash_with_builtin(tmp_path):
    path = write_yaml(
        tmp_path / "t.yaml",
        {
            "name": "pawsx",
            "type": "classification",
            "format": "jsonl",
            "files": {"all": "x"},
            "text_fields": ["t"],
            "labels": ["a", "b"],
        },
    )
    with pytest.raises(ConfigError, match="name: task name already declared"):
        CATALOG.with_files((path,))


def test_encoded_cache_round_trip(tmp_path, shared_data, tiny_model):
    spec = CATALOG.spec("pawsx")
    task = task_type(spec)
    data = load_examples(spec, "de", "test", root=shared_data, fractions=FRACTIONS, seed=1, max_examples=30)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    first = encode(task, data, tokenizer, 64, tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    second = encode(task, data, tokenizer, 64, tmp_path)
    for a, b in zip(first.inputs["input_ids"], second.inputs["input_ids"], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first.targets["labels"], second.targets["labels"])
    assert "token_type_ids" in second.inputs


def test_length_group_window_trades_padding_for_mixing():
    from intertask.compute.batching import length_grouped_batches, shuffled_batches
    from intertask.config import TrainingConfig

    lengths = np.random.default_rng(0).integers(3, 120, size=1600)

    def padded(batches):
        return sum(int(lengths[b].max()) * len(b) for b in batches)

    made = {w: length_grouped_batches(lengths, 16, np.random.default_rng(7), window=w) for w in (1, 8, 50)}
    for batches in made.values():
        assert sorted(np.concatenate(batches).tolist()) == list(range(1600))  # every row once per pass
    assert padded(made[1]) > padded(made[8]) > padded(made[50])
    # a window of one batch sorts nothing across batches: the same batches as plain shuffling
    plain = shuffled_batches(lengths, 16, np.random.default_rng(7))
    assert {frozenset(b.tolist()) for b in made[1]} == {frozenset(b.tolist()) for b in plain}
    with pytest.raises(ConfigError, match=r"<python>: length_group_window: must be positive"):
        TrainingConfig(length_group_window=0)


def test_a_csv_error_names_the_file_line_after_a_multi_line_field(tmp_path):
    """A quoted field over two lines: the next record's error names the line it is on in the file (it
    named the parsed row's number, one too few)."""
    from intertask.data.readers import ReadOptions, read_csv
    from intertask.errors import DataError

    path = tmp_path / "spam.csv"
    path.write_text('label,text\nham,"two\nlines"\nspam,ok\nham,too,many\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 5"):
        read_csv(path, ReadOptions(header=True))
    path.write_text('label,text\nham,"two\nlines"\nspam,ok\n', encoding="utf-8")
    records = read_csv(path, ReadOptions(header=True))
    assert [r.where for r in records] == ["line 2", "line 4"] and records[0].fields["text"] == "two\nlines"
    path.write_text('label,text\nham,ok\nspam,"open\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 3.*malformed CSV"):
        read_csv(path, ReadOptions(header=True))


def test_quoted_multi_line_tsv_and_semicolon_csv_load_as_users_have_them(tmp_path):
    """Review TSVs in the Blitzer multi-domain layout (quoted fields with tabs and newlines inside) read
    with `quotechar: '"'`; a semicolon-separated CSV with `delimiter: ";"`; a bad row still names its
    file line. Plain TSV keeps reading bare quotes as text (the XTREME files have them)."""
    from intertask.errors import DataError

    reviews = "".join(
        f'{"pos" if i % 2 else "neg"}\t"Review {i}: ""great""\tor not,\nsecond line"\n' for i in range(10)
    )
    spec, _ = _user_task(
        tmp_path, "tsv", "label\ttext\n" + reviews, header=True, quotechar='"', name="reviews"
    )
    data = load_examples(spec, "en", "train", root=tmp_path, fractions=FRACTIONS, seed=0)
    assert all(re.fullmatch(r'Review \d: "great"\tor not,\nsecond line', e.texts[0]) for e in data.examples)
    assert len(data) == 6  # 60 % of 10 records (not of 20 lines)
    rows = "".join(f'"Text {i}; with a semicolon";{"pos" if i % 2 else "neg"}\n' for i in range(10))
    spec, csv_file = _user_task(tmp_path, "csv", "text;label\n" + rows, header=True, delimiter=";")
    data = load_examples(spec, "en", "train", root=tmp_path, fractions=FRACTIONS, seed=0)
    assert all(e.texts[0].endswith("; with a semicolon") for e in data.examples)
    csv_file.write_text('text;label\n"a\nb";pos\nc;neg;extra\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"data.csv: line 4: wrong number of ';'-separated columns"):
        load_examples(spec, "en", "train", root=tmp_path, fractions=FRACTIONS, seed=1)
    bare, _ = _user_task(tmp_path, "tsv", 'say "hi\tpos\n' * 10, columns=["text", "label"], name="bare")
    data = load_examples(bare, "en", "train", root=tmp_path, fractions=FRACTIONS, seed=0)
    assert all(e.texts == ('say "hi',) for e in data.examples)


def test_unlabelled_rows_are_left_out_with_a_warning_and_an_unlabelled_split_is_an_error(tmp_path):
    """The hub's -1 (PAWS-X's hub script output, unlabelled test splits) and an empty label in a local
    file: the rows are left out, counted and warned about; a split of nothing but such rows stops with
    an error naming it."""
    from intertask.errors import DataError
    from intertask.tasks.examples import UnlabelledRowsWarning

    spec = _csv_hub_task(tmp_path, [-1 if i % 5 == 0 else i % 2 for i in range(30)])
    with pytest.warns(UnlabelledRowsWarning, match=r"6 of 30 rows of the train set have no label"):
        train = load_examples(spec, "en", "train", root=tmp_path, fractions=FRACTIONS, seed=0, origin="hub")
    assert train.unlabelled == 6 and train.source_size == 24
    local, data_file = _user_task(
        tmp_path,
        "tsv",
        "".join(f"text {i}\t{'' if i < 3 else 'pos'}\n" for i in range(20)),
        columns=["text", "label"],
    )
    with pytest.warns(UnlabelledRowsWarning, match=r"data.tsv: 3 of 20 rows"):
        data = load_examples(local, "en", "train", root=tmp_path, fractions=FRACTIONS, seed=0)
    assert data.unlabelled == 3 and data.source_size == 17
    data_file.write_text("".join(f"text {i}\t\n" for i in range(20)), encoding="utf-8")
    with pytest.raises(DataError, match=r"data.tsv: every row of the all set is unlabelled \(20 rows"):
        load_examples(local, "en", "train", root=tmp_path, fractions=FRACTIONS, seed=1)


def test_panx_trains_and_scores_as_xtreme_does(tiny_config, fixture_data, local_store):
    """PAN-X in XTREME's layout: the tiny model trains on English, the evaluation run's per-language
    entity F1 equals seqeval's on the same predictions, and with UD-POS it completes XTREME's
    structured-prediction group."""
    import warnings

    from seqeval import metrics as sq

    from intertask import metrics, tracking
    from intertask.compute.evaluation import evaluate_set
    from intertask.compute.modeling import load_for_task, load_tokenizer
    from intertask.config.validate import load_experiment
    from intertask.stages import evaluate, finetune
    from intertask.study.workspace import Workspace

    config = tiny_config(
        "panx",
        intermediate=None,
        data={"root": str(fixture_data)},
        training={"epochs": 2, "learning_rate": 3.0e-3},
        target={"task": "panx", "max_examples": {"train": 48, "dev": 12}},
        evaluation={"languages": ["de", "zh"], "max_examples": None},
    )
    cfg = load_experiment(config)
    tracking.use(cfg)
    ws = Workspace(cfg)
    trained = finetune(ws)
    evaluated = evaluate(ws, trained)
    spec, task = CATALOG.spec("panx"), task_type(CATALOG.spec("panx"))
    model = load_for_task(trained.files.model_dir, "panx", task.head_signature())
    tokenizer = load_tokenizer(str(trained.files.model_dir))
    ws.close()
    table = evaluated.table.set_index(["language", "metric"]).value
    for language in ("de", "zh"):
        data = load_examples(spec, language, "test", root=fixture_data, fractions=FRACTIONS, seed=7)
        scored = evaluate_set(
            model,
            task,
            data,
            encode(task, data, tokenizer, 64, None),
            pad_id=tokenizer.pad_token_id,
            batch_tokens=512,
        )
        pred = [[spec.labels[i] for i in p] for p in scored.predictions]
        gold = [[spec.labels[i] for i in e.label] for e in data.examples]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert table[language, "f1"] == pytest.approx(sq.f1_score(gold, pred), abs=1e-12)
        rng = np.random.default_rng(len(language))  # fixed predictions near the gold: F1 well above 0
        near = [[t if rng.random() < 0.8 else str(rng.choice(spec.labels)) for t in g] for g in gold]
        indices = [np.array([spec.labels.index(t) for t in sentence]) for sentence in near]
        got = task.score(indices, data, ("f1", "precision", "recall"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = (sq.f1_score(gold, near), sq.precision_score(gold, near), sq.recall_score(gold, near))
        assert 0.3 < expected[0] < 1.0
        assert (got["f1"], got["precision"], got["recall"]) == pytest.approx(expected, abs=1e-12)
    assert "structured_prediction" in metrics.xtreme_aggregate({"udpos": 0.7, "panx": 0.6})


def test_squad_v2_trains_on_the_tiny_model_and_reports_the_v2_metrics(tiny_config, fixture_data, local_store):
    """SQuAD v2.0 as a training stage: answerable and unanswerable questions train, and evaluation logs
    the official v2.0 EM/F1 with their HasAns / NoAns parts."""
    from intertask.config.validate import load_experiment

    from .conftest import finetune_and_evaluate

    config = tiny_config(
        "squad-v2",
        intermediate=None,
        data={"root": str(fixture_data)},
        training={"epochs": 1},
        target={"task": "squad_v2", "max_examples": {"train": 40, "dev": 8}},
        evaluation={"languages": ["en"], "max_examples": 12},
    )
    trained, evaluated = finetune_and_evaluate(load_experiment(config))
    assert set(trained.best_dev["squad_v2"]) == set(CATALOG.spec("squad_v2").metrics)
    import mlflow

    assert "null_threshold/squad_v2" in mlflow.get_run(trained.run_id).data.metrics  # chosen on dev
    en = evaluated.table[evaluated.table.language == "en"].set_index("metric").value
    assert set(en.index) == set(CATALOG.spec("squad_v2").metrics)
    assert all(0.0 <= v <= 1.0 for v in en)


def test_resplit_pools_every_shipped_set_and_cuts_it_like_a_one_file_task(shared_data):
    """data.resplit: SST-2 ships train/dev/test; pooled (train first) and cut 60/10/30 with the seed, the
    three splits partition the pool, the test share is 30 % of it (not the shipped test file), and the
    same seed gives the same cut. Without resplit the shipped files are used as they are."""
    spec = CATALOG.spec("sst2")

    def split(name, resplit=True, seed=4):
        return load_examples(
            spec, "en", name, root=shared_data, fractions=FRACTIONS, seed=seed, resplit=resplit
        )

    train, dev, test = split("train"), split("dev"), split("test")
    pool = train.source_size
    assert train.source == dev.source == test.source == "pool" and len(train.files) == 3
    assert pool == sum(len(split(n, resplit=False)) for n in ("train", "dev", "test"))
    assert len(test) == int(pool * 0.3) and len(dev) == int(pool * 0.1)
    uids = [set(s.uids) for s in (train, dev, test)]
    assert not (uids[0] & uids[1] or uids[0] & uids[2] or uids[1] & uids[2])
    assert sum(map(len, uids)) == pool
    assert list(split("test").uids) == list(test.uids) and list(split("test", seed=5).uids) != list(test.uids)
    assert split("test", resplit=False).source == "test"


def test_shuffled_labels_keep_every_tag_and_cut_its_tie_to_the_word(shared_data):
    """The negative control's training tags: the same multiset over the same sentences (lengths kept),
    most tokens tagged otherwise, the same permutation every time; its test tags stay as they are."""
    plain, shuffled = CATALOG.spec("udpos"), CATALOG.spec("udpos_shuffled")
    load = dict(root=shared_data, fractions=FRACTIONS, seed=13, max_examples=200)
    a, b = load_examples(plain, "en", "train", **load), load_examples(shuffled, "en", "train", **load)
    assert [e.texts for e in a.examples] == [e.texts for e in b.examples]
    tags_a = [t for e in a.examples for t in e.label]
    tags_b = [t for e in b.examples for t in e.label]
    assert sorted(tags_a) == sorted(tags_b) and np.mean(np.array(tags_a) != np.array(tags_b)) > 0.7
    assert (
        b.examples == load_examples(shuffled, "en", "train", **load).examples
        and a.fingerprint != b.fingerprint
    )
    test_a, test_b = load_examples(plain, "de", "test", **load), load_examples(shuffled, "de", "test", **load)
    assert [e.label for e in test_a.examples] == [e.label for e in test_b.examples]


def test_shuffled_labels_are_refused_for_a_task_without_labels_to_shuffle(tmp_path):
    path = write_yaml(
        tmp_path / "qa.yaml",
        {
            "name": "qa",
            "type": "extractive_qa",
            "format": "squad_json",
            "files": {"dev": "x.json"},
            "shuffle_labels": True,
        },
    )
    with pytest.raises(ConfigError, match="shuffle_labels: not for a extractive_qa task"):
        load_task_file(path)


def test_what_a_model_that_learnt_nothing_scores(shared_data):
    """The reference a baseline's dev score is held against: the majority training label for every
    example (token), or chance where that is higher (macro-F1 of uniform guesses)."""
    load = dict(root=shared_data, fractions=FRACTIONS, seed=13, max_examples=300)
    xnli = CATALOG.task("xnli")
    train, dev = (load_examples(CATALOG.spec("xnli"), "en", s, **load) for s in ("train", "dev"))
    reference = xnli.reference_scores(train, dev)
    majority = np.bincount([e.label for e in train.examples]).argmax()
    assert reference["accuracy"] == pytest.approx(
        max(1 / 3, np.mean([e.label == majority for e in dev.examples]))
    )
    assert 0.3 < reference["macro_f1"] < 0.34  # three classes about equally common: 1/3 each by chance
    udpos = CATALOG.task("udpos")
    train, dev = (load_examples(CATALOG.spec("udpos"), "en", s, **load) for s in ("train", "dev"))
    noun = CATALOG.spec("udpos").labels.index("NOUN")
    tokens = [t for e in dev.examples for t in e.label]
    assert udpos.reference_scores(train, dev)["accuracy"] == pytest.approx(np.mean(np.array(tokens) == noun))
    assert CATALOG.task("tydiqa").reference_scores(train, dev) == {}  # no model that ignores its input
    emotions = CATALOG.task("goemotions")  # multi-label: the empty set (no label is on most examples)
    train, dev = (load_examples(CATALOG.spec("goemotions"), "en", s, **load) for s in ("train", "dev"))
    assert emotions.reference_scores(train, dev)["micro_f1"] == 0.0
