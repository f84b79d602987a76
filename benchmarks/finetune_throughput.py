"""Target fine-tuning throughput: intertask's loop vs a Hugging Face Trainer with run_glue-style defaults.

Same model (e5-small), same data (PAWS-X English, the train split's first N examples), batch 16, one
epoch each, wall time of the whole training call. Printed as a table; results go to BENCHMARKS.md.

    python benchmarks/finetune_throughput.py [--examples 480]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments
from transformers.utils import logging as hf_logging

from intertask import models
from intertask.config import SamplingConfig, TrainingConfig
from intertask.data import data_root
from intertask.encoding import encode
from intertask.modeling import HeadSpec, build_models
from intertask.tasks import builtin_catalog
from intertask.tasks.examples import load_examples
from intertask.tasks.types import task_type
from intertask.training import TrainPart, train

FRACTIONS = {"train": 0.6, "dev": 0.1, "test": 0.3}


def _data(n: int):
    spec = builtin_catalog().spec("pawsx")
    kwargs = {"root": data_root(), "fractions": FRACTIONS, "seed": 13}
    return (
        spec,
        load_examples(spec, "en", "train", max_examples=n, **kwargs),
        load_examples(spec, "en", "dev", max_examples=16, **kwargs),
    )


def trainer_run_glue(model_dir: str, texts: list[tuple[str, str]], labels: list[int]) -> float:
    """run_glue defaults: pad to max_seq_length 128, fp32, AdamW, no length grouping."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    enc = tok(
        [a for a, _ in texts], [b for _, b in texts], padding="max_length", truncation=True, max_length=128
    )
    rows = [
        {"input_ids": i, "attention_mask": m, "labels": y}
        for i, m, y in zip(enc["input_ids"], enc["attention_mask"], labels, strict=True)
    ]
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=16,
            num_train_epochs=1,
            learning_rate=2e-5,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            seed=13,
            use_cpu=True,
        )
        started = time.perf_counter()
        Trainer(model=model, args=args, train_dataset=rows).train()
        return len(rows) / (time.perf_counter() - started)


def intertask_loop(model_dir: str, spec, train_set, dev_set, *, bf16: bool, freeze: bool) -> float:
    task = task_type(spec)
    tok = AutoTokenizer.from_pretrained(model_dir)
    head = HeadSpec(spec.name, task.head, task.model_kwargs(), task.head_signature())
    model = build_models(model_dir, [head], seed=13, freeze_word_embeddings=freeze)[spec.name]
    cfg = TrainingConfig(epochs=1, batch_size=16, learning_rate=2e-5, bf16=bf16, log_every_steps=1000)
    part = TrainPart(
        spec.name,
        task,
        model,
        encode(task, train_set, tok, 128, None),
        encode(task, dev_set, tok, 128, None),
        dev_set,
        "accuracy",
    )
    started = time.perf_counter()
    train([part], cfg, seed=13, pad_id=tok.pad_token_id, sampling=SamplingConfig(), desc="intertask")
    return len(train_set) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=480)
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    model_dir = str(models.prepare("e5-small"))
    spec, train_set, dev_set = _data(args.examples)
    texts = [e.texts for e in train_set.examples]
    labels = [int(e.label) for e in train_set.examples]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lengths = encode(task_type(spec), train_set, tokenizer, 128, None).lengths
    print(
        f"e5-small, PAWS-X en, {len(texts)} examples (mean {np.mean(lengths):.1f} tokens, max {max(lengths)}), "
        f"batch 16, 1 epoch, torch threads {torch.get_num_threads()}"
    )
    results = {
        "HF Trainer, run_glue defaults (pad 128, fp32)": trainer_run_glue(model_dir, texts, labels),
        "intertask, fp32, dynamic padding + length groups": intertask_loop(
            model_dir, spec, train_set, dev_set, bf16=False, freeze=False
        ),
        "intertask, demo settings (+ bf16, frozen embeddings)": intertask_loop(
            model_dir, spec, train_set, dev_set, bf16=True, freeze=True
        ),
    }
    base = next(iter(results.values()))
    print("\n| configuration | examples/s | vs Trainer |\n|---|---:|---:|")
    for name, rate in results.items():
        print(f"| {name} | {rate:.1f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
