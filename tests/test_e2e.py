"""End to end against a real `mlflow server` (SQLite backend, 127.0.0.1): the run tree of `main`,
metric keys for every language, artifacts, registered versions with aliases and lineage; `evaluate`
from a models:/ URI; the MLproject through `mlflow run`; bad input that leaves nothing behind."""

import json
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from intertask import cli, tracking

from .conftest import main_against, mlflow_run

LANGUAGES = ["en", "de", "fr", "ja"]


def _runs(client, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=200) if exp else []


def _children(runs, parent) -> list:
    return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


def _artifacts(client, run_id: str, path: str = "") -> set[str]:
    out = set()
    for item in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return out


@pytest.fixture(scope="module")
def study(tiny_model, mlflow_server, tmp_path_factory):
    """`intertask main` once against the server; returns (client, runs, config path, registered names)."""
    from .conftest import write_experiment

    config = write_experiment(
        tmp_path_factory.mktemp("study"),
        tiny_model,
        "e2e",
        evaluation={"languages": LANGUAGES},
        tracking={"system_metrics_interval_seconds": 1},  # short stages still get samples
    )
    main_against(mlflow_server, config)
    client = MlflowClient(mlflow_server)
    names = {
        chain: tracking.registered_name("e2e", str(tiny_model), chain.split("-"))
        for chain in ("xnli", "xnli-pawsx", "pawsx")
    }
    return client, _runs(client, "e2e"), config, names


def test_runs_carry_what_mlflow_users_look_for(study):
    """On the real server: the experiment opens as a model-training one with a description; the parent
    run's description ends with the headline gains table; each training run lists its training and
    validation sets as MLflow datasets (digest = our fingerprint) and each evaluation run its test sets;
    training and evaluation runs carry system metrics; stage runs say what they do."""
    client, runs, _, _ = study
    (parent,) = [r for r in runs if r.data.tags.get("intertask.stage") == "main"]
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "**e2e**" in experiment.tags["mlflow.note.content"]
    description = parent.data.tags["mlflow.note.content"].replace("&emsp;", " ")  # cells padded for the UI
    assert "| intermediate | target | metric |" in description
    assert "**xnli -> pawsx, pawsx accuracy per language**" in description  # the answer per language
    assert all(f"\n| {lang} | " in description for lang in LANGUAGES)
    local = client.download_artifacts(parent.info.run_id, "report/gains_table.json")
    table = json.loads(Path(local).read_text(encoding="utf-8"))  # an MLflow table: the UI shows a table
    gains = dict.fromkeys(table["columns"])
    assert {"language", "gain", "ci_low", "ci_high", "flag"} <= set(gains) and table["data"]
    finetunes = [r for r in runs if r.data.tags.get("intertask.stage") == "finetune"]
    evaluations = [r for r in runs if r.data.tags.get("intertask.stage") == "evaluate"]
    assert finetunes and evaluations
    assert all(any(k.startswith("system/") for k in r.data.metrics) for r in finetunes)  # sampled every 1 s
    for run in finetunes + evaluations:
        inputs = {
            d.dataset.name: ({t.key: t.value for t in d.tags}, d.dataset.digest)
            for d in run.inputs.dataset_inputs
        }
        fingerprints = {
            f"{r['task']}/{r['language']}/{r['split']}": r["fingerprint"]
            for r in _fingerprints(client, run.info.run_id)
        }
        assert set(inputs) == set(fingerprints), (inputs, fingerprints)
        for name, (tags, digest) in inputs.items():
            expected = (
                "evaluation"
                if run in evaluations
                else "training"
                if name.endswith("/train")
                else "validation"
            )
            assert tags["mlflow.data.context"] == expected and digest == fingerprints[name][:32]
        if run.info.end_time - run.info.start_time > 2000:  # a run shorter than one interval has no sample
            assert any(key.startswith("system/") for key in run.data.metrics), sorted(run.data.metrics)
        assert run.data.tags["mlflow.note.content"].startswith(("Trains ", "Evaluates "))
    # the target models carry their stage run's params (MLflow copies them when the model is logged)
    # and the metrics their evaluations measured, linked by model id
    experiment_id = parent.info.experiment_id
    logged = {m.source_run_id: m for m in client.search_logged_models(experiment_ids=[experiment_id])}
    for run in finetunes:
        model = client.get_logged_model(logged[run.info.run_id].model_id)
        assert model.params["target.training.epochs"] == run.data.params["target.training.epochs"] == "2"
        assert {m.key for m in model.metrics} >= {"pawsx/test/de/accuracy", "pawsx/test/mean_all/accuracy"}


