"""gated_fusion and attention_fusion on CUDA tensors: the dispatcher reaches the Triton kernels.
Skipped without a CUDA device (and without triton)."""

from __future__ import annotations

import pytest
import torch

import mmfast
from mmfast.ops import attention_fusion, attention_fusion_reference, gated_fusion, gated_fusion_reference
from tests._fusion_cases import attention_args, detached_copy, gated_args, leaves_of
from tests._tolerances import TRITON_CUDA_VS_FLOAT64, assert_close_to_float64, tol

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.cuda,
]

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# float32 `tl.dot` runs in TF32 on CUDA: every float32 comparison here takes its tolerance.
TF32 = TRITON_CUDA_VS_FLOAT64[torch.float32]


def _check(fused_fn, reference_fn, args, dtype):
    out = fused_fn(*args)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, leaves_of(args), grad)
    exact = detached_copy(args, torch.float64)
    want_out = reference_fn(*exact)
    want = torch.autograd.grad(want_out, leaves_of(exact), grad.double())
    tolerance = TRITON_CUDA_VS_FLOAT64[dtype]
    assert_close_to_float64(out, want_out, tolerance)
    for g, w, leaf in zip(got, want, leaves_of(args)):
        assert g.shape == leaf.shape and g.dtype == dtype and g.device == leaf.device
        assert_close_to_float64(g, w, tolerance, scaled=True)


def test_backend_info_names_the_triton_kernels():
    pytest.importorskip("triton")
    info = mmfast.backend_info()
    assert info["gated_fusion"]["cuda"].startswith("triton (")
    assert info["attention_fusion"]["cuda"].startswith("triton (")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    ("count", "dim", "lead"), [(2, 19, (5,)), (3, 64, (4, 3)), (5, 100, (33,)), (8, 16, (2,))]
)
def test_gated_fusion_matches_reference(dtype, count, dim, lead):
    _check(gated_fusion, gated_fusion_reference, list(gated_args(count, dim, lead, dtype, "cuda")), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    ("dims", "out_dim", "lead"),
    [([37], 11, (5,)), ([5, 17], 9, (7,)), ([768, 512, 128], 256, (64,)), ([8, 3, 20, 1, 6], 7, (2, 3))],
)
def test_attention_fusion_matches_reference(dtype, dims, out_dim, lead):
    args = list(attention_args(dims, out_dim, lead, dtype, "cuda"))
    _check(attention_fusion, attention_fusion_reference, args, dtype)


def test_attention_weights_output_is_differentiable():
    args = list(attention_args([4, 6, 3], 5, (3,), torch.float32, "cuda"))
    out, weights = attention_fusion(*args, return_weights=True)
    target = torch.randn_like(weights)
    got = torch.autograd.grad(out.sum() + (weights * target).sum(), leaves_of(args))
    exact = detached_copy(args, torch.float64)
    ref_out, ref_weights = attention_fusion_reference(*exact, return_weights=True)
    want = torch.autograd.grad(ref_out.sum() + (ref_weights * target.double()).sum(), leaves_of(exact))
    for g, w in zip(got, want):
        assert_close_to_float64(g, w, TF32)


def test_non_contiguous_and_empty_batch():
    xs = [torch.randn(6, 40, device="cuda")[:, ::2] for _ in range(3)]
    weight = torch.randn(60, 60, device="cuda") / 8
    torch.testing.assert_close(gated_fusion(xs, weight), gated_fusion_reference(xs, weight), **tol(TF32))
    args = list(attention_args([4, 6], 5, (0,), torch.float32, "cuda"))
    out = attention_fusion(*args)
    assert out.shape == (0, 5)
    grads = torch.autograd.grad(out.sum(), leaves_of(args))
    assert all(torch.count_nonzero(g) == 0 for g in grads)


def test_opcheck_and_compile():
    args = list(gated_args(3, 32, (16,), torch.float32, "cuda"))
    torch.library.opcheck(torch.ops.mmfast.gated_fusion_forward.default, tuple(args))
    xs, projs, biases, score, sb = attention_args([16, 32], 16, (8,), torch.float32, "cuda")
    torch.library.opcheck(torch.ops.mmfast.attention_fusion_forward.default, (xs, projs, biases, score, sb))
    torch._dynamo.reset()
    compiled = torch.compile(gated_fusion, fullgraph=True)
    torch.testing.assert_close(compiled(*args), gated_fusion_reference(*args), **tol(TF32))


def test_unsupported_inputs_are_clear_errors():
    with pytest.raises(
        TypeError, match=r"take torch.float32, torch.float16 or torch.bfloat16, got torch.float64"
    ):
        gated_fusion(*gated_args(2, 8, (3,), torch.float64, "cuda"))
    with pytest.raises(ValueError, match=r"at most 8 inputs, got 9"):
        gated_fusion(*gated_args(9, 2, (3,), torch.float32, "cuda"))
    xs, weight, bias = gated_args(2, 8, (3,), torch.float32, "cuda")
    with pytest.raises(ValueError, match=r"weight: expected device cuda"):
        gated_fusion(xs, weight.cpu(), bias)
