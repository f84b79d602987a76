"""Seeded splits keep translations aligned; the leakage guard keeps every line a model trained on out of
zero-shot evaluation; the same config and seed give the same metrics."""

import io
import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from intertask import tracking
from intertask.config.validate import load_experiment
from intertask.data import leakage
from intertask.data.splits import split_indices, subsample
from intertask.stages import SEEN_ARTIFACT, evaluate
from intertask.study.workspace import Workspace
from intertask.tasks import builtin_catalog
from intertask.tasks.examples import load_examples

from .conftest import finetune_and_evaluate

FRACTIONS = {"train": 0.6, "dev": 0.1, "test": 0.3}


def test_split_indices_partition_deterministically():
    a = split_indices(2000, FRACTIONS, seed=3)
    b = split_indices(2000, FRACTIONS, seed=3)
    c = split_indices(2000, FRACTIONS, seed=4)
    assert {k: len(v) for k, v in a.items()} == {"train": 1200, "dev": 200, "test": 600}
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test"], c["test"])
    assert sorted(np.concatenate(list(a.values()))) == list(range(2000))
    assert set(subsample(a["train"], 50, 3)) <= set(a["train"]) and len(subsample(a["train"], 50, 3)) == 50


# XNLI's labels agree on every line; PAWS-X's dev files disagree on 43 of 2,000 lines between some
# languages (the translated pair was labelled again), so "same example" is checked as >= 95 % agreement.
@pytest.mark.parametrize(
    "task, languages, agreement",
    [("xnli", ["en", "de", "sw", "zh"], 1.0), ("pawsx", ["en", "de", "ja"], 0.95)],
)
def test_parallel_languages_share_the_split_lines(task, languages, agreement, shared_data):
    """Line i is the same example in every language: same uids per split, and the same gold labels."""
    spec = builtin_catalog().spec(task)
    sets = {
        lang: load_examples(spec, lang, "test", root=shared_data, fractions=FRACTIONS, seed=11)
        for lang in languages
    }
    first = sets[languages[0]]
    for data in sets.values():
        assert np.array_equal(data.uids, first.uids)
        same = np.mean([a.label == b.label for a, b in zip(data.examples, first.examples, strict=True)])
        assert same >= agreement
    train = load_examples(spec, "en", "train", root=shared_data, fractions=FRACTIONS, seed=11)
    assert not set(train.uids) & set(first.uids)


def test_guard_drops_seen_lines_in_every_language_of_a_parallel_task(shared_data):
    spec = builtin_catalog().spec("pawsx")
    train = load_examples(spec, "en", "train", root=shared_data, fractions=FRACTIONS, seed=1)
    seen = leakage.record({}, train, parallel=True)
    other_seed_test = load_examples(spec, "de", "test", root=shared_data, fractions=FRACTIONS, seed=2)
    overlap = set(other_seed_test.uids) & set(train.uids)
    assert overlap, "a different split seed must overlap, or this test proves nothing"
    kept, dropped = leakage.exclude_seen(other_seed_test, seen)
    assert dropped == len(overlap) and not set(kept.uids) & set(train.uids)
    assert len(kept) == len(other_seed_test) - dropped and kept.fingerprint != other_seed_test.fingerprint


def test_guard_leaves_non_parallel_tasks_alone_in_other_languages_but_not_in_the_same_one(shared_data):
    spec = builtin_catalog().spec("sms_spam")
    train = load_examples(spec, "en", "train", root=shared_data, fractions=FRACTIONS, seed=1)
    seen = leakage.record({}, train, parallel=False)
    same = load_examples(spec, "en", "train", root=shared_data, fractions=FRACTIONS, seed=1)
    kept, dropped = leakage.exclude_seen(same, seen)
    assert dropped == len(same) and len(kept) == 0
    entry = seen["sms_spam|all"]  # by uid alone (no content digests), another language is left alone
    assert leakage.exclude_seen(same, {"sms_spam|all": {**entry, "languages": ["fr"], "digests": []}})[1] == 0


