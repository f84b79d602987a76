"""Reading a study's results from the tracking store into the report's data frames, and writing the
report back: the report itself (the `report` package) is pure tables from data frames.

`from_outcomes` takes what a pipeline holds in memory (outcomes with their cells, tables and per-example
statistics) and reads only what is not there (outcomes reused from earlier runs); `from_tracking`
rebuilds the same inputs from stored runs alone (`intertask report`).
"""

from __future__ import annotations

import itertools

import pandas as pd

from intertask import tracking
from intertask.config import NONE, ExperimentConfig
from intertask.metrics import BEST_DEV, EXAMPLES_ARTIFACT, REFERENCE_DEV
from intertask.report import LEARNING_COLUMNS, TABLES, Report, assemble
from intertask.study.identity import CELL_TAG, cell_tags, metric_part
from intertask.transferability import predict


def from_outcomes(cfg: ExperimentConfig, outcomes: list, ws=None, estimates=None) -> Report:
    """The report of a study from its job outcomes: cells, tables and per-example statistics as the
    pipeline holds them; only outcomes reused from earlier runs are read from the store. `estimates`:
    this study's transferability estimates (else the experiment's newest `predict` run's, if any)."""
    from intertask.stages import embed_texts

    client = tracking.client()
    tags = {}

    def cell_of(outcome) -> dict:
        if outcome.cell is not None:
            return outcome.cell
        if outcome.run_id not in tags:
            tags[outcome.run_id] = cell_tags(client.get_run(outcome.run_id).data.tags)
        return tags[outcome.run_id]

    evaluations = [
        (
            cell_of(o),
            o.table,
            o.examples if o.examples is not None else tracking.read_run_parquet(o.run_id, EXAMPLES_ARTIFACT),
        )
        for o in outcomes
        if o.kind == "evaluate"
    ]
    probe_frames = [
        frame
        for o in outcomes
        if o.kind in ("probe", "intermediate", "finetune")
        for frame in _probe_rows(client, o, cell_of(o))
    ]
    if estimates is None and ws is not None and ws.known_experiment() is not None:
        estimates = predict.latest(ws.experiment())
    learning = [
        row
        for o in outcomes
        if o.kind in ("intermediate", "finetune")
        for row in _learning_rows(client.get_run(o.run_id), cell_of(o), o.kind)
    ]
    learning = pd.DataFrame(learning, columns=LEARNING_COLUMNS)
    return assemble(cfg, evaluations, probe_frames, ws, embed_texts, estimates, learning)


def _learning_rows(run, cell: dict, kind: str) -> list[dict]:
    """A training stage's best dev score on its selection metric per trained task, and what a model
    that learnt nothing scores there (None where there is no such model: extractive QA; runs logged
    before that reference existed give no row)."""
    intermediate = cell.get(f"{CELL_TAG}intermediate", NONE)
    tasks = intermediate.split("+") if kind == "intermediate" else [cell.get(f"{CELL_TAG}target", "")]
    values, rows = run.data.metrics, []
    for task in tasks:
        metric = run.data.params.get(f"stage.selection_metric.{task}")
        if metric is None or f"{BEST_DEV}/{task}/{metric}" not in values:
            continue
        rows.append(
            {
                "stage": "intermediate" if kind == "intermediate" else "target",
                "model": cell.get(f"{CELL_TAG}model", ""),
                "intermediate": intermediate,
                "task": task,
                "seed": int(cell.get(f"{CELL_TAG}seed", 0) or 0),
                "metric": metric,
                "dev": values.get(f"{BEST_DEV}/{task}/{metric}"),
                "reference": values.get(f"{REFERENCE_DEV}/{task}/{metric}"),
                "dev_examples": values.get(f"dev_examples/{task}"),
            }
        )
    return rows


def _probe_rows(client, outcome, cell: dict) -> list[pd.DataFrame]:
    model = cell.get(f"{CELL_TAG}model", "")
    if outcome.kind == "probe":
        return (
            [outcome.table.assign(point="base", arm="base", model=model)] if outcome.table is not None else []
        )
    held = getattr(outcome.model, "probes", None)  # a stage trained in this process holds its probes
    if isinstance(held, pd.DataFrame):
        frames = [held]
    else:
        names = [a.path for a in client.list_artifacts(outcome.run_id, "probes")]
        frames = [tracking.read_run_table(outcome.run_id, name) for name in names if name.endswith(".csv")]
    arm = "baseline" if cell.get(f"{CELL_TAG}intermediate", NONE) == NONE else "transfer"
    label = cell.get(f"{CELL_TAG}target") or cell.get(f"{CELL_TAG}intermediate")
    return [frame.assign(arm=f"{arm}:{label}", model=model) for frame in frames]


