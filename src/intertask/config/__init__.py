"""Experiment configuration: frozen dataclasses, YAML reading and `key=value` overrides.

An experiment is one YAML file in pipelines/. Its keys equal the field names below; defaults live here
and nowhere else. Each dataclass checks its own fields; the checks that need the task catalog, the
data files, the model registry or the grid live above those layers, in `config.validate`, whose
`load_experiment` reports every problem at once, before anything is trained, as
`<file>: <dotted.field>: <problem> (got ...; expected ...)`.

The top-level `training:` block holds the defaults of every stage; a stage's own `training:` block
overrides it field by field.

    experiment  the sections of what a study trains, and the experiment (one frozen dataclass each)
    operations  the sections of how it runs and is reported: tracking, executor, report, predict
    schema      YAML -> dataclass (FieldChecks), and back
    resolve     what a config means once the task catalog is read
    validate    every check that needs the catalog, data files, models or the grid; load_experiment
    tuning      the `tuning:` section (search space, sampler, pruner)
    reading     YAML, overrides, deprecated keys, stage training blocks merged, YAML out
"""

from intertask.config.experiment import (
    BASE_MODEL,
    DEPRECATED_KEYS,
    NONE,
    OVERRIDES,
    PROBE_POINTS,
    REFERENCE_FORMS,
    STAGES,
    TRAINING_BLOCKS,
    ConfigDeprecationWarning,
    DataConfig,
    EvalTaskConfig,
    EvaluationConfig,
    ExperimentConfig,
    GridConfig,
    ModelConfig,
    PeftConfig,
    ProbeConfig,
    RetrievalConfig,
    SamplingConfig,
    SizesConfig,
    Split,
    SplitFractions,
    StageConfig,
    TrainingConfig,
    is_model_reference,
)
from intertask.config.operations import (
    LOG_MODELS,
    ExecutorConfig,
    PredictConfig,
    ReportConfig,
    TrackingConfig,
)
from intertask.config.reading import (
    apply_overrides,
    blame_overrides,
    build_experiment,
    dump_yaml,
    parse_overrides,
    read_deprecated_keys,
    read_experiment,
    with_task_training,
)
from intertask.config.tuning import (
    PEFT_TUNABLE,
    TUNABLE,
    ParamSpace,
    PrunerConfig,
    SamplerConfig,
    TuningConfig,
)

__all__ = [
    "BASE_MODEL",
    "ConfigDeprecationWarning",
    "DEPRECATED_KEYS",
    "DataConfig",
    "EvalTaskConfig",
    "LOG_MODELS",
    "EvaluationConfig",
    "ExecutorConfig",
    "ExperimentConfig",
    "GridConfig",
    "ModelConfig",
    "NONE",
    "OVERRIDES",
    "PEFT_TUNABLE",
    "PROBE_POINTS",
    "ParamSpace",
    "PeftConfig",
    "PredictConfig",
    "ProbeConfig",
    "PrunerConfig",
    "REFERENCE_FORMS",
    "ReportConfig",
    "RetrievalConfig",
    "STAGES",
    "SamplerConfig",
    "SamplingConfig",
    "SizesConfig",
    "Split",
    "SplitFractions",
    "StageConfig",
    "TRAINING_BLOCKS",
    "TUNABLE",
    "TrackingConfig",
    "TrainingConfig",
    "TuningConfig",
    "apply_overrides",
    "blame_overrides",
    "build_experiment",
    "dump_yaml",
    "is_model_reference",
    "parse_overrides",
    "read_deprecated_keys",
    "read_experiment",
    "with_task_training",
]
