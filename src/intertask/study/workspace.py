"""What the stages of one process share (`Workspace`) and the data a training stage reads.

Kept apart from `stages` so that planning a study and re-using its finished runs need neither torch
nor transformers: a re-run of a finished study only reads data fingerprints and the tracking store.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from intertask import pretrained, tracking
from intertask.compute import encoding
from intertask.config import ExperimentConfig, StageConfig, resolve
from intertask.errors import DataError
from intertask.tasks.base import ExampleSet, TaskType
from intertask.tasks.examples import load_examples


class HubNotRead(Exception):
    """A hub source left unread on purpose (`intertask validate` without --hub)."""


@dataclass
class Workspace:
    """What the stages of one process share: the experiment, loaded data, a scratch folder.

    The MLflow experiment is created on first use, after the checks, so bad input creates nothing.
    Creating one changes no global state: the entry point points MLflow at the store first
    (`tracking.use(cfg)`, as `intertask` commands and each Ray job do).
    """

    cfg: ExperimentConfig
    config_file: str | None = None  # where cfg was loaded from (recorded on every run)
    tags: dict[str, str] = field(default_factory=dict)  # put on every run (a grid cell's coordinates)
    experiment_id: str | None = None  # known already (a job of a pipeline), else created on first use
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="intertask-")))
    # example sets by (task, language, split, size, whole): shared by the workspaces of one study
    loaded: dict = field(default_factory=dict)
    _encoder: tuple | None = None  # (base encoder, tokenizer), loaded once for divergence embeddings
    read_hub: bool = True  # False: a hub source raises HubNotRead and is listed in skipped_hub
    skipped_hub: set = field(default_factory=set)  # (task, language, split, whole) left unread
    # a job run elsewhere (a Ray worker): the sets its driver planned and keyed it on, by the key of
    # `loaded` -> (fingerprint, files), and the data root the driver read them under
    expected: dict = field(default_factory=dict)
    planned_root: str = ""

    def experiment(self) -> str:
        if self.experiment_id is None:
            self.experiment_id = tracking.connect(self.cfg)
            tracking.close_dead_runs(self.experiment_id)  # left RUNNING by a killed process of this host
        return self.experiment_id

    def known_experiment(self) -> str | None:
        """The experiment if the tracking store has it already (nothing is created)."""
        if self.experiment_id is None and tracking.connect(self.cfg, create=False) is None:
            return None
        return self.experiment()

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def examples(
        self, task: str, language: str, split: str, max_examples: int | None, whole: bool = False
    ) -> ExampleSet:
        key = (task, language, split, max_examples, whole)
        if not self.read_hub and self.cfg.origin(task) == "hub":
            self.skipped_hub.add((task, language, split, whole))
            raise HubNotRead(task)
        if key not in self.loaded:
            cfg = self.cfg
            self.loaded[key] = load_examples(
                resolve.catalog(cfg).spec(task),
                language,
                split,
                root=resolve.data_root(cfg),
                fractions=cfg.data.split_fractions.as_dict(),
                seed=cfg.split_seed,
                max_examples=max_examples,
                origin=cfg.origin(task),
                whole=whole,
                resplit=cfg.data.resplit,
            )
            self._check_planned(key, self.loaded[key])
        return self.loaded[key]

    def _check_planned(self, key: tuple, data: ExampleSet) -> None:
        """A set read here must be the one the driver keyed the job on: a worker whose data root holds
        other files would otherwise train on them under the driver's key."""
        if key not in self.expected or self.expected[key][0] == data.fingerprint:
            return
        fingerprint, files = self.expected[key]
        task, language, split = key[:3]
        raise DataError.at(
            ", ".join(data.files),
            "",
            f"{task} {language} {split}: this process read other data (fingerprint {data.fingerprint[:12]},"
            f" data root {resolve.data_root(self.cfg)}) than the study was planned on (fingerprint "
            f"{fingerprint[:12]}: {', '.join(files)}, data root {self.planned_root or '?'})",
            expected="the same files on every node (a shared data root, or identical copies)",
        )

    def evaluation_examples(self, task: str, language: str, split: str) -> ExampleSet:
        """A split as evaluation and probes read it: whole where the task ships it and nothing here
        trains the task (resolve.read_whole), else as training would cut it."""
        return self.examples(task, language, split, None, resolve.read_whole(self.cfg, task))

    def encode(self, task: TaskType, data: ExampleSet, tokenizer, max_length: int | None = None, **options):
        cache = pretrained.cache_root() / "tokens" if self.cfg.data.cache_tokenization else None
        return encoding.encode(
            task, data, tokenizer, max_length or self.cfg.model.max_length, cache, **options
        )


def stage_data(ws: Workspace, stage: StageConfig, task: str) -> tuple[ExampleSet, ExampleSet]:
    train_set = ws.examples(task, stage.language, "train", stage.max_examples.train)
    dev_set = ws.examples(task, stage.language, "dev", stage.max_examples.dev)
    for data in (train_set, dev_set):
        if len(data) == 0:
            raise DataError.at(
                ", ".join(data.files), "", f"no {data.split} examples", 0, "at least one example"
            )
    return train_set, dev_set
