"""Head swap and freezing semantics, other task types through the stages, and CLI odds and ends."""

import mlflow
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from intertask import cli
from intertask.compute import modeling
from intertask.compute.modeling import HeadSpec, build_models, parameter_counts
from intertask.config.validate import load_experiment
from intertask.tasks import builtin_catalog

from .conftest import finetune_and_evaluate

HEAD_2 = {"num_labels": 2, "id2label": {0: "a", 1: "b"}, "label2id": {"a": 0, "b": 1}}


@pytest.fixture
def trained_folder(tiny_model, tmp_path):
    """A saved 2-label classifier whose head and encoder differ from any fresh initialisation."""
    torch.manual_seed(123)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, **HEAD_2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path / "trained")
    return tmp_path / "trained", model


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


SIGNATURE_2 = ("sequence_classification", ("a", "b"))


def build_model(folder, head, kwargs, *, seed, keep_head=False, freeze_word_embeddings=False):
    spec = HeadSpec("t", head, kwargs, SIGNATURE_2 if kwargs.get("num_labels") == 2 else (head,), keep_head)
    return build_models(str(folder), [spec], seed=seed, freeze_word_embeddings=freeze_word_embeddings)["t"]


def test_new_head_even_when_the_label_count_matches(trained_folder):
    folder, source = trained_folder
    model = build_model(folder, "sequence_classification", HEAD_2, seed=1)
    assert _same(source.bert.state_dict(), model.bert.state_dict())  # encoder kept (pooler included)
    assert not torch.equal(source.classifier.weight, model.classifier.weight)  # head replaced
    again = build_model(folder, "sequence_classification", HEAD_2, seed=1)
    assert torch.equal(model.classifier.weight, again.classifier.weight)  # seeded


def test_weights_missing_from_the_checkpoint_do_not_depend_on_the_global_rng(tiny_model, tmp_path):
    """e5-small ships no pooler; the classification head reads it. Whatever the process's RNG state
    before (the first model of a process used to differ from run to run), the same seed builds the
    same model."""
    from transformers import AutoTokenizer, BertModel

    encoder = BertModel.from_pretrained(tiny_model, add_pooling_layer=False)
    encoder.save_pretrained(tmp_path / "no-pooler")
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tmp_path / "no-pooler")
    built = []
    for state in (1, 2):
        torch.manual_seed(state)  # as if different work had run before in this process
        built.append(build_model(tmp_path / "no-pooler", "sequence_classification", HEAD_2, seed=7))
    assert "bert.pooler.dense.weight" in built[0].state_dict()
    assert _same(built[0].state_dict(), built[1].state_dict())


def test_keep_head_keeps_it(trained_folder):
    folder, source = trained_folder
    model = build_model(folder, "sequence_classification", HEAD_2, seed=1, keep_head=True)
    assert torch.equal(source.classifier.weight, model.classifier.weight)


def test_new_head_with_a_different_label_count(trained_folder):
    folder, _ = trained_folder
    three = {"num_labels": 3, "id2label": {0: "x", 1: "y", 2: "z"}, "label2id": {"x": 0, "y": 1, "z": 2}}
    model = build_model(folder, "sequence_classification", three, seed=1)
    assert model.classifier.weight.shape[0] == 3 and model.config.id2label[2] == "z"


def test_freezing_word_embeddings(trained_folder):
    folder, _ = trained_folder
    model = build_model(folder, "sequence_classification", HEAD_2, seed=1, freeze_word_embeddings=True)
    assert not model.get_input_embeddings().weight.requires_grad
    counts = parameter_counts(model)
    assert (
        counts["parameters"] - counts["trainable_parameters"] == model.get_input_embeddings().weight.numel()
    )


