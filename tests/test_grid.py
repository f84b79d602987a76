"""A 2 x 2 x 2 grid (intermediate xnli / none, targets pawsx / rte, seeds 1 / 2) against a real MLflow
server: killed (SIGKILL) after its first stages, restarted, and checked for reuse -- no stage runs
twice, the rest ran, the report holds every cell with gains and intervals."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from intertask import cli
from intertask.config import resolve
from intertask.config.validate import load_experiment
from intertask.study import collect, grid, identity

from .conftest import REPO, Relay, write_experiment

STAGES = ("intermediate", "finetune", "evaluate")


def _config(folder, tiny_model, name="grid-e2e", **extra):
    return write_experiment(
        folder,
        tiny_model,
        name,
        {
            "seed": 3,
            "training": {"epochs": 1},
            "intermediate": {"max_examples": {"train": 96, "dev": 32}},
            "target": {"max_examples": {"train": 96, "dev": 32}},
            "evaluation": {"languages": ["en", "de"], "max_examples": 48},
            "grid": {
                "intermediate": ["xnli", "none"],
                "target": ["pawsx", "rte"],
                "seeds": [1, 2],
                "model_groups": {"tiny": [str(tiny_model)]},
            },
            "report": {"bootstrap": 500, "divergence_examples": 40},
        },
        **extra,
    )


def _stage_runs(client, name):
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    return [r for r in runs if r.data.tags.get("intertask.stage") in STAGES]


def test_grid_expands_into_shared_intermediate_stages(tiny_model, tmp_path, shared_data):
    cfg = load_experiment(_config(tmp_path, tiny_model))
    jobs = grid.jobs(cfg)
    kinds = [j.kind for j in jobs]
    assert kinds.count("intermediate") == 2 and kinds.count("finetune") == 8 and kinds.count("evaluate") == 8
    transfer = [j for j in jobs if j.kind == "finetune" and j.cell.intermediate]
    assert {j.deps[0] for j in transfer} == {
        f"intermediate|{tiny_model}|xnli|1",
        f"intermediate|{tiny_model}|xnli|2",
    }
    rte = grid.cell_config(cfg, grid.Cell(str(tiny_model), (), "rte", 1))
    assert rte.target.task == "rte" and rte.intermediate is None
    assert [(e.task, e.languages) for e in rte.evaluation.tasks] == [
        ("rte", ("en",))
    ]  # [en, de] does not fit rte
    assert rte.split_seed == 3  # splits follow the experiment seed, not the cell's


@pytest.mark.slow
def test_killed_grid_restarts_and_reuses_what_finished(tiny_model, tmp_path, mlflow_server, monkeypatch):
    # every model logged: a finished stage is then reusable whatever was killed after it (under the
    # default `registered`, a finished stage of seed 2 whose model died with the process is trained
    # again when a job still needs it: tests/test_model_storage.py)
    config = _config(tmp_path, tiny_model, tracking={"log_models": "all"}, grid={"seeds": [1]})
    client = MlflowClient(mlflow_server)
    # the pipeline reaches the server through a relay: cutting it is the barrier after which nothing
    # the pipeline does reaches the store (its requests wait out the outage), so the kill lands on a
    # known state however fast the stages run
    relay = Relay(int(mlflow_server.rsplit(":", 1)[1]))
    env = {**os.environ, "MLFLOW_TRACKING_URI": relay.uri}
    proc = subprocess.Popen(
        [sys.executable, "-m", "intertask", "main", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        finished = [
            r
            for r in _stage_runs(client, "grid-e2e")
            if r.info.status == "FINISHED" and r.data.tags["intertask.stage"] == "finetune"
        ]
        if len(finished) >= 3 or proc.poll() is not None:
            break
        time.sleep(0.3)
    relay.cut()
    assert proc.poll() is None, "the pipeline ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    relay.restore()  # the server's address answers again (what a restarted main finds on its runs)
    before = {r.info.run_id: r.info.status for r in _stage_runs(client, "grid-e2e")}
    finished_before = {run_id for run_id, status in before.items() if status == "FINISHED"}
    running_before = {run_id for run_id, status in before.items() if status == "RUNNING"}
    assert 3 <= len(finished_before) < 9

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    assert cli.main(["main", str(config)]) == 0
    after = _stage_runs(client, "grid-e2e")
    finished = [r for r in after if r.info.status == "FINISHED"]
    assert len(finished) == 9  # 1 intermediate + 4 finetune + 4 evaluate, each exactly once
    assert len({r.data.tags["intertask.stage_key"] for r in finished}) == 9
    assert finished_before <= {r.info.run_id for r in finished}  # what had finished was reused, not redone
    assert all(client.get_run(run_id).info.status == "KILLED" for run_id in running_before)

    experiment = client.get_experiment_by_name("grid-e2e").experiment_id
    everything = client.search_runs([experiment], max_results=500)
    (parent,) = [
        r for r in everything if r.data.tags.get("intertask.stage") == "main"
    ]  # continued, not redone
    arms = [r for r in everything if r.data.tags.get("intertask.stage") == "arm"]
    assert (
        parent.info.status == "FINISHED" and len(arms) == 2 and all(a.info.status == "FINISHED" for a in arms)
    )
    assert all(r.data.tags["mlflow.parentRunId"] in {a.info.run_id for a in arms} for r in finished)
    _check_report(client, parent, seeds=1)

    count = len(everything)
    logged = client.download_artifacts(parent.info.run_id, "report/heatmap.png", str(tmp_path))

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the report of unchanged inputs was built again")

    monkeypatch.setattr(collect, "from_outcomes", no_rebuild)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["main", str(config)]) == 0  # nothing left to do: every stage is reused
    assert len(client.search_runs([experiment], max_results=500)) == count
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    with open(logged, "rb") as f:  # the local copy is the logged report, read back
        assert (tmp_path / "reports" / "grid-e2e" / "heatmap.png").read_bytes() == f.read()

    # a fresh process re-running the finished study reads data and the store only: no model libraries
    heavy = ("torch", "transformers", "peft", "matplotlib")
    probe = (
        "import sys; from intertask import cli; code = cli.main(sys.argv[1:]); "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules)); sys.exit(code)"
    )
    rerun = subprocess.run(
        [sys.executable, "-c", probe, "main", str(config)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert rerun.stdout.strip().splitlines()[-1] == "[]", rerun.stdout[-2000:]
    assert len(client.search_runs([experiment], max_results=500)) == count

    # `mlflow run` makes a new parent run each time: it gets the same report, copied, with its metrics
    launched = client.create_run(experiment, run_name="launched by mlflow run").info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", launched)
    assert cli.main(["main", str(config)]) == 0
    copy = client.get_run(launched)
    assert copy.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(launched, "report")} >= {
        "report/report.html",
        "report/heatmap.png",
        "report/gains.csv",
    }
    gain_metrics = {k: v for k, v in copy.data.metrics.items() if k.startswith("gain/")}
    assert gain_metrics and gain_metrics == {
        k: v for k, v in client.get_run(parent.info.run_id).data.metrics.items() if k.startswith("gain/")
    }


def _check_report(client, parent, seeds: int = 2):
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {
        "report/report.html",
        "report/heatmap.png",
        "report/gains.csv",
        "report/scores.csv",
        "report/groups.csv",
        "report/divergence.csv",
    } <= artifacts
    text = client.download_artifacts(parent.info.run_id, "report/gains.csv")
    gains = pd.read_csv(text)
    assert set(gains.target) == {"pawsx", "rte"} and set(gains.intermediate) == {"xnli"}
    accuracy = gains[gains.metric == "accuracy"]
    assert set(accuracy[accuracy.target == "pawsx"].language) == {"en", "de", "mean_all", "mean_non_en"}
    assert set(accuracy[accuracy.target == "rte"].language) == {"en", "mean_all"}
    assert (
        (accuracy.n_seeds == seeds).all() and accuracy.ci_low.notna().all() and accuracy.ci_high.notna().all()
    )
    assert (accuracy.ci_low <= accuracy.gain + 1e-12).all() and (
        accuracy.gain <= accuracy.ci_high + 1e-12
    ).all()
    assert set(accuracy.flag) <= {"positive", "negative", "no effect", "inconclusive"}
    assert accuracy.q.isna().all() and set(accuracy.family) == {"none"}  # < 3 seeds: in no q-value family
    assert accuracy.mde.notna().all()
    assert set(accuracy.seed_component) == {f"unestimated ({seeds} seed(s))"}
    row = accuracy[(accuracy.target == "pawsx") & (accuracy.language == "en")].iloc[0]
    assert row.gain == pytest.approx(row.transfer - row.baseline)
    groups = pd.read_csv(client.download_artifacts(parent.info.run_id, "report/groups.csv"))
    assert set(groups.model_group) == {"tiny"} and set(groups.family) == {"nli"}
    with open(client.download_artifacts(parent.info.run_id, "report/report.html"), encoding="utf-8") as page:
        html = page.read()
    assert "data:image/png;base64," in html and "Headline gains" in html
    metric = "gain/tiny-bert0/xnli/pawsx/pawsx/test/en/accuracy"
    assert parent.data.metrics[metric] == pytest.approx(row.gain)


def test_report_entry_point_rebuilds_the_report(tiny_model, tmp_path, mlflow_server, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.chdir(tmp_path)
    config = _config(
        tmp_path,
        tiny_model,
        name="grid-report",
        grid={"intermediate": ["xnli", "none"], "target": ["pawsx"], "seeds": [1]},
    )
    assert cli.main(["main", str(config), "report.divergence=false"]) == 0
    capsys.readouterr()
    assert cli.main(["report", str(config), "report.divergence=false", "--null-check"]) == 0
    out = capsys.readouterr().out
    assert "headline gains" in out and "fewer than 3 seeds" in out  # one seed: said
    assert "A/A check: no baseline with 6 or more seeds" in out  # asked for, and why it could not run
    assert (tmp_path / "reports" / "grid-report" / "report.html").is_file()
    assert (tmp_path / "reports" / "grid-report" / "gains.csv").is_file()
    # a second study that reuses every stage: its report re-read from its parent has them all
    assert cli.main(["main", str(config), "report.divergence=false"]) == 0
    client = MlflowClient()
    experiment = client.get_experiment_by_name("grid-report").experiment_id
    parent = client.search_runs(
        [experiment], "tags.`intertask.stage` = 'main'", order_by=["start_time DESC"]
    )[0]
    capsys.readouterr()
    out_dir = tmp_path / "again"
    assert (
        cli.main(
            [
                "report",
                str(config),
                "report.divergence=false",
                "--parent",
                parent.info.run_id,
                "--output",
                str(out_dir),
            ]
        )
        == 0
    )
    assert set(pd.read_csv(out_dir / "gains.csv").intermediate) == {"xnli"}


def test_reproduction_configs_expand_into_the_papers_grids(shared_data):
    """pipelines/phang2020_xtreme.yaml and mohapatra2022_domain.yaml: the studies' shapes, hub sources
    for the tasks that have no local copy, and each target trained in a language it ships."""
    phang = load_experiment(REPO / "pipelines" / "phang2020_xtreme.yaml")
    jobs = grid.jobs(phang)
    kinds = [j.kind for j in jobs]
    # 9 intermediate choices (8 tasks + the mix) x 3 seeds; 10 choices (with none) x 6 targets x 3 seeds
    assert kinds.count("intermediate") == 27 and kinds.count("finetune") == 180 and kinds.count("probe") == 1
    hub = ("mnli", "anli", "qqp", "squad", "squad_v2", "hellaswag", "xquad", "panx")
    assert all(phang.origin(t) == "hub" for t in hub)
    # X-STILTs target settings per task; effective batch 32 (4 x 8), 16 for QA (4 x 4)
    for target, epochs, accumulate in (("xnli", 2, 8), ("pawsx", 5, 8), ("udpos", 10, 8), ("tydiqa", 2, 4)):
        cell = grid.cell_config(phang, grid.Cell("xlm-roberta-large", ("mnli",), target, 1))
        training = cell.target.training
        assert (training.epochs, training.batch_size, training.gradient_accumulation_steps) == (
            epochs,
            4,
            accumulate,
        )
    assert phang.origin("udpos") == phang.origin("tydiqa") == "local"
    squad = grid.cell_config(phang, grid.Cell("xlm-roberta-large", ("squad",), "squad", 1))
    assert [e.task for e in squad.evaluation.tasks] == ["xquad", "mlqa", "tydiqa", "tatoeba"]
    assert squad.intermediate.training.learning_rate == pytest.approx(1e-5)

    mohapatra = load_experiment(REPO / "pipelines" / "mohapatra2022_domain.yaml")
    kinds = [j.kind for j in grid.jobs(mohapatra)]
    assert kinds.count("intermediate") == 9 and kinds.count("finetune") == 90  # 3 models x 2 x 5 x 3
    assert mohapatra.intermediate.training.epochs == 100 and mohapatra.target.training.epochs == 10
    scored_on = {
        "allocine": ["allocine", "imdb", "movie_reviews"],
        "muchocine": ["muchocine"],
        "pawsx": ["pawsx"],
    }
    for target, language in (("allocine", "fr"), ("muchocine", "es"), ("pawsx", "en")):
        cell = grid.cell_config(mohapatra, grid.Cell("roberta-base", ("imdb",), target, 1))
        assert cell.target.language == language and cell.intermediate.language == "en"
        assert [e.task for e in cell.evaluation.tasks] == scored_on[target]  # out-of-domain: same head
        assert cell.evaluation.tasks[0].languages == (language,)
    fractions = mohapatra.data.split_fractions
    assert fractions.train + fractions.dev == pytest.approx(0.7) and fractions.test == pytest.approx(0.3)
    assert mohapatra.data.resplit  # 70/30 for tasks that ship their own splits too


@pytest.mark.parametrize("name, seeds", [("offline_phang2020", 5), ("offline_mohapatra2022", 2)])
def test_offline_reproductions_run_here(name, seeds, shared_data):
    """The offline variants read only ../shared/data and the offline model, with seeds for the
    report's intervals and a baseline arm."""
    cfg = load_experiment(REPO / "pipelines" / f"{name}.yaml")
    cells = grid.cells(cfg)
    assert {c.model for c in cells} == {"e5-small"} and {c.seed for c in cells} == set(range(1, seeds + 1))
    assert () in {c.intermediate for c in cells}  # the baseline arm
    tasks = {t for c in cells for t in (*c.intermediate, c.target)}
    assert all(cfg.origin(t) == "local" and resolve.catalog(cfg).spec(t).files for t in tasks)


