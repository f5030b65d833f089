"""Where the fleet runs: a `LocalCluster` sized to this machine, or the scheduler of a real cluster.

Every worker offers the resource `trainer=1`: a finetune task claims it, so one worker runs one training at a
time, with as many threads as the worker has (its cores); prepare and observe tasks take the worker's other
threads. On a real cluster, start each worker with `dask worker tcp://SCHEDULER:8786 --nthreads CORES
--resources trainer=1`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from jenova_fast.fleet.plan import FleetError

if TYPE_CHECKING:
    from distributed import Client

INSTALL_HINT = "pip install 'jenova-fast[fleet]'"
TRAINER = "trainer"
CONNECT_TIMEOUT_S = 30.0


def require_dask() -> None:
    """Import dask and distributed, or a FleetError that names the extra to install."""
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as exc:
        raise FleetError(f"the fleet runs on Dask, which is not installed ({exc}); install it with: {INSTALL_HINT}"
                         ) from exc


def quiet_dask_logs(level: int = logging.ERROR) -> None:
    """Dask's own loggers (each set to INFO or WARNING by its config) down to `level`: the fleet says what
    happened to each user itself."""
    require_dask()
    for name in list(logging.root.manager.loggerDict):
        if name == "distributed" or name.startswith("distributed."):
            logging.getLogger(name).setLevel(level)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def local_shape(workers: int | None, threads_per_worker: int | None) -> tuple[int, int]:
    """(workers, threads each) for this machine: Dask's own split of the cores unless given."""
    cores = available_cores()
    if workers is None and threads_per_worker is None:
        from distributed.deploy.utils import nprocesses_nthreads

        n, t = nprocesses_nthreads(cores)
        return int(n), int(t)
    if workers is None:
        assert threads_per_worker is not None
        return max(1, cores // threads_per_worker), threads_per_worker
    return workers, threads_per_worker or max(1, cores // workers)


def has_dashboard() -> bool:
    """Dask serves its dashboard only when bokeh is installed."""
    return importlib.util.find_spec("bokeh") is not None


@contextlib.contextmanager
def open_client(scheduler: str | None = None, *, workers: int | None = None, threads_per_worker: int | None = None,
                dashboard: bool = True, memory_limit: str | int = "auto") -> Iterator[Client]:
    """A Client of the scheduler at `scheduler` (tcp://HOST:8786), or of a new LocalCluster of worker processes
    (closed at the end) whose workers each offer trainer=1."""
    require_dask()
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise FleetError(f"--scheduler {scheduler}: cannot connect ({exc}); start one with `dask scheduler` and "
                             "workers with `dask worker SCHEDULER --resources trainer=1`, or leave --scheduler out to "
                             "run on this machine") from exc
        with client:
            yield client
        return
    n, threads = local_shape(workers, threads_per_worker)
    cluster = LocalCluster(
        n_workers=n, threads_per_worker=threads, processes=True, resources={TRAINER: 1},
        dashboard_address=":8787" if dashboard and has_dashboard() else None, memory_limit=memory_limit,
        silence_logs=logging.CRITICAL,  # a failed task is reported per user, not as a worker traceback
    )
    with cluster, Client(cluster) as client:
        yield client


def dashboard_link(client: Client) -> str | None:
    """The dashboard's address, when the scheduler serves one."""
    if not has_dashboard():
        return None
    try:
        services = client.scheduler_info().get("services", {})
    except Exception:  # a scheduler that does not say: no link rather than no run
        return None
    return str(client.dashboard_link) if "dashboard" in services else None


def _workers(client: Client) -> dict[str, Any]:
    try:
        info = client.scheduler_info(n_workers=-1)  # newer versions list only 5 workers unless asked
    except TypeError:  # versions before the argument list them all
        info = client.scheduler_info()
    return dict(info.get("workers", {}))


def trainers(client: Client) -> dict[str, int]:
    """Worker address -> its threads, for the workers that offer the trainer resource."""
    workers = _workers(client)
    return {addr: int(w.get("nthreads", 1)) for addr, w in workers.items()
            if (w.get("resources") or {}).get(TRAINER, 0) >= 1}


def wait_for_trainers(client: Client, timeout: float = CONNECT_TIMEOUT_S) -> dict[str, int]:
    """The trainer workers, once at least one is there; a FleetError naming the fix if none comes."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        found = trainers(client)
        if found:
            return found
        if time.monotonic() >= deadline:
            n = len(_workers(client))
            raise FleetError(
                f"none of the {n} worker(s) of {client.scheduler.address} offers the resource {TRAINER}: training "
                f"tasks would wait forever; start workers with `dask worker {client.scheduler.address} "
                f"--resources {TRAINER}=1`")
        time.sleep(0.2)
