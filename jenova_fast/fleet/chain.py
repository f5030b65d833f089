"""One user's chain, as four task functions: prepare -> observe -> finetune -> install.

Each is idempotent and writes its outputs atomically, so Dask may run any of them again after a worker dies
mid-task (or a user may run them by hand, in order, without Dask at all):

- `prepare_user` rewrites `finetune/train.jsonl` (prepare's atomic output: a rerun writes the same bytes).
- `observe_user` counts into the CPA state only the insights the fleet's ledger has not seen; the ledger and
  the state are reconciled under the CPA's own lock, so a rerun never counts an insight twice.
- `finetune_user` trains into `finetune/fleet-stage/` (an existing candidate trained from the same fingerprint
  is kept, so a rerun after training does not train again) and needs the worker resource `trainer`.
- `install_user` installs the candidate with `install_model` (the previous model kept as jenova.prev.gguf),
  unless that very model is already installed (a rerun after the install), then writes the fingerprint
  beside it and removes the stage.

The functions return small dataclasses (what the report needs) and publish their state as Dask events on the
topic `TOPIC` when they run on a worker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jenova_fast.fleet.plan import (
    FLEET_SCHEMA,
    BaseIdentity,
    FleetError,
    FleetOptions,
    UserPaths,
    fingerprint,
    model_stamp,
    read_json,
)

if TYPE_CHECKING:
    from jenova_fast.finetune import FinetuneConfig

log = logging.getLogger(__name__)

TOPIC = "jenova-fast-fleet"
STATES = ("queued", "preparing", "observing", "training", "installing", "installed", "skipped", "failed")


# ---- running on a Dask worker (or not) ----

def _worker() -> Any | None:
    try:
        from distributed import get_worker
    except ImportError:
        return None
    try:
        return get_worker()
    except ValueError:  # not inside a task
        return None


def emit(user: str, state: str, **info: Any) -> None:
    """Tell the client that `user` reached `state` (a Dask event; nothing outside a worker)."""
    worker = _worker()
    if worker is not None:
        worker.log_event(TOPIC, {"user": user, "state": state, "worker": worker.address, "pid": os.getpid(),
                                 **info})


def worker_address() -> str | None:
    worker = _worker()
    return None if worker is None else str(worker.address)


def worker_threads() -> int | None:
    """The worker's threads: the cores it was given, so the cores one training may use."""
    worker = _worker()
    if worker is None:
        return None
    state = getattr(worker, "state", worker)
    return int(state.nthreads)


def worker_memory() -> int | None:
    """The worker's memory limit (Dask's nanny ends a worker past it), or less when less is available."""
    worker = _worker()
    limit = getattr(getattr(worker, "memory_manager", None), "memory_limit", None) if worker is not None else None
    if not limit:
        return None
    try:
        import psutil  # type: ignore[import-untyped]  # a dependency of distributed

        return min(int(limit), int(psutil.virtual_memory().available))
    except ImportError:
        return int(limit)


# ---- results ----

@dataclass(frozen=True)
class Prepared:
    user: str
    run: str  # the fleet run's token: a task run again within it finds its own finished work and keeps it
    fingerprint: str
    store_files: int
    records: int
    eval_records: int
    skipped: int
    seconds: float
    worker: str | None


@dataclass(frozen=True)
class Observed:
    user: str
    observed: int  # insights counted into the CPA state by this task
    known: int  # insights counted by earlier runs, left alone
    seconds: float
    worker: str | None


@dataclass(frozen=True)
class Trained:
    user: str
    run: str
    fingerprint: str
    sha256: str  # of the candidate: the installed model is recognised by it
    size: int
    train_spec: str
    steps: int
    records_train: int
    records_heldout: int
    heldout_loss_before: float
    heldout_loss_after: float
    threads: int
    seconds: float
    reused: bool  # a candidate of the same fingerprint was already there (a rerun after training)
    worker: str | None


@dataclass(frozen=True)
class Installed:
    user: str
    model: str
    previous: str | None
    fingerprint: str
    already: bool  # the model was already installed (a rerun after the install)
    seconds: float
    worker: str | None


