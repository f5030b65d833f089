"""Who is in the fleet, where each user's files are, and whether a user's installed model is still fresh.

A user `<root>/users/<user>/` of an operator's `~/.jenova-ai` (or any root laid out the same way) has:

    insights/                 the store (read)
    .cpa_state/               the CPA's state, and the fleet's ledger of the insights it has observed
    finetune/train.jsonl      prepare's output (eval.jsonl beside it with --split-eval)
    finetune/jenova.report.json
    finetune/fleet-stage/     the trained candidate between the finetune and install tasks (removed after)
    models/jenova.gguf        the installed model, jenova.prev.gguf the one before it
    models/jenova.fleet.json  the fingerprint of what the installed model was trained from

The fingerprint is a SHA-256 over the store's insight files (each one's path relative to the store, size and
mtime in ns, in sorted order), the base model's identity (size and SHA-256) and the options that change the
result. A user is fresh when `jenova.fleet.json` holds the current fingerprint and the installed model is
still the file it was written for (a rollback or a manual install makes the user stale again).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

FLEET_SCHEMA = 1  # part of every fingerprint: a change of the chain's meaning retrains everyone once
FINGERPRINT_NAME = "jenova.fleet.json"
INSTALLED_NAME = "jenova.gguf"
ADAPTER_NAME = "jenova-lora.gguf"  # a few MB per user over the one shared base
STAGE_NAME = "fleet-stage"
LEDGER_NAME = "fleet-observed.json"


class FleetError(Exception):
    """A fleet run cannot start or a user's files are not usable; the message names the path and the fix."""


def default_root() -> Path:
    """The operator's `~/.jenova-ai`."""
    return Path.home() / ".jenova-ai"


@dataclass(frozen=True)
class UserPaths:
    """Every path of one user's chain. Plain data: it travels to the Dask workers as it is."""

    root: Path
    user: str
    adapter: bool = False  # the fleet trains LoRA adapters: installed as models/jenova-lora.gguf

    @property
    def home(self) -> Path:
        return self.root / "users" / self.user

    @property
    def store(self) -> Path:
        return self.home / "insights"

    @property
    def cpa_state(self) -> Path:
        return self.home / ".cpa_state"

    @property
    def ledger(self) -> Path:
        """Which insights the fleet has counted into the CPA state, so a rerun never counts one twice."""
        return self.cpa_state / LEDGER_NAME

    @property
    def finetune_dir(self) -> Path:
        return self.home / "finetune"

    @property
    def train(self) -> Path:
        return self.finetune_dir / "train.jsonl"

    @property
    def eval(self) -> Path:
        return self.finetune_dir / "eval.jsonl"

    @property
    def finetune_report(self) -> Path:
        return self.finetune_dir / "jenova.report.json"

    @property
    def stage(self) -> Path:
        return self.finetune_dir / STAGE_NAME

    @property
    def candidate(self) -> Path:
        return self.stage / "jenova.candidate.gguf"

    @property
    def candidate_stamp(self) -> Path:
        return self.stage / "candidate.json"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def installed(self) -> Path:
        return self.models_dir / (ADAPTER_NAME if self.adapter else INSTALLED_NAME)

    @property
    def fingerprint_file(self) -> Path:
        return self.models_dir / FINGERPRINT_NAME


@dataclass(frozen=True)
class FleetOptions:
    """What every user's chain is run with: the base model and the finetune options (FinetuneConfig's)."""

    base: Path
    epochs: int | None = None  # None: chosen from each user's data, as finetune chooses
    lr: float | None = None
    n_ctx: int | None = None
    train: str | None = None  # --train SPEC; None: chosen by each trainer's memory
    requantize: str | None = None
    stride: int | str | None = None  # N, 'half' or 'ctx'; None: 'half'
    seed: int = 0
    eval_fraction: float | None = None  # finetune's own held-out split of train.jsonl; None: finetune's
    split_eval: float = 0.0  # > 0: prepare writes this fraction of the insights to eval.jsonl, the held-out set
    template: str | None = None
    threads: int | None = None  # per training; None: the worker's threads
    prepare_threads: int = 1  # prepare runs beside the trainings: one thread each by default
    max_memory: int | None = None  # bytes per training; None: the worker's memory limit or what is available
    gpu_layers: int = 0
    engine: str = "auto"  # finetune's --engine
    loss: str | None = None  # finetune's --loss
    adapter: str | None = None  # lora[:RANK]: one adapter per user over the shared base
    lora_alpha: float | None = None
    gradient_checkpointing: bool = False  # recompute activations: less memory, the same training

    def identity(self) -> dict[str, Any]:
        """The options that change what is trained (not where or how fast): part of the fingerprint. The
        options added with the engine count only when set, so fleets trained before them stay fresh."""
        out = asdict(self)
        for key in ("base", "threads", "prepare_threads", "max_memory", "gradient_checkpointing"):
            out.pop(key)
        for key, default in (("engine", "auto"), ("loss", None), ("adapter", None), ("lora_alpha", None)):
            if out[key] == default:
                out.pop(key)
        return out


