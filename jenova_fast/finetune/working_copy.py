"""The file llama.cpp trains, and the way back to a model of the base's size.

llama.cpp trains F32 tensors only, so the tensors to be trained are dequantized to F32 in a working copy.
A frozen tensor is kept as stored or converted to the type its kernels run fastest in, by one table
(`frozen_type`, measured in docs/finetune.md). After training, the result takes every frozen tensor byte
for byte from the base, and the trained ones as F32 or, with `--requantize`, quantized by ggml's own
quantizer (any type llama.cpp writes, K-quants included).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jenova_fast import _fs
from jenova_fast.finetune.errors import FinetuneError
from jenova_fast.finetune.metadata import open_reader, rewrite_gguf
from jenova_fast.finetune.runtime import engine
from jenova_fast.finetune.trainable import block_of

log = logging.getLogger(__name__)

# What a frozen tensor becomes in the working copy on the CPU. llama.cpp's CPU backend differentiates
# through any type it can dequantize (OUT_PROD) once weight repacking is off, which training does (repacked
# Q4_0/Q4_K/IQ4_NL abort with GGML_ASSERT(*cur_backend_id != -1)); what differs is speed (docs/finetune.md,
# "Frozen types", measured on the SmolLM2-135M and Llama-3.2-1B shapes):
# - before the first trained block, a frozen matrix only runs forward: types with a fast batched kernel
#   (llamafile's tinyBLAS: F16, BF16, Q8_0, Q4_0, Q5_0, IQ4_NL) are kept; K-quants and the rest have none
#   without repacking and made a Llama-3.2-1B last:2 step 1.7x slower than Q8_0, so they become Q8_0;
# - where the backward pass runs (from the first trained block on, and the head), the gradient flows through
#   the frozen matrix (OUT_PROD): F32 took 6 s a step, Q8_0 11, the Q4_K_M mix 24 and F16 46, so frozen
#   matrices there are F32, or Q8_0 (`lean`, a quarter of the bytes) when F32 would not fit in memory.
FAST_FORWARD = frozenset({"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q5_0", "IQ4_NL"})
FROZEN_FORWARD = "Q8_0"
FROZEN_BACKWARD, FROZEN_BACKWARD_LEAN = "F32", "Q8_0"
# GPU (CUDA): a frozen quantized matrix made a step ~19x slower than F32 (llama-finetune, H200), so every
# frozen matrix is F32 there; this trades memory for speed.
FROZEN_ON_GPU = "F32"


def frozen_type(base_type: str, *, in_backward: bool, matrix: bool, gpu: bool, lean: bool = False) -> str:
    """The one table: a frozen tensor's type in the working copy."""
    if not matrix or base_type == "F32":
        return base_type
    if gpu:
        return FROZEN_ON_GPU
    if in_backward:
        return FROZEN_BACKWARD_LEAN if lean else FROZEN_BACKWARD
    return base_type if base_type in FAST_FORWARD else FROZEN_FORWARD


@dataclass(frozen=True)
class TensorPlan:
    name: str
    n_elements: int
    base_type: str
    work_type: str
    trained: bool

    @property
    def converted(self) -> bool:
        return not self.trained and self.work_type != self.base_type


@dataclass
class WorkPlan:
    """Per tensor of the base: its type in the working copy. `unchanged` means the base itself is trained."""

    tensors: list[TensorPlan]
    lean: bool = False  # frozen matrices on the backward path in Q8_0 instead of F32, to fit in memory
    tied: bool = False  # no output.weight: the head is token_embd, which llama.cpp never trains

    @property
    def unchanged(self) -> bool:
        return all(t.work_type == t.base_type for t in self.tensors)

    @property
    def trained(self) -> list[TensorPlan]:
        return [t for t in self.tensors if t.trained]

    @property
    def converted(self) -> dict[str, int]:
        """'Q4_K->Q8_0' -> tensor count."""
        out: dict[str, int] = {}
        for t in self.tensors:
            if t.converted:
                key = f"{t.base_type}->{t.work_type}"
                out[key] = out.get(key, 0) + 1
        return out

    def work_bytes(self) -> int:
        return sum(tensor_nbytes(t.work_type, t.n_elements) for t in self.tensors)

    def frozen_bytes(self) -> int:
        return sum(tensor_nbytes(t.work_type, t.n_elements) for t in self.tensors if not t.trained)

    def digest(self) -> str:
        text = ";".join(f"{t.name}:{t.work_type}" for t in self.tensors)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def tensor_nbytes(type_name: str, n_elements: int) -> int:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]]
    return n_elements // block * size


