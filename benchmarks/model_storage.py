"""Bytes a study writes to its MLflow artifact store under each `tracking.log_models` choice.

For each choice the study runs from scratch into its own store (SQLite + local artifact folder under
--workdir/<choice>), then every byte under the artifact folder is attributed to the run that wrote it
(a logged model to its source run) and summed per stage kind and for the study.

    python benchmarks/model_storage.py --study pipelines/demo.yaml --policies all final none
    python benchmarks/model_storage.py --study pipelines/offline_phang2020.yaml \\
        --policies registered registered+full final none -- training.epochs=1 ...
    python benchmarks/model_storage.py --measure DIR   # a store some earlier run wrote (DIR/mlflow.db)

A policy is a `tracking.log_models` choice, `+full` / `+changed` / `+auto` setting `tracking.log_weights`
(else the config's, by default auto).
Overrides after `--` shrink the training data only: a stage's model, tables and plots do not depend
on how many examples trained it (evaluation sets, whose per-example tables are logged, are kept).
Writes <workdir>/storage.csv (one row per run) and prints the per-stage and per-study table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def run_study(config: Path, policy: str, store: Path, overrides: list[str]) -> float:
    store.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}", "HF_HUB_OFFLINE": "1"}
    choice, _, weights = policy.partition("+")
    register = "true" if choice != "none" else "false"
    command = [sys.executable, "-m", "intertask", "main", str(config.resolve()), *overrides]
    command += [f"tracking.log_models={choice}", f"tracking.register_models={register}"]
    command += [f"tracking.log_weights={weights}"] if weights else []  # else the config's (default auto)
    start = time.perf_counter()
    subprocess.run(command, cwd=store, env=env, check=True)
    return time.perf_counter() - start


def measure(store: Path) -> pd.DataFrame:
    """One row per run: its stage kind and the bytes of its artifacts plus the models it logged."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    experiments = [e for e in client.search_experiments() if e.name != "Default"]
    rows = []
    for experiment in experiments:
        root = Path(experiment.artifact_location.removeprefix("file://"))
        if not root.is_absolute():
            root = store / root
        models = client.search_logged_models(experiment_ids=[experiment.experiment_id])
        model_bytes: dict[str, int] = {}
        for model in models:
            folder = Path(model.artifact_location.removeprefix("file://"))
            model_bytes[model.source_run_id] = model_bytes.get(model.source_run_id, 0) + _bytes(
                folder if folder.is_absolute() else store / folder
            )
        for run in client.search_runs([experiment.experiment_id], max_results=5000):
            artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
            rows.append(
                {
                    "run_id": run.info.run_id,
                    "stage": run.data.tags.get("intertask.stage", "?"),
                    "model_bytes": model_bytes.get(run.info.run_id, 0),
                    "other_bytes": _bytes(artifacts if artifacts.is_absolute() else store / artifacts),
                }
            )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--study", type=Path)
    parser.add_argument("--measure", type=Path, help="only measure this store folder (DIR/mlflow.db)")
    parser.add_argument("--policies", nargs="+", default=["all", "registered", "final", "none"])
    parser.add_argument("--workdir", type=Path, default=Path("storage-benchmark"))
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides (after --)")
    args = parser.parse_args()
    if args.measure is None and args.study is None:
        parser.error("give --study (run and measure) or --measure (measure only)")
    tables, totals = [], []
    args.workdir.mkdir(parents=True, exist_ok=True)
    for policy in ["measured"] if args.measure else args.policies:
        store = args.measure or args.workdir / policy
        seconds = 0.0 if args.measure else run_study(args.study, policy, store, args.overrides)
        table = measure(store).assign(policy=policy)
        tables.append(table)
        table["bytes"] = table.model_bytes + table.other_bytes
        totals.append(
            {
                "policy": policy,
                "models_logged": int((table.model_bytes > 0).sum()),
                "artifact_MB": round(table.bytes.sum() / 1e6, 1),
                "database_MB": round((store / "mlflow.db").stat().st_size / 1e6, 1),
                "wall_seconds": round(seconds),
            }
        )
    runs = pd.concat(tables, ignore_index=True)
    runs.to_csv(args.workdir / "storage.csv", index=False)
    per_stage = (
        runs.groupby(["policy", "stage"], sort=False)
        .agg(runs=("run_id", "size"), mean_MB=("bytes", "mean"), total_MB=("bytes", "sum"))
        .assign(mean_MB=lambda t: (t.mean_MB / 1e6).round(1), total_MB=lambda t: (t.total_MB / 1e6).round(1))
    )
    print(per_stage.to_string())
    print()
    print(pd.DataFrame(totals).to_string(index=False))


if __name__ == "__main__":
    main()
