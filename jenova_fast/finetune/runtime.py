"""llama.cpp as llama-cpp-python installs it: import it or say how to get it, load models, make contexts.

Everything here goes through llama-cpp-python's own ctypes bindings (`llama_cpp.llama_cpp`), which match
the libllama they ship; only the training entry points need declarations of our own (`train_inprocess`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jenova_fast import _fs
from jenova_fast.finetune.errors import FinetuneError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'jenova-fast[finetune]'"
# the struct layouts used here (llama_model_params.load_mode, llama_opt_params.optimizer_type, ...) are
# those of llama.cpp as vendored by this release; older bindings would silently misplace fields
MIN_LLAMA_CPP_PYTHON = (0, 3, 36)
GGML_TYPE_F32 = 0
LLAMA_LOAD_MODE_NONE = 0  # plain reads into writable buffers; training needs writable weights
LLAMA_FLASH_ATTN_TYPE_DISABLED = 0  # FLASH_ATTN_EXT has no backward pass
GGML_BACKEND_DEVICE_TYPE_GPU = 1  # enum ggml_backend_dev_type


_LLAMA_LOG = logging.getLogger("jenova_fast.finetune.llama_cpp")
# enum ggml_log_level -> logging level; llama.cpp's INFO chatter is DEBUG here, its warnings stay warnings.
# 5 (CONT) continues the previous message.
_LEVELS = {0: logging.CRITICAL, 1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
_log_callback: Any = None
_last_level = [logging.DEBUG]


def llama_cpp_module() -> Any:
    """`llama_cpp.llama_cpp` (the raw bindings), or a FinetuneError naming the install command.
    llama.cpp's own log goes to `logging` (llama-cpp-python would print it to stderr)."""
    global _log_callback
    try:
        import gguf  # noqa: F401  (needed by every step; fail here, once, with the same hint)
        import llama_cpp.llama_cpp as lc
    except ImportError as exc:
        raise FinetuneError(
            f"fine-tuning needs llama-cpp-python and gguf ({exc}); install them with: {INSTALL_HINT} "
            "(llama-cpp-python builds llama.cpp from source, about 7 minutes on 2 cores)"
        ) from exc
    import llama_cpp

    version = tuple(int(part) for part in llama_cpp.__version__.split(".")[:3] if part.isdigit())
    if version < MIN_LLAMA_CPP_PYTHON:
        raise FinetuneError(
            f"llama-cpp-python {llama_cpp.__version__} is too old for in-process training (its llama.cpp "
            f"structs differ); upgrade with: pip install -U 'llama-cpp-python>="
            f"{'.'.join(map(str, MIN_LLAMA_CPP_PYTHON))}'"
        )
    if _log_callback is None:
        import ctypes

        @lc.llama_log_callback
        def route(level: int, text: bytes, _userdata: Any) -> None:
            _last_level[0] = py_level = _LEVELS.get(level, _last_level[0])
            message = text.decode("utf-8", "replace").rstrip()
            if message and _LLAMA_LOG.isEnabledFor(py_level):
                _LLAMA_LOG.log(py_level, "%s", message)

        _log_callback = route  # must outlive every call into llama.cpp
        lc.llama_log_set(route, ctypes.c_void_p(0))
    return lc


def library_dir() -> Path:
    """The folder with libllama.so and libggml-base.so shipped inside llama-cpp-python."""
    lc = llama_cpp_module()
    return Path(lc.__file__).parent / "lib"


def check_gpu_offload() -> None:
    """--gpu-layers needs a llama-cpp-python built with a GPU backend; say how to get one."""
    if not llama_cpp_module().llama_supports_gpu_offload():
        raise FinetuneError(
            "--gpu-layers: this llama-cpp-python has no GPU backend; rebuild it with one, e.g. "
            "CMAKE_ARGS=\"-DGGML_CUDA=on\" pip install --force-reinstall --no-cache-dir 'llama-cpp-python>=0.3.36' "
            "(-DGGML_METAL=on on a Mac, -DGGML_VULKAN=on for Vulkan), or leave --gpu-layers at 0")


@dataclass(frozen=True)
class Device:
    name: str
    free: int  # bytes
    total: int


