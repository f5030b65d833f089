"""The llama.cpp a training runs on, and the C declarations training needs.

Two engines share one API: `patched` (libjenova-llama from `jenova-fast engine build`: llama.cpp and ggml in one
library, with our patches) and `stock` (the libllama/libggml that llama-cpp-python installs). The llama_* functions
take llama-cpp-python's own ctypes signatures, which match both, since both are built from the same pinned commit;
the training entry points llama-cpp-python lacks or declares wrongly are declared here.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jenova_fast.engine import build, pin
from jenova_fast.engine.build import EngineError

log = logging.getLogger(__name__)

EngineKind = Literal["patched", "stock"]
ENGINES = ("auto", "patched", "stock")
MIN_LLAMA_CPP_PYTHON = (0, 3, 36)  # the struct layouts here are those of the llama.cpp it vendors
INSTALL_HINT = "pip install 'jenova-fast[finetune]'"
BUILD_HINT = "jenova-fast engine build"
# what a user gives up on the stock engine, said once when it is chosen for them
STOCK_LIMITS = ("every token is trained (no --loss answer: the question as hard as the answer), LayerNorm/GELU "
                "models (phi-2, gpt2, falcon, ...) train their head only, and the backward pass runs as axpys")


class _AdamW(ctypes.Structure):
    _fields_ = [("alpha", ctypes.c_float), ("beta1", ctypes.c_float), ("beta2", ctypes.c_float),
                ("eps", ctypes.c_float), ("wd", ctypes.c_float)]


class _SGD(ctypes.Structure):
    _fields_ = [("alpha", ctypes.c_float), ("wd", ctypes.c_float)]


class OptimizerParams(ctypes.Structure):
    """struct ggml_opt_optimizer_params (ggml-opt.h)."""

    _fields_ = [("adamw", _AdamW), ("sgd", _SGD)]


class LlamaOptParams(ctypes.Structure):
    """struct llama_opt_params (llama.h), with the trailing `optimizer_type` llama-cpp-python 0.3.36 omits."""

    _fields_ = [
        ("n_ctx_train", ctypes.c_uint32),
        ("param_filter", ctypes.c_void_p),
        ("param_filter_ud", ctypes.c_void_p),
        ("get_opt_pars", ctypes.c_void_p),
        ("get_opt_pars_ud", ctypes.c_void_p),
        ("optimizer_type", ctypes.c_int),
    ]


OPTIMIZERS = {"adamw": 0, "sgd": 1}  # enum ggml_opt_optimizer_type
# void (*ggml_opt_epoch_callback)(bool train, ggml_opt_context_t, ggml_opt_dataset_t, ggml_opt_result_t,
#                                 int64_t ibatch, int64_t ibatch_max, int64_t t_start_us)
EpochCallback = ctypes.CFUNCTYPE(None, ctypes.c_bool, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                 ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)
# bool (*llama_opt_param_filter)(const struct ggml_tensor *, void * userdata)
ParamFilter = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_void_p)

_p, _i64, _int, _size = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_size_t
# functions llama-cpp-python does not declare (or declares wrongly): name -> (argtypes, restype)
_DECLARED: dict[str, tuple[list[Any], Any]] = {
    "llama_opt_init": ([_p, _p, LlamaOptParams], None),
    "llama_opt_epoch": ([_p, _p, _p, _p, _i64, EpochCallback, EpochCallback], None),
    "llama_model_save_to_file": ([_p, ctypes.c_char_p], None),
    "ggml_opt_dataset_init": ([_int, _int, _i64, _i64, _i64, _i64], _p),
    "ggml_opt_dataset_free": ([_p], None),
    "ggml_opt_dataset_data": ([_p], _p),
    "ggml_opt_dataset_labels": ([_p], _p),
    "ggml_get_data": ([_p], _p),
    "ggml_get_name": ([_p], ctypes.c_char_p),
    "ggml_nbytes": ([_p], _size),
    "ggml_nelements": ([_p], _i64),
    "ggml_opt_result_init": ([], _p),
    "ggml_opt_result_free": ([_p], None),
    "ggml_opt_result_reset": ([_p], None),
    "ggml_opt_result_loss": ([_p, ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_double)], None),
    "ggml_opt_result_pred": ([_p, ctypes.POINTER(ctypes.c_int32)], None),
    "ggml_opt_get_default_optimizer_params": ([_p], OptimizerParams),
    "ggml_quantize_chunk": ([_int, _p, _p, _i64, _i64, _i64, _p], _size),
    "ggml_quantize_requires_imatrix": ([_int], ctypes.c_bool),
    "ggml_backend_tensor_get": ([_p, _p, _size, _size], None),
    "ggml_backend_tensor_set": ([_p, _p, _size, _size], None),
    "ggml_backend_dev_count": ([], _size),
    "ggml_backend_dev_get": ([_size], _p),
    "ggml_backend_dev_type": ([_p], _int),
    "ggml_backend_dev_name": ([_p], ctypes.c_char_p),
    "ggml_backend_dev_memory": ([_p, ctypes.POINTER(_size), ctypes.POINTER(_size)], None),
    "jenova_engine_patches": ([], ctypes.c_char_p),
    "jenova_engine_use_blas": ([_p, _int, _p], None),
    "jenova_engine_checkpoints": ([ctypes.c_char_p], None),
}
CHECKPOINTS = b"l_out-"  # llama.cpp's name for each block's output: what patch 0006 keeps
# cblas_sgemm of the OpenBLAS builds numpy's wheels bundle (scipy-openblas), and whether its integers are 64-bit
_SGEMMS = (("scipy_cblas_sgemm64_", True), ("scipy_cblas_sgemm", False), ("cblas_sgemm64_", True))
_THREADS_LOCAL = ("openblas_set_num_threads_local", "scipy_openblas_set_num_threads_local64_")
BLAS_OFF = "JENOVA_FAST_BLAS"  # =0: the patched engine's F32 products on ggml's own kernels

_LLAMA_LOG = logging.getLogger("jenova_fast.finetune.llama_cpp")
# enum ggml_log_level -> logging level; llama.cpp's INFO chatter is DEBUG here, its warnings stay warnings.
# 5 (CONT) continues the previous message.
_LEVELS = {0: logging.CRITICAL, 1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
_last_level = [logging.DEBUG]


def bindings() -> Any:
    """llama-cpp-python's raw bindings (`llama_cpp.llama_cpp`): the struct types and signatures, or an
    EngineError naming the install command."""
    try:
        import gguf  # noqa: F401  (needed by every fine-tuning step; fail here, once, with the same hint)
        import llama_cpp
        import llama_cpp.llama_cpp as lc
    except ImportError as exc:
        raise EngineError(
            f"fine-tuning needs llama-cpp-python and gguf ({exc}); install them with: {INSTALL_HINT} "
            "(llama-cpp-python builds llama.cpp from source, about 7 minutes on 2 cores)") from exc
    version = tuple(int(part) for part in llama_cpp.__version__.split(".")[:3] if part.isdigit())
    if version < MIN_LLAMA_CPP_PYTHON:
        raise EngineError(
            f"llama-cpp-python {llama_cpp.__version__} is too old for in-process training (its llama.cpp structs "
            f"differ); upgrade with: pip install -U 'llama-cpp-python>={'.'.join(map(str, MIN_LLAMA_CPP_PYTHON))}'")
    return lc


@dataclass(frozen=True)
class Blas:
    """The OpenBLAS the patched engine's F32 products run on (patch 0005)."""

    path: Path
    sgemm: str  # cblas_sgemm's name there
    ilp64: bool  # its integers are 64-bit
    threads_local: str  # openblas_set_num_threads_local's name there


