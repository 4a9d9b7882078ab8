"""The Triton attention-fusion kernels against `attention_fusion_reference`, forward and backward.

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

from mmfast.ops import attention_fusion_reference  # noqa: E402
from mmfast.triton import _common  # noqa: E402
from mmfast.triton.attention_fusion import attention_fusion_backward, attention_fusion_forward  # noqa: E402
from tests._tolerances import FLOAT32_SMALL, TRITON_DISTANCE_SLACK, assert_distance  # noqa: E402

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
ALL_GRADS = (True, True, True, True, True)

class Case:
    """Inputs ``[*lead, D_m]`` and parameters scaled so scores and projections are O(1)."""

    def __init__(self, dims, lead, out_dim, dtype, proj_bias=True, score_bias=True, device=DEVICE):
        total = sum(dims)
        self.lead, self.out_dim = tuple(lead), out_dim
        self.xs = [torch.randn(*lead, d, device=device).to(dtype) for d in dims]
        self.proj_weights = [(torch.randn(out_dim, d, device=device) / d**0.5).to(dtype) for d in dims]
        self.proj_biases = (
            [(0.5 * torch.randn(out_dim, device=device)).to(dtype) for _ in dims] if proj_bias else None
        )
        self.score_weight = (torch.randn(len(dims), total, device=device) / total**0.5).to(dtype)
        self.score_bias = (0.5 * torch.randn(len(dims), device=device)).to(dtype) if score_bias else None
        self.grad_out = torch.randn(*lead, out_dim, device=device).to(dtype)

    def parameters(self):
        return [self.proj_weights, self.proj_biases, self.score_weight, self.score_bias]

    def run_kernels(self, needs_grad=ALL_GRADS):
        """Forward and backward through the kernels, flattening leading dims like the op does."""
        flat = [x.reshape(-1, x.shape[-1]).contiguous() for x in self.xs]
        # Like autograd: no gradient is asked for an absent bias.
        needs_grad = (
            *needs_grad[:2],
            needs_grad[2] and self.proj_biases is not None,
            needs_grad[3],
            needs_grad[4] and self.score_bias is not None,
        )
        out, attn = attention_fusion_forward(flat, *self.parameters())
        grads = attention_fusion_backward(
            self.grad_out.reshape(-1, self.out_dim),
            flat,
            self.proj_weights,
            self.proj_biases,
            self.score_weight,
            attn,
            needs_grad,
        )
        grad_xs = None if grads[0] is None else [g.reshape(x.shape) for g, x in zip(grads[0], self.xs)]
        return (
            out.reshape(*self.lead, self.out_dim),
            attn.reshape(*self.lead, len(self.xs)),
            (grad_xs, *grads[1:]),
        )

    def reference(self, dtype):
        """Reference (out, weights) and the gradients in the layout of `attention_fusion_backward`."""
        xs = [x.detach().to(dtype).requires_grad_() for x in self.xs]
        params = [_leaves(p, dtype) for p in self.parameters()]
        out, weights = attention_fusion_reference(xs, *params, return_weights=True)
        groups = [xs, *params]
        flat_leaves = [t for g in groups if g is not None for t in (g if isinstance(g, list) else [g])]
        flat_grads = list(torch.autograd.grad(out, flat_leaves, self.grad_out.to(dtype)))
        grads = []
        for group in groups:
            if group is None:
                grads.append(None)
            elif isinstance(group, list):
                grads.append([flat_grads.pop(0) for _ in group])
            else:
                grads.append(flat_grads.pop(0))
        return out.detach(), weights.detach(), grads


def _leaves(value, dtype):
    if value is None:
        return None
    if isinstance(value, list):
        return [v.detach().to(dtype).requires_grad_() for v in value]
    return value.detach().to(dtype).requires_grad_()


def _named(out, attn, grads):
    """Flat (name, tensor) pairs of everything the kernels return."""
    names = ["grad_xs", "grad_proj_weights", "grad_proj_biases", "grad_score_weight", "grad_score_bias"]
    pairs = [("out", out), ("attn", attn)]
    for name, grad in zip(names, grads):
        if isinstance(grad, list):
            pairs += [(f"{name}[{i}]", g) for i, g in enumerate(grad)]
        else:
            pairs.append((name, grad))
    return pairs


def _assert_matches(case, actual, dtype):
    """float32: equal to the float32 reference within float32 tolerance. Half types: the error
    against a float64 evaluation stays within twice the reference's own error in that dtype."""
    out, attn, grads = actual
    plain = _named(*case.reference(dtype))
    got = _named(out, attn, grads)
    assert [name for name, _ in got] == [name for name, _ in plain]
    if dtype == torch.float32:
        for (name, value), (_, expected) in zip(got, plain):
            if expected is None:
                assert value is None, name
                continue
            torch.testing.assert_close(value, expected, **FLOAT32_SMALL, msg=lambda m, n=name: f"{n}: {m}")
        return
    exact = _named(*case.reference(torch.float64))
    for (name, value), (_, expected), (_, reference) in zip(got, exact, plain):
        if expected is None:
            assert value is None, name
            continue
        assert value.dtype == dtype and value.shape == expected.shape, name
        assert_distance(value, reference, expected, TRITON_DISTANCE_SLACK[dtype], name)


