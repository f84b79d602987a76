"""The task catalog: built-in declarations (tasks/builtin/*.yaml) plus a user's own task files."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from intertask.errors import ConfigError, Problems
from intertask.names import UnknownName
from intertask.tasks.spec import TaskSpec, load_task_file
from intertask.tasks.types import ClassificationTask, task_type

BUILTIN_DIR = Path(__file__).parent / "builtin"


class TaskCatalog:
    """Task name -> declaration, remembering which file declared each."""

    def __init__(self, specs: dict[str, TaskSpec], origins: dict[str, str]):
        self._specs = dict(specs)
        self.origins = dict(origins)

    def names(self) -> list[str]:
        return sorted(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def spec(self, name: str) -> TaskSpec:
        if name not in self._specs:
            raise UnknownName("task", name, self.names())
        return self._specs[name]

    def task(self, name: str) -> ClassificationTask:
        return task_type(self.spec(name))

    def with_files(self, paths: tuple[Path, ...]) -> TaskCatalog:
        """This catalog plus the tasks declared in `paths`; every bad file is reported at once."""
        specs, origins, problems = dict(self._specs), dict(self.origins), Problems()
        for path in paths:
            try:
                spec = load_task_file(path)
            except ConfigError as err:
                problems.extend(err)
                continue
            if spec.name in specs:
                problems.add(
                    str(path),
                    "name",
                    "task name already declared",
                    spec.name,
                    f"a name not used by {origins[spec.name]}",
                )
                continue
            specs[spec.name], origins[spec.name] = spec, str(path)
        problems.raise_if_any()
        return TaskCatalog(specs, origins)


@lru_cache(maxsize=1)
def builtin_catalog() -> TaskCatalog:
    return TaskCatalog({}, {}).with_files(tuple(sorted(BUILTIN_DIR.glob("*.yaml"))))


@lru_cache(maxsize=32)
def catalog_for(task_files: tuple[str, ...]) -> TaskCatalog:
    return builtin_catalog().with_files(tuple(Path(p) for p in task_files))
