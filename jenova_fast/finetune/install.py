"""Put a model at models/jenova.gguf (a LoRA adapter at models/jenova-lora.gguf) atomically, keep the previous
one as jenova.prev.gguf, roll back.

At every instant `jenova.gguf` is a complete model: the new file is copied beside it and renamed over it,
and the old one is hard-linked to `jenova.prev.gguf` before that rename. A candidate that fails validation
never gets there. Nothing else in the project (the CPA state, train.jsonl) is touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from jenova_fast import _fs
from jenova_fast.finetune.errors import FinetuneError
from jenova_fast.finetune.runtime import llama_cpp_module, load_model
from jenova_fast.finetune.validate import inspect_model

log = logging.getLogger(__name__)

DEFAULT_MODELS_DIR = Path("models")
INSTALLED_NAME = "jenova.gguf"
ADAPTER_NAME = "jenova-lora.gguf"


def prev_path(target: Path) -> Path:
    return target.with_name(f"{target.stem}.prev{target.suffix}")


def is_adapter(path: str | os.PathLike[str]) -> bool:
    from jenova_fast.finetune.metadata import open_reader

    field = open_reader(path).fields.get("general.type")
    return field is not None and field.contents() == "adapter"


def validate_adapter_file(path: str | os.PathLike[str], base: str | os.PathLike[str] | None = None) -> Path:
    """A LoRA adapter that llama.cpp loads over the base it was trained on (the one it records, or `base`,
    which must have the recorded SHA-256); returns that base."""
    from jenova_fast.finetune import adapter

    lc = llama_cpp_module()
    _alpha, _tensors, kv = adapter.read_adapter(path)
    recorded = kv.get(adapter.BASE_SHA256_KEY)
    base = Path(base if base is not None else kv.get(adapter.BASE_PATH_KEY, ""))
    if not base.is_file():
        raise FinetuneError(f"{path}: its base {str(base) or '(not recorded)'} is not there; give the base it was "
                            "trained on with --base BASE.gguf")
    actual = adapter.sha256(base)
    if recorded and actual != recorded:
        raise FinetuneError(f"{path} was trained over a base with SHA-256 {recorded}, but {base} has {actual}; "
                            "an adapter only fits its own base: give that one with --base")
    with load_model(base) as model:
        lora = lc.llama_adapter_lora_init(model, os.fsencode(path))
        if not lora:
            raise FinetuneError(f"{path}: llama.cpp could not load this adapter over {base}")
        lc.llama_adapter_lora_free(lora)
    return base


def validate_model_file(path: str | os.PathLike[str]) -> None:
    """A readable GGUF with tensors that llama.cpp itself loads (an adapter: over its base); anything else
    raises FinetuneError."""
    llama_cpp_module()  # without the extra: the error that names `pip install 'jenova-fast[finetune]'`
    if is_adapter(path):
        validate_adapter_file(path)
        return
    info = inspect_model(path)
    if info.types.n_tensors == 0:
        raise FinetuneError(f"{path}: the GGUF has no tensors; it is not a usable model")
    with load_model(path):
        pass


@dataclass(frozen=True)
class InstallResult:
    installed: Path
    previous: Path | None  # where the model it replaced now is, if there was one


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # filesystems without hard links
        shutil.copyfile(src, dst)


@contextlib.contextmanager
def _exclusive(target: Path) -> Iterator[None]:
    """One install or rollback in a models folder at a time: a second one is told so, and changes nothing.
    The lock is on the folder itself, so no lock file is left behind."""
    fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FinetuneError(f"{target}: another install or rollback in {target.parent} is running; nothing "
                                "was changed: wait for it to finish, then install again") from None
        yield
    finally:
        os.close(fd)


def install_model(candidate: str | os.PathLike[str], target: str | os.PathLike[str] | None = None,
                  *, validate: bool = True, move: bool = False) -> InstallResult:
    """Install `candidate` at `target` (default models/jenova.gguf); the replaced model becomes .prev.
    `move` renames the candidate instead of copying it (same filesystem, e.g. a temp file beside target)."""
    candidate = Path(candidate)
    target = Path(target) if target is not None else DEFAULT_MODELS_DIR / INSTALLED_NAME
    if validate:
        validate_model_file(candidate)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target), _fs.temporary(target, directory=True) as tmp:
        if candidate.resolve() == target.resolve():
            raise FinetuneError(f"{candidate}: already installed at {target}")
        new, previous = tmp / "new", None
        if move:
            os.replace(candidate, new)
        else:
            shutil.copyfile(candidate, new)
        with open(new, "rb") as fh:
            os.fsync(fh.fileno())
        if target.exists():
            previous = prev_path(target)
            _link_or_copy(target, tmp / "prev")
            os.replace(tmp / "prev", previous)
        os.replace(new, target)
        _fs.fsync_dir(target.parent)
    log.debug("installed %s at %s%s", candidate, target, f" (previous kept as {previous})" if previous else "")
    return InstallResult(target, previous)


def rollback(target: str | os.PathLike[str] | None = None) -> InstallResult:
    """Swap `target` and its .prev: the previous model is back, and a second rollback undoes the first."""
    target = Path(target) if target is not None else DEFAULT_MODELS_DIR / INSTALLED_NAME
    previous = prev_path(target)
    if not previous.exists():
        raise FinetuneError(f"{previous}: no previous model to roll back to (one is kept by each install)")
    validate_model_file(previous)
    with _exclusive(target), _fs.temporary(target, directory=True) as tmp:
        had_current = target.exists()
        if had_current:
            _link_or_copy(target, tmp / "current")
        os.replace(previous, target)
        if had_current:
            os.replace(tmp / "current", previous)
        _fs.fsync_dir(target.parent)
    log.info("rolled back %s to the previous model", target)
    return InstallResult(target, previous if had_current else None)