def plan(reader: Any, trained: set[str], *, gpu: bool = False, lean: bool = False) -> WorkPlan:
    blocks = [b for b in map(block_of, trained) if b is not None]
    first = min(blocks) if blocks else None  # the backward pass runs from here to the output

    # a model without output.weight ties its head to token_embd: then token_embd is the head's matrix too
    tied = not any(t.name == "output.weight" for t in reader.tensors)

    def in_backward(name: str) -> bool:
        block = block_of(name)
        if block is None:
            return (name.startswith("output.") or (tied and name == "token_embd.weight")) and bool(trained)
        return first is not None and block >= first

    tensors = []
    for tensor in reader.tensors:
        base_type = tensor.tensor_type.name
        if tensor.name in trained:
            work_type = "F32"
        else:
            matrix = len(tensor.shape) > 1 and (tied or tensor.name != "token_embd.weight")  # else only rows read
            work_type = frozen_type(base_type, in_backward=in_backward(tensor.name), gpu=gpu, matrix=matrix, lean=lean)
        tensors.append(TensorPlan(tensor.name, int(tensor.n_elements), base_type, work_type, tensor.name in trained))
    return WorkPlan(tensors, lean=lean, tied=tied)


def _convert(data: np.ndarray, src: Any, dst_name: str) -> tuple[tuple[int, ...], Any, Callable[[], np.ndarray], Any]:
    """(shape, dtype, producer, ggml type) for gguf's writer: `data` as stored, converted to `dst_name`."""
    import gguf

    dst = gguf.GGMLQuantizationType[dst_name]
    shape = data.shape if data.dtype != np.uint8 else gguf.quant_shape_from_byte_shape(data.shape, src)
    if dst == src:
        return data.shape, data.dtype, lambda: data, (None if src.value in (0, 1) else src)

    def f32() -> np.ndarray:
        return gguf.dequantize(data, src).astype(np.float32, copy=False).reshape(shape)

    if dst == gguf.GGMLQuantizationType.F32:
        return tuple(shape), np.float32, f32, None
    if dst == gguf.GGMLQuantizationType.F16:
        return tuple(shape), np.float16, lambda: f32().astype(np.float16), None
    packed_shape = gguf.quant_shape_to_byte_shape(tuple(shape), dst)
    return tuple(packed_shape), np.uint8, lambda: quantize(f32(), dst_name), dst


def _check_dequantizable(reader: Any, work: WorkPlan, src: Path) -> None:
    import gguf

    bad = sorted({t.base_type for t in work.tensors if t.work_type != t.base_type
                  and not _can_dequantize(gguf.GGMLQuantizationType[t.base_type])})
    if bad:
        raise FinetuneError(
            f"{src}: tensors of type {', '.join(bad)} would have to be dequantized, which the gguf package "
            "cannot do; choose --train so that they stay frozen, or convert the original weights with "
            "convert_hf_to_gguf.py --outtype f32")


def write_working_copy(src: str | os.PathLike[str], work: WorkPlan, dst: str | os.PathLike[str]) -> Path:
    """Write `dst`: `src` with each tensor in its planned type (streamed: one tensor in memory at a time)."""
    reader = open_reader(src)
    _check_dequantizable(reader, work, Path(src))
    types = {t.name: t.work_type for t in work.tensors}
    log.info("%s: working copy %s (%.1f MiB): %d tensors to F32 for training, conversions %s", src, dst,
             work.work_bytes() / 2**20, len(work.trained), work.converted or "none")
    del reader
    return rewrite_gguf(src, dst, tensor_rewrite=lambda name, t, data: _convert(data, t, types[name]))


