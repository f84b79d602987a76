"""The bad-input matrix, end to end through the command line: every case exits 2 with one message that
names the file and the field or line and what was expected, before anything is trained, and leaves no
run behind (none at all, so certainly none that looks successful)."""

import sqlite3

import pytest

from intertask import cli

from .conftest import _free_port, write_yaml

TSV_TASK = {
    "name": "mytask",
    "type": "classification",
    "format": "tsv",
    "columns": ["text", "label"],
    "text_fields": ["text"],
    "labels": ["neg", "pos"],
}
GOOD_TSV = b"".join(b"good text %d\tpos\nbad text %d\tneg\n" % (i, i) for i in range(20))


def _base(tiny_model) -> dict:
    return {
        "name": "badinput",
        "seed": 3,
        "model": {"name_or_path": str(tiny_model), "max_length": 32},
        "training": {"epochs": 1, "batch_size": 16, "learning_rate": 1.0e-3},
        "target": {"task": "pawsx", "max_examples": {"train": 32, "dev": 16}},
        "evaluation": {"languages": ["en"], "max_examples": 16},
    }


def _set(data: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


def _user_task(tmp_path, content: bytes, fmt: str = "tsv", **changes) -> dict:
    """A user task declaration over one data file; returns the config changes that train on it."""
    data_file = tmp_path / f"data.{fmt}"
    data_file.write_bytes(content)
    decl = {**TSV_TASK, "format": fmt, "files": {"all": str(data_file)}, **changes}
    if fmt != "tsv":
        decl.pop("columns")
    if fmt == "csv":
        decl["header"] = True
    task_file = write_yaml(tmp_path / "mytask.yaml", decl)
    return {"data.task_files": [str(task_file)], "target.task": "mytask", "target.language": "en"}


# name -> (config changes or a callable (tmp_path) -> changes, extra CLI args, command, where, expected)
# `where` is what the message must start with: "CONFIG" (the config file), "DATA" (the data file),
# "TASK" (the task declaration), or a literal origin such as "<overrides>".
CASES = {
    # --- configs ---
    "unknown top-level key": ({"trainig": {"epochs": 1}}, [], "finetune", "CONFIG", "trainig: unknown key"),
    "unknown nested key": (
        {"training.lerning_rate": 0.1},
        [],
        "finetune",
        "CONFIG",
        "training.lerning_rate: unknown key",
    ),
    "wrong type": (
        {"training.epochs": "two"},
        [],
        "finetune",
        "CONFIG",
        "training.epochs: wrong type (got 'two'; expected an integer)",
    ),
    "wrong type bool": ({"training.bf16": "maybe"}, [], "finetune", "CONFIG", "training.bf16: wrong type"),
    "bad enum": (
        {"evaluation.split": "tset"},
        [],
        "evaluate",
        "CONFIG",
        "evaluation.split: unknown value (got 'tset'",
    ),
    "bad enum executor": (
        {"executor": {"kind": "spark"}},
        [],
        "main",
        "CONFIG",
        "executor.kind: unknown value (got 'spark'",
    ),
    "impossible learning rate": (
        {"training.learning_rate": 2.0},
        [],
        "finetune",
        "CONFIG",
        "training.learning_rate: out of range",
    ),
    "impossible batch size": (
        {"training.batch_size": 0},
        [],
        "finetune",
        "CONFIG",
        "training.batch_size: must be positive",
    ),
    "negative checkpoint interval": (
        {"training.checkpoint_every_steps": -1},
        [],
        "finetune",
        "CONFIG",
        "training.checkpoint_every_steps: must not be negative",
    ),
    "unknown task": (
        {"target.task": "paws"},
        [],
        "finetune",
        "CONFIG",
        "target.task: unknown task (got 'paws'; expected did you mean 'pawsx'",
    ),
    "unknown language": (
        {"target.language": "engl"},
        [],
        "finetune",
        "CONFIG",
        "target.language: task 'pawsx' has no language 'engl'; did you mean 'en'?",
    ),
    "unknown metric": (
        {"target.selection_metric": "acuracy"},
        [],
        "finetune",
        "CONFIG",
        "target.selection_metric: unknown metric",
    ),
    "fractions do not sum to 1": (
        {"data.split_fractions": {"train": 0.8, "dev": 0.1, "test": 0.3}},
        [],
        "finetune",
        "CONFIG",
        "data.split_fractions.train: fractions do not sum to 1",
    ),
    "bad override": ({}, ["training.epochs=x"], "finetune", "<overrides>", "training.epochs: wrong type"),
    "override file missing": (
        {},
        ["@no_such_overrides.yaml"],
        "finetune",
        "no_such_overrides.yaml",
        "override file not found",
    ),
    "negative outage seconds": (
        {"tracking.outage_seconds": -1},
        [],
        "finetune",
        "CONFIG",
        "tracking.outage_seconds: out of range",
    ),
    "entry point without its stage": (
        {"target": None, "intermediate": None},
        [],
        "finetune",
        "CONFIG",
        "target",
    ),
    # --- data ---
    "missing data file": (
        {"data.root": "/nonexistent/data"},
        [],
        "finetune",
        "CONFIG",
        "target.task: data file missing for task 'pawsx'",
    ),
    "missing user data file": (
        lambda t: {**_user_task(t, GOOD_TSV), "data.task_files": [str(_missing_file_task(t))]},
        [],
        "finetune",
        "CONFIG",
        "target.task: data file missing for task 'mytask'",
    ),
    "empty data file": (lambda t: _user_task(t, b""), [], "finetune", "DATA", "data file is empty"),
    "wrong column count": (
        lambda t: _user_task(t, GOOD_TSV + b"x\tpos\tEXTRA\n"),
        [],
        "finetune",
        "DATA",
        "line 41: wrong number of tab-separated columns (got 3; expected 2 columns",
    ),
    "unknown label": (
        lambda t: _user_task(t, b"a\tpos\nb\tmaybe\n" + GOOD_TSV),
        [],
        "finetune",
        "DATA",
        "line 2: unknown label in field 'label' (got 'maybe'",
    ),
    "mixed encoding": (
        lambda t: _user_task(t, GOOD_TSV[:40] + b"\n\xff\xfe latin\tneg\n" + GOOD_TSV),
        [],
        "finetune",
        "DATA",
        "cannot be decoded as utf-8",
    ),
    "malformed JSON line": (
        lambda t: _user_task(t, b'{"text": "a", "label": "pos"}\n{"text": "b", "label": \n', "jsonl"),
        [],
        "finetune",
        "DATA",
        "line 2: invalid JSON",
    ),
    "JSON line not an object": (
        lambda t: _user_task(t, b'{"text": "a", "label": "pos"}\n["b", "neg"]\n', "jsonl"),
        [],
        "finetune",
        "DATA",
        "line 2: not a JSON object",
    ),
    "JSON line missing field": (
        lambda t: _user_task(t, b'{"text": "a", "label": "pos"}\n{"txt": "b", "label": "neg"}\n', "jsonl"),
        [],
        "finetune",
        "DATA",
        "line 2: missing field(s) 'text'; did you mean 'txt'?",
    ),
    "CSV header only": (
        lambda t: _user_task(t, b"text,label\n", "csv"),
        [],
        "finetune",
        "DATA",
        "no records after the header",
    ),
    "bad task declaration": (
        lambda t: _user_task(t, GOOD_TSV, type="ner"),
        [],
        "finetune",
        "TASK",
        "type: unknown value (got 'ner'",
    ),
    # --- evaluation tasks the trained head cannot score (never a silent substitute) ---
    "evaluation label typo": (
        lambda t: _eval_task(t, ["contradiction", "entailment", "neural"], target="xnli"),
        [],
        "main",
        "CONFIG",
        "(did you mean 'neutral' for 'neural'?)",
    ),
    "evaluation label typo, validate": (
        lambda t: _eval_task(t, ["contradiction", "entailment", "neural"], target="xnli"),
        [],
        "validate",
        "CONFIG",
        "evaluation.tasks[0].task: fits no model this study trains: the head of xnli",
    ),
    "evaluation labels partial overlap": (
        lambda t: _eval_task(t, ["0", "maybe"]),
        [],
        "main",
        "CONFIG",
        "the head has no ['maybe'], and the task has no ['1']",
    ),
    "evaluation labels partial overlap, validate": (
        lambda t: _eval_task(t, ["0", "maybe"]),
        [],
        "validate",
        "CONFIG",
        "labels ['0', 'maybe'] do not match the head's labels ['0', '1']",
    ),
    "evaluation task of another head type": (
        {"evaluation": {"tasks": [{"task": "xquad", "languages": ["en"]}], "max_examples": 16}},
        [],
        "main",
        "CONFIG",
        "the head of pawsx: a sequence_classification head cannot score a question_answering task",
    ),
    "train_split names an undeclared split": (
        lambda t: _user_task(t, GOOD_TSV, train_split="dev"),
        [],
        "finetune",
        "TASK",
        "train_split: names a split the task does not declare",
    ),
    # --- models ---
    "model folder missing": (
        {"model.name_or_path": "./no/such/model"},
        [],
        "finetune",
        "CONFIG",
        "model.name_or_path: model folder not found",
    ),
    "hub model unreachable": (
        {"model.name_or_path": "no-such-org/no-such-model"},
        [],
        "finetune",
        "<model>",
        "no-such-org/no-such-model",
    ),
    "models URI without alias or version": (
        {"target.init": "models:/onlyaname"},
        [],
        "finetune",
        "<model>",
        "target.init: a models:/ URI needs @alias, /version or a model id",
    ),
    "models URI to nothing": (
        {"target.init": "models:/nothing.here@target"},
        [],
        "finetune",
        "<model>",
        "models:/nothing.here@target",
    ),
    "runs URI to nothing": (
        {},
        ["--model", "runs:/0123456789abcdef0123456789abcdef/model"],
        "evaluate",
        "<model>",
        "0123456789abcdef0123456789abcdef",
    ),
    "wrong task head": ({}, ["--model", "base"], "evaluate", "<model>", "head"),
    # --- tracking ---
    "tracking URI with an unknown scheme": (
        {"tracking.uri": "ftp://example.org/mlflow"},
        [],
        "finetune",
        "<tracking>",
        "ftp://example.org/mlflow",
    ),
    "tracking server unreachable": (
        lambda t: {"tracking.uri": f"http://127.0.0.1:{_free_port()}", "tracking.outage_seconds": 0},
        [],
        "finetune",
        "<tracking>",
        "tracking.uri",
    ),
}


def _eval_task(tmp_path, labels: list[str], target: str = "pawsx") -> dict:
    """An evaluation-only user task (one test file) with these labels, evaluated after `target`."""
    data_file = tmp_path / "eval.tsv"
    data_file.write_bytes(
        b"".join(b"text %d\t%s\n" % (i, labels[i % len(labels)].encode()) for i in range(10))
    )
    decl = {**TSV_TASK, "name": "myeval", "labels": labels, "files": {"test": str(data_file)}}
    task_file = write_yaml(tmp_path / "myeval.yaml", decl)
    return {
        "data.task_files": [str(task_file)],
        "target.task": target,
        "evaluation": {"tasks": [{"task": "myeval", "languages": ["en"]}], "max_examples": 16},
    }


def _missing_file_task(tmp_path):
    decl = {**TSV_TASK, "files": {"all": str(tmp_path / "nowhere" / "x.tsv")}}
    return write_yaml(tmp_path / "missing.yaml", decl)


def test_the_matrix_has_at_least_thirty_distinct_cases():
    assert len(CASES) >= 30
    assert len({c[4] for c in CASES.values()}) == len(CASES)  # each case expects its own message


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_named_and_leaves_no_run(case, tiny_model, tmp_path, shared_data, monkeypatch, capsys):
    changes, args, command, where, expected = CASES[case]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = _base(tiny_model)
    for key, value in (changes(tmp_path) if callable(changes) else changes).items():
        if value is None:
            data[key] = None
        else:
            _set(data, key, value)
    config = write_yaml(tmp_path / "bad.yaml", data)
    assert cli.main([command, str(config), *args]) == 2
    err = capsys.readouterr().err
    origin = {
        "CONFIG": str(config),
        "DATA": str(tmp_path / "data."),
        "TASK": str(tmp_path / "mytask.yaml"),
    }.get(where, where)
    lines = [line.strip() for line in err.splitlines() if line.strip()]
    assert any(line.removeprefix("error: ").startswith(origin) and expected in line for line in lines), err
    assert "Traceback" not in err
    store = tmp_path / "mlflow.db"
    if store.exists():
        with sqlite3.connect(store) as db:
            tables = {r[0] for r in db.execute("select name from sqlite_master where type='table'")}
            runs = db.execute("select name, status from runs").fetchall() if "runs" in tables else []
        assert runs == [], runs
    assert not list(tmp_path.glob("mlruns/*/*/artifacts")), "artifacts were written"
    assert all(line.isprintable() for line in err.splitlines()), err  # plain text: no escapes, no bytes


def test_themissing_head_message_names_the_task_type_in_good_english():
    from intertask.stages import missing_head
    from intertask.tasks import builtin_catalog

    catalog = builtin_catalog()
    assert "trained on an extractive_qa task" in str(missing_head(catalog.task("tydiqa"), "m", "head"))
    assert "trained on a classification task" in str(missing_head(catalog.task("xnli"), "m", "head"))