def test_heads_share_one_encoder_and_save_and_load_separately(tiny_model, tmp_path):
    heads = [
        HeadSpec("cls", "sequence_classification", HEAD_2, SIGNATURE_2),
        HeadSpec("qa", "question_answering", {}, ("question_answering",)),
        HeadSpec(
            "pos",
            "token_classification",
            {"num_labels": 3, "id2label": {0: "A", 1: "B", 2: "C"}, "label2id": {"A": 0, "B": 1, "C": 2}},
            ("token_classification", ("A", "B", "C")),
        ),
    ]
    nets = build_models(str(tiny_model), heads, seed=0)
    assert nets["cls"].bert is nets["qa"].bert is nets["pos"].bert
    with torch.no_grad():
        nets["qa"].qa_outputs.weight.add_(1.0)
    tokenizer = modeling.load_tokenizer(str(tiny_model))
    modeling.save(nets, heads, tokenizer, tmp_path / "saved")
    assert [h.task for h in modeling.head_index(tmp_path / "saved")] == ["cls", "qa", "pos"]
    loaded = modeling.load_for_task(tmp_path / "saved", "xquad", ("question_answering",))  # any QA head fits
    assert torch.equal(loaded.qa_outputs.weight, nets["qa"].qa_outputs.weight)
    assert _same(nets["cls"].bert.state_dict(), loaded.bert.state_dict())
    assert modeling.load_for_task(tmp_path / "saved", "ner", ("token_classification", ("X", "Y"))) is None


@pytest.mark.parametrize(
    "task, metrics",
    [
        ("goemotions", ("micro_f1", "macro_f1", "accuracy")),  # multi-label, given splits
        ("sms_spam", ("accuracy", "macro_f1")),  # one file, seeded split
    ],
)
def test_other_task_types_through_finetune_and_evaluate(task, metrics, tiny_config, local_store):
    config = tiny_config(
        f"stage-{task}",
        intermediate=None,
        target={"task": task, "max_examples": {"train": 96, "dev": 32}},
        evaluation={"languages": ["en"], "max_examples": 48},
        training={"epochs": 1},
    )
    trained, evaluated = finetune_and_evaluate(load_experiment(config, ["model.freeze_word_embeddings=true"]))
    assert set(trained.best_dev[task]) == set(metrics)
    en = evaluated.table[evaluated.table.language == "en"]
    assert set(en.metric) == set(metrics) and (en.examples == 48).all()
    run = mlflow.get_run(trained.run_id)
    assert int(run.data.params["trainable_parameters"]) < int(run.data.params["parameters"])
    logged = mlflow.get_run(evaluated.run_id).data.metrics[f"{task}/test/en/{metrics[0]}"]
    assert logged == pytest.approx(float(en[en.metric == metrics[0]].value.iloc[0])) and 0 <= logged <= 1
    # served: every label's probability (sigmoid per label for multi-label, softmax otherwise)
    import pandas as pd

    labels = builtin_catalog().spec(task).labels
    answer = mlflow.pyfunc.load_model(trained.logged.uri).predict(
        pd.DataFrame({"text": ["so glad", "oh no"]})
    )
    scores = answer[[f"score_{n}" for n in labels]].to_numpy()
    assert ((scores >= 0) & (scores <= 1)).all() and len(answer) == 2
    if task == "goemotions":
        assert all(set(chosen) <= set(labels) for chosen in answer["labels"])
    else:
        assert scores.sum(1) == pytest.approx([1.0, 1.0]) and set(answer["label"]) <= set(labels)


def test_unreachable_hub_model_fails_before_any_run(tiny_config, local_store, tmp_path, capsys):
    config = tiny_config("hubmodel", model={"name_or_path": "no-such-org/no-such-model"})
    assert cli.main(["main", str(config)]) == 2
    err = capsys.readouterr().err
    assert "model.name_or_path: cannot load model" in err and "no-such-org/no-such-model" in err
    assert mlflow.MlflowClient().get_experiment_by_name("hubmodel") is None


def test_validate_tasks_and_model_list_commands(tiny_config, local_store, capsys):
    config = tiny_config("validate")
    assert cli.main(["validate", str(config), "training.epochs=5"]) == 0
    assert "epochs: 5" in capsys.readouterr().out
    assert cli.main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "goemotions" in out and "multilabel_classification" in out and "xnli" in out
    assert cli.main(["model", "list"]) == 0
    assert "e5-small" in capsys.readouterr().out
    assert cli.main(["model", "prepare", "e5-smal"]) == 2
    assert "unknown offline model 'e5-smal' (did you mean 'e5-small'?" in capsys.readouterr().err


