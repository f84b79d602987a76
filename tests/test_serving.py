"""Logged models as MLflow users meet them: logged from code (nothing pickled), named by what they
are, with a signature that declares outputs, a slim model put together in memory, and loading in a
fresh process that has not imported intertask."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from intertask import tracking
from intertask.compute import modeling
from intertask.stages.publish import logged_name
from intertask.tasks import builtin_catalog
from intertask.tasks.types import task_type
from intertask.tracking import serving

from .conftest import fast_guard

LOAD = """
import json, sys
import mlflow.pyfunc, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
before = sorted(m for m in sys.modules if m.split(".")[0] == "intertask")
pair = mlflow.pyfunc.load_model(sys.argv[2])
tags = mlflow.pyfunc.load_model(sys.argv[3])
frame = pd.DataFrame({"text": ["The cat sat.", "A dog ran."], "text_pair": ["A cat sat.", "Prices fell."]})
print(json.dumps({
    "before": before,
    "after": sorted(m for m in sys.modules if m.split(".")[0] == "intertask"),
    "serving": sys.modules["intertask.tracking.serving"].__file__,
    "pair": pair.predict(frame).to_dict("list"),
    "tags": tags.predict(pd.DataFrame({"tokens": [["Marie", "lives", "in", "Paris", "."]]})).to_dict("list"),
}))
"""


def _experiment(name: str) -> str:
    """The experiment's id, made if new -- not mlflow.set_experiment, which sets the process's active
    experiment and $MLFLOW_EXPERIMENT_ID for every later test (and `mlflow run` it starts)."""
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name)


def _trained_folder(tiny_model: Path, task_name: str, folder: Path) -> None:
    """A model folder as a stage saves it (the shared encoder, pooler included): word embeddings
    untouched (so it logs slim), one encoder layer, the pooler's weight and the new head changed."""
    spec = builtin_catalog().spec(task_name)
    task = task_type(spec)
    heads = [modeling.HeadSpec(task.name, task.head, task.model_kwargs(), task.head_signature())]
    nets = modeling.build_models(str(tiny_model), heads, seed=3)
    with torch.no_grad():
        encoder = nets[task.name].base_model
        for parameter in [*encoder.encoder.layer[0].parameters(), encoder.pooler.dense.weight]:
            parameter.add_(0.01)  # the pooler: kept by a tagger's slim file, yet no part of a tagger
    modeling.save(nets, heads, modeling.load_tokenizer(str(tiny_model)), folder)
    serving.write_task(folder, spec, 64)


