"""Task type name (a declaration's `type:`) -> the class that encodes, decodes and scores it."""

from __future__ import annotations

from intertask.tasks.base import TaskType
from intertask.tasks.choice import MultipleChoiceTask
from intertask.tasks.classification import ClassificationTask, MultiLabelTask
from intertask.tasks.qa import QATask
from intertask.tasks.retrieval import RetrievalTask
from intertask.tasks.spec import TaskSpec
from intertask.tasks.tagging import TaggingTask

TASK_TYPES: dict[str, type[TaskType]] = {
    "classification": ClassificationTask,
    "multilabel_classification": MultiLabelTask,
    "tagging": TaggingTask,
    "extractive_qa": QATask,
    "multiple_choice": MultipleChoiceTask,
    "retrieval": RetrievalTask,
}


def task_type(spec: TaskSpec) -> TaskType:
    return TASK_TYPES[spec.type](spec)
