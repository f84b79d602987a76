"""Registered metrics, per-example statistics for resampling, the aggregates across languages, and
XTREME's aggregation.

A metric has one implementation per label kind (a task type declares its kind):
- single_label: integer arrays (n,) (classification, multiple choice, retrieval rank-1 indices);
- multi_label: 0/1 arrays (n, labels);
- tags: lists of tag-string lists (token tagging), scored as seqeval's default mode does;
- spans: predicted answer strings vs lists of gold answers, scored as the official SQuAD v1.1 script
  (or, with normalization="mlqa", MLQA's evaluate script for the given language);
- bitext: sets of mined (source id, target id) pairs vs the gold pairs (BUCC).
Values are fractions in [0, 1]; XTREME reports the same numbers x 100.

    scoring      the registry, label, tag and bitext metrics
    answers      extractive QA (SQuAD v1.1, MLQA, SQuAD v2.0 parts)
    per_example  per-example statistics and a metric from their sums (bootstrap resamples)
    xtreme       means over languages, XTREME task scores and aggregate
"""

from intertask.metrics.answers import (  # noqa: F401
    MLQA_ARTICLES,
    answer_exact,
    answer_f1,
    best_per_question,
    exact_match,
    has_answer,
    has_answer_exact_match,
    has_answer_f1,
    mlqa_punctuation,
    no_answer_exact_match,
    normalize_answer,
    span_f1,
)
from intertask.metrics.per_example import (  # noqa: F401
    BEST_DEV,
    EXAMPLE_KEYS,
    EXAMPLES_ARTIFACT,
    REFERENCE_DEV,
    example_stats,
    from_sums,
    learnt_margin,
)
from intertask.metrics.scoring import (  # noqa: F401
    BITEXT,
    METRICS,
    MULTI,
    SINGLE,
    SPANS,
    TAGS,
    Metric,
    accuracy,
    chunk_counts,
    chunks,
    f1_from_counts,
    macro_f1,
    micro_f1,
    register,
    score,
    subset_accuracy,
    token_accuracy,
)
from intertask.metrics.xtreme import (  # noqa: F401
    MEAN_ALL,
    XTREME_GROUPS,
    XTREME_LANGUAGES,
    mean_over_languages,
    xtreme_aggregate,
    xtreme_task_score,
)
