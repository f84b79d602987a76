"""The training loop: AdamW + linear warm-up/decay, length-grouped batches, optional bf16 autocast,
per-epoch dev evaluation and best-epoch selection. It knows nothing about MLflow: metrics go to a
callback.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from intertask.config import TrainingConfig
from intertask.encoding import collate, length_grouped_batches, shuffled_batches
from intertask.evaluation import predict_logits, score_set
from intertask.metrics import METRICS
from intertask.tasks.types import ClassificationTask, EncodedSet

LogFn = Callable[[dict[str, float], int], None]  # (metrics, step)


@dataclass(frozen=True)
class TrainResult:
    best_epoch: int
    best_score: float
    selection_metric: str
    history: pd.DataFrame  # one row per epoch: epoch, step, train_loss, dev_<metric>...
    steps: int
    train_seconds: float
    examples_per_second: float
    best_dev: dict[str, float]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _optimizer(model, cfg: TrainingConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            # no weight decay on biases and layer-norm weights (1-d tensors)
            (no_decay if param.ndim == 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, fused=True)


def _schedule(optimizer, total_steps: int, warmup_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = int(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _trainable_state(model) -> dict[str, torch.Tensor]:
    """A copy of what training changes (frozen embeddings are not copied)."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in names}


def _is_better(metric: str, value: float, best: float | None) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best if METRICS.get(metric).higher_is_better else value < best


def train(
    model,
    task: ClassificationTask,
    train_set: EncodedSet,
    dev_set: EncodedSet,
    cfg: TrainingConfig,
    *,
    seed: int,
    pad_id: int,
    selection_metric: str,
    dev_metrics: tuple[str, ...],
    log: LogFn = lambda metrics, step: None,
    desc: str = "train",
) -> TrainResult:
    """Train for cfg.epochs; evaluate on dev after each epoch; leave the best epoch's weights in `model`.

    Steps per epoch = ceil(examples / batch_size), e.g. 1,000 PAWS-X pairs at batch 16 -> 63 steps.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(seed)
    device = next(model.parameters()).device
    lengths = train_set.lengths
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    optimizer = _optimizer(model, cfg)
    scheduler = _schedule(optimizer, total_steps, cfg.warmup_ratio)
    make_batches = length_grouped_batches if cfg.group_by_length else shuffled_batches
    history, best, best_state, best_epoch, best_dev = [], None, None, 0, {}
    step, seen, loss_sum, loss_count, train_seconds = 0, 0, 0.0, 0, 0.0
    progress = tqdm(total=total_steps, desc=desc, mininterval=2, leave=False)
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        rng = np.random.Generator(np.random.PCG64([seed, epoch]))
        epoch_loss, epoch_batches, started = 0.0, 0, time.perf_counter()
        for rows in make_batches(lengths, cfg.batch_size, rng):
            batch = {k: v.to(device) for k, v in collate(train_set, rows, pad_id).items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                loss = model(**batch).loss
            loss.backward()
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step, seen = step + 1, seen + len(rows)
            value = float(loss.detach())
            loss_sum, loss_count = loss_sum + value, loss_count + 1
            epoch_loss, epoch_batches = epoch_loss + value, epoch_batches + 1
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
        logits = predict_logits(
            model, dev_set, pad_id=pad_id, batch_tokens=cfg.eval_batch_tokens, bf16=cfg.bf16
        )
        dev = score_set(task, logits, dev_set, dev_metrics).scores
        row = {"epoch": epoch, "step": step, "train_loss": epoch_loss / max(1, epoch_batches)}
        row.update({f"dev_{k}": v for k, v in dev.items()})
        history.append(row)
        log({"epoch/train_loss": row["train_loss"], **{f"dev/{k}": v for k, v in dev.items()}}, epoch)
        if _is_better(selection_metric, dev[selection_metric], best):
            best, best_epoch, best_dev, best_state = (
                dev[selection_metric],
                epoch,
                dev,
                _trainable_state(model),
            )
    progress.close()
    if best_state is not None and best_epoch != cfg.epochs:
        model.load_state_dict(best_state, strict=False)
    return TrainResult(
        best_epoch=best_epoch,
        best_score=float("nan") if best is None else best,
        selection_metric=selection_metric,
        history=pd.DataFrame(history),
        steps=step,
        train_seconds=train_seconds,
        examples_per_second=seen / train_seconds if train_seconds > 0 else 0.0,
        best_dev=best_dev,
    )
