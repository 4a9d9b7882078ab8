"""The Triton gated-fusion kernels against `gated_fusion_reference`, forward and backward.

Without CUDA the kernels run on CPU tensors in triton's interpreter (small sizes: it is slow; no
bfloat16: its bf16 arithmetic is wrong); with CUDA the same cases and larger ones run compiled.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    # Triton reads this when the kernels are decorated, so before they are imported.
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402

from mmfast.ops import gated_fusion_reference  # noqa: E402
from mmfast.triton import _common  # noqa: E402
from mmfast.triton.gated_fusion import gated_fusion_backward, gated_fusion_forward  # noqa: E402
from tests._tolerances import (  # noqa: E402
    FLOAT32_PROBABILITIES,
    FLOAT32_SMALL,
    TRITON_DISTANCE_SLACK,
    assert_distance,
)

if not _common.INTERPRETED and not torch.cuda.is_available():
    raise RuntimeError(
        "mmfast.triton kernels were imported before TRITON_INTERPRET=1 was set and there is no GPU: "
        "set TRITON_INTERPRET=1 in the environment (or at the top of tests/conftest.py)"
    )

DEVICE = "cpu" if _common.INTERPRETED else "cuda"
SMALL_DTYPES = [torch.float32, torch.float16] + ([] if _common.INTERPRETED else [torch.bfloat16])
needs_compiled_cuda = pytest.mark.skipif(
    not torch.cuda.is_available() or _common.INTERPRETED,
    reason="needs a CUDA device running the compiled kernels",
)

def _make_case(count, shape, dtype, bias, device=DEVICE):
    """Inputs ``shape`` (last dim D), a weight scaled so the logits are O(1), an optional bias."""
    dim = shape[-1]
    groups = 1 if count == 2 else count
    xs = [torch.randn(shape, dtype=dtype, device=device) for _ in range(count)]
    weight = (torch.randn(groups * dim, count * dim, device=device) / (count * dim) ** 0.5).to(dtype)
    bias_tensor = (0.5 * torch.randn(groups * dim, device=device)).to(dtype) if bias else None
    return xs, weight, bias_tensor


def _reference_with_grads(xs, weight, bias, grad_out, dtype):
    """The reference output and gradients (xs..., weight[, bias]), computed in ``dtype``."""
    leaves = [
        t.detach().to(dtype).requires_grad_() for t in [*xs, weight] + ([bias] if bias is not None else [])
    ]
    count = len(xs)
    out = gated_fusion_reference(
        leaves[:count], leaves[count], leaves[count + 1] if bias is not None else None
    )
    grads = torch.autograd.grad(out, leaves, grad_out.to(dtype))
    return [out.detach(), *grads]


def _run_kernels(xs, weight, bias, grad_out, needs_grad=(True, True, True)):
    """Forward and backward through the kernels, flattening leading dims like the op does."""
    shape = xs[0].shape
    flat = [x.reshape(-1, shape[-1]).contiguous() for x in xs]
    out, gates = gated_fusion_forward(flat, weight, bias)
    grad_xs, grad_weight, grad_bias = gated_fusion_backward(
        grad_out.reshape(-1, shape[-1]), flat, weight, gates, needs_grad
    )
    return out.reshape(shape), gates, grad_xs, grad_weight, grad_bias


def _assert_matches(actual, xs, weight, bias, grad_out, dtype):
    """float32: equal to the float32 reference within float32 tolerance. Half types: the error
    against a float64 evaluation stays within twice the reference's own error in that dtype."""
    plain = _reference_with_grads(xs, weight, bias, grad_out, dtype)
    if dtype == torch.float32:
        for name, got, expected in zip(_names(len(xs), bias), actual, plain):
            torch.testing.assert_close(got, expected, **FLOAT32_SMALL, msg=lambda m, n=name: f"{n}: {m}")
        return
    exact = _reference_with_grads(xs, weight, bias, grad_out, torch.float64)
    for name, got, expected, reference in zip(_names(len(xs), bias), actual, exact, plain):
        assert got.dtype == dtype and got.shape == expected.shape, name
        assert_distance(got, reference, expected, TRITON_DISTANCE_SLACK[dtype], name)


