"""The mechanics of each task type on real data: QA windows and offsets, first-sub-token tagging and
sentence windows, multiple-choice rows, retrieval and BUCC mining; and their bad-input messages."""

import json
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from intertask.errors import DataError
from intertask.tasks import builtin_catalog
from intertask.tasks.examples import load_examples
from intertask.tasks.retrieval import best_threshold, cross_fitted, mine_candidates
from intertask.tasks.spec import load_task_file
from intertask.tasks.types import task_type

from .conftest import write_yaml

FRACTIONS = {"train": 0.6, "dev": 0.1, "test": 0.3}
CATALOG = builtin_catalog()


@pytest.fixture(scope="module")
def e5_like_tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def _perfect_qa_outputs(encoded):
    """Logits that put all mass on each window's training target (the gold span, or [CLS])."""
    outputs = []
    for i, ids in enumerate(encoded.inputs["input_ids"]):
        logits = np.full((2, len(ids)), -10.0)
        logits[0, encoded.targets["start_positions"][i]] = 10.0
        logits[1, encoded.targets["end_positions"][i]] = 10.0
        outputs.append(logits)
    return outputs


def test_qa_windows_map_gold_spans_back_to_the_original_characters(shared_data, e5_like_tokenizer):
    spec = CATALOG.spec("xquad")
    task = task_type(spec)
    data = load_examples(spec, "de", "test", root=shared_data, fractions=FRACTIONS, seed=1, max_examples=60)
    encoded = task.encode(data, e5_like_tokenizer, max_length=96)
    assert len(encoded) > len(data)  # long contexts became several windows
    predictions = task.decode(_perfect_qa_outputs(encoded), encoded, data)
    exact = [p == e.label[0][0] for p, e in zip(predictions, data.examples, strict=True)]
    assert np.mean(exact) > 0.95  # the rest: answers that straddle every window boundary
    assert task.score(predictions, data, ("exact_match", "f1"))["exact_match"] == pytest.approx(
        np.mean(exact)
    )


def test_qa_windows_move_on_when_long_questions_leave_little_room(e5_like_tokenizer):
    """max_length 128 with a declared overlap of 128 (XTREME's) and long questions: the overlap shrinks
    to half the room left beside the question, so windows advance and the encoding is small."""
    from intertask.tasks.base import Example, ExampleSet

    context = " ".join(f"word{i}" for i in range(400)) + " Paris is the answer."
    question = " ".join(["which"] * 80) + "?"
    examples = tuple(Example(i, (question, context), (("Paris", context.index("Paris")),)) for i in range(3))
    data = ExampleSet("tydiqa", "en", "train", "train", examples, ("x",), "f", 3)
    task = task_type(CATALOG.spec("tydiqa"))
    encoded = task.encode(data, e5_like_tokenizer, max_length=128)
    context_tokens = len(e5_like_tokenizer(context, add_special_tokens=False)["input_ids"])
    room = 128 - 64 - e5_like_tokenizer.num_special_tokens_to_add(pair=True)  # questions cut to 64
    per_example = len(encoded) // 3
    assert per_example <= context_tokens // (room - room // 2) + 2  # each window moves >= half its room
    assert max(len(ids) for ids in encoded.inputs["input_ids"]) <= 128
    assert (encoded.targets["start_positions"] > 0).sum() >= 3  # the answer is inside some window


def test_qa_decoding_respects_max_answer_length_and_context(e5_like_tokenizer, shared_data):
    spec = CATALOG.spec("tydiqa")
    task = task_type(spec)
    data = load_examples(spec, "en", "train", root=shared_data, fractions=FRACTIONS, seed=1, max_examples=5)
    encoded = task.encode(data, e5_like_tokenizer, max_length=128)
    outputs = [np.zeros((2, len(ids))) for ids in encoded.inputs["input_ids"]]
    for out in outputs:
        out[0, 0] = out[1, 0] = 100.0  # [CLS] is never an answer: it is not context
        out[0, -2], out[1, 1] = 50.0, 50.0  # end before start: invalid
    predictions = task.decode(outputs, encoded, data)
    assert all(isinstance(p, str) for p in predictions)
    spans = [o for o in encoded.meta["offsets"]]
    assert all((s[0] == -1).all() for s in spans)  # [CLS] has no characters


