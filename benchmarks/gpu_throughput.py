"""Fine-tuning throughput on a GPU: intertask's loop vs the tuned Hugging Face Trainer, same model, same data.

The model: an XLM-R-base-sized encoder (250,002-piece vocabulary, 12 layers, hidden 768, 12 heads, FFN
3072) with a 2-class head, randomly initialised from a seed (no hub). The data: `--examples` synthetic
sentence pairs, token ids drawn at random, lengths drawn from PAWS-X's English length distribution
(mean 63, sd 18 tokens, clipped to 8..128). Both train one epoch at batch 32, lr 2e-5, no warm-up, in
the precision intertask's `auto` picks on this GPU (bf16, or fp16 with loss scaling): the Trainer with
dynamic padding, group_by_length and fused AdamW; intertask with its defaults. Each runs a short
warm-up first (CUDA kernels, allocator), then the timed epoch. Printed: GPU, precision,
examples/s and the ratio, peak GPU memory.

    python benchmarks/gpu_throughput.py [--examples 4096] [--batch 32]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

PAD = 1  # XLM-R's pad id


def _lengths(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(rng.normal(63, 18, n)), 8, 128).astype(np.int64)


def _rows(n: int, vocab: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    ids = [rng.integers(5, vocab, size=length).astype(np.int32) for length in _lengths(n, seed)]
    for row in ids:
        row[0], row[-1] = 0, 2  # <s> ... </s>
    return ids, rng.integers(0, 2, size=n)


def _model(seed: int):
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    config = XLMRobertaConfig(
        vocab_size=250002,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=PAD,
        num_labels=2,
    )
    torch.manual_seed(seed)
    return XLMRobertaForSequenceClassification(config)


def _collate(features: list[dict]) -> dict[str, torch.Tensor]:
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), width), PAD, dtype=torch.long)
    for r, f in enumerate(features):
        ids[r, : len(f["input_ids"])] = torch.as_tensor(f["input_ids"])
    return {
        "input_ids": ids,
        "attention_mask": (ids != PAD).long(),
        "labels": torch.as_tensor([f["labels"] for f in features]),
    }


def trainer(ids, labels, precision: str, batch: int, seed: int) -> float:
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    rows = Dataset.from_dict({"input_ids": [r.tolist() for r in ids], "labels": labels.tolist()})

    def run(dataset) -> float:
        model = _model(seed).cuda()
        args = TrainingArguments(
            output_dir="/tmp/intertask-gpu-trainer",
            per_device_train_batch_size=batch,
            num_train_epochs=1,
            learning_rate=2e-5,
            bf16=precision == "bf16",
            fp16=precision == "fp16",
            train_sampling_strategy="group_by_length",
            optim="adamw_torch_fused",
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            seed=seed,
            dataloader_num_workers=2,
        )
        trained = Trainer(model=model, args=args, train_dataset=dataset, data_collator=_collate)
        torch.cuda.synchronize()
        started = time.perf_counter()
        trained.train()
        torch.cuda.synchronize()
        return time.perf_counter() - started

    run(rows.select(range(8 * batch)))  # warm-up
    torch.cuda.reset_peak_memory_stats()
    return run(rows)


def intertask(ids, labels, batch: int, seed: int) -> float:
    from intertask.compute import hardware
    from intertask.compute.training import TrainPart, train
    from intertask.config import SamplingConfig, TrainingConfig
    from intertask.tasks import builtin_catalog
    from intertask.tasks.base import EncodedSet, Example, ExampleSet
    from intertask.tasks.types import task_type

    task = task_type(builtin_catalog().spec("pawsx"))
    dev_ids, dev_labels = ids[:64], labels[:64]
    dev = ExampleSet(
        "pawsx",
        "en",
        "dev",
        "dev",
        tuple(Example(i, ("", ""), int(y)) for i, y in enumerate(dev_labels)),
        (),
        "",
        64,
    )

    def encoded(rows, y) -> EncodedSet:
        return EncodedSet({"input_ids": list(rows)}, {"labels": np.asarray(y)}, np.arange(len(rows)))

    cfg = TrainingConfig(
        epochs=1,
        batch_size=batch,
        learning_rate=2e-5,
        warmup_ratio=0.0,
        checkpoints=False,
        log_every_steps=50,
    )
    runtime = hardware.runtime(cfg.precision, None)

    def run(n: int) -> float:
        model = _model(seed).cuda()
        part = TrainPart(
            "pawsx", task, model, encoded(ids[:n], labels[:n]), encoded(dev_ids, dev_labels), dev, "accuracy"
        )
        result = train([part], cfg, seed=seed, pad_id=PAD, sampling=SamplingConfig(), runtime=runtime)
        return result.train_seconds

    run(8 * batch)  # warm-up
    torch.cuda.reset_peak_memory_stats()
    return run(len(ids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs a GPU")
    from intertask.compute import hardware

    precision = hardware.resolve_precision("auto", hardware.probe()).name
    ids, labels = _rows(args.examples, 250002, args.seed)
    results = {}
    for name, fn in (
        (
            "HF Trainer, tuned (dynamic padding, group_by_length, fused AdamW)",
            lambda: trainer(ids, labels, precision, args.batch, args.seed),
        ),
        ("intertask, defaults", lambda: intertask(ids, labels, args.batch, args.seed)),
    ):
        seconds = fn()
        results[name] = (len(ids) / seconds, torch.cuda.max_memory_allocated() / 2**30)
        torch.cuda.empty_cache()
    print(
        f"\n{torch.cuda.get_device_name(0)}, torch {torch.__version__}, precision {precision}; XLM-R-base-sized "
        f"random encoder, {args.examples} synthetic pairs (PAWS-X lengths), batch {args.batch}, one epoch\n"
    )
    base = next(iter(results.values()))[0]
    print("| configuration | examples/s | vs Trainer | peak GPU memory (GiB) |\n|---|---:|---:|---:|")
    for name, (rate, memory) in results.items():
        print(f"| {name} | {rate:.0f} | {rate / base:.2f}x | {memory:.1f} |")


if __name__ == "__main__":
    main()
