"""Every backward pass the patches add or change, against finite differences and exact gradients, on the
built library; the GEMM backward also against the stock engine's OUT_PROD one."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jenova_fast.engine import gradcheck

TOLERANCES = {name: (fd, exact) for name, (_, _, _, fd, _, exact) in gradcheck.CASES.items()}


@pytest.mark.parametrize("case", sorted(gradcheck.CASES))
@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_backward_matches_finite_differences_and_exact_gradients(patched, case, seed):
    shapes, op, types, fd_tolerance, exact, exact_tolerance = gradcheck.CASES[case]
    fd, off = gradcheck.gradient_errors(shapes, op, exact, types=types, seed=seed,
                                        eps=gradcheck.FD_EPS.get(case, 1e-2))
    if fd_tolerance is not None:
        assert fd <= fd_tolerance, (case, seed, fd)
    assert off <= exact_tolerance, (case, seed, off)


@settings(max_examples=10, deadline=None)
@given(m=st.integers(1, 24), n=st.sampled_from([32, 64]), p=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_gemm_backward_equals_stock_out_prod(patched, m, n, p, seed):
    """Shapes llama.cpp never sees in a unit test of its own: odd token counts, one row, wide and narrow."""
    op = gradcheck.CASES["mul_mat"][1]

    def exact(x, w):
        return [w.T @ x[1], w @ x[0]]

    for types in ([gradcheck.GGML_TYPE_F32] * 2, [gradcheck.GGML_TYPE_Q8_0, gradcheck.GGML_TYPE_F32]):
        shapes = [(n, m), (n, p)]
        ours = gradcheck.gradient_errors(shapes, op, exact, types=types, seed=seed, finite_differences=False)[1]
        stock = gradcheck.gradient_errors(shapes, op, exact, types=types, seed=seed, finite_differences=False,
                                          kind="stock")[1]
        assert ours <= 1e-4 and stock <= 1e-4, (ours, stock)


def test_check_all_reports_every_case(patched):
    results = gradcheck.check_all()
    assert {r.case.split(" vs ")[0] for r in results} == set(gradcheck.CASES)
    assert all(r.ok for r in results)
