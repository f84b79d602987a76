"""Several drivers on one study (two `intertask main` started on one config at once, on one host or
two): one parent run, one run per arm, and each stage run by one driver only.

The tracking store gives one atomic step every backend has: a logged param cannot change (its run and
key are a unique key of MLflow's SQL schema; a second value is refused with INVALID_PARAMETER_VALUE,
on a server as on SQLite or PostgreSQL). So a claim is a param logged on the study's parent run:

    lease.<stage key, 16 hex>.<generation>  = the driver's id   who runs that stage
    arm.<arm key, 16 hex>                   = a run id          which run is that arm

and a driver is alive while its tag `intertask.driver.<id>` (unix time) is renewed by its heartbeat
(removed when it ends). A claim whose driver is gone or silent for longer than `stale` seconds is taken
over by writing the next generation -- the same compare-and-set, so two drivers taking it over at once
cannot both win. Silence while this process itself had to retry the tracking server (an outage) does
not count against another driver.

The parent run itself has no run above it to claim on: two drivers that both find none create one each,
and ELECTION_SECONDS after creating theirs (spent describing it) keep the earliest (an elected parent --
tagged -- wins over any other); the other candidate is deleted.
"""

from __future__ import annotations

import contextlib
import sys
import time
import uuid

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from intertask.tracking.connection import TAG, clash_retried, last_retry
from intertask.tracking.liveness import alive, process_tags
from intertask.tracking.runs import find_runs

DRIVER = f"{TAG}driver."  # tag prefix on the parent: a live driver's latest heartbeat
ELECTED = f"{TAG}elected"  # tag on the parent run two drivers agreed on
ELECTION_SECONDS = 0.5
_ME = uuid.uuid4().hex[:12]


def me() -> str:
    """This process's driver id (random per process: a restarted driver is a new one)."""
    return _ME


def beat() -> str:
    """A driver tag's value: the time, then which process it is (host, PID namespace, PID, start
    time), so that a driver of this host that died is known dead at once, not after `stale` seconds."""
    who = process_tags()
    return " ".join(
        [str(int(time.time()))]
        + [who[f"{TAG}{k}"].replace(" ", "_") or "-" for k in ("host", "pid_ns", "pid", "pid_started")]
    )


def renew(parent: str, driver: str | None = None) -> None:
    """The driver's sign of life on the study's parent run."""
    MlflowClient().set_tag(parent, f"{DRIVER}{driver or me()}", beat())


def leave(parent: str, driver: str | None = None) -> None:
    """The driver is done: its claims lapse at once."""
    with contextlib.suppress(MlflowException):  # already gone
        MlflowClient().delete_tag(parent, f"{DRIVER}{driver or me()}")


def live_drivers(parent: str, stale: float) -> set[str]:
    """The drivers whose heartbeat on the parent is younger than `stale` seconds."""
    tags = MlflowClient().get_run(parent).data.tags
    return {k[len(DRIVER) :] for k, v in tags.items() if k.startswith(DRIVER) and _fresh(v, stale)}


def _fresh(value: str, stale: float) -> bool:
    """Whether a driver tag's value (beat()) is a live driver's: renewed within `stale` seconds (or
    since this process last had to wait for the server), and not a process of this host known dead."""
    parts = value.split()
    try:
        renewed = float(parts[0])
    except (ValueError, IndexError):
        return False
    if len(parts) == 5:
        host, namespace, pid, started = parts[1:]
        here = process_tags()
        mine = (here[f"{TAG}host"].replace(" ", "_"), here[f"{TAG}pid_ns"] or "-")
        if (host, namespace) == mine and not alive(int(pid), started):
            return False
    return time.time() - max(renewed, last_retry()) <= stale


def claim(parent: str, key: str, stale: float, driver: str | None = None) -> str | None:
    """Claim the stage `key` for this driver: None once it is ours, else the id of the live driver
    that holds it."""
    driver = driver or me()
    client = MlflowClient()
    prefix = f"lease.{key[:16]}."
    for _ in range(100):  # each round: one more generation written by someone
        run = client.get_run(parent)
        generations = {int(k[len(prefix) :]): v for k, v in run.data.params.items() if k.startswith(prefix)}
        following = 0
        if generations:
            latest = max(generations)
            holder = generations[latest]
            if holder == driver:
                return None
            beat = run.data.tags.get(f"{DRIVER}{holder}")
            if beat is not None and _fresh(beat, stale):
                return holder
            following = latest + 1
        try:
            client.log_param(parent, f"{prefix}{following}", driver)
            return None
        except MlflowException:  # another driver wrote this generation first: read again
            continue
    raise RuntimeError(f"no claim on stage {key[:16]} after 100 rounds")  # pragma: no cover


def adopt(parent: str, arm_key: str, candidate: str) -> str:
    """The run that is the arm `arm_key`: `candidate` (just made by this driver) when its claim is the
    first, else the run another driver claimed first (and `candidate` is deleted)."""
    client = MlflowClient()
    name = f"arm.{arm_key[:16]}"
    try:
        client.log_param(parent, name, candidate)
        return candidate
    except MlflowException:
        chosen = client.get_run(parent).data.params.get(name)
        if not chosen or chosen == candidate:
            return candidate
        client.delete_run(candidate)
        return chosen


def elect(experiment_id: str, key: str, mine: str, created: float) -> str:
    """The parent run of the study `key` after this driver created `mine` (at time.monotonic()
    `created`): once ELECTION_SECONDS have passed -- time for another driver that looked at the same
    moment to create its own -- keep one, an elected one if there is, else the earliest, and delete
    `mine` if it lost."""
    client = MlflowClient()
    time.sleep(max(0.0, ELECTION_SECONDS - (time.monotonic() - created)))
    candidates = [
        r for r in find_runs(experiment_id, f"{TAG}run_key", key) if r.info.lifecycle_stage == "active"
    ]
    elected = [r for r in candidates if r.data.tags.get(ELECTED) and r.info.run_id != mine]
    if elected:
        chosen = elected[-1].info.run_id  # the oldest elected one
    else:
        chosen = min(candidates, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id
    if chosen != mine:
        client.delete_run(mine)
        print(
            f"note: another driver started this study at the same moment: joining its run {chosen}",
            file=sys.stderr,
        )
    clash_retried(client.set_tag, chosen, ELECTED, "1")  # both drivers set it at the same moment
    return chosen