def _fingerprints(client, run_id):
    import json

    local = client.download_artifacts(run_id, "data/fingerprints.json")
    with open(local, encoding="utf-8") as f:
        return json.load(f)["example_sets"]


def test_main_builds_the_run_tree(study):
    client, runs, _, _ = study
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    (parent,) = [r for r in runs if r.data.tags.get("intertask.stage") == "main"]
    arms = {r.data.tags["intertask.arm"]: r for r in _children(runs, parent)}
    assert set(arms) == {"transfer", "baseline"}
    stages = {
        arm: sorted(r.data.tags["intertask.stage"] for r in _children(runs, run)) for arm, run in arms.items()
    }
    assert stages == {
        "transfer": ["evaluate", "finetune", "intermediate"],
        "baseline": ["evaluate", "finetune"],
    }
    assert len(runs) == 1 + 2 + 5
    # named by what the arm does (its first job, the intermediate stage, has no target of its own)
    assert {r.info.run_name for r in arms.values()} == {"arm baseline", "arm transfer: xnli"}
    # each arm carries its scores, the transfer arm its gain over the baseline arm, for the UI's comparison
    key = "pawsx/pawsx/test/en/accuracy"
    base, transfer = arms["baseline"].data.metrics, arms["transfer"].data.metrics
    assert base[f"seed_gain/{key}"] == 0  # the baseline against itself: no empty column in Compare
    gain = transfer[f"score/{key}"] - base[f"score/{key}"]
    assert transfer[f"seed_gain/{key}"] == pytest.approx(gain)
    params = arms["transfer"].data.params  # the arm's coordinates, not a stage's config
    assert params == {
        "model": params["model"],
        "intermediate": "xnli",
        "target": "pawsx",
        "seed": "7",
        "headline": "pawsx: accuracy, mean_all",
    }
    assert arms["baseline"].data.tags["intertask.cell.target"] == "pawsx"
    assert transfer["headline_score/pawsx"] == transfer["score/pawsx/pawsx/test/mean_all/accuracy"]


def test_metric_keys_for_every_language(study):
    client, runs, _, _ = study
    evaluations = [r for r in runs if r.data.tags.get("intertask.stage") == "evaluate"]
    assert len(evaluations) == 2
    for run in evaluations:
        for lang in [*LANGUAGES, "mean_all", "mean_non_en"]:
            for metric in ("accuracy", "macro_f1"):
                value = run.data.metrics[f"pawsx/test/{lang}/{metric}"]
                assert 0.0 <= value <= 1.0
        assert {f"leakage_guard/pawsx/{lang}/excluded" for lang in LANGUAGES} <= set(run.data.metrics)
    (parent,) = [r for r in runs if r.data.tags.get("intertask.stage") == "main"]
    cell = "tiny-bert0/{}/pawsx/pawsx/test/{}/accuracy"
    for lang in LANGUAGES:
        gain = parent.data.metrics["gain/" + cell.format("xnli", lang)]
        transfer = parent.data.metrics["score/" + cell.format("xnli", lang)]
        baseline = parent.data.metrics["score/" + cell.format("none", lang)]
        assert gain == pytest.approx(transfer - baseline)
        low, high = (
            parent.data.metrics[f"{b}/" + cell.format("xnli", lang)] for b in ("gain_low", "gain_high")
        )
        assert low <= gain <= high  # the interval beside the gain, for a chart
    trained = [r for r in runs if r.data.tags.get("intertask.stage") in ("intermediate", "finetune")]
    for run in trained:
        history = client.get_metric_history(run.info.run_id, "train/loss")
        assert len(history) >= 2 and [m.step for m in history] == sorted(m.step for m in history)
        task = run.data.tags["intertask.task"]
        assert len(client.get_metric_history(run.info.run_id, f"dev/{task}/accuracy")) == 2  # one per epoch
        assert run.data.metrics["best_epoch"] in (1, 2)


