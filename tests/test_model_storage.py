"""`tracking.log_models`: which trained models a study logs and registers, what each choice can still
reload from the registry by models:/ URI, and what each costs in artifact bytes -- on a real
`mlflow server` (SQLite backend, proxied artifacts under a folder this test measures)."""

import json
import os
from dataclasses import replace
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from intertask import cli, tracking
from intertask.config.validate import load_experiment
from intertask.study import executors, grid

from .conftest import _free_port, main_against, start_mlflow_server, write_experiment

POLICIES = ("all", "registered", "final", "none")
SLIM = "registered-frozen"  # registered, frozen word embeddings: log_weights auto logs what changed
CHAINS = ("xnli", "pawsx", "xnli-pawsx")  # intermediate, baseline target, transfer target
SMALL = {
    "grid": {"intermediate": ["none", "xnli"], "target": ["pawsx"], "seeds": [1, 2]},
    "training": {"epochs": 1},
    "intermediate": {"task": "xnli", "max_examples": {"train": 48, "dev": 16}},
    "target": {"task": "pawsx", "max_examples": {"train": 48, "dev": 16}},
    "evaluation": {"languages": ["en", "de"], "max_examples": 16},
}


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def studies(tiny_model, tmp_path_factory):
    """The same two-seed study once per log_models choice, each its own experiment on one server;
    returns (server, client, {policy: (experiment id, artifact bytes)}, tmp folder)."""
    root = tmp_path_factory.mktemp("storage-server")
    proc = start_mlflow_server(root, port := _free_port())
    server = f"http://127.0.0.1:{port}"
    folder = tmp_path_factory.mktemp("storage")
    client = MlflowClient(server)
    out = {}
    run_job, scratch = executors.run_job, []

    def counting(spec, *upstream, workdir=None, data=None):  # model folders present when a job starts
        scratch.append(sum(1 for p in workdir.iterdir() if p.is_dir()) if workdir else 0)
        return run_job(spec, *upstream, workdir=workdir, data=data)

    patch = pytest.MonkeyPatch()
    patch.setattr(executors, "run_job", counting)
    try:
        for policy in (*POLICIES, SLIM):
            tracking_section = {"log_models": policy, "register_models": policy != "none"}
            frozen = {}
            if policy == SLIM:
                tracking_section = {"log_models": "registered"}  # log_weights: auto (the default)
                frozen = {"model": {"freeze_word_embeddings": True}}
            config = write_experiment(
                folder, tiny_model, f"store-{policy}", SMALL, frozen, tracking=tracking_section
            )
            main_against(server, config)
            experiment = client.get_experiment_by_name(f"store-{policy}").experiment_id
            out[policy] = (experiment, _bytes(root / "artifacts" / experiment))
        patch.undo()
        out["scratch"] = max(scratch)
        yield server, client, out, folder
    finally:
        patch.undo()
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def _training_runs(client, experiment: str) -> list:
    runs = client.search_runs([experiment], max_results=500)
    return [r for r in runs if r.data.tags.get("intertask.stage") in ("intermediate", "finetune")]


def _kept(run) -> tuple[str, str]:
    tags = run.data.tags
    return tags["intertask.task_chain"], tags["intertask.cell.seed"]


EXPECTED = {  # (task chain, seed) of the training runs whose model each choice logs
    "all": {(c, s) for c in CHAINS for s in ("1", "2")},
    "registered": {(c, "1") for c in CHAINS},
    "final": {("pawsx", "1"), ("xnli-pawsx", "1")},
    "none": set(),
}


@pytest.mark.slow
@pytest.mark.parametrize("policy", POLICIES)
def test_each_choice_logs_and_registers_what_it_says_and_reloads_it(studies, tiny_model, policy):
    """Every training stage ran and logged its metrics whatever the choice; exactly the models the
    choice keeps are logged (model_uri tag, MLflow logged model) and registered; every registered
    version loads by models:/name@alias through pyfunc and predicts; every evaluation still ran."""
    server, client, stores, _ = studies
    experiment, _ = stores[policy]
    runs = _training_runs(client, experiment)
    assert len(runs) == 6 and all("best_dev/selection" in r.data.metrics for r in runs)
    logged = {_kept(r) for r in runs if tracking.holds_model(r)}
    assert logged == EXPECTED[policy]
    sources = {m.source_run_id for m in client.search_logged_models(experiment_ids=[experiment])}
    assert sources == {r.info.run_id for r in runs if tracking.holds_model(r)}
    evaluations = [
        r for r in client.search_runs([experiment]) if r.data.tags.get("intertask.stage") == "evaluate"
    ]
    assert len(evaluations) == 4 and all("pawsx/test/de/accuracy" in r.data.metrics for r in evaluations)
    names = {tracking.registered_name(f"store-{policy}", str(tiny_model), c.split("-")): c for c in CHAINS}
    registered = {m.name: m for m in client.search_registered_models() if m.name in names}
    assert {names[n] for n in registered} == {c for c, _ in EXPECTED[policy]}
    mlflow.set_tracking_uri(server)
    for name, model in registered.items():
        versions = client.search_model_versions(f"name='{name}'")
        assert len(versions) == (2 if policy == "all" else 1)  # one per kept seed
        (alias,) = model.aliases
        loaded = mlflow.pyfunc.load_model(f"models:/{name}@{alias}")
        example = pd.DataFrame({"text": ["a short premise"], "text_pair": ["a hypothesis"]})
        assert len(loaded.predict(example)) == 1