def load(run_id: str) -> Report:
    """The report a run logged (`log`), read back from its artifacts: tables, PNG figures, the page."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = tracking.download_run_folder(run_id, "report", tmp)
        tables = {
            name: pd.read_csv(folder / f"{name}.csv") if (folder / f"{name}.csv").exists() else pd.DataFrame()
            for name in TABLES
        }
        images = {png.stem: png.read_bytes() for png in sorted(folder.glob("*.png"))}
        html = (folder / "report.html").read_text(encoding="utf-8")
    return Report(**tables, html=html, images=images)


def headline_markdown(cfg: ExperimentConfig, built: Report) -> str:
    """The headline gains (first metric, mean over languages), then each cell's gains per language,
    as Markdown tables for the parent run's description in the MLflow UI: the study's answer without
    opening an artifact. Values in points (x100), with as many decimals as their interval supports."""
    from intertask import report

    rows = report.summary_rows(cfg, built.gains)
    if rows.empty:
        return "No gains to report (no baseline arm, or no evaluation)."
    lines = [
        "| intermediate | target | metric | seeds | baseline | transfer | gain | 95 % interval | q | flag |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in rows.itertuples():
        q = "" if r.q != r.q else f"{r.q:.2g}"  # NaN: a cell outside the headline family
        lines.append(
            f"| {r.intermediate} | {r.target} | {r.metric} | {r.n_seeds} | {_estimate(r)} | {q} | {r.flag} |"
        )
    warnings = "".join(
        f"\n\n**{r.stage} {r.task} ({r.model}): {report.not_learnt_text(r)}.**"
        for r in built.learnt.itertuples()
        if not r.learnt
    )
    text = (
        f"Headline gains in points ({headline_name(cfg, built.gains)}; interval over seeds and test "
        f"examples; q: {cfg.report.correction.upper()} over the headline family):\n\n"
        + "\n".join(map(padded, lines))
        + warnings
    )
    cells = [_language_markdown(built.gains, r) for r in rows.itertuples()]
    room = DESCRIPTION_ROOM - len(text)
    shown = [c for c in itertools.accumulate(cells) if len(c) <= room]
    more = len(cells) - len(shown)
    return (
        text
        + (shown[-1] if shown else "")
        + (f"\n\n({more} more cell(s) per language in report/report.html)" if more else "")
    )


DESCRIPTION_ROOM = 7600  # of MLflow's 8,000 characters per tag, after the study's own description


def _points(width: float):
    """A formatter of metric values in points whose decimals follow an interval `width` (metric units):
    one decimal once the interval spans a point or more, two below, three below a tenth of a point."""
    decimals = 1 if not width > 0 or width * 100 >= 1 else 2 if width * 100 >= 0.1 else 3

    def fmt(value: float, signed: bool = False) -> str:
        if value != value:  # NaN: no interval (a cell without per-example outcomes)
            return ""
        return f"{value * 100:{'+' if signed else ''}.{decimals}f}"

    return fmt


def _language_markdown(gains: pd.DataFrame, headline) -> str:
    """One cell's gains per language (the headline metric): gain, interval and flag."""
    same = (
        (gains.model == headline.model)
        & (gains.intermediate == headline.intermediate)
        & (gains.target == headline.target)
        & (gains.task == headline.task)
        & (gains.split == headline.split)
        & (gains.metric == headline.metric)
        & ~gains.language.str.startswith("mean_")
    )
    rows = gains[same]
    if rows.empty:
        return ""
    lines = [
        f"\n\n**{headline.intermediate} -> {headline.target}, {headline.task} {headline.metric} per language** "
        "(points; 95 % interval over seeds and test examples; flags within this cell):\n",
        "| language | baseline | transfer | gain | 95 % interval | flag |",
        "|---|---:|---:|---:|---|---|",
    ]
    lines.extend(f"| {r.language} | {_estimate(r)} | {r.flag} |" for r in rows.itertuples())
    return "\n".join(map(padded, lines))


