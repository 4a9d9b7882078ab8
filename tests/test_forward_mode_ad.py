"""Forward-mode AD (dual tensors, torch.func.jvp) is not supported by the compiled ops: it raises a
clear error, in grad mode or not, rather than silently dropping the tangents."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.autograd.forward_ad as fwAD

from tests._op_cases import CASES


def _with_first_input(args, first):
    inputs = list(args[0])
    return [[first, *inputs[1:]], *args[1:]]


@pytest.mark.parametrize("grad_mode", [contextlib.nullcontext, torch.no_grad], ids=["grad", "no_grad"])
@pytest.mark.parametrize("op", CASES)
def test_dual_tensor_input_raises(op, grad_mode):
    make_args, fn, _ = CASES[op]
    args = make_args(False)
    first = args[0][0]
    with fwAD.dual_level(), grad_mode():
        dual = fwAD.make_dual(first, torch.randn_like(first))
        with pytest.raises(RuntimeError, match="jvp is not implemented"):
            fn(*_with_first_input(args, dual))


@pytest.mark.parametrize("op", CASES)
def test_torch_func_jvp_raises(op):
    make_args, fn, _ = CASES[op]
    args = make_args(False)
    first = args[0][0]
    with pytest.raises(RuntimeError, match="torch::autograd::Function"):
        torch.func.jvp(lambda x: fn(*_with_first_input(args, x)), (first,), (torch.randn_like(first),))
