"""Shared fixtures: real data slices, a tiny real model, a real MLflow server, an isolated cache."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from intertask.data import data_root
from intertask.errors import redact

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `datasets` (hub-source tests use its packaged json builder) caches under a throwaway folder
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="intertask-hf-datasets-")


LEAKY = ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")
SET_BY_ENTRY_POINTS = (
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)
SESSION_START = {k: os.environ.get(k) for k in SET_BY_ENTRY_POINTS}

# Under pytest-xdist (`make test`: two workers) each worker's stages get their share of the cores, as
# executors give stages that run side by side: two 2-thread processes on 2 cores run far slower than
# twice one (BENCHMARKS.md). Its subprocesses inherit it. A test that sets threads itself still wins.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
if _WORKERS > 1:
    os.environ.setdefault("INTERTASK_THREADS", str(max(1, len(os.sched_getaffinity(0)) // _WORKERS)))


@pytest.fixture(autouse=True)
def no_active_experiment_left():
    """A test that leaves an active experiment or run id in the environment (mlflow.set_experiment sets
    $MLFLOW_EXPERIMENT_ID) breaks later ones far away -- a resumed run in another experiment, `mlflow
    run --experiment-name`: such a test fails itself, and the variables are cleared."""
    import mlflow

    before = {k: os.environ.get(k) for k in LEAKY}
    uri = mlflow.get_tracking_uri()
    yield
    if mlflow.get_tracking_uri() != uri:  # a test (or an entry point it ran) pointed MLflow elsewhere
        mlflow.set_tracking_uri(uri)
    leaked = {k: os.environ[k] for k in LEAKY if os.environ.get(k) != before[k] and k in os.environ}
    for key in leaked:
        del os.environ[key]
    # what an entry point run in this process sets for itself (tracking.use: MLflow's HTTP patience
    # for the config's tracking.outage_seconds) goes back, or a later test's subprocess would inherit
    # it as the user's own setting
    for key, value in SESSION_START.items():  # (a module fixture may have set them before this test)
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    assert not leaked, f"the test left {leaked} in the environment"


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Caches (tokenized sets, downloaded models, prepared models) in a per-session folder."""
    cache = tmp_path_factory.mktemp("cache")
    os.environ["INTERTASK_CACHE"] = str(cache)
    return cache


def _missing_data() -> str | None:
    """Why the real data slices the tests read cannot be found (None when they can)."""
    root = data_root()
    needed = [
        root / "xtreme" / "pawsx",
        root / "xtreme" / "xnli",
        root / "xtreme" / "udpos",
        root / "corpora",
    ]
    missing = [str(p) for p in needed if not p.is_dir()]
    if missing:
        return (
            f"the real data the tests read is missing: {', '.join(missing)} (data root {root}: "
            "../shared/data beside the checkout, or set INTERTASK_DATA to a folder in that layout)"
        )
    return None


# `make test-fast` (-m "not slow") starts no server and no browser: a test taking one of these fixtures
# is marked slow here, and a fast run that starts a server or a browser anyway fails (fast_guard).
SERVER_FIXTURES = frozenset({"mlflow_server", "postgres_url"})
FAST = {"run": False}


def pytest_configure(config) -> None:
    FAST["run"] = "not slow" in (config.getoption("markexpr", "") or "")


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if SERVER_FIXTURES & fixtures:
            item.add_marker(pytest.mark.slow)


def fast_guard(what: str) -> None:
    """Fail a test that starts a server or a browser in a run that leaves out slow tests."""
    if FAST["run"]:
        pytest.fail(f"{what} started in a run without slow tests (-m 'not slow'): mark the test slow")


def pytest_collection_finish(session) -> None:
    """Fail the run at once, with the reason, when tests that need ../shared/data were selected and it
    is not there (instead of skipping most of the suite)."""
    needing = [item for item in session.items if "shared_data" in getattr(item, "fixturenames", ())]
    reason = _missing_data() if needing else None
    if reason:
        pytest.exit(f"{reason}; {len(needing)} selected tests need it", returncode=3)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return data_root()


