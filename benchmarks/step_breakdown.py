"""Where a training step's time goes, and how much of it its matrix products take when run alone.

e5-small (rebuilt offline), real PAWS-X English batches (batch 16, length-grouped as training groups
them, max length 128), the training loop's own pieces: `collate`, autocast in the given precision, and
`training._backward` and `training._update` (backward; clipping, fused AdamW, zero_grad). For each precision:

1. step: wall time of each of `--steps` steps after warm-up, best of `--repeats` passes over the same
   batches (no profiler running), averaged;
2. products alone: every matrix product of each of those steps (aten mm / addmm / bmm / baddbmm with
   the shapes, strides and dtypes autograd and autocast give them, captured by a TorchDispatchMode over
   the real step) replayed back to back on random operands of the same layout, best of `--repeats`;
   their time over the step's is the products' share (the issue-16 goal: >= 60 %);
3. breakdown: torch.profiler self CPU time by group (products, attention softmax, dropout, layer norm,
   GELU, casts, optimizer and clipping, embeddings, loss, data, elementwise, other), in ms per step and
   per cent of the profiled total (the profiler adds a little time to every operator).

    python benchmarks/step_breakdown.py [--precisions fp32 bf16] [--batch 16] [--steps 20]
                                        [--embeddings frozen|dense|sparse] [--dropout torch fast]

Each precision runs with torch's dropout and with the cheaper CPU mask (`--dropout`, dropout.py).
`matmul_rate` is also what finetune_throughput.py prints as the CPU's fp32 / bf16 product rate.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from common import SEED, examples
from torch.utils._python_dispatch import TorchDispatchMode

PRODUCT_OPS = {
    torch.ops.aten.mm.default,
    torch.ops.aten.addmm.default,
    torch.ops.aten.bmm.default,
    torch.ops.aten.baddbmm.default,
}
GROUPS = (  # (group, operator name fragments), first match wins; names are the profiler's
    ("products", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")),
    ("GELU", ("gelu",)),  # before dropout: "aten::ge" (the cheaper mask's comparison) is in "aten::gelu"
    ("dropout", ("dropout", "bernoulli", "random_", "randint", "aten::ge")),
    ("attention softmax", ("softmax_backward", "aten::_softmax", "aten::softmax", "masked_fill")),
    ("layer norm", ("layer_norm",)),
    ("optimizer and clipping", ("adam", "_foreach", "vector_norm", "clip", "aten::stack")),
    ("embeddings", ("embedding",)),
    ("loss", ("nll_loss", "log_softmax", "cross_entropy")),
    ("casts and copies", ("aten::to", "aten::_to_copy", "aten::copy_", "aten::clone", "aten::contiguous")),
    ("data (collate, to device)", ("data",)),
    ("elementwise (add, mul, sum, ...)", ("aten::add", "aten::mul", "aten::sum", "aten::div", "aten::sub")),
)


def matmul_rate(m: int, k: int, n: int, dtype: torch.dtype = torch.float32, seconds: float = 1.5) -> float:
    """FLOP/s of an (m x k) @ (k x n) product in `dtype`, both operands contiguous."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(3):
        a @ b
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
    return 2.0 * m * k * n * count / (time.perf_counter() - started)


@dataclass
class Setup:
    model: torch.nn.Module
    encoded: object
    batches: list
    pad_id: int
    trainable: list
    optimizers: list
    schedulers: list


