"""The hub code path offline: every built-in `hub:` section reads rows shaped like the real hub dataset
(nested SQuAD answers, ClassLabel integers, CommonsenseQA's lettered choices, CoNLL's integer tags),
served by `datasets`' packaged json builder in place of the hub id, and gives the same examples a local
file would."""

import json
from dataclasses import replace

import pytest

from intertask.errors import DataError
from intertask.tasks import builtin_catalog
from intertask.tasks.examples import load_examples
from intertask.tasks.types import task_type

CATALOG = builtin_catalog()
FRACTIONS = {"train": 0.6, "dev": 0.1, "test": 0.3}
CONTEXT = "Marie Curie was born in Warsaw in 1867 and won two Nobel prizes."


def _squad_row(i):
    return {
        "id": f"q{i}",
        "title": "Curie",
        "context": CONTEXT,
        "question": "Where was Curie born?",
        "answers": {"text": ["Warsaw", "in Warsaw"], "answer_start": [24, 21]},
    }


# per task: one row in the real hub schema (row index i -> row); labels cycle through every class
ROWS = {
    "mnli": lambda i: {
        "premise": f"A man sleeps {i}.",
        "hypothesis": "A person rests.",
        "label": i % 3,
        "idx": i,
    },
    "anli": lambda i: {
        "uid": f"u{i}",
        "premise": "The bridge opened in 1932.",
        "hypothesis": "The bridge is old.",
        "label": i % 3,
        "reason": "",
    },
    "qqp": lambda i: {
        "question1": f"How do I cook rice {i}?",
        "question2": "Rice cooking?",
        "label": i % 2,
        "idx": i,
    },
    "xnli": lambda i: {"premise": "Il pleut.", "hypothesis": "Le sol est mouillé.", "label": i % 3},
    "pawsx": lambda i: {"id": i, "sentence1": "A b c.", "sentence2": "C b a.", "label": i % 2},
    "sst2": lambda i: {"idx": i, "sentence": "a fine film", "label": i % 2},
    "sms_spam": lambda i: {"sms": f"WIN a prize now {i}", "label": i % 2},
    "imdb": lambda i: {"text": "One of the best films of the decade.", "label": i % 2},
    "allocine": lambda i: {"review": "Un film magnifique.", "label": i % 2},
    "muchocine": lambda i: {
        "review_body": "Una película aburrida.",
        "review_summary": "",
        "star_rating": i % 5,  # class indices 0-4, named "1".."5" on the hub
    },
    "goemotions": lambda i: {
        "text": "thanks, that helped!",
        "labels": [15, 27] if i % 2 else [4],
        "id": f"e{i}",
    },
    "conll2003": lambda i: {
        "id": str(i),
        "tokens": ["EU", "rejects", "German", "call"],
        "pos_tags": [22, 42, 16, 21],
        "chunk_tags": [11, 21, 11, 12],
        "ner_tags": [3, 0, 7, 0],
    },
    "squad": _squad_row,
    "squad_v2": lambda i: _squad_row(i) | ({"answers": {"text": [], "answer_start": []}} if i % 2 else {}),
    "xquad": _squad_row,
    "mlqa": _squad_row,
    "cosmos_qa": lambda i: {
        "id": f"c{i}",
        "context": "The shop was closed.",
        "question": "Why did she go home?",
        "answer0": "It was closed.",
        "answer1": "She was hungry.",
        "answer2": "It rained.",
        "answer3": "None of the above choices.",
        "label": i % 4,
    },
    "commonsense_qa": lambda i: {
        "id": f"k{i}",
        "question": "Where would you keep milk?",
        "question_concept": "milk",
        "choices": {"label": ["A", "B", "C", "D", "E"], "text": ["fridge", "oven", "roof", "car", "desk"]},
        "answerKey": "ABCDE"[i % 5],
    },
    "panx": lambda i: {
        "tokens": ["Angela", "Merkel", "visited", "Paris"],
        "ner_tags": [1, 2, 0, 5],
        "langs": ["en", "en", "en", "en"],
    },
    "hellaswag": lambda i: {
        "ind": i,
        "activity_label": "Cooking",
        "ctx_a": "She cracks an egg",
        "ctx_b": "then",
        "ctx": "She cracks an egg then",
        "endings": ["fries it.", "sings.", "flies away.", "reads it."],
        "source_id": "x",
        "split": "train",
        "split_type": "indomain",
        "label": str(i % 4),
    },
}
HUB_TASKS = sorted(n for n in CATALOG.names() if CATALOG.spec(n).hub is not None)


def test_every_hub_section_has_offline_rows():
    assert set(HUB_TASKS) == set(ROWS)


