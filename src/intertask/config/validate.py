"""The checks of an experiment that need more than its own fields: task, language and metric names
against the task catalog, splits and data files on disk, model names against the offline registry,
the tuning search space against the stage it tunes, and every distinct grid cell as a config of its
own. `load_experiment` reads a config (intertask.config) and runs them all, so that every problem is
reported at once, before anything is trained.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from pathlib import Path

from intertask import pretrained
from intertask.config import (
    NONE,
    PEFT_TUNABLE,
    STAGES,
    ExperimentConfig,
    ProbeConfig,
    StageConfig,
    TuningConfig,
    blame_overrides,
    read_experiment,
    resolve,
)
from intertask.errors import ConfigError, DataError, Problems
from intertask.names import close_matches, suggest
from intertask.study import grid
from intertask.tasks import TaskCatalog
from intertask.tasks.examples import plan_split, shipped_sources
from intertask.tasks.types import task_type


def load_experiment(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read, override, type-check and validate an experiment; raise ConfigError listing every problem."""
    problems = Problems()
    cfg, override_keys = read_experiment(path, overrides, problems)
    if cfg is not None:
        cfg = resolve.with_task_language_names(cfg)
        check_experiment(cfg, str(path), problems)
    blame_overrides(problems, override_keys)
    problems.raise_if_any()
    return cfg


def check_hub(cfg: ExperimentConfig, reads) -> int:
    """Open every hub source in `reads` ((task, language, split, whole), as a Workspace that left them
    unread lists them) and read a few rows of each as a run would; raise DataError listing every
    problem at once. Returns how many sources were opened."""
    from intertask.tasks.examples import check_hub_source

    problems = Problems()
    catalog = resolve.catalog(cfg)
    fractions = cfg.data.split_fractions.as_dict()
    opened = set()
    for task, language, split, whole in sorted(reads):
        spec = catalog.spec(task)
        plan = plan_split(spec, split, language, fractions, "hub", whole, cfg.data.resplit)
        for source in shipped_sources(spec, plan.source, language, "hub"):
            if (task, language, source) in opened:
                continue
            opened.add((task, language, source))
            try:
                check_hub_source(spec, source, language)
            except DataError as err:
                problems.extend(err)
    if problems:
        raise DataError(problems.items)
    return len(opened)


def check_experiment(cfg: ExperimentConfig, file: str, problems: Problems) -> None:
    """Names (tasks, languages, metrics, models), splits and data files; adds to `problems`."""
    try:
        catalog = resolve.catalog(cfg)
    except ConfigError as err:
        problems.extend(err)
        return
    if cfg.intermediate is None and cfg.target is None and cfg.evaluation.model is None:
        problems.add(file, "target", "nothing to run", None, "a target and/or intermediate stage")
    checker = _Checker(cfg, catalog, file, problems)
    for stage_name in STAGES:
        stage = getattr(cfg, stage_name)
        if stage is not None:
            checker.stage(stage_name, stage)
    checker.evaluation()
    for i, probe in enumerate(cfg.probes):
        checker.probe(i, probe)
    checker.model()
    for i, name in enumerate(cfg.data.hub_tasks):
        checker.task(name, f"data.hub_tasks[{i}]")
    for name in cfg.training_per_task:
        checker.task(name, f"training_per_task.{name}")
    for i, name in enumerate(cfg.evaluation.cut_tasks):
        checker.task(name, f"evaluation.cut_tasks[{i}]")
    if cfg.grid is not None:
        _check_grid(cfg, catalog, file, problems)
    if cfg.predict.train_top_k and (cfg.grid is None or len(cfg.grid.intermediate) < 2):
        checker.add(
            "predict.train_top_k",
            "there are no intermediate choices to pick from",
            cfg.predict.train_top_k,
            "a grid with several grid.intermediate choices (or no train_top_k)",
        )
    if cfg.tuning is not None:
        checker.tuning(cfg.tuning)
    if not problems.items and cfg.evaluation.model is None:
        evaluation_heads(cfg, file, problems)


