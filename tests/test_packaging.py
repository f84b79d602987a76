"""The repository's promises: dependency lists agree, the MLproject entry points exist, the README's
two commands are what CI runs, run outputs stay out of git."""

import os
import re
import subprocess
import tomllib

import pytest
import yaml

from intertask.cli import ENTRY_POINTS

from .conftest import REPO


def _normalise(requirement: str) -> str:
    return re.sub(r"\s+", "", requirement).lower().replace("_", "-")


def test_conda_env_and_pyproject_dependencies_agree():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    conda = yaml.safe_load((REPO / "conda.yaml").read_text())["dependencies"]
    pip = next(d["pip"] for d in conda if isinstance(d, dict))
    assert sorted(map(_normalise, project)) == sorted(map(_normalise, pip))
    assert any(str(d).startswith("python=3.11") for d in conda)
    assert "torch==2.13.0" in project  # an unpinned torch pulls a CUDA build on CPU machines


def test_mlproject_declares_every_entry_point_and_no_hyperparameters():
    project = yaml.safe_load((REPO / "MLproject").read_text())
    assert project["conda_env"] == "conda.yaml"
    points = project["entry_points"]
    assert set(ENTRY_POINTS) <= set(points)
    for name, point in points.items():
        assert set(point["parameters"]) <= {
            "config",
            "overrides",
            "init",
            "model",
            "parent",
            "study_name",
            "storage",
        }, name
        assert point["command"].startswith(f"python -m intertask {name} {{config}}")


def test_every_mlproject_command_is_parsed_by_the_cli_and_every_cli_command_has_an_entry_point():
    """Both ways: each entry point's command, its parameters filled as `mlflow run` fills them
    (shlex-quoted, empty ones included), is accepted by the CLI's own parser as that subcommand; and
    every CLI subcommand that runs or reads a study (all but `validate`, a local check) is an entry
    point. Broken on purpose to check: a misspelt flag in MLproject (`--parnt`) fails the first part."""
    import shlex

    from intertask import cli

    points = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]
    samples = {
        "config": "pipelines/demo.yaml",
        "overrides": "training.epochs=1 seed=3",
        "model": "models:/m@a",
    }
    for name, point in points.items():
        for empty in (False, True):  # the optional values given, then left empty as their defaults
            values = {
                p: ("" if empty and spec.get("default") == "" else samples.get(p, f"{p}-value"))
                for p, spec in point["parameters"].items()
            }
            line = point["command"].format(**{p: shlex.quote(v) for p, v in values.items()})
            words = shlex.split(line)
            assert words[:3] == ["python", "-m", "intertask"], line
            parsed = cli.parse(words[3:])
            assert parsed.command == name and parsed.config == values["config"], line
            given = cli.split_overrides(parsed.overrides)
            assert given == (shlex.split(values["overrides"]) if values["overrides"] else []), line
    assert set(cli.COMMANDS) - {"validate"} == set(points)
    assert set(cli.ENTRY_POINTS) <= set(points)


def _documented_commands() -> list[tuple[str, str]]:
    """(file, command line) for every `intertask ...` in README.md and docs/*.md: in backticks or on a
    line of a code block, a trailing # comment left out."""
    found = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = path.read_text()
        lines = re.findall(r"`(intertask [^`]+)`", text)
        for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
            lines += [line.strip() for line in block.splitlines() if line.strip().startswith("intertask ")]
        found += [(path.name, line.split("  #")[0].split(" # ")[0].strip()) for line in lines]
    return found


def test_every_documented_command_line_is_one_the_cli_accepts():
    """README's and docs' `intertask ...` lines: the subcommand exists, every --flag is one of its
    options, and a line that gives a config is parsed whole by the CLI's own parser (placeholders such
    as CONFIG or <run> stand for values; [optional] parts are read as given)."""
    import argparse
    import shlex

    from intertask import cli

    documented = _documented_commands()
    assert len(documented) > 30
    subparsers = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    for where, line in documented:
        words = shlex.split(line.replace("[", "").replace("]", ""))[1:]
        assert words and words[0] in subparsers.choices, (where, line)
        options = {o for a in subparsers.choices[words[0]]._actions for o in a.option_strings}
        nested = [
            a for a in subparsers.choices[words[0]]._actions if isinstance(a, argparse._SubParsersAction)
        ]
        flags = [w.split("=")[0] for w in words[1:] if w.startswith("--")]
        assert set(flags) <= options, (where, line)
        if nested or (len(words) > 1 and not words[1].startswith("-")) or words[0] == "tasks":
            cli.parse(words)  # exits (SystemExit) on anything the CLI refuses


