"""Calls autograd does not record (no_grad, inference_mode, or no argument requiring a gradient).

The compiled ops take a shorter path for them; it must give the reference's result and build no graph,
while a recorded call from the same arguments still differentiates.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from tests._fusion_cases import leaves_of
from tests._op_cases import CASES
from tests._tolerances import FLOAT32_SMALL

MODES = {
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
    "nothing_requires_grad": contextlib.nullcontext,
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", CASES)
def test_unrecorded_call_matches_reference_and_builds_no_graph(op, mode):
    make_args, fn, reference = CASES[op]
    args = make_args(mode != "nothing_requires_grad")
    with MODES[mode]():
        out = fn(*args)
    assert not out.requires_grad and out.grad_fn is None
    with torch.no_grad():
        expected = reference(*args)
    torch.testing.assert_close(out, expected, **FLOAT32_SMALL)


@pytest.mark.parametrize("op", CASES)
def test_recorded_call_after_unrecorded_one_still_differentiates(op):
    make_args, fn, reference = CASES[op]
    args = make_args(True)
    with torch.no_grad():
        fn(*args)
    leaves = leaves_of(args)
    got = torch.autograd.grad(fn(*args).sum(), leaves)
    want = torch.autograd.grad(reference(*args).sum(), leaves)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **FLOAT32_SMALL)
