"""Submit every stale user's chain to the cluster and gather what became of each.

Per user: prepare and observe (side by side), then finetune (it claims the worker resource `trainer`, after
both), then install. A task whose worker dies is run again by Dask (the tasks are idempotent); a task that
raises fails its user's chain alone, and the other users go on.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jenova_fast.fleet import chain
from jenova_fast.fleet.cluster import TRAINER, wait_for_trainers
from jenova_fast.fleet.plan import FleetOptions, UserPaths, base_identity, fingerprint, is_fresh
from jenova_fast.fleet.report import FleetReport, UserOutcome

if TYPE_CHECKING:
    from distributed import Client, Future

StateCallback = Callable[[str, str, dict[str, Any]], object]
STAGES = ("prepare", "observe", "finetune", "install")
PRIORITY = {"install": 30, "prepare": 20, "observe": 10, "finetune": 0}  # Dask runs higher first


def _key(stage: str, index: int, user: str, token: str) -> str:
    return f"fleet-{stage}-{index}-{re.sub(r'[^A-Za-z0-9_.-]', '_', user)}-{token}"


def _error(exc: BaseException | None) -> str:
    if exc is None:
        return "cancelled"
    text = str(exc).strip() or type(exc).__name__
    return text if type(exc).__name__ in ("FleetError", "FinetuneError") else f"{type(exc).__name__}: {text}"


def _outcome(user: str, futures: dict[str, Future], attempts: Counter[str]) -> UserOutcome:
    """A finished chain's outcome: the results of its tasks, or the first task that failed."""
    out = UserOutcome(user, "installed", attempts=dict(attempts))
    for stage in STAGES:
        future = futures[stage]
        if future.status == "error" or future.status == "cancelled":
            out.outcome, out.stage = "failed", stage
            out.error = _error(future.exception() if future.status == "error" else None)
            break  # the tasks after it carry the same error (Dask hands it down the chain)
        if future.status != "finished":  # observe still running after prepare failed
            continue
        result = future.result()
        out.seconds[stage] = round(result.seconds, 3)
        if result.worker:
            out.workers[stage] = result.worker
        if isinstance(result, chain.Prepared):
            out.fingerprint, out.store_files = result.fingerprint, result.store_files
            out.records, out.eval_records, out.skipped_files = result.records, result.eval_records, result.skipped
        elif isinstance(result, chain.Observed):
            out.observed = result.observed
        elif isinstance(result, chain.Trained):
            out.train_spec, out.steps, out.threads = result.train_spec, result.steps, result.threads
            out.heldout_loss_before, out.heldout_loss_after = result.heldout_loss_before, result.heldout_loss_after
            out.candidate_reused = result.reused
        elif isinstance(result, chain.Installed):
            out.model, out.previous = result.model, result.previous
    return out


def run_fleet(client: Client, root: str | Path, users: list[str], options: FleetOptions, *, force: bool = False,
              on_state: StateCallback | None = None) -> FleetReport:
    """Run the chain of each user of `users` under `root` whose model is stale (every one with `force`) on the
    cluster of `client`, and report each user's outcome. `on_state(user, state, info)` is called as users move
    through chain.STATES (from Dask's event thread as well as this one)."""
    from distributed import as_completed, wait

    users = list(dict.fromkeys(users))
    root = Path(root).absolute()  # the workers may run elsewhere, in another folder
    options = dataclasses.replace(options, base=Path(options.base).absolute())
    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter()
    workers = wait_for_trainers(client)
    base = base_identity(Path(options.base))
    report = FleetReport(root=str(root), base=base.path, scheduler=str(client.scheduler.address), workers=workers,
                         options={"base_sha256": base.sha256, **options.identity()}, started=started)
    token = uuid.uuid4().hex[:8]
    lock = threading.Lock()
    attempts: dict[str, Counter[str]] = defaultdict(Counter)
    chains: dict[str, dict[str, Future]] = {}
    done: set[str] = set()

    def tell(user: str, state: str, info: dict[str, Any]) -> None:
        if on_state is not None:
            on_state(user, state, info)

    def on_event(event: tuple[float, dict[str, Any]]) -> None:
        message = event[1]
        user, state = message.get("user"), message.get("state")
        if not isinstance(user, str) or not isinstance(state, str):
            return
        with lock:
            if user not in chains or user in done:
                return  # another run's event, or late news of a finished user
            attempts[user][state] += 1
        tell(user, state, message)

    outcomes: dict[str, UserOutcome] = {}
    client.subscribe_topic(chain.TOPIC, on_event)
    try:
        for index, user in enumerate(users):
            paths = UserPaths(root, user, adapter=options.adapter is not None)
            current = fingerprint(paths, base, options)
            if not force and is_fresh(paths, current):
                outcomes[user] = UserOutcome(user, "skipped", fingerprint=current.digest, store_files=current.files)
                tell(user, "skipped", {"outcome": outcomes[user]})
                continue
            with lock:
                chains[user] = {}  # its tasks' events count from now on (one may start before submit returns)
            tell(user, "queued", {})
            # where a worker has the choice, the light tasks go before the next training
            prepared = client.submit(chain.prepare_user, paths, options, base, token, priority=PRIORITY["prepare"],
                                     key=_key("prepare", index, user, token))
            observed = client.submit(chain.observe_user, paths, priority=PRIORITY["observe"],
                                     key=_key("observe", index, user, token))
            trained = client.submit(chain.finetune_user, paths, options, prepared, observed, resources={TRAINER: 1},
                                    priority=PRIORITY["finetune"], key=_key("finetune", index, user, token))
            installed = client.submit(chain.install_user, paths, trained, priority=PRIORITY["install"],
                                      key=_key("install", index, user, token))
            with lock:
                chains[user].update(prepare=prepared, observe=observed, finetune=trained, install=installed)
        by_future = {c["install"]: user for user, c in chains.items()}
        stragglers: list[Future] = []
        for future in as_completed(list(by_future)):
            user = by_future[future]
            with lock:
                done.add(user)
                tried = Counter(attempts[user])
            outcome = _outcome(user, chains[user], tried)
            outcomes[user] = outcome
            tell(user, outcome.outcome, {"outcome": outcome})
            # let the workers forget the finished chain's results: a worker that dies later then takes
            # nothing of this user with it, which Dask would compute again
            for task in chains[user].values():
                if task.done():
                    task.release()
                else:
                    stragglers.append(task)
        # tasks beside a failed one (an observe after its prepare failed) still finish: nothing is cut off
        wait(stragglers)
    except BaseException:
        client.cancel([f for c in chains.values() for f in c.values()])
        raise
    finally:
        client.unsubscribe_topic(chain.TOPIC)
    report.users = [outcomes[user] for user in users]
    report.seconds = round(time.perf_counter() - t0, 3)
    return report