def _served_locally(spec, tmp_path, rows=ROWS, n=10):
    """The spec with its hub id replaced by the json builder over files of hub-shaped rows."""
    files = {}
    for theirs in spec.hub.splits.values():
        path = tmp_path / f"{spec.name}-{theirs}.jsonl"
        path.write_text("".join(json.dumps(rows[spec.name](i)) + "\n" for i in range(n)))
        files[theirs] = str(path)
    return replace(spec, hub=replace(spec.hub, path="json", name=None, data_files=files, revision=None))


@pytest.mark.parametrize("name", HUB_TASKS)
def test_hub_rows_become_examples(name, tmp_path):
    spec = _served_locally(CATALOG.spec(name), tmp_path)
    language = spec.languages[0]
    split = next(iter(spec.hub.splits))
    fractions = {"train": 0.6, "dev": 0.1, "test": 0.3}
    data = load_examples(spec, language, split, root=tmp_path, fractions=fractions, seed=0, origin="hub")
    assert len(data) > 0 and data.files[0].startswith("hub:json")
    example = data.examples[0]
    assert all(isinstance(t, str) for t in (example.texts if spec.type != "tagging" else example.texts[0]))
    assert example.label is not None and task_type(spec).trainable


def test_hub_labels_map_to_the_declared_names(tmp_path):
    fractions = {"train": 0.6, "dev": 0.1, "test": 0.3}

    def load(name, split="train", **kw):
        spec = _served_locally(CATALOG.spec(name), tmp_path)
        lang = spec.languages[0]
        return load_examples(
            spec, lang, split, root=tmp_path, fractions=fractions, seed=0, origin="hub", **kw
        )

    # XNLI's hub order (entailment, neutral, contradiction) differs from the local files' label list
    spec = CATALOG.spec("xnli")
    xnli = load("xnli", "dev")
    assert [spec.labels[e.label] for e in xnli.examples[:3]] == ["entailment", "neutral", "contradiction"]
    # CoNLL-2003's hub tag ids follow its own order (B-ORG = 3, B-MISC = 7)
    conll = CATALOG.spec("conll2003")
    tags = load("conll2003").examples[0].label
    assert [conll.labels[t] for t in tags] == ["B-ORG", "O", "B-MISC", "O"]
    # PAN-X (google/xtreme): its tag ids are WikiANN's order (B-LOC = 5)
    panx = CATALOG.spec("panx")
    assert [panx.labels[t] for t in load("panx").examples[0].label] == ["B-PER", "I-PER", "O", "B-LOC"]
    # CommonsenseQA: nested choices.text become the choices, the answer letter the label
    csqa = load("commonsense_qa", "dev").examples
    assert csqa[1].texts[1:] == ("fridge", "oven", "roof", "car", "desk") and csqa[1].label == 1
    # Cosmos QA: four answer columns, an integer label
    cosmos = load("cosmos_qa", "dev").examples
    assert len(cosmos[3].texts) == 5 and cosmos[3].label == 3
    # GoEmotions: a list of label indices is a label set
    assert load("goemotions").examples[1].label == (15, 27)
    # MuchoCine: star ratings stored 0-4 are the class names "1".."5" (label 0 is one star)
    muchocine = CATALOG.spec("muchocine")
    assert all(muchocine.labels[e.label] == str(e.uid % 5 + 1) for e in load("muchocine").examples)
    # SQuAD: the nested answers give (start, text) pairs for every gold answer
    squad = load("squad", "dev").examples[0]
    assert squad.label == (("Warsaw", 24), ("in Warsaw", 21)) and squad.key == "q0"


def test_an_unlabeled_hub_split_is_refused_naming_it(tmp_path):
    """Every row -1 (the hub's unlabelled marker): an error naming the dataset and split (a few such
    rows are left out with a warning: test_tasks)."""
    rows = {"mnli": lambda i: {"premise": "p", "hypothesis": "h", "label": -1, "idx": i}}
    spec = _served_locally(CATALOG.spec("mnli"), tmp_path, rows=rows)
    with pytest.raises(DataError) as err:
        load_examples(spec, "en", "dev", root=tmp_path, fractions={}, seed=0, origin="hub")
    message = str(err.value)
    assert "hub:json" in message and "every row of the dev set is unlabelled" in message


@pytest.mark.parametrize("name", ["cosmos_qa", "hellaswag", "muchocine", "conll2003"])
def test_script_based_repositories_are_read_from_their_parquet_branch(name):
    """Their main branches hold loading scripts, which datasets >= 4 refuses: each declaration reads
    the Hub's parquet conversion; offline, the error names the repository and the revision it tried."""
    spec = CATALOG.spec(name)
    assert spec.hub.revision == "refs/convert/parquet"
    with pytest.raises(DataError) as err:
        load_examples(spec, spec.languages[0], "train", root=None, fractions=FRACTIONS, seed=0, origin="hub")
    assert f"hub:{spec.hub.path}@refs/convert/parquet" in str(err.value)


