"""The stages: intermediate(), finetune(), evaluate(): a config in, an MLflow run (+ model) out.

Each stage first loads and checks everything it needs (data, the model it starts from, tokenizer,
heads) and only then opens its run, so bad input never leaves a half-written run behind.

    runs      the records a stage hands on (TrainedModel, Evaluated) and the run each records into
    train     intermediate / target training, checkpoints and resume
    evaluate  one run scores a model on every evaluation task and language
    probes    retrieval probes before and after each stage; base-model sentence embeddings
    publish   logging and registering a trained model, now or after its run (best tuning trial)
"""

from intertask.stages.common import (
    SEEN_ARTIFACT,
    Evaluated,
    TrainedModel,
    eval_training,
    missing_head,
    stage_runtime,
)
from intertask.stages.evaluate import evaluate
from intertask.stages.probes import embed_texts, embed_with, probe_base, run_probes
from intertask.stages.publish import publish
from intertask.stages.train import checkpoint_folder, finetune, intermediate, resume_key, train_stage

__all__ = [
    "SEEN_ARTIFACT",
    "Evaluated",
    "TrainedModel",
    "checkpoint_folder",
    "embed_texts",
    "embed_with",
    "eval_training",
    "evaluate",
    "finetune",
    "intermediate",
    "missing_head",
    "probe_base",
    "publish",
    "resume_key",
    "run_probes",
    "stage_runtime",
    "train_stage",
]
