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
        "star_rating": 1 + i % 5,
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
    return replace(spec, hub=replace(spec.hub, path="json", name=None, data_files=files))


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
    # CommonsenseQA: nested choices.text become the choices, the answer letter the label
    csqa = load("commonsense_qa", "dev").examples
    assert csqa[1].texts[1:] == ("fridge", "oven", "roof", "car", "desk") and csqa[1].label == 1
    # Cosmos QA: four answer columns, an integer label
    cosmos = load("cosmos_qa", "dev").examples
    assert len(cosmos[3].texts) == 5 and cosmos[3].label == 3
    # GoEmotions: a list of label indices is a label set
    assert load("goemotions").examples[1].label == (15, 27)
    # MuchoCine: integer star ratings are the class names "1".."5"
    assert {e.label for e in load("muchocine").examples} == {0, 1, 2, 3, 4}
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


def test_an_unreachable_hub_dataset_names_the_dataset():
    spec = CATALOG.spec("anli")
    with pytest.raises(DataError) as err:
        load_examples(spec, "en", "train", root=None, fractions={}, seed=0, origin="hub")
    assert "facebook/anli" in str(err.value) and "train_r3" in str(err.value)