@pytest.mark.slow
def test_offline_mohapatra_grid_runs_end_to_end_at_toy_size(tiny_model, tmp_path, monkeypatch, shared_data):
    """The offline reproduction itself, shrunk by overrides only (tiny model, one seed, a few dozen
    examples): every cell trains and is scored, and the report compares the arms."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    overrides = [
        f"model.name_or_path={tiny_model}",
        "model.max_length=48",
        "model.freeze_word_embeddings=false",
        "grid.seeds=[1]",
        "grid.model_groups={}",
        "intermediate.max_examples.train=48",
        "intermediate.max_examples.dev=16",
        "intermediate.training.epochs=1",
        "target.max_examples.train=48",
        "target.max_examples.dev=16",
        "target.training.epochs=1",
        "evaluation.max_examples=32",
        "report.bootstrap=200",
        "report.divergence_examples=20",
        "training.precision=fp32",
    ]
    assert cli.main(["main", str(REPO / "pipelines" / "offline_mohapatra2022.yaml"), *overrides]) == 0
    folder = tmp_path / "reports" / "offline-mohapatra2022"
    gains = pd.read_csv(folder / "gains.csv")
    assert set(gains.intermediate) == {"movie_reviews", "sst2"}
    assert set(gains.target) == {"sms_spam", "goemotions", "pawsx"}
    divergence = pd.read_csv(folder / "divergence.csv")
    assert len(divergence) == 6 and divergence.js_divergence.between(0, 1).all()
    assert (folder / "heatmap.png").stat().st_size > 1000


def test_keys_hold_what_shapes_a_stage_and_nothing_else(tiny_model, tmp_path, shared_data):
    """A training job's key changes with what it trains and not with how the study runs or logs
    (`tracking.log_models`, the executor) nor with evaluation or report settings; a checkpoint's resume
    key neither (changing the evaluation languages after a crash used to throw the training checkpoint
    away)."""
    from dataclasses import replace

    from intertask.config import EvaluationConfig, ReportConfig, TrackingConfig

    cfg = grid.cell_config(
        load_experiment(_config(tmp_path, tiny_model)), grid.Cell(str(tiny_model), (), "pawsx", 1)
    )
    (job,) = [j for j in grid.jobs(cfg) if j.kind == "finetune" and not j.cell.intermediate][:1]
    key = grid.job_key(job, cfg, ["d"], [])
    quiet = replace(cfg, tracking=TrackingConfig(log_models=False, register_models=False))
    other_eval = replace(cfg, evaluation=EvaluationConfig(languages=("fr",)), report=ReportConfig(fdr=0.1))
    ray = replace(cfg, executor=replace(cfg.executor, kind="ray", cpus_per_stage=2))
    assert grid.job_key(job, quiet, ["d"], []) == key == grid.job_key(job, ray, ["d"], [])
    assert grid.job_key(job, other_eval, ["d"], []) == key
    assert grid.job_key(job, replace(cfg, seed=cfg.seed + 1), ["d"], []) != key
    inputs = identity.training_inputs(cfg, "finetune")
    assert (
        inputs
        == identity.training_inputs(other_eval, "finetune")
        == identity.training_inputs(quiet, "finetune")
    )
    assert identity.training_inputs(replace(cfg, seed=cfg.seed + 1), "finetune") != inputs


def test_a_finished_baseline_only_study_re_runs_with_exit_0(
    tiny_model, tmp_path, local_store, shared_data, capsys
):
    """A study of baselines alone has scores and no gains; run again, every stage is reused and the
    command prints its scores and exits 0 (it ended in AttributeError reading the empty gains table)."""
    config = write_experiment(
        tmp_path,
        tiny_model,
        "baselines-only",
        study=False,
        grid={"intermediate": ["none"], "target": ["pawsx"], "seeds": [1]},
        target={"task": "pawsx", "max_examples": {"train": 32, "dev": 16}},
        training={"epochs": 1},
        evaluation={"languages": ["en", "de"], "max_examples": 16},
    )
    assert cli.main(["main", str(config)]) == 0
    capsys.readouterr()
    assert cli.main(["main", str(config)]) == 0
    out = capsys.readouterr().out
    assert "2 stages (2 reused from finished runs)" in out and "task/pawsx" in out
