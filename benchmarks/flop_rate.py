"""Where the training FLOPs go: e5-small training steps against the CPU's bf16 matmul rate.

1. bf16 matmul rate: a large square product (the CPU's attainable peak) and the products an encoder
   layer actually runs (rows = tokens of a batch; 384 -> 384, 384 -> 1536, 1536 -> 384 for e5-small,
   and the same at the widest width of the width study), the forward and the two backward products of
   each in the memory layout autograd gives them, and the rate of one layer's mix of them.
2. Training steps (forward, backward, fused AdamW, bf16 autocast, frozen word embeddings: the demo
   settings) on real PAWS-X English batches, for several batch sizes: non-embedding FLOPs
   (6 x parameters x real tokens) per second, and its share of the peak.
3. The attention path: PyTorch's SDPA (transformers' default) or the eager bmm/softmax path, with the
   model's attention dropout (0.1) or none -- with dropout, SDPA on CPU takes the unfused math path and
   samples a Bernoulli mask per attention score; without, its fused kernel's backward is slow here.
4. A torch.profiler breakdown of one batch size: time in matrix products vs everything else (attention
   kernels, layer norm, GELU, dropout, casts, optimizer).
5. Width: the same loop on randomly initialised encoders of e5-small's architecture and vocabulary but
   wider (FFN 4x, heads of 64, a few layers: the rate is per layer), to see whether a wider model than
   e5-small could reach the target. For each width: the training rate, the matrix products' share of the
   step and their own rate inside it (the profiler's FLOP count of mm/addmm/bmm over their time), and
   the rate with the weights themselves in bf16 (no autocast casts; an upper bound, not a training
   recipe: bf16 weights lose small updates).

    python benchmarks/flop_rate.py [--batches 16 32 64] [--steps 12] [--widths 384 768 1024 2048]
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict

import numpy as np
import torch

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")


def rate(m: int, k: int, n: int, layout: str = "plain", seconds: float = 1.5) -> float:
    """FLOP/s of a bf16 (m x k) @ (k x n) product with its operands laid out as a training step has them:
    "plain" both contiguous (the peak, and grad input = g @ W); "linear" the forward x @ W^T, W stored
    n x k as nn.Linear holds it; "grad_weight" the weight gradient g^T @ x, g stored k x m and read
    transposed."""
    bf16 = torch.bfloat16
    if layout == "linear":
        x, w = torch.randn(m, k, dtype=bf16), torch.randn(n, k, dtype=bf16)

        def product():
            return torch.nn.functional.linear(x, w)
    elif layout == "grad_weight":
        g, x = torch.randn(k, m, dtype=bf16), torch.randn(k, n, dtype=bf16)

        def product():
            return g.t() @ x
    else:
        a, b = torch.randn(m, k, dtype=bf16), torch.randn(k, n, dtype=bf16)

        def product():
            return a @ b

    for _ in range(5):
        product()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        product()
        count += 1
    return 2.0 * m * k * n * count / (time.perf_counter() - started)


def layer_products(rows: int, width: int) -> dict[str, tuple[int, int, int, str]]:
    """The forward and the two backward products (grad input, grad weight) of each linear of one encoder
    layer (attention projections width -> width, FFN width -> 4 width -> width) over `rows` tokens."""
    shapes = {}
    linears = {
        f"attention {width}x{width}": (width, width),
        f"ffn in {width}x{4 * width}": (width, 4 * width),
        f"ffn out {4 * width}x{width}": (4 * width, width),
    }
    for name, (fan_in, fan_out) in linears.items():
        shapes[f"{name} fwd"] = (rows, fan_in, fan_out, "linear")
        shapes[f"{name} grad-in"] = (rows, fan_out, fan_in, "plain")
        shapes[f"{name} grad-W"] = (fan_out, rows, fan_in, "grad_weight")
    return shapes


def product_table(rows: int, width: int, peak: float) -> None:
    """Each product's rate, and the rate of one layer's mix of them (attention counted 4 times: q, k, v,
    output), which bounds a training step that spends no time outside its products."""
    flops = seconds = 0.0
    for name, (m, k, n, layout) in layer_products(rows, width).items():
        value = rate(m, k, n, layout)
        print(f"| {name}: {m} x {k} x {n} | {value / 1e9:.0f} | {100 * value / peak:.0f} % |")
        weight = 4 if name.startswith("attention") else 1
        flops += weight * 2.0 * m * k * n
        seconds += weight * 2.0 * m * k * n / value
    print(
        f"| **one layer's mix** (width {width}, {rows} tokens) | {flops / seconds / 1e9:.0f} "
        f"| {100 * flops / seconds / peak:.0f} % |"
    )


def _setup(examples: int):
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from intertask import models
    from intertask.data import data_root
    from intertask.encoding import encode
    from intertask.modeling import HeadSpec, build_models
    from intertask.tasks import builtin_catalog
    from intertask.tasks.examples import load_examples
    from intertask.tasks.types import task_type

    hf_logging.set_verbosity_error()
    model_dir = str(models.prepare("e5-small"))
    spec = builtin_catalog().spec("pawsx")
    fractions = {"train": 0.6, "dev": 0.1, "test": 0.3}
    data = load_examples(
        spec, "en", "train", max_examples=examples, root=data_root(), fractions=fractions, seed=13
    )
    task = task_type(spec)
    tok = AutoTokenizer.from_pretrained(model_dir)
    enc = encode(task, data, tok, 128, None)
    head = HeadSpec(spec.name, task.head, task.model_kwargs(), task.head_signature())
    model = build_models(model_dir, [head], seed=13, freeze_word_embeddings=True)[spec.name]
    return model, task, enc, tok.pad_token_id


def non_embedding_parameters(model) -> int:
    """Parameters outside the embeddings: the 6 x parameters x tokens FLOP count uses these."""
    embedding = sum(p.numel() for p in model.base_model.embeddings.parameters())
    return sum(p.numel() for p in model.parameters()) - embedding


def train_rate(
    model, task, enc, pad_id: int, batch_size: int, steps: int, profile: bool = False, autocast: bool = True
):
    from intertask.batching import collate, length_grouped_batches
    from intertask.config import TrainingConfig

    rng = np.random.default_rng(13)
    window = TrainingConfig().length_group_window  # the training default, as the demo runs
    batches = length_grouped_batches(enc.lengths, batch_size, rng, window=window)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-5, fused=True)
    non_embedding = non_embedding_parameters(model)
    model.train()

    def step(index: np.ndarray) -> int:
        batch = collate(enc, index, pad_id)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return int(enc.lengths[index].sum())

    for index in batches[:2]:  # warm-up
        step(index)
    chosen = batches[2 : 2 + steps]
    profiler = None
    if profile:
        profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True)
        profiler.__enter__()
    tokens, started = 0, time.perf_counter()
    for index in chosen:
        tokens += step(index)
    seconds = time.perf_counter() - started
    if profiler is not None:
        profiler.__exit__(None, None, None)
    return 6.0 * non_embedding * tokens / seconds, tokens / len(chosen), profiler


def attention_dropout(model, p: float | None = None) -> float:
    """The dropout on attention probabilities (set to `p` when given)."""
    layers = [m for name, m in model.named_modules() if name.endswith("attention.self")]
    if p is not None:
        for layer in layers:
            layer.dropout.p = p
    return layers[0].dropout.p


def breakdown(profiler) -> dict[str, float]:
    """Self CPU time per group of operators, in per cent of the total."""
    groups: dict[str, float] = defaultdict(float)
    for event in profiler.key_averages():
        name = event.key
        if name in MATMUL_OPS:
            group = "matrix products (mm/addmm/bmm)"
        elif "attention" in name or "softmax" in name:
            group = "attention kernels / softmax"
        elif "layer_norm" in name:
            group = "layer norm"
        elif "gelu" in name:
            group = "GELU"
        elif "dropout" in name or "bernoulli" in name or "native_dropout" in name:
            group = "dropout"
        elif name in ("aten::to", "aten::_to_copy", "aten::copy_", "aten::clone"):
            group = "casts and copies (autocast)"
        elif "adam" in name.lower() or "_foreach" in name:
            group = "optimizer"
        elif name in ("aten::add", "aten::add_", "aten::mul", "aten::mul_", "aten::sum", "aten::div"):
            group = "elementwise add/mul/sum (incl. grad accumulation)"
        else:
            group = "other"
        groups[group] += event.self_cpu_time_total
    total = sum(groups.values())
    return {k: 100 * v / total for k, v in sorted(groups.items(), key=lambda kv: -kv[1])}


def product_rate(profiler) -> tuple[float, float]:
    """Matrix products inside the profiled steps: their FLOPs per second of their own time, and their share
    of all self CPU time."""
    flops, seconds, total = 0.0, 0.0, 0.0
    for event in profiler.key_averages():
        total += event.self_cpu_time_total
        if event.key in MATMUL_OPS:
            flops += event.flops
            seconds += event.self_cpu_time_total / 1e6
    return flops / seconds, 1e6 * seconds / total


def widened(model, width: int, layers: int):
    """A randomly initialised model of `model`'s architecture, vocabulary and head at another width
    (FFN 4 x width, heads of 64), word embeddings frozen as in the demo."""
    from transformers import AutoModelForSequenceClassification

    settings = model.config.to_dict()
    settings.update(
        hidden_size=width,
        intermediate_size=4 * width,
        num_attention_heads=width // 64,
        num_hidden_layers=layers,
    )
    torch.manual_seed(13)
    wide = AutoModelForSequenceClassification.from_config(type(model.config).from_dict(settings))
    wide.get_input_embeddings().weight.requires_grad_(False)
    return wide


def width_study(model, task, enc, pad_id: int, args, peak: float) -> None:
    print(
        f"\nwider encoders, random init, {args.width_layers} layers, batch {args.width_batch}:\n\n"
        "| width | non-embedding parameters | training GFLOP/s | share of peak | products' share of the step "
        "| products' GFLOP/s in the step | share of peak | bf16 weights: GFLOP/s | share of peak |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for width in args.widths:
        wide = widened(model, width, args.width_layers)
        non_embedding = non_embedding_parameters(wide)
        value = train_rate(wide, task, enc, pad_id, args.width_batch, args.steps)[0]
        _, _, profiler = train_rate(wide, task, enc, pad_id, args.width_batch, max(4, args.steps // 2), True)
        products, share = product_rate(profiler)
        wide.to(torch.bfloat16)
        pure = train_rate(wide, task, enc, pad_id, args.width_batch, args.steps, autocast=False)[0]
        print(
            f"| {width} | {non_embedding / 1e6:.1f}M | {value / 1e9:.0f} | {100 * value / peak:.0f} % "
            f"| {100 * share:.1f} % | {products / 1e9:.0f} | {100 * products / peak:.0f} % "
            f"| {pure / 1e9:.0f} | {100 * pure / peak:.0f} % |",
            flush=True,
        )
        del wide, profiler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--examples", type=int, default=1600)
    parser.add_argument("--widths", type=int, nargs="*", default=[384, 768, 1024, 2048])
    parser.add_argument("--width-layers", type=int, default=4)
    parser.add_argument("--width-batch", type=int, default=32)
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    peak = rate(2048, 2048, 2048)
    print(f"torch threads {torch.get_num_threads()}\n")
    print("| bf16 product (m x k x n) | GFLOP/s | share of peak |\n|---|---:|---:|")
    print(f"| 2048 x 2048 x 2048 (peak) | {peak / 1e9:.0f} | 100 % |")
    square = rate(1024, 1024, 1024)
    print(f"| 1024 x 1024 x 1024 | {square / 1e9:.0f} | {100 * square / peak:.0f} % |")
    product_table(1024, 384, peak)  # e5-small, about a batch of 16 PAWS-X pairs
    if args.widths and max(args.widths) != 384:
        product_table(2048, max(args.widths), peak)  # the widest of the width study, a batch of 32
    model, task, enc, pad_id = _setup(args.examples)
    print(
        "\n| batch size | mean tokens per batch | training GFLOP/s | share of peak |\n|---:|---:|---:|---:|"
    )
    for size in args.batches:
        value, tokens, _ = train_rate(model, task, enc, pad_id, size, args.steps)
        print(f"| {size} | {tokens:.0f} | {value / 1e9:.0f} | {100 * value / peak:.0f} % |")
    print(
        f"\nattention implementation and dropout, batch {args.batches[0]} (the same model, measured in turn):\n"
    )
    print("| attention | attention dropout | training GFLOP/s | share of peak |\n|---|---:|---:|---:|")
    configured = attention_dropout(model)
    for implementation, dropout in (
        ("sdpa", configured),
        ("eager", configured),
        ("eager", 0.0),
        ("sdpa", 0.0),
    ):
        model.set_attn_implementation(implementation)
        attention_dropout(model, dropout)
        value = max(train_rate(model, task, enc, pad_id, args.batches[0], args.steps)[0] for _ in range(2))
        print(f"| {implementation} | {dropout:g} | {value / 1e9:.0f} | {100 * value / peak:.0f} % |")
    model.set_attn_implementation("sdpa")
    attention_dropout(model, configured)
    _, _, profiler = train_rate(
        model, task, enc, pad_id, args.batches[0], max(4, args.steps // 2), profile=True
    )
    print(f"\nself CPU time by operator group, batch {args.batches[0]}:\n")
    print("| group | share |\n|---|---:|")
    for group, share in breakdown(profiler).items():
        print(f"| {group} | {share:.1f} % |")
    if args.widths:
        width_study(model, task, enc, pad_id, args, peak)


if __name__ == "__main__":
    main()
