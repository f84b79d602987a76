"""The code MLflow logs with every intertask model (models from code): loading the model runs this
file, which names the model class; nothing is pickled. The class lives in intertask.tracking.serving,
so a model loads wherever intertask is installed."""

from mlflow.models import set_model

from intertask.tracking.serving import TaskModel

set_model(TaskModel())
