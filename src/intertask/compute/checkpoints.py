"""Resumable training state: what a stage needs to continue after its process died, without pickle.

A checkpoint is a folder `step-<N>/` with
  trainable.safetensors  the weights training changes (frozen embeddings are not saved)
  best.safetensors       the best epoch's weights so far, when that is not the current epoch
  optimizer.pt           AdamW and scheduler state dicts (tensors and numbers only; read weights_only)
  rng.safetensors        torch's CPU generator state (dropout), and the GPU's on a GPU
  state.json             counters, per-epoch history, numpy generator and data stream positions
and `latest` names the newest complete one: a folder is written under a temporary name, renamed, and
only then does `latest` (replaced atomically) point at it. A killed writer leaves the previous
checkpoint usable.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from filelock import FileLock, Timeout
from safetensors.torch import load_file, save_file

LATEST = "latest"


def claim(folder: Path) -> FileLock | None:
    """This process's exclusive claim on a checkpoint folder (a lock file beside it, `filelock`): the
    held lock, to release when the stage is done, or None while another live process holds it -- two
    processes training the same stage at once (two studies sharing a stage) would overwrite and clear
    each other's checkpoints. A dead process's claim goes with it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder.parent / f"{folder.name}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


@dataclass(frozen=True)
class Saved:
    step: int
    trainable: dict[str, torch.Tensor]
    best: dict[str, torch.Tensor] | None
    optimizer: dict
    scheduler: dict
    torch_rng: torch.Tensor
    state: dict  # JSON-able
    cuda_rng: torch.Tensor | None = None  # the current GPU's generator (dropout on a GPU)


@dataclass(frozen=True)
class Checkpointer:
    folder: Path
    every_steps: int  # 0: only at the end of each epoch
    on_save: Callable[[Path, int], None] | None = None  # (checkpoint folder, step): a copy elsewhere

    def due(self, step: int) -> bool:
        return self.every_steps > 0 and step % self.every_steps == 0

    def save(self, saved: Saved) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"step-{saved.step}"
        temp = self.folder / f".step-{saved.step}.tmp"
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir()
        save_file(
            {k: v.detach().contiguous() for k, v in saved.trainable.items()}, temp / "trainable.safetensors"
        )
        if saved.best is not None:
            save_file({k: v.contiguous() for k, v in saved.best.items()}, temp / "best.safetensors")
        torch.save({"optimizer": saved.optimizer, "scheduler": saved.scheduler}, temp / "optimizer.pt")
        generators = {"torch_rng": saved.torch_rng}
        if saved.cuda_rng is not None:
            generators["cuda_rng"] = saved.cuda_rng.cpu()
        save_file(generators, temp / "rng.safetensors")
        (temp / "state.json").write_text(json.dumps(saved.state))
        shutil.rmtree(final, ignore_errors=True)
        temp.rename(final)
        pointer = self.folder / f".{LATEST}.tmp"
        pointer.write_text(final.name)
        os.replace(pointer, self.folder / LATEST)
        if self.on_save is not None:
            self.on_save(final, saved.step)
        for old in self.folder.glob("step-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def load(self) -> Saved | None:
        pointer = self.folder / LATEST
        if not pointer.is_file():
            return None
        path = self.folder / pointer.read_text().strip()
        state = json.loads((path / "state.json").read_text())
        optim = torch.load(path / "optimizer.pt", weights_only=True)  # never unpickles code
        best_file = path / "best.safetensors"
        generators = load_file(path / "rng.safetensors")
        return Saved(
            step=state["step"],
            trainable=load_file(path / "trainable.safetensors"),
            best=load_file(best_file) if best_file.is_file() else None,
            optimizer=optim["optimizer"],
            scheduler=optim["scheduler"],
            torch_rng=generators["torch_rng"],
            state=state,
            cuda_rng=generators.get("cuda_rng"),
        )

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class RunState:
    """Everything of a training run that is not a tensor: what a checkpoint's state.json holds."""

    batches_per_task: dict[str, int]
    epoch: int = 0  # the current (or last finished) epoch
    in_epoch: bool = False
    epoch_step: int = 0
    epoch_loss: float = 0.0
    step: int = 0
    seen: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    train_seconds: float = 0.0
    best: float | None = None
    best_epoch: int = 0
    best_dev: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)


def capture(run: RunState, modules, best_state, optimizers, schedulers, scaler, rng, streams) -> Saved:
    state = {
        **asdict(run),
        "rng": rng.bit_generator.state,
        "streams": {n: s.state() for n, s in streams.items()},
    }
    state["python_random"] = list(random.getstate()[1])
    if scaler is not None:
        state["grad_scaler"] = scaler.state_dict()
    return Saved(
        step=run.step,
        trainable=named_trainable(modules),
        best=best_state,
        optimizer={"optimizers": [o.state_dict() for o in optimizers]},
        scheduler={"schedulers": [s.state_dict() for s in schedulers]},
        torch_rng=torch.get_rng_state(),
        cuda_rng=torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        state=state,
    )


def restore(saved: Saved, modules, optimizers, schedulers, scaler, rng, streams, run: RunState):
    """Put the checkpoint back in place; returns the best epoch's weights when they were saved."""
    missing = set(named_trainable(modules)) - set(saved.trainable)
    if missing:
        raise ValueError(f"checkpoint does not fit this model: {sorted(missing)[:3]} ... missing")
    if len(saved.optimizer.get("optimizers", ())) != len(optimizers):
        raise ValueError("checkpoint does not fit this run: a different set of optimizers")
    modules.load_state_dict(saved.trainable, strict=False)
    for optimizer, state in zip(optimizers, saved.optimizer["optimizers"], strict=True):
        optimizer.load_state_dict(state)
    for scheduler, state in zip(schedulers, saved.scheduler["schedulers"], strict=True):
        scheduler.load_state_dict(state)
    torch.set_rng_state(saved.torch_rng)
    if saved.cuda_rng is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(saved.cuda_rng)
    state = dict(saved.state)
    scaler_state = state.pop("grad_scaler", None)
    if scaler is not None and scaler_state is not None:
        scaler.load_state_dict(scaler_state)
    rng.bit_generator.state = state.pop("rng")
    for name, stream_state in state.pop("streams").items():
        streams[name].restore(stream_state)
    version, internal, gauss = random.getstate()
    random.setstate((version, tuple(state.pop("python_random")), gauss))
    for key, value in state.items():
        setattr(run, key, value)
    if saved.best is not None:
        return saved.best
    if run.best_epoch and run.best_epoch == run.epoch and not run.in_epoch:
        return {k: v.detach().clone() for k, v in named_trainable(modules).items()}
    return None


def named_trainable(modules: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What training changes, once per tensor (frozen embeddings are not copied)."""
    return {n: p for n, p in modules.named_parameters() if p.requires_grad}
