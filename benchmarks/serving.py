"""How long a logged model takes to load and to answer: `mlflow.pyfunc.load_model` in a fresh process,
and `mlflow models serve` from its start to its first answer.

    python benchmarks/serving.py --tracking-uri sqlite:///mlflow.db \\
        --model models:/demo.e5-small.ud-udpos@target --repeats 3

Each measurement runs in a fresh process. The model's artifacts are downloaded once beforehand and
every measurement loads that local copy, so the figures are load and start-up time, not transfer time.
Repeat 0 is cold: its intertask cache (INTERTASK_CACHE) starts empty, so an offline base model
(e5-small) is first prepared there, once per machine. The other repeats (`--repeats`) are warm: the base
model is prepared, and any whole model an earlier load rebuilt into the cache is deleted first, as on a
machine that has trained or loaded some model but not this one. Reported per repeat:
- `load_s`: the `mlflow.pyfunc.load_model` call alone; `imports_and_load_s` with `import mlflow.pyfunc`;
  `process_s`: the whole process;
- `first_answer_s`: from starting `mlflow models serve --env-manager local` to the first 200 answer of
  /invocations to the model's own serving input example;
- `cache_whole_models_mb`: whole models that loading wrote into the intertask cache, and
  `cache_base_models_mb` the offline base models prepared there (shared by every model).
Writes <workdir>/serving.csv and prints the table with the median of the warm repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd

LOAD = """
import sys, time
start = time.perf_counter()
import mlflow.pyfunc
imported = time.perf_counter()
model = mlflow.pyfunc.load_model(sys.argv[1])
print(time.perf_counter() - imported, time.perf_counter() - start)
"""


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_load(local: Path, cache: Path) -> dict:
    env = {**os.environ, "INTERTASK_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", LOAD, str(local)], env=env, capture_output=True, text=True, timeout=600
    )
    process = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"load failed:\n{done.stderr[-3000:]}")
    imports_and_load = float(done.stdout.split()[-1])
    load = float(done.stdout.split()[-2])
    return {"load_s": load, "imports_and_load_s": imports_and_load, "process_s": process}


def first_answer(local: Path, cache: Path, timeout: float = 600.0) -> float:
    port = _free_port()
    env = {**os.environ, "INTERTASK_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # serve runs uvicorn
    body = (local / "serving_input_example.json").read_bytes()
    mlflow_cli = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(local)]
    command = [*mlflow_cli, "--env-manager", "local", "-p", str(port), "-w", "1"]
    started = time.perf_counter()
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while time.perf_counter() - started < timeout:
            if server.poll() is not None:
                raise SystemExit(f"serve exited:\n{server.stderr.read().decode()[-3000:]}")
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations", body, {"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as answer:
                    if answer.status == 200:
                        elapsed = time.perf_counter() - started
                        print("  answer:", answer.read().decode()[:300])
                        return elapsed
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        raise SystemExit(f"no answer within {timeout} s")
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--model", required=True, help="models:/name@alias or another model URI")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default="", help="default: a new temporary folder")
    args = parser.parse_args()

    import mlflow

    mlflow.set_tracking_uri(args.tracking_uri)
    os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="intertask-serving-"))
    workdir.mkdir(parents=True, exist_ok=True)
    local = Path(mlflow.artifacts.download_artifacts(args.model, dst_path=str(workdir / "model")))
    flavor = json.dumps(sorted(__import__("yaml").safe_load((local / "MLmodel").read_text())["flavors"]))
    print(f"{args.model}: {_bytes(local) / 1e6:.0f} MB on disk, flavors {flavor}")
    rows = []
    cache = workdir / "cache"  # one cache: the first load prepares the base model there (cold)
    shutil.rmtree(cache, ignore_errors=True)
    for repeat in range(args.repeats + 1):
        row = {"repeat": repeat, "cold": repeat == 0} | timed_load(local, cache)
        row["cache_whole_models_mb"] = _bytes(cache / "whole-models") / 1e6  # rebuilt whole models
        row["cache_base_models_mb"] = _bytes(cache / "models") / 1e6  # offline base models, once
        shutil.rmtree(cache / "whole-models", ignore_errors=True)  # every load starts without them
        row["first_answer_s"] = first_answer(local, cache)
        shutil.rmtree(cache / "whole-models", ignore_errors=True)
        rows.append(row)
        print(row)
    table = pd.DataFrame(rows)
    table.to_csv(workdir / "serving.csv", index=False)
    print(table.to_string(index=False))
    warm = table[~table.cold].drop(columns=["repeat", "cold"])
    print("median of the warm repeats:", warm.median().round(2).to_dict())


if __name__ == "__main__":
    main()
