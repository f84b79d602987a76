"""A pyfunc model for heads that `transformers` 5 has no pipeline for (extractive QA, multiple choice).

`mlflow.pyfunc.load_model("models:/...").predict(frame)` answers offline:
- extractive QA: a frame with `question` and `context` columns -> one answer string per row;
- multiple choice: a frame with `context` and `choices` (a list per row) -> the chosen index per row.
The artifact is the save_pretrained folder plus `task.json`, the task declaration used for decoding.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
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
        from intertask import modeling
        from intertask.tasks.types import task_type

        folder = Path(context.artifacts[ARTIFACT])
        spec, self.max_length = read_task(folder)
        self.task = task_type(spec)
        self.tokenizer = modeling.load_tokenizer(str(folder))
        self.model = modeling.load_for_task(folder, self.task.name, self.task.head_signature())

    def predict(self, context, model_input, params=None):
        from intertask.evaluation import predict_outputs
        from intertask.tasks.base import Example, ExampleSet

        frame = pd.DataFrame(model_input)
        if self.task.head == "question_answering":
            examples = [Example(i, (r.question, r.context), ()) for i, r in enumerate(frame.itertuples())]
        else:
            examples = [Example(i, (r.context, *r.choices), 0) for i, r in enumerate(frame.itertuples())]
        data = ExampleSet(self.task.name, "", "predict", "predict", tuple(examples), (), "", len(examples))
        encoded = self.task.encode(data, self.tokenizer, self.max_length)
        outputs = predict_outputs(
            self.model, self.task, encoded, pad_id=self.tokenizer.pad_token_id, batch_tokens=4096
        )
        return self.task.decode(outputs, encoded, data)
