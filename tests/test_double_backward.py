"""The ops are differentiable once: differentiating their gradients raises a clear error (never
silently wrong second derivatives), while create_graph=True alone still gives correct gradients."""

from __future__ import annotations

import pytest
import torch

from tests._fusion_cases import leaves_of
from tests._op_cases import CASES
from tests._tolerances import FLOAT32_SMALL

BACKWARD_OPS = {
    "concat_linear": "mmfast::concat_linear_backward",
    "gated_fusion": "mmfast::gated_fusion_backward",
    "attention_fusion": "mmfast::attention_fusion_backward",
}


def _gradients_with_graph(op):
    """The op's problem, its leaves, and the gradients of a loss on its output with create_graph=True."""
    make_args, fn, _ = CASES[op]
    args = make_args(True)
    leaves = leaves_of(args)
    return args, leaves, torch.autograd.grad(fn(*args).square().sum(), leaves, create_graph=True)


@pytest.mark.parametrize("op", CASES)
def test_second_derivative_raises_naming_the_backward_op(op):
    _, leaves, grads = _gradients_with_graph(op)
    with pytest.raises(RuntimeError, match=f"derivative for {BACKWARD_OPS[op]} is not implemented"):
        torch.autograd.grad(sum(g.sum() for g in grads), leaves, allow_unused=True)


@pytest.mark.parametrize("op", CASES)
def test_create_graph_alone_gives_the_reference_gradients(op):
    args, leaves, got = _gradients_with_graph(op)
    reference = CASES[op][2]
    want = torch.autograd.grad(reference(*args).square().sum(), leaves)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **FLOAT32_SMALL)
