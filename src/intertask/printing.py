"""What the commands print: a study's scores per language, headline gains, the answers read across cells,
an evaluation's table, a tuning study's trials; where the report's files are written."""

from __future__ import annotations

from pathlib import Path


def print_tuning(result, cfg) -> None:
    columns = [
        c for c in result.trials.columns if c in ("number", "state", "value") or c.startswith("params_")
    ]
    print(result.trials[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    counts = result.trials.state.value_counts().to_dict()
    print(
        f"\nstudy {result.study_name!r} in {result.storage}: {counts}; this process ran {result.ran} trial(s); "
        f"parent run {result.parent_run_id}"
    )
    if result.best_params:
        print(
            f"best dev {cfg.tuning.metric or 'selection score'} = {result.best_value:.4f} with {result.best_params}"
        )
        print(
            f"as overrides: {result.best_params_file} (e.g. intertask finetune CONFIG @{result.best_params_file})"
        )
    if result.registered:
        print(f"best model: {result.registered}")
    print(f"dashboard: optuna-dashboard {result.storage}")


def report_folder(experiment: str) -> Path:
    """Where a study's report files land here: reports/<experiment> (as its registered models)."""
    from intertask import tracking

    return Path("reports") / tracking.safe_name(experiment)


def print_evaluation(cfg, evaluated) -> None:
    for (task, split), table in evaluated.table.groupby(["task", "split"], sort=False):
        wide = table.pivot(index="language", columns="metric", values="value")
        print(f"\n{task}/{split} ({cfg.evaluation.model}):")
        print(wide.loc[table.language.unique()].to_string(float_format=lambda v: f"{v:.4f}"))


def print_headline(cfg, built) -> None:
    from intertask import report
    from intertask.study.collect import headline_name

    headline = report.summary_rows(cfg, built.gains)
    if not headline.empty:
        family = int((built.gains.family == "headline").sum())
        print(
            f"\nheadline gains (the headline metric on {headline_name(cfg, built.gains)}; interval over seeds "
            f"and test examples; q: {cfg.report.correction.upper()} over the headline family of {family} "
            "cell(s); a cell's other rows tested only where its headline is flagged):"
        )
        columns = [
            "model",
            "intermediate",
            "target",
            "task",
            "metric",
            "n_seeds",
            "transfer",
            "baseline",
            "gain",
            "ci_low",
            "ci_high",
            "q",
            "mde",
            "flag",
        ]
        print(headline[columns].to_string(index=False, float_format=lambda v: f"{v:+.4f}"))
        for r in headline.itertuples():
            print(f"  {r.intermediate} -> {r.target} ({r.task} {r.metric}): {r.reading}")
        if (headline.n_seeds < 3).any():
            print("  (fewer than 3 seeds: the interval covers the test sample, not the training randomness)")
    elif not built.scores.empty:
        print("\nscores (first metric, mean over languages):")
        print(
            report.summary_rows(cfg, built.scores).to_string(index=False, float_format=lambda v: f"{v:.4f}")
        )
    for r in built.learnt.itertuples():
        if not r.learnt:
            print(f"  warning: {r.stage} {r.task} ({r.model}): {report.not_learnt_text(r)}")
    for line in report.cell_notes(built.gains):
        print(f"  note: {line}")
    if built.null_note:
        print(f"\n{built.null_note}")
    print_answers(built)
    if not built.xtreme.empty:
        print("\nXTREME:")
        print(
            built.xtreme.drop(columns=["xtreme_languages_missing"]).to_string(
                index=False, float_format=lambda v: f"{v:.4f}"
            )
        )


def print_answers(built) -> None:
    """The answers read across cells (report/questions.py), in points, when the study has them."""
    pts = lambda v: f"{100 * v:+.1f}"  # noqa: E731
    pooled = (
        built.correlations[built.correlations.scope == "all targets"] if not built.correlations.empty else []
    )
    if len(pooled):
        print("\ngain against divergence (slope per sd of the measure; rho within targets; 95 % intervals):")
        for r in pooled.itertuples():
            if r.slope == r.slope:
                print(
                    f"  {r.model} {r.measure}: slope {pts(r.slope)} [{pts(r.slope_low)}, {pts(r.slope_high)}] "
                    f"p {r.slope_p:.2g}; rho {r.rho:+.2f} [{r.rho_low:+.2f}, {r.rho_high:+.2f}] p {r.rho_p:.2g} "
                    f"(detectable {r.detectable_rho:.2f}, {r.cells} cells): {r.answer}"
                )
    for r in built.contrasts.itertuples():
        print(
            f"  {r.contrast} ({r.scope}, {r.cells} cells): {pts(r.estimate)} [{pts(r.ci_low)}, {pts(r.ci_high)}]: "
            f"{r.answer}"
        )
    summary = (
        built.degradation[built.degradation.intermediate == "all"] if not built.degradation.empty else []
    )
    if len(summary):
        print("\ncross-lingual drop, change with intermediate training (mean over intermediate tasks):")
        for r in summary.itertuples():
            if r.zero_shot.split("/")[-1].startswith("mean_"):
                print(
                    f"  {r.model} {r.target} {r.source} -> {r.zero_shot} {r.metric}: baseline drop "
                    f"{pts(r.baseline_drop)}, change {pts(r.change)} [{pts(r.ci_low)}, {pts(r.ci_high)}]"
                )


def print_main(cfg, result, experiment: str) -> None:
    built = result.report
    from intertask.config import resolve

    catalog = resolve.catalog(cfg)
    per_language = built.gains if not built.gains.empty else built.scores
    for task, table in per_language.groupby("task", sort=False):
        metric = catalog.spec(task).headline_metric
        rows = table[table.metric == metric]
        columns = [
            c
            for c in ("model", "intermediate", "target", "language", "transfer", "baseline", "gain", "value")
            if c in rows
        ]
        print(f"\n{task} {metric} per language:")
        print(rows[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print_headline(cfg, built)
    reused = sum(o.reused for o in result.outcomes.values())
    print(
        f"\n{len(result.outcomes)} stages ({reused} reused from finished runs); parent run {result.parent_run_id} "
        f"in experiment {experiment!r}: the report is its artifact report/report.html, "
        f"and {report_folder(experiment) / 'report.html'} here"
    )