def test_entry_points_refuse_configs_they_cannot_run(tiny_config, local_store, capsys):
    config = tiny_config("refuse", intermediate=None)
    assert cli.main(["intermediate", str(config)]) == 2
    assert "intermediate: the intermediate entry point needs this section" in capsys.readouterr().err
    assert cli.main(["evaluate", str(config)]) == 2
    assert "evaluation.model: evaluate needs a model" in capsys.readouterr().err
    assert cli.main(["main", str(config), "target.init=models:/x@y"]) == 2
    assert "target.init: main chooses the start of each arm itself" in capsys.readouterr().err


def test_evaluate_the_untrained_model_on_retrieval(tiny_config, local_store, capsys):
    config = tiny_config(
        "base-eval",
        intermediate=None,
        target=None,
        evaluation={"model": "base", "task": "tatoeba", "languages": ["fr", "de"], "max_examples": 20},
    )
    assert cli.main(["evaluate", str(config)]) == 0
    assert "tatoeba/test (base)" in capsys.readouterr().out
    run = mlflow.search_runs(experiment_names=["base-eval"]).iloc[0]
    assert 0 <= run["metrics.tatoeba/test/fr/accuracy"] <= 1 and run["tags.intertask.model"].endswith(
        "tiny-bert0"
    )


def test_a_trained_head_is_required_for_non_retrieval_tasks_on_the_base_model(
    tiny_config, local_store, capsys
):
    config = tiny_config(
        "base-head",
        intermediate=None,
        target=None,
        evaluation={"model": "base", "task": "pawsx", "languages": ["fr"]},
    )
    assert cli.main(["evaluate", str(config)]) == 2
    assert "head: the model has no head that fits task 'pawsx'" in capsys.readouterr().err


def test_a_study_leaves_no_scratch_folders(tiny_config, local_store, monkeypatch):
    """Planning and running a study create no temporary folder per job and remove their own: each job
    used to make one (an unused Workspace default) and leave it behind."""
    import tempfile

    scratch = local_store / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    config = tiny_config(
        "scratch",
        intermediate={"max_examples": {"train": 32, "dev": 16}},
        target={"max_examples": {"train": 32, "dev": 16}},
        training={"epochs": 1},
        evaluation={"languages": ["en"], "max_examples": 16},
    )
    assert cli.main(["main", str(config), "report.divergence=false"]) == 0
    assert [p.name for p in scratch.iterdir() if p.name.startswith("intertask-")] == []


def test_the_predictions_page_shows_one_word_per_cell_and_marks_wrong_tags():
    """predictions.html: a tagged sentence as one word per column, gold and predicted tag beneath, the
    wrong tag marked; a classification row marked when its prediction is wrong."""
    import pandas as pd

    from intertask.stages.evaluate import predictions_html

    frame = pd.DataFrame(
        {
            "task": ["udpos", "pawsx", "pawsx"],
            "language": ["de", "de", "de"],
            "split": "test",
            "uid": [0, 1, 2],
            "key": ["a", "b", "c"],
            "text": ["Der ||| Hund ||| <läuft>", "Ein Satz. ||| Ein anderer.", "x ||| y"],
            "gold": ["DET NOUN VERB", "1", "0"],
            "prediction": ["DET ADJ VERB", "0", "0"],
        }
    )
    page = predictions_html(frame, {"udpos"})
    assert "<td>Der</td><td>Hund</td><td>&lt;läuft&gt;</td>" in page  # one word per cell, escaped
    assert page.count(" class='wrong'>") == 2  # ADJ for NOUN; the pair row predicted 0 for 1
    assert "<td class='wrong'>ADJ</td>" in page and "1 of 3 tag(s) wrong" in page
    assert "Ein Satz.<br>Ein anderer." in page