CACHE_MAX_AGE_DAYS = 30  # a working copy unused this long is removed
CACHE_MAX_BYTES = 20 * 2**30  # beyond this, the least recently used copies are removed


def cache_dir() -> Path:
    """Where working copies live: `work` in the cache (`_fs.cache_home`: `$XDG_CACHE_HOME/jenova-fast`, else
    `~/.cache/jenova-fast`); never beside a base that may sit in a read-only or package folder."""
    return _fs.cache_home() / "work"


def cache_usage() -> tuple[int, int]:
    """(files, bytes) of the working copies in the cache."""
    files = list(cache_dir().glob("*.gguf"))
    return len(files), sum(f.stat().st_size for f in files if f.is_file())


def _remove_unless_held(path: Path) -> bool:
    """Remove a working copy unless a run holds it (`held`): unlinked under an exclusive lock, so that a run
    that locks it after the check finds the file gone, not half of it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("keeping the working copy %s: another run is training on it", path)
            return False
        path.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)


def clean_cache(*, now: float | None = None) -> list[Path]:
    """Remove working copies unused for CACHE_MAX_AGE_DAYS, then the least recently used ones while the cache
    holds more than CACHE_MAX_BYTES; copies a run holds (`held`) stay. Returns what was removed."""
    import time

    now = time.time() if now is None else now
    entries = sorted((f.stat().st_mtime, f.stat().st_size, f) for f in cache_dir().glob("*.gguf") if f.is_file())
    total = sum(size for _, size, _ in entries)
    removed = []
    for mtime, size, path in entries:  # oldest first
        if now - mtime > CACHE_MAX_AGE_DAYS * 86400 or total > CACHE_MAX_BYTES:
            if _remove_unless_held(path):
                log.info("removed the working copy %s (unused for %.0f days)", path, (now - mtime) / 86400)
                total -= size
                removed.append(path)
    return removed


def _base_key(base: Path) -> str:
    """Names the base in the cache: its resolved path, size and modification time."""
    stat = base.stat()
    text = f"{base.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return f"{base.stem}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def working_copy(base: Path, work: WorkPlan) -> Path:
    """The base itself when nothing changes, else a working copy in the cache (`cache_dir`), named by the
    base and the plan, reused while the base is unchanged; other plans' copies of the same base are removed
    (one per base), and the cache is kept within its age and size limits."""
    if work.unchanged:
        return base
    key = _base_key(base)
    copy = cache_dir() / f"{key}.work-{work.digest()}.gguf"
    if copy.is_file():
        log.info("reusing the working copy %s", copy)
        os.utime(copy)  # its last use, for the cache's age limit
        return copy
    for stale in cache_dir().glob(f"{key}.work-*.gguf"):
        if _remove_unless_held(stale):
            log.info("removed the working copy of another --train choice: %s", stale)
    clean_cache()
    try:
        copy.parent.mkdir(parents=True, exist_ok=True)
        return write_working_copy(base, work, copy)
    except OSError as exc:  # a read-only folder, a full disk, a file size limit
        raise FinetuneError(
            f"{copy}: cannot write the working copy ({exc.strerror or exc}); it needs "
            f"{work.work_bytes() / 2**20:.1f} MiB in the cache folder {cache_dir()}: free space there, or "
            "set XDG_CACHE_HOME to a writable folder with room") from exc


@contextlib.contextmanager
def held(base: Path, work: WorkPlan) -> Iterator[Path]:
    """`working_copy`, held for the run: a shared lock on it while the run uses it keeps other runs (another
    --train choice on the same base, the cache's limits) from removing it."""
    for _ in range(3):
        path = working_copy(base, work)
        if path == base:
            yield base
            return
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # removed by another run between its writing and this open
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            opened = os.fstat(fd)
            try:
                now = path.stat()
            except FileNotFoundError:
                continue
            if (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino):  # not removed before the lock
                yield path
                return
        finally:
            os.close(fd)
    raise FinetuneError(f"{cache_dir()}: the working copy of {base} was removed three times while this run "
                        "made it; another run is cleaning the cache: run again")


def _can_dequantize(qtype: Any) -> bool:
    import gguf

    if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16):
        return True
    quant = gguf.quants._type_traits.get(qtype)  # the registry of types gguf implements in numpy
    return quant is not None and "dequantize_blocks" in vars(quant)