def test_tagging_labels_the_first_subtoken_and_windows_long_sentences(shared_data, e5_like_tokenizer):
    spec = CATALOG.spec("udpos")
    task = task_type(spec)
    data = load_examples(spec, "en", "train", root=shared_data, fractions=FRACTIONS, seed=3, max_examples=80)
    encoded = task.encode(data, e5_like_tokenizer, max_length=24)  # short: many sentences need windows
    assert len(encoded) > len(data)
    for labels, positions in zip(encoded.targets["labels"], encoded.meta["word_index"], strict=True):
        assert ((labels >= 0) == (positions >= 0)).all()  # a label exactly where a word starts
    perfect = [np.where(labels >= 0, labels, 0) for labels in encoded.targets["labels"]]
    predictions = task.decode(perfect, encoded, data)
    assert all(np.array_equal(p, np.array(e.label)) for p, e in zip(predictions, data.examples, strict=True))
    scores = task.score(predictions, data, ("f1", "accuracy"))
    assert scores == {"f1": 1.0, "accuracy": 1.0}


def test_conllu_skips_multiword_ranges_and_empty_nodes(tmp_path):
    conllu = tmp_path / "t.conllu"
    conllu.write_text(
        "# sent_id = 1\n1-2\tdu\t_\t_\t_\t_\t_\t_\t_\t_\n1\tde\tde\tADP\t_\t_\t3\tcase\t_\t_\n"
        "2\tle\tle\tDET\t_\t_\t3\tdet\t_\t_\n3\tmarché\tmarché\tNOUN\t_\t_\t0\troot\t_\t_\n"
        "3.1\tx\tx\tX\t_\t_\t_\t_\t_\t_\n\n",
        encoding="utf-8",
    )
    ud = CATALOG.spec("ud")
    decl = {
        "name": "mini_ud",
        "type": "tagging",
        "format": "conllu",
        "files": {"all": str(conllu)},
        "text_fields": ["form"],
        "label_field": "upos",
        "labels": list(ud.labels),
        "metrics": ["accuracy"],
    }
    spec = load_task_file(write_yaml(tmp_path / "ud.yaml", decl))
    data = load_examples(
        spec, "en", "train", root=tmp_path, fractions={"train": 0.9, "dev": 0.05, "test": 0.05}, seed=0
    )
    assert data.examples[0].texts == ("de", "le", "marché")
    assert [spec.labels[i] for i in data.examples[0].label] == ["ADP", "DET", "NOUN"]


def test_multiple_choice_rows_have_one_pair_per_choice(fixture_data, e5_like_tokenizer):
    spec = CATALOG.spec("hellaswag")
    task = task_type(spec)
    data = load_examples(spec, "en", "dev", root=fixture_data, fractions=FRACTIONS, seed=0)
    encoded = task.encode(data, e5_like_tokenizer, max_length=48)
    assert all(ids.shape[0] == 4 for ids in encoded.inputs["input_ids"])
    assert all(
        mask.shape == ids.shape
        for mask, ids in zip(encoded.inputs["attention_mask"], encoded.inputs["input_ids"], strict=True)
    )
    gold = [e.label for e in data.examples]
    one_hot = [np.eye(4)[g] for g in gold]
    assert task.score(task.decode(one_hot, encoded, data), data, ("accuracy",)) == {"accuracy": 1.0}


def test_tatoeba_retrieval_scores_nearest_english_sentence(shared_data):
    spec = CATALOG.spec("tatoeba")
    task = task_type(spec)
    data = load_examples(spec, "fr", "test", root=shared_data, fractions=FRACTIONS, seed=0, max_examples=30)
    sources = [e for e in data.examples if e.label[0] == "source"]
    assert len(sources) == 30 and all(len(e.label[1]) == 1 for e in sources)
    keys = sorted({e.key for e in data.examples})
    vectors = np.stack([np.eye(len(keys))[keys.index(e.key)] for e in data.examples]).astype(np.float32)
    scores, retrieved, _ = task.score_embeddings(vectors, data, ("accuracy",))
    assert scores == {"accuracy": 1.0} and retrieved == [e.key for e in sources]


