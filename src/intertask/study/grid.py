"""A study as a grid: models x intermediate choices x targets x seeds -> cells -> a graph of stage jobs.

Every config is a grid; one without `grid:` is the grid of one model, its intermediate task and `none`
(the baseline arm), one target and one seed. An intermediate model is trained once per (model, choice,
seed) and every target of that arm starts from it. Each job has a content key -- the parts of the
resolved config that shape its output, the fingerprints of the data it reads, the key of the job it
starts from, and the code version -- so a stage whose key matches a FINISHED run is reused.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from intertask.config import NONE, EvalTaskConfig, ExperimentConfig, StageConfig, resolve, with_task_training
from intertask.config.schema import to_dict
from intertask.errors import Problems
from intertask.study.identity import code_version, content_hash, model_identity, tags_of_cell, training_inputs
from intertask.tasks.base import best_fit, head_fit, label_notice
from intertask.tasks.types import task_type

KINDS = ("probe", "intermediate", "finetune", "evaluate")


@dataclass(frozen=True, order=True)
class Cell:
    model: str
    intermediate: tuple[str, ...]  # () is the baseline: no intermediate stage
    target: str | None  # None: the intermediate model is evaluated zero-shot
    seed: int

    @property
    def intermediate_label(self) -> str:
        return "+".join(self.intermediate) or NONE

    @property
    def arm(self) -> tuple[str, tuple[str, ...], int]:
        return (self.model, self.intermediate, self.seed)

    def tags(self) -> dict[str, str]:
        return tags_of_cell(self.model, self.intermediate_label, self.target or "", self.seed)


@dataclass(frozen=True)
class Job:
    id: str  # readable and unique: kind|model|intermediate|target|seed
    kind: str  # probe, intermediate, finetune, evaluate
    cell: Cell  # the cell whose derived config the job runs with
    deps: tuple[str, ...]  # ids of the jobs it starts from

    @property
    def arm(self) -> tuple[str, tuple[str, ...], int]:
        return self.cell.arm


def _as_tasks(choice) -> tuple[str, ...]:
    if choice == NONE:
        return ()
    return (choice,) if isinstance(choice, str) else tuple(choice)


def cells(cfg: ExperimentConfig) -> list[Cell]:
    """The cells of the study, in a stable order (baseline arms included)."""
    grid = cfg.grid
    stage_tasks = cfg.intermediate.task_names if cfg.intermediate else ()
    default_choices = ((stage_tasks,) if stage_tasks else ()) + ((NONE,) if cfg.target else ())
    choices = [_as_tasks(c) for c in (grid.intermediate if grid and grid.intermediate else default_choices)]
    targets = grid.target if grid and grid.target else ((cfg.target.task,) if cfg.target else (None,))
    model_names = grid.models if grid and grid.models else (cfg.model.name_or_path,)
    seeds = grid.seeds if grid and grid.seeds else (cfg.seed,)
    excluded = [tuple(pair) if len(pair) == 3 else ("*", *pair) for pair in grid.exclude] if grid else []
    out = [
        Cell(m, c, t, s)
        for m in model_names
        for c in choices
        for t in targets
        for s in seeds
        if (c or t is not None) and not _excluded(excluded, (m, "+".join(c) or NONE, t))
    ]  # no intermediate and no target: nothing to train
    return out


def _excluded(rules: list[tuple[str, ...]], cell: tuple) -> bool:
    """Whether a [model, intermediate, target] rule ("*": any value) leaves the cell out."""
    return any(all(r == "*" or r == v for r, v in zip(rule, cell, strict=True)) for rule in rules)


def distinct_cells(cfg: ExperimentConfig) -> list[Cell]:
    """One cell per (model, intermediate, target), its first seed: what a check or notice that does
    not depend on the seed needs to look at."""
    return list({(c.model, c.intermediate, c.target): c for c in reversed(cells(cfg))}.values())[::-1]


def cell_config(cfg: ExperimentConfig, cell: Cell) -> ExperimentConfig:
    """The plain experiment config of one cell: its model, intermediate task(s), target and seed."""
    base_stage = cfg.intermediate or StageConfig(task="placeholder", training=cfg.training)
    intermediate = None
    if cell.intermediate:
        language = training_language(cfg, base_stage.language, cell.intermediate)
        if len(cell.intermediate) == 1:
            intermediate = replace(
                base_stage, task=cell.intermediate[0], tasks=(), selection_task=None, language=language
            )
        else:
            selection = base_stage.selection_task if base_stage.selection_task in cell.intermediate else None
            intermediate = replace(
                base_stage, task=None, tasks=cell.intermediate, selection_task=selection, language=language
            )
    target = None
    if cell.target is not None:
        base_target = cfg.target or StageConfig(task=cell.target, training=cfg.training)
        language = training_language(cfg, base_target.language, (cell.target,))
        target = replace(base_target, task=cell.target, language=language)
    derived = replace(
        cfg,
        model=replace(cfg.model, name_or_path=cell.model),
        seed=cell.seed,
        data=replace(cfg.data, split_seed=cfg.split_seed),
        intermediate=intermediate,
        target=target,
        grid=None,
    )
    derived = replace(
        derived,
        evaluation=replace(
            cfg.evaluation,
            task=None,
            languages=(),
            tasks=tuple(cell_evaluation(cfg, cell)),
            cut_tasks=tuple(sorted(set(cfg.evaluation.cut_tasks) | resolve.trained_tasks(cfg))),
        ),
    )
    problems = Problems()
    derived = with_task_training(derived, f"grid[{cell.intermediate_label} -> {cell.target}]", problems)
    problems.raise_if_any()
    return derived


def training_language(cfg: ExperimentConfig, language: str, tasks: tuple[str, ...]) -> str:
    """The stage's language, or -- for a grid task that does not ship it (Allociné is French only) --
    the task's first language, when all of the stage's tasks agree on it."""
    catalog = resolve.catalog(cfg)
    specs = [catalog.spec(t) for t in tasks if t in catalog]
    if all(language in s.languages for s in specs):
        return language
    firsts = {s.languages[0] for s in specs}
    return firsts.pop() if len(firsts) == 1 else language  # disagreement: left for the checks to report


def cell_evaluation(cfg: ExperimentConfig, cell: Cell) -> list[EvalTaskConfig]:
    """The evaluation tasks a cell's model can be scored on (see evaluation_fit)."""
    return evaluation_fit(cfg, cell)[0]


