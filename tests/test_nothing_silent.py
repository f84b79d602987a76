"""Nothing silent (issue 28): an evaluation task is scored by a head matched by label NAMES or refused
before anything runs; what a study leaves out (seeds one arm lacks, test examples, the leakage guard's
exclusions, an evaluation task a cell cannot score) is printed and recorded; a task may name the split
that trains it."""

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from intertask import cli, report
from intertask.compute import modeling
from intertask.compute.modeling import HeadSpec, build_models
from intertask.config import ReportConfig
from intertask.config.validate import load_experiment
from intertask.errors import ConfigError
from intertask.study import grid, planning
from intertask.tasks.base import head_fit
from intertask.tasks.examples import load_examples
from intertask.tasks.spec import TaskSpec

from .conftest import write_experiment, write_yaml

XNLI = ("sequence_classification", ("contradiction", "entailment", "neutral"))
TEXT_LABEL = {
    "type": "classification",
    "format": "tsv",
    "columns": ["text", "label"],
    "text_fields": ["text"],
}


# --- matching a head by label names -------------------------------------------------------------------


def test_a_head_fits_by_label_names_in_any_order_and_says_why_not():
    assert head_fit(XNLI, XNLI).fits and not head_fit(XNLI, XNLI).reordered
    moved = head_fit(XNLI, ("sequence_classification", ("entailment", "neutral", "contradiction")))
    assert moved.fits and moved.order == (1, 2, 0)  # task label i <- head output order[i]
    typo = head_fit(XNLI, ("sequence_classification", ("contradiction", "entailment", "neural")))
    assert not typo.fits and "did you mean 'neutral' for 'neural'?" in typo.problem
    partial = head_fit(
        ("token_classification", ("O", "B-PER", "I-PER")), ("token_classification", ("O", "B-DATE"))
    )
    assert not partial.fits
    assert "['O', 'B-DATE']" in partial.problem and "['O', 'B-PER', 'I-PER']" in partial.problem
    assert "the head has no ['B-DATE']" in partial.problem
    other = head_fit(XNLI, ("question_answering",))
    assert not other.fits and "cannot score a question_answering task" in other.problem
    assert head_fit(["question_answering"], ("question_answering",)).fits  # signatures read back from JSON


