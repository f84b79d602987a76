"""The Ray executor against the in-process default on one machine: the same grid study (e5-small;
intermediate RTE or none x targets PAWS-X and XNLI x 2 seeds: 2 intermediate stages, 8 fine-tunings,
8 evaluations) run with `executor.kind=in_process` (one stage at a time, every core) and with
`executor.kind=ray` (a local Ray of all cores, one CPU and one thread per stage: stages side by side),
each in a fresh SQLite store, in its own process.

Reported per mode: the wall time of `intertask main`; the time from the command's start to the first
stage run's start (interpreter, imports, planning, and for Ray the cluster's and the first worker's
start-up: what a small grid pays before any stage trains); and the summed stage run times (the work).

    python benchmarks/ray_vs_inprocess.py [--examples 320] [--workdir DIR] [--modes in_process ray]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import SEED


def study(n: int) -> dict:
    return {
        "name": "bench-ray",
        "seed": SEED,
        "model": {"name_or_path": "e5-small", "freeze_word_embeddings": True, "max_length": 128},
        "training": {"epochs": 1, "batch_size": 16, "learning_rate": 5.0e-5},
        "intermediate": {"task": "rte", "language": "en", "max_examples": {"train": n, "dev": 64}},
        "target": {"task": "pawsx", "language": "en", "max_examples": {"train": n, "dev": 64}},
        "evaluation": {"split": "test", "languages": ["en", "de", "fr"], "max_examples": 200},
        "grid": {"intermediate": ["rte", "none"], "target": ["pawsx", "xnli"], "seeds": [1, 2]},
        "report": {"divergence": False},
    }


def run(folder: Path, mode: str, n: int) -> dict[str, float]:
    from mlflow.tracking import MlflowClient

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "study.yaml"
    config.write_text(yaml.safe_dump(study(n), sort_keys=False))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "HF_HUB_OFFLINE": "1",
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    }
    command = [sys.executable, "-m", "intertask", "main", str(config), f"executor.kind={mode}"]
    if mode == "ray":
        command += [f"executor.cpus={os.cpu_count()}", "executor.cpus_per_stage=1"]
    started = time.time()
    subprocess.run(command, cwd=folder, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.time() - started
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("bench-ray").experiment_id
    stages = [
        r
        for r in client.search_runs([experiment], max_results=500)
        if r.data.tags.get("intertask.stage") in ("intermediate", "finetune", "evaluate")
    ]
    first = min(r.info.start_time for r in stages) / 1000
    work = sum((r.info.end_time - r.info.start_time) / 1000 for r in stages)
    return {"wall": wall, "first_stage": first - started, "stage_seconds": work, "stages": len(stages)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=320)
    parser.add_argument("--workdir", default="")
    parser.add_argument("--modes", nargs="+", default=["in_process", "ray"])
    args = parser.parse_args()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench-ray-"))
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next(
        (line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?"
    )
    print(f"CPU: {model}, {os.cpu_count()} logical CPUs; {args.examples} training examples per stage")
    print("| executor | stages | wall (s) | to first stage (s) | summed stage time (s) |")
    print("|---|---:|---:|---:|---:|")
    for mode in args.modes:
        r = run(root / mode, mode, args.examples)
        print(
            f"| {mode} | {r['stages']} | {r['wall']:.1f} | {r['first_stage']:.1f} | {r['stage_seconds']:.1f} |"
        )


if __name__ == "__main__":
    main()