def find_blas() -> Blas | None:
    """numpy's own OpenBLAS (its wheels bundle one; the same library numpy has loaded, so no second copy or thread
    pool), or a scipy-openblas package's; None where there is none or JENOVA_FAST_BLAS=0."""
    if os.environ.get(BLAS_OFF, "1") == "0":
        return None
    import numpy

    folders = [Path(numpy.__file__).parent.parent / "numpy.libs", Path(numpy.__file__).parent / ".dylibs"]
    for package in ("scipy_openblas64", "scipy_openblas32"):
        try:
            folders.append(Path(importlib.import_module(package).get_lib_dir()))
        except (ImportError, AttributeError):
            continue
    for folder in folders:
        for path in sorted(folder.glob("*openblas*")) if folder.is_dir() else []:
            try:
                library = ctypes.CDLL(str(path))
            except OSError:
                continue
            local = next((name for name in _THREADS_LOCAL if hasattr(library, name)), None)
            for sgemm, ilp64 in _SGEMMS:
                if local and hasattr(library, sgemm):
                    return Blas(path, sgemm, ilp64, local)
    return None


class Engine:
    """One loaded llama.cpp, used as llama-cpp-python's raw bindings are: `engine.llama_model_load_from_file(...)`,
    `engine.llama_batch`, `engine.LLAMA_FTYPE_MOSTLY_Q8_0`, bound to this engine's libraries."""

    def __init__(self, kind: EngineKind, llama: ctypes.CDLL, ggml: ctypes.CDLL, backends: ctypes.CDLL,
                 folder: Path, manifest: dict[str, Any]) -> None:
        self.kind, self.folder, self.manifest = kind, folder, manifest
        self.blas: Blas | None = None  # the patched engine's F32 products run on it (patch 0005)
        self._llama, self._ggml, self._backends = llama, ggml, backends
        self._lc = bindings()
        self._log_callback = self._route_log()
        self.llama_backend_init()

    def __getattr__(self, name: str) -> Any:
        """A C function of this engine with its signature, bound once."""
        if name.startswith("_"):
            raise AttributeError(name)
        if name in _DECLARED:
            argtypes, restype = _DECLARED[name]
        else:
            reference = getattr(self._lc, name)  # llama-cpp-python's declaration of the same commit
            if isinstance(reference, type) or not callable(reference):
                return reference  # a struct type, a callback type, a constant
            argtypes, restype = list(reference.argtypes or []), reference.restype
        if name.startswith("llama_"):
            library = self._llama
        elif name.startswith("ggml_backend_dev"):
            library = self._backends
        else:
            library = self._ggml
        function = getattr(library, name)
        function.argtypes, function.restype = argtypes, restype
        setattr(self, name, function)
        return function

    def _route_log(self) -> Any:
        """llama.cpp's log goes to `logging` (it would print to stderr)."""

        @self._lc.llama_log_callback
        def route(level: int, text: bytes, _userdata: Any) -> None:
            _last_level[0] = py_level = _LEVELS.get(level, _last_level[0])
            message = text.decode("utf-8", "replace").rstrip()
            if message and _LLAMA_LOG.isEnabledFor(py_level):
                _LLAMA_LOG.log(py_level, "%s", message)

        self.llama_log_set(route, ctypes.c_void_p(0))
        return route  # must outlive every call into llama.cpp

    def use_blas(self, blas: Blas | None) -> None:
        """Run the patched engine's F32 products on `blas`, or on ggml's own kernels (None). Takes effect for the
        training contexts made after it: their backward graph is built for one or the other."""
        if blas is None:
            self.jenova_engine_use_blas(None, 0, None)
        else:
            library = ctypes.CDLL(str(blas.path))
            self.jenova_engine_use_blas(ctypes.cast(getattr(library, blas.sgemm), ctypes.c_void_p), int(blas.ilp64),
                                        ctypes.cast(getattr(library, blas.threads_local), ctypes.c_void_p))
        self.blas = blas

    @contextlib.contextmanager
    def checkpoints(self, on: bool) -> Iterator[None]:
        """While inside, with `on`: the training graphs built keep only each block's output from the forward pass
        and compute the rest again in the backward pass (patch 0006)."""
        if not on:
            yield
            return
        if self.kind != "patched":
            raise EngineError(f"recomputing activations needs the patched engine; run: {BUILD_HINT}")
        self.jenova_engine_checkpoints(CHECKPOINTS)
        try:
            yield
        finally:
            self.jenova_engine_checkpoints(None)

    def constant_optimizer_params(self) -> int:
        """The address of ggml_opt_get_constant_optimizer_params: it returns the params struct we pass as
        userdata, which we may change between steps."""
        address = ctypes.cast(self._ggml.ggml_opt_get_constant_optimizer_params, ctypes.c_void_p).value
        assert address is not None
        return address


