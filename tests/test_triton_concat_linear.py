"""The Triton concat_linear kernels (`mmfast.triton.concat_linear`) against `concat_linear_reference`,
forward and backward, every activation, and the choice between them and ATen's GEMMs.

Without CUDA the kernels run on CPU tensors in triton's interpreter (small sizes: it is slow; no
bfloat16: its bf16 arithmetic is wrong); with CUDA the same cases run compiled, plus bfloat16.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    # Triton reads this when the kernels are decorated, so before they are imported.
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402

pytest.importorskip("triton")

from mmfast.ops import concat_linear_reference  # noqa: E402
from mmfast.ops.activations import ACTIVATIONS, NEEDS_PREACTIVATION  # noqa: E402
from mmfast.triton import MAX_INPUTS, _common  # noqa: E402
from mmfast.triton import concat_linear as triton_concat_linear  # noqa: E402
from tests._tolerances import (  # noqa: E402
    TRITON_CUDA_VS_FLOAT64,
    TRITON_INTERPRETED_VS_FLOAT64,
    assert_close_to_float64,
)

DEVICE = "cpu" if _common.INTERPRETED else "cuda"
DTYPES = [torch.float32, torch.float16] + ([] if _common.INTERPRETED else [torch.bfloat16])
TOLERANCE = TRITON_INTERPRETED_VS_FLOAT64 if _common.INTERPRETED else TRITON_CUDA_VS_FLOAT64


def _problem(widths, leading, out_features, dtype, bias=True, device=DEVICE):
    generator = torch.Generator().manual_seed(sum(widths) * 31 + out_features)
    xs = [torch.randn(*leading, w, generator=generator).to(device, dtype) for w in widths]
    fan_in = max(sum(widths), 1)
    weight = (torch.randn(out_features, sum(widths), generator=generator) / fan_in**0.5).to(device, dtype)
    b = (0.5 * torch.randn(out_features, generator=generator)).to(device, dtype) if bias else None
    grad = torch.randn(*leading, out_features, generator=generator).to(device, dtype)
    return xs, weight, b, grad


def _exact(xs, weight, bias, grad, activation):
    """Output and gradients (inputs..., weight, bias) of the reference in float64."""
    leaves = [
        t.detach().double().requires_grad_() for t in [*xs, weight] + ([bias] if bias is not None else [])
    ]
    count = len(xs)
    out = concat_linear_reference(
        leaves[:count], leaves[count], leaves[count + 1] if bias is not None else None, activation
    )
    grads = torch.autograd.grad(out, leaves, grad.double(), allow_unused=True)
    return out.detach(), grads


def _run(xs, weight, bias, grad, activation, mask=(True, True, True)):
    """The module's forward and backward in the op schemas' conventions, as autograd calls them."""
    out, pre = triton_concat_linear.forward(xs, weight, bias, activation, True)
    saved = pre if activation in NEEDS_PREACTIVATION else out
    kept_inputs = xs if mask[1] else []  # autograd keeps the inputs only for the weight gradient
    return out, triton_concat_linear.backward(grad, kept_inputs, weight, saved, activation, list(mask))


def _check(xs, weight, bias, grad, activation, dtype, mask=(True, True, True)):
    out, (grad_input, grad_weight, grad_bias) = _run(xs, weight, bias, grad, activation, mask)
    want_out, want = _exact(xs, weight, bias, grad, activation)
    tolerance = TOLERANCE[dtype] if dtype in TOLERANCE else 1e-12
    assert out.dtype == dtype and out.shape == want_out.shape
    assert_close_to_float64(out, want_out, tolerance, name="output")
    count = len(xs)
    if mask[0]:
        want_input = torch.cat(
            [
                g if g is not None else torch.zeros_like(x, dtype=torch.float64)
                for g, x in zip(want[:count], xs)
            ],
            dim=-1,
        )
        assert_close_to_float64(grad_input, want_input, tolerance, scaled=True, name="grad_input")
    else:
        assert grad_input.numel() == 0
    if mask[1]:
        assert_close_to_float64(grad_weight, want[count], tolerance, scaled=True, name="grad_weight")
    else:
        assert grad_weight.numel() == 0
    if mask[2] and bias is not None:
        assert_close_to_float64(grad_bias, want[count + 1], tolerance, scaled=True, name="grad_bias")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_reference_for_every_activation(activation, dtype):
    # Odd widths, an empty input among them, 3-D inputs, 40 rows (the weight gradient splits its
    # reduction over rows in two under the interpreter).
    xs, weight, bias, grad = _problem([5, 0, 17, 33], (5, 8), 19, dtype)
    _check(xs, weight, bias, grad, activation, dtype)


@pytest.mark.parametrize(
    ("widths", "leading", "out_features", "bias"),
    [
        ([24], (3,), 16, True),  # one input: a plain linear layer
        ([7, 9], (1,), 5, False),  # batch 1, no bias
        ([3] * MAX_INPUTS, (6,), 11, True),  # the most inputs the kernels take
        ([16, 16, 16], (2, 3, 4), 32, True),  # block-aligned sizes, 4-D
    ],
)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_shapes(widths, leading, out_features, bias, dtype):
    xs, weight, b, grad = _problem(widths, leading, out_features, dtype, bias=bias)
    _check(xs, weight, b, grad, "gelu", dtype)


@pytest.mark.parametrize(
    "mask", [(True, False, False), (False, True, False), (False, False, True), (True, False, True)]
)
def test_gradients_asked_for_separately(mask):
    xs, weight, bias, grad = _problem([6, 10], (9,), 13, torch.float32)
    _check(xs, weight, bias, grad, "silu", torch.float32, mask)


def test_non_contiguous_inputs():
    xs, weight, bias, grad = _problem([12, 20], (7,), 9, torch.float32)
    transposed = [x.t().contiguous().t() for x in xs]
    assert not transposed[0].is_contiguous()
    _check(transposed, weight.t().contiguous().t(), bias, grad, "tanh", torch.float32)


def test_empty_batch_and_no_outputs():
    xs, weight, bias, grad = _problem([4, 6], (0,), 8, torch.float32)
    out, (grad_input, grad_weight, grad_bias) = _run(xs, weight, bias, grad, "relu")
    assert out.shape == (0, 8) and grad_input.shape == (0, 10)
    assert torch.equal(grad_weight, torch.zeros_like(weight)) and torch.equal(
        grad_bias, torch.zeros_like(bias)
    )
    xs, weight, bias, grad = _problem([4, 6], (3,), 0, torch.float32)
    out, (grad_input, grad_weight, grad_bias) = _run(xs, weight, bias, grad, "gelu")
    assert out.shape == (3, 0)
    assert torch.equal(grad_input, torch.zeros(3, 10)) and grad_weight.shape == (0, 10)


@pytest.mark.parametrize("activation", ["gelu", "relu", "sigmoid"])
def test_what_the_kernels_do_not_take_runs_on_aten(activation):
    # float64, and more inputs than the kernels unroll: the ATen engine serves them.
    xs, weight, bias, grad = _problem([5, 7], (4,), 6, torch.float64)
    _check(xs, weight, bias, grad, activation, torch.float64)
    xs, weight, bias, grad = _problem([2] * (MAX_INPUTS + 1), (4,), 6, torch.float32)
    _check(xs, weight, bias, grad, activation, torch.float32)


def test_engines_agree_and_can_be_forced():
    xs, weight, bias, grad = _problem([9, 14], (6,), 10, torch.float32)
    results = {}
    for engine in triton_concat_linear.ENGINES:
        with triton_concat_linear.force_engine(engine):
            results[engine] = _run(xs, weight, bias, grad, "gelu_tanh")
    (out_a, grads_a), (out_t, grads_t) = results["aten"], results["triton"]
    torch.testing.assert_close(out_a, out_t, rtol=1e-5, atol=1e-5)
    for a, t in zip(grads_a, grads_t, strict=True):
        torch.testing.assert_close(a, t, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="engine: expected one of aten, triton"):
        triton_concat_linear.force_engine("cublas")


def test_unknown_engine_variable_is_an_error(monkeypatch):
    monkeypatch.setenv(triton_concat_linear.ENGINE_VARIABLE, "fast")
    xs, weight, bias, grad = _problem([3, 5], (2,), 4, torch.float32)
    with pytest.raises(
        ValueError, match="MMFAST_CUDA_GEMM: expected one of aten, triton or 'auto', got 'fast'"
    ):
        triton_concat_linear.forward(xs, weight, bias, "none", False)


@pytest.mark.cuda
@pytest.mark.skipif(_common.INTERPRETED, reason="needs a CUDA device running the compiled kernels")
def test_cuda_choice_is_timed_once_per_size_class():
    triton_concat_linear.reset_choices()
    xs, weight, bias, grad = _problem([768, 512, 128], (256,), 512, torch.bfloat16)
    _check(xs, weight, bias, grad, "gelu", torch.bfloat16)
    decided = triton_concat_linear.choices()
    assert {key[0] for key in decided} == {"forward", "backward"}
    assert set(decided.values()) <= set(triton_concat_linear.ENGINES)
    _run(xs, weight, bias, grad, "gelu")
    assert triton_concat_linear.choices() == decided
