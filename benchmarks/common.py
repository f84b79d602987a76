"""What the benchmark scripts share: one seed, and the data read as intertask reads it by default.

Not a benchmark itself (`--help` is accepted so that the packaging test can run every script here).
"""

from __future__ import annotations

import sys

SEED = 13  # every benchmark's split, data order and initialisation


def examples(task: str, language: str, split: str, n: int | None, seed: int = SEED):
    """A seeded slice of a built-in task's split under the data root, split with the default fractions
    of a derived split (config.SplitFractions), as a study reads it."""
    from intertask.config import SplitFractions
    from intertask.data import data_root
    from intertask.tasks import builtin_catalog
    from intertask.tasks.examples import load_examples

    spec = builtin_catalog().spec(task)
    fractions = SplitFractions().as_dict()
    return load_examples(
        spec, language, split, root=data_root(), fractions=fractions, seed=seed, max_examples=n
    )


if __name__ == "__main__" and "--help" in sys.argv:
    print(__doc__)
