"""Bad input to concat_linear: a clear error naming the argument, before any kernel runs."""

from __future__ import annotations

import pytest
import torch

from mmfast.ops import concat_linear


def _ok():
    return [torch.randn(4, 3), torch.randn(4, 5)], torch.randn(6, 8), torch.randn(6)


@pytest.mark.parametrize(
    ("mutate", "error", "pattern"),
    [
        (lambda xs, w, b: ([], w, b, "none"), ValueError, r"inputs: expected 1 to 16 tensors, got 0"),
        (
            lambda xs, w, b: ([torch.randn(4, 1)] * 17, torch.randn(6, 17), b, "none"),
            ValueError,
            r"inputs: expected 1 to 16 tensors, got 17",
        ),
        (lambda xs, w, b: (xs[0], w, b, "none"), TypeError, r"inputs: expected a sequence of tensors"),
        (
            lambda xs, w, b: ([xs[0], torch.randn(5, 5)], w, b, "none"),
            ValueError,
            r"inputs\[1\]: leading dims \[5\] differ from inputs\[0\]'s \[4\]",
        ),
        (
            lambda xs, w, b: (xs, torch.randn(6, 9), b, "none"),
            ValueError,
            r"weight: expected shape \[out_features, 8\].*got \[6, 9\]",
        ),
        (lambda xs, w, b: (xs, torch.randn(48), b, "none"), ValueError, r"weight: expected shape"),
        (
            lambda xs, w, b: (xs, w, torch.randn(5), "none"),
            ValueError,
            r"bias: expected shape \[6\], got \[5\]",
        ),
        (
            lambda xs, w, b: ([xs[0], xs[1].double()], w, b, "none"),
            TypeError,
            r"inputs\[1\]: expected dtype torch.float32 like inputs\[0\], got torch.float64",
        ),
        (lambda xs, w, b: (xs, w.double(), b, "none"), TypeError, r"weight: expected dtype torch.float32"),
        (lambda xs, w, b: (xs, w, b.bfloat16(), "none"), TypeError, r"bias: expected dtype torch.float32"),
        (
            lambda xs, w, b: ([torch.ones(4, 3, dtype=torch.int64), xs[1]], w, b, "none"),
            TypeError,
            r"inputs\[0\]: expected a floating-point tensor, got torch.int64",
        ),
        (lambda xs, w, b: ([torch.tensor(1.0), xs[1]], w, b, "none"), ValueError, r"inputs\[0\]: .*0-d"),
        (
            lambda xs, w, b: (xs, w, b, "gelu_erf"),
            ValueError,
            r"activation: unknown activation 'gelu_erf'; expected one of 'none', 'relu'",
        ),
        (lambda xs, w, b: (xs, w, b, None), ValueError, r"activation: unknown activation None"),
        (lambda xs, w, b: (xs, w, b.to("meta"), "none"), ValueError, r"bias: expected device cpu"),
        (
            lambda xs, w, b: ([xs[0], xs[1].to("meta")], w, b, "none"),
            ValueError,
            r"inputs\[1\]: expected device cpu like inputs\[0\], got meta",
        ),
    ],
)
def test_python_entry_point_rejects(mutate, error, pattern):
    with pytest.raises(error, match=pattern):
        concat_linear(*mutate(*_ok()))


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (
            lambda xs, w, b: (xs, torch.randn(6, 9), b, "none", False),
            r"weight: expected shape \[out_features, 8\]",
        ),
        (lambda xs, w, b: (xs, w, torch.randn(2), "none", False), r"bias: expected shape \[6\]"),
        (lambda xs, w, b: (xs, w, b, "swish", False), r"activation: unknown activation 'swish'"),
        (lambda xs, w, b: ([xs[0], torch.randn(3, 5)], w, b, "none", False), r"inputs\[1\]: leading dims"),
        (lambda xs, w, b: ([xs[0], xs[1].double()], w, b, "none", False), r"inputs\[1\]: expected dtype"),
    ],
)
def test_compiled_op_checks_direct_callers(args, pattern):
    """`torch.ops.mmfast.*` called directly (no Python wrapper) still validates in C++."""
    with pytest.raises((ValueError, TypeError, RuntimeError), match=pattern):
        torch.ops.mmfast.concat_linear_forward(*args(*_ok()))


def test_backward_without_saved_preactivation_is_a_clear_error():
    xs, w, b = _ok()
    xs = [x.requires_grad_() for x in xs]
    out, saved = torch.ops.mmfast.concat_linear_forward(xs, w, b, "gelu", False)
    assert saved.numel() == 0
    with pytest.raises(ValueError, match="save_for_backward=False"):
        out.sum().backward()