def padded(line: str) -> str:
    """A Markdown table row with an em space after each cell: MLflow's description view draws tables
    with no cell padding (its sanitiser drops style attributes; an entity survives)."""
    if not line.startswith("| ") or set(line) <= set("|-: "):
        return line
    return line.replace(" |", "&emsp;|")


def headline_name(cfg: ExperimentConfig, gains: pd.DataFrame) -> str:
    """The headline language said with what it averages: `mean_non_en = the mean over de, es, ...`."""
    name = cfg.report.headline_language
    if not name.startswith("mean_") or "language" not in gains:
        return name
    languages = sorted({g for g in gains.language.unique() if not g.startswith("mean_")})
    if name.startswith("mean_non_"):
        languages = [g for g in languages if g != name.removeprefix("mean_non_")]
    shown = ", ".join(languages[:12]) + (f" and {len(languages) - 12} more" if len(languages) > 12 else "")
    return f"{name} = the mean over {shown}" if languages else name


def _estimate(r) -> str:
    """A gains row's baseline | transfer | gain | interval cells, in points (see _points)."""
    p = _points(r.ci_high - r.ci_low)
    return (
        f"{p(r.baseline)} | {p(r.transfer)} | {p(r.gain, True)} | [{p(r.ci_low, True)}, {p(r.ci_high, True)}]"
    )


def log(built: Report, cfg: ExperimentConfig, outcomes: dict) -> None:
    """The report as artifacts and headline metrics of the active (parent) run."""
    for name in TABLES:
        frame = getattr(built, name)
        if frame is not None and not frame.empty:
            tracking.log_table(frame, f"report/{name}")
    for name, figure in built.figures.items():
        from intertask.report import plots

        tracking.log_figure(figure, f"report/{name}.png")
        plots.close(figure)
    for name, png in built.images.items():
        tracking.log_bytes(png, f"report/{name}.png")
    tracking.log_text(built.html, "report/report.html")
    if not built.gains.empty:  # an MLflow table: the artifact view shows it as a table
        from intertask.report.render import reading_order

        tracking.log_mlflow_table(reading_order(built.gains), "report/gains_table.json")
    description = tracking.describe(cfg) + "\n\n" + headline_markdown(cfg, built)
    tracking.set_tags({tracking.DESCRIPTION: description[: tracking.TAG_LIMIT]})
    tracking.log_json(
        {o.job_id: {"run_id": o.run_id, "key": o.key, "reused": o.reused} for o in outcomes.values()},
        "report/stages.json",
    )
    values = {}
    for r in built.gains.itertuples():  # a chart of gain/... beside gain_low/... and gain_high/...
        cell = (
            f"{metric_part(r.model)}/{metric_part(r.intermediate)}/{metric_part(r.target)}/{r.task}/{r.split}"
        )
        for name, value in (("gain", r.gain), ("gain_low", r.ci_low), ("gain_high", r.ci_high)):
            if value == value:  # NaN: no interval
                values[f"{name}/{cell}/{r.language}/{r.metric}"] = value
    for r in (
        built.scores.groupby(
            ["model", "intermediate", "target", "task", "split", "language", "metric"], sort=False
        )
        .value.mean()
        .reset_index()
        .itertuples()
    ):
        values[
            f"score/{metric_part(r.model)}/{metric_part(r.intermediate)}/{metric_part(r.target)}/{r.task}/{r.split}/{r.language}/{r.metric}"
        ] = r.value
    for r in (
        built.xtreme.groupby(["model", "intermediate", "target", "score"], sort=False)
        .value.mean()
        .reset_index()
        .itertuples()
    ):
        values[
            f"xtreme/{metric_part(r.model)}/{metric_part(r.intermediate)}/{metric_part(r.target)}/{r.score}"
        ] = r.value
    if not built.null_check.empty:
        tested = built.null_check[built.null_check.family != "none"]
        values |= {
            "null_check/rows": len(tested),
            "null_check/flagged": int(tested.flag.isin(["positive", "negative"]).sum()),
            "null_check/p_below_alpha": float((tested.p <= 1 - cfg.report.confidence).mean()),
        }
    for r in built.estimators.itertuples():
        key = f"{metric_part(r.model)}/{r.target}/{r.languages}/{metric_part(r.estimator)}/{r.score}"
        values[f"estimator/{key}"] = r.value
        values[f"estimator_low/{key}"] = r.ci_low
        values[f"estimator_high/{key}"] = r.ci_high
    values |= _answer_metrics(built)
    tracking.log_metrics(values)
    _log_arm_metrics(cfg, built, outcomes)