def blas_line() -> str:
    """What the patched engine's F32 products run on, for the plan line and `engine status`."""
    blas = find_blas()
    if blas is not None:
        return f"F32 products on OpenBLAS, {blas.path.name}"
    why = f"{BLAS_OFF}=0" if os.environ.get(BLAS_OFF, "1") == "0" else "no OpenBLAS beside numpy"
    return f"F32 products on ggml's own kernels ({why})"


@dataclass(frozen=True)
class Choice:
    """The engine a run uses and why (said on the plan line)."""

    kind: EngineKind
    reason: str


def choose(requested: str = "auto") -> Choice:
    """`auto`: patched when built, else stock (and say what stock cannot do); `patched` must be built."""
    if requested not in ENGINES:
        raise EngineError(f"--engine {requested!r}: choose one of {', '.join(ENGINES)}")
    if requested == "stock":
        return Choice("stock", "given with --engine")
    done = build.find()
    if done is not None:
        return Choice("patched", ("built" if requested == "auto" else "given with --engine") + "; " + blas_line())
    if requested == "patched":
        raise EngineError(f"--engine patched: the patched engine is not built for this version; run: {BUILD_HINT} "
                          "(2-3 minutes on 2 idle cores, once), or use --engine stock")
    return Choice("stock", f"the patched engine is not built ({BUILD_HINT}, once, adds it): {STOCK_LIMITS}")