def _corpus(root: Path) -> list[str]:
    texts = []
    for folder, langs in (("pawsx", ("en", "de", "fr", "es", "ja")), ("xnli", ("en", "de", "fr", "ar"))):
        for lang in langs:
            lines = (
                (root / "xtreme" / folder / f"dev-{lang}.tsv").read_text(encoding="utf-8").splitlines()[:300]
            )
            texts.extend(part for line in lines for part in line.split("\t")[:2])
    return texts


def build_tiny_model(folder: Path, texts: list[str]) -> Path:
    """A 2-layer, hidden-32 BERT with a WordPiece tokenizer trained on the given texts."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=3000, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=256,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    fast.save_pretrained(folder)
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        pad_token_id=0,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, shared_data) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert"), _corpus(shared_data))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(
    root: Path, port: int, artifacts: str | None = None, env: dict | None = None
) -> subprocess.Popen:
    """A real `mlflow server` on 127.0.0.1:port with a SQLite backend and proxied artifacts under
    root (or at `artifacts`, an s3:// URI; `env`: more of the server's environment), healthy when this
    returns; its own process group (stop it with os.killpg)."""
    fast_guard("an MLflow server")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--app-name",
        "intertask",  # as README says to start it: a fresh browser opens experiments on their runs
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        artifacts or str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with open(root / "server.log", "a") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    _wait_healthy(f"http://127.0.0.1:{port}", proc, root / "server.log")
    return proc


class Relay:
    """A TCP relay from 127.0.0.1:<port> to a server's port, which can be cut (its port closed, every
    open connection reset: what clients meet while a server restarts or the network is away) and
    restored on the same port, or held (bytes stop moving, connections stay open: a server that is
    slow to answer) and released."""

    def __init__(self, target_port: int):
        self.target, self.port = target_port, _free_port()
        self.open: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.lock = threading.Lock()
        self.last_data = 0.0  # when bytes last went through (monotonic)
        self.flowing = threading.Event()
        self.flowing.set()
        self.restore()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self, drain_seconds: float = 5.0) -> None:
        """Close the port, let a response already on the wire finish (no bytes for 0.3 s, at most
        `drain_seconds`: a server restarting gracefully), then reset every connection. A response cut
        mid-body is not retried by MLflow's client (urllib3 retries connections and statuses, not a
        body read after the headers came): docs/studies.md."""
        with self.lock:
            listener, self.listener = self.listener, None
        # shutdown wakes the thread blocked in accept(); close alone leaves that call holding the port
        # open (Linux), still accepting, and a later restore could not bind it
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        deadline = time.monotonic() + drain_seconds
        while time.monotonic() < deadline and time.monotonic() - self.last_data < 0.3:
            time.sleep(0.05)
        with self.lock:
            connections, self.open = self.open, []
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def hold(self) -> None:
        """Stop moving bytes either way (what has arrived waits in the relay) until release()."""
        self.flowing.clear()

    def release(self) -> None:
        self.flowing.set()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # cut
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self.flowing.wait()
                sink.sendall(data)
                self.last_data = time.monotonic()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` for the session."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    proc = start_mlflow_server(root, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def _wait_healthy(uri: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {log.read_text()[-2000:]}") from None
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server did not become healthy in {timeout} s")


def missing_component(reason: str) -> None:
    """A test whose component (Chromium, PostgreSQL, Ray) is not here: skipped on a developer's machine,
    FAILED under CI (CI=true, which .ci/run sets), where the component is part of the job."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason, allow_module_level=True)


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


TINY_STUDY = {  # an XNLI -> PAWS-X transfer study on real slices, small enough for a test
    "intermediate": {"task": "xnli", "max_examples": {"train": 160, "dev": 48}},
    "target": {"task": "pawsx", "max_examples": {"train": 160, "dev": 48}},
    "evaluation": {"languages": ["en", "de", "fr", "ja"], "max_examples": 64},
}


