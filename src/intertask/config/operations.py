"""The sections that say how a study runs and is reported rather than what it trains: tracking (store,
models kept, outages, checkpoints), executor (in-process or Ray), report (statistics), predict
(transferability estimates), each a frozen dataclass that checks its own fields. Defaults live here
and nowhere else; one comment per field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from intertask.config.schema import FieldChecks

LOG_MODELS = {
    "all": "every training stage's model, every seed",
    "registered": "the models the registry names: for each model and task chain, the grid's first seed "
    "(its intermediate and its target models); the other seeds' models serve their own run only",
    "final": "of those, the ones that end a chain: the target models (and an intermediate model "
    "evaluated as it is); intermediate models serve their own run only",
    "none": "no model; every metric, table and plot is still logged",
}


@dataclass(frozen=True, kw_only=True)
class TrackingConfig:
    uri: str | None = (
        None  # MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)
    )
    experiment: str | None = None  # MLflow experiment name (default: the config's name)
    register_models: bool = True  # register logged models (<name>.<model>.<tasks>) with a stage alias
    # Which trained models are logged to MLflow (true means all, false none); see LOG_MODELS.
    log_models: Literal["all", "registered", "final", "none"] | bool = "registered"
    # full: each logged model is whole; changed: only its tensors that differ from the base model, with
    # a reference to it (frozen embeddings and weights under a PEFT adapter are not stored again);
    # loading fetches the base model and checks it is the same (compute/weights.py); auto: changed
    # when at least half of the model's bytes are the base model's, else full
    log_weights: Literal["auto", "full", "changed"] = "auto"
    # a tracking server that does not answer (restarting, a network blip) is retried with backoff (2, 4,
    # ..., 120 s) for at least this long before a request fails; a study's first request: 20 s at most
    outage_seconds: int = 600
    http_timeout_seconds: int = 20  # each request to a tracking server waits at most this long
    # a stage's resumable checkpoints also in its run's artifacts (a retry on a node that does not see
    # this disk resumes from them): auto -- with a tracking server (http/https); always; never
    checkpoint_artifacts: Literal["auto", "always", "never"] = "auto"
    system_metrics: bool = True  # CPU, memory (and GPU) usage sampled on training, evaluation and trial runs
    system_metrics_interval_seconds: float = 10.0  # ... every this many seconds (MLflow's default)

    def __post_init__(self) -> None:
        if isinstance(self.log_models, bool):  # the yes/no of earlier versions
            object.__setattr__(self, "log_models", "all" if self.log_models else "none")
        c = FieldChecks()
        c.require(
            self.system_metrics_interval_seconds >= 0.5,
            "system_metrics_interval_seconds",
            "too small",
            self.system_metrics_interval_seconds,
            ">= 0.5",
        )
        c.require(
            0 <= self.outage_seconds <= 1000,
            "outage_seconds",
            "out of range",
            self.outage_seconds,
            "0 to 1000 (MLflow allows 10 retries of at most 120 s)",
        )
        c.require(
            self.http_timeout_seconds >= 1,
            "http_timeout_seconds",
            "must be positive",
            self.http_timeout_seconds,
            ">= 1",
        )
        c.require(
            self.log_models != "none" or not self.register_models,
            "register_models",
            "registering needs logged models",
            self.register_models,
            "false when log_models is none",
        )
        c.done()


@dataclass(frozen=True, kw_only=True)
class PredictConfig:
    before_training: bool = False  # `main` runs `predict` first; the report scores its estimates
    # `main` trains only the k intermediate choices per target that `rank_by` ranks best (and the
    # baseline), logging which it skipped; implies before_training
    train_top_k: int | None = None
    rank_by: Literal[
        "embedding_similarity", "vocabulary_overlap", "neg_js_divergence", "neg_mmd", "logme_intermediate"
    ] = "embedding_similarity"
    max_examples: int = 500  # training examples per task the estimators read

    def __post_init__(self) -> None:
        c = FieldChecks()
        c.require(
            self.train_top_k is None or self.train_top_k >= 1,
            "train_top_k",
            "must be positive",
            self.train_top_k,
            ">= 1",
        )
        c.require(self.max_examples >= 10, "max_examples", "too few", self.max_examples, ">= 10")
        c.done()


@dataclass(frozen=True, kw_only=True)
class ExecutorConfig:
    kind: Literal["in_process", "ray"] = "in_process"  # where stages run; ray: independent stages in parallel
    address: str | None = None  # ray: a cluster address or auto (RAY_ADDRESS); default: a Ray of its own
    cpus: int | None = None  # ray: CPUs of a local Ray (default: all of this machine)
    cpus_per_stage: float = 1.0  # ray: CPUs a stage reserves
    gpus_per_stage: float = 0.0  # ray: GPUs a stage reserves
    max_retries: int = 1  # ray: times a stage whose node or worker died is started again (it resumes
    #   from its checkpoint where checkpoints are on storage every node reaches)
    stall_seconds: int = 600  # ray: a study whose waiting stages no node can take for this long ends
    #   with an error naming them and the cluster's resources
    heartbeat_seconds: int = 30  # every stage run's tag intertask.heartbeat is renewed this often; the
    #   Ray driver marks KILLED a stage run whose heartbeat is older than 4x this (its process is gone)

    def __post_init__(self) -> None:
        c = FieldChecks()
        c.require(self.cpus_per_stage > 0, "cpus_per_stage", "must be positive", self.cpus_per_stage, "> 0")
        c.require(self.max_retries >= 0, "max_retries", "must not be negative", self.max_retries, ">= 0")
        c.require(self.stall_seconds >= 1, "stall_seconds", "must be positive", self.stall_seconds, ">= 1")
        c.require(
            self.heartbeat_seconds >= 1,
            "heartbeat_seconds",
            "must be positive",
            self.heartbeat_seconds,
            ">= 1",
        )
        c.require(
            self.gpus_per_stage >= 0, "gpus_per_stage", "must not be negative", self.gpus_per_stage, ">= 0"
        )
        c.require(self.cpus is None or self.cpus >= 1, "cpus", "must be positive", self.cpus, ">= 1 or null")
        c.done()


@dataclass(frozen=True, kw_only=True)
class ReportConfig:
    bootstrap: int = 1000  # resamples of the test examples per cell (paired: the same draw for both arms)
    confidence: float = 0.95  # two-sided level of each gain's interval
    fdr: float = 0.05  # Benjamini-Hochberg level: a gain is flagged when its q-value is at most this
    power: float = 0.8  # for the minimum detectable effect of each cell
    smallest_effect: float = 0.02  # equivalence margin: a gain reads "no effect" only when its whole interval
    #   lies inside +-this (metric units: 0.02 = 2 points); else, when not significant, "inconclusive"
    headline_language: str = "mean_all"  # the row of each cell in the headline family: mean_all, a
    #   mean_non_<lang> the evaluation reports (e.g. mean_non_en: the zero-shot languages) or a language
    correction: Literal["bh", "by"] = "bh"  # q-values within each family: Benjamini-Hochberg, or
    #   Benjamini-Yekutieli (valid under any dependence between the gains, more conservative)
    null_check: bool = False  # A/A check: split each baseline's seeds (>= 6) into two pseudo-arms and report
    #   how often the same machinery flags a difference between them (it should stay near report.fdr)
    divergence: bool = True  # domain divergence between every intermediate and target training set
    top_k_words: int = 1000  # vocabulary overlap: Jaccard of the top-k word types of each set
    divergence_examples: int = 500  # sentences per set for the embedding distance (base model)

    def __post_init__(self) -> None:
        c = FieldChecks()
        c.require(self.bootstrap >= 100, "bootstrap", "too few resamples", self.bootstrap, ">= 100")
        c.require(0.5 < self.confidence < 1, "confidence", "out of range", self.confidence, "0.5 < level < 1")
        c.require(0 < self.fdr < 1, "fdr", "out of range", self.fdr, "0 < q < 1")
        c.require(0.5 <= self.power < 1, "power", "out of range", self.power, "0.5 <= power < 1")
        c.require(self.smallest_effect > 0, "smallest_effect", "out of range", self.smallest_effect, "> 0")
        c.require(
            bool(self.headline_language), "headline_language", "empty", self.headline_language, "mean_all"
        )
        c.require(self.top_k_words >= 10, "top_k_words", "too small", self.top_k_words, ">= 10")
        c.require(
            self.divergence_examples >= 10,
            "divergence_examples",
            "too small",
            self.divergence_examples,
            ">= 10",
        )
        c.done()
