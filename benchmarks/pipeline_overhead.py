"""What tracking and orchestration cost: MLflow logging inside the training loop, and re-running a
finished pipeline (every stage reused).

1. Logging overhead: the same e5-small fine-tuning (PAWS-X en, N pairs, 1 epoch, demo settings) with a
   no-op metrics callback and with metrics logged to a SQLite MLflow run every 10 steps (the default)
   and every step (the worst case). Each measured `--repeats` times, alternating; the fastest of each
   is reported, with the time spent inside the logging calls (timed directly, so not lost in the
   run-to-run noise of the whole training time).
2. Re-run: `intertask main` on a small two-arm study (e5-small; RTE -> XNLI and XNLI alone; 3
   languages) in a fresh SQLite store, then the same command again, each in its own process: the
   second finds every stage's finished run and reuses it. `--study pipelines/demo.yaml` times the
   same on a given study file instead (the demo: about 8 minutes for the first run).

    python benchmarks/pipeline_overhead.py [--examples 320] [--repeats 2] [--skip-rerun | --skip-logging]
                                           [--study FILE] [--workdir DIR]
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
from common import SEED, examples

STUDY = {
    "name": "bench-rerun",
    "seed": SEED,
    "model": {"name_or_path": "e5-small", "freeze_word_embeddings": True, "max_length": 128},
    "training": {"epochs": 1, "batch_size": 16, "learning_rate": 5.0e-5},
    "intermediate": {"task": "rte", "language": "en", "max_examples": {"train": 320, "dev": 64}},
    "target": {"task": "xnli", "language": "en", "max_examples": {"train": 320, "dev": 64}},
    "evaluation": {"split": "test", "languages": ["en", "de", "fr"], "max_examples": 100},
}


def logging_overhead(n: int, repeats: int) -> dict[str, tuple[float, float]]:
    import mlflow
    from transformers import AutoTokenizer

    from intertask import pretrained, tracking
    from intertask.compute.encoding import encode
    from intertask.compute.modeling import HeadSpec, build_models
    from intertask.compute.training import TrainPart, train
    from intertask.config import SamplingConfig, TrainingConfig
    from intertask.tasks import builtin_catalog
    from intertask.tasks.types import task_type

    model_dir = str(pretrained.prepare("e5-small"))
    spec = builtin_catalog().spec("pawsx")
    train_set = examples("pawsx", "en", "train", n)
    dev_set = examples("pawsx", "en", "dev", 16)
    task = task_type(spec)
    tok = AutoTokenizer.from_pretrained(model_dir)
    train_enc, dev_enc = encode(task, train_set, tok, 128, None), encode(task, dev_set, tok, 128, None)

    def once(every: int | None) -> float:
        head = HeadSpec(spec.name, task.head, task.model_kwargs(), task.head_signature())
        model = build_models(model_dir, [head], seed=SEED, freeze_word_embeddings=True)[spec.name]
        part = TrainPart(spec.name, task, model, train_enc, dev_enc, dev_set, "accuracy")
        cfg = TrainingConfig(
            epochs=1,
            batch_size=16,
            learning_rate=5e-5,
            log_every_steps=every or 10,
            checkpoints=False,
        )
        spent = [0.0]

        def log(metrics: dict, step: int) -> None:
            if every:
                before = time.perf_counter()
                tracking.log_metrics(metrics, step)
                spent[0] += time.perf_counter() - before

        started = time.perf_counter()
        if every:
            with mlflow.start_run():
                train([part], cfg, seed=SEED, pad_id=tok.pad_token_id, sampling=SamplingConfig(), log=log)
        else:
            train([part], cfg, seed=SEED, pad_id=tok.pad_token_id, sampling=SamplingConfig(), log=log)
        return time.perf_counter() - started, spent[0]

    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        mlflow.set_experiment("bench-logging")
        times: dict[str, list[tuple[float, float]]] = {"none": [], "every 10 steps": [], "every step": []}
        for _ in range(repeats):
            times["none"].append(once(None))
            times["every 10 steps"].append(once(10))
            times["every step"].append(once(1))
    return {k: min(v) for k, v in times.items()}  # the fastest repeat, with the time it spent logging


def rerun(folder: Path, study: Path | None) -> tuple[float, float]:
    config = folder / "study.yaml"
    if study is None:
        config.write_text(yaml.safe_dump(STUDY, sort_keys=False))
    else:
        config = study.resolve()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "HF_HUB_OFFLINE": "1"}
    seconds = []
    for _ in range(2):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "intertask", "main", str(config)],
            cwd=folder,
            env=env,
            check=True,
            capture_output=True,
        )
        seconds.append(time.perf_counter() - started)
    return seconds[0], seconds[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-rerun", action="store_true", help="only the logging overhead")
    parser.add_argument("--skip-logging", action="store_true", help="only the re-run")
    parser.add_argument(
        "--study", type=Path, help="study file for the re-run (default: a built-in small study)"
    )
    parser.add_argument("--workdir", type=Path, help="a new folder for the re-run's store and report")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if not args.skip_logging:
        print_logging_overhead(args.examples, args.repeats)
    if args.skip_rerun:
        return
    if args.workdir is not None:
        args.workdir.mkdir(parents=True)  # a new folder: the first run must start from an empty store
        first, second = rerun(args.workdir, args.study)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            first, second = rerun(Path(tmp), args.study)
    what = args.study or "built-in study: 2 arms, 3 training stages, 2 evaluations"
    print(f"\n2. Re-running a finished pipeline ({what})\n")
    print("| run | wall seconds | share of the first |\n|---|---:|---:|")
    print(
        f"| first | {first:.1f} | 100 % |\n| again (all reused) | {second:.1f} | {100 * second / first:.1f} % |"
    )


def print_logging_overhead(examples: int, repeats: int) -> None:
    times = logging_overhead(examples, repeats)
    base = times["none"][0]
    print(f"\n1. MLflow logging in the training loop (e5-small, PAWS-X en, {examples} pairs, 1 epoch)\n")
    print(
        "| metrics logged | training seconds | vs none | seconds inside log calls | share of the run |\n"
        "|---|---:|---:|---:|---:|"
    )
    for name, (value, spent) in times.items():
        print(
            f"| {name} | {value:.2f} | {100 * (value / base - 1):+.1f} % | {spent:.3f} | {100 * spent / value:.2f} % |"
        )


if __name__ == "__main__":
    main()
