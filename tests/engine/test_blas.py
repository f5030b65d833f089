"""Patches 0005 and 0008: the patched engine's F32 products and OUT_PROD on numpy's OpenBLAS, and its products of a
quantized weight dequantized onto it, give what exact float64 arithmetic and ggml's own kernels give, forward and
backward, whatever the thread split."""

from __future__ import annotations

import gguf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jenova_fast.engine import gradcheck, library


@pytest.fixture(scope="module")
def blas(patched) -> library.Blas:
    found = library.find_blas()
    if found is None:
        pytest.skip("no OpenBLAS beside numpy (a numpy built without one, or JENOVA_FAST_BLAS=0)")
    return found


def _squared_product(g, ctx, x):
    """sum(w * (a^T b)^2): its gradients hold the forward product, so the forward GEMM is checked too."""
    product = g.ggml_mul_mat(ctx, x[0], x[1])
    return g.ggml_mul(ctx, product, product)


def _squared_product_grads(x, w):
    a, b = x  # numpy (rows=ne1, cols=ne0): a is (m, k), b is (p, k); the product is (p, m)
    d = 2 * w * (b @ a.T)
    return [d.T @ b, d @ a]


@settings(max_examples=12, deadline=None)
@given(m=st.integers(1, 80), k=st.sampled_from([32, 64, 96]), p=st.integers(1, 80), threads=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_products_on_blas_equal_exact_and_ggmls_own(patched, blas, m, k, p, threads, seed):
    """Odd sizes on both sides of the 32 below which products stay on ggml's kernels, split over 1-3 threads."""
    errors = {}
    try:
        for name, using in (("blas", blas), ("ggml", None)):
            patched.use_blas(using)
            errors[name, "f32"] = gradcheck.gradient_errors(
                [(k, m), (k, p)], _squared_product, _squared_product_grads, seed=seed, finite_differences=False,
                threads=threads)[1]
            # a frozen quantized weight: its forward product runs on quantized activations (not exact), so the
            # backward alone, through the F32 cast, on the linear product
            errors[name, "q8_0 frozen"] = gradcheck.gradient_errors(
                [(k, m), (k, p)], gradcheck.CASES["mul_mat"][1], lambda x, w: [None, w @ x[0]],
                types=[gradcheck.GGML_TYPE_Q8_0, gradcheck.GGML_TYPE_F32], seed=seed, finite_differences=False,
                threads=threads)[1]
    finally:
        patched.use_blas(blas)
    assert max(errors.values()) <= 1e-4, errors


# the legacy types the sgemm takes dequantized (0008's AVX2 rows for Q4_0, Q4_1, Q5_0; ggml's for Q8_0), by ggml type id
QUANTIZED = {name: int(gguf.GGMLQuantizationType[name]) for name in ("Q4_0", "Q4_1", "Q5_0", "Q8_0")}


@settings(max_examples=16, deadline=None)
@given(qtype=st.sampled_from(sorted(QUANTIZED)), m=st.integers(32, 90), k=st.sampled_from([32, 64, 160]),
       p=st.integers(1, 70), threads=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_a_quantized_weights_products_on_blas_are_the_dequantized_weights(patched, blas, qtype, m, k, p, threads,
                                                                          seed):
    """Patch 0008: with 32 activation rows or more, a frozen quantized weight's forward product runs on the sgemm
    over its rows dequantized, so it is the dequantized weight's product (ggml's own kernels round the activations to
    8 bits: an error of 1-2 here, against float32 rounding's 1e-4); its backward cast dequantizes whole rows. The
    loss squares the product, so the gradient checks both."""
    types = [QUANTIZED[qtype], gradcheck.GGML_TYPE_F32]
    error = gradcheck.gradient_errors([(k, m), (k, p)], _squared_product, _squared_product_grads, types=types,
                                      seed=seed, finite_differences=False, threads=threads)[1]
    if p >= 32:
        assert error <= 1e-3, (qtype, error)
    # fewer rows (decoding) stay on ggml's kernels; the backward cast alone, on the linear product, is exact
    linear = gradcheck.gradient_errors([(k, m), (k, p)], gradcheck.CASES["mul_mat"][1], lambda x, w: [None, w @ x[0]],
                                       types=types, seed=seed, finite_differences=False, threads=threads)[1]
    assert linear <= 1e-4, (qtype, linear)


def test_the_plan_line_says_what_the_products_run_on(patched, blas, monkeypatch):
    assert library.blas_line() == f"F32 products on OpenBLAS, {blas.path.name}"
    assert "OpenBLAS" in library.choose("auto").reason
    monkeypatch.setenv(library.BLAS_OFF, "0")
    assert library.find_blas() is None
    assert library.blas_line() == f"F32 products on ggml's own kernels ({library.BLAS_OFF}=0)"


def test_a_large_frozen_weight_is_cast_in_slices_and_the_gradient_is_exact(patched, blas):
    """Patch 0006: a frozen quantized weight of more than 32 MB in F32 is cast for the backward product a slice of
    rows at a time (here 8200 rows of 1024: two slices, the second short), the slices' products summed."""
    op = gradcheck.CASES["mul_mat"][1]
    errors = gradcheck.gradient_errors([(1024, 8200), (1024, 3)], op, lambda x, w: [None, w @ x[0]],
                                       types=[gradcheck.GGML_TYPE_Q8_0, gradcheck.GGML_TYPE_F32],
                                       finite_differences=False, threads=2, memory_mb=512)
    assert errors[1] <= 1e-4