@pytest.mark.slow
def test_fewer_models_cost_fewer_bytes(studies):
    """The artifact store of each choice: all > registered > final > none (same runs otherwise); and the
    scratch folder holds only models a job still needs: at most an intermediate and a target model
    (one arm's chain), not the six the study trains."""
    _, _, stores, _ = studies
    assert stores["scratch"] <= 2
    sizes = [stores[p][1] for p in POLICIES]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 4, dict(
        zip(POLICIES, sizes, strict=True)
    )


@pytest.mark.slow
def test_a_stage_whose_model_was_not_logged_is_trained_again_when_a_job_needs_it(studies, tiny_model):
    """Re-running the `registered` study with its evaluations forced: seed 2's models were not logged,
    so its target and intermediate stages train again (deterministically: same best dev score), while
    seed 1's are reused from the registry."""
    server, client, stores, folder = studies
    experiment, _ = stores["registered"]
    before = _training_runs(client, experiment)
    main_against(server, folder / "store-registered.yaml", "--force", "evaluate")
    after = _training_runs(client, experiment)
    new = [r for r in after if r.info.run_id not in {b.info.run_id for b in before}]
    assert sorted(_kept(r) for r in new) == sorted((c, "2") for c in CHAINS)
    for run in new:
        (old,) = [b for b in before if _kept(b) == _kept(run)]
        assert run.data.metrics["best_dev/selection"] == old.data.metrics["best_dev/selection"]


def _kept_jobs(cfg, policy: str) -> set[tuple[str, int]]:
    tracking_config = replace(cfg.tracking, log_models=policy, register_models=policy != "none")
    choice = replace(cfg, tracking=tracking_config)
    jobs = grid.jobs(choice)
    keeps = grid.model_logging(choice, jobs)
    return {(j.kind, j.cell.seed) for j in jobs if keeps.get(j.id)}


def test_model_logging_per_choice_without_training(tiny_model, tmp_path):
    """The plan's choice per training job, zero-shot arm included: under `final` an intermediate model
    that is evaluated as it is (no target) is kept, one that only starts targets is not; the yes/no
    values of earlier versions still read as all / none."""
    zero_shot = load_experiment(
        write_experiment(tmp_path, tiny_model, "zs", SMALL, target=None, grid={"target": [], "seeds": [1, 2]})
    )
    assert _kept_jobs(zero_shot, "final") == _kept_jobs(zero_shot, "registered") == {("intermediate", 1)}
    assert _kept_jobs(zero_shot, "all") == {("intermediate", 1), ("intermediate", 2)}
    assert _kept_jobs(zero_shot, "none") == set()
    transfer = load_experiment(write_experiment(tmp_path, tiny_model, "tr", SMALL))
    assert _kept_jobs(transfer, "final") == {("finetune", 1)}
    assert _kept_jobs(transfer, "registered") == {("finetune", 1), ("intermediate", 1)}
    for old, new in ((True, "all"), (False, "none")):
        tracking_section = {"log_models": old, "register_models": old}
        config = write_experiment(tmp_path, tiny_model, "old", SMALL, tracking=tracking_section)
        assert load_experiment(config).tracking.log_models == new