def write_experiment(
    folder: Path, tiny_model, name: str, *layers: dict, study: bool = True, **sections
) -> Path:
    """An experiment YAML for the tiny model (seed 7, max_length 64, 2 epochs at 1e-3, divergences
    read on 40 sentences a set), with TINY_STUDY's stages unless `study=False`; then each of `layers`
    (a test module's own defaults) and `sections`, in order. A section given as a mapping is merged over the one before it field by
    field; any other value replaces it (None removes it). Every test module writes its configs through
    this one function."""
    data = {
        "name": name,
        "seed": 7,
        "model": {"name_or_path": str(tiny_model), "max_length": 64},
        "training": {"epochs": 2, "batch_size": 16, "learning_rate": 1.0e-3, "log_every_steps": 5},
        **(TINY_STUDY if study else {}),
        "report": {"divergence_examples": 40},  # sentences a set embedded for the divergences (500)
    }
    for layer in (*layers, sections):
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
    return write_yaml(folder / f"{name}.yaml", data)


def finetune_and_evaluate(cfg):
    """The target stage, then the evaluation of its model, as `intertask finetune` and `evaluate` run
    them (MLflow pointed at the config's store first); returns (TrainedModel, Evaluated)."""
    from intertask import tracking
    from intertask.stages import evaluate, finetune
    from intertask.study.workspace import Workspace

    tracking.use(cfg)
    ws = Workspace(cfg)
    try:
        trained = finetune(ws)
        return trained, evaluate(ws, trained)
    finally:
        ws.close()


@pytest.fixture
def tiny_config(tmp_path, tiny_model):
    """A writer of small experiments in this test's folder (see write_experiment)."""

    def make(name: str = "tiny", **sections) -> Path:
        return write_experiment(tmp_path, tiny_model, name, **sections)

    return make


@pytest.fixture
def local_store(tmp_path, monkeypatch):
    """The embedded default: a SQLite MLflow store in a temporary working folder."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def fixture_data(tmp_path_factory) -> Path:
    """MLQA, BUCC 2018 and HellaSwag slices written in their official formats (tests/fixtures.py)."""
    from .fixtures import write_all

    return write_all(tmp_path_factory.mktemp("fixture-data"))


def main_against(server: str, config, *extra: str) -> None:
    """`intertask main CONFIG` with MLFLOW_TRACKING_URI set to the server for this call only."""
    from intertask import cli

    os.environ["MLFLOW_TRACKING_URI"] = server
    try:
        assert cli.main(["main", str(config), *extra]) == 0
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]


def mlflow_run(entry: str, config, server: str, experiment: str, cwd, *params: str):
    """`mlflow run <this repository> -e ENTRY --env-manager local -P config=CONFIG [-P ...]` against the
    server, with this environment's python first on PATH (the MLproject commands run `python`)."""
    fast_guard("`mlflow run`")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": server,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    command = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", entry, "--env-manager", "local"]
    command += ["--experiment-name", experiment, "-P", f"config={config}"]
    for param in params:
        command += ["-P", param]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=cwd)


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL database for the study storage: `.ci/run` starts Debian's postgresql on 127.0.0.1
    and sets INTERTASK_TEST_POSTGRES_URL."""
    url = os.environ.get("INTERTASK_TEST_POSTGRES_URL")
    if not url:
        missing_component("no PostgreSQL: set INTERTASK_TEST_POSTGRES_URL (.ci/run starts one on 127.0.0.1)")
    import sqlalchemy

    try:
        with sqlalchemy.create_engine(url).connect():
            pass
    except Exception as err:
        pytest.fail(
            f"INTERTASK_TEST_POSTGRES_URL is set but {url.split('@')[-1]} cannot be reached: {redact(str(err))}"
        )
    return url
