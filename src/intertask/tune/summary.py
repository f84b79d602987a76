"""The study's summary on its parent run: the trials table, the best parameters as overrides that
`finetune` / `main` accept as @FILE, the tuning plots, and the best trial's model registered."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd
import yaml
from optuna.trial import TrialState

from intertask import stages, tracking
from intertask.config import ExperimentConfig
from intertask.errors import redact
from intertask.report import plots
from intertask.study.workspace import Workspace
from intertask.tune.optuna_study import TAG, UNPLANNED_ATTR


@dataclass
class TuneResult:
    study_name: str
    storage: str
    parent_run_id: str
    trials: pd.DataFrame  # one row per trial: number, state, value, params, MLflow run id
    best_value: float | None
    best_params: dict
    best_params_file: Path | None  # dotted-key overrides that `finetune` / `main` accept as @FILE
    registered: str | None  # models:/<name>@<alias> of the best trial, when this worker logged it
    ran: int  # trials this worker ran


@dataclass
class Kept:
    """The best trial this worker ran, whose model files it still holds (only it can publish them)."""

    number: int
    value: float
    trained: stages.TrainedModel
    cfg: ExperimentConfig


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial the study planned (queued trials and their retries; not a trial Optuna's ask()
    added when the queue had emptied: `unplanned` counts those)."""
    rows = []
    for trial in planned(study):
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "value": trial.value,
                **{f"params_{k}": v for k, v in trial.params.items()},
                "epochs_reported": len(trial.intermediate_values),
                "retry_of": trial.system_attrs.get("failed_trial"),
                "mlflow_run_id": trial.user_attrs.get("mlflow_run_id"),
                "error": trial.user_attrs.get("error"),
                "seconds": trial.user_attrs.get("seconds"),
            }
        )
    return pd.DataFrame(rows)


def planned(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [tr for tr in study.get_trials(deepcopy=False) if UNPLANNED_ATTR not in tr.user_attrs]


def unplanned(study: optuna.Study) -> int:
    return sum(UNPLANNED_ATTR in tr.user_attrs for tr in study.get_trials(deepcopy=False))


def best_params_overrides(cfg: ExperimentConfig, params: dict) -> dict:
    return {k if k.startswith("peft.") else f"{cfg.tuning.stage}.training.{k}": v for k, v in params.items()}


def summarise(ws, study, name, url, parent, kept: Kept | None, ran: int) -> TuneResult:
    cfg = ws.cfg
    table = trials_table(study)
    complete = [tr for tr in study.get_trials(deepcopy=False) if tr.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    registered = None
    folder = Path("tuning") / name
    folder.mkdir(parents=True, exist_ok=True)
    best_file = None
    if best is not None:
        overrides = best_params_overrides(cfg, best.params)
        best_file = folder / "best_params.yaml"
        best_file.write_text(yaml.safe_dump(overrides, sort_keys=True), encoding="utf-8")
        if kept is not None and kept.number == best.number:  # this worker holds the best model's files
            logged = stages.publish(
                Workspace(cfg=kept.cfg, experiment_id=ws.experiment(), workdir=ws.workdir),
                cfg.tuning.stage,
                kept.trained,
                cfg.tuning.alias,
            )
            if logged is not None:
                registered = f"models:/{logged.name}@{logged.alias}" if logged.name else logged.uri
    table.to_csv(folder / "trials.csv", index=False)
    done = not study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
    with tracking.logging_to(parent):
        tracking.log_table(table, "tuning/trials")  # trials.csv and trials.html
        if best is not None:
            tracking.log_metrics({"best_value": best.value, "best_trial": best.number})
            best_run = best.user_attrs.get("mlflow_run_id")
            if best_run:
                tracking.set_tags({f"{TAG}best_trial_run_id": best_run})  # the best trial's run, by link
            tracking.log_params({f"best.{k}": v for k, v in best.params.items()})
            tracking.log_text(best_file.read_text(encoding="utf-8"), "tuning/best_params.yaml")
        counts = table.state.value_counts().to_dict() if not table.empty else {}
        tracking.log_metrics(
            {f"trials/{state.lower()}": counts.get(state, 0) for state in ("COMPLETE", "PRUNED", "FAIL")}
            | {"trials/unplanned": unplanned(study)}
        )
        for figure_name, figure in plots.tuning_figures(study).items():
            tracking.log_figure(figure, f"tuning/{figure_name}.png")
            figure.savefig(folder / f"{figure_name}.png", dpi=110, bbox_inches="tight")
            plots.close(figure)
    if done:
        tracking.close_run(parent, "FINISHED")
    return TuneResult(
        name,
        redact(url),
        parent,
        table,
        best.value if best else None,
        dict(best.params) if best else {},
        best_file,
        registered,
        ran,
    )
