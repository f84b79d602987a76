"""The figures of docs/report.md's "What a flag promises" table: the report-wide calibration tests of
tests/test_calibration.py and tests/test_significance.py, re-run at the tests' own seeds, printing the
rates the tests only bound (numpy and the report's own functions; about 10 minutes on 2 cores).

    python benchmarks/report_calibration.py                     # everything
    python benchmarks/report_calibration.py tail fdr hier       # some parts

The bracketed "old" figures are the same script with an earlier intertask first on the path (the
helpers call whatever `intertask.report.significance` and `gains_table` they import):

    git worktree add /tmp/before d470c7d
    PYTHONPATH=/tmp/before/src python benchmarks/report_calibration.py tail fdr hier
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_calibration as calibration  # noqa: E402
import test_significance as single  # noqa: E402

from intertask.report import significance  # noqa: E402

FLAGGED = ["positive", "negative"]


def tail() -> None:
    rng = np.random.default_rng(36)
    p = np.array([calibration._cell(rng, 0.0, 3, n=300).p for _ in range(5000)])
    print(
        f"3-seed null cells: p <= 0.0025 in {np.mean(p <= 0.0025):.2%}, p <= 0.05 in {np.mean(p <= 0.05):.2%}"
    )


def fdr() -> None:
    for real in (0, 5):
        rng = np.random.default_rng(3600 + real)
        shares = []
        for _ in range(500):
            cells = calibration._cells_sharing_a_baseline(rng, [0.02] * real + [0.0] * (20 - real))
            hits = significance.q_values(np.array([c.p for c in cells])) <= 0.05
            shares.append(hits[real:].sum() / max(1, hits.sum()))
        print(f"headline family, 20 cells, {real} real at +2 points: FDR {np.mean(shares):.2%}")


def hier() -> None:
    rng = np.random.default_rng(3601)
    null = {f"null{i}": 0.0 for i in range(20)}
    flagged = [calibration._languages_report(rng, null).flag.isin(FLAGGED).any() for _ in range(60)]
    print(f"20 null cells x 3 languages: a report shows any flag in {np.mean(flagged):.1%}")
    mixed = {f"real{i}": 0.2 for i in range(5)} | {f"null{i}": 0.0 for i in range(15)}
    shares, found = [], []
    for _ in range(40):
        gains = calibration._languages_report(rng, mixed)
        rows = gains[gains.flag.isin(FLAGGED)]
        shares.append(rows.intermediate.str.startswith("null").mean() if len(rows) else 0.0)
        real = gains[gains.intermediate.str.startswith("real") & (gains.language != "mean_all")]
        found.append(real.flag.eq("positive").mean())
    print(f"5 real (+20 points) and 15 null cells: false flags {np.mean(shares):.1%} of flagged rows")
    print(f"  real cells' language rows found: {np.mean(found):.0%}")


def power() -> None:
    for seeds in (3, 5, 10):
        rng = np.random.default_rng(seeds)
        gain = np.mean([calibration._cell(rng, 0.0, seeds).mde for _ in range(150)])
        gain = np.mean([calibration._cell(rng, gain, seeds).mde for _ in range(150)])
        cells = [calibration._cell(rng, gain, seeds) for _ in range(600)]
        print(f"{seeds} seeds: p <= 0.05 in {np.mean([c.p <= 0.05 for c in cells]):.1%} at the mde")


def coverage() -> None:
    for seeds, delta in [(3, 0.03), (5, 0.0), (5, 0.03)]:
        rng = np.random.default_rng(seeds * 100 + int(delta * 100))
        covered = 0
        for _ in range(800):
            est = single._estimate(rng, *single._study(rng, delta, seeds, 400))
            covered += est.ci_low <= delta <= est.ci_high
        print(f"one language, {seeds} seeds, gain {delta}: covered {covered / 800:.1%}")
    for seeds in (3, 5):
        found = calibration._coverage(parallel=True, seeds=seeds, studies=500, seed=seeds)
        print(f"5 translated languages, {seeds} seeds: covered {found}")


def margin() -> None:
    rng = np.random.default_rng(3)
    wrong = 0
    for _ in range(300):
        est = calibration._cell(rng, 0.02, 10, n=2000, seed_sd=0.01)
        interval = (est.ci_low, est.ci_high)
        wrong += significance.reading(est.gain, est.p, 1.0, interval, 0.05, 0.02)[0] == "no effect"
    print(f"a true gain of 2 points (the margin): 'no effect' in {wrong / 300:.1%} of cells")


PARTS = {"tail": tail, "fdr": fdr, "hier": hier, "power": power, "coverage": coverage, "margin": margin}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("parts", nargs="*", metavar="PART", help=f"some of {', '.join(PARTS)} (default: all)")
    parts = parser.parse_args().parts or list(PARTS)
    if unknown := [p for p in parts if p not in PARTS]:
        parser.error(f"unknown part(s) {unknown}; expected some of {list(PARTS)}")
    for name in parts:
        PARTS[name]()
