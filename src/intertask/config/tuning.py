"""The `tuning:` section: the Optuna study over one stage, its search space, sampler and pruner."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from intertask.config.schema import FieldChecks
from intertask.names import close_matches

TUNABLE = ("learning_rate", "batch_size", "epochs", "warmup_ratio", "weight_decay", "max_grad_norm")
PEFT_TUNABLE = ("peft.rank", "peft.alpha", "peft.dropout")  # with a `peft:` section


@dataclass(frozen=True, kw_only=True)
class ParamSpace:
    """One searched hyperparameter of the tuned stage's `training` (see TUNABLE)."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None  # float / int: inclusive bounds
    high: float | None = None
    log: bool = False  # float / int: sample on a log scale (low > 0)
    step: float | None = (
        None  # float / int: a grid of low, low + step, ... (grid sampler needs it for floats)
    )
    choices: tuple[int | float | str | bool, ...] = ()  # categorical

    def __post_init__(self) -> None:
        c = FieldChecks()
        if self.type == "categorical":
            c.require(
                bool(self.choices), "choices", "a categorical parameter needs choices", [], "[a, b, ...]"
            )
        else:
            c.require(
                self.low is not None and self.high is not None,
                "low",
                f"a {self.type} parameter needs bounds",
                {"low": self.low, "high": self.high},
                "low and high",
            )
            if self.low is not None and self.high is not None:
                c.require(
                    self.low <= self.high, "low", "low is above high", self.low, f"<= high ({self.high})"
                )
                c.require(
                    not self.log or self.low > 0,
                    "low",
                    "a log scale needs a positive lower bound",
                    self.low,
                    "> 0 with log: true",
                )
            c.require(self.step is None or self.step > 0, "step", "must be positive", self.step, "> 0")
            c.require(
                not (self.log and self.step is not None),
                "step",
                "a log-scale parameter takes no step",
                self.step,
                "step: null with log: true",
            )
            if self.type == "int":
                for name in ("low", "high", "step"):
                    value = getattr(self, name)
                    c.require(
                        value is None or float(value).is_integer(),
                        name,
                        "an int parameter needs whole numbers",
                        value,
                        "an integer",
                    )
        c.done()

    def contains(self, value) -> bool:
        if self.type == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return self.low <= value <= self.high and (self.type == "float" or float(value).is_integer())

    def grid_values(self) -> tuple | None:
        """The values a grid search walks through (None: a continuous range without a step)."""
        if self.type == "categorical":
            return self.choices
        if self.type == "int":
            return tuple(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            return None
        count = int(round((self.high - self.low) / self.step)) + 1
        return tuple(round(self.low + i * self.step, 12) for i in range(count))


@dataclass(frozen=True, kw_only=True)
class SamplerConfig:
    kind: Literal["tpe", "random", "grid"] = "tpe"
    seed: int | None = None  # default: the experiment seed
    startup_trials: int = 4  # tpe: random trials before the model takes over


@dataclass(frozen=True, kw_only=True)
class PrunerConfig:
    kind: Literal["median", "successive_halving", "hyperband", "none"] = "median"
    startup_trials: int = 2  # median: trials that finish before anything is pruned
    warmup_epochs: int = 0  # median: epochs of every trial that are never pruned
    min_epochs: int = 1  # successive halving / hyperband: the smallest budget, in epochs
    reduction_factor: int = 3  # successive halving / hyperband: keep 1 in this many at each rung

    def __post_init__(self) -> None:
        c = FieldChecks()
        for name in ("startup_trials", "warmup_epochs"):
            c.require(getattr(self, name) >= 0, name, "must not be negative", getattr(self, name), ">= 0")
        c.require(self.min_epochs >= 1, "min_epochs", "must be positive", self.min_epochs, ">= 1")
        c.require(self.reduction_factor >= 2, "reduction_factor", "too small", self.reduction_factor, ">= 2")
        c.done()


@dataclass(frozen=True, kw_only=True)
class TuningConfig:
    stage: Literal["intermediate", "target"] = "target"  # the stage whose training is tuned
    metric: str | None = (
        None  # objective: this dev metric of the stage's task (default: its selection metric)
    )
    direction: Literal["maximize", "minimize"] = "maximize"
    trials: int = 20  # trials of the study in all, over every worker process
    space: dict[str, ParamSpace] = field(default_factory=dict)  # name (one of TUNABLE) -> range
    enqueue: tuple[dict[str, int | float | str | bool], ...] = ()  # first trials' values (e.g. the paper's)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    storage: str | None = None  # Optuna RDB URL (default: sqlite optuna.db beside the MLflow store)
    study_name: str | None = None  # default: <name>-<stage>
    alias: str = "tuned"  # registry alias of the best trial's model
    heartbeat_seconds: int = 10  # a trial's liveness signal in the study storage
    grace_seconds: int = 60  # a RUNNING trial silent this long is failed and retried once

    def __post_init__(self) -> None:
        c = FieldChecks()
        c.require(self.trials >= 1, "trials", "must be positive", self.trials, ">= 1")
        c.require(bool(self.space), "space", "nothing to search", {}, "at least one parameter")
        self._check_space(c)
        self._check_enqueued(c)
        self._check_grid(c)
        c.require(
            self.heartbeat_seconds >= 1, "heartbeat_seconds", "too small", self.heartbeat_seconds, ">= 1"
        )
        c.require(
            self.grace_seconds > self.heartbeat_seconds,
            "grace_seconds",
            "must exceed heartbeat_seconds",
            self.grace_seconds,
            f"> {self.heartbeat_seconds}",
        )
        c.done()

    def _check_space(self, c: FieldChecks) -> None:
        """Every searched name is a tunable parameter."""
        for name in self.space:
            hint = close_matches(name, list(TUNABLE + PEFT_TUNABLE))
            c.require(
                name in TUNABLE + PEFT_TUNABLE,
                f"space.{name}",
                "unknown parameter name",
                name,
                (f"did you mean {hint[0]!r}?; " if hint else "")
                + "one of: "
                + ", ".join(TUNABLE + PEFT_TUNABLE),
            )

    def _check_enqueued(self, c: FieldChecks) -> None:
        """Enqueued first trials: no more than `trials`, each value a searched parameter inside its space."""
        c.require(
            len(self.enqueue) <= self.trials,
            "enqueue",
            "more than `trials`",
            len(self.enqueue),
            f"<= {self.trials}",
        )
        for i, values in enumerate(self.enqueue):
            for name, value in values.items():
                space = self.space.get(name)
                c.require(
                    space is not None,
                    f"enqueue[{i}].{name}",
                    "not a searched parameter",
                    name,
                    "one of: " + ", ".join(self.space),
                )
                if space is not None:
                    c.require(
                        space.contains(value),
                        f"enqueue[{i}].{name}",
                        "outside the search space",
                        value,
                        f"in {list(space.choices)}"
                        if space.type == "categorical"
                        else f"{space.low}..{space.high}",
                    )

    def _check_grid(self, c: FieldChecks) -> None:
        """The grid sampler: a finite set of values per parameter, enqueued values on the grid."""
        if self.sampler.kind != "grid":
            return
        for name, space in self.space.items():
            c.require(
                space.grid_values() is not None,
                f"space.{name}",
                "the grid sampler needs a finite set of values",
                name,
                "choices, an int range, or a float range with a step",
            )
        for i, values in enumerate(self.enqueue):
            for name, value in values.items():
                grid = self.space[name].grid_values() if name in self.space else None
                c.require(
                    grid is None or value in grid,
                    f"enqueue[{i}].{name}",
                    "not a point of the grid",
                    value,
                    f"one of {list(grid or ())[:10]}",
                )
        if all(space.grid_values() is not None for space in self.space.values()):
            size = math.prod(len(space.grid_values()) for space in self.space.values())
            c.require(
                self.trials <= size,
                "trials",
                f"more trials than the grid has points ({size})",
                self.trials,
                f"<= {size}",
            )
