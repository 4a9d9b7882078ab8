"""concat_linear on CUDA tensors (the CUDA kernels of a CUDA build). Skipped without a CUDA device."""

from __future__ import annotations

import pytest
import torch

import mmfast
from mmfast.ops import ACTIVATIONS, concat_linear, concat_linear_reference
from tests._tolerances import AUTOCAST_CUDA, CUDA_FLOAT32, assert_matches_reference

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.cuda,
]

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [
    ([37], (5,), 11),
    ([3, 9], (7,), 13),
    ([33, 17, 5], (4, 3), 19),
    ([5] * 16, (6,), 10),
    ([768, 512, 128], (64,), 512),
]


def _make(sizes, lead, out_features, dtype, requires_grad=True):
    xs = [torch.randn(*lead, d, device="cuda", dtype=dtype, requires_grad=requires_grad) for d in sizes]
    weight = (torch.randn(out_features, sum(sizes), device="cuda") / sum(sizes) ** 0.5).to(dtype)
    bias = torch.randn(out_features, device="cuda", dtype=dtype)
    return xs, weight.requires_grad_(requires_grad), bias.requires_grad_(requires_grad)


def _fp16_aware(actual, reference_fn, args, dtype):
    # float16 takes the same distance check as bfloat16: float16's own rounding sets the scale.
    assert_matches_reference(
        actual, reference_fn, args, dtype, distance_dtypes=(torch.bfloat16, torch.float16)
    )


def test_backend_info_reports_cuda_kernels():
    assert mmfast.backend_info()["concat_linear"]["cuda"].startswith("cuda")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{len(s[0])}seg-{s[2]}")
def test_forward_and_backward_match_reference(activation, dtype, shape):
    xs, weight, bias = _make(*shape, dtype)
    out = concat_linear(xs, weight, bias, activation)
    assert out.shape == (*shape[1], shape[2]) and out.dtype == dtype and out.is_cuda
    _fp16_aware(out, concat_linear_reference, [xs, weight, bias, activation], dtype)
    grad_out = torch.randn_like(out)
    params = [*xs, weight, bias]
    fused = torch.autograd.grad(out, params, grad_out)
    for index, grad in enumerate(fused):

        def reference_grad(xs_, w_, b_, act_, g_, index=index):
            leaves = [t.detach().requires_grad_() for t in [*xs_, w_, b_]]
            y = concat_linear_reference(leaves[: len(xs_)], leaves[-2], leaves[-1], act_)
            return torch.autograd.grad(y, leaves, g_)[index]

        _fp16_aware(grad, reference_grad, [xs, weight, bias, activation, grad_out], dtype)


@pytest.mark.parametrize("activation", ["relu", "gelu_tanh", "gelu"])
def test_inference_epilogue_paths(activation):
    """Without gradients relu and gelu_tanh take cuBLASLt's fused epilogue; gelu the CUDA kernel."""
    xs, weight, bias = _make([40, 24], (33,), 17, torch.float32, requires_grad=False)
    with torch.no_grad():
        out = concat_linear(xs, weight, bias, activation)
    torch.testing.assert_close(out, concat_linear_reference(xs, weight, bias, activation), **CUDA_FLOAT32)


def test_non_contiguous_and_empty():
    base = torch.randn(12, 40, device="cuda")
    xs = [base[:, :9], torch.randn(16, 12, device="cuda").t()]
    weight, bias = torch.randn(7, 25, device="cuda"), torch.randn(7, device="cuda")
    torch.testing.assert_close(
        concat_linear(xs, weight, bias, "silu"),
        concat_linear_reference(xs, weight, bias, "silu"),
        **CUDA_FLOAT32,
    )
    empty = [torch.randn(0, 3, device="cuda", requires_grad=True), torch.randn(0, 5, device="cuda")]
    w = torch.randn(4, 8, device="cuda", requires_grad=True)
    out = concat_linear(empty, w, None, "gelu")
    assert out.shape == (0, 4)
    (gw,) = torch.autograd.grad(out.sum(), [w])
    assert torch.count_nonzero(gw) == 0


def test_float64_on_cuda_is_a_clear_error():
    xs, weight, bias = (t.double() for t in (torch.randn(3, 4), torch.randn(5, 4), torch.randn(5)))
    args = (xs.cuda().requires_grad_(), weight.cuda().requires_grad_(), bias.cuda().requires_grad_())
    with pytest.raises(TypeError, match="float32, torch.float16 or torch.bfloat16 on CUDA"):
        concat_linear([args[0]], args[1], args[2], "gelu")


@pytest.mark.parametrize("activation", ["none", "gelu", "relu"])
def test_opcheck_and_compile(activation):
    xs, weight, bias = _make([5, 7], (4, 3), 6, torch.float32)
    torch.library.opcheck(
        torch.ops.mmfast.concat_linear_forward.default, (xs, weight, bias, activation, True)
    )
    torch._dynamo.reset()
    compiled = torch.compile(lambda a, b, w, c: concat_linear([a, b], w, c, activation), fullgraph=True)
    out = compiled(*xs, weight, bias)
    torch.testing.assert_close(out, concat_linear_reference(xs, weight, bias, activation), **CUDA_FLOAT32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_behaves_like_linear(dtype):
    xs, weight, bias = _make([16, 8], (6,), 12, torch.float32, requires_grad=False)
    with torch.autocast("cuda", dtype=dtype):
        out = concat_linear(xs, weight, bias, "gelu")
        expected = concat_linear_reference(xs, weight, bias, "gelu")
    assert out.dtype == expected.dtype == dtype
    torch.testing.assert_close(out, expected, **AUTOCAST_CUDA)


def test_mixed_devices_are_rejected():
    with pytest.raises(ValueError, match=r"inputs\[1\]: expected device cuda:0 like inputs\[0\], got cpu"):
        concat_linear([torch.randn(2, 3, device="cuda"), torch.randn(2, 3)], torch.randn(4, 6, device="cuda"))