@pytest.mark.slow
def test_a_model_logged_from_code_loads_in_a_fresh_process(tiny_model, mlflow_server, tmp_path):
    """Two models (a whole sentence-pair classifier, a slim tagger) logged and registered under their
    chain/stage names: no pickle in either, MLmodel points at the logged code file, the signature
    declares every output column, the run's scores are linked to the model and its system metrics are
    not; a fresh process that has not imported intertask loads both by models:/name@alias and gets
    every class's probability (summing to 1, the label the most probable one) and one tag per word."""
    mlflow.set_tracking_uri(mlflow_server)
    experiment = _experiment("serving-from-code")
    uris = {}
    # the tagger slim (its saved pooler is no part of a tagging model, yet in the base digest), the pair
    # classifier whole
    for task_name, changed_from in (("pawsx", None), ("udpos", str(tiny_model))):
        folder = tmp_path / task_name
        _trained_folder(tiny_model, task_name, folder)
        with mlflow.start_run(experiment_id=experiment):
            mlflow.log_metrics({"best_dev/selection": 0.5, "system/cpu_utilization_percentage": 30.0})
            logged = tracking.log_model(
                folder,
                task_type(builtin_catalog().spec(task_name)).head,
                name=logged_name(["xnli", task_name], "target", 2),
                register_as=f"serving.tiny.xnli-{task_name}",
                alias="target",
                tags={},
                changed_from=changed_from,
            )
        uris[task_name] = f"models:/serving.tiny.xnli-{task_name}@target"
        model = MlflowClient().get_logged_model(logged.model_id)
        assert model.name == f"xnli-{task_name}_target_seed2"
        assert {m.key for m in model.metrics} == {"best_dev/selection"} | (
            {f"logged_model/{k}" for k in ("bytes_kept", "bytes_omitted", "tensors_kept", "tensors_omitted")}
            | {"logged_model/changed_only"}
            if changed_from
            else set()
        )
        local = Path(
            mlflow.artifacts.download_artifacts(uris[task_name], dst_path=str(tmp_path / "dl" / task_name))
        )
        assert not list(local.rglob("*.pkl")), "nothing pickled"
        pyfunc = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
        assert pyfunc["loader_module"] == "mlflow.pyfunc.loaders.code_model" and "python_model" not in pyfunc
        code = local / Path(pyfunc["model_code_path"]).name  # the logged copy of the code file
        assert code.read_text() == serving.CODE_FILE.read_text()
        hf_model = local / pyfunc["artifacts"][serving.ARTIFACT]["path"]
        assert (hf_model / "changed.safetensors").is_file() == bool(changed_from)
        outputs = mlflow.models.get_model_info(uris[task_name]).signature.outputs.input_names()
        labels = builtin_catalog().spec(task_name).labels
        expected = ["label", "score", *(f"score_{n}" for n in labels)] if task_name == "pawsx" else ["tags"]
        assert outputs == expected
    cache = tmp_path / "fresh-cache"
    done = subprocess.run(
        [sys.executable, "-c", LOAD, mlflow_server, uris["pawsx"], uris["udpos"]],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "INTERTASK_CACHE": str(cache), "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["before"] == [] and "intertask.tracking.serving" in seen["after"]
    # the model's own code (code/intertask.zip, unpacked beside it), not the installed package
    assert Path(seen["serving"]).parts[-5:] == ("code", "intertask", "intertask", "tracking", "serving.py")
    pair, labels = seen["pair"], builtin_catalog().spec("pawsx").labels
    for row in range(2):
        probabilities = {n: pair[f"score_{n}"][row] for n in labels}
        assert sum(probabilities.values()) == pytest.approx(1.0)
        assert pair["label"][row] == max(probabilities, key=probabilities.get)
        assert pair["score"][row] == probabilities[pair["label"][row]]
    assert len(seen["tags"]["tags"][0]) == 5
    assert set(seen["tags"]["tags"][0]) <= set(builtin_catalog().spec("udpos").labels)
    assert not (cache / "whole-models").exists()  # the slim model was put together in memory


def test_a_model_that_does_not_load_is_an_error_and_is_not_registered(tiny_model, mlflow_server, tmp_path):
    """MLflow loads a model it logs and predicts its input example, but only warns when that fails: a
    tagger logged as a multiple-choice model (no head fits, nothing to predict with) is a ModelError
    naming the folder, is not registered, and is gone from the Models tab."""
    from intertask.errors import ModelError

    mlflow.set_tracking_uri(mlflow_server)
    experiment = _experiment("serving-broken")
    folder = tmp_path / "udpos"
    _trained_folder(tiny_model, "udpos", folder)
    refused = pytest.raises(ModelError, match=f"{folder}.*does not load and predict its input example")
    with mlflow.start_run(experiment_id=experiment) as run, refused:
        tracking.log_model(
            folder, "multiple_choice", name="broken", register_as="serving.broken", alias="target", tags={}
        )
    client = MlflowClient()
    assert not client.search_registered_models("name = 'serving.broken'")
    assert not [m for m in client.search_logged_models([experiment]) if m.source_run_id == run.info.run_id]


def _post(port: int, body: dict) -> dict:
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read())


def _serve(python: Path, model: Path, port: int, env: dict, cwd: Path) -> subprocess.Popen:
    """`mlflow models serve` from the given environment, up when this returns."""
    fast_guard("`mlflow models serve`")
    import time
    import urllib.request

    command = [str(python), "-m", "mlflow", "models", "serve", "-m", str(model), "--env-manager", "local"]
    log = open(cwd / f"serve-{port}.log", "w")  # noqa: SIM115 -- closed with the process
    server = subprocess.Popen(
        [*command, "-p", str(port), "-w", "1"], env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError((cwd / f"serve-{port}.log").read_text()[-3000:])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5):
                return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise AssertionError(
        f"mlflow models serve did not answer in 300 s: {(cwd / f'serve-{port}.log').read_text()[-3000:]}"
    )