def test_the_counted_figures_in_readme_and_docs_match_the_code():
    """A number the docs state about the code is checked against it: the bad-input cases."""
    from . import test_bad_input

    text = " ".join(path.read_text() for path in [REPO / "README.md", *(REPO / "docs").glob("*.md")])
    stated = re.findall(r"the (\d+) cases of `CASES`", text)
    assert stated and {int(n) for n in stated} == {len(test_bad_input.CASES)}, stated


def test_readme_quick_start_has_two_commands_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```(?:bash|sh)?\n(.*?)```", section, re.S)
    lines = [line.strip() for block in commands for line in block.strip().splitlines() if line.strip()]
    assert lines == ["make demo", "make test"], lines
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci


def test_run_outputs_are_ignored_by_git(tmp_path):
    for path in (
        "mlflow.db",
        "mlruns/0/meta.yaml",
        "mlartifacts/x",
        ".venv/bin/python",
        "outputs/a.csv",
        "optuna.db",
        "optuna.db.lock",
        "tuning/s/best_params.yaml",
        "reports/x/report.html",
    ):
        result = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", path])
        assert result.returncode == 0, f"{path} is not ignored"


@pytest.mark.slow
def test_benchmark_scripts_still_import_and_parse_arguments():
    import sys

    for script in sorted((REPO / "benchmarks").glob("*.py")):
        result = subprocess.run(
            [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, (script.name, result.stderr[-2000:])


def test_the_suite_stops_with_a_reason_when_the_real_data_is_missing(tmp_path):
    """Without ../shared/data (or $INTERTASK_DATA) the run fails at once and says where it looked,
    instead of skipping the tests that need the data."""
    import os
    import sys

    env = {**os.environ, "INTERTASK_DATA": str(tmp_path / "nowhere")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_config.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stdout[-2000:]
    assert f"the real data the tests read is missing: {tmp_path / 'nowhere'}/xtreme/pawsx" in done.stdout


def test_mlproject_parameters_with_spaces_stay_one_argument():
    """MLflow shell-quotes every parameter itself: the commands must not quote them again (the tune
    entry point's '{study_name}' split a value with a space into two arguments)."""
    import shlex

    from mlflow.projects import _project_spec

    project = _project_spec.load_project(str(REPO))
    for name in project._entry_points:
        entry = project.get_entry_point(name)
        values = {
            p: "a b" for p, spec in entry.parameters.items() if spec.type == "string" and p != "overrides"
        }
        argv = shlex.split(entry.compute_command(values, "/tmp"))
        for flag, value in zip(argv, argv[1:], strict=False):
            if flag.startswith("--"):
                assert value == "a b", (name, argv)


def test_git_state_is_read_once_per_process():
    from intertask import tracking

    tracking.git_state.cache_clear()
    first = tracking.git_state()
    assert tracking.git_state() is first and tracking.git_state.cache_info().misses == 1
    assert first["commit"] == "unknown" or len(first["commit"]) == 40


def test_importing_intertask_changes_no_logging_warnings_or_environment():
    """Nothing of ours runs at import: Optuna's and transformers' verbosity, Optuna's warning filter and
    the environment are set by the entry points and the model loaders only (other libraries' own
    import-time filters are theirs)."""
    import subprocess
    import sys

    code = (
        "import os, warnings, optuna\n"
        "from transformers.utils import logging as hf\n"
        "def state():\n"
        "    ours = [f for f in warnings.filters if f[2] is optuna.exceptions.ExperimentalWarning]\n"
        "    env = {k: v for k, v in os.environ.items() if k.startswith(('TOKENIZERS', 'MLFLOW_TRACKING', 'INTERTASK'))}\n"
        "    return optuna.logging.get_verbosity(), hf.get_verbosity(), ours, env\n"
        "before = state()\n"
        "import intertask.cli, intertask.tune, intertask.stages, intertask.report, intertask.study.pipeline\n"
        "print(before == state(), before, state())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENIZERS", "INTERTASK"))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.startswith("True"), out.stdout + out.stderr


def test_a_workspace_a_plan_and_an_in_process_job_change_no_global_state_nor_reread_data(
    tiny_config, local_store, monkeypatch
):
    """Only entry points point MLflow at a store (tracking.use) or set the environment: creating a
    Workspace, planning a study and running a job in-process leave both as they were (before, the
    Workspace re-pointed MLflow at its config's store and every job rewrote MLFLOW_TRACKING_URI). The
    in-process job reads no data planning loaded already (before, every job read its sets again)."""
    import mlflow

    from intertask import tracking
    from intertask.config.validate import load_experiment
    from intertask.study import planning, workspace
    from intertask.study.executors import JobSpec, executor_for

    reads = []
    real = workspace.load_examples
    monkeypatch.setattr(
        workspace, "load_examples", lambda spec, *a, **k: reads.append(spec.name) or real(spec, *a, **k)
    )
    config = tiny_config(
        probes=[{"task": "tatoeba", "languages": ["fr"], "max_examples": 20, "after": ["base"]}]
    )
    elsewhere = f"sqlite:///{local_store / 'elsewhere.db'}"
    cfg = load_experiment(config, [f"tracking.uri={elsewhere}"])

    def state():
        return mlflow.get_tracking_uri(), dict(os.environ)

    before = state()
    ws = workspace.Workspace(cfg, str(config))
    study = planning.plan(ws)
    assert state() == before and "tatoeba" in reads
    tracking.use(cfg)  # the entry point
    before, planned = state(), len(reads)
    (probe,) = [j for j in study.jobs if j.kind == "probe"]
    spec = JobSpec(
        probe, study.configs[probe.id], str(config), elsewhere, ws.experiment(), "", study.keys[probe.id]
    )
    outcomes = executor_for(cfg, ws.workdir, ws.loaded).run([spec], {})
    assert not outcomes[probe.id].table.empty
    assert state() == before
    assert len(reads) == planned, reads[planned:]


def test_a_missing_component_fails_under_ci_and_skips_elsewhere(monkeypatch):
    from .conftest import missing_component

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true and no Chromium"):
        missing_component("no Chromium")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no Chromium"):
        missing_component("no Chromium")
    assert "export CI=true" in (REPO / ".ci" / "run").read_text()


def test_a_fast_run_starts_no_server_and_no_browser(tmp_path):
    """`make test-fast` (-m "not slow"): a test taking a server fixture is marked slow (deselected), and
    one that starts a server itself without the mark fails, saying so (a planted suite, run by pytest)."""
    import shutil
    import sys
    from pathlib import Path

    tests = tmp_path / "tests"
    tests.mkdir()
    shutil.copy(Path(__file__).with_name("conftest.py"), tests / "conftest.py")
    (tests / "__init__.py").write_text("")
    (tests / "test_planted.py").write_text(
        "from .conftest import _free_port, start_mlflow_server\n"
        "def test_takes_the_server(mlflow_server):\n    pass\n"
        "def test_starts_one(tmp_path):\n    start_mlflow_server(tmp_path, _free_port())\n"
        "def test_plain():\n    pass\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "1 failed, 1 passed, 1 deselected" in out.stdout, out.stdout[-3000:]
    assert "an MLflow server started in a run without slow tests" in out.stdout


def test_make_test_keeps_a_module_on_one_worker(tmp_path):
    """`make test`'s pytest options, read from the Makefile, run a planted suite of two modules of four
    tests each: every module's tests on one worker (its module fixtures built once). Seen broken: with
    pytest 9.2, `--dist loadgroup` spread one module's tests over both workers."""
    import re
    import sys
    from pathlib import Path

    makefile = (Path(__file__).parents[1] / "Makefile").read_text()
    options = re.search(r"^test: setup\n\t.*?-m pytest (.*)$", makefile, re.M).group(1).split()
    options = [o for o in options if o != "-q"]  # (-v below shows each test's worker)
    for name in ("a", "b"):
        (tmp_path / f"test_{name}.py").write_text(
            "import os, time, pytest\n"
            "@pytest.mark.parametrize('i', range(4))\n"
            "def test_x(i):\n"
            "    time.sleep(0.2)\n"
            "    print('WORKER', os.environ['PYTEST_XDIST_WORKER'])\n"
        )
    out = subprocess.run(
        [sys.executable, "-m", "pytest", *options, "-v", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    placed = re.findall(r"\[(gw\d)\].*? PASSED .*?test_(\w)\.py", out.stdout)
    assert len(placed) == 8, out.stdout[-3000:]
    assert all(len({w for w, m in placed if m == name}) == 1 for name in "ab"), placed