def evaluation_heads(cfg: ExperimentConfig, file: str, problems: Problems) -> None:
    """Every evaluation task the config asks for is scored by some model the study trains (head type
    and label names, in any order), and every cell's model has something to be scored on. Never a
    silent substitute: a task that fits nothing is refused here, before anything runs, naming both
    label sets (with a did-you-mean for a typo)."""
    catalog = resolve.catalog(cfg)
    fits: set[str] = set()
    why: dict[str, list[str]] = {}
    empty, no_language = [], []
    for cell in grid.distinct_cells(cfg):
        scored, left, _ = grid.evaluation_fit(cfg, cell)
        for entry in scored:
            fits.add(entry.task)
            if not entry.languages and entry.task not in no_language:
                no_language.append(entry.task)
        for task, reason in left:
            why.setdefault(task, [])
            if reason not in why[task]:
                why[task].append(reason)
        if not scored:
            empty.append(cell)
    ev = cfg.evaluation
    asked = [(f"evaluation.tasks[{i}].task", e.task) for i, e in enumerate(ev.tasks)]
    asked += [("evaluation.task", ev.task)] if ev.task and not ev.tasks else []
    refused = False
    for where, task in asked:
        if task in catalog and task not in fits and task in why:
            spec = catalog.spec(task)
            refused = True
            problems.add(
                file,
                where,
                f"fits no model this study trains: {'; '.join(why[task])}",
                f"{task}: {spec.type}" + (f" {list(spec.labels)}" if spec.labels else ""),
                "a task of a head type the study trains, with the label names of a trained head (any "
                "order), or a label_map in the task's declaration mapping its raw labels onto them",
            )
    for task in no_language:
        spec = catalog.spec(task)
        problems.add(
            file,
            "evaluation.languages",
            f"task {task!r} has none of these languages",
            list(ev.languages),
            f"some of its languages {list(spec.languages)}",
        )
    for cell in [] if refused else empty:
        where = (
            f"grid[{cell.intermediate_label} -> {cell.target or 'zero-shot'}].evaluation"
            if cfg.grid
            else "evaluation"
        )
        problems.add(
            file,
            where,
            "no evaluation task fits this cell's model",
            cell.target or cell.intermediate_label,
            "an evaluation task with the same head type and label names as the target",
        )


def _check_grid(cfg: ExperimentConfig, catalog: TaskCatalog, file: str, problems: Problems) -> None:
    """Every name in the grid lists, then every distinct cell's own config (as if it were a config)."""
    before = len(problems.items)
    checker = _Checker(cfg, catalog, file, problems)
    names = [
        (f"grid.intermediate[{i}]", t)
        for i, c in enumerate(cfg.grid.intermediate)
        if c != NONE
        for t in ((c,) if isinstance(c, str) else c)
    ]
    names += [(f"grid.target[{i}]", t) for i, t in enumerate(cfg.grid.target)]
    for where, name in names:
        spec = checker.task(name, where)
        if spec is not None and spec.type == "retrieval":
            checker.add(
                where, "retrieval tasks are not trained", name, "a classification, tagging, QA or choice task"
            )
    labels = {c if isinstance(c, str) else "+".join(c) for c in cfg.grid.intermediate}
    targets = set(cfg.grid.target) or ({cfg.target.task} if cfg.target else set())
    models = set(cfg.grid.models) or {cfg.model.name_or_path}
    for i, rule in enumerate(cfg.grid.exclude):
        if len(rule) not in (2, 3):
            continue  # GridConfig said so
        *model, intermediate, target = rule
        known = [(intermediate, labels), (target, targets), *((m, models) for m in model)]
        if any(value != "*" and value not in values for value, values in known):
            checker.add(
                f"grid.exclude[{i}]",
                "not a pair of the grid" if len(rule) == 2 else "not a triple of the grid",
                list(rule),
                ("a model of " + str(sorted(models)) + ", " if model else "")
                + f"an intermediate of {sorted(labels)} and a target of {sorted(targets)}"
                + (' ("*": any)' if model else ""),
            )
    for i, model in enumerate(cfg.grid.models):
        _Checker(replace(cfg, model=replace(cfg.model, name_or_path=model)), catalog, file, problems).model()
        if len(problems.items) > before and problems.items[-1].where == "model.name_or_path":
            problems.items[-1] = dataclasses.replace(problems.items[-1], where=f"grid.models[{i}]")
    if problems.items:  # cells are derived from names already found wrong (e.g. a misspelt target.task)
        return
    for cell in grid.distinct_cells(cfg):
        derived = grid.cell_config(cfg, cell)
        label = f"grid[{cell.intermediate_label} -> {cell.target or 'zero-shot'}]"
        cell_problems = Problems()
        cell_checker = _Checker(derived, catalog, file, cell_problems)
        for stage_name in STAGES:
            if getattr(derived, stage_name) is not None:
                cell_checker.stage(stage_name, getattr(derived, stage_name))
        cell_checker.evaluation()
        problems.items.extend(dataclasses.replace(p, where=f"{label}.{p.where}") for p in cell_problems.items)


