"""concat_linear on randomized shapes (hypothesis)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfast.ops import ACTIVATIONS, concat_linear, concat_linear_reference
from tests._tolerances import FLOAT32_UNSCALED


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=16).filter(lambda s: sum(s) > 0),
    lead=st.lists(st.integers(0, 6), min_size=1, max_size=3),
    out_features=st.integers(1, 33),
    activation=st.sampled_from(ACTIVATIONS),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_shapes_match_reference(sizes, lead, out_features, activation, bias, seed):
    generator = torch.Generator().manual_seed(seed)
    xs = [torch.randn(*lead, d, generator=generator, requires_grad=True) for d in sizes]
    weight = torch.randn(out_features, sum(sizes), generator=generator, requires_grad=True)
    b = torch.randn(out_features, generator=generator, requires_grad=True) if bias else None
    out = concat_linear(xs, weight, b, activation)
    expected = concat_linear_reference(xs, weight, b, activation)
    torch.testing.assert_close(out, expected, **FLOAT32_UNSCALED)
    leaves = [*xs, weight] + ([b] if bias else [])
    grad_out = torch.randn(out.shape, generator=generator)
    for got, want in zip(
        torch.autograd.grad(out, leaves, grad_out), torch.autograd.grad(expected, leaves, grad_out)
    ):
        torch.testing.assert_close(got, want, **FLOAT32_UNSCALED)
