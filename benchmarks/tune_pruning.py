"""Tuning with and without pruning at an equal trial count: wall time and best dev value of each.

Two Optuna studies over the same search space, the same sampler seed and the same number of trials,
one with the median pruner and one without; each is the real `intertask tune` entry point (nested
MLflow runs in a temporary SQLite store, the study in a temporary optuna.db). Printed as a table;
results go to BENCHMARKS.md.

    python benchmarks/tune_pruning.py [--trials 10] [--epochs 4] [--train 320]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import optuna
import yaml
from common import SEED
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from intertask import cli


def _config(folder: Path, args, pruner: dict) -> Path:
    config = {
        "name": f"bench-tune-{pruner['kind']}",
        "seed": SEED,
        "model": {"name_or_path": "e5-small", "freeze_word_embeddings": True, "max_length": 128},
        "training": {"epochs": args.epochs, "batch_size": 16, "learning_rate": 5e-5},
        "target": {"task": "udpos", "language": "en", "max_examples": {"train": args.train, "dev": 100}},
        "tuning": {
            "stage": "target",
            "metric": "f1",
            "trials": args.trials,
            "sampler": {"kind": "tpe", "seed": 7, "startup_trials": 4},
            "pruner": pruner,
            "space": {
                # up to 3e-2 on purpose: the upper part of the range diverges, which pruning should catch
                "learning_rate": {"type": "float", "low": 1e-5, "high": 3e-2, "log": True},
                "batch_size": {"type": "categorical", "choices": [16, 32]},
                "warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2},
            },
        },
    }
    path = folder / f"{config['name']}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _run(folder: Path, args, pruner: dict) -> dict:
    config = _config(folder, args, pruner)
    storage = f"sqlite:///{folder / 'optuna.db'}"
    started = time.perf_counter()
    assert cli.main(["tune", str(config), "--storage", storage]) == 0
    seconds = time.perf_counter() - started
    name = f"bench-tune-{pruner['kind']}-target"
    study = optuna.load_study(study_name=name, storage=storage)
    states = [t.state for t in study.trials]
    epochs = sum(len(t.intermediate_values) for t in study.trials)
    parent = study.user_attrs["intertask.parent_run_id"]
    rss = [
        m.value
        for m in sorted(MlflowClient().get_metric_history(parent, "trials/rss_mb"), key=lambda m: m.step)
    ]
    return {
        "pruner": pruner["kind"],
        "seconds": seconds,
        "best": study.best_value,
        "best_params": study.best_params,
        "complete": states.count(TrialState.COMPLETE),
        "pruned": states.count(TrialState.PRUNED),
        "epochs": epochs,
        "rss": rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train", type=int, default=320, help="UD-POS English training sentences")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
        os.chdir(root)  # tuning/<study>/best_params.yaml lands here, not in the checkout
        for pruner in (
            {"kind": "none"},
            {"kind": "median", "startup_trials": 3, "warmup_epochs": 1},
        ):
            results.append(_run(root, args, pruner))
    print(
        f"\ne5-small, UD-POS en ({args.train} train / 100 dev sentences), {args.trials} trials x "
        f"{args.epochs} epochs, TPE seed 7\n"
    )
    print(
        "| pruner | wall time (s) | trials complete / pruned | epochs trained | best dev F1 | best params "
        "| RSS after trial 1 / max / last (MiB) |"
    )
    print("|---|---:|---:|---:|---:|---|---:|")
    for r in results:
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["best_params"].items()
        )
        print(
            f"| {r['pruner']} | {r['seconds']:.0f} | {r['complete']} / {r['pruned']} | {r['epochs']} | "
            f"{r['best']:.4f} | {params} | {r['rss'][0]:.0f} / {max(r['rss']):.0f} / {r['rss'][-1]:.0f} |"
        )
    for r in results:
        print(f"RSS after each trial, pruner {r['pruner']} (MiB): " + " ".join(f"{v:.0f}" for v in r["rss"]))


if __name__ == "__main__":
    main()