def test_the_same_file_under_two_split_names_is_caught_by_content(tmp_path):
    """A user task that declares one file as both `train:` and `test:` (an easy slip): the uids of the
    two sources say nothing, the examples' content does; a different test file is left alone."""
    from intertask.tasks import load_task_file

    from .conftest import write_yaml

    rows = "".join(f"review number {i}\t{'pos' if i % 2 else 'neg'}\n" for i in range(40))
    (tmp_path / "train.tsv").write_text(rows, encoding="utf-8")
    (tmp_path / "other.tsv").write_text(rows.replace("review", "opinion"), encoding="utf-8")
    declaration = {
        "name": "mine",
        "type": "classification",
        "columns": ["text", "label"],
        "text_fields": ["text"],
        "labels": ["neg", "pos"],
        "files": {"train": "train.tsv", "dev": "other.tsv", "test": "train.tsv"},
    }
    spec = load_task_file(write_yaml(tmp_path / "mine.yaml", declaration))

    def examples(split, task_spec=spec):
        return load_examples(task_spec, "en", split, root=tmp_path, fractions=FRACTIONS, seed=1)

    seen = leakage.record({}, examples("train"), parallel=False)
    kept, dropped = leakage.exclude_seen(examples("test"), seen)
    assert dropped == 40 and len(kept) == 0
    declaration["files"]["test"] = "other.tsv"
    other = load_task_file(write_yaml(tmp_path / "mine.yaml", declaration))
    assert leakage.exclude_seen(examples("test", other), seen)[1] == 0


def test_merge_accumulates_lineage():
    a = {"xnli|dev": {"task": "xnli", "source": "dev", "parallel": True, "languages": ["en"], "uids": [1, 2]}}
    b = {
        "xnli|dev": {"task": "xnli", "source": "dev", "parallel": True, "languages": ["en"], "uids": [2, 5]},
        "rte|train": {"task": "rte", "source": "train", "parallel": False, "languages": ["en"], "uids": [0]},
    }
    merged = leakage.merge(a, b)
    assert merged["xnli|dev"]["uids"] == [1, 2, 5] and set(merged) == {"xnli|dev", "rte|train"}


def _finetune_and_evaluate(config, overrides=()):
    cfg = load_experiment(config, ["intermediate=null", "tracking.register_models=false", *overrides])
    return finetune_and_evaluate(cfg)


def test_evaluation_excludes_training_lines_even_with_another_split_seed(tiny_config, local_store):
    config = tiny_config("guard", evaluation={"languages": ["en", "de"], "max_examples": None})
    trained, _ = _finetune_and_evaluate(config)
    seen_uids = set(trained.seen["pawsx|dev"]["uids"])
    cfg = load_experiment(config, ["intermediate=null", "data.split_seed=99"])
    tracking.use(cfg)  # what an entry point does first
    ws = Workspace(cfg)
    try:
        evaluated = evaluate(ws, trained.logged.uri)  # models:/<model id>: seen lines come from its run
    finally:
        ws.close()
    assert trained.logged.uri == f"models:/{trained.logged.model_id}"  # not registered
    assert evaluated.excluded["pawsx/de"] > 0 and evaluated.excluded["pawsx/en"] > 0
    run = mlflow.get_run(evaluated.run_id)
    assert run.data.metrics["leakage_guard/pawsx/de/excluded"] == evaluated.excluded["pawsx/de"]
    predictions = mlflow.artifacts.load_text(f"runs:/{evaluated.run_id}/evaluation/predictions.csv")
    uids = set(pd.read_csv(io.StringIO(predictions))["uid"])
    assert uids and not uids & seen_uids
    logged = json.loads(mlflow.artifacts.load_text(f"runs:/{trained.run_id}/{SEEN_ARTIFACT}"))
    assert set(logged["pawsx|dev"]["uids"]) == seen_uids


def test_same_config_and_seed_give_identical_metrics(tiny_config, local_store):
    config = tiny_config("determinism")
    first_model, first = _finetune_and_evaluate(config)
    second_model, second = _finetune_and_evaluate(config)
    assert first_model.best_dev == second_model.best_dev
    assert first.table.equals(second.table)
    a, b = mlflow.get_run(first_model.run_id).data, mlflow.get_run(second_model.run_id).data
    for key in (
        "best_dev/pawsx/accuracy",
        "best_dev/pawsx/macro_f1",
        "best_epoch",
        "reference_dev/pawsx/accuracy",
    ):
        assert a.metrics[key] == b.metrics[key]
    # what a model that learnt nothing scores on this dev set: the report's "target not learnt" check
    assert 0.5 <= a.metrics["reference_dev/pawsx/accuracy"] < 1 and a.metrics["dev_examples/pawsx"] > 0
    assert a.tags["intertask.config_hash"] == b.tags["intertask.config_hash"]
    client = mlflow.MlflowClient()
    losses = [
        [m.value for m in client.get_metric_history(r, "train/loss")]
        for r in (first_model.run_id, second_model.run_id)
    ]
    assert losses[0] == losses[1] and len(losses[0]) >= 2
    other_model, _ = _finetune_and_evaluate(config, ["seed=8"])
    other_losses = [m.value for m in client.get_metric_history(other_model.run_id, "train/loss")]
    assert other_losses != losses[0], "a different seed must change training, or the check above is vacuous"
