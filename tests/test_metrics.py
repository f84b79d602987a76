"""Metrics equal scikit-learn's reference implementations on the same predictions."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from intertask import metrics


@pytest.fixture(params=range(5))
def single(request):
    rng = np.random.default_rng(request.param)
    n, k = 200, 3 + request.param % 2
    gold = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < 0.6, gold, rng.integers(0, k, n))
    return pred, gold


@pytest.fixture(params=range(5))
def multi(request):
    rng = np.random.default_rng(100 + request.param)
    gold = (rng.random((150, 28)) < 0.08).astype(int)
    pred = np.where(rng.random((150, 28)) < 0.9, gold, 1 - gold)
    pred[:, 5] = 0  # a label never predicted: F1 0 by sklearn's zero_division
    gold[:, 7] = 0
    pred[:, 7] = 0  # a label neither true nor predicted
    return pred, gold


def test_single_label_metrics_match_sklearn(single):
    pred, gold = single
    assert metrics.accuracy(pred, gold) == pytest.approx(accuracy_score(gold, pred), abs=1e-12)
    assert metrics.macro_f1(pred, gold) == pytest.approx(f1_score(gold, pred, average="macro"), abs=1e-12)


def test_macro_f1_counts_labels_present_in_gold_or_predictions_like_sklearn():
    gold = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 1, 2])  # label 2 only predicted
    assert metrics.macro_f1(pred, gold) == pytest.approx(f1_score(gold, pred, average="macro"))


def test_multi_label_metrics_match_sklearn(multi):
    pred, gold = multi
    assert metrics.micro_f1(pred, gold) == pytest.approx(
        f1_score(gold, pred, average="micro", zero_division=0)
    )
    assert metrics.macro_f1(pred, gold) == pytest.approx(
        f1_score(gold, pred, average="macro", zero_division=0)
    )
    assert metrics.subset_accuracy(pred, gold) == pytest.approx(accuracy_score(gold, pred))


def test_registry_names():
    assert {"accuracy", "macro_f1", "micro_f1"} <= set(metrics.METRICS.names())
    with pytest.raises(KeyError, match="did you mean 'accuracy'"):
        metrics.METRICS.get("acuracy")


def test_mean_over_languages_is_unweighted_and_excludes():
    values = {"en": 0.9, "de": 0.7, "fr": 0.5}
    assert metrics.mean_over_languages(values) == pytest.approx(0.7)
    assert metrics.mean_over_languages(values, exclude=("en",)) == pytest.approx(0.6)
    assert metrics.mean_over_languages({"en": 1.0}, exclude=("en",)) is None


# --- sequence labelling vs seqeval -----------------------------------------------------------------

NER_TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "E-LOC", "S-PER"]
POS_TAGS = ["NOUN", "VERB", "ADJ", "DET", "PUNCT", "PROPN", "X", "ADP"]


def _sentences(rng, tags, n=60):
    return [list(rng.choice(tags, size=rng.integers(1, 12))) for _ in range(n)]


@pytest.mark.parametrize("tags", [NER_TAGS, POS_TAGS], ids=["iob", "pos"])
@pytest.mark.parametrize("seed", range(4))
def test_tag_metrics_equal_seqeval(tags, seed):
    import warnings

    from seqeval import metrics as sq

    rng = np.random.default_rng(seed)
    gold = _sentences(rng, tags)
    pred = [[t if rng.random() < 0.7 else str(rng.choice(tags)) for t in sentence] for sentence in gold]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns that POS tags "seem not to be NE tags"
        expected = (
            sq.f1_score(gold, pred),
            sq.precision_score(gold, pred),
            sq.recall_score(gold, pred),
            sq.accuracy_score(gold, pred),
        )
    got = metrics.score(metrics.TAGS, ("f1", "precision", "recall", "accuracy"), pred, gold)
    assert [got["f1"], got["precision"], got["recall"], got["accuracy"]] == pytest.approx(
        list(expected), abs=1e-12
    )


def test_chunks_read_iob1_iob2_and_pos_like_seqeval():
    assert metrics.chunks(["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC"]) == [
        ("PER", 0, 1),
        ("LOC", 3, 4),
        ("LOC", 5, 5),
    ]
    assert metrics.chunks(["NOUN", "NOUN", "VERB", "NOUN"]) == [("OUN", 0, 1), ("ERB", 2, 2), ("OUN", 3, 3)]


# --- extractive QA: the official SQuAD v1.1 script's definitions, by hand -----------------------------

# (prediction, gold answers, exact match, F1) as the SQuAD v1.1 evaluate script scores them:
# lower-case, drop ASCII punctuation, drop the words a/an/the, split on whitespace; F1 on token counts.
SQUAD_CASES = [
    ("Denver Broncos", ["Denver Broncos", "The Denver Broncos"], 1, 1.0),
    ("the Denver Broncos!", ["Denver Broncos"], 1, 1.0),  # article and punctuation dropped
    ("Broncos", ["Denver Broncos"], 0, 2 / 3),  # P 1, R 1/2
    ("an apple a day", ["apple day"], 1, 1.0),
    ("Bernadette Soubirous", ["Saint Bernadette Soubirous", "a Bernadette"], 0, 0.8),  # best of 0.8 and 2/3
    ("Zürich", ["zürich"], 1, 1.0),  # unicode lower-casing
    ("«Paris»", ["Paris"], 0, 0.0),  # « » are not ASCII punctuation: kept
    ("café—au lait", ["café au lait"], 0, 0.4),  # the em dash is kept: [café—au, lait] vs 3 tokens
    ("1,000", ["1000"], 1, 1.0),
    ("", ["the"], 1, 0.0),  # both normalise to "": exact, but no tokens to overlap
    ("", ["Denver"], 0, 0.0),
    ("theater", ["the ater"], 0, 0.0),  # "the" inside a word is not an article
    ("the the cat cat", ["cat"], 0, 2 / 3),  # token counts: P 1/2, R 1
]


@pytest.mark.parametrize("prediction, gold, em, f1", SQUAD_CASES)
def test_squad_exact_match_and_f1_per_case(prediction, gold, em, f1):
    assert metrics.exact_match([prediction], [gold]) == em
    assert metrics.span_f1([prediction], [gold]) == pytest.approx(f1)


def test_squad_scores_average_over_questions():
    predictions = [c[0] for c in SQUAD_CASES]
    answers = [c[1] for c in SQUAD_CASES]
    got = metrics.score(metrics.SPANS, ("exact_match", "f1"), predictions, answers)
    assert got["exact_match"] == pytest.approx(np.mean([c[2] for c in SQUAD_CASES]))
    assert got["f1"] == pytest.approx(np.mean([c[3] for c in SQUAD_CASES]))


# SQuAD v2.0's evaluate script, by hand: gold answers that normalise to nothing are dropped and an
# empty list means the answer ""; exact match as v1.1; F1 against or of "" is 1 only when both are "".
# (prediction, gold answers as the task hands them to the metric, exact match, F1)
SQUAD_V2_CASES = [
    ("", [""], 1, 1.0),  # no answer, predicted as such
    ("Denver", [""], 0, 0.0),  # an answer where there is none
    ("", ["Denver Broncos"], 0, 0.0),  # no answer where there is one
    ("the", [""], 1, 1.0),  # "the" normalises to "": it is "no answer" (v1.1 gave F1 0 here)
    ("Broncos", ["Denver Broncos"], 0, 2 / 3),  # as v1.1
]


@pytest.mark.parametrize("prediction, gold, em, f1", SQUAD_V2_CASES)
def test_squad_v2_exact_match_and_f1_per_case(prediction, gold, em, f1):
    options = {"normalization": "squad_v2"}
    assert metrics.exact_match([prediction], [gold], **options) == em
    assert metrics.span_f1([prediction], [gold], **options) == pytest.approx(f1)


def test_squad_v2_has_answer_and_no_answer_parts():
    """HasAns: the questions with an answer; NoAns: those without (the v2.0 script's split)."""
    predictions = [c[0] for c in SQUAD_V2_CASES]
    answers = [c[1] for c in SQUAD_V2_CASES]
    names = ("exact_match", "f1", "has_answer_exact_match", "has_answer_f1", "no_answer_exact_match")
    got = metrics.score(metrics.SPANS, names, predictions, answers, normalization="squad_v2")
    assert got["exact_match"] == pytest.approx(2 / 5) and got["f1"] == pytest.approx((2 + 2 / 3) / 5)
    assert got["has_answer_exact_match"] == 0.0 and got["has_answer_f1"] == pytest.approx((0 + 2 / 3) / 2)
    assert got["no_answer_exact_match"] == pytest.approx(2 / 3)


# MLQA's evaluate script: all Unicode punctuation, the answer language's articles, zh by characters.
MLQA_CASES = [
    ("en", "«The» Paris", ["paris"], 1, 1.0),
    ("de", "der Rhein", ["Rhein"], 1, 1.0),
    ("de", "Rhein und Main", ["den Rhein"], 0, 0.5),  # [rhein, und, main] vs [rhein]: P 1/3, R 1
    ("es", "los Ángeles", ["Ángeles"], 1, 1.0),
    ("zh", "北京大学", ["北京"], 0, 2 / 3),  # characters: P 2/4, R 2/2
    ("zh", "2008年北京", ["北京"], 0, 2 / 3),  # [2008, 年, 北, 京] vs [北, 京]
    ("ar", "الكتاب", ["كتاب"], 1, 1.0),  # "ال" is removed wherever it occurs
    ("ar", "المال", ["مال"], 1, 1.0),  # ... also inside a word: both become "م"
    ("hi", "भारत।", ["भारत"], 1, 1.0),  # the danda is Unicode punctuation
    ("vi", "của Hà Nội", ["Hà Nội"], 1, 1.0),
]


@pytest.mark.parametrize("language, prediction, gold, em, f1", MLQA_CASES)
def test_mlqa_normalisation_per_language(language, prediction, gold, em, f1):
    options = {"normalization": "mlqa", "language": language}
    assert metrics.exact_match([prediction], [gold], **options) == em
    assert metrics.span_f1([prediction], [gold], **options) == pytest.approx(f1)


def test_mlqa_differs_from_squad_where_it_should():
    assert metrics.exact_match(["der Rhein"], [["Rhein"]]) == 0  # SQuAD drops English articles only
    assert metrics.span_f1(["北京大学"], [["北京"]]) == 0  # one whitespace token each
    assert metrics.exact_match(["भारत।"], [["भारत"]]) == 0
    with pytest.raises(ValueError, match="no rules for language 'fr'"):
        metrics.normalize_answer("x", "mlqa", "fr")


# --- XTREME aggregation (google-research/xtreme evaluate.py) -------------------------------------------


def test_xtreme_task_scores():
    qa = metrics.xtreme_task_score(
        "xquad", {"en": {"exact_match": 0.6, "f1": 0.8}, "de": {"exact_match": 0.4, "f1": 0.6}}
    )
    assert qa["avg_exact_match"] == pytest.approx(0.5) and qa["avg_f1"] == pytest.approx(0.7)
    assert qa["avg_metric"] == pytest.approx(0.6)  # (EM + F1) / 2
    pos = metrics.xtreme_task_score(
        "udpos", {"de": {"f1": 0.8, "accuracy": 0.9}, "fr": {"f1": 0.6, "accuracy": 0.7}}
    )
    assert pos["avg_metric"] == pytest.approx(0.7)  # F1 when the task has it
    cls = metrics.xtreme_task_score("pawsx", {"de": {"accuracy": 0.8, "macro_f1": 0.1}})
    assert cls["avg_metric"] == pytest.approx(0.8)  # accuracy otherwise (macro_f1 is not "f1")


def test_xtreme_groups_need_all_their_tasks_and_overall_all_nine():
    partial = metrics.xtreme_aggregate({"pawsx": 0.8, "xnli": 0.6, "xquad": 0.5, "udpos": 0.7})
    assert partial == {"classification": pytest.approx(0.7)}
    every = {t: 0.5 for tasks in metrics.XTREME_GROUPS.values() for t in tasks}
    every["tatoeba"] = 0.95
    full = metrics.xtreme_aggregate(every)
    assert full["retrieval"] == pytest.approx(0.725)
    assert full["overall"] == pytest.approx((8 * 0.5 + 0.95) / 9)  # mean over the 9 tasks, not the groups


def test_importing_metrics_does_not_scan_unicode():
    """The MLQA punctuation set is built on first use, not at import (it cost every command 0.4 s)."""
    import subprocess
    import sys

    code = "import intertask.metrics as m; print(m.mlqa_punctuation.cache_info().currsize)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "0"
    assert "。" in metrics.mlqa_punctuation() and "!" in metrics.mlqa_punctuation()
