"""Retrieval probes of an encoder before and after each stage, and sentence embeddings of texts
under the base model (the report's embedding divergence)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from intertask import tracking
from intertask.compute import hardware, modeling
from intertask.compute.evaluation import example_rows, language_table, table_metrics
from intertask.config import EvalTaskConfig, resolve
from intertask.stages.common import TAG, eval_training, recorded_run, stage_runtime
from intertask.study.workspace import Workspace
from intertask.tasks.base import EncodedSet, ExampleSet
from intertask.tasks.examples import select
from intertask.tasks.retrieval import RetrievalTask


def run_probes(
    ws: Workspace, encoder, tokenizer, point: str, precision: hardware.Precision
) -> pd.DataFrame | None:
    """Every probe configured for `point` (base / intermediate / target) on `encoder`, logged in the
    active run as probe/<task>/<split>/<language>/<metric>; the table gets a `point` column."""
    probes = [p for p in ws.cfg.probes if point in p.after]
    if not probes:
        return None
    tables = []
    for probe in probes:
        entry = EvalTaskConfig(
            task=probe.task, languages=probe.languages, split=probe.split, max_examples=probe.max_examples
        )
        task = resolve.catalog(ws.cfg).task(probe.task)
        sets = {
            lang: limit(ws, ws.evaluation_examples(probe.task, lang, probe.split), probe.max_examples)
            for lang in entry.languages or task.spec.evaluated_languages
        }
        table, _, _ = retrieval_table(ws, task, sets, encoder, tokenizer, probe.split, precision)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True).assign(point=point)
    tracking.log_metrics(table_metrics(table, prefix="probe/"))
    tracking.log_table(table, f"probes/{point}")
    return table


def probe_base(
    ws: Workspace, parent_run_id: str | None, stage_key: str | None = None
) -> tuple[str, pd.DataFrame]:
    """The probes configured for `base`, on the untrained model, in a run of their own."""
    tags = {
        f"{TAG}stage": "probe",
        f"{TAG}stage_key": stage_key or "",
        f"{TAG}model": ws.cfg.model.name_or_path,
    }
    source = modeling.resolve_source(ws.cfg.model.name_or_path)
    runtime = stage_runtime(eval_training(ws.cfg))
    title = f"probe base model ({ws.cfg.model.name_or_path})"
    with recorded_run(ws, title, tags, parent_run_id, runtime=runtime) as run_id:
        encoder = modeling.load_encoder(Path(source)).to(modeling.device())
        table = run_probes(ws, encoder, modeling.load_tokenizer(source), "base", runtime.precision)
    return run_id, table


def embed_texts(ws: Workspace, texts: list[str]) -> np.ndarray:
    """Unit-length sentence embeddings of texts with the base model (retrieval settings)."""
    source = modeling.resolve_source(ws.cfg.model.name_or_path)
    if ws._encoder is None:
        ws._encoder = (
            modeling.load_encoder(Path(source)).to(modeling.device()),
            modeling.load_tokenizer(source),
        )
    return embed_with(ws, *ws._encoder, texts)


def embed_with(ws: Workspace, encoder, tokenizer, texts: list[str]) -> np.ndarray:
    """Unit-length sentence embeddings of texts with any encoder (retrieval settings: pooling, layer,
    prefix and length of `evaluation.retrieval`)."""
    options = ws.cfg.evaluation.retrieval
    enc = tokenizer([options.prefix + t for t in texts], truncation=True, max_length=options.max_length)
    encoded = EncodedSet(
        {"input_ids": [np.asarray(ids, np.int32) for ids in enc["input_ids"]]}, {}, np.arange(len(texts))
    )
    retrieval = RetrievalTask(resolve.catalog(ws.cfg).spec("tatoeba"))
    return retrieval.embed(
        encoder,
        encoded,
        layer=options.layer,
        pad_id=tokenizer.pad_token_id,
        batch_tokens=ws.cfg.training.eval_batch_tokens,
        precision=stage_runtime(ws.cfg.training).precision,
    )


def limit(ws: Workspace, data: ExampleSet, k: int | None) -> ExampleSet:
    if k is None:
        return data
    positions = resolve.catalog(ws.cfg).task(data.task).choose(data.examples, k, ws.cfg.split_seed)
    return select(data, data.uids[positions], f"max_examples={k}")


def retrieval_table(
    ws, task, sets: dict[str, ExampleSet], encoder, tokenizer, split: str, precision, left_out=None
):
    def vectors_of(data: ExampleSet) -> np.ndarray:
        encoded = ws.encode(task, data, tokenizer, options.max_length, prefix=options.prefix)
        return task.embed(
            encoder,
            encoded,
            layer=options.layer,
            pad_id=tokenizer.pad_token_id,
            batch_tokens=eval_training(ws.cfg).eval_batch_tokens,
            precision=precision,
        )

    options = ws.cfg.evaluation.retrieval
    per_language, predictions, examples = {}, [], []
    for language, data in sets.items():
        vectors = vectors_of(data)
        threshold = None
        if task.mining:  # never fit on the gold being scored (retrieval.py): dev's, else cross-fitted
            threshold, origin = _mining_threshold(ws, task, language, split, vectors_of)
            tracking.log_params({f"mining.{task.name}.{language}.threshold_from": origin})
        per_language[language], found, stats = task.score_embeddings(
            vectors, data, task.spec.metrics, threshold
        )
        predictions.append(pd.DataFrame({"task": task.name, "language": language, "retrieved": found}))
        examples.append(example_rows(data, stats))
    sizes = {k: sum(e.label[0] == "source" for e in v.examples) for k, v in sets.items()}
    return language_table(task.name, split, per_language, sizes, "en", left_out), predictions, examples


def _mining_threshold(ws, task, language: str, split: str, vectors_of) -> tuple[float | None, str]:
    """The threshold chosen on the language's dev split (for any other split), or None and why."""
    if split != "dev" and "dev" in task.spec.splits_for(language):
        dev = ws.evaluation_examples(task.name, language, "dev")
        threshold = task.mining_threshold(vectors_of(dev), dev)
        tracking.log_metrics({f"mining_threshold/{task.name}/{language}": threshold})
        return threshold, "dev"
    return None, f"cross-fitted halves of {split}"