def setup(n: int, batch: int, embeddings: str, seed: int = SEED) -> Setup:
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from intertask import pretrained
    from intertask.compute.batching import length_grouped_batches
    from intertask.compute.encoding import encode
    from intertask.compute.modeling import HeadSpec, build_models
    from intertask.compute.training import _optimizers, _schedule, _sparse_parameters
    from intertask.config import TrainingConfig
    from intertask.tasks import builtin_catalog
    from intertask.tasks.types import task_type

    hf_logging.set_verbosity_error()
    model_dir = str(pretrained.prepare("e5-small"))
    spec = builtin_catalog().spec("pawsx")
    data = examples("pawsx", "en", "train", n, seed)
    task = task_type(spec)
    tok = AutoTokenizer.from_pretrained(model_dir)
    encoded = encode(task, data, tok, 128, None)
    head = HeadSpec(spec.name, task.head, task.model_kwargs(), task.head_signature())
    model = build_models(
        model_dir,
        [head],
        seed=seed,
        freeze_word_embeddings=embeddings == "frozen",
        sparse_word_embeddings=embeddings == "sparse",
    )[spec.name]
    cfg = TrainingConfig(learning_rate=2e-5)
    batches = length_grouped_batches(
        encoded.lengths, batch, np.random.default_rng(seed), window=cfg.length_group_window
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizers = _optimizers(trainable, _sparse_parameters(model), cfg)
    schedulers = [_schedule(o, 10_000, 0.0) for o in optimizers]
    model.train()
    return Setup(model, encoded, batches, tok.pad_token_id, trainable, optimizers, schedulers)


def step(s: Setup, rows, precision) -> None:
    from intertask.compute.batching import collate
    from intertask.compute.training import _backward, _update

    with torch.profiler.record_function("data"):
        batch = collate(s.encoded, rows, s.pad_id)
    with precision.autocast("cpu"):
        loss = s.model(**batch).loss
    _backward(loss, None)
    _update(s.trainable, s.optimizers, s.schedulers, None, 1.0)


class _Products(TorchDispatchMode):
    """Records every matrix product's operator, operand layouts and scalar arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in PRODUCT_OPS:
            layout = [
                (tuple(a.shape), tuple(a.stride()), a.dtype) if isinstance(a, torch.Tensor) else a
                for a in args
            ]
            self.calls.append((func, layout, dict(kwargs or {})))
        return func(*args, **(kwargs or {}))


def _operand(shape, stride, dtype) -> torch.Tensor:
    """A random tensor with this exact layout (transposed, expanded: whatever autograd handed over)."""
    size = 1 + sum((n - 1) * st for n, st in zip(shape, stride, strict=True) if n > 0)
    return torch.randn(size, dtype=torch.float32).to(dtype).as_strided(shape, stride)


def products_alone(calls, repeats: int) -> float:
    """Seconds of all recorded products replayed back to back, best of `repeats`."""
    ready = [
        (func, [_operand(*a) if isinstance(a, tuple) and len(a) == 3 else a for a in layout], kwargs)
        for func, layout, kwargs in calls
    ]
    best = float("inf")
    for _ in range(repeats + 1):  # the first pass warms the caches and oneDNN's kernels
        started = time.perf_counter()
        for func, args, kwargs in ready:
            func(*args, **kwargs)
        best = min(best, time.perf_counter() - started)
    return best


def _group(name: str) -> str:
    for group, fragments in GROUPS:
        if any(f in name for f in fragments):
            return group
    return "other"


def measure(s: Setup, precision, steps: int, repeats: int, fast: bool) -> dict:
    """Per step: wall time (best of `repeats` passes over the same batches), its products replayed alone
    (best of `repeats`), and the profiler's self CPU time by group (one more pass)."""
    from intertask.compute.dropout import fast_dropout

    with fast_dropout(s.model, enabled=fast):
        for rows in s.batches[:3]:  # warm-up
            step(s, rows, precision)
        chosen = s.batches[3 : 3 + steps]
        wall = [float("inf")] * len(chosen)
        for _ in range(repeats):
            for i, rows in enumerate(chosen):
                wall[i] = min(wall[i], _timed(lambda rows=rows: step(s, rows, precision)))
        alone, calls = [], 0
        for rows in chosen:
            with _Products() as recorder:
                step(s, rows, precision)
            alone.append(products_alone(recorder.calls, repeats))
            calls += len(recorder.calls)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
            for rows in chosen:
                step(s, rows, precision)
    groups: dict[str, float] = defaultdict(float)
    for event in profiler.key_averages():
        groups[_group(event.key)] += event.self_cpu_time_total / 1e6 / len(chosen)
    return {
        "step": float(np.mean(wall)),
        "products_alone": float(np.mean(alone)),
        "products_calls": calls // len(chosen),
        "tokens": float(np.mean([s.encoded.lengths[r].max() * len(r) for r in chosen])),
        "groups": dict(groups),
    }


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def report(name: str, result: dict) -> None:
    share = result["products_alone"] / result["step"]
    print(
        f"\n### {name}\n\nstep: {1e3 * result['step']:.0f} ms (mean of each step's best of the passes; "
        f"{result['tokens']:.0f} padded tokens per batch); its {result['products_calls']} matrix products "
        f"alone: {1e3 * result['products_alone']:.0f} ms = **{100 * share:.0f} % of the step**\n"
    )
    total = sum(result["groups"].values())
    print("| group (profiler, self CPU time) | ms per step | share |\n|---|---:|---:|")
    for group, seconds in sorted(result["groups"].items(), key=lambda kv: -kv[1]):
        print(f"| {group} | {1e3 * seconds:.1f} | {100 * seconds / total:.1f} % |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--dropout",
        nargs="+",
        default=["torch", "fast"],
        choices=["torch", "fast"],
        help="torch's dropout, or the cheaper mask (training.fast_cpu_dropout, the default)",
    )
    parser.add_argument("--examples", type=int, default=800)
    parser.add_argument("--embeddings", default="frozen", choices=["frozen", "dense", "sparse"])
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from intertask.compute import hardware

    print(hardware.runtime("auto", None, announce=False).line())
    for name in args.precisions:
        for kind in args.dropout:
            rt = hardware.runtime(name, None, announce=False)
            s = setup(args.examples, args.batch, args.embeddings)
            result = measure(s, rt.precision, args.steps, args.repeats, fast=kind == "fast")
            title = f"e5-small, {name}, batch {args.batch}, word embeddings {args.embeddings}, {kind} dropout"
            report(title, result)
            del s


if __name__ == "__main__":
    main()
