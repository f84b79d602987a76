"""How long the report's estimator table takes to score a ranking: the point (a tied baseline's 5,000
random tie-breaks) and the score bounds over the gains' simultaneous box, for 12 estimator/target cases
(3, 4, 6 and 9 intermediate choices; an all-tied, a half-tied and an untied estimator). Prints the
seconds and a digest of the values, so that two versions can be compared on the same cases:

    python benchmarks/report_estimators.py
    git worktree add /tmp/before 79a82a9
    PYTHONPATH=/tmp/before/src python benchmarks/report_estimators.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    from intertask.report import estimators

    rng = np.random.default_rng(5)
    values = []
    start = time.perf_counter()
    for choices in (3, 4, 6, 9):
        gains = rng.normal(size=choices)
        k = min(3, choices - 1)
        for predicted in (
            np.zeros(choices),
            (np.arange(choices) % 2).astype(float),
            rng.normal(size=choices),
        ):
            point = estimators._scores_over(predicted, gains[None, :], k, 7, estimators.POINT_TIE_BREAKS)
            box = estimators._Box(gains - 0.5, gains + 0.5)
            bounds = estimators.score_bounds(predicted, gains, box, k, seed=7)
            values += [float(v[0]) for v in point.values()] + [b for pair in bounds.values() for b in pair]
    seconds = time.perf_counter() - start
    print(f"12 cases in {seconds:.2f} s; sum of every score and bound: {np.nansum(values):.10f}")


if __name__ == "__main__":
    main()