def test_artifacts_provenance_and_params(study):
    client, runs, _, _ = study
    (parent,) = [r for r in runs if r.data.tags.get("intertask.stage") == "main"]
    assert {
        "report/gains.csv",
        "report/gains.html",
        "report/scores.csv",
        "report/heatmap.png",
        "report/report.html",
        "config/resolved.yaml",
        "provenance/environment.json",
    } <= _artifacts(client, parent.info.run_id)
    for run in runs:
        stage = run.data.tags["intertask.stage"]
        tags, params = run.data.tags, run.data.params
        assert "intertask.config_hash" in tags and "intertask.git_commit" in tags, stage  # every run
        if stage in ("intermediate", "finetune", "evaluate"):
            assert len(tags["intertask.config_hash"]) == 64 and tags["intertask.git_commit"]
            assert all(tags[f"intertask.version.{p}"] for p in ("torch", "transformers", "mlflow"))
            assert any(k.startswith("data.") and k.endswith(".fingerprint") for k in params)
            assert params["training.learning_rate"] == "0.001" and params["seed"] == "7"
        if stage in ("intermediate", "finetune"):
            files = _artifacts(client, run.info.run_id)
            assert {
                "training/history.csv",
                "training/curves.png",
                "data/seen_examples.json",
                "data/fingerprints.json",
                "config/resolved.yaml",
            } <= files
        if stage == "evaluate":
            files = _artifacts(client, run.info.run_id)
            assert {
                "evaluation/languages.csv",
                "evaluation/languages.html",
                "evaluation/pawsx.png",
                "evaluation/predictions.csv",
            } <= files


def test_registered_models_have_aliases_and_lineage(study):
    client, runs, _, names = study
    intermediate = client.get_model_version_by_alias(names["xnli"], "intermediate")
    transfer = client.get_model_version_by_alias(names["xnli-pawsx"], "target")
    baseline = client.get_model_version_by_alias(names["pawsx"], "target")
    by_id = {r.info.run_id: r for r in runs}
    assert by_id[intermediate.run_id].data.tags["intertask.stage"] == "intermediate"
    assert by_id[transfer.run_id].data.tags["intertask.stage"] == "finetune"
    assert transfer.tags["intertask.init_run_id"] == intermediate.run_id
    assert transfer.tags["intertask.init_model"] == f"models:/{names['xnli']}/{intermediate.version}"
    assert transfer.tags["intertask.task_chain"] == "xnli-pawsx"
    assert baseline.tags["intertask.init_run_id"] == "" and baseline.tags["intertask.task_chain"] == "pawsx"
    assert transfer.tags["intertask.language"] == "en" and transfer.tags["intertask.base_model"]
    assert by_id[transfer.run_id].data.tags["intertask.init_run_id"] == intermediate.run_id


def test_evaluate_loads_a_model_by_alias_uri(study, mlflow_server, monkeypatch, capsys):
    client, _, config, names = study
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    uri = f"models:/{names['xnli-pawsx']}@target"
    assert cli.main(["evaluate", str(config), "--model", uri, "evaluation.languages=[de,fr]"]) == 0
    runs = _runs(client, "e2e")
    standalone = [r for r in runs if r.data.tags.get("intertask.model") == uri]
    assert len(standalone) == 1 and "mlflow.parentRunId" not in standalone[0].data.tags
    metrics = standalone[0].data.metrics
    assert {"pawsx/test/de/accuracy", "pawsx/test/fr/accuracy", "pawsx/test/mean_all/accuracy"} <= set(
        metrics
    )
    assert standalone[0].data.tags["intertask.model_version"].startswith(names["xnli-pawsx"] + "/")
    out = capsys.readouterr().out
    assert "mean_all" in out and "macro_f1" in out and uri in out