def _write_json(path: Path, value: dict[str, Any]) -> None:
    from jenova_fast._fs import write_bytes_via

    data = (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8")
    write_bytes_via(path, lambda f: f.write(data))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


# ---- prepare ----

def prepare_user(paths: UserPaths, options: FleetOptions, base: BaseIdentity, run: str) -> Prepared:
    """The user's store into `finetune/train.jsonl` (and `eval.jsonl` with `split_eval`). `run`: a token of
    the fleet run (any string unique to it)."""
    from jenova_fast.prepare import prepare

    emit(paths.user, "preparing")
    start = time.perf_counter()
    fp = fingerprint(paths, base, options)  # before reading: a file changed meanwhile makes the next run retrain
    report = prepare(paths.store, paths.train, threads=options.prepare_threads, eval_fraction=options.split_eval)
    if options.split_eval <= 0:
        paths.eval.unlink(missing_ok=True)  # an earlier run's split, which this run's finetune must not use
    skipped = sum(report.skipped.values())
    if report.records == 0:
        raise FleetError(f"{paths.store}: no usable insight ({skipped} file(s) skipped: "
                         f"{', '.join(f'{n} {r}' for r, n in sorted(report.skipped.items())) or 'none found'}); "
                         f"fix the files or run `jenova-fast prepare --insights-dir {paths.store} --report r.json` "
                         "to see which and why")
    return Prepared(paths.user, run, fp.digest, fp.files, report.records, report.eval_records, skipped,
                    time.perf_counter() - start, worker_address())


# ---- observe ----

def _themes_digest(themes: dict[str, list[float]]) -> str:
    rows = sorted((key, [float(x) for x in value]) for key, value in themes.items())
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def _settled(ledger: dict[str, Any] | None, generation: int, themes_digest: str, where: Path) -> set[str]:
    """The insights counted so far. A `pending` entry is a count that was being saved when its task died:
    it counts when the state is the one it produced (its generation and themes), not when the save never
    happened (an older generation); when others have saved since, it is taken as counted (never twice)."""
    if ledger is None or ledger.get("schema") != FLEET_SCHEMA:
        return set()
    saved = ledger.get("generation")
    if isinstance(saved, int) and generation < saved:  # a new state (a damaged one was moved aside): count anew
        log.warning("%s: the CPA state is older than the ledger (generation %d < %d); counting every insight anew",
                    where, generation, saved)
        return set()
    observed = {p for p in ledger.get("observed", []) if isinstance(p, str)}
    pending = ledger.get("pending")
    if isinstance(pending, dict):
        adds = {p for p in pending.get("add", []) if isinstance(p, str)}
        expected = pending.get("generation")
        if generation == expected and themes_digest == pending.get("themes"):
            observed |= adds
        elif isinstance(expected, int) and generation > expected:
            log.warning("%s: a count interrupted before generation %d cannot be checked (the state is at %d); "
                        "taking it as done", where, expected, generation)
            observed |= adds
    return observed


def _ledger(observed: Iterable[str], generation: int, pending: dict[str, Any] | None = None) -> dict[str, Any]:
    """`generation`: the state's when the ledger matched it."""
    return {"schema": FLEET_SCHEMA, "observed": sorted(observed, key=os.fsencode), "generation": generation,
            "pending": pending}


def observe_user(paths: UserPaths) -> Observed:
    """Each insight's topic, once, into the user's CPA state (`.cpa_state`), as `cpa observe --insights` counts
    it: a theme mention at the time the insight was written."""
    from jenova_fast.cpa import CPA
    from jenova_fast.prepare import insight_time, iter_insights  # insight_time: as `cpa observe --insights` dates

    emit(paths.user, "observing")
    start = time.perf_counter()
    cpa = CPA(paths.cpa_state)
    new: list[tuple[str, str, float]] = []
    with cpa.batch():  # the CPA's lock: the ledger is read and the pending count written under it
        observed = _settled(read_json(paths.ledger), cpa.state.generation, _themes_digest(cpa.state.themes),
                            paths.ledger)
        present = set()
        for insight in iter_insights(paths.store):
            rel = os.path.relpath(insight.path, paths.store)
            present.add(rel)
            if rel not in observed:
                new.append((rel, insight.topic, insight_time(insight.path)))
        known = len(observed & present)
        observed &= present  # forget removed files: the ledger stays the size of the store
        if new:
            cpa.observe_topics([(topic, when) for _, topic, when in new])
            pending = {"generation": cpa.state.generation + 1, "themes": _themes_digest(cpa.state.themes),
                       "add": [rel for rel, _, _ in new]}
            _write_json(paths.ledger, _ledger(observed, cpa.state.generation, pending))
    # the state is saved (generation + 1): the count is done
    _write_json(paths.ledger, _ledger(observed | {rel for rel, _, _ in new}, cpa.state.generation))
    return Observed(paths.user, len(new), known, time.perf_counter() - start, worker_address())


# ---- finetune ----

def finetune_config(paths: UserPaths, options: FleetOptions, threads: int | None,
                    memory: int | None) -> FinetuneConfig:
    """The FinetuneConfig of the user's training: the candidate in the stage, the report beside train.jsonl."""
    from jenova_fast.finetune import FinetuneConfig

    return FinetuneConfig(
        base=Path(options.base), data=paths.train, out=paths.candidate, epochs=options.epochs, lr=options.lr,
        n_ctx=options.n_ctx, threads=threads, eval_fraction=options.eval_fraction,
        eval_data=paths.eval if options.split_eval > 0 else None, template=options.template, install=False,
        models_dir=paths.models_dir, report=paths.finetune_report, seed=options.seed, train=options.train,
        requantize=options.requantize, stride=options.stride, gpu_layers=options.gpu_layers,
        memory_available=memory, engine=options.engine, loss=options.loss, adapter=options.adapter,
        lora_alpha=options.lora_alpha, gradient_checkpointing=options.gradient_checkpointing,
    )


def _done_in_this_run(paths: UserPaths, prepared: Prepared) -> dict[str, Any] | None:
    """The training this run already did for the user (a task run again after its worker died, or because
    its result was lost with a worker): installed already, or a candidate waiting in the stage."""
    installed = read_json(paths.fingerprint_file)
    if (installed is not None and installed.get("run") == prepared.run
            and installed.get("fingerprint") == prepared.fingerprint
            and installed.get("model") == model_stamp(paths.installed) and isinstance(installed.get("trained"), dict)):
        return dict(installed["trained"])
    stamp = read_json(paths.candidate_stamp)
    if (stamp is not None and stamp.get("run") == prepared.run and stamp.get("fingerprint") == prepared.fingerprint
            and isinstance(stamp.get("trained"), dict) and paths.candidate.is_file()
            and sha256_file(paths.candidate) == stamp.get("sha256")):
        return dict(stamp["trained"])
    return None


def finetune_user(paths: UserPaths, options: FleetOptions, prepared: Prepared,
                  observed: Observed | None = None) -> Trained:
    """Train the user's candidate model from `train.jsonl` (threads: the worker's cores)."""
    from jenova_fast.finetune import finetune

    emit(paths.user, "training")
    start = time.perf_counter()
    done = _done_in_this_run(paths, prepared)
    if done is not None:
        return Trained(**{**done, "seconds": time.perf_counter() - start, "reused": True, "worker": worker_address()})
    # anything else in the stage is a dead attempt's: a killed training's temp files, a stale candidate
    shutil.rmtree(paths.stage, ignore_errors=True)
    paths.stage.mkdir(parents=True, exist_ok=True)
    threads = options.threads or worker_threads()
    memory = options.max_memory or worker_memory()
    try:
        report = finetune(finetune_config(paths, options, threads, memory))
    except BaseException:
        shutil.rmtree(paths.stage, ignore_errors=True)  # nothing of a failed training stays
        raise
    trained = Trained(
        user=paths.user, run=prepared.run, fingerprint=prepared.fingerprint, sha256=sha256_file(paths.candidate),
        size=paths.candidate.stat().st_size, train_spec=report.train_spec, steps=report.steps,
        records_train=report.records["train"], records_heldout=report.records["heldout"],
        heldout_loss_before=report.heldout_loss_before, heldout_loss_after=report.heldout_loss_after,
        threads=report.threads,
        seconds=time.perf_counter() - start, reused=False, worker=worker_address())
    _write_json(paths.candidate_stamp, {"run": trained.run, "fingerprint": trained.fingerprint,
                                        "sha256": trained.sha256, "trained": asdict(trained)})
    return trained


# ---- install ----

def _same_file(path: Path, sha256: str, size: int) -> bool:
    try:
        return path.stat().st_size == size and sha256_file(path) == sha256
    except OSError:
        return False


def install_user(paths: UserPaths, trained: Trained) -> Installed:
    """Install the candidate as `models/jenova.gguf` (the previous one kept as jenova.prev.gguf) and write the
    fingerprint beside it."""
    from jenova_fast.finetune import install_model
    from jenova_fast.finetune.install import prev_path

    emit(paths.user, "installing")
    start = time.perf_counter()
    if _same_file(paths.installed, trained.sha256, trained.size):  # a rerun after the install itself
        prev = prev_path(paths.installed)
        already, previous = True, (prev if prev.exists() else None)
    elif paths.candidate.is_file():
        done = install_model(paths.candidate, paths.installed, validate=False)  # finetune validated it
        already, previous = False, done.previous
    else:
        raise FleetError(f"{paths.candidate}: the trained model is missing (removed while the fleet ran?) and "
                         f"{paths.installed} is not it; run the fleet again for {paths.user}")
    _write_json(paths.fingerprint_file, {
        "schema": FLEET_SCHEMA, "fingerprint": trained.fingerprint, "sha256": trained.sha256,
        "model": model_stamp(paths.installed), "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run": trained.run, "trained": asdict(trained),
    })
    shutil.rmtree(paths.stage, ignore_errors=True)
    return Installed(paths.user, os.fspath(paths.installed), os.fspath(previous) if previous else None,
                     trained.fingerprint, already, time.perf_counter() - start, worker_address())


def run_chain(paths: UserPaths, options: FleetOptions, base: BaseIdentity, run: str | None = None
              ) -> tuple[Prepared, Observed, Trained, Installed]:
    """The whole chain in this process, one task after the other (what the fleet runs on its workers)."""
    prepared = prepare_user(paths, options, base, run or uuid.uuid4().hex)
    observed = observe_user(paths)
    trained = finetune_user(paths, options, prepared, observed)
    return prepared, observed, trained, install_user(paths, trained)