# ---- the way back: quantize trained tensors with ggml's own quantizer ----

def _ggml() -> Any:
    return engine("stock")  # one quantizer, whichever engine trained: the same pinned ggml


def quantize(f32: np.ndarray, type_name: str) -> np.ndarray:
    """Rows of `f32` quantized to `type_name` by libggml (bytes as gguf stores them)."""
    import gguf

    qtype = gguf.GGMLQuantizationType[type_name]
    rows = np.ascontiguousarray(f32, dtype=np.float32).reshape(-1, f32.shape[-1])
    out = np.empty(gguf.quant_shape_to_byte_shape(rows.shape, qtype), dtype=np.uint8)
    _ggml().ggml_quantize_chunk(int(qtype), rows.ctypes.data, out.ctypes.data, 0, rows.shape[0], rows.shape[1],
                                None)
    return out.reshape(gguf.quant_shape_to_byte_shape(f32.shape, qtype))


def requantize_type(requested: str, base_type: str, row: int, ndim: int) -> str:
    """The type a trained tensor is written in: `base` means its type in the base. Vectors stay F32; a row
    the type's blocks do not divide falls back to Q8_0 (then F16), as llama-quantize does."""
    import gguf

    if ndim < 2 or requested == "F32":
        return "F32"
    name = base_type if requested == "base" else requested
    for candidate in (name, "Q8_0", "F16"):
        block, _ = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[candidate]]
        if row % block == 0:
            return candidate
    return "F32"


def check_requantize(requested: str | None) -> None:
    import gguf

    if requested in (None, "base"):
        return
    assert requested is not None
    try:
        qtype = gguf.GGMLQuantizationType[requested.upper()]
    except KeyError:
        qtype = None
    if qtype is None or _ggml().ggml_quantize_requires_imatrix(int(qtype)):
        raise FinetuneError(
            f"--requantize {requested!r}: use 'base' (each trained tensor back to its type in the base) or a "
            "ggml type that needs no importance matrix: Q8_0, Q6_K, Q5_K, Q4_K, Q5_0, Q4_0, F16, F32")


def assemble(trained: str | os.PathLike[str], base: str | os.PathLike[str], work: WorkPlan,
             out: str | os.PathLike[str], *, requantize: str | None, set_from: dict[str, Any]) -> dict[str, str]:
    """Write `out`: the trainer's keys plus `set_from`, frozen tensors byte for byte from `base`, trained
    tensors from `trained` (F32, or quantized per `requantize`). Returns name -> written type of the
    trained tensors."""
    import gguf

    base_reader = open_reader(base)
    base_tensors = {t.name: t for t in base_reader.tensors}
    plans = {t.name: t for t in work.tensors}
    written: dict[str, str] = {}

    def rewrite(name: str, ggml_type: Any, data: np.ndarray) -> tuple[Any, Any, Any, Any]:
        p = plans.get(name)
        if p is None or not p.trained:
            original = base_tensors[name]
            qtype = original.tensor_type
            return (original.data.shape, original.data.dtype, lambda: original.data,
                    None if qtype.value in (0, 1) else qtype)
        if requantize is None:
            return _convert(data, ggml_type, "F32")
        shape = data.shape
        target = requantize_type(requantize.upper() if requantize != "base" else "base", p.base_type,
                                 int(shape[-1]), len(shape))
        written[name] = target
        return _convert(data, gguf.GGMLQuantizationType.F32, target)

    rewrite_gguf(trained, out, set_from=set_from, tensor_rewrite=rewrite)
    return written