_loaded: dict[EngineKind, Engine] = {}


def load(kind: EngineKind) -> Engine:
    """The engine of that kind, loaded once per process."""
    if kind in _loaded:
        return _loaded[kind]
    lc = bindings()
    if kind == "stock":
        folder = Path(lc.__file__).parent / "lib"
        # the libraries llama-cpp-python loaded (the same handles), with function objects of our own
        engine = Engine("stock", ctypes.CDLL(str(folder / "libllama.so")), ctypes.CDLL(str(folder / "libggml-base.so")),
                        ctypes.CDLL(str(folder / "libggml.so")), folder, {})
    else:
        import llama_cpp

        if llama_cpp.__version__ != pin.LLAMA_CPP_PYTHON:  # its declarations must match the library's structs
            raise EngineError(f"the patched engine is llama.cpp as llama-cpp-python {pin.LLAMA_CPP_PYTHON} vendors it, "
                              f"but llama-cpp-python {llama_cpp.__version__} is installed; install the pinned one "
                              f"(pip install 'llama-cpp-python=={pin.LLAMA_CPP_PYTHON}') or use --engine stock")
        done = build.find()
        if done is None:
            raise EngineError(f"the patched engine is not built; run: {BUILD_HINT}")
        library = ctypes.CDLL(str(done.library), mode=ctypes.RTLD_LOCAL)
        engine = Engine("patched", library, library, library, done.folder, done.manifest)
        compiled = engine.jenova_engine_patches().decode()
        if compiled != done.manifest.get("key"):
            raise EngineError(f"{done.library} was built for patch set {compiled}, not {done.manifest.get('key')}; "
                              f"rebuild it: {BUILD_HINT} --force")
        engine.use_blas(find_blas())
    _loaded[kind] = engine
    return engine