@dataclass(frozen=True)
class BaseIdentity:
    path: str
    size: int
    sha256: str


def base_identity(base: Path) -> BaseIdentity:
    """The base model's size and SHA-256 (read once per fleet run, by the client)."""
    base = Path(base)
    try:
        size = base.stat().st_size
        digest = hashlib.sha256()
        with open(base, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    except OSError as exc:
        raise FleetError(f"--base {base}: {exc.strerror or exc}; give the path of a GGUF model that every worker "
                         "can read at the same path") from exc
    return BaseIdentity(os.fspath(base.resolve()), size, digest.hexdigest())


def list_users(root: Path, users: list[str] | None = None) -> list[str]:
    """The users to run: those named (each must have an insight store), or every `<root>/users/*/insights`."""
    users_dir = Path(root) / "users"
    if users:
        for name in users:
            if not name or name != Path(name).name or name.startswith("."):
                raise FleetError(f"--users: {name!r} is not a user name (a folder name under {users_dir})")
        return list(dict.fromkeys(users))
    try:
        found = sorted(p.name for p in users_dir.iterdir()
                       if not p.name.startswith(".") and (p / "insights").is_dir())
    except OSError as exc:
        raise FleetError(f"{users_dir}: {exc.strerror or exc}; pass --root DIR, the folder that holds users/<name>/"
                         "insights") from exc
    if not found:
        raise FleetError(f"no user under {users_dir} has an insights folder; pass --root DIR, the folder that holds "
                         "users/<name>/insights")
    return found


@dataclass(frozen=True)
class StoreFingerprint:
    digest: str
    files: int
    bytes: int


def store_files(store: Path) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime ns) of each `*.json` under the store, as prepare walks it (hidden names
    skipped, symlinks not followed), in sorted order."""
    out: list[tuple[str, int, int]] = []
    if not store.is_dir():
        return out
    for directory, dirnames, filenames in os.walk(store, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or not name.endswith(".json"):
                continue
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:  # removed while we walked
                continue
            out.append((os.path.relpath(path, store), st.st_size, st.st_mtime_ns))
    out.sort(key=lambda item: os.fsencode(item[0]))
    return out


def fingerprint(paths: UserPaths, base: BaseIdentity, options: FleetOptions) -> StoreFingerprint:
    """What the user's model would be trained from now."""
    digest = hashlib.sha256()
    head = {"schema": FLEET_SCHEMA, "base": {"size": base.size, "sha256": base.sha256}, "options": options.identity()}
    digest.update(json.dumps(head, sort_keys=True).encode())
    files = store_files(paths.store)
    for rel, size, mtime_ns in files:
        digest.update(os.fsencode(rel) + b"\0" + f"{size} {mtime_ns}\n".encode())
    return StoreFingerprint(digest.hexdigest(), len(files), sum(size for _, size, _ in files))


def model_stamp(path: Path) -> dict[str, int] | None:
    """What identifies an installed file (a new install or a rollback replaces it: another inode)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when it is missing or unreadable (then it is rewritten, never trusted)."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def installed_fingerprint(paths: UserPaths) -> str | None:
    """The fingerprint the installed model was trained from, if it is still the model installed then."""
    kept = read_json(paths.fingerprint_file)
    if kept is None or kept.get("schema") != FLEET_SCHEMA:
        return None
    if kept.get("model") != model_stamp(paths.installed):
        return None
    value = kept.get("fingerprint")
    return value if isinstance(value, str) else None


def is_fresh(paths: UserPaths, current: StoreFingerprint) -> bool:
    return installed_fingerprint(paths) == current.digest