def _tuning_values(tuning: TuningConfig):
    """(where, name, value) of every bound, choice and enqueued value of a search space."""
    for name, space in tuning.space.items():
        if space.type == "categorical":
            for i, choice in enumerate(space.choices):
                yield f"space.{name}.choices[{i}]", name, choice
        else:
            cast = int if space.type == "int" else float
            for bound in ("low", "high"):
                if getattr(space, bound) is not None:
                    yield f"space.{name}.{bound}", name, cast(getattr(space, bound))
    for i, values in enumerate(tuning.enqueue):
        for name, value in values.items():
            if name in tuning.space:
                yield f"enqueue[{i}].{name}", name, value


@dataclass
class _Checker:
    cfg: ExperimentConfig
    catalog: TaskCatalog
    file: str
    problems: Problems

    def add(self, where: str, problem: str, got: object, expected: str) -> None:
        self.problems.add(self.file, where, problem, got, expected)

    def task(self, name: str, where: str):
        if name in self.catalog:
            return self.catalog.spec(name)
        self.add(where, "unknown task", name, suggest(name, self.catalog.names()))
        return None

    def language(self, spec, language: str, where: str) -> bool:
        if language in spec.languages:
            return True
        near = close_matches(language, list(spec.languages))
        problem = f"task {spec.name!r} has no language {language!r}" + (
            f"; did you mean {' or '.join(map(repr, near))}?" if near else ""
        )
        known = ", ".join(sorted(spec.languages))
        self.add(
            where,
            problem,
            language,
            f"one of its {len(spec.languages)} languages ({known}), an ISO 639-1/639-3 code of one, or "
            "a code its files use",
        )
        return False

    def reads(self, spec, language: str, splits: tuple[str, ...], where: str, whole: bool = False) -> None:
        """The splits a stage or an evaluation reads: each must come from a shipped set, and the files
        of those sets (only those: a user with MLQA's dev files evaluates at split dev) must exist."""
        origin = self.cfg.origin(spec.name)
        sources = []
        for split in splits:
            try:
                fractions = self.cfg.data.split_fractions.as_dict()
                plan = plan_split(spec, split, language, fractions, origin, whole, self.cfg.data.resplit)
                sources.extend(shipped_sources(spec, plan.source, language, origin))
            except DataError:
                shipped = list(spec.splits_for(language, origin))
                self.add(
                    where,
                    f"task {spec.name!r} has no {split} split for language {language!r}",
                    split,
                    f"a task and language with it (shipped: {shipped})",
                )
        if origin == "hub":
            if spec.hub is None:
                self.add(
                    "data.source" if self.cfg.data.source == "hub" else "data.hub_tasks",
                    f"task {spec.name!r} has no hub source",
                    "hub",
                    "local",
                )
            return
        root = resolve.data_root(self.cfg)
        for source in dict.fromkeys(sources):
            for path in spec.paths(source, language, root):
                if not path.exists():
                    self.add(
                        where,
                        f"data file missing for task {spec.name!r}, language {language!r}, split {source!r}",
                        str(path),
                        f"an existing file under the data root {root} (set data.root or $INTERTASK_DATA)",
                    )

    def tuning(self, tuning: TuningConfig) -> None:
        stage = getattr(self.cfg, tuning.stage)
        if stage is None:
            self.add(
                "tuning.stage", f"the config has no {tuning.stage} stage", tuning.stage, "a configured stage"
            )
            return
        for name in tuning.space:
            if name in PEFT_TUNABLE and self.cfg.peft is None:
                self.add(f"tuning.space.{name}", "the config has no peft section", name, "a `peft:` section")
                return
        for where, name, value in _tuning_values(tuning):
            try:
                if name in PEFT_TUNABLE:
                    replace(self.cfg.peft, **{name.split(".", 1)[1]: value})
                else:
                    replace(stage.training, **{name: value})
            except (ConfigError, TypeError) as err:
                detail = err.problems[0].expected if isinstance(err, ConfigError) else str(err)
                field_name = name if name in PEFT_TUNABLE else f"training.{name}"
                self.add(f"tuning.{where}", f"not a valid {field_name}", value, detail or "a valid value")
        if tuning.metric is None:
            return
        chosen = stage.selection_task or stage.task_names[0]
        if chosen in self.catalog:
            metrics = self.catalog.spec(chosen).metrics
            if tuning.metric not in metrics:
                self.add(
                    "tuning.metric",
                    f"not a metric of task {chosen!r}",
                    tuning.metric,
                    suggest(tuning.metric, metrics),
                )

    def stage(self, stage_name: str, stage: StageConfig) -> None:
        if stage_name == "target" and len(stage.task_names) > 1:
            self.add(
                "target.tasks", "the target stage trains one task", list(stage.tasks), "target.task: name"
            )
        specs = []
        for i, name in enumerate(stage.task_names):
            where = f"{stage_name}.task" if stage.task else f"{stage_name}.tasks[{i}]"
            spec = self.task(name, where)
            if spec is None:
                continue
            if spec.type == "retrieval":
                self.add(
                    where,
                    "retrieval tasks are not trained (use them in evaluation or probes)",
                    name,
                    "a classification, tagging, QA or multiple-choice task",
                )
                continue
            specs.append(spec)
            if self.language(spec, stage.language, f"{stage_name}.language"):
                self.reads(spec, stage.language, ("train", "dev"), where)
        self.selection(stage_name, stage, specs)
        if stage_name == "intermediate":
            for key in ("init", "keep_head"):
                if getattr(stage, key):
                    self.add(
                        f"intermediate.{key}",
                        "only applies to the target stage",
                        getattr(stage, key),
                        "unset",
                    )
        elif stage.keep_head and specs:
            self.keep_head(specs[0])

    def selection(self, stage_name: str, stage: StageConfig, specs: list) -> None:
        metric = stage.selection_metric
        chosen = [s for s in specs if s.name == (stage.selection_task or stage.task_names[0])]
        if metric is not None and chosen and metric not in chosen[0].metrics:
            near = close_matches(metric, list(chosen[0].metrics))
            expected = (
                f"did you mean {near[0]!r}?; " if near else ""
            ) + f"one of the task's metrics {list(chosen[0].metrics)}"
            self.add(f"{stage_name}.selection_metric", "unknown metric for this task", metric, expected)

    def keep_head(self, spec) -> None:
        cfg = self.cfg
        if cfg.intermediate is None and cfg.target.init is None:
            self.add("target.keep_head", "no intermediate head to keep", True, "an intermediate stage")
        elif cfg.intermediate is not None:
            mine = task_type(spec).head_signature()
            theirs = [
                task_type(self.catalog.spec(t)).head_signature()
                for t in cfg.intermediate.task_names
                if t in self.catalog
            ]
            if mine not in theirs:
                self.add(
                    "target.keep_head",
                    "no intermediate task has this type and label space",
                    f"{spec.name}: {spec.type} {list(spec.labels)}",
                    "an intermediate task with the same type and labels, or keep_head: false",
                )

    def evaluation(self) -> None:
        ev = self.cfg.evaluation
        for i, entry in enumerate(resolve.evaluation_tasks(self.cfg)):
            base = f"evaluation.tasks[{i}]" if ev.tasks else "evaluation"
            spec = self.task(entry.task, f"{base}.task" if ev.tasks or ev.task else "target.task")
            if spec is None:
                continue
            explicit = ev.tasks[i].languages if ev.tasks else ev.languages
            for j, language in enumerate(entry.languages):
                where = f"{base}.languages[{j}]" if explicit else f"{base}.languages"
                if self.language(spec, language, where):
                    self.reads(spec, language, (entry.split,), where, resolve.read_whole(self.cfg, spec.name))

    def probe(self, i: int, probe: ProbeConfig) -> None:
        spec = self.task(probe.task, f"probes[{i}].task")
        if spec is None:
            return
        if spec.type != "retrieval":
            self.add(
                f"probes[{i}].task", "a probe must be a retrieval task", probe.task, "tatoeba, bucc2018, ..."
            )
        for j, language in enumerate(probe.languages or spec.evaluated_languages):
            where = f"probes[{i}].languages[{j}]" if probe.languages else f"probes[{i}].languages"
            if self.language(spec, language, where):
                self.reads(spec, language, (probe.split,), where, resolve.read_whole(self.cfg, spec.name))

    def model(self) -> None:
        name = self.cfg.model.name_or_path
        if name in pretrained.OFFLINE_MODELS:
            return
        path = Path(name).expanduser()
        looks_local = name.startswith((".", "/", "~")) or path.exists()
        if looks_local and not (path / "config.json").is_file():
            self.add(
                "model.name_or_path",
                "model folder not found or has no config.json",
                name,
                f"an offline model ({', '.join(pretrained.OFFLINE_MODELS.names())}), a folder saved with "
                "save_pretrained, or a hub id",
            )