@pytest.mark.slow
def test_a_served_model_runs_where_only_its_own_requirements_are(tiny_model, mlflow_server, tmp_path):
    """A pair classifier and a tagger, logged and registered, downloaded; a new virtual environment
    built from the model's own requirements.txt (from the package index: no intertask, no checkout);
    `mlflow models serve` from that environment, started outside the checkout, answers both request
    forms -- `dataframe_split` (the model's serving input example) and `inputs` -- for both models."""
    from .conftest import _free_port

    mlflow.set_tracking_uri(mlflow_server)
    experiment = _experiment("serving-portable")
    local = {}
    for task_name in ("pawsx", "udpos"):
        folder = tmp_path / task_name
        _trained_folder(tiny_model, task_name, folder)
        with mlflow.start_run(experiment_id=experiment):
            tracking.log_model(
                folder,
                task_type(builtin_catalog().spec(task_name)).head,
                name=f"portable-{task_name}",
                register_as=f"serving.portable.{task_name}",
                alias="target",
                tags={},
            )
        uri = f"models:/serving.portable.{task_name}@target"
        local[task_name] = Path(
            mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "dl" / task_name))
        )
    requirements = (local["pawsx"] / "requirements.txt").read_text()
    assert "intertask" not in requirements and "torch==" in requirements
    with zipfile.ZipFile(local["pawsx"] / "code" / "intertask.zip") as packed:  # its code: one artifact
        assert "intertask/tracking/serving.py" in packed.namelist()
    venv = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-compile",
            "-r",
            str(local["pawsx"] / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MLFLOW_TRACKING_URI")
    }
    env |= {"PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}", "HF_HUB_OFFLINE": "1"}
    absent = subprocess.run(
        [str(python), "-c", "import intertask"], env=env, cwd=tmp_path, capture_output=True
    )
    assert absent.returncode != 0  # the environment has no intertask of its own
    pair_inputs = {"text": ["The cat sat.", "A dog ran."], "text_pair": ["A cat sat.", "Prices fell."]}
    for task_name, inputs, column in (
        ("pawsx", pair_inputs, "label"),
        ("udpos", {"tokens": ["Marie", "lives", "in", "Paris", "."]}, "tags"),
    ):
        port = _free_port()
        server = _serve(python, local[task_name], port, env, tmp_path)
        try:
            example = json.loads((local[task_name] / "serving_input_example.json").read_text())
            split = _post(port, example)["predictions"]
            mapping = _post(port, {"inputs": inputs})["predictions"]
            rows = [{"tokens": ["A", "dog"]}, {"tokens": ["It", "ran", "."]}]  # several rows: a list of them
            records = _post(port, {"inputs": rows}) if task_name == "udpos" else None
        finally:
            server.terminate()
            server.wait(timeout=60)
        assert len(split) == 1 and column in split[0]
        labels = set(builtin_catalog().spec(task_name).labels)
        if task_name == "pawsx":
            assert len(mapping) == 2 and {r["label"] for r in mapping} <= labels
        else:
            assert len(mapping) == 1 and len(mapping[0]["tags"]) == 5 and set(mapping[0]["tags"]) <= labels
            assert [len(r["tags"]) for r in records["predictions"]] == [2, 3]


@pytest.mark.parametrize("name", ["tiny", "e5-small", "all-minilm-l6-v2"])
def test_the_serving_tokenizer_encodes_as_training_does(name, tiny_model, shared_data, monkeypatch):
    """modeling.load_tokenizer_quickly (serving: tokenizer.json read by `tokenizers`, handed to its class)
    gives the ids, word alignment and pair encoding of modeling.load_tokenizer (training, evaluation)
    on real sentences in 9 languages, with truncation -- for the tiny test model and every offline
    model."""
    from intertask import pretrained

    from .conftest import _corpus

    source = str(tiny_model) if name == "tiny" else str(pretrained.prepare(name))
    usual = modeling.load_tokenizer(source)

    def no_fallback(source):
        raise AssertionError(f"load_tokenizer_quickly fell back to from_pretrained for {source}")

    monkeypatch.setattr(modeling, "load_tokenizer", no_fallback)  # the quick path itself is compared
    quick = modeling.load_tokenizer_quickly(source)
    assert type(quick) is type(usual)
    assert quick.all_special_ids == usual.all_special_ids and quick.pad_token_id == usual.pad_token_id
    texts = _corpus(shared_data)[::7]
    assert len(texts) > 200
    for first, second in zip(texts[::2], texts[1::2], strict=False):
        for args in ((first,), (first, second)):
            a, b = usual(*args, truncation=True, max_length=48), quick(*args, truncation=True, max_length=48)
            assert a["input_ids"] == b["input_ids"], (name, args)
        words = first.split()
        a = usual(words, is_split_into_words=True, truncation=True, max_length=48)
        b = quick(words, is_split_into_words=True, truncation=True, max_length=48)
        assert a["input_ids"] == b["input_ids"] and a.word_ids() == b.word_ids(), (name, words)


def test_a_slim_model_checks_its_base_once_per_base_file_and_again_when_it_changes(
    tiny_model, tmp_path, monkeypatch
):
    """weights.load checks the base tensors a slim model omits against their SHA-256: hashed on the
    first load, remembered by the base files' path, size and modification time (a later load of the
    same files skips the hashing), hashed again -- and refused -- once the base file has changed."""
    import shutil

    from transformers import AutoModelForTokenClassification

    from intertask.compute import weights
    from intertask.errors import ModelError

    monkeypatch.setenv("INTERTASK_CACHE", str(tmp_path / "cache"))
    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    folder, slim = tmp_path / "udpos", tmp_path / "slim"
    _trained_folder(base, "udpos", folder)
    weights.write_slim(weights.changes(folder, str(base)), slim)
    hashed = []
    real = weights._digest
    monkeypatch.setattr(weights, "_digest", lambda found: hashed.append(1) or real(found))
    weights.load(AutoModelForTokenClassification, slim)
    weights.load(AutoModelForTokenClassification, slim)
    assert len(hashed) == 1  # the second load trusted the unchanged base files
    with torch.no_grad():
        model = AutoModelForTokenClassification.from_pretrained(base)
        model.get_input_embeddings().weight.add_(0.5)  # a base that is no longer the one trained from
        model.base_model.save_pretrained(base)
    with pytest.raises(ModelError, match="tensors differ"):
        weights.load(AutoModelForTokenClassification, slim)
    assert len(hashed) == 2
