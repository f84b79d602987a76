"""intertask's pyfunc model, which serves every logged model: one contract for every head, decoded as
evaluation decodes (a transformers pipeline has nothing for extractive QA or multiple choice, reads one
string where a pair model needs two, and gives the top class's score only).

MLflow logs it from code (`task_model.py`, a models-from-code file: nothing is pickled) beside the
model's save_pretrained folder (`hf_model`), which holds `task.json`, the task declaration used for
decoding. `mlflow.pyfunc.load_model("models:/...").predict(frame)` answers offline, and so does
`mlflow models serve`; each logged model carries a signature with inputs and outputs, and an input
example:
- classification: `text` (and `text_pair` for a sentence-pair task) -> `label`, its probability
  `score`, and `score_<label>` for every label;
- multi-label classification: `text` -> `labels` (a list per row) and `score_<label>` (sigmoid) for
  every label;
- tagging: `tokens` (a list of words per row) -> `tags` (a list per row);
- extractive QA: `question` and `context` -> `answer`;
- multiple choice: `context` and `choices` (a list per row) -> `choice` (the index).
A model logged as its changed weights (`tracking.log_weights`) is put together with its base model in
memory when loaded (compute/weights.py): nothing is written to disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

TASK_FILE = "task.json"
ARTIFACT = "hf_model"
CODE_FILE = Path(__file__).with_name("task_model.py")  # what MLflow logs as the model's code


def write_task(folder: Path, spec, max_length: int) -> None:
    from intertask.config.schema import to_dict

    (folder / TASK_FILE).write_text(json.dumps({"task": to_dict(spec), "max_length": max_length}))


def read_task(folder: Path):
    """(TaskSpec, max_length) saved beside the model."""
    from intertask.config.schema import build
    from intertask.errors import Problems
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

        folder = Path(context.artifacts[ARTIFACT])
        spec, self.max_length = read_task(folder)
        self.task = task_type(spec)
        self.tokenizer = modeling.load_tokenizer_quickly(str(folder))
        self.model = modeling.load_for_task(folder, self.task.name, self.task.head_signature())

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        from intertask.compute.evaluation import predict_outputs
        from intertask.tasks.base import ExampleSet

        frame = input_frame(model_input)
        examples = _examples(self.task, frame)
        data = ExampleSet(self.task.name, "", "predict", "predict", tuple(examples), (), "", len(examples))
        encoded = self.task.encode(data, self.tokenizer, self.max_length)
        outputs = predict_outputs(
            self.model, self.task, encoded, pad_id=self.tokenizer.pad_token_id, batch_tokens=4096
        )
        return answers(self.task, outputs, encoded, data)


LIST_COLUMNS = ("tokens", "choices")  # a list per row: a tagger's words, a multiple-choice set's endings


def input_frame(model_input) -> pd.DataFrame:
    """What `predict` is given, as rows: a frame (`dataframe_split`, `dataframe_records`), a list of
    rows (`{"inputs": [{"tokens": [...]}, ...]}`), or a mapping of columns (`{"inputs": {"text":
    [...], "text_pair": [...]}}`). MLflow's server reads a list column in the mapping form as ONE row's
    list (it cannot tell rows of unequal length apart), so a mapping whose list columns hold strings is
    one row: `{"inputs": {"tokens": ["Marie", "lives", "in", "Paris"]}}`."""
    if isinstance(model_input, dict):
        lists = [model_input[c] for c in LIST_COLUMNS if c in model_input]
        if lists and all(np.ndim(v) == 1 and all(isinstance(x, str) for x in v) for v in lists):
            return pd.DataFrame(
                [{k: (list(v) if k in LIST_COLUMNS else _scalar(v)) for k, v in model_input.items()}]
            )
    return pd.DataFrame(model_input)


def _scalar(value):
    """One row's value of a plain column in the mapping form (a string, or a one-item list of it)."""
    values = np.asarray(value, dtype=object).reshape(-1)
    return values[0] if len(values) == 1 else value


