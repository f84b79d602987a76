"""The training loop: one or several tasks sharing an encoder (jiant-style multi-task), AdamW with
linear warm-up and decay, length-grouped batches, optional bf16 autocast, dev evaluation after every
epoch and best-epoch selection. It knows nothing about MLflow: metrics go to a callback.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from intertask.batching import collate, length_grouped_batches, shuffled_batches
from intertask.config import SamplingConfig, TrainingConfig
from intertask.evaluation import evaluate_set
from intertask.metrics import METRICS
from intertask.tasks.base import EncodedSet, ExampleSet, TaskType

LogFn = Callable[[dict[str, float], int], None]  # (metrics, step)


@dataclass(frozen=True)
class TrainPart:
    """One task of a training run: its model (sharing the encoder), data and dev scoring."""

    name: str
    task: TaskType
    model: torch.nn.Module
    train: EncodedSet
    dev: EncodedSet
    dev_data: ExampleSet
    selection_metric: str


@dataclass(frozen=True)
class TrainResult:
    best_epoch: int
    best_score: float
    history: pd.DataFrame  # one row per epoch: epoch, step, train_loss, dev/<task>/<metric>..., dev/selection
    steps: int
    train_seconds: float
    examples_per_second: float
    best_dev: dict[str, dict[str, float]]  # task -> metric -> value at the best epoch
    batches_per_task: dict[str, int]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def sampling_weights(sizes: dict[str, int], sampling: SamplingConfig) -> dict[str, float]:
    """Probability of drawing each task's next batch (jiant's samplers).

    proportional: n_i / sum n; uniform: 1 / tasks; temperature: n_i^(1/T) / sum n^(1/T). With an
    examples cap, n_i is min(n_i, cap) first, e.g. sizes 1,000 and 9,000, T = 2 -> 0.25 / 0.75.
    """
    capped = {k: min(n, sampling.examples_cap) if sampling.examples_cap else n for k, n in sizes.items()}
    if sampling.strategy == "uniform":
        raw = {k: 1.0 for k in capped}
    elif sampling.strategy == "temperature":
        raw = {k: n ** (1.0 / sampling.temperature) for k, n in capped.items()}
    else:
        raw = {k: float(n) for k, n in capped.items()}
    total = sum(raw.values())
    return {k: v / total for k, v in raw.items()}


def _optimizer(parameters: list[torch.nn.Parameter], cfg: TrainingConfig) -> torch.optim.Optimizer:
    # no weight decay on biases and layer-norm weights (1-d tensors)
    decay = [p for p in parameters if p.ndim > 1]
    no_decay = [p for p in parameters if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, fused=True)


def _schedule(optimizer, total_steps: int, warmup_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = int(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _batches(part: TrainPart, cfg: TrainingConfig, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless batches of one task: a new shuffled, length-grouped order on every pass."""
    make = length_grouped_batches if cfg.group_by_length else shuffled_batches
    while True:
        yield from make(part.train.lengths, cfg.batch_size, rng)


def _is_better(metric: str, value: float, best: float | None) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best if METRICS.get(metric).higher_is_better else value < best


def _evaluate_dev(parts: list[TrainPart], cfg: TrainingConfig, pad_id: int) -> dict[str, dict[str, float]]:
    return {
        p.name: evaluate_set(
            p.model,
            p.task,
            p.dev_data,
            p.dev,
            pad_id=pad_id,
            batch_tokens=cfg.eval_batch_tokens,
            bf16=cfg.bf16,
        ).scores
        for p in parts
    }


def selection_score(
    dev: dict[str, dict[str, float]], parts: list[TrainPart], selection_task: str | None
) -> float:
    """The selection task's selection metric, or the mean of every task's selection metric."""
    chosen = [p for p in parts if selection_task in (None, p.name)]
    return float(np.mean([dev[p.name][p.selection_metric] for p in chosen]))