def gpu_devices() -> list[Device]:
    """The GPUs llama.cpp's backends see (none in a CPU build), with their free memory, through libggml's
    device registry: what `--gpu-layers` will use."""
    llama_cpp_module().llama_backend_init()
    ggml = ctypes.CDLL(str(library_dir() / "libggml.so"))
    p, size = ctypes.c_void_p, ctypes.c_size_t
    for name, argtypes, restype in (("ggml_backend_dev_count", [], size), ("ggml_backend_dev_get", [size], p),
                                    ("ggml_backend_dev_type", [p], ctypes.c_int),
                                    ("ggml_backend_dev_name", [p], ctypes.c_char_p),
                                    ("ggml_backend_dev_memory", [p, ctypes.POINTER(size), ctypes.POINTER(size)], None)):
        fn = getattr(ggml, name)
        fn.argtypes, fn.restype = argtypes, restype
    devices = []
    for i in range(ggml.ggml_backend_dev_count()):
        dev = ggml.ggml_backend_dev_get(i)
        if ggml.ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_GPU:
            free, total = ctypes.c_size_t(), ctypes.c_size_t()
            ggml.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
            devices.append(Device(ggml.ggml_backend_dev_name(dev).decode("utf-8", "replace"), free.value, total.value))
    return devices


def pick_threads(requested: int | None) -> int:
    cores = _fs.available_cores()
    if requested is None or requested <= 0:
        return cores
    if requested > cores:
        log.warning("--threads %d is more than the %d free cores; using %d (oversubscribing is 30-60x slower)",
                    requested, cores, cores)
        return cores
    return requested


@contextlib.contextmanager
def load_model(path: str | os.PathLike[str], *, writable: bool = False, vocab_only: bool = False,
               gpu_layers: int = 0) -> Iterator[Any]:
    """A `llama_model *`, freed on exit. `writable` loads for training: without mmap, and without the CPU
    backend's weight repacking (a repacked frozen Q4_0/Q4_K matrix has no backend for the backward pass's
    OUT_PROD, and ggml aborts). `gpu_layers` as llama.cpp's n_gpu_layers (-1: all)."""
    lc = llama_cpp_module()
    lc.llama_backend_init()
    params = lc.llama_model_default_params()
    params.vocab_only = vocab_only
    params.n_gpu_layers = gpu_layers
    if writable:
        params.load_mode = LLAMA_LOAD_MODE_NONE
        params.use_extra_bufts = False
    model = lc.llama_model_load_from_file(os.fsencode(path), params)
    if not model:
        raise FinetuneError(f"{path}: llama.cpp could not load this model; check it with `python -m gguf.scripts"
                            ".gguf_dump {path}` and convert it again with a current convert_hf_to_gguf.py")
    try:
        yield model
    finally:
        lc.llama_model_free(model)


@contextlib.contextmanager
def new_context(model: Any, n_ctx: int, n_threads: int, *, training: bool = False) -> Iterator[Any]:
    """A `llama_context *` with ctx == batch == ubatch (what training and whole-window scoring need)."""
    lc = llama_cpp_module()
    params = lc.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = n_ctx
    params.n_threads = params.n_threads_batch = n_threads
    params.no_perf = True
    if training:
        params.type_k = params.type_v = GGML_TYPE_F32  # OUT_PROD has no F16 support
        params.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED
    ctx = lc.llama_init_from_model(model, params)
    if not ctx:
        raise FinetuneError(f"llama.cpp could not create a context of {n_ctx} tokens; lower --ctx")
    try:
        yield ctx
    finally:
        lc.llama_free(ctx)


def tokenize(model: Any, text: str, *, parse_special: bool = True, add_bos: bool = False) -> np.ndarray:
    """Token ids (int32). Special tokens are parsed by default, so `</s>` or `<|im_end|>` become single real
    tokens; no BOS by default (the caller decides, as templates often write it themselves)."""
    lc = llama_cpp_module()
    vocab = lc.llama_model_get_vocab(model)
    data = text.encode("utf-8")
    n_max = len(data) + 16
    for _ in range(2):
        buf = (lc.llama_token * n_max)()
        n = lc.llama_tokenize(vocab, data, len(data), buf, n_max, add_bos, parse_special)
        if n >= 0:
            return np.frombuffer(buf, dtype=np.int32, count=n).copy()
        n_max = -n
    raise FinetuneError("llama.cpp's tokenizer failed on a rendered record")


def special_tokens(model: Any) -> tuple[int, int, bool, str, str]:
    """(bos id, eos id, whether the model wants a BOS first, BOS text, EOS text)."""
    lc = llama_cpp_module()
    vocab = lc.llama_model_get_vocab(model)
    bos, eos = lc.llama_vocab_bos(vocab), lc.llama_vocab_eos(vocab)

    def text(token: int) -> str:
        if token < 0:
            return ""
        raw = lc.llama_vocab_get_text(vocab, token)
        return raw.decode("utf-8", "replace") if raw else ""

    return bos, eos, bool(lc.llama_vocab_get_add_bos(vocab)), text(bos), text(eos)
