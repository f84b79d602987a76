"""intertask's own pyfunc model, for the heads a transformers pipeline cannot serve: extractive QA,
multiple choice (transformers 5 has no pipeline for either) and sentence-pair classification (the
flavor's pyfunc takes one string, so the second text of a pair was ignored).

`mlflow.pyfunc.load_model("models:/...").predict(frame)` answers offline, and so does
`mlflow models serve` (each logged model carries a signature and an input example):
- extractive QA: `question` and `context` columns -> one answer string per row;
- multiple choice: `context` and `choices` (a list per row) -> the chosen index per row;
- sentence pairs: `text` and `text_pair` columns -> a frame with `label` and its probability `score`;
- a model logged as its changed weights (`tracking.log_weights: changed`) of any head, rebuilt from
  its base model when loaded: single texts in `text` -> `label` and `score`; words in `tokens` (a list
  per row) -> `tags` (a list per row).
The artifact is the save_pretrained folder plus `task.json`, the task declaration used for decoding.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

TASK_FILE = "task.json"
ARTIFACT = "hf_model"


def write_task(folder: Path, spec, max_length: int) -> None:
    from intertask.schema import to_dict

    (folder / TASK_FILE).write_text(json.dumps({"task": to_dict(spec), "max_length": max_length}))


def read_task(folder: Path):
    """(TaskSpec, max_length) saved beside the model."""
    from intertask.errors import Problems
    from intertask.schema import build
    from intertask.tasks.spec import TaskSpec

    saved = json.loads((folder / TASK_FILE).read_text())
    problems = Problems()
    spec = build(TaskSpec, saved["task"], file=str(folder / TASK_FILE), problems=problems)
    problems.raise_if_any()
    return spec, int(saved["max_length"])


class TaskModel(mlflow.pyfunc.PythonModel):
    """Loads the folder with intertask's own task type and decodes with it."""

    _skip_type_hint_validation = True  # predict takes a frame or a list of dicts; MLflow checks nothing

    def load_context(self, context) -> None:
        from intertask.compute import modeling
        from intertask.tasks.types import task_type
        from intertask.tracking.weights import materialize

        folder = materialize(Path(context.artifacts[ARTIFACT]))  # a model logged as its changed weights
        spec, self.max_length = read_task(folder)
        self.task = task_type(spec)
        self.tokenizer = modeling.load_tokenizer(str(folder))
        self.model = modeling.load_for_task(folder, self.task.name, self.task.head_signature())

    def predict(self, context, model_input, params=None):
        from intertask.compute.evaluation import predict_outputs
        from intertask.tasks.base import Example, ExampleSet

        frame = pd.DataFrame(model_input)
        rows = list(frame.itertuples())
        if self.task.head == "question_answering":
            examples = [Example(i, (r.question, r.context), ()) for i, r in enumerate(rows)]
        elif self.task.head == "multiple_choice":
            examples = [Example(i, (r.context, *r.choices), 0) for i, r in enumerate(rows)]
        elif self.task.head == "token_classification":
            examples = [Example(i, tuple(r.tokens), (0,) * len(r.tokens)) for i, r in enumerate(rows)]
        elif "text_pair" in frame:
            examples = [Example(i, (r.text, r.text_pair), 0) for i, r in enumerate(rows)]
        else:
            examples = [Example(i, (r.text,), 0) for i, r in enumerate(rows)]
        data = ExampleSet(self.task.name, "", "predict", "predict", tuple(examples), (), "", len(examples))
        encoded = self.task.encode(data, self.tokenizer, self.max_length)
        outputs = predict_outputs(
            self.model, self.task, encoded, pad_id=self.tokenizer.pad_token_id, batch_tokens=4096
        )
        if self.task.head in ("question_answering", "multiple_choice"):
            return self.task.decode(outputs, encoded, data)
        if self.task.head == "token_classification":
            tags = self.task.decode(outputs, encoded, data)
            return pd.DataFrame({"tags": [[self.task.spec.labels[i] for i in row] for row in tags]})
        logits = np.stack(outputs)
        probabilities = np.exp(logits - logits.max(1, keepdims=True))
        probabilities /= probabilities.sum(1, keepdims=True)
        best = probabilities.argmax(1)
        labels = [self.task.spec.labels[i] for i in best]
        return pd.DataFrame({"label": labels, "score": probabilities[np.arange(len(best)), best]})


def is_pair_classification(folder: Path) -> bool:
    """A sentence-pair classifier (XNLI, PAWS-X): served by TaskModel, which reads both texts."""
    spec, _ = read_task(folder)
    return spec.type == "classification" and len(spec.text_fields) == 2


def input_example(folder: Path, head: str, pyfunc: bool = False) -> pd.DataFrame:
    """A one-row input of the model's kind, logged with it (and its signature inferred from it);
    `pyfunc`: served by TaskModel, which reads single texts from `text` and words from `tokens`."""
    if head == "question_answering":
        return pd.DataFrame(
            {"question": ["Where is the Eiffel Tower?"], "context": ["The Eiffel Tower is in Paris."]}
        )
    if head == "multiple_choice":
        return pd.DataFrame(
            {"context": ["She opened the umbrella because"], "choices": [["it rained.", "it was dry."]]}
        )
    if head == "sequence_classification" and is_pair_classification(folder):
        return pd.DataFrame({"text": ["A man is playing a guitar."], "text_pair": ["Someone plays music."]})
    if head == "token_classification":
        if pyfunc:
            return pd.DataFrame({"tokens": [["Marie", "Curie", "worked", "in", "Paris", "."]]})
        return pd.DataFrame({"inputs": ["Marie Curie worked in Paris."]})
    return pd.DataFrame({"text" if pyfunc else "inputs": ["A fine, moving film."]})