def test_a_reordered_head_answers_in_the_task_order(tiny_model, tmp_path):
    labels = ("neg", "pos", "odd")
    kwargs = {
        "num_labels": 3,
        "id2label": dict(enumerate(labels)),
        "label2id": {n: i for i, n in enumerate(labels)},
    }
    heads = [HeadSpec("mine", "sequence_classification", kwargs, ("sequence_classification", labels))]
    nets = build_models(str(tiny_model), heads, seed=0)
    with torch.no_grad():
        nets["mine"].classifier.bias.copy_(torch.tensor([0.0, 5.0, -5.0]))  # tell the outputs apart
    modeling.save(nets, heads, modeling.load_tokenizer(str(tiny_model)), tmp_path / "saved")
    inputs = {"input_ids": torch.tensor([[2, 7, 9, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    same = modeling.load_for_task(tmp_path / "saved", "mine", heads[0].signature).eval()
    moved = modeling.load_for_task(
        tmp_path / "saved", "theirs", ("sequence_classification", ("odd", "neg", "pos"))
    )
    with torch.no_grad():
        expected, got = same(**inputs).logits, moved.eval()(**inputs).logits
    assert torch.equal(got, expected[:, [2, 0, 1]])
    assert moved.config.id2label == {0: "odd", 1: "neg", 2: "pos"}
    # a task with a subset of the head's labels (issue 41): the head answers with those outputs only, in
    # the task's order, so its prediction is the argmax over the task's own labels
    subset = modeling.load_for_task(tmp_path / "saved", "x", ("sequence_classification", ("pos", "neg")))
    with torch.no_grad():
        assert torch.equal(subset.eval()(**inputs).logits, expected[:, [1, 0]])
    assert subset.config.id2label == {0: "pos", 1: "neg"}
    partial = ("sequence_classification", ("neg", "maybe"))  # a label the head lacks: refused
    assert modeling.load_for_task(tmp_path / "saved", "x", partial) is None
    assert modeling.head_problems(tmp_path / "saved", partial) == [
        "mine: labels ['neg', 'maybe'] do not match the head's labels ['neg', 'pos', 'odd']: the head has no "
        "['maybe'], and the task has no ['pos', 'odd']"
    ]


# --- refused before anything runs ---------------------------------------------------------------------


def _eval_task(tmp_path, name: str, labels: list[str], rows: list[tuple[str, str]]):
    """An evaluation-only user task: one test file of text<TAB>label lines."""
    data = tmp_path / f"{name}.tsv"
    data.write_text("".join(f"{text}\t{label}\n" for text, label in rows), encoding="utf-8")
    decl = {**TEXT_LABEL, "name": name, "labels": labels, "files": {"test": str(data)}}
    return write_yaml(tmp_path / f"{name}.yaml", decl)


def _grid_config(tmp_path, tiny_model, **sections):
    base = {
        "target": {"task": "xnli", "max_examples": {"train": 32, "dev": 16}},
        "evaluation": {"max_examples": 16},
    }
    return write_experiment(tmp_path, tiny_model, "silent", base, study=False, **sections)


def test_a_cell_that_nothing_scores_is_refused_and_one_that_skips_a_task_says_so(
    tmp_path, tiny_model, shared_data
):
    config = _grid_config(
        tmp_path,
        tiny_model,
        grid={"target": ["xnli", "udpos"]},
        evaluation={"tasks": [{"task": "xnli", "languages": ["en"]}]},
    )
    with pytest.raises(ConfigError) as err:
        load_experiment(config)
    assert "grid[none -> udpos].evaluation: no evaluation task fits this cell's model" in str(err.value)

    config = _grid_config(
        tmp_path,
        tiny_model,
        grid={"target": ["xnli", "pawsx"]},
        evaluation={"tasks": [{"task": "xnli", "languages": ["en"]}, {"task": "pawsx", "languages": ["en"]}]},
    )
    cfg = load_experiment(config)
    said = dict(planning.study_notices(cfg))
    assert set(said) == {"evaluation_left_out.xnli.pawsx", "evaluation_left_out.pawsx.xnli"}
    assert "pawsx is not scored in the cells none -> xnli" in said["evaluation_left_out.xnli.pawsx"]
    config = _grid_config(
        tmp_path,
        tiny_model,
        grid={"target": ["xnli", "pawsx"], "intermediate": ["none", "rte", "sst2"]},
        evaluation={"tasks": [{"task": "xnli", "languages": ["en"]}, {"task": "pawsx", "languages": ["en"]}]},
    )
    said = dict(planning.study_notices(load_experiment(config)))  # one line per target and task
    assert set(said) == {"evaluation_left_out.xnli.pawsx", "evaluation_left_out.pawsx.xnli"}
    assert (
        "pawsx is not scored in the cells (none, rte, sst2) -> xnli" in said["evaluation_left_out.xnli.pawsx"]
    )


def test_a_language_one_task_lacks_is_said_and_a_task_with_none_is_refused(tmp_path, tiny_model, shared_data):
    config = _grid_config(
        tmp_path, tiny_model, grid={"target": ["xnli", "pawsx"]}, evaluation={"languages": ["en", "sw"]}
    )
    cfg = load_experiment(config)
    said = dict(planning.study_notices(cfg))
    assert said == {
        "languages_left_out.pawsx": "evaluation: pawsx has no sw of evaluation.languages: scored in en"
    }
    (pawsx,) = grid.cell_evaluation(cfg, grid.Cell(cfg.model.name_or_path, (), "pawsx", 7))
    assert pawsx.languages == ("en",)  # not PAWS-X's seven default languages instead
    config = _grid_config(
        tmp_path, tiny_model, grid={"target": ["xnli", "pawsx"]}, evaluation={"languages": ["sw", "th"]}
    )
    with pytest.raises(ConfigError, match=r"evaluation.languages: task 'pawsx' has none of these languages"):
        load_experiment(config)


def test_a_grid_task_trained_in_another_language_is_said(tmp_path, tiny_model, shared_data):
    data = tmp_path / "fr.tsv"
    data.write_text("".join(f"texte {i}\t{'pos' if i % 2 else 'neg'}\n" for i in range(40)), encoding="utf-8")
    decl = {
        **TEXT_LABEL,
        "name": "frtask",
        "labels": ["neg", "pos"],
        "languages": ["fr"],
        "files": {"all": str(data)},
    }
    config = _grid_config(
        tmp_path,
        tiny_model,
        data={"task_files": [str(write_yaml(tmp_path / "frtask.yaml", decl))]},
        intermediate={"task": "rte", "language": "en"},
        grid={"intermediate": ["none", "frtask"]},
    )
    said = dict(planning.study_notices(load_experiment(config)))
    assert said == {
        "language.intermediate.frtask": "grid: frtask has no en: its intermediate stage trains in fr"
    }


# --- mapped by name, scored right, said and recorded ----------------------------------------------------


@pytest.mark.slow
def test_reordered_labels_are_mapped_and_scored_as_by_hand(tmp_path, tiny_model, local_store, capsys):
    """A target trained on [neg, pos]; two evaluation-only tasks over one unbalanced file (31 pos, 10
    neg: no accuracy equals its mirror image), one declaring [neg, pos], one [pos, neg]."""
    train = tmp_path / "train.tsv"
    train.write_text(
        "".join(f"good film number {i}\tpos\nbad film number {i}\tneg\n" for i in range(40)), encoding="utf-8"
    )
    target = {**TEXT_LABEL, "name": "mine", "labels": ["neg", "pos"], "files": {"all": str(train)}}
    rows = [(f"good story {i}", "pos") for i in range(31)] + [(f"bad story {i}", "neg") for i in range(10)]
    same = _eval_task(tmp_path, "same_order", ["neg", "pos"], rows)
    moved = _eval_task(tmp_path, "reversed", ["pos", "neg"], rows)
    config = write_experiment(
        tmp_path,
        tiny_model,
        "mapped",
        study=False,
        data={"task_files": [str(write_yaml(tmp_path / "mine.yaml", target)), str(same), str(moved)]},
        target={"task": "mine", "language": "en"},
        training={"epochs": 1},
        evaluation={
            "tasks": [{"task": "same_order", "languages": ["en"]}, {"task": "reversed", "languages": ["en"]}],
            "save_predictions": True,
        },
    )
    assert cli.main(["main", str(config)]) == 0
    assert (
        "reversed: labels ['pos', 'neg'] scored by the head of mine, whose labels are ['neg', 'pos']"
        in capsys.readouterr().err
    )
    client = MlflowClient()
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`intertask.stage` = 'evaluate'"
    )
    assert "matched by name" in run.data.tags["intertask.notice.labels_mapped.reversed"]
    assert "intertask.notice.labels_mapped.same_order" not in run.data.tags
    path = client.download_artifacts(run.info.run_id, "evaluation/predictions.csv", str(tmp_path))
    predictions = pd.read_csv(path)
    by_hand = {}
    for task in ("same_order", "reversed"):
        mine = predictions[predictions.task == task].reset_index(drop=True)
        by_hand[task] = float(
            np.mean([p == gold for p, (_, gold) in zip(mine.prediction, rows, strict=True)])
        )
    assert by_hand["same_order"] != pytest.approx(1 - by_hand["same_order"])  # the test can fail
    assert run.data.metrics["reversed/test/en/accuracy"] == pytest.approx(by_hand["same_order"])
    assert run.data.metrics["same_order/test/en/accuracy"] == pytest.approx(by_hand["same_order"])
    assert by_hand["reversed"] == by_hand["same_order"]


# --- what the report leaves out, it says ---------------------------------------------------------------


def _cells(accuracy: dict, n: int = 200, missing: dict | None = None, left_out: int = 0):
    """scores and per-example outcomes for intermediate in {xnli, none} x seeds, en only;
    `missing`: (intermediate, seed) -> uids that run did not score."""
    rng = np.random.default_rng(0)
    scores, examples = [], []
    for (inter, seed), p in accuracy.items():
        uids = np.setdiff1d(np.arange(n), (missing or {}).get((inter, seed), []))
        correct = (rng.random(len(uids)) < p).astype(np.int64)
        cell = {
            "model": "m",
            "intermediate": inter,
            "target": "pawsx",
            "seed": seed,
            "task": "pawsx",
            "split": "test",
        }
        examples.append(pd.DataFrame({"uid": uids, "correct": correct}).assign(language="en", **cell))
        scores.append(
            {
                **cell,
                "model_group": "",
                "family": "",
                "language": "en",
                "metric": "accuracy",
                "value": correct.mean(),
                "left_out": left_out,
            }
        )
    return pd.DataFrame(scores), pd.concat(examples, ignore_index=True)


def test_the_report_says_which_seeds_and_examples_it_left_out():
    accuracy = {("xnli", s): 0.7 for s in (1, 2, 3)} | {("none", s): 0.6 for s in (1, 2)}
    scores, examples = _cells(accuracy, missing={("xnli", 2): [5, 6, 7]}, left_out=4)
    gains = report.gains_table(scores, examples, {"pawsx": "single_label"}, ReportConfig(bootstrap=100))
    (row,) = gains.itertuples()
    assert row.n_seeds == 2
    assert "2 paired seed(s): seed(s) 3 missing in the baseline arm" in row.note
    assert "test examples not scored in every run left out of the comparison (en 3)" in row.note
    assert "leakage guard: test examples seen in training left out (en 4)" in row.note
    (line,) = report.cell_notes(gains)
    assert line.startswith("xnli -> pawsx (pawsx test, m): 2 paired seed(s)")


def test_a_cell_without_a_baseline_seed_is_in_the_table_with_the_reason():
    scores, examples = _cells({("xnli", 1): 0.7, ("none", 2): 0.6})
    gains = report.gains_table(scores, examples, {"pawsx": "single_label"}, ReportConfig(bootstrap=100))
    (row,) = gains.itertuples()
    assert np.isnan(row.gain) and row.family == "none"
    assert row.note == "no gain: no baseline run of seed(s) 1 (the baseline arm has seed(s) 2)"


def test_the_report_command_prints_the_cell_notes(tmp_path, capsys):
    from intertask.config import ExperimentConfig, StageConfig
    from intertask.printing import print_headline

    accuracy = {("xnli", s): 0.7 for s in (1, 2, 3)} | {("none", s): 0.6 for s in (1, 2)}
    scores, examples = _cells(accuracy)
    gains = report.gains_table(scores, examples, {"pawsx": "single_label"}, ReportConfig(bootstrap=100))
    empty = pd.DataFrame()
    built = report.Report(scores, gains, empty, empty, empty, empty, empty, empty)
    print_headline(ExperimentConfig(name="n", target=StageConfig(task="pawsx")), built)
    assert (
        "note: xnli -> pawsx (pawsx test, m): 2 paired seed(s): seed(s) 3 missing in the baseline arm"
        in capsys.readouterr().out
    )


# --- the split that trains -----------------------------------------------------------------------------


def test_a_task_may_train_on_its_dev_file(tmp_path):
    dev, test = tmp_path / "dev.tsv", tmp_path / "test.tsv"
    dev.write_text(
        "".join(f"dev text {i}\t{'pos' if i % 2 else 'neg'}\n" for i in range(50)), encoding="utf-8"
    )
    test.write_text("".join(f"test text {i}\tpos\n" for i in range(7)), encoding="utf-8")
    fields = dict(
        name="valtest",
        type="classification",
        columns=("text", "label"),
        text_fields=("text",),
        labels=("neg", "pos"),
        files={"dev": str(dev), "test": str(test)},
    )
    spec = TaskSpec(**fields, train_split="dev")
    fractions = {"train": 0.7, "dev": 0.1, "test": 0.2}
    sets = {
        s: load_examples(spec, "en", s, root=tmp_path, fractions=fractions, seed=1)
        for s in ("train", "dev", "test")
    }
    assert (len(sets["train"]), len(sets["dev"]), len(sets["test"])) == (
        44,
        6,
        7,
    )  # 50 cut 7:1, test as shipped
    assert not set(sets["train"].uids) & set(sets["dev"].uids)
    assert {e.texts[0] for e in sets["test"].examples} == {f"test text {i}" for i in range(7)}
    with pytest.raises(ConfigError, match="train_split: names a split the task does not declare"):
        TaskSpec(**{**fields, "files": {"test": str(test)}}, train_split="dev")
    with pytest.raises(ConfigError, match="which one trains is ambiguous"):
        TaskSpec(**{**fields, "files": {"train": str(dev), "dev": str(dev)}}, train_split="dev")


def test_the_languages_table_carries_the_leakage_guards_exclusions_into_its_means():
    from intertask.compute.evaluation import language_table

    scores = {lang: {"accuracy": 0.5} for lang in ("en", "de", "fr")}
    table = language_table("t", "test", scores, {"en": 10, "de": 12, "fr": 8}, "en", {"en": 3, "de": 2})
    left = dict(zip(table.language, table.left_out, strict=True))
    assert left == {"en": 3, "de": 2, "fr": 0, "mean_all": 5, "mean_non_en": 2}


# --- a trained model that learnt nothing is said before it is used ------------------------------------


def test_an_intermediate_stage_that_learnt_nothing_is_said_and_its_cells_read_so(
    tmp_path, tiny_model, local_store, capsys
):
    """Two intermediate tasks over the same texts: one whose label is the first word (learnt), one
    whose labels are drawn at random (nothing to learn: dev accuracy within noise of the majority
    label). The second stage prints and tags a notice when it ends, the first does not; the report's
    learnt table and every gain of the second's cells say 'intermediate not learnt'."""
    rng = np.random.default_rng(0)
    words = ["good", "bad"]
    lines = [(f"{words[i % 2]} {words[i % 2]} {words[i % 2]} film {i}", words[i % 2]) for i in range(400)]
    learnable = tmp_path / "learnable.tsv"
    learnable.write_text(
        "".join(f"{t}\t{'pos' if w == 'good' else 'neg'}\n" for t, w in lines), encoding="utf-8"
    )
    noise = tmp_path / "noise.tsv"
    noise.write_text("".join(f"{t}\t{rng.choice(['pos', 'neg'])}\n" for t, _ in lines), encoding="utf-8")
    tasks = [
        write_yaml(
            tmp_path / f"{name}.yaml",
            {**TEXT_LABEL, "name": name, "labels": ["neg", "pos"], "files": {"all": str(path)}},
        )
        for name, path in (("learnable", learnable), ("noise", noise), ("target", learnable))
    ]
    config = write_experiment(
        tmp_path,
        tiny_model,
        "learnt",
        study=False,
        data={"task_files": [str(t) for t in tasks]},
        intermediate={"task": "learnable", "language": "en"},
        target={"task": "target", "language": "en"},
        training={"epochs": 5, "learning_rate": 3.0e-3},
        grid={"intermediate": ["none", "learnable", "noise"], "target": ["target"], "seeds": [1]},
        evaluation={"tasks": [{"task": "target", "languages": ["en"]}]},
        report={"divergence": False},
    )
    assert cli.main(["main", str(config)]) == 0
    err = capsys.readouterr().err
    assert "note: intermediate stage noise learnt nothing: dev accuracy" in err
    assert "intermediate stage learnable learnt nothing" not in err
    client = MlflowClient()
    stages = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`intertask.stage` = 'intermediate'"
    )
    tags = {r.data.tags["intertask.cell.intermediate"]: r.data.tags for r in stages}
    assert "learnt nothing" in tags["noise"]["intertask.notice.not_learnt.intermediate.noise"]
    assert not any(k.startswith("intertask.notice.not_learnt") for k in tags["learnable"])
    (parent,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`intertask.stage` = 'main'"
    )
    learnt = pd.read_csv(client.download_artifacts(parent.info.run_id, "report/learnt.csv", str(tmp_path)))
    by_stage = learnt.set_index(["stage", "intermediate"]).learnt
    assert not by_stage[("intermediate", "noise")] and by_stage[("intermediate", "learnable")]
    gains = pd.read_csv(client.download_artifacts(parent.info.run_id, "report/gains.csv", str(tmp_path)))
    assert gains[gains.intermediate == "noise"].reading.str.startswith("intermediate not learnt (noise").all()
    assert not gains[gains.intermediate == "learnable"].reading.str.contains("not learnt").any()


def test_a_machine_without_git_records_an_unknown_commit_instead_of_failing(monkeypatch, tmp_path):
    """provenance.git_state on a machine without git (a slim container): commit and dirty "unknown",
    not a FileNotFoundError that ended the stage."""
    from intertask.tracking import provenance

    monkeypatch.setenv("PATH", str(tmp_path))  # no git on it
    assert provenance.git_state.__wrapped__() == {"commit": "unknown", "dirty": "unknown"}


def test_a_hub_that_refuses_the_token_is_said_not_swallowed(monkeypatch, capsys):
    """A hub answering 401 to the commit lookup (a wrong HF_TOKEN): said with the hint to check the
    token, and the local cache's commit (here none: unresolved) is what the data key uses. A real HTTP
    server on 127.0.0.1 plays the hub."""
    import http.server
    import threading

    from huggingface_hub import constants

    from intertask import pretrained

    class Refusing(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 -- http.server's name
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": "Invalid credentials in Authorization header"}')

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
        pretrained.repo_commit.cache_clear()
        assert pretrained.repo_commit("someone/private-model", "main") is None
    finally:
        server.shutdown()
        pretrained.repo_commit.cache_clear()
    err = capsys.readouterr().err
    assert "someone/private-model@main" in err and "check HF_TOKEN" in err and "left unresolved" in err
    assert "hf_not_a_real_token" not in err
