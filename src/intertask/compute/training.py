"""The training loop: one or several tasks sharing an encoder (jiant-style multi-task), AdamW with
linear warm-up and decay, length-grouped batches, autocast in the resolved precision (bf16, or fp16
with loss scaling), dev evaluation after every epoch and best-epoch selection. It knows nothing about
tracking: metrics go to a callback.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from intertask.compute import hardware
from intertask.compute.batching import collate, length_grouped_batches, shuffled_batches
from intertask.compute.checkpoints import Checkpointer, RunState, Saved, capture, named_trainable, restore
from intertask.compute.dropout import fast_dropout
from intertask.compute.evaluation import evaluate_set
from intertask.config import SamplingConfig, TrainingConfig
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
    resumed_at_step: int | None = None  # the checkpoint this run continued from


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


def _sparse_parameters(modules: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Trainable embedding matrices that get sparse gradients (model.sparse_word_embeddings)."""
    return [
        m.weight
        for m in modules.modules()
        if isinstance(m, torch.nn.Embedding) and m.sparse and m.weight.requires_grad
    ]


def _optimizers(
    parameters: list[torch.nn.Parameter], sparse: list[torch.nn.Parameter], cfg: TrainingConfig
) -> list[torch.optim.Optimizer]:
    """Fused AdamW for the dense parameters, no weight decay on biases and layer-norm weights (1-d
    tensors); SparseAdam for sparse-gradient embeddings: lazy Adam, only the rows of a step's tokens
    move (their moments too), and no weight decay."""
    dense = [p for p in parameters if all(p is not q for q in sparse)]
    decay = [p for p in dense if p.ndim > 1]
    no_decay = [p for p in dense if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    out: list[torch.optim.Optimizer] = [torch.optim.AdamW(groups, lr=cfg.learning_rate, fused=True)]
    if sparse:
        out.append(torch.optim.SparseAdam(sparse, lr=cfg.learning_rate))
    return out


def clip_gradients(parameters: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """clip_grad_norm_ over dense and sparse gradients together (torch's refuses sparse ones): the
    global L2 norm, every gradient scaled by max_norm / norm when it is above max_norm. Without sparse
    gradients it is torch's clip_grad_norm_ itself. Returns the norm before clipping (no host sync)."""
    if not any(p.grad is not None and p.grad.is_sparse for p in parameters):
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    for p in parameters:
        if p.grad is not None and p.grad.is_sparse:
            p.grad = p.grad.coalesce()  # repeated token rows summed, so the values' norm is the gradient's
    grads = [p.grad for p in parameters if p.grad is not None]
    norms = [(g.values() if g.is_sparse else g).detach().float().norm() for g in grads]
    total = torch.linalg.vector_norm(torch.stack(norms))
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        (g.values() if g.is_sparse else g).mul_(scale)
    return total


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    """Warm-up steps as the Hugging Face Trainer counts them for a warm-up ratio (rounded up)."""
    return math.ceil(total_steps * warmup_ratio)


def _schedule(optimizer, total_steps: int, warmup_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' linear warm-up and decay: 0 at step 0, the peak after the warm-up, 0 at the end."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, warmup_steps(total_steps, warmup_ratio), total_steps)


class _Stream:
    """Endless batches of one task: a new shuffled, length-grouped order on every pass. Its position
    (the generator state a pass started from, and the batches taken of it) goes into checkpoints."""

    def __init__(self, part: TrainPart, cfg: TrainingConfig, rng: np.random.Generator) -> None:
        self.make = (
            partial(length_grouped_batches, window=cfg.length_group_window)
            if cfg.group_by_length
            else shuffled_batches
        )
        self.lengths, self.batch_size, self.rng = part.train.lengths, cfg.batch_size, rng
        self.pass_start: dict | None = None
        self.batches: list[np.ndarray] = []
        self.taken = 0

    def __next__(self) -> np.ndarray:
        if self.taken >= len(self.batches):
            self.pass_start = self.rng.bit_generator.state
            self.batches, self.taken = self.make(self.lengths, self.batch_size, self.rng), 0
        self.taken += 1
        return self.batches[self.taken - 1]

    def state(self) -> dict:
        return {"pass_start": self.pass_start, "taken": self.taken, "now": self.rng.bit_generator.state}

    def restore(self, state: dict) -> None:
        if state["pass_start"] is not None:
            self.rng.bit_generator.state = state["pass_start"]
            self.pass_start = state["pass_start"]
            self.batches = self.make(self.lengths, self.batch_size, self.rng)
        self.taken = state["taken"]
        self.rng.bit_generator.state = state["now"]


def _is_better(value: float, best: float | None) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best  # every registered metric is higher-is-better


def _evaluate_dev(
    parts: list[TrainPart], cfg: TrainingConfig, pad_id: int, precision: hardware.Precision
) -> dict[str, dict[str, float]]:
    return {
        p.name: evaluate_set(
            p.model,
            p.task,
            p.dev_data,
            p.dev,
            pad_id=pad_id,
            batch_tokens=cfg.eval_batch_tokens,
            precision=precision,
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
    checkpointer: Checkpointer | None = None,
    runtime: hardware.Runtime | None = None,
) -> TrainResult:
    """Train for cfg.epochs; evaluate every task on dev after each epoch; keep the best epoch's weights.

    An epoch is ceil(all training examples / effective batch) optimizer steps, each on one task drawn
    with `sampling_weights`, e.g. 1,000 PAWS-X + 600 TyDiQA windows at batch 16 -> 100 steps. The
    effective batch is batch_size x gradient_accumulation_steps: a step sums the gradients of that many
    micro-batches of the drawn task, each loss divided by their number (for equal-sized micro-batches
    the same gradient as one batch of them all).
    `on_epoch(epoch, dev selection score)` runs after each epoch's evaluation; what it raises (a
    tuning trial's pruning) ends training. With a `checkpointer`, the whole training state is saved every
    N steps and after every epoch, and a checkpoint found there is resumed: the result is the same as
    an uninterrupted run's (same seed, CPU). Precision and threads: `runtime`, else resolved here from
    cfg.precision and cfg.threads.
    """
    precision = (runtime or hardware.runtime(cfg.precision, cfg.threads)).precision
    seed_everything(seed)
    loop = _Loop.start(parts, cfg, seed, pad_id, sampling, precision)
    run = loop.run
    saved = checkpointer.load() if checkpointer is not None else None
    if saved is not None:
        loop.resume(saved)
        for row in run.history:  # the resumed run shows every epoch, not only those after the restart
            log({k: v for k, v in row.items() if k not in ("epoch", "step")}, row["epoch"])
    progress = tqdm(total=loop.total_steps, initial=run.step, desc=desc, mininterval=2, leave=False)
    while run.epoch < cfg.epochs or run.in_epoch:
        if not run.in_epoch:
            run.epoch, run.in_epoch, run.epoch_loss, run.epoch_step = run.epoch + 1, True, 0.0, 0
        loop.epoch_steps(log, progress, checkpointer)
        score, dev = _close_epoch(
            parts, cfg, pad_id, precision, selection_task, run, loop.steps_per_epoch, log
        )
        if _is_better(score, run.best):
            run.best, run.best_epoch, run.best_dev = score, run.epoch, dev
            loop.best_state = {k: v.detach().clone() for k, v in named_trainable(loop.modules).items()}
        run.in_epoch = False
        if on_epoch is not None:
            on_epoch(run.epoch, score)
        if checkpointer is not None and run.epoch < cfg.epochs:
            loop.checkpoint(checkpointer)
    progress.close()
    if loop.best_state is not None and run.best_epoch != cfg.epochs:
        loop.modules.load_state_dict(loop.best_state, strict=False)
    return _result(run, saved.step if saved is not None else None)


@dataclass
class _Loop:
    """One training run between steps: the models, optimizers, schedules and random streams (what a
    checkpoint saves and restores), the task sampling, and the step counts."""

    parts: list[TrainPart]
    cfg: TrainingConfig
    modules: torch.nn.ModuleList
    optimizers: list
    schedulers: list
    scaler: torch.amp.GradScaler | None
    rng: np.random.Generator  # draws the task of each step
    streams: dict[str, _Stream]
    weights: dict[str, float]  # task -> sampling probability
    stepper: _Stepper
    run: RunState
    steps_per_epoch: int
    total_steps: int
    best_state: dict | None = None  # the best epoch's trainable weights, once there is one

    @classmethod
    def start(cls, parts, cfg: TrainingConfig, seed: int, pad_id: int, sampling, precision) -> _Loop:
        modules = torch.nn.ModuleList(p.model for p in parts)
        trainable = [p for p in modules.parameters() if p.requires_grad]  # shared encoder counted once
        device = trainable[0].device
        steps_per_epoch = math.ceil(
            sum(len(p.train) for p in parts) / (cfg.batch_size * cfg.gradient_accumulation_steps)
        )
        total_steps = steps_per_epoch * cfg.epochs
        optimizers = _optimizers(trainable, _sparse_parameters(modules), cfg)
        schedulers = [_schedule(o, total_steps, cfg.warmup_ratio) for o in optimizers]
        scaler = torch.amp.GradScaler(device.type) if precision.scaled else None
        return cls(
            parts=parts,
            cfg=cfg,
            modules=modules,
            optimizers=optimizers,
            schedulers=schedulers,
            scaler=scaler,
            rng=np.random.Generator(np.random.PCG64(seed)),
            streams={
                p.name: _Stream(p, cfg, np.random.Generator(np.random.PCG64([seed, i])))
                for i, p in enumerate(parts)
            },
            weights=sampling_weights({p.name: len(p.train) for p in parts}, sampling),
            stepper=_Stepper(cfg, pad_id, device, precision, scaler, trainable, optimizers, schedulers),
            run=RunState(batches_per_task={p.name: 0 for p in parts}),
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
        )

    def epoch_steps(self, log: LogFn, progress, checkpointer: Checkpointer | None) -> None:
        """The optimizer steps left in the current epoch, each on a sampled task; the loss logged every
        log_every_steps; a checkpoint where one is due (the epoch's last step is checkpointed after
        the dev evaluation, with the epoch closed)."""
        run, cfg, by_name = self.run, self.cfg, {p.name: p for p in self.parts}
        self.modules.train()
        losses: list[torch.Tensor] = []  # steps' losses on the device, not yet added to the sums
        started = time.perf_counter()
        cpu = self.stepper.device.type == "cpu"
        with fast_dropout(self.modules, enabled=cfg.fast_cpu_dropout and cpu):
            while run.epoch_step < self.steps_per_epoch:
                name = self._draw_task()
                losses.append(self.stepper.step(by_name[name], self.streams[name], run))  # no sync
                run.step, run.epoch_step = run.step + 1, run.epoch_step + 1
                run.batches_per_task[name] += cfg.gradient_accumulation_steps
                progress.update(1)
                if run.step % cfg.log_every_steps == 0 or run.step == self.total_steps:
                    _log_point(run, losses, self.schedulers[0], started, log, progress)
                if (
                    checkpointer is not None
                    and checkpointer.due(run.step)
                    and run.epoch_step < self.steps_per_epoch
                ):
                    _add_losses(run, losses)
                    run.train_seconds += time.perf_counter() - started
                    started = time.perf_counter()
                    self.checkpoint(checkpointer)
        _add_losses(run, losses)
        run.train_seconds += time.perf_counter() - started

    def _draw_task(self) -> str:
        if len(self.parts) == 1:
            return self.parts[0].name
        return self.rng.choice(list(self.weights), p=list(self.weights.values()))

    def checkpoint(self, checkpointer: Checkpointer) -> None:
        best = (
            self.best_state if self.best_state is not None and self.run.best_epoch != self.run.epoch else None
        )
        checkpointer.save(
            capture(
                self.run,
                self.modules,
                best,
                self.optimizers,
                self.schedulers,
                self.scaler,
                self.rng,
                self.streams,
            )
        )

    def resume(self, saved: Saved) -> None:
        self.best_state = restore(
            saved,
            self.modules,
            self.optimizers,
            self.schedulers,
            self.scaler,
            self.rng,
            self.streams,
            self.run,
        )


def _log_point(run: RunState, losses: list, scheduler, started: float, log, progress) -> None:
    """The mean loss since the last log point, the learning rate and the throughput, logged at a step."""
    _add_losses(run, losses)
    elapsed = run.train_seconds + time.perf_counter() - started
    log(
        {
            "train/loss": run.loss_sum / run.loss_count,
            "train/learning_rate": scheduler.get_last_lr()[0],
            "train/examples_per_second": run.seen / elapsed,
        },
        run.step,
    )
    progress.set_postfix(loss=f"{run.loss_sum / run.loss_count:.4f}")
    run.loss_sum, run.loss_count = 0.0, 0


def _result(run: RunState, resumed_at_step: int | None) -> TrainResult:
    return TrainResult(
        run.best_epoch,
        float("nan") if run.best is None else run.best,
        pd.DataFrame(run.history),
        run.step,
        run.train_seconds,
        run.seen / run.train_seconds if run.train_seconds > 0 else 0.0,
        run.best_dev,
        run.batches_per_task,
        resumed_at_step=resumed_at_step,
    )


@dataclass
class _Stepper:
    """What one optimizer step needs beyond the task and its batch stream."""

    cfg: TrainingConfig
    pad_id: int
    device: torch.device
    precision: hardware.Precision
    scaler: torch.amp.GradScaler | None
    trainable: list
    optimizers: list
    schedulers: list

    def step(self, part: TrainPart, stream, run: RunState) -> torch.Tensor:
        """One optimizer step on `part`: gradient_accumulation_steps micro-batches from its stream, each
        loss divided by their number, summed; then the update. Returns the step's loss on the device."""
        accumulate, step_loss = self.cfg.gradient_accumulation_steps, 0.0
        for _ in range(accumulate):
            rows = next(stream)
            batch = {k: v.to(self.device) for k, v in collate(part.train, rows, self.pad_id).items()}
            with self.precision.autocast(self.device.type):
                loss = part.model(**batch).loss / accumulate
            _backward(loss, self.scaler)
            step_loss = step_loss + loss.detach()
            run.seen += len(rows)
        _update(self.trainable, self.optimizers, self.schedulers, self.scaler, self.cfg.max_grad_norm)
        return step_loss


def _close_epoch(parts, cfg, pad_id, precision, selection_task, run: RunState, steps_per_epoch: int, log):
    """Every task scored on dev after an epoch: the epoch's history row, logged; (selection score, dev)."""
    dev = _evaluate_dev(parts, cfg, pad_id, precision)
    score = selection_score(dev, parts, selection_task)
    row = {
        "epoch": run.epoch,
        "step": run.step,
        "train_loss": run.epoch_loss / steps_per_epoch,
        "dev/selection": score,
    }
    row.update({f"dev/{task}/{m}": v for task, scores in dev.items() for m, v in scores.items()})
    run.history.append(row)
    log({k: v for k, v in row.items() if k not in ("epoch", "step")}, run.epoch)
    return score, dev


def _backward(loss, scaler) -> None:
    """Gradients of one (micro-)batch, added to those already there; scaled with fp16 (GradScaler)."""
    (loss if scaler is None else scaler.scale(loss)).backward()


def _update(trainable, optimizers, schedulers, scaler, max_grad_norm: float) -> None:
    """Clipping and one optimizer step on the summed gradients. With fp16 the gradients are unscaled
    before clipping, and a step whose gradients overflowed is skipped (the scale halves)."""
    if scaler is not None:
        for optimizer in optimizers:
            scaler.unscale_(optimizer)
    if max_grad_norm > 0:
        clip_gradients(trainable, max_grad_norm)
    for optimizer, scheduler in zip(optimizers, schedulers, strict=True):
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.update()


def _add_losses(run: RunState, losses: list[torch.Tensor]) -> None:
    """Add the steps' losses (still on the device) to the running sums, in step order."""
    if not losses:
        return
    for value in torch.stack(losses).float().tolist():
        run.loss_sum, run.loss_count, run.epoch_loss = (
            run.loss_sum + value,
            run.loss_count + 1,
            run.epoch_loss + value,
        )
    losses.clear()
