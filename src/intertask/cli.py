"""Command line: one subcommand per MLproject entry point. Parse, load the config, call a stage, report.

intertask main pipelines/demo.yaml grid.seeds=[1,2,3,4,5] target.max_examples.train=100
intertask main pipelines/offline_mohapatra2022.yaml --force finetune
intertask finetune pipelines/demo.yaml grid=null --init models:/demo.e5-small.ud@intermediate
intertask evaluate pipelines/demo.yaml grid=null --model models:/demo.e5-small.ud-udpos@target
intertask report pipelines/demo.yaml --parent <run id> --null-check
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
from pathlib import Path

from intertask.errors import ClusterError, InputError, Problems, Terminated, redact
from intertask.names import UnknownName
from intertask.printing import print_evaluation, print_headline, print_main, print_tuning, report_folder

ENTRY_POINTS = ("main", "intermediate", "finetune", "evaluate", "report", "tune")
FORCE_CHOICES = ("all", "probe", "intermediate", "finetune", "evaluate")


def split_overrides(items: list[str]) -> list[str]:
    """`mlflow run -P overrides="a=1 b=2"` arrives as one argument (an empty one as ''): it is split like a
    shell line when every part is a key=value; `evaluation.languages=[de, fr]` stays whole."""
    out: list[str] = []
    for item in items:
        if not item.strip():
            continue
        try:
            parts = shlex.split(item)
        except ValueError:
            parts = [item]
        out.extend(parts if len(parts) > 1 and all("=" in p for p in parts) else [item])
    return out


COMMANDS = {
    "main": "the whole study (a grid): every stage, reused when already done, then the report",
    "intermediate": "train the intermediate task(s) and register the model (alias 'intermediate')",
    "finetune": "train the target task from the base model or a registered model (alias 'target')",
    "evaluate": "zero-shot evaluation of a model over all configured tasks and languages in one run",
    "report": "the transfer report of a finished study (a parent run, or the whole experiment)",
    "tune": "an Optuna study over one stage's training (tuning: section); start it in N processes to share it",
    "validate": "check a config (and its data files) and print it resolved",
    "predict": "transferability estimates for every intermediate choice x target of the grid, before training",
}
_INIT = (
    "--init",
    {
        "default": "",
        "help": "start from models:/name@alias, models:/<model id>, runs:/ID/<model name> or a run id",
    },
)
OPTIONS: dict[str, list[tuple[str, dict]]] = {  # each command's options beyond config and overrides
    "main": [
        (
            "--force",
            {
                "action": "append",
                "default": [],
                "choices": FORCE_CHOICES,
                "help": "re-run these stages even when a finished run matches (repeatable; 'all')",
            },
        )
    ],
    "tune": [
        ("--study-name", {"default": "", "help": "default: tuning.study_name, else <name>-<stage>"}),
        (
            "--storage",
            {
                "default": "",
                "help": "Optuna RDB URL (default: $INTERTASK_TUNING_STORAGE, else tuning.storage, else "
                "sqlite optuna.db); a PostgreSQL password is best in $PGPASSWORD or ~/.pgpass",
            },
        ),
        _INIT,
    ],
    "finetune": [_INIT],
    "evaluate": [
        (
            "--model",
            {
                "default": "",
                "help": "models:/name@alias, models:/name/N, models:/<model id>, runs:/ID/<model name>, run id, "
                "or 'base' (the untrained model)",
            },
        )
    ],
    "validate": [
        (
            "--hub",
            {
                "action": "store_true",
                "help": "also open every Hugging Face hub source and model the config reads (needs internet)",
            },
        )
    ],
    "report": [
        (
            "--parent",
            {"default": "", "help": "the study's parent run (default: every study in the experiment)"},
        ),
        ("--output", {"default": "", "help": "folder for the files (default: reports/<experiment>)"}),
        (
            "--null-check",
            {
                "action": "store_true",
                "help": "also the A/A check: each baseline's seeds (>= 6) split into two pseudo-arms "
                "(the same as report.null_check=true)",
            },
        ),
    ],
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="intertask", description="intermediate-task transfer experiments")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("config", help="experiment YAML, e.g. pipelines/demo.yaml")
        p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. training.epochs=1")
        for flag, options in OPTIONS.get(name, ()):
            p.add_argument(flag, **options)
    model = sub.add_parser("model", help="offline pretrained models")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    prepare = model_sub.add_parser("prepare", help="build an offline model into the cache")
    prepare.add_argument("name")
    prepare.add_argument("--force", action="store_true", help="rebuild even if prepared")
    model_sub.add_parser("list", help="offline models and whether they are prepared")
    sub.add_parser("tasks", help="list the built-in tasks")
    return parser


def _load(args):
    from intertask.config.validate import load_experiment

    overrides = split_overrides(args.overrides)
    if getattr(args, "init", ""):
        overrides.append(f"target.init={args.init}")
    if getattr(args, "model", ""):
        overrides.append(f"evaluation.model={args.model}")
    if getattr(args, "null_check", False):
        overrides.append("report.null_check=true")
    return load_experiment(args.config, overrides)


def _check_entry(command: str, config_file: str, cfg) -> None:
    """What an entry point needs beyond a valid config, reported like config problems."""
    problems = Problems()
    needs = {"intermediate": "intermediate", "finetune": "target"}.get(command)
    if needs and getattr(cfg, needs) is None:
        problems.add(
            config_file, needs, f"the {command} entry point needs this section", None, f"a `{needs}:` section"
        )
    if command == "main" and cfg.target is not None and cfg.target.init:
        problems.add(
            config_file,
            "target.init",
            "main chooses the start of each arm itself",
            cfg.target.init,
            "unset (use the finetune entry point to start from a model)",
        )
    if command == "tune" and cfg.tuning is None:
        problems.add(
            config_file, "tuning", "the tune entry point needs this section", None, "a `tuning:` section"
        )
    if command == "evaluate" and not cfg.evaluation.model:
        problems.add(
            config_file,
            "evaluation.model",
            "evaluate needs a model",
            None,
            "--model models:/name@alias (or evaluation.model=...)",
        )
    if command not in ("main", "predict") and cfg.grid is not None:
        problems.add(
            config_file,
            "grid",
            f"the {command} entry point runs one stage, not a grid",
            "grid: ...",
            "the main entry point (or a config without grid:)",
        )
    problems.raise_if_any()


def _predict_command(ws) -> int:
    import pandas as pd

    from intertask import tracking
    from intertask.study import foresight, planning
    from intertask.transferability import predict

    study = planning.plan(ws)
    known = ws.known_experiment() is not None
    result = predict.run(ws, foresight.intermediate_models(ws, study) if known else {})
    order, unranked = predict.rankable(predict.ranked(result.estimates))  # notices: said by predict.run
    with pd.option_context("display.width", 160, "display.max_rows", 200, "display.max_columns", 20):
        for (model, target), frame in result.estimates.groupby(["model", "target"], sort=False):
            values = frame.pivot_table(index="intermediate", columns="estimator", values="value", sort=False)
            print(f"\ntransferability estimates for {target} ({model}; higher = predicted to help more):")
            print(values.to_string(float_format=lambda v: f"{v:.4g}"))
            ranks = order[(order.model == model) & (order.target == target)]
            if ranks.empty:
                why = next((line for key, line in unranked if key == f"nothing_to_rank.{target}"), "")
                print(f"no ranking: {why.removeprefix('predict: ') or 'no estimate could be ranked'}")
                continue
            table = ranks.pivot_table(index="intermediate", columns="estimator", values="rank")
            print("predicted rank of each intermediate task (1 = best):")
            print(table.to_string(float_format=lambda v: f"{v:.0f}"))
        notes = result.estimates[result.estimates.note != ""].drop_duplicates(["target", "estimator", "note"])
        for r in notes.itertuples():
            print(f"note: {r.target} {r.estimator}: {r.note}")
    if result.estimates.empty:
        print("no estimates: the grid has no intermediate choice to estimate for a target")
    print(f"\npredict run {result.run_id}: {len(result.estimates)} estimates in {result.seconds:.1f} s")
    print(
        f"tracking store: {redact(tracking.current_uri())}\nsee it: {tracking.ui_command(ws.experiment_id)}"
    )
    return 0


def _run_entry(args) -> int:
    from intertask import tracking
    from intertask.study import pipeline, planning
    from intertask.study.workspace import Workspace

    cfg = _load(args)
    tracking.use(cfg)
    ws = Workspace(cfg, args.config)
    try:
        if args.command == "validate":
            return _validate_command(ws, args)
        if args.command == "report":
            return _report_command(ws, args)
        _check_entry(args.command, args.config, cfg)
        if args.command == "predict":
            return _predict_command(ws)
        if args.command == "main":
            result = pipeline.run_main(ws, force=tuple(args.force))
            from intertask import report

            experiment = tracking.experiment_name(ws.experiment())
            report.write(result.report, report_folder(experiment))  # also here, next to the artifacts
            print_main(cfg, result, experiment)
        elif args.command == "intermediate":
            from intertask import stages

            planning.preflight(ws, ("intermediate",), evaluation=False)
            trained = stages.intermediate(ws)
            print(f"intermediate model: {trained.uri} (run {trained.run_id})")
        elif args.command == "tune":
            import pandas as pd

            from intertask import tune

            planning.preflight(ws, (cfg.tuning.stage,), evaluation=False)
            result = tune.tune(ws, name=args.study_name or None, storage=args.storage or None)
            print_tuning(result, cfg)
            if not result.best_params:
                errors = result.trials.get("error", pd.Series(dtype=str)).dropna()
                reason = f" (first error: {errors.iloc[0]})" if len(errors) else ""
                print(f"error: no trial of the study completed{reason}", file=sys.stderr)
                return 1
        elif args.command == "finetune":
            from intertask import stages

            planning.preflight(ws, ("target",), evaluation=False)
            trained = stages.finetune(ws)
            print(f"target model: {trained.uri} (run {trained.run_id})")
        else:
            from intertask import stages

            planning.preflight(ws, (), evaluation=True)
            print_evaluation(cfg, stages.evaluate(ws, cfg.evaluation.model))
    finally:
        ws.close()
    page = tracking.ui_command(ws.experiment_id)
    print(f"\ntracking store: {redact(tracking.tracking_uri(cfg))}\nbrowse the runs: {page}")
    return 0


def _validate_command(ws, args) -> int:
    """Plan the study (every local data file read, every job keyed) and load its models; hub sources
    and hub models are opened with --hub only, and listed as not read otherwise."""
    from intertask.config import dump_yaml, validate
    from intertask.study import planning

    ws.read_hub = False
    study = planning.plan(ws)
    for _, line in [*study.notices, *planning.leakage_notices(ws, study)]:  # what `main` will say
        print(f"note: {line}", file=sys.stderr)
    skipped_models = planning.check_models(study.jobs, hub=args.hub)
    if args.hub:
        opened = validate.check_hub(ws.cfg, ws.skipped_hub)
        print(f"hub: {opened} source(s) opened, a few rows of each read as a run reads them", file=sys.stderr)
    elif ws.skipped_hub or skipped_models:
        reads = sorted({f"{task}/{language}/{split}" for task, language, split, _ in ws.skipped_hub})
        print(
            f"not read (hub; `intertask validate --hub` opens them): {len(reads)} data source(s) "
            f"({', '.join(reads[:12])}{', ...' if len(reads) > 12 else ''})"
            + (f"; model(s) {', '.join(skipped_models)}" if skipped_models else ""),
            file=sys.stderr,
        )
    print(dump_yaml(ws.cfg))
    return 0


def _report_command(ws, args) -> int:
    from intertask import report, tracking
    from intertask.study import collect

    built, runs = collect.from_tracking(ws, args.parent or None)
    folder = Path(args.output) if args.output else report_folder(tracking.experiment_name(ws.experiment()))
    report.write(built, folder)
    if args.parent:
        with tracking.run(f"main {ws.cfg.name}", experiment_id=ws.experiment(), run_id=args.parent):
            collect.log(built, ws.cfg, runs)
    print_headline(ws.cfg, built)
    print(f"\nreport: {folder / 'report.html'} ({len(built.scores)} scores from {len(runs)} runs)")
    for why, count in sorted(built.skipped.items()):
        print(f"  skipped {count} run(s): {why}")
    return 0


def _model_command(args) -> int:
    from intertask import pretrained

    if args.model_command == "list":
        for name in pretrained.OFFLINE_MODELS:
            state = (
                f"prepared at {pretrained.prepared_path(name)}"
                if pretrained.is_prepared(name)
                else "not prepared"
            )
            print(f"{name:12s} {state}\n             {pretrained.OFFLINE_MODELS.get(name).description}")
        return 0
    print(pretrained.prepare(args.name, force=args.force))
    return 0


def _tasks_command() -> int:
    from intertask.tasks import builtin_catalog

    catalog = builtin_catalog()
    for name in catalog.names():
        spec = catalog.spec(name)
        print(
            f"{name:14s} {spec.type:26s} {spec.task_family:11s} {len(spec.languages)} languages\n"
            f"{'':14s} {spec.description}"
        )
    return 0


def _warn_of_secrets(argv: list[str]) -> None:
    """A password or token on the command line is used (and redacted everywhere intertask writes), but
    the shell's history, `ps` and -- through `mlflow run -P` -- MLflow's params and its "=== Running
    command" line keep it: said, with where to put it instead."""
    if any(redact(a) != a for a in argv):
        print(
            "warning: a password or token is on this command line; intertask logs it redacted, but a "
            "`mlflow run -P` value is stored as a param and printed by MLflow. Give it through the "
            "environment instead: $PGPASSWORD or ~/.pgpass (PostgreSQL), $INTERTASK_TUNING_STORAGE, "
            "$MLFLOW_TRACKING_URI with $MLFLOW_TRACKING_USERNAME/_PASSWORD/_TOKEN",
            file=sys.stderr,
        )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line as `main` reads it (MLproject's commands too: tests/test_packaging.py)."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)  # overrides may also follow --init/--model
    if extra and (not hasattr(args, "overrides") or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    _warn_of_secrets(sys.argv[1:] if argv is None else argv)
    previous = _terminate_on_sigterm()
    try:
        if args.command == "tune":
            from intertask.tune import quiet_optuna

            quiet_optuna()
        if args.command == "model":
            return _model_command(args)
        if args.command == "tasks":
            return _tasks_command()
        return _run_entry(args)
    except (InputError, UnknownName) as err:  # bad user input: a message, no stack trace
        print(f"error: {redact(str(err))}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated (SIGTERM): open runs ended KILLED", file=sys.stderr)
        return 128 + signal.SIGTERM
    except ClusterError as err:
        print(f"error: {redact(str(err))}", file=sys.stderr)
        return 4
    except Exception as err:  # the tracking store failing mid-run: a message naming it, no stack trace
        from intertask import tracking

        failure = tracking.store_failure(err, tracking.current_uri())
        if failure is None:
            raise
        print(f"error: {redact(str(failure))}", file=sys.stderr)
        return 3
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate_on_sigterm():
    """SIGTERM raises Terminated in the main thread, so every open run ends KILLED, not RUNNING."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise Terminated()

    return signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
    raise SystemExit(main())