def test_a_repository_with_a_loading_script_gets_the_parquet_revision_suggested(tmp_path):
    """A local folder laid out like a Hub repository that still holds a loading script: datasets
    refuses it, and the problem names the repository and the fix."""
    repo = tmp_path / "someone" / "old_dataset"
    repo.mkdir(parents=True)
    (repo / "old_dataset.py").write_text("import datasets\n")
    spec = replace(CATALOG.spec("sst2"), hub=replace(CATALOG.spec("sst2").hub, path=str(repo), name=None))
    with pytest.raises(DataError) as err:
        load_examples(spec, "en", "train", root=None, fractions=FRACTIONS, seed=0, origin="hub")
    assert str(repo) in str(err.value) and "revision: refs/convert/parquet" in str(err.value)


def test_data_dir_is_passed_to_the_loader(tmp_path):
    """`data_dir` (with {lang}) selects a folder of a repository: here a local folder of parquet files
    laid out like a Hub repository, one folder per language."""
    import pandas as pd

    for lang, word in (("en", "fine"), ("fr", "beau")):
        (tmp_path / "repo" / lang).mkdir(parents=True)
        rows = pd.DataFrame(
            {
                "idx": range(10),
                "sentence": [f"a {word} film {i}" for i in range(10)],
                "label": [i % 2 for i in range(10)],
            }
        )
        rows.to_parquet(tmp_path / "repo" / lang / "train-00000-of-00001.parquet")
    base = CATALOG.spec("sst2")
    spec = replace(
        base,
        languages=("en", "fr"),
        hub=replace(
            base.hub, path=str(tmp_path / "repo"), name=None, data_dir="{lang}", splits={"train": "train"}
        ),
    )
    data = load_examples(
        spec,
        "fr",
        "train",
        root=None,
        fractions={"train": 0.6, "dev": 0.1, "test": 0.3},
        seed=0,
        origin="hub",
    )
    assert all("beau" in e.texts[0] for e in data.examples)


def test_an_unreachable_hub_dataset_names_the_dataset():
    spec = CATALOG.spec("anli")
    with pytest.raises(DataError) as err:
        load_examples(spec, "en", "train", root=None, fractions={}, seed=0, origin="hub")
    assert "facebook/anli" in str(err.value) and "train_r3" in str(err.value)


def test_validate_lists_hub_reads_offline_and_opens_them_with_hub(tmp_path, monkeypatch, capsys):
    """`intertask validate` reads every local file and lists what would come from the hub; with --hub
    it opens each hub source, reads a few rows as a run would, and reports every problem at once: here
    local folders laid out like Hub repositories (parquet), one sound, one whose label column is
    misnamed, one that still holds a loading script."""
    import pandas as pd
    import yaml

    from intertask import cli

    from .conftest import REPO, write_yaml

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert cli.main(["validate", str(REPO / "pipelines" / "mohapatra2022_domain.yaml")]) == 0
    out, err = capsys.readouterr()
    assert yaml.safe_load(out)["name"] and "not read (hub; `intertask validate --hub` opens them)" in err
    assert "imdb/en/train" in err and "roberta-base" in err

    def repo(name, label_column="label", script=False):
        folder = tmp_path / "hub" / name
        (folder / "data").mkdir(parents=True)
        frame = pd.DataFrame(
            {"sentence": [f"text {i}" for i in range(8)], label_column: [i % 2 for i in range(8)]}
        )
        frame.to_parquet(folder / "data" / "train-00000-of-00001.parquet")
        if script:
            (folder / f"{name}.py").write_text("import datasets\n")
        return str(folder)

    tasks = []
    for name, options in (
        ("sound", {}),
        ("misnamed", {"label_column": "stars"}),
        ("scripted", {"script": True}),
    ):
        declaration = {
            "name": name,
            "type": "classification",
            "text_fields": ["sentence"],
            "labels": ["neg", "pos"],
            "hub": {
                "path": repo(name, **options),
                "splits": {"train": "train"},
                "label_names": ["neg", "pos"],
            },
        }
        tasks.append(str(write_yaml(tmp_path / f"{name}.yaml", declaration)))
    config = write_yaml(
        tmp_path / "c.yaml",
        {
            "name": "hubcheck",
            "model": {"name_or_path": "e5-small"},
            "data": {"task_files": tasks, "source": "hub"},
            "intermediate": {"tasks": ["sound", "misnamed", "scripted"]},
            "evaluation": {"task": "sound"},
        },
    )
    assert cli.main(["validate", str(config)]) == 0
    assert "sound/en/train" in capsys.readouterr().err
    assert cli.main(["validate", str(config), "--hub"]) == 2
    err = capsys.readouterr().err
    assert "misnamed" in err and "'label'" in err
    assert "scripted" in err and "revision: refs/convert/parquet" in err
    assert "hub/sound" not in err