def test_a_registered_pair_model_reads_both_texts_and_predicts_as_evaluate_does(
    study, mlflow_server, shared_data
):
    """A sentence-pair model (PAWS-X) through pyfunc: both texts count (a changed second text changes
    the score; before, the flavor read one string and ignored the pair), the predictions equal the
    evaluation's on the same examples, and the logged model carries a signature and an input example."""
    import pandas as pd

    from intertask import tracking
    from intertask.compute.evaluation import evaluate_set
    from intertask.compute.modeling import load_for_task, load_tokenizer
    from intertask.tasks import builtin_catalog
    from intertask.tasks.examples import load_examples
    from intertask.tasks.types import task_type

    _, _, _, names = study
    mlflow.set_tracking_uri(mlflow_server)
    uri = f"models:/{names['pawsx']}@target"
    model = mlflow.pyfunc.load_model(uri)
    assert model.metadata.signature.inputs.input_names() == ["text", "text_pair"]
    pairs = pd.DataFrame(
        {
            "text": ["The cat sat on the mat."] * 2,
            "text_pair": ["A cat sat on the mat.", "Stock prices fell."],
        }
    )
    out = model.predict(pairs)
    assert set(out["label"]) <= {"0", "1"} and out["score"].iloc[0] != out["score"].iloc[1]
    spec = builtin_catalog().spec("pawsx")
    data = load_examples(
        spec,
        "de",
        "test",
        root=shared_data,
        fractions={"train": 0.6, "dev": 0.1, "test": 0.3},
        seed=7,
        max_examples=16,
    )
    task = task_type(spec)
    files = tracking.download_model(tracking.resolve_reference(uri))
    net, tokenizer = (
        load_for_task(files.model_dir, "pawsx", task.head_signature()),
        load_tokenizer(str(files.model_dir)),
    )
    scored = evaluate_set(
        net, task, data, task.encode(data, tokenizer, 64), pad_id=tokenizer.pad_token_id, batch_tokens=512
    )
    frame = pd.DataFrame(
        {"text": [e.texts[0] for e in data.examples], "text_pair": [e.texts[1] for e in data.examples]}
    )
    assert list(model.predict(frame)["label"]) == [spec.labels[p] for p in scored.predictions]


def test_evaluate_rejects_a_model_with_the_wrong_head(study, mlflow_server, monkeypatch, capsys):
    client, _, config, names = study
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    before = len(_runs(client, "e2e"))
    code = cli.main(["evaluate", str(config), "--model", f"models:/{names['xnli']}@intermediate"])
    assert code == 2
    assert "head: the model has no head that fits task 'pawsx'" in capsys.readouterr().err
    assert len(_runs(client, "e2e")) == before


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("models:/no.such.model@target", "evaluation.model: not found in the tracking store"),
        ("models:/no.such.model", "evaluation.model: a models:/ URI needs @alias, /version or a model id"),
        ("0123456789abcdef0123456789abcdef", "evaluation.model: not found in the tracking store"),
    ],
)
def test_bad_model_references_are_reported_before_any_run(
    study, mlflow_server, monkeypatch, capsys, uri, expected
):
    client, _, config, _ = study
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    before = len(_runs(client, "e2e"))
    assert cli.main(["evaluate", str(config), "--model", uri]) == 2
    assert expected in capsys.readouterr().err
    assert len(_runs(client, "e2e")) == before


