"""Logging and registering a trained model: at the end of its stage, or afterwards into the stage's
finished run (the best trial of a tuning study)."""

from __future__ import annotations

from intertask import tracking
from intertask.config import StageConfig, resolve
from intertask.stages.common import TAG, StartPoint, TrainedModel
from intertask.study.workspace import Workspace


def logged_name(chain, which: str, seed: int) -> str:
    """What the Models tab lists: the task chain, the stage and the seed (xnli-pawsx_target_seed2;
    log_model makes it a valid MLflow name)."""
    return f"{'-'.join(chain)}_{which}_seed{seed}"


def log_stage_model(
    ws, folder, head, which, language, chain, start: StartPoint, run_id, alias: str | None = None
) -> tracking.LoggedModel | None:
    cfg = ws.cfg
    if not resolve.logs_model(cfg, which):
        return None
    experiment = tracking.experiment_name(ws.experiment())
    register_as = tracking.registered_name(experiment, cfg.model.name_or_path, list(chain))
    tags = {
        f"{TAG}stage": which,
        f"{TAG}task_chain": "-".join(chain),
        f"{TAG}language": language,
        f"{TAG}base_model": cfg.model.name_or_path,
        f"{TAG}init_model": start.label,
        f"{TAG}init_run_id": start.run_id or "",
        f"{TAG}run_id": run_id,
    }
    dev = tracking.client().get_run(run_id).data.metrics.get("best_dev/selection")
    score = f"{dev:.4f}" if dev is not None else "not recorded"
    model_tags = {
        f"{TAG}study": experiment,
        f"{TAG}base_model": cfg.model.name_or_path,
        f"{TAG}target": chain[-1],
        f"{TAG}intermediate": "-".join(chain[:-1]) or "none",
        f"{TAG}stage": which,
    }
    descriptions = (
        f"intertask study {experiment!r}: {cfg.model.name_or_path} trained on "
        f"{' then '.join(chain)} ({which} stage). One version per seed and run; alias @{alias or which} "
        "points at the latest. Load with mlflow.pyfunc.load_model('models:/<name>@<alias>').",
        f"seed {cfg.seed}, trained in run {run_id} from {start.label}; best dev selection score {score} "
        "(the test scores are on the evaluate run and the study's parent run).",
    )
    logged = tracking.log_model(
        folder,
        head,
        name=logged_name(chain, which, cfg.seed),
        register_as=register_as if cfg.tracking.register_models else None,
        alias=alias or which,
        tags=tags | {f"{TAG}seed": str(cfg.seed), f"{TAG}dev_score": score},
        changed_from=cfg.model.name_or_path if cfg.tracking.log_weights != "full" else None,
        slim_only_if_half=cfg.tracking.log_weights == "auto",
        descriptions=descriptions,
        model_tags=model_tags,
    )
    tracking.set_tags({f"{TAG}model_uri": logged.uri})  # how a later run reuses this one
    return logged


def publish(ws: Workspace, which: str, trained: TrainedModel, alias: str) -> tracking.LoggedModel | None:
    """Log and register a model that `train_stage(..., log_model=False)` left in the workdir, into its
    own (finished) run: the best trial of a tuning study."""
    stage: StageConfig = getattr(ws.cfg, which)
    head = resolve.catalog(ws.cfg).task(stage.task_names[0]).head
    run = tracking.get_run(trained.run_id)
    start = StartPoint(
        files=trained.files,
        label=run.data.tags.get(f"{TAG}init_model", ""),
        run_id=run.data.tags.get(f"{TAG}init_run_id") or None,
        task_chain=trained.task_chain[:-1],
        seen={},
    )
    with tracking.run(run.info.run_name, experiment_id=ws.experiment(), run_id=trained.run_id):
        return log_stage_model(
            ws,
            trained.files.model_dir,
            head,
            which,
            trained.language,
            trained.task_chain,
            start,
            trained.run_id,
            alias,
        )