@pytest.mark.slow
def test_a_model_logged_as_its_changed_weights_loads_whole_and_scores_the_same(
    studies, tiny_model, monkeypatch
):
    """With frozen word embeddings, `log_weights: auto` (the default) logs each model as what changed:
    the embedding matrix is left out (smaller than the same study's whole models); `intertask evaluate`
    on its models:/ URI rebuilds it from the base model and scores exactly what the study's own
    evaluation scored; pyfunc loads and predicts too. Where every weight trained (the other studies),
    auto logs whole models."""
    server, client, stores, folder = studies
    experiment, slim_bytes = stores[SLIM]
    runs = _training_runs(client, experiment)
    kept = [r for r in runs if tracking.holds_model(r)]
    assert {_kept(r) for r in kept} == EXPECTED["registered"]
    whole = [r for r in _training_runs(client, stores["registered"][0]) if tracking.holds_model(r)]
    assert whole and all(r.data.metrics["logged_model/changed_only"] == 0 for r in whole)
    for run in kept:
        assert run.data.metrics["logged_model/changed_only"] == 1
        assert run.data.metrics["logged_model/tensors_omitted"] >= 1  # the word embeddings at least
        assert (
            run.data.metrics["logged_model/bytes_omitted"] > run.data.metrics["logged_model/bytes_kept"] / 2
        )
    assert slim_bytes < stores["registered"][1]
    name = tracking.registered_name(f"store-{SLIM}", str(tiny_model), ["xnli", "pawsx"])
    uri = f"models:/{name}@target"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    (folder / "evaluate").mkdir(exist_ok=True)
    one_stage = {k: v for k, v in SMALL.items() if k != "grid"}  # `evaluate` runs one stage, no grid
    config = write_experiment(folder / "evaluate", tiny_model, f"store-{SLIM}", one_stage)
    assert cli.main(["evaluate", str(config), "--model", uri]) == 0
    evaluations = client.search_runs([experiment], max_results=500)
    (standalone,) = [r for r in evaluations if r.data.tags.get("intertask.model") == uri]
    (in_study,) = [
        r
        for r in evaluations
        if r.data.tags.get("intertask.stage") == "evaluate"
        and r.data.tags.get("intertask.cell.intermediate") == "xnli"
        and r.data.tags.get("intertask.cell.seed") == "1"
    ]
    for key in ("pawsx/test/en/accuracy", "pawsx/test/de/accuracy", "pawsx/test/mean_all/macro_f1"):
        assert standalone.data.metrics[key] == in_study.data.metrics[key]
    mlflow.set_tracking_uri(server)
    loaded = mlflow.pyfunc.load_model(uri)
    assert len(loaded.predict(pd.DataFrame({"text": ["a premise"], "text_pair": ["a hypothesis"]}))) == 1


def test_changed_weights_round_trip_exactly_and_refuse_a_different_base(tiny_model, tmp_path):
    """slim_copy keeps only the tensors that differ from the base (an encoder layer changed, the
    classifier new); loading puts them over the base in memory and gives back every tensor bit for
    bit, to the head model and to the bare encoder, writing nothing; against another base model the
    digest check names base.json instead of building a different model."""
    import torch
    from transformers import AutoModel, BertForSequenceClassification

    from intertask.compute import weights
    from intertask.errors import ModelError

    model = BertForSequenceClassification.from_pretrained(str(tiny_model), num_labels=3)
    with torch.no_grad():
        model.bert.encoder.layer[0].output.dense.weight.add_(0.5)
    model.save_pretrained(tmp_path / "trained")
    sizes = weights.slim_copy(tmp_path / "trained", str(tiny_model), tmp_path / "slim")
    omitted = json.loads((tmp_path / "slim" / weights.BASE_FILE).read_text())["omitted"]
    assert "bert.embeddings.word_embeddings.weight" in omitted
    assert "bert.encoder.layer.0.output.dense.weight" not in omitted
    assert "classifier.weight" not in omitted and sizes["bytes_omitted"] > sizes["bytes_kept"]
    before = sorted(p.name for p in (tmp_path / "slim").iterdir())
    rebuilt = weights.load(BertForSequenceClassification, tmp_path / "slim").state_dict()
    original = model.state_dict()
    assert rebuilt.keys() == original.keys()
    assert all(torch.equal(rebuilt[k], original[k]) for k in original)
    encoder = weights.load(AutoModel, tmp_path / "slim").state_dict()
    assert encoder.keys() == model.bert.state_dict().keys()
    assert all(torch.equal(encoder[k], original[f"bert.{k}"]) for k in encoder)
    assert sorted(p.name for p in (tmp_path / "slim").iterdir()) == before  # nothing written
    other = tmp_path / "other-base"
    from transformers import BertModel

    changed_base = BertModel.from_pretrained(str(tiny_model))
    with torch.no_grad():
        changed_base.embeddings.word_embeddings.weight.mul_(2)
    changed_base.save_pretrained(other)
    saved = json.loads((tmp_path / "slim" / weights.BASE_FILE).read_text())
    (tmp_path / "slim" / weights.BASE_FILE).write_text(json.dumps(saved | {"base": str(other)}))
    for cls in (BertForSequenceClassification, AutoModel):
        with pytest.raises(ModelError, match="base.json.*not the one found"):
            weights.load(cls, tmp_path / "slim")
