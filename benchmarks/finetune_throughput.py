"""Target fine-tuning: intertask's loop vs Hugging Face Trainers, side by side in one run.

Same model (e5-small), same data (PAWS-X English: the seeded train split's first N pairs, one epoch,
batch 16, lr 2e-5, no warm-up or weight decay, as run_glue), each configuration in its own process so
its peak RSS is its own. Reported per configuration: training examples/s (wall time of the training
call), accuracy of the final model (the same evaluation code for every model, fp32, on M pairs of the
seeded test split; intertask selects its best epoch on 100 other dev pairs), peak RSS, and for intertask
the training FLOP rate (6 x non-embedding parameters x real tokens). The CPU, its bf16 support and the
fp32 / bf16 product rates measured here are printed with the table. intertask's variants run in
`--precision` (default auto: bf16 where the CPU has it natively, else fp32; the `_fp32` variants always
fp32). With several `--seeds` every configuration runs once per seed (model initialisation and batch
order; the data stay fixed): examples/s is the mean, accuracy the mean with its standard deviation
across seeds, peak RSS the largest. Printed as a table; results go to BENCHMARKS.md.

    python benchmarks/finetune_throughput.py [--examples 480] [--dev 400] [--epochs 1] [--lr 2e-5]
                                             [--seeds 13 ...] [--only NAME...] [--precision auto]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from common import examples

from intertask.config import TrainingConfig

VARIANTS = {
    "trainer_run_glue": "HF Trainer, run_glue defaults (pad to 128, fp32)",
    "trainer_fp32_tuned": "HF Trainer, best fp32 (dynamic padding, group_by_length)",
    "trainer_tuned": "HF Trainer, tuned (bf16, dynamic padding, group_by_length)",
    "intertask_default": "intertask, defaults (precision auto, all weights trained)",
    "intertask_fp32": "intertask, fp32 (dynamic padding + length groups, fused AdamW)",
    "intertask_fp32_shuffled": "intertask, fp32, dynamic padding, shuffled batches (no length groups)",
    "intertask_demo": "intertask, demo settings (frozen word embeddings, precision auto)",
    "intertask_demo_torch_dropout": "intertask, demo settings with torch's dropout (fast_cpu_dropout off)",
    "intertask_sparse": "intertask, sparse-updated word embeddings (SparseAdam), precision auto",
    "intertask_sparse_fp32": "intertask, sparse-updated word embeddings (SparseAdam), fp32",
    "intertask_lora": "intertask, LoRA r=8 on query/value (precision auto)",
}


def _data(task: str, n: int, dev: int):
    from intertask.tasks import builtin_catalog

    return (
        builtin_catalog().spec(task),
        examples(task, "en", "train", n),
        examples(task, "en", "dev", 100),  # intertask's best-epoch selection
        examples(task, "en", "test", dev),  # the reported accuracy
    )


def _accuracy(model, spec, scored, tokenizer) -> float:
    from intertask.compute.encoding import encode
    from intertask.compute.evaluation import evaluate_set
    from intertask.tasks.types import task_type

    task = task_type(spec)
    model.eval()
    result = evaluate_set(
        model,
        task,
        scored,
        encode(task, scored, tokenizer, 128, None),
        pad_id=tokenizer.pad_token_id,
        batch_tokens=2048,
    )
    return float(result.scores["accuracy"])


def _trainer(
    model_dir: str, spec, train_set, scored, *, tuned: bool, bf16: bool, epochs: int, lr: float, seed: int
) -> dict:
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from intertask.tasks.types import task_type

    tok = AutoTokenizer.from_pretrained(model_dir)
    columns = list(zip(*(e.texts for e in train_set.examples), strict=True))  # one text, or a pair
    labels = [int(e.label) for e in train_set.examples]
    enc = tok(*columns, truncation=True, max_length=128, padding=False if tuned else "max_length")
    rows = Dataset.from_dict(
        {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}
    )
    torch.manual_seed(seed)
    head = {
        k: v for k, v in task_type(spec).model_kwargs().items() if k in ("num_labels", "id2label", "label2id")
    }
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, **head)
    with tempfile.TemporaryDirectory() as out:
        extra = {"bf16": bf16, "train_sampling_strategy": "group_by_length"} if tuned else {}
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=16,
            num_train_epochs=epochs,
            learning_rate=lr,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            seed=seed,
            use_cpu=True,
            **extra,
        )
        collator = DataCollatorWithPadding(tok) if tuned else None
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collator)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "accuracy": _accuracy(model, spec, scored, tok)}


def _intertask(
    model_dir: str,
    spec,
    train_set,
    dev_set,
    test_set,
    *,
    precision: str,
    freeze: bool,
    sparse: bool,
    lora: bool,
    fast_dropout: bool,
    group_by_length: bool,
    group_window: int,
    epochs: int,
    lr: float,
    seed: int,
) -> dict:
    from transformers import AutoTokenizer

    from intertask.compute import adapters
    from intertask.compute.encoding import encode
    from intertask.compute.modeling import HeadSpec, build_models
    from intertask.compute.training import TrainPart, train
    from intertask.config import PeftConfig, SamplingConfig, TrainingConfig
    from intertask.tasks.types import task_type

    task = task_type(spec)
    tok = AutoTokenizer.from_pretrained(model_dir)
    head = HeadSpec(spec.name, task.head, task.model_kwargs(), task.head_signature())
    model = build_models(
        model_dir, [head], seed=seed, freeze_word_embeddings=freeze, sparse_word_embeddings=sparse
    )[spec.name]
    if lora:
        adapters.attach(
            model.base_model, PeftConfig(method="lora", rank=8, alpha=16), model.config.model_type
        )
    cfg = TrainingConfig(
        epochs=epochs,
        batch_size=16,
        learning_rate=lr if not lora else 10 * lr,
        warmup_ratio=0.0,
        weight_decay=0.0,
        precision=precision,
        fast_cpu_dropout=fast_dropout,
        group_by_length=group_by_length,
        length_group_window=group_window,
        log_every_steps=1000,
        checkpoints=False,
    )
    train_enc = encode(task, train_set, tok, 128, None)
    part = TrainPart(
        spec.name, task, model, train_enc, encode(task, dev_set, tok, 128, None), dev_set, "accuracy"
    )
    result = train(
        [part], cfg, seed=seed, pad_id=tok.pad_token_id, sampling=SamplingConfig(), desc="intertask"
    )
    encoder = model.base_model
    embedding = sum(p.numel() for p in encoder.embeddings.parameters())
    non_embedding = sum(p.numel() for p in model.parameters()) - embedding
    tokens = epochs * int(np.sum(train_enc.lengths))
    return {
        "seconds": result.train_seconds,
        "accuracy": _accuracy(model, spec, test_set, tok),
        "flops": 6.0 * non_embedding * tokens,
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def run_variant(
    name: str,
    task: str,
    examples: int,
    dev: int,
    epochs: int,
    lr: float,
    seed: int,
    group_window: int,
    precision: str,
) -> dict:
    from transformers.utils import logging as hf_logging

    from intertask import pretrained

    hf_logging.set_verbosity_error()
    model_dir = str(pretrained.prepare("e5-small"))
    spec, train_set, dev_set, test_set = _data(task, examples, dev)
    if name.startswith("trainer"):
        out = _trainer(
            model_dir,
            spec,
            train_set,
            test_set,
            tuned=name in ("trainer_tuned", "trainer_fp32_tuned"),
            bf16=name == "trainer_tuned",
            epochs=epochs,
            lr=lr,
            seed=seed,
        )
    else:
        out = _intertask(
            model_dir,
            spec,
            train_set,
            dev_set,
            test_set,
            precision="fp32" if "fp32" in name else precision,
            freeze=name.startswith("intertask_demo"),
            sparse=name.startswith("intertask_sparse"),
            lora=name == "intertask_lora",
            fast_dropout=name != "intertask_demo_torch_dropout",
            group_by_length=name != "intertask_fp32_shuffled",
            group_window=group_window,
            epochs=epochs,
            lr=lr,
            seed=seed,
        )
    out["examples_per_second"] = epochs * len(train_set) / out["seconds"]
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["examples"] = len(train_set)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--task", default="pawsx", help="a classification task of the catalog (sst2 learns fast)"
    )
    parser.add_argument("--examples", type=int, default=480)
    parser.add_argument("--dev", type=int, default=400, help="held-out (test split) pairs scored")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=2e-5, help="learning rate (LoRA: 10x)")
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[13], help="one run per seed and configuration"
    )
    parser.add_argument(
        "--group-window",
        type=int,
        default=TrainingConfig().length_group_window,
        help="intertask's training.length_group_window: batches per length-sorting window",
    )
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), help="a subset of the configurations")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="training.precision of intertask's variants (those named _fp32 always run fp32)",
    )
    parser.add_argument("--variant", choices=list(VARIANTS), help="run one configuration (used internally)")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.variant:
        out = run_variant(
            args.variant,
            args.task,
            args.examples,
            args.dev,
            args.epochs,
            args.lr,
            args.seeds[0],
            args.group_window,
            args.precision,
        )
        print(json.dumps(out))
        return
    chosen = args.only or list(VARIANTS)
    results = {}
    for name in chosen:
        runs = [_run_process(name, args, seed) for seed in args.seeds]
        results[name] = _aggregate(runs)
        print(f"{name}: {results[name]}", file=sys.stderr)
    _print_table(chosen, results, args)


def _run_process(name: str, args: argparse.Namespace, seed: int) -> dict:
    command = [
        sys.executable,
        __file__,
        "--variant",
        name,
        "--task",
        args.task,
        "--examples",
        str(args.examples),
    ]
    command += [
        "--dev",
        str(args.dev),
        "--epochs",
        str(args.epochs),
        "--lr",
        str(args.lr),
        "--seeds",
        str(seed),
        "--group-window",
        str(args.group_window),
        "--precision",
        args.precision,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _aggregate(runs: list[dict]) -> dict:
    """Several seeds of one configuration: mean time and speed, accuracy mean and sample sd, largest RSS."""
    out = dict(runs[0])
    for key in ("seconds", "examples_per_second", "accuracy"):
        out[key] = float(np.mean([r[key] for r in runs]))
    out["accuracies"] = [r["accuracy"] for r in runs]
    out["accuracy_sd"] = float(np.std(out["accuracies"], ddof=1)) if len(runs) > 1 else None
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    return out


def _print_table(chosen: list[str], results: dict, args: argparse.Namespace) -> None:
    from step_breakdown import matmul_rate  # this folder is on sys.path when the script runs

    from intertask.compute import hardware

    bf16_rate = matmul_rate(1024, 1024, 1024, torch.bfloat16)
    fp32_rate = matmul_rate(1024, 1024, 1024, torch.float32)
    first = results[chosen[0]]
    rt = hardware.runtime(args.precision, None, announce=False)
    print(
        f"\n{rt.hardware.describe()}; intertask precision {args.precision} -> {rt.precision.name}; "
        f"torch threads {rt.threads}\n"
        f"e5-small, {args.task} en, {first['examples']} training pairs, {args.epochs} epoch(s), batch 16, lr {args.lr:g}; "
        f"accuracy on {args.dev} held-out (test split) pairs; seeds {' '.join(map(str, args.seeds))}\n"
    )
    glue = results.get("trainer_run_glue")
    tuned = results.get("trainer_fp32_tuned") or results.get("trainer_tuned")

    def ratio(r: dict, base: dict | None) -> str:
        return f"{r['examples_per_second'] / base['examples_per_second']:.2f}x" if base else ""

    tuned_name = "best fp32 Trainer" if "trainer_fp32_tuned" in results else "tuned Trainer"
    print(
        f"| configuration | examples/s | vs run_glue | vs {tuned_name} | held-out acc. | peak RSS (MiB) | training GFLOP/s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in chosen:
        r = results[name]
        flops = f"{r['flops'] / r['seconds'] / 1e9:.1f}" if "flops" in r and name != "intertask_lora" else ""
        print(
            f"| {VARIANTS[name]} | {r['examples_per_second']:.1f} | {ratio(r, glue)} | {ratio(r, tuned)} | "
            f"{_accuracy_cell(r)} | {r['peak_rss_mb']:.0f} | {flops} |"
        )
    if len(args.seeds) > 1:
        print("\nheld-out accuracy per seed:")
        for name in chosen:
            print(f"  {name}: " + " ".join(f"{100 * a:.1f}" for a in results[name]["accuracies"]))
    print(f"\nmatmul 1024x1024: bf16 {bf16_rate / 1e9:.1f} GFLOP/s, fp32 {fp32_rate / 1e9:.1f} GFLOP/s")
    if "intertask_demo" in results:
        demo = results["intertask_demo"]
        demo_rate = demo["flops"] / demo["seconds"]
        print(
            f"intertask demo training {demo_rate / 1e9:.1f} GFLOP/s = "
            f"{100 * demo_rate / max(bf16_rate, fp32_rate):.0f} % of the faster matmul rate"
        )
    if "intertask_lora" in results and "intertask_demo" in results:
        lora, full = results["intertask_lora"], results["intertask_demo"]
        print(
            f"LoRA vs full (demo settings): {lora['examples_per_second']:.1f} vs "
            f"{full['examples_per_second']:.1f} ex/s, peak RSS {lora['peak_rss_mb']:.0f} vs "
            f"{full['peak_rss_mb']:.0f} MiB, trainable parameters {lora['trainable']:,} vs {full['trainable']:,}"
        )


def _accuracy_cell(r: dict) -> str:
    if r["accuracy_sd"] is None:
        return f"{100 * r['accuracy']:.1f}"
    return f"{100 * r['accuracy']:.1f} ± {100 * r['accuracy_sd']:.1f}"


if __name__ == "__main__":
    main()