def test_bad_data_fails_before_any_run_is_created(tmp_path, tiny_config, mlflow_server, monkeypatch, capsys):
    bad = tmp_path / "broken.tsv"
    bad.write_text("a sentence\tpos\nanother\tpos\textra column\n")
    task = tmp_path / "broken.yaml"
    task.write_text(
        f"name: broken\ntype: classification\nformat: tsv\ncolumns: [text, label]\n"
        f"files: {{all: {bad}}}\ntext_fields: [text]\nlabels: [neg, pos]\n"
    )
    config = tiny_config(
        "nothing",
        data={"task_files": [str(task)]},
        target={"task": "broken"},
        evaluation={"languages": ["en"]},
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    assert cli.main(["main", str(config)]) == 2
    assert (
        f"{bad}: line 2: wrong number of tab-separated columns (got 3; expected 2 columns"
        in capsys.readouterr().err
    )
    assert MlflowClient(mlflow_server).get_experiment_by_name("nothing") is None


@pytest.mark.slow
def test_mlflow_run_uses_the_mlproject(tiny_config, mlflow_server, tmp_path):
    """`mlflow run . -e main --env-manager local`: the launcher's run becomes the study's parent run."""
    config = tiny_config(
        "mlproject",
        intermediate=None,
        evaluation={"languages": ["en", "de"], "max_examples": 32},
        training={"epochs": 1},
    )
    proc = mlflow_run(
        "main",
        config,
        mlflow_server,
        "mlproject",
        tmp_path,
        "overrides=target.max_examples.train=64 seed=3",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(mlflow_server)
    runs = _runs(client, "mlproject")
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.tags["intertask.stage"] == "main" and parent.info.status == "FINISHED"
    assert parent.data.params["seed"] == "3" and parent.data.params["target.max_examples.train"] == "64"
    (arm,) = _children(runs, parent)
    assert arm.data.tags["intertask.arm"] == "baseline"
    assert sorted(r.data.tags["intertask.stage"] for r in _children(runs, arm)) == ["evaluate", "finetune"]
    experiment = client.get_experiment_by_name("mlproject")  # made by `mlflow run`, set up as ours
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "pawsx" in experiment.tags["mlflow.note.content"]  # the study's description


@pytest.mark.parametrize("by", ["alias", "run_id"])
def test_finetune_from_a_registered_intermediate_model(by, study, mlflow_server, monkeypatch):
    client, runs, config, names = study
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    intermediate = client.get_model_version_by_alias(names["xnli"], "intermediate")
    init = f"models:/{names['xnli']}@intermediate" if by == "alias" else intermediate.run_id
    before = {r.info.run_id for r in _runs(client, "e2e")}
    assert cli.main(["finetune", str(config), "--init", init, "training.epochs=1"]) == 0
    (new,) = [r for r in _runs(client, "e2e") if r.info.run_id not in before]
    assert new.data.tags["intertask.stage"] == "finetune" and "mlflow.parentRunId" not in new.data.tags
    assert new.data.tags["intertask.init_model"] == init
    assert new.data.tags["intertask.init_run_id"] == intermediate.run_id
    assert new.data.tags["intertask.task_chain"] == "xnli-pawsx"
    version = client.get_model_version_by_alias(names["xnli-pawsx"], "target")
    assert version.run_id == new.info.run_id and version.tags["intertask.init_model"] == init
    mlflow.set_tracking_uri(mlflow_server)
    seen = json.loads(mlflow.artifacts.load_text(f"runs:/{new.info.run_id}/data/seen_examples.json"))
    assert {"xnli|dev", "pawsx|dev"} <= set(seen)  # the intermediate's lines travel along the lineage


# --- issue 3: a multi-task intermediate stage, zero-shot on several XTREME tasks, retrieval probes ------

XTREME_EVAL = {"xquad": ["en", "de", "zh"], "udpos": ["de", "fr"], "pawsx": ["de", "fr"]}


@pytest.fixture(scope="module")
def xtreme_study(tiny_model, mlflow_server, tmp_path_factory):
    from .conftest import write_experiment

    config = write_experiment(
        tmp_path_factory.mktemp("xtreme"),
        tiny_model,
        "xtreme-e2e",
        study=False,
        seed=5,
        model={"max_length": 96},
        training={"epochs": 1},
        intermediate={
            "tasks": ["pawsx", "tydiqa", "udpos"],
            "max_examples": {"train": 64, "dev": 24},
            "sampling": {"strategy": "temperature", "temperature": 2.0},
        },
        evaluation={
            "tasks": [{"task": t, "languages": langs} for t, langs in XTREME_EVAL.items()],
            "max_examples": 24,
        },
        probes=[{"task": "tatoeba", "languages": ["fr", "de"], "max_examples": 30}],
    )
    main_against(mlflow_server, config)
    client = MlflowClient(mlflow_server)
    return client, _runs(client, "xtreme-e2e"), config


def _by_stage(runs, stage):
    return [r for r in runs if r.data.tags.get("intertask.stage") == stage]


def test_multitask_run_tree_heads_and_sampling(xtreme_study, tiny_model):
    client, runs, _ = xtreme_study
    assert all(r.info.status == "FINISHED" for r in runs)
    (parent,) = _by_stage(runs, "main")
    children = _children(runs, parent)
    assert sorted(r.data.tags["intertask.stage"] for r in children) == ["arm", "probe"]  # no baseline arm
    (arm,) = _by_stage(runs, "arm")
    assert sorted(r.data.tags["intertask.stage"] for r in _children(runs, arm)) == [
        "evaluate",
        "intermediate",
    ]
    (stage,) = _by_stage(runs, "intermediate")
    metrics = stage.data.metrics
    assert {
        "dev/pawsx/accuracy",
        "dev/tydiqa/f1",
        "dev/tydiqa/exact_match",
        "dev/udpos/f1",
        "dev/selection",
    } <= set(metrics)
    assert all(metrics[f"train/{t}/batches"] > 0 for t in ("pawsx", "tydiqa", "udpos"))
    mlflow.set_tracking_uri(client.tracking_uri)
    heads = json.loads(mlflow.artifacts.load_text(f"runs:/{stage.info.run_id}/model_heads/heads.json"))
    assert [h["task"] for h in heads] == ["pawsx", "tydiqa", "udpos"]
    name = tracking.registered_name("xtreme-e2e", str(tiny_model), ["pawsx+tydiqa+udpos"])
    assert client.get_model_version_by_alias(name, "intermediate").run_id == stage.info.run_id


def test_zero_shot_metrics_per_task_and_language(xtreme_study):
    _, runs, _ = xtreme_study
    (evaluation,) = _by_stage(runs, "evaluate")
    metrics = evaluation.data.metrics
    for task, languages in XTREME_EVAL.items():
        names = {
            "xquad": ("f1", "exact_match"),
            "udpos": ("f1", "accuracy"),
            "pawsx": ("accuracy", "macro_f1"),
        }[task]
        for metric in names:
            values = [metrics[f"{task}/test/{language}/{metric}"] for language in languages]
            assert all(0.0 <= v <= 1.0 for v in values)
            # the language mean is the plain mean of the languages' scores, computed here again
            assert metrics[f"{task}/test/mean_all/{metric}"] == pytest.approx(sum(values) / len(values))


def test_xtreme_aggregate_on_the_parent_run(xtreme_study):
    _, runs, _ = xtreme_study
    (parent,) = _by_stage(runs, "main")
    (evaluation,) = _by_stage(runs, "evaluate")
    m, e = parent.data.metrics, evaluation.data.metrics

    def mean(task, metric):
        return sum(e[f"{task}/test/{lang}/{metric}"] for lang in XTREME_EVAL[task]) / len(XTREME_EVAL[task])

    cell = "xtreme/tiny-bert0/pawsx.tydiqa.udpos/zero-shot"
    assert m[f"{cell}/task/xquad"] == pytest.approx((mean("xquad", "exact_match") + mean("xquad", "f1")) / 2)
    assert m[f"{cell}/task/udpos"] == pytest.approx(mean("udpos", "f1"))
    assert m[f"{cell}/task/pawsx"] == pytest.approx(mean("pawsx", "accuracy"))
    assert not [
        k for k in m if k.startswith("xtreme/") and ("/group/" in k or k.endswith("overall"))
    ]  # incomplete


def test_retrieval_probes_before_and_after_the_stage(xtreme_study):
    client, runs, _ = xtreme_study
    (probe,) = _by_stage(runs, "probe")
    (stage,) = _by_stage(runs, "intermediate")
    for run in (probe, stage):
        for language in ("fr", "de"):
            assert 0.0 <= run.data.metrics[f"probe/tatoeba/test/{language}/accuracy"] <= 1.0
    (parent,) = _by_stage(runs, "main")
    assert {"report/probes.csv", "report/probes.png"} <= _artifacts(client, parent.info.run_id)


def test_standalone_evaluation_finds_the_heads_of_a_registered_multitask_model(
    xtreme_study, tiny_model, mlflow_server, monkeypatch, capsys
):
    client, _, config = xtreme_study
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    name = tracking.registered_name("xtreme-e2e", str(tiny_model), ["pawsx+tydiqa+udpos"])
    code = cli.main(
        [
            "evaluate",
            str(config),
            "--model",
            f"models:/{name}@intermediate",
            "probes=[]",
            "evaluation.tasks=[{task: xquad, languages: [es]}, {task: tatoeba, languages: [es]}]",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "xquad/test" in out and "tatoeba/test" in out


def test_the_experiment_report_counts_only_study_cells(study, mlflow_server, monkeypatch, tmp_path, capsys):
    """A standalone evaluation and a tuning study in the same experiment change nothing in scores.csv
    (a standalone evaluation used to become a baseline row), and the report says what it skipped."""
    import pandas as pd
    import yaml

    from .conftest import write_yaml

    client, runs, config, names = study
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    (parent,) = [r for r in runs if r.data.tags.get("intertask.stage") == "main"]
    alone = tmp_path / "alone"
    assert cli.main(["report", str(config), "--parent", parent.info.run_id, "--output", str(alone)]) == 0
    uri = f"models:/{names['xnli-pawsx']}@target"
    assert cli.main(["evaluate", str(config), "--model", uri, "evaluation.languages=[de]"]) == 0
    tuned = yaml.safe_load(config.read_text()) | {
        "tuning": {
            "stage": "target",
            "metric": "accuracy",
            "trials": 1,
            "pruner": {"kind": "none"},
            "space": {"learning_rate": {"type": "float", "low": 1.0e-3, "high": 2.0e-3}},
        }
    }
    monkeypatch.chdir(tmp_path)
    assert cli.main(["tune", str(write_yaml(tmp_path / "tune.yaml", tuned))]) == 0
    capsys.readouterr()
    everything = tmp_path / "everything"
    assert cli.main(["report", str(config), "--output", str(everything)]) == 0
    out = capsys.readouterr().out
    key = ["model", "intermediate", "target", "seed", "task", "split", "language", "metric"]
    for name in ("scores", "gains"):  # the pipeline's report (from memory) = the collector's (from runs)
        logged = pd.read_csv(client.download_artifacts(parent.info.run_id, f"report/{name}.csv"))
        pd.testing.assert_frame_equal(logged, pd.read_csv(alone / f"{name}.csv"))
    a = pd.read_csv(alone / "scores.csv").sort_values(key, ignore_index=True)
    b = pd.read_csv(everything / "scores.csv").sort_values(key, ignore_index=True)
    pd.testing.assert_frame_equal(a, b)
    assert "not in a study cell" in out and "skipped" in out
    gains = pd.read_csv(everything / "gains.csv")
    assert {"ci_low", "ci_high", "p", "q", "mde", "n_seeds", "seed_component", "flag"} <= set(gains.columns)
    assert gains.seed_component.str.startswith("unestimated").all()  # one seed: said, not hidden


def test_evaluation_logs_per_example_outcomes_that_give_back_its_metrics(study):
    """examples.parquet: one row per test example with the statistics its metrics are recomputed from;
    summed over a language, they give the logged metric; predictions.csv keeps the texts whole."""
    import pandas as pd

    from intertask import metrics

    client, runs, _, _ = study
    evaluation = next(
        r
        for r in runs
        if r.data.tags.get("intertask.stage") == "evaluate" and "intertask.cell.model" in r.data.tags
    )
    examples = tracking.read_run_parquet(evaluation.info.run_id, "evaluation/examples.parquet")
    table = tracking.read_run_table(evaluation.info.run_id, "evaluation/languages.csv")
    for language, group in examples.groupby("language"):
        assert len(group) == 64 and group.uid.is_unique
        sums = (
            group.drop(columns=["task", "split", "language", "uid"]).dropna(axis=1, how="all").sum().to_dict()
        )
        for metric in ("accuracy", "macro_f1"):
            logged = table[(table.language == language) & (table.metric == metric)].value.item()
            assert float(metrics.from_sums(metrics.SINGLE, metric, sums, len(group))) == pytest.approx(logged)
    predictions = tracking.read_run_table(evaluation.info.run_id, "evaluation/predictions.csv")
    assert predictions.text.str.len().max() > 300  # PAWS-X pairs longer than the old 300-character cut
    assert len(pd.unique(predictions.uid)) == len(predictions) / len(pd.unique(predictions.language))
