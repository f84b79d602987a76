"""Kept for models logged before the pyfunc model moved to intertask.tracking.serving: their pickled
TaskModel names this module."""

from intertask.tracking.serving import ARTIFACT, TaskModel, write_task  # noqa: F401
