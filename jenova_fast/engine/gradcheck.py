"""Each backward pass the patches add or change, against central finite differences of ggml's own forward pass.

A falling loss is not proof that a gradient is right; this is. Every case builds a tiny ggml graph in the built
library, `loss = sum(w * op(x...))` with random `w`, takes ggml's gradient of every input and compares it, element
by element, with (loss(x + eps) - loss(x - eps)) / 2 eps computed by the same library's forward pass.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jenova_fast.engine.library import load

GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_Q8_0 = 0, 1, 8
_p, _i64, _f = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float


class _InitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


_SIGNATURES: dict[str, tuple[list[Any], Any]] = {
    "ggml_init": ([_InitParams], _p),
    "ggml_free": ([_p], None),
    "ggml_new_tensor_2d": ([_p, ctypes.c_int, _i64, _i64], _p),
    "ggml_new_tensor_3d": ([_p, ctypes.c_int, _i64, _i64, _i64], _p),
    "ggml_set_param": ([_p], None),
    "ggml_set_loss": ([_p], None),
    "ggml_new_graph_custom": ([_p, ctypes.c_size_t, ctypes.c_bool], _p),
    "ggml_build_forward_expand": ([_p, _p], None),
    "ggml_build_backward_expand": ([_p, _p, _p], None),
    "ggml_graph_reset": ([_p], None),
    "ggml_graph_get_grad": ([_p, _p], _p),
    "ggml_graph_compute_with_ctx": ([_p, _p, ctypes.c_int], ctypes.c_int),
    "ggml_quantize_chunk": ([ctypes.c_int, _p, _p, _i64, _i64, _i64, _p], ctypes.c_size_t),
    "ggml_get_data": ([_p], _p),
    "ggml_nbytes": ([_p], ctypes.c_size_t),
    "ggml_mul": ([_p, _p, _p], _p),
    "ggml_sum": ([_p, _p], _p),
    "ggml_norm": ([_p, _p, _f], _p),
    "ggml_gelu": ([_p, _p], _p),
    "ggml_gelu_erf": ([_p, _p], _p),
    "ggml_gelu_quick": ([_p, _p], _p),
    "ggml_geglu_split": ([_p, _p, _p], _p),
    "ggml_mul_mat": ([_p, _p, _p], _p),
    "ggml_cross_entropy_loss": ([_p, _p, _p], _p),
    "ggml_view_2d": ([_p, _p, _i64, _i64, ctypes.c_size_t, ctypes.c_size_t], _p),
    "ggml_transpose": ([_p, _p], _p),
    "ggml_cont": ([_p, _p], _p),
}


class Ggml:
    """The ggml graph API of a loaded engine (the patched one unless told otherwise)."""

    def __init__(self, kind: str = "patched") -> None:
        engine = load(kind)  # type: ignore[arg-type]
        self.kind = kind
        # the patched engine is one library; the stock one keeps the CPU backend in a library of its own
        libraries = [engine._ggml] + ([ctypes.CDLL(str(engine.folder / "libggml-cpu.so"))] if kind == "stock" else [])
        for name, (argtypes, restype) in _SIGNATURES.items():
            function = next(getattr(lib, name) for lib in libraries if hasattr(lib, name))
            function.argtypes, function.restype = argtypes, restype
            setattr(self, name, function)

    def __getattr__(self, name: str) -> Any:  # the functions set in __init__, for the type checker
        raise AttributeError(name)


@dataclass(frozen=True)
class Result:
    case: str
    max_error: float  # the largest |ggml - finite difference|, relative to the gradient's scale
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_error <= self.tolerance

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "WRONG"
        return f"{self.case}: max error {self.max_error:.2e} (tolerance {self.tolerance:.0e}) {verdict}"


# builds the op from the input tensors
Build = Callable[[Ggml, Any, Sequence[int]], int]


def _fill(g: Ggml, tensor: int, values: np.ndarray, ggml_type: int) -> None:
    data = g.ggml_get_data(tensor)
    source = np.ascontiguousarray(values, dtype=np.float32)  # kept alive until the copy is done
    if ggml_type == GGML_TYPE_F32:
        ctypes.memmove(data, source.ctypes.data, source.nbytes)
    else:
        g.ggml_quantize_chunk(ggml_type, source.ctypes.data, data, 0, values.shape[0], values.shape[1], None)


def _read_back(g: Ggml, tensor: int, shape: tuple[int, ...], ggml_type: int) -> np.ndarray:
    """An input as the op sees it (a quantized one dequantized), in float64."""
    if ggml_type == GGML_TYPE_F32:
        return _array(g, tensor, shape).astype(np.float64)
    import gguf

    raw = np.ctypeslib.as_array(ctypes.cast(g.ggml_get_data(tensor), ctypes.POINTER(ctypes.c_uint8)),
                                shape=(g.ggml_nbytes(tensor),)).copy()
    qtype = gguf.GGMLQuantizationType(ggml_type)
    return gguf.dequantize(raw.reshape(gguf.quant_shape_to_byte_shape(shape, qtype)), qtype).astype(np.float64)


def _array(g: Ggml, tensor: int, shape: tuple[int, ...]) -> np.ndarray:
    pointer = ctypes.cast(g.ggml_get_data(tensor), ctypes.POINTER(ctypes.c_float))
    return np.ctypeslib.as_array(pointer, shape=shape).copy()


def gradient_errors(shapes: Sequence[tuple[int, int]], op: Build, exact: Exact, *, types: Sequence[int] = (),
                    seed: int = 0, eps: float = 1e-2, kind: str = "patched",
                    finite_differences: bool = True, threads: int = 1, memory_mb: int = 64) -> tuple[float, float]:
    """ggml's gradient of every F32 input against central finite differences and against `exact`: the largest
    difference of each, relative to max(1, |gradient|). Quantized inputs are frozen (as a frozen base weight)."""
    g = Ggml(kind)
    rng = np.random.default_rng(seed)
    ctx = g.ggml_init(_InitParams(memory_mb << 20, None, False))
    try:
        types = list(types) or [GGML_TYPE_F32] * len(shapes)
        # ggml's (ne0, ne1) is numpy's (rows=ne1, cols=ne0)
        values = [rng.standard_normal((ne1, ne0)) for ne0, ne1 in shapes]
        inputs = []
        for (ne0, ne1), value, ggml_type in zip(shapes, values, types, strict=True):
            tensor = g.ggml_new_tensor_2d(ctx, ggml_type, ne0, ne1)
            _fill(g, tensor, value, ggml_type)
            if ggml_type == GGML_TYPE_F32:
                g.ggml_set_param(tensor)
            inputs.append(tensor)
        out = op(g, ctx, inputs)
        out_shape = _shape(g, out)
        weights = g.ggml_new_tensor_2d(ctx, GGML_TYPE_F32, out_shape[1], out_shape[0])
        w = rng.standard_normal(out_shape)
        _fill(g, weights, w, GGML_TYPE_F32)
        seen = [_read_back(g, tensor, value.shape, ggml_type) for tensor, value, ggml_type in zip(inputs, values, types,
                                                                                                 strict=True)]
        loss = g.ggml_sum(ctx, g.ggml_mul(ctx, out, weights))
        g.ggml_set_loss(loss)
        graph = g.ggml_new_graph_custom(ctx, 4096, True)
        g.ggml_build_forward_expand(graph, loss)
        g.ggml_build_backward_expand(ctx, graph, None)

        def evaluate() -> float:
            g.ggml_graph_reset(graph)
            g.ggml_graph_compute_with_ctx(ctx, graph, threads)
            return float(_array(g, loss, (1,))[0])

        evaluate()
        grads = [_array(g, g.ggml_graph_get_grad(graph, tensor), value.shape) if ggml_type == GGML_TYPE_F32 else None
                 for tensor, value, ggml_type in zip(inputs, values, types, strict=True)]
        worst = worst_exact = 0.0
        expected = exact(seen, w.astype(np.float32).astype(np.float64))
        for tensor, value, grad, reference in zip(inputs, values, grads, expected, strict=True):
            if grad is None:
                continue
            assert reference is not None
            worst_exact = max(worst_exact, float(np.max(np.abs(grad - reference) / np.maximum(1.0, np.abs(reference)))))
            if not finite_differences:
                continue
            numeric = np.zeros_like(value)
            for index in np.ndindex(value.shape):
                for sign in (1, -1):
                    moved = value.copy()
                    moved[index] += sign * eps
                    _fill(g, tensor, moved, GGML_TYPE_F32)
                    numeric[index] += sign * evaluate() / (2 * eps)
                _fill(g, tensor, value, GGML_TYPE_F32)
            worst = max(worst, float(np.max(np.abs(grad - numeric) / np.maximum(1.0, np.abs(numeric)))))
        return worst, worst_exact
    finally:
        g.ggml_free(ctx)


def _shape(g: Ggml, tensor: int) -> tuple[int, int]:
    """(ne1, ne0) of a 2-D result, read from the tensor struct (ne is an int64[4] after type and buffer)."""
    # struct ggml_tensor { enum ggml_type type; struct ggml_backend_buffer * buffer; int64_t ne[4]; ... }
    ne = ctypes.cast(tensor + 16, ctypes.POINTER(ctypes.c_int64))
    return int(ne[1]), int(ne[0])


def _unary(name: str) -> Build:
    return lambda g, ctx, x: getattr(g, name)(ctx, x[0])


# Exact gradients in float64, for `loss = sum(w * op(x...))`: numpy arrays are (ne1, ne0). They check what finite
# differences cannot: an op whose forward reads an F16 table (GELU) or quantizes its input (a quantized mul_mat
# turns the activations into Q8_0 too, so a small step of one activation may not move the loss at all).
_C, _A, _K = np.sqrt(2 / np.pi), 0.044715, 1.702


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(_C * (x + _A * x**3)))


def _gelu_grad(x: np.ndarray) -> np.ndarray:
    t = np.tanh(_C * (x + _A * x**3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * _C * (1 + 3 * _A * x**2)


def _erf_grad(x: np.ndarray) -> np.ndarray:
    from math import erf

    cdf = 0.5 * (1 + np.vectorize(erf)(x / np.sqrt(2)))
    return cdf + x * np.exp(-x**2 / 2) / np.sqrt(2 * np.pi)


def _quick_grad(x: np.ndarray) -> np.ndarray:
    s = 1 / (1 + np.exp(-_K * x))
    return s + _K * x * s * (1 - s)


def _norm_grad(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=1, keepdims=True)
    sigma = np.sqrt((xc**2).mean(axis=1, keepdims=True) + 1e-5)
    y = xc / sigma
    return (w - w.mean(axis=1, keepdims=True) - y * (w * y).mean(axis=1, keepdims=True)) / sigma


def _view_grad(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    grad = np.zeros_like(x)
    grad[:, :4] = w.T
    return grad


Exact = Callable[[list[np.ndarray], np.ndarray], list[np.ndarray | None]]
# name: (input shapes (ne0, ne1), op, input types, tolerance against finite differences (None: not comparable),
#        exact gradients (x as the op saw them, dequantized; w), tolerance against them)
CASES: dict[str, tuple[list[tuple[int, int]], Build, list[int], float | None, Exact, float]] = {
    "norm": ([(16, 4)], lambda g, ctx, x: g.ggml_norm(ctx, x[0], 1e-5), [], 2e-2,
             lambda x, w: [_norm_grad(x[0], w)], 1e-4),
    "gelu": ([(16, 4)], _unary("ggml_gelu"), [], 5e-2,  # the CPU forward reads an F16 table
             lambda x, w: [w * _gelu_grad(x[0])], 1e-4),
    "gelu_erf": ([(16, 4)], _unary("ggml_gelu_erf"), [], 2e-2,
                 lambda x, w: [w * _erf_grad(x[0])], 2e-3),  # Phi in the tanh form: 1.8e-4 off, times |w|
    "gelu_quick": ([(16, 4)], _unary("ggml_gelu_quick"), [], 5e-2,  # an F16 table too
                   lambda x, w: [w * _quick_grad(x[0])], 1e-4),
    "geglu": ([(16, 4), (16, 4)], lambda g, ctx, x: g.ggml_geglu_split(ctx, x[0], x[1]), [], 5e-2,
              lambda x, w: [w * x[1] * _gelu_grad(x[0]), w * _gelu(x[0])], 5e-3),
    "mul_mat": ([(16, 8), (16, 5)], lambda g, ctx, x: g.ggml_mul_mat(ctx, x[0], x[1]), [], 2e-2,
                lambda x, w: [w.T @ x[1], w @ x[0]], 1e-4),
    "mul_mat_q8_0_frozen": ([(32, 8), (32, 5)], lambda g, ctx, x: g.ggml_mul_mat(ctx, x[0], x[1]),
                            [GGML_TYPE_Q8_0, GGML_TYPE_F32], None, lambda x, w: [None, w @ x[0]], 1e-4),
    "mul_mat_f16_frozen": ([(16, 8), (16, 5)], lambda g, ctx, x: g.ggml_mul_mat(ctx, x[0], x[1]),
                           [GGML_TYPE_F16, GGML_TYPE_F32], None, lambda x, w: [None, w @ x[0]], 1e-4),
    # a transposed view's gradient reaches ACC (phi-2's fused QKV): the VIEW backward must make it contiguous
    "view_of_transpose": ([(8, 6)], lambda g, ctx, x: g.ggml_cont(ctx, g.ggml_transpose(
        ctx, g.ggml_view_2d(ctx, x[0], 4, 6, 8 * 4, 0))), [], 2e-2, lambda x, w: [_view_grad(x[0], w)], 1e-6),
}


# the step of the finite differences: the CPU forward of GELU reads an F16 table (about 3 significant digits), so
# a step of 1e-2 turns its rounding into up to 10% noise in the difference; 0.1 keeps both it and the truncation
# error near 1%
FD_EPS = {"gelu": 0.1, "gelu_quick": 0.1, "geglu": 0.1}


def check_all(kind: str = "patched", seed: int = 0) -> list[Result]:
    """Every case against finite differences (where they can be compared) and its exact gradient; raises
    AssertionError naming the ones that are wrong."""
    results = []
    for name, (shapes, op, types, fd_tolerance, exact, exact_tolerance) in CASES.items():
        fd, off = gradient_errors(shapes, op, exact, types=types, seed=seed, kind=kind, eps=FD_EPS.get(name, 1e-2))
        if fd_tolerance is not None:
            results.append(Result(f"{name} vs finite differences", fd, fd_tolerance))
        results.append(Result(f"{name} vs exact", off, exact_tolerance))
    wrong = [str(r) for r in results if not r.ok]
    if wrong:
        raise AssertionError("backward passes that disagree: " + "; ".join(wrong))
    return results
