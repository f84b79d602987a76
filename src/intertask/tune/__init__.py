"""Optuna tuning of one training stage, one MLflow run per trial, shared through a study storage.

A study lives in an Optuna RDB storage (SQLite by default, PostgreSQL for many machines). The process
that creates it also creates the MLflow parent run and enqueues exactly `tuning.trials` empty trials;
every worker (this process, or `intertask tune` started again elsewhere with the same study name and
storage) pops WAITING trials one at a time -- an atomic update in the storage, so no trial runs twice
and the study ends with exactly the requested number -- until none is left. The sampler fills each
popped trial's parameters (reseeded per trial number: reproducible, and different across workers).

A trial is one run of the stage (`stages.train_stage`), nested under the parent, reporting its dev
score after every epoch so the pruner can stop it. Its state -- COMPLETE, PRUNED or FAIL -- is the tag
`intertask.trial_state`; a pruned trial's run ends KILLED and a failed one's FAILED, so neither looks
like a success. A worker killed mid-trial stops sending heartbeats; after `grace_seconds` its trial is
failed and enqueued again once with the same parameters (Optuna's retry callback), and its MLflow run
is marked KILLED. A worker that was merely slow (no heartbeat for `grace_seconds`, e.g. on a loaded
machine) finds its trial failed and re-queued by another worker: it stops that trial (run KILLED,
state FAIL), says so, and goes on with the next. Only the best trial's model is logged and registered
(alias `tuning.alias`).

A SQLite study storage is opened with a 60-second busy timeout (writers wait for each other instead of
failing after SQLite's default 5 s), and its tables are created under a file lock beside the database,
so workers that start at the same moment do not race to create them.
"""

from intertask.tune.optuna_study import open_study, quiet_optuna, sampler_for, trial_seed
from intertask.tune.summary import TuneResult
from intertask.tune.worker import tune

__all__ = ["TuneResult", "open_study", "quiet_optuna", "sampler_for", "trial_seed", "tune"]