def evaluation_fit(
    cfg: ExperimentConfig, cell: Cell
) -> tuple[list[EvalTaskConfig], list[tuple[str, str]], list[tuple[str, str]]]:
    """The evaluation tasks a cell's model can be scored on -- those whose head fits its target's (or,
    for a zero-shot cell, one of its intermediate tasks') by head type and label NAMES, in any order,
    and retrieval tasks; by default the target task -- and (task, why not) for each task left out.
    A study whose requested task fits none of its models, or a cell that nothing fits, is refused
    before anything runs (validate.evaluation_heads); a cell that leaves out a task another cell
    scores says so (pipeline: printed, and tagged on the study's run). Third: the (what, line) notices of
    tasks scored by a head matched by label name -- in another order, or a subset of its labels -- as
    the evaluation stage will say them."""
    catalog = resolve.catalog(cfg)
    trained = [cell.target] if cell.target else list(cell.intermediate)
    signatures = {t: task_type(catalog.spec(t)).head_signature() for t in trained if t in catalog}
    entries = (
        resolve.evaluation_tasks(cfg)
        if (cfg.evaluation.tasks or cfg.evaluation.task)
        else [EvalTaskConfig(task=t, languages=_languages_for(cfg, t)) for t in trained]
    )
    out, left, notices = [], [], []
    for entry in entries:
        if entry.task not in catalog:
            continue  # an unknown name: validate reports it
        task = task_type(catalog.spec(entry.task))
        fits = {t: head_fit(sig, task.head_signature()) for t, sig in signatures.items()}
        if not task.trainable or any(f.fits for f in fits.values()):
            out.append(
                replace(
                    entry,
                    split=entry.split or cfg.evaluation.split,
                    languages=entry.languages or _languages_for(cfg, entry.task),
                )
            )
            # a head trained on the task itself scores it as it is; another, matched by label name, is said
            found = best_fit(fits.items()) if task.trainable and entry.task not in signatures else None
            if found is not None and found[1].reordered:
                head_task, fit = found
                notices.append(
                    label_notice(entry.task, task.spec.labels, head_task, signatures[head_task][1], fit)
                )
        else:
            left.append((entry.task, "; ".join(f"the head of {t}: {f.problem}" for t, f in fits.items())))
    return out, left, notices


