"""Which runs still have a live process behind them: process tags, heartbeats, and closing the runs of
dead processes, of silent stages and of a study that ended."""

from __future__ import annotations

import logging
import os
import platform
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from mlflow.tracking import MlflowClient

from intertask.errors import redact
from intertask.tracking.connection import TAG, current_uri, last_retry, store_failure
from intertask.tracking.runs import close_run, search_pages


def close_dead_runs(experiment_id: str) -> list[str]:
    """Mark KILLED every run of the experiment left RUNNING by a process of this host that is gone
    (SIGKILL, power loss): no run stays RUNNING after a crash once anything runs here again."""
    closed, mine = [], process_tags()
    for found in search_pages([experiment_id], "attributes.status = 'RUNNING'"):
        tags = found.data.tags
        pid = int(tags.get(f"{TAG}pid", "0") or 0)
        here = tags.get(f"{TAG}host") == mine[f"{TAG}host"] and pid and pid != os.getpid()
        # a container sharing the host's name sees other PIDs: only runs of this PID namespace are judged
        here = here and tags.get(f"{TAG}pid_ns", mine[f"{TAG}pid_ns"]) == mine[f"{TAG}pid_ns"]
        if here and not alive(pid, tags.get(f"{TAG}pid_started")):
            close_run(found.info.run_id, "KILLED")
            closed.append(found.info.run_id)
    if closed:
        logging.getLogger(__name__).warning("marked %d run(s) of dead processes KILLED", len(closed))
    return closed


HEARTBEAT = f"{TAG}heartbeat"  # tag: unix time of a running stage's latest sign of life


@contextmanager
def heartbeat(run_id: str, seconds: float, tag: str = HEARTBEAT, value=None) -> Iterator[None]:
    """While the block runs, tag the run with the time every `seconds` (a thread): a driver on another
    host tells a stage whose process died (its node lost) from a slow one by this tag going stale (a
    driver's own sign of life on its study's parent: `tag` intertask.driver.<id>, tracking/leases.py)."""
    stop = threading.Event()

    def beat() -> None:
        client = MlflowClient()
        while True:
            try:
                client.set_tag(run_id, tag, value() if value is not None else str(int(time.time())))
            except Exception as err:  # noqa: BLE001 -- a missed beat is said, and the next one tried
                print(
                    f"note: heartbeat of run {run_id} not recorded: {redact(str(err))[:300]}", file=sys.stderr
                )
            if stop.wait(seconds):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{run_id[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)  # a beat waiting for an absent server is not waited for (a daemon)


def close_stale_runs(experiment_id: str, parents: list[str], stale_seconds: float) -> list[str]:
    """Mark KILLED the runs RUNNING under `parents` whose heartbeat (else start) is older than
    `stale_seconds`: their process is gone, wherever it ran. Returns their ids. A heartbeat missed
    while the tracking server was away is no sign of death: the clock starts again when this process
    last had to retry a request (`last_retry`)."""
    now, closed = time.time(), []
    for found in _running_children(experiment_id, parents):
        beat = float(found.data.tags.get(HEARTBEAT) or found.info.start_time / 1000)
        if now - max(beat, last_retry()) > stale_seconds:
            close_run(found.info.run_id, "KILLED")
            closed.append(found.info.run_id)
            print(
                f"note: run {found.info.run_id} marked KILLED: no heartbeat for over {stale_seconds:g} s",
                file=sys.stderr,
            )
    return closed


def _running_children(experiment_id: str, parents: list[str]) -> Iterator:
    """The runs RUNNING under one of `parents` (not one of them)."""
    for parent in parents:
        query = f"attributes.status = 'RUNNING' and tags.mlflow.parentRunId = '{parent}'"  # a run id: hex
        yield from (r for r in search_pages([experiment_id], query) if r.info.run_id not in parents)


def close_running_children(
    experiment_id: str, parents: list[str], status: str = "KILLED", others: set[str] = frozenset()
) -> list[str]:
    """Mark `status` every run still RUNNING under one of `parents` (and not one of them): a stage
    whose process died -- its Ray node lost, its worker killed, on whichever host -- cannot close its
    own run, and a retried stage leaves its first attempt's run behind. Runs of the live drivers
    `others` (another `main` on the same study) are theirs to close."""
    closed = [
        found.info.run_id
        for found in _running_children(experiment_id, parents)
        if found.data.tags.get(f"{TAG}driver") not in others
    ]
    for run_id in closed:
        close_run(run_id, status)
    if closed:
        logging.getLogger(__name__).warning("marked %d stage run(s) left RUNNING %s", len(closed), status)
    return closed


class Cleanup:
    """Closing a study's runs whatever ended it: each step's requests ride through an outage like any
    other (tracking.outage_seconds); once one fails for good, the rest are left RUNNING and said -- the
    next `main` of the study closes them (close_dead_runs, and its own clean-up of the same runs) --
    rather than each waiting out the outage again."""

    def __init__(self) -> None:
        self.gave_up = False

    def __call__(self, step, *args) -> None:
        if self.gave_up:
            return
        try:
            step(*args)
        except Exception as err:  # noqa: BLE001 -- said; the study's own error is the one raised
            if store_failure(err, current_uri()) is None:
                raise
            self.gave_up = True
            print(
                "note: the tracking server did not answer while closing the study's runs "
                f"({redact(str(err)).splitlines()[0][:200] if str(err) else type(err).__name__}); what is "
                "still RUNNING is closed by the next `intertask main` of this study",
                file=sys.stderr,
                flush=True,
            )


def alive(pid: int, started: str | float | None = None) -> bool:
    """Whether process `pid` of this host runs, and is the one that started at `started` (its start
    time, unix seconds, as process_tags records it): a PID reused by a later process is not alive."""
    import psutil

    try:
        process = psutil.Process(pid)
        if started in (None, ""):
            return process.is_running()
        return abs(process.create_time() - float(started)) < 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's process: it exists; its start time unread
        return True


def process_tags() -> dict[str, str]:
    """Which process runs a run -- host, PID namespace, PID and the process's start time -- so that a
    run left RUNNING by a dead process of this host is told from a live one (close_dead_runs), even
    where the PID was since reused or a container shares the host's name."""
    import psutil

    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:  # not Linux
        namespace = ""
    return {
        f"{TAG}host": platform.node(),
        f"{TAG}pid_ns": namespace,
        f"{TAG}pid": str(os.getpid()),
        f"{TAG}pid_started": f"{psutil.Process().create_time():.2f}",
    }