def _answer_metrics(built: Report) -> dict[str, float]:
    """The answers read across cells as metrics of the parent run (report/questions.py): divergence
    slopes and rho with their intervals and power, family and contrast estimates with intervals, and
    the mean change of the cross-lingual drop per target."""
    values = {}
    for r in built.correlations.itertuples():
        key = f"{metric_part(r.model)}/{metric_part(r.scope)}/{r.measure}"
        for name in (
            "slope",
            "slope_low",
            "slope_high",
            "slope_p",
            "slope_mde",
            "rho",
            "rho_low",
            "rho_high",
            "rho_p",
            "detectable_rho",
        ):
            values[f"divergence/{key}/{name}"] = getattr(r, name)
    summary = built.degradation
    if not summary.empty:
        summary = summary[summary.intermediate == "all"]
    tables = (
        ("family", built.groups, ("model_group", "target", "family"), "gain"),
        ("contrast", built.contrasts, ("contrast", "scope"), "estimate"),
        ("degradation", summary, ("model", "target", "zero_shot", "metric"), "change"),
    )
    for prefix, table, keys, value in tables:
        for r in table.itertuples():
            key = "/".join(metric_part(str(getattr(r, k)).replace("/", "-")) for k in keys)
            for name in (value, "ci_low", "ci_high"):
                values[f"{prefix}/{key}/{name}"] = getattr(r, name)
    return {k: float(v) for k, v in values.items() if v == v and v is not None}


ARM_KEYS = ["target", "task", "split", "language", "metric"]


def arm_metrics(
    scores: pd.DataFrame, cfg: ExperimentConfig | None = None, gains: pd.DataFrame | None = None
) -> dict[tuple[str, str, int], dict[str, float]]:
    """Per arm (model, intermediate, seed): its scores, keyed score/<target>/<task>/<split>/<language>/
    <metric>, and for a transfer arm its gain over the baseline arm of the same model and seed
    (seed_gain/...; 0 on the baseline arm itself), so that comparing arms in the MLflow UI lines
    them up. With the config and the gains table, the headline of each target too (what MLflow's
    Compare should show first): headline_score/<target>, headline_gain_this_seed/<target> (one seed's
    difference) and the cell's gain over all seeds with its interval, headline_gain/<target>,
    headline_gain_low/<target>, headline_gain_high/<target> (0 on a baseline arm)."""
    if scores.empty:
        return {}
    baseline = scores[scores.intermediate == NONE].set_index(["model", "seed", *ARM_KEYS]).value
    out = {}
    for (model, intermediate, seed), group in scores.groupby(["model", "intermediate", "seed"], sort=False):
        values = {}
        for row in group.itertuples():
            parts = tuple(getattr(row, k) for k in ARM_KEYS)
            key = "/".join(metric_part(str(p)) for p in parts)
            values[f"score/{key}"] = row.value
            if (model, seed, *parts) in baseline.index:
                values[f"seed_gain/{key}"] = row.value - baseline.loc[(model, seed, *parts)]
        out[(model, intermediate, int(seed))] = values
    if cfg is not None:
        _add_headlines(out, cfg, scores, baseline, gains)
    return out


def _add_headlines(out: dict, cfg: ExperimentConfig, scores, baseline, gains) -> None:
    from intertask import report

    own = report.summary_rows(cfg, scores)
    own = own[own.task == own.target]  # the target task's own evaluation, not a zero-shot side task
    pooled = {}
    if gains is not None and not gains.empty:
        for r in report.summary_rows(cfg, gains).itertuples():
            if r.task == r.target:
                pooled[(r.model, r.intermediate, r.target)] = (r.gain, r.ci_low, r.ci_high)
    for r in own.itertuples():
        values = out.setdefault((r.model, r.intermediate, int(r.seed)), {})
        target = metric_part(str(r.target))
        values[f"headline_score/{target}"] = r.value
        parts = (r.model, r.seed, *(getattr(r, k) for k in ARM_KEYS))
        if parts in baseline.index:
            values[f"headline_gain_this_seed/{target}"] = r.value - baseline.loc[parts]
        if r.intermediate == NONE:
            gain = (0.0, 0.0, 0.0)
        else:
            gain = pooled.get((r.model, r.intermediate, r.target), (float("nan"),) * 3)
        for name, value in zip(
            ("headline_gain", "headline_gain_low", "headline_gain_high"), gain, strict=True
        ):
            if value == value:
                values[f"{name}/{target}"] = value