def _languages_for(cfg: ExperimentConfig, task: str) -> tuple[str, ...]:
    """evaluation.languages that the task has (missing_languages says which it lacks; a task with
    none of them is refused by validate), or the task's default languages when none are given."""
    spec = resolve.catalog(cfg).spec(task)
    wanted = cfg.evaluation.languages
    if not wanted:
        return spec.evaluated_languages
    return tuple(lang for lang in wanted if lang in spec.languages)


def missing_languages(cfg: ExperimentConfig, task: str) -> tuple[str, ...]:
    """The languages of evaluation.languages that a task evaluated with them does not have."""
    spec = resolve.catalog(cfg).spec(task)
    return tuple(lang for lang in cfg.evaluation.languages if lang not in spec.languages)


def jobs(cfg: ExperimentConfig) -> list[Job]:
    """Every stage job of the study in dependency order; shared intermediate stages appear once."""
    out: dict[str, Job] = {}
    study = cells(cfg)
    if any("base" in p.after for p in cfg.probes):
        for model in dict.fromkeys(c.model for c in study):
            first = next(c for c in study if c.model == model)
            job_id = f"probe|{model}"
            out[job_id] = Job(job_id, "probe", replace(first, intermediate=(), target=None), ())
    for cell in study:
        upstream: tuple[str, ...] = ()
        if cell.intermediate:
            inter_id = f"intermediate|{cell.model}|{cell.intermediate_label}|{cell.seed}"
            out.setdefault(inter_id, Job(inter_id, "intermediate", replace(cell, target=None), ()))
            upstream = (inter_id,)
        if cell.target is not None:
            ft_id = f"finetune|{cell.model}|{cell.intermediate_label}|{cell.target}|{cell.seed}"
            out[ft_id] = Job(ft_id, "finetune", cell, upstream)
            upstream = (ft_id,)
        ev_id = f"evaluate|{cell.model}|{cell.intermediate_label}|{cell.target or ''}|{cell.seed}"
        out[ev_id] = Job(ev_id, "evaluate", cell, upstream)
    return list(out.values())


def model_logging(cfg: ExperimentConfig, jobs: list[Job]) -> dict[str, bool]:
    """For each training job, whether `tracking.log_models` keeps (logs, and registers when asked) its
    model: `registered` keeps the grid's first seed of every (model, task chain), `final` only those
    of them that end a chain (a target, or an intermediate model evaluated as it is)."""
    policy = cfg.tracking.log_models
    first_seed = cells(cfg)[0].seed if jobs else None
    evaluated = {d for job in jobs if job.kind == "evaluate" for d in job.deps}
    out = {}
    for job in jobs:
        if job.kind not in ("intermediate", "finetune"):
            continue
        keep = policy == "all" or (policy in ("registered", "final") and job.cell.seed == first_seed)
        if policy == "final":
            keep = keep and (job.kind == "finetune" or job.id in evaluated)
        out[job.id] = keep
    return out


def with_model_logging(config: ExperimentConfig, keep: bool, handed_on: bool) -> ExperimentConfig:
    """A training job's config with its logging made concrete: `all` when its model is kept (or must
    be logged to reach the next job in another process), else `none`; registered only when kept."""
    tracking = config.tracking
    logged = "all" if keep or handed_on else "none"
    return replace(
        config,
        tracking=replace(tracking, log_models=logged, register_models=tracking.register_models and keep),
    )


def job_key(job: Job, config: ExperimentConfig, fingerprints: list[str], upstream: list[str]) -> str:
    """The content key of a job: what shapes its output, nothing about how the study runs or logs (an
    executor or `tracking.log_models` changed between runs reuses every finished stage; a reused stage
    whose model was not logged and is now wanted runs again: pipeline._finished_jobs)."""
    if job.kind in ("intermediate", "finetune"):
        parts = training_inputs(config, job.kind)
    else:
        parts = {
            "kind": job.kind,
            "model": model_identity(config.model.name_or_path),
            "model_config": to_dict(config.model),
            "peft": to_dict(config.peft) if config.peft else None,
            "seed": config.seed if job.kind != "probe" else None,
            "evaluation": to_dict(config.evaluation) if job.kind == "evaluate" else None,
            "fractions": to_dict(config.data.split_fractions),
            "split_seed": config.split_seed,
            "code": code_version(),
        }
    parts |= {"probes": to_dict(config.probes), "data": sorted(fingerprints), "upstream": upstream}
    return content_hash(parts)