def train(
    parts: list[TrainPart],
    cfg: TrainingConfig,
    *,
    seed: int,
    pad_id: int,
    sampling: SamplingConfig,
    selection_task: str | None = None,
    log: LogFn = lambda metrics, step: None,
    desc: str = "train",
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train for cfg.epochs; evaluate every task on dev after each epoch; keep the best epoch's weights.

    An epoch is ceil(all training examples / batch_size) steps, each on a batch of one task drawn with
    `sampling_weights`, e.g. 1,000 PAWS-X + 600 TyDiQA windows at batch 16 -> 100 steps.
    `on_epoch(epoch, dev selection score)` runs after each epoch's evaluation; what it raises (a
    tuning trial's pruning) ends training.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(seed)
    modules = torch.nn.ModuleList(p.model for p in parts)
    trainable = [p for p in modules.parameters() if p.requires_grad]  # shared encoder counted once
    device = trainable[0].device
    steps_per_epoch = math.ceil(sum(len(p.train) for p in parts) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    optimizer = _optimizer(trainable, cfg)
    scheduler = _schedule(optimizer, total_steps, cfg.warmup_ratio)
    rng = np.random.Generator(np.random.PCG64(seed))
    weights = sampling_weights({p.name: len(p.train) for p in parts}, sampling)
    streams = {
        p.name: _batches(p, cfg, np.random.Generator(np.random.PCG64([seed, i]))) for i, p in enumerate(parts)
    }
    by_name = {p.name: p for p in parts}
    history, best, best_state, best_epoch, best_dev = [], None, None, 0, {}
    step, seen, loss_sum, loss_count, train_seconds = 0, 0, 0.0, 0, 0.0
    batches_per_task = dict.fromkeys(by_name, 0)
    progress = tqdm(total=total_steps, desc=desc, mininterval=2, leave=False)
    for epoch in range(1, cfg.epochs + 1):
        modules.train()
        epoch_loss, started = 0.0, time.perf_counter()
        for _ in range(steps_per_epoch):
            name = rng.choice(list(weights), p=list(weights.values())) if len(parts) > 1 else parts[0].name
            part, rows = by_name[name], next(streams[name])
            batch = {k: v.to(device) for k, v in collate(part.train, rows, pad_id).items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                loss = part.model(**batch).loss
            loss.backward()
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step, seen, batches_per_task[name] = step + 1, seen + len(rows), batches_per_task[name] + 1
            value = float(loss.detach())
            loss_sum, loss_count, epoch_loss = loss_sum + value, loss_count + 1, epoch_loss + value
            progress.update(1)
            if step % cfg.log_every_steps == 0 or step == total_steps:
                elapsed = train_seconds + time.perf_counter() - started
                log(
                    {
                        "train/loss": loss_sum / loss_count,
                        "train/learning_rate": scheduler.get_last_lr()[0],
                        "train/examples_per_second": seen / elapsed,
                    },
                    step,
                )
                progress.set_postfix(loss=f"{loss_sum / loss_count:.4f}")
                loss_sum, loss_count = 0.0, 0
        train_seconds += time.perf_counter() - started
        dev = _evaluate_dev(parts, cfg, pad_id)
        score = selection_score(dev, parts, selection_task)
        row = {
            "epoch": epoch,
            "step": step,
            "train_loss": epoch_loss / steps_per_epoch,
            "dev/selection": score,
        }
        row.update({f"dev/{task}/{m}": v for task, scores in dev.items() for m, v in scores.items()})
        history.append(row)
        log({k: v for k, v in row.items() if k not in ("epoch", "step")}, epoch)
        metric = by_name[selection_task].selection_metric if selection_task else parts[0].selection_metric
        if _is_better(metric, score, best):
            best, best_epoch, best_dev = score, epoch, dev
            best_state = {k: v.detach().clone() for k, v in _named_trainable(modules).items()}
        if on_epoch is not None:
            on_epoch(epoch, score)
    progress.close()
    if best_state is not None and best_epoch != cfg.epochs:
        modules.load_state_dict(best_state, strict=False)
    return TrainResult(
        best_epoch,
        float("nan") if best is None else best,
        pd.DataFrame(history),
        step,
        train_seconds,
        seen / train_seconds if train_seconds > 0 else 0.0,
        best_dev,
        batches_per_task,
    )


def _named_trainable(modules: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What training changes, once per tensor (frozen embeddings are not copied)."""
    return {n: p for n, p in modules.named_parameters() if p.requires_grad}