def _names(count, bias):
    return ["out", *[f"grad_xs[{i}]" for i in range(count)], "grad_weight"] + (
        ["grad_bias"] if bias is not None else []
    )


# (M, input shape, bias): every M in {2, 3, 5}, odd feature counts, 1 to 37 rows (37 rows split the
# weight-gradient reduction in two under the interpreter), a 3-D input, with and without bias.
CASES = [
    (2, (1, 9), True),
    (2, (37, 33), False),
    (2, (2, 3, 9), True),
    (3, (5, 33), True),
    (3, (37, 9), False),
    (3, (2, 3, 9), True),
    (5, (5, 9), False),
    (5, (37, 9), True),
]


@pytest.mark.parametrize("dtype", SMALL_DTYPES, ids=str)
@pytest.mark.parametrize(("count", "shape", "bias"), CASES)
def test_forward_and_backward_match_reference(count, shape, bias, dtype):
    xs, weight, bias_tensor = _make_case(count, shape, dtype, bias)
    grad_out = torch.randn(shape, dtype=dtype, device=DEVICE)
    out, gates, grad_xs, grad_weight, grad_bias = _run_kernels(xs, weight, bias_tensor, grad_out)
    assert gates.shape == (out.numel() // shape[-1], shape[-1] * (1 if count == 2 else count))
    actual = [out, *[g.reshape(shape) for g in grad_xs], grad_weight] + ([grad_bias] if bias else [])
    _assert_matches(actual, xs, weight, bias_tensor, grad_out, dtype)


@pytest.mark.parametrize("count", [2, 3])
def test_gates_are_the_reference_gates(count):
    xs, weight, bias = _make_case(count, (5, 9), torch.float32, bias=True)
    _, gates = gated_fusion_forward(xs, weight, bias)
    logits = torch.nn.functional.linear(torch.cat(xs, -1), weight, bias)
    if count == 2:
        expected = torch.sigmoid(logits)
    else:
        expected = torch.softmax(logits.unflatten(-1, (count, 9)), dim=-2).flatten(-2)
    torch.testing.assert_close(gates, expected, **FLOAT32_PROBABILITIES)


@pytest.mark.parametrize("count", [2, 3])
@pytest.mark.parametrize("needs_grad", [(True, False, False), (False, True, False), (False, False, True)])
def test_backward_computes_only_what_is_needed(count, needs_grad):
    xs, weight, bias = _make_case(count, (37, 9), torch.float32, bias=True)
    grad_out = torch.randn(37, 9, device=DEVICE)
    _, _, *grads = _run_kernels(xs, weight, bias, grad_out, needs_grad)
    expected = _reference_with_grads(xs, weight, bias, grad_out, torch.float32)
    expected = [expected[1 : 1 + count], expected[1 + count], expected[2 + count]]
    for needed, got, want in zip(needs_grad, grads, expected):
        if not needed:
            assert got is None
        elif isinstance(want, list):
            for g, w in zip(got, want):
                torch.testing.assert_close(g, w, **FLOAT32_SMALL)
        else:
            torch.testing.assert_close(got, want, **FLOAT32_SMALL)


def test_zero_rows():
    xs, weight, bias = _make_case(3, (0, 9), torch.float32, bias=True)
    out, gates = gated_fusion_forward(xs, weight, bias)
    assert out.shape == (0, 9) and gates.shape == (0, 27)
    grad_xs, grad_weight, grad_bias = gated_fusion_backward(out, xs, weight, gates, (True, True, True))
    assert [g.shape for g in grad_xs] == [(0, 9)] * 3
    assert torch.equal(grad_weight, torch.zeros_like(weight)) and torch.equal(
        grad_bias, torch.zeros(27, device=DEVICE)
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda xs, w, b: (xs[:1], w[:9, :9], b), "xs: the Triton kernels take 2 to 8 inputs"),
        (lambda xs, w, b: (xs * 3, w, b), "xs: the Triton kernels take 2 to 8 inputs"),
        (lambda xs, w, b: (xs, w[:, :-1], b), r"weight: expected shape \(27, 27\)"),
        (lambda xs, w, b: (xs, w, b[:-1]), r"bias: expected shape \(27,\)"),
        (lambda xs, w, b: ([xs[0], xs[1][:, :8], xs[2]], w, b), r"xs\[1\]: expected 9 features"),
        (lambda xs, w, b: ([xs[0], xs[1][:4], xs[2]], w, b), r"xs\[1\]: expected a 2-D tensor with 5 rows"),
        (lambda xs, w, b: ([xs[0], xs[1].half(), xs[2]], w, b), r"xs\[1\]: expected dtype torch.float32"),
        (lambda xs, w, b: (xs, w.double(), b), "weight: expected dtype torch.float32"),
        (lambda xs, w, b: ([xs[0].t().contiguous().t(), *xs[1:]], w, b), r"xs\[0\]: expected a contiguous"),
        (lambda xs, w, b: ([x.long() for x in xs], w, b), "xs: expected float32, float16 or bfloat16"),
    ],
)
def test_bad_arguments_raise_before_any_launch(change, message):
    xs, weight, bias = _make_case(3, (5, 9), torch.float32, bias=True)
    with pytest.raises(ValueError, match=message):
        gated_fusion_forward(*change(xs, weight, bias))