def test_bucc_mining_finds_the_gold_pairs_and_drops_repeated_sentences(fixture_data):
    spec = CATALOG.spec("bucc2018")
    task = task_type(spec)
    data = load_examples(spec, "de", "test", root=fixture_data, fractions=FRACTIONS, seed=0)
    rng = np.random.default_rng(0)
    meaning = {}  # gold pairs share a direction; every other sentence gets its own
    for e in data.examples:
        if e.label[0] == "source" and e.label[1]:
            meaning[e.key] = meaning[e.label[1][0]] = rng.normal(size=16)
    vectors = np.stack(
        [meaning.get(e.key, rng.normal(size=16)) + rng.normal(scale=0.05, size=16) for e in data.examples]
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors.astype(np.float32)
    threshold = task.mining_threshold(vectors, data)  # as a dev split's would be, used on test
    scores, mined, _ = task.score_embeddings(vectors, data, ("f1", "precision", "recall"), threshold)
    assert scores == {"f1": 1.0, "precision": 1.0, "recall": 1.0}
    assert all(
        "de-000000006" not in pair and "de-000000007" not in pair for pair in mined
    )  # the repeated one


def test_threshold_is_chosen_on_the_gold_pairs():
    scored = {("a", "1"): 1.5, ("b", "2"): 1.4, ("c", "9"): 1.3, ("d", "4"): 1.2, ("e", "8"): 1.0}
    gold = {("a", "1"), ("b", "2"), ("d", "4")}
    # F1 after 1, 2, 3, 4 candidates: .5, .8, .667, .857 (best: 4 taken) -> midway to the 5th: 1.1
    assert best_threshold(scored, gold) == pytest.approx(1.1)
    x = np.eye(3, dtype=np.float32)
    pairs = mine_candidates(x, x, k=2)
    assert sorted((i, j) for _, i, j in pairs) == [(0, 0), (1, 1), (2, 2)]


def test_a_mining_threshold_is_never_fit_on_the_gold_it_scores():
    """Cross-fitting: the pairs mined for one half of the source sentences do not move when that half's
    gold changes (its threshold comes from the other half); they do when the other half's gold does."""
    rng = np.random.default_rng(0)
    sources = [f"s{i}" for i in range(200)]
    scored = {
        (s, f"t{i}"): float(v)
        for i, (s, v) in enumerate(zip(sources, rng.uniform(1.0, 1.5, 200), strict=True))
    }
    gold = {p for p, v in scored.items() if v > 1.2}
    half = {s: zlib.crc32(s.encode()) % 2 for s in sources}
    flipped = {p for p in gold if half[p[0]] == 1} | {
        p for p, v in scored.items() if half[p[0]] == 0 and v > 1.4
    }
    before, after = cross_fitted(scored, gold), cross_fitted(scored, flipped)
    side0 = lambda pairs: {p for p in pairs if half[p[0]] == 0}  # noqa: E731
    side1 = lambda pairs: {p for p in pairs if half[p[0]] == 1}  # noqa: E731
    assert side1(before) != side1(after)  # half 1 reads half 0's gold, which changed
    assert side0(before) == side0(after)  # half 0 reads half 1's gold only, unchanged
    assert side0(before) == {p for p in gold if half[p[0]] == 0}  # a threshold learnt on half 1 fits half 0


def test_qa_model_outputs_keep_only_real_tokens():
    task = task_type(CATALOG.spec("xquad"))
    encoded = SimpleNamespace(inputs={"input_ids": [np.zeros(3), np.zeros(5)]})
    output = SimpleNamespace(start_logits=torch.zeros(2, 5), end_logits=torch.ones(2, 5))
    rows = task.outputs(output, np.array([0, 1]), encoded)
    assert [r.shape for r in rows] == [(2, 3), (2, 5)]


# --- bad input in the new formats ---------------------------------------------------------------------


def _declare(tmp_path, name, fmt, kind, filename, content: bytes, **extra):
    path = tmp_path / filename
    path.write_bytes(content)
    decl = {"name": name, "type": kind, "format": fmt, "files": {"test": str(path)}, **extra}
    return load_task_file(write_yaml(tmp_path / f"{name}.yaml", decl)), path


@pytest.mark.parametrize(
    "fmt, kind, content, extra, expected",
    [
        (
            "xtreme_tags",
            "tagging",
            b"Der\tDET\nHund\n\n",
            {"text_fields": ["tokens"], "label_field": "tags", "labels": ["DET", "NOUN"], "metrics": ["f1"]},
            "line 2: wrong number of tab-separated columns (got 1; expected 2 columns (token, tag))",
        ),
        (
            "xtreme_tags",
            "tagging",
            b"Der\tDET\nHund\tNOUNS\n",
            {"text_fields": ["tokens"], "label_field": "tags", "labels": ["DET", "NOUN"], "metrics": ["f1"]},
            "line 1: unknown label in field 'tags' (got 'NOUNS'; expected one of ['DET', 'NOUN'])",
        ),
        (
            "conllu",
            "tagging",
            b"1\tDer\tder\tDET\n",
            {
                "text_fields": ["form"],
                "label_field": "upos",
                "labels": ["DET", "NOUN"],
                "metrics": ["accuracy"],
            },
            "line 1: wrong number of tab-separated columns (got 4; expected 10 CoNLL-U columns",
        ),
        (
            "conll",
            "tagging",
            b"EU B-ORG\nrejects O extra\n",
            {"text_fields": ["tokens"], "label_field": "tags", "labels": ["O", "B-ORG"], "metrics": ["f1"]},
            "line 2: wrong number of whitespace-separated columns (got 3; expected 2 columns",
        ),
        (
            "squad_json",
            "extractive_qa",
            b'{"data": [{"paragraphs": [{"context": "abc", "qas": [{"id": "q1"}]}]}]}',
            {"metrics": ["f1"]},
            "data[0].paragraphs[0].qas[0]: missing or invalid 'question' (got 'NoneType'",
        ),
        (
            "squad_json",
            "extractive_qa",
            b'{"data": [{"paragraphs": [{"context": "the cat", "qas": [{"id": "q1", "question": "?", '
            b'"answers": [{"text": "dog", "answer_start": 4}]}]}]}]}',
            {"metrics": ["f1"]},
            "(id q1): answer text not found at answer_start",
        ),
        (
            "squad_json",
            "extractive_qa",
            b'{"data": [',
            {"metrics": ["f1"]},
            "line 1, column 11: invalid JSON",
        ),
    ],
)
def test_bad_data_in_new_formats_names_file_and_place(tmp_path, fmt, kind, content, extra, expected):
    spec, path = _declare(tmp_path, "bad", fmt, kind, f"bad.{fmt}", content, **extra)
    with pytest.raises(DataError) as info:
        load_examples(spec, "en", "test", root=tmp_path, fractions=FRACTIONS, seed=0)
    assert str(info.value).startswith(f"{path}: ") and expected in str(info.value), str(info.value)


def test_tatoeba_pair_files_must_match(tmp_path):
    (tmp_path / "tatoeba.xyz-eng.xyz").write_text("a\nb\n")
    (tmp_path / "tatoeba.xyz-eng.eng").write_text("a\n")
    spec = load_task_file(
        write_yaml(
            tmp_path / "t.yaml",
            {
                "name": "t",
                "type": "retrieval",
                "format": "tatoeba",
                "files": {"test": str(tmp_path / "tatoeba.xyz-eng.xyz")},
                "metrics": ["accuracy"],
            },
        )
    )
    with pytest.raises(DataError, match="pair files differ in length"):
        load_examples(spec, "en", "test", root=tmp_path, fractions=FRACTIONS, seed=0)


def test_bucc_needs_its_gold_file(tmp_path, fixture_data):
    for suffix in ("de", "en"):
        (tmp_path / f"de-en.test.{suffix}").write_text(
            (fixture_data / "bucc2018" / f"de-en.test.{suffix}").read_text()
        )
    spec = load_task_file(
        write_yaml(
            tmp_path / "b.yaml",
            {
                "name": "b",
                "type": "retrieval",
                "format": "bucc",
                "files": {"test": str(tmp_path / "de-en.test.{lang}")},
                "languages": ["de"],
                "metrics": ["f1"],
            },
        )
    )
    with pytest.raises(DataError, match=r"de-en.test.gold: gold file not found"):
        load_examples(spec, "de", "test", root=tmp_path, fractions=FRACTIONS, seed=0)


def test_multiple_choice_examples_must_agree_on_the_number_of_choices(tmp_path):
    rows = [
        {"ctx": "a", "endings": ["x", "y"], "label": 0},
        {"ctx": "b", "endings": ["x", "y", "z"], "label": 1},
    ]
    spec, path = _declare(
        tmp_path,
        "mc",
        "jsonl",
        "multiple_choice",
        "mc.jsonl",
        "".join(json.dumps(r) + "\n" for r in rows).encode(),
        text_fields=["ctx"],
        choices_field="endings",
    )
    with pytest.raises(DataError, match=r"mc.jsonl: line 2: examples differ in their number of choices"):
        load_examples(spec, "en", "test", root=tmp_path, fractions=FRACTIONS, seed=0)


def test_evaluation_only_task_has_no_train_split(shared_data):
    with pytest.raises(DataError, match="no train split"):
        load_examples(CATALOG.spec("xquad"), "de", "train", root=shared_data, fractions=FRACTIONS, seed=0)


def test_unlabeled_qa_files_are_refused_not_scored_as_zero(shared_data):
    with pytest.raises(
        DataError, match=r"tydiqa.goldp.sw.dev.json: no gold answers: every answer text is empty"
    ):
        load_examples(CATALOG.spec("tydiqa"), "sw", "test", root=shared_data, fractions=FRACTIONS, seed=0)


def test_squad_v2_predicts_no_answer_where_cls_beats_every_span(e5_like_tokenizer, fixture_data):
    """SQuAD v2.0 decoding: a question whose smallest [CLS] score over its windows beats its best span by
    more than null_threshold gets "" (no answer); otherwise its best span. Unanswerable questions train
    every window to [CLS]. SQuAD v1.1 tasks never predict "no answer"."""
    from dataclasses import replace

    spec = CATALOG.spec("squad_v2")
    task = task_type(spec)
    data = load_examples(spec, "en", "dev", root=fixture_data, fractions=FRACTIONS, seed=1)
    encoded = task.encode(data, e5_like_tokenizer, max_length=64)
    impossible = {e.uid for e in data.examples if not e.label}
    assert impossible and all(
        (s, t) == (0, 0)
        for uid, s, t in zip(
            encoded.uids, encoded.targets["start_positions"], encoded.targets["end_positions"], strict=True
        )
        if uid in impossible
    )

    def outputs(cls_score):
        out = []
        for offsets in encoded.meta["offsets"]:
            logits = np.zeros((2, len(offsets)))
            first = int(np.flatnonzero(offsets[:, 0] >= 0)[0])
            logits[0, first] = logits[1, first] = 5.0  # the best span: the context's first token, 10
            logits[0, 0] = logits[1, 0] = cls_score / 2
            out.append(logits)
        return out

    spans = task.decode(outputs(cls_score=8.0), encoded, data)  # null 8 < span 10: answers
    assert all(p for p in spans)
    assert task.decode(outputs(cls_score=12.0), encoded, data) == [""] * len(data)  # null 12 > 10
    assert all(task_type(replace(spec, null_threshold=3.0)).decode(outputs(12.0), encoded, data))
    assert all(task_type(CATALOG.spec("squad")).decode(outputs(12.0), encoded, data))  # v1.1: always a span
    scores = task.score([""] * len(data), data, spec.metrics)
    assert scores["no_answer_exact_match"] == 1.0 and scores["has_answer_f1"] == 0.0
    assert scores["exact_match"] == pytest.approx(len(impossible) / len(data))


def test_the_null_threshold_is_chosen_as_the_v2_script_searches_it(fixture_data):
    """Hand-worked: three questions (one answerable with the right span at margin -2; two without answer,
    whose best spans sit at margins -1 and 3). Starting from "no answer" everywhere (2 of 3 right),
    giving q1 its span makes 3 of 3, q2's span then costs one: the threshold is -2, and decoding with it
    answers q1 only."""
    from intertask.tasks.base import Example, ExampleSet

    spec = CATALOG.spec("squad_v2")
    task = task_type(spec)
    context = "Paris is the capital. Rome and Oslo are not."
    examples = (
        Example(0, ("What is the capital?", context), (("Paris", 0),)),
        Example(1, ("What is the capital of Mars?", context), ()),
        Example(2, ("Which city is on the Moon?", context), ()),
    )
    data = ExampleSet("squad_v2", "en", "dev", "dev", examples, ("fixture",), "x", 3)
    texts, margins = ["Paris", "Rome", "Oslo"], np.array([-2.0, -1.0, 3.0])
    threshold = task.best_null_threshold(texts, margins, data)
    assert threshold == -2.0
    chosen = [t if m <= threshold else "" for t, m in zip(texts, margins, strict=True)]
    assert task.score(chosen, data, ("f1",))["f1"] == 1.0
    assert task.best_null_threshold(["", "", ""], np.full(3, np.inf), data) == 0.0  # nothing to answer
