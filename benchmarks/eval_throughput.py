"""Zero-shot evaluation throughput over 7 languages: intertask's evaluation path vs a per-language
`transformers.pipeline("text-classification")` loop, same model (e5-small + a 3-way head) and data
(XNLI test split, N lines per language). Printed as a table; results go to BENCHMARKS.md.

    python benchmarks/eval_throughput.py [--per-language 300]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from common import examples
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
from transformers.utils import logging as hf_logging

from intertask import pretrained
from intertask.compute.encoding import encode
from intertask.compute.evaluation import predict_outputs
from intertask.config import TrainingConfig
from intertask.tasks import builtin_catalog
from intertask.tasks.types import task_type

LANGUAGES = ["en", "de", "es", "fr", "ru", "zh", "ar"]


def pipeline_loop(model, tokenizer, sets, batch_size: int) -> tuple[float, dict]:
    classify = pipeline(
        "text-classification",
        model=model,
        tokenizer=tokenizer,
        device=-1,
        batch_size=batch_size,
        truncation=True,
        max_length=128,
    )
    started, predictions = time.perf_counter(), {}
    for lang, data in sets.items():
        inputs = [{"text": a, "text_pair": b} for a, b in (e.texts for e in data.examples)]
        predictions[lang] = [r["label"] for r in classify(inputs)]
    return time.perf_counter() - started, predictions


def intertask_path(model, tokenizer, task, sets, bf16: bool) -> tuple[float, dict]:
    started, predictions = time.perf_counter(), {}
    for lang, data in sets.items():
        encoded = encode(task, data, tokenizer, 128, None)  # tokenization is timed (no cache)
        outputs = predict_outputs(
            model,
            task,
            encoded,
            pad_id=tokenizer.pad_token_id,
            batch_tokens=TrainingConfig().eval_batch_tokens,
            bf16=bf16,
        )
        predictions[lang] = [model.config.id2label[i] for i in task.decode(outputs, encoded, data)]
    return time.perf_counter() - started, predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-language", type=int, default=300)
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    model_dir = str(pretrained.prepare("e5-small"))
    spec = builtin_catalog().spec("xnli")
    task = task_type(spec)
    sets = {lang: examples("xnli", lang, "test", args.per_language) for lang in LANGUAGES}
    total = sum(len(s) for s in sets.values())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, **task.model_kwargs()).eval()
    print(
        f"e5-small + 3-way head, XNLI test, {len(LANGUAGES)} languages x {args.per_language} = {total} pairs, "
        f"torch threads {torch.get_num_threads()}"
    )
    runs = {
        "transformers pipeline per language, batch_size=1 (default)": lambda: pipeline_loop(
            model, tokenizer, sets, 1
        ),
        "transformers pipeline per language, batch_size=16": lambda: pipeline_loop(
            model, tokenizer, sets, 16
        ),
        "intertask, fp32 (length-sorted batches of <= 2048 tokens)": lambda: intertask_path(
            model, tokenizer, task, sets, False
        ),
        "intertask, bf16 autocast (demo setting)": lambda: intertask_path(model, tokenizer, task, sets, True),
    }
    results, reference = {}, None
    for name, run in runs.items():
        seconds, predictions = run()
        flat = [p for lang in LANGUAGES for p in predictions[lang]]
        reference = reference or flat
        agreement = float(np.mean([a == b for a, b in zip(flat, reference, strict=True)]))
        results[name] = (total / seconds, agreement)
    base = next(iter(results.values()))[0]
    batched = list(results.values())[1][0]
    print("\n| configuration | examples/s | vs pipeline bs=1 | vs pipeline bs=16 | same predictions |")
    print("|---|---:|---:|---:|---:|")
    for name, (rate, agreement) in results.items():
        print(f"| {name} | {rate:.1f} | {rate / base:.2f}x | {rate / batched:.2f}x | {agreement:.1%} |")


if __name__ == "__main__":
    main()