# (dims D_m, leading dims, D_out, projection biases, score bias): M = 1, 2, 3 and 5, odd dims, 1 to
# 37 rows (37 split the weight-gradient reductions in two under the interpreter), 3-D inputs,
# biases present or None.
CASES = [
    ((7, 20), (1,), 9, True, True),
    ((7, 20), (37,), 33, False, True),
    ((7, 20, 13), (5,), 33, True, False),
    ((7, 20, 13), (2, 3), 9, True, True),
    ((7, 20, 13), (37,), 9, False, False),
    ((7, 20, 13, 5, 9), (5,), 9, True, True),
    ((7, 20, 13, 5, 9), (37,), 9, False, True),
    ((13,), (5,), 9, True, True),
]


@pytest.mark.parametrize("dtype", SMALL_DTYPES, ids=str)
@pytest.mark.parametrize(("dims", "lead", "out_dim", "proj_bias", "score_bias"), CASES)
def test_forward_and_backward_match_reference(dims, lead, out_dim, proj_bias, score_bias, dtype):
    case = Case(dims, lead, out_dim, dtype, proj_bias, score_bias)
    _assert_matches(case, case.run_kernels(), dtype)


@pytest.mark.parametrize(
    "needs_grad",
    [
        (True, False, False, False, False),
        (False, True, False, False, False),
        (False, False, True, False, False),
        (False, False, False, True, False),
        (False, False, False, False, True),
        (False, True, False, True, True),
    ],
)
def test_backward_computes_only_what_is_needed(needs_grad):
    case = Case((7, 20, 13), (37,), 9, torch.float32)
    _, _, grads = case.run_kernels(needs_grad)
    _, _, expected = case.reference(torch.float32)
    for needed, got, want in zip(needs_grad, grads, expected):
        if not needed:
            assert got is None
            continue
        for g, w in zip(got, want) if isinstance(want, list) else [(got, want)]:
            torch.testing.assert_close(g, w, **FLOAT32_SMALL)


def test_zero_rows():
    case = Case((7, 20), (0,), 9, torch.float32)
    out, attn, grads = case.run_kernels()
    assert out.shape == (0, 9) and attn.shape == (0, 2)
    assert [g.shape for g in grads[0]] == [(0, 7), (0, 20)]
    assert all(torch.equal(g, torch.zeros_like(g)) for g in [*grads[1], *grads[2], grads[3], grads[4]])


def _with(case, **changes):
    args = {
        "xs": case.xs,
        "proj_weights": case.proj_weights,
        "proj_biases": case.proj_biases,
        "score_weight": case.score_weight,
        "score_bias": case.score_bias,
    }
    args.update(changes)
    return args


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            lambda c: {"xs": c.xs * 5, "proj_weights": c.proj_weights * 5},
            "xs: the Triton kernels take 1 to 8",
        ),
        (lambda c: {"proj_weights": c.proj_weights[:1]}, "proj_weights: expected 2 tensors"),
        (
            lambda c: {"proj_weights": [c.proj_weights[0], c.proj_weights[1][:, :19]]},
            r"proj_weights\[1\]: expected shape",
        ),
        (
            lambda c: {"proj_biases": [c.proj_biases[0], c.proj_biases[1][:8]]},
            r"proj_biases\[1\]: expected shape",
        ),
        (lambda c: {"score_weight": c.score_weight[:, :26]}, r"score_weight: expected shape \(2, 27\)"),
        (lambda c: {"score_bias": c.score_bias.half()}, "score_bias: expected dtype torch.float32"),
        (
            lambda c: {"xs": [c.xs[0], c.xs[1][:4].contiguous()]},
            r"xs\[1\]: expected a 2-D tensor with 5 rows",
        ),
        (lambda c: {"xs": [c.xs[0], c.xs[1].half()]}, r"xs\[1\]: expected dtype torch.float32"),
    ],
)
def test_bad_arguments_raise_before_any_launch(changes, message):
    case = Case((7, 20), (5,), 9, torch.float32)
    with pytest.raises(ValueError, match=message):
        attention_fusion_forward(**_with(case, **changes(case)))


@pytest.mark.cuda
@needs_compiled_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    ("dims", "lead", "out_dim"),
    [
        ((768, 512), (8, 512), 512),
        ((768, 512, 128), (4099,), 256),
        ((300, 20, 33, 1000, 64), (64,), 250),
        ((64,) * 8, (1,), 64),
    ],
)
def test_cuda_realistic_sizes(dims, lead, out_dim, dtype):
    case = Case(dims, lead, out_dim, dtype, device="cuda")
    got = _named(*case.run_kernels())
    exact = _named(*case.reference(torch.float64))
    plain = _named(*case.reference(dtype))
    for (name, value), (_, expected), (_, reference) in zip(got, exact, plain):
        assert_distance(value, reference, expected, TRITON_DISTANCE_SLACK[dtype], name)


@pytest.mark.parametrize("rows", [5, 37])
def test_outputs_never_share_storage(rows):
    """Custom ops may not return tensors that alias each other or their inputs."""
    case = Case((7, 20, 13), (rows,), 9, torch.float32)
    out, attn, grads = case.run_kernels()
    outputs = [out, attn, *grads[0], *grads[1], *grads[2], grads[3], grads[4]]
    storages = {t.untyped_storage().data_ptr() for t in outputs}
    assert len(storages) == len(outputs)
    inputs = [*case.xs, *case.proj_weights, *case.proj_biases, case.score_weight, case.score_bias]
    assert storages.isdisjoint(t.untyped_storage().data_ptr() for t in inputs)