def _log_arm_metrics(cfg: ExperimentConfig, built: Report, outcomes: dict) -> None:
    """Each arm run of this study (under the active parent run) gets arm_metrics; reused evaluations
    count (the pooled gains change as seeds are added), an arm of another study is left alone."""
    per_arm = arm_metrics(built.scores, cfg, built.gains)
    client = tracking.client()
    parent = tracking.active_run_id()
    done = set()
    for outcome in outcomes.values():
        if outcome.kind != "evaluate":
            continue
        tags = client.get_run(outcome.run_id).data.tags
        arm = tags.get("mlflow.parentRunId")
        cell = (
            tags.get(f"{CELL_TAG}model", ""),
            tags.get(f"{CELL_TAG}intermediate", NONE),
            int(tags.get(f"{CELL_TAG}seed", 0) or 0),
        )
        if not arm or arm in done or cell not in per_arm:
            continue
        done.add(arm)
        if parent is None or client.get_run(arm).data.tags.get("mlflow.parentRunId") == parent:
            tracking.log_run_metrics(arm, per_arm[cell])


STAGES = ("evaluate", "probe", "intermediate", "finetune")


def _skip_reason(stage: str | None, status: str, tags: dict) -> str | None:
    """Why a stored run is not one of a study's stage results, or None when it is."""
    if stage in ("main", "arm"):
        return "a study's parent or arm run (no scores of its own)"
    if stage == "tune":
        return "a tuning study's parent run"
    if stage not in STAGES:
        return "not an intertask stage run"
    if status != "FINISHED":
        return f"not finished ({status})"
    if stage != "probe" and not cell_tags(tags):
        return "not in a study cell (no intertask.cell.* tags: a standalone run or a tuning trial)"
    return None


def from_tracking(ws, parent_run_id: str | None = None) -> tuple[Report, dict]:
    """The report rebuilt from the tracking store: one study (its parent run: the stages its
    report/stages.json lists, reused ones included; a study without one, the stages run under it) or
    every study of the experiment (newest finished run per stage key). Only runs of a study cell count (their
    `intertask.cell.*` tags place them): standalone evaluations, tuning studies and trials, runs that
    did not finish are skipped, and `Report.skipped` says how many, and why."""
    from intertask.study.executors import Outcome

    experiment = ws.experiment()
    listed = tracking.read_run_json(parent_run_id, "report/stages.json") if parent_run_id else None
    if listed:  # the study's own list: the stages it ran and those it reused from earlier studies
        client = tracking.client()
        runs = [client.get_run(v["run_id"]) for v in listed.values() if v.get("run_id")]
    elif parent_run_id:  # a study that has not finished: the stages run under it
        arms = tracking.find_runs(experiment, "mlflow.parentRunId", parent_run_id)
        runs = [
            r for arm in arms for r in tracking.find_runs(experiment, "mlflow.parentRunId", arm.info.run_id)
        ]
        runs += [a for a in arms if a.data.tags.get("intertask.stage") == "probe"]
    else:
        runs = tracking.search_pages([experiment], "")
    skipped: dict[str, int] = {}
    newest: dict[str, object] = {}
    for found in sorted(runs, key=lambda r: r.info.start_time):
        tags = found.data.tags
        stage = tags.get("intertask.stage")
        reason = _skip_reason(stage, found.info.status, tags)
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        key = tags.get("intertask.stage_key") or found.info.run_id
        if key in newest:
            skipped["an older run of the same stage"] = skipped.get("an older run of the same stage", 0) + 1
        newest[key] = found
    outcomes = {}
    for key, found in newest.items():
        stage = found.data.tags["intertask.stage"]
        table = None
        if stage == "evaluate":
            table = tracking.read_run_table(found.info.run_id, "evaluation/languages.csv")
        elif stage == "probe":
            table = tracking.read_run_table(found.info.run_id, "probes/base.csv")
        outcomes[key] = Outcome(
            key, stage, found.info.run_id, key, table=table, reused=True, cell=cell_tags(found.data.tags)
        )
    built = from_outcomes(ws.cfg, list(outcomes.values()), ws=ws)
    built.skipped = skipped
    return built, outcomes