def _examples(task, frame: pd.DataFrame) -> list:
    from intertask.tasks.base import Example

    rows = list(frame.itertuples())
    unknown = () if task.spec.type == "multilabel_classification" else 0  # the gold label, unknown here
    if task.head == "question_answering":
        return [Example(i, (r.question, r.context), ()) for i, r in enumerate(rows)]
    if task.head == "multiple_choice":
        return [Example(i, (r.context, *r.choices), 0) for i, r in enumerate(rows)]
    if task.head == "token_classification":
        return [Example(i, tuple(r.tokens), (0,) * len(r.tokens)) for i, r in enumerate(rows)]
    if "text_pair" in frame:
        return [Example(i, (r.text, r.text_pair), unknown) for i, r in enumerate(rows)]
    return [Example(i, (r.text,), unknown) for i, r in enumerate(rows)]


def answers(task, outputs: list, encoded, data) -> pd.DataFrame:
    """The model's outputs as the frame its signature declares (see the module's docstring)."""
    labels = list(task.spec.labels)
    if task.head == "question_answering":
        return pd.DataFrame({"answer": task.decode(outputs, encoded, data)})
    if task.head == "multiple_choice":
        return pd.DataFrame({"choice": np.asarray(task.decode(outputs, encoded, data), np.int64)})
    if task.head == "token_classification":
        return pd.DataFrame(
            {"tags": [[labels[i] for i in row] for row in task.decode(outputs, encoded, data)]}
        )
    probabilities = _probabilities(task, np.stack(outputs).astype(np.float64))
    scores = {f"score_{name}": column for name, column in zip(labels, probabilities.T, strict=True)}
    if task.spec.type == "multilabel_classification":
        chosen = [[labels[i] for i in np.flatnonzero(row)] for row in task.decode(outputs, encoded, data)]
        return pd.DataFrame({"labels": chosen, **scores})
    best = probabilities.argmax(1)
    top = probabilities[np.arange(len(best)), best]
    return pd.DataFrame({"label": [labels[i] for i in best], "score": top, **scores})


def _probabilities(task, logits: np.ndarray) -> np.ndarray:
    if task.spec.type == "multilabel_classification":
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


def is_pair_classification(spec) -> bool:
    """A sentence-pair classifier (XNLI, PAWS-X): its input has `text` and `text_pair`."""
    return spec.type in ("classification", "multilabel_classification") and len(spec.text_fields) == 2


def input_example(spec, head: str) -> pd.DataFrame:
    """A one-row input of the model's kind (its TaskSpec and head), logged with it."""
    if head == "question_answering":
        return pd.DataFrame(
            {"question": ["Where is the Eiffel Tower?"], "context": ["The Eiffel Tower is in Paris."]}
        )
    if head == "multiple_choice":
        return pd.DataFrame(
            {"context": ["She opened the umbrella because"], "choices": [["it rained.", "it was dry."]]}
        )
    if head == "token_classification":
        return pd.DataFrame({"tokens": [["Marie", "Curie", "worked", "in", "Paris", "."]]})
    if is_pair_classification(spec):
        return pd.DataFrame({"text": ["A man is playing a guitar."], "text_pair": ["Someone plays music."]})
    return pd.DataFrame({"text": ["A fine, moving film."]})


def output_example(spec, head: str) -> pd.DataFrame:
    """A one-row output of the model's kind, for the signature (the values are placeholders of the
    right types; the columns are what predict returns)."""
    labels = list(spec.labels)
    if head == "question_answering":
        return pd.DataFrame({"answer": ["Paris"]})
    if head == "multiple_choice":
        return pd.DataFrame({"choice": np.zeros(1, np.int64)})
    if head == "token_classification":
        return pd.DataFrame({"tags": [[labels[0]] * 6]})
    scores = {f"score_{name}": [1.0 / len(labels)] for name in labels}
    if spec.type == "multilabel_classification":
        return pd.DataFrame({"labels": [[labels[0]]], **scores})
    return pd.DataFrame({"label": [labels[0]], "score": [1.0 / len(labels)], **scores})