@pytest.mark.cuda
@needs_compiled_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    ("count", "shape"), [(2, (8, 512, 768)), (3, (4099, 512)), (4, (64, 1000)), (8, (1, 256))]
)
def test_cuda_realistic_sizes(count, shape, dtype):
    xs, weight, bias = _make_case(count, shape, dtype, bias=True, device="cuda")
    grad_out = torch.randn(shape, dtype=dtype, device="cuda")
    out, _, grad_xs, grad_weight, grad_bias = _run_kernels(xs, weight, bias, grad_out)
    actual = [out, *[g.reshape(shape) for g in grad_xs], grad_weight, grad_bias]
    exact = _reference_with_grads(xs, weight, bias, grad_out, torch.float64)
    plain = _reference_with_grads(xs, weight, bias, grad_out, dtype)
    for name, got, expected, reference in zip(_names(count, bias), actual, exact, plain):
        assert_distance(got, reference, expected, TRITON_DISTANCE_SLACK[dtype], name)


def test_availability_describes_how_the_kernels_run():
    import mmfast.triton

    available, description = mmfast.triton.availability(DEVICE)
    assert available and mmfast.triton.is_available(DEVICE)
    assert ("interpreter" if _common.INTERPRETED else "CUDA") in description
    assert not mmfast.triton.is_available("meta")


def test_cpu_tensors_need_the_interpreter():
    """In a fresh process without TRITON_INTERPRET, CPU tensors cannot use the kernels, and the
    reason says what to set."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = "import mmfast.triton as t; print(t.availability('cpu'))"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == str(
        (False, "CPU tensors need TRITON_INTERPRET=1 (set before the kernels are imported)")
    )


@pytest.mark.parametrize("rows", [5, 37])
def test_outputs_never_share_storage(rows):
    """Custom ops may not return tensors that alias each other or their inputs."""
    xs, weight, bias = _make_case(3, (rows, 9), torch.float32, bias=True)
    out, gates = gated_fusion_forward(xs, weight, bias)
    grad_xs, grad_weight, grad_bias = gated_fusion_backward(out, xs, weight, gates, (True, True, True))
    outputs = [out, gates, *grad_xs, grad_weight, grad_bias]
    storages = {t.untyped_storage().data_ptr() for t in outputs}
    assert len(storages) == len(outputs)
    assert storages.isdisjoint(t.untyped_storage().data_ptr() for t in [*xs, weight, bias])
