"""Bad input to gated_fusion and attention_fusion: a clear error naming the argument, raised
before any kernel runs, both from the Python functions and from the C++ ops."""

from __future__ import annotations

import pytest
import torch

from mmfast.ops import attention_fusion, gated_fusion


def _gated():
    return [torch.randn(4, 3) for _ in range(3)], torch.randn(9, 9), torch.randn(9)


GATED_CASES = [
    (
        lambda xs, w, b: ([xs[0]], torch.randn(3, 3), None),
        ValueError,
        r"inputs: expected 2 to 16 tensors, got 1",
    ),
    (
        lambda xs, w, b: ([torch.randn(4, 1)] * 17, torch.randn(17, 17), None),
        ValueError,
        r"inputs: expected 2 to 16 tensors, got 17",
    ),
    (
        lambda xs, w, b: ([xs[0], torch.randn(4, 5), xs[2]], w, b),
        ValueError,
        r"inputs\[1\]: expected feature dim 3 like inputs\[0\].*got 5",
    ),
    (
        lambda xs, w, b: ([xs[0], torch.randn(5, 3), xs[2]], w, b),
        ValueError,
        r"inputs\[1\]: leading dims \[5\] differ from inputs\[0\]'s \[4\]",
    ),
    (
        lambda xs, w, b: (xs, torch.randn(3, 9), b),
        ValueError,
        r"weight: expected shape \[9, 9\] for 3 inputs",
    ),
    (
        lambda xs, w, b: (xs[:2], torch.randn(6, 6), None),
        ValueError,
        r"weight: expected shape \[3, 6\] for 2 inputs of dim 3 \(\[D, 2D\] for two inputs\)",
    ),
    (lambda xs, w, b: (xs, w, torch.randn(3)), ValueError, r"bias: expected shape \[9\], got \[3\]"),
    (lambda xs, w, b: ([x.double() for x in xs], w, b), TypeError, r"weight: expected dtype torch.float64"),
    (
        lambda xs, w, b: ([xs[0], xs[1].double(), xs[2]], w, b),
        TypeError,
        r"inputs\[1\]: expected dtype torch.float32 like inputs\[0\], got torch.float64",
    ),
    (lambda xs, w, b: (xs, w, b.to("meta")), ValueError, r"bias: expected device cpu"),
    (
        lambda xs, w, b: ([x.long() for x in xs], w, b),
        TypeError,
        r"inputs\[0\]: expected a floating-point tensor, got torch.int64",
    ),
]


@pytest.mark.parametrize(("mutate", "error", "pattern"), GATED_CASES)
def test_gated_fusion_bad_input(mutate, error, pattern):
    args = mutate(*_gated())
    with pytest.raises(error, match=pattern):
        gated_fusion(*args)
    # Callers of the op itself get the same message from C++.
    with pytest.raises((error, RuntimeError), match=pattern):
        torch.ops.mmfast.gated_fusion(*args)


def _attention():
    xs = [torch.randn(4, 3), torch.randn(4, 5)]
    return (
        xs,
        [torch.randn(6, 3), torch.randn(6, 5)],
        [torch.randn(6), torch.randn(6)],
        torch.randn(2, 8),
        None,
    )


ATTENTION_CASES = [
    (lambda a: ([], [], None, a[3], None), ValueError, r"inputs: expected 1 to 16 tensors, got 0"),
    (
        lambda a: (a[0], a[1][:1], a[2], a[3], None),
        ValueError,
        r"proj_weights: expected 2 tensors \(one per input\), got 1",
    ),
    (
        lambda a: (a[0], [a[1][0], torch.randn(6, 4)], a[2], a[3], None),
        ValueError,
        r"proj_weights\[1\]: expected shape \[6, 5\], got \[6, 4\]",
    ),
    (
        lambda a: (a[0], [a[1][0], torch.randn(7, 5)], a[2], a[3], None),
        ValueError,
        r"proj_weights\[1\]: expected shape \[6, 5\], got \[7, 5\]",
    ),
    (
        lambda a: (a[0], a[1], a[2][:1], a[3], None),
        ValueError,
        r"proj_biases: expected .*2 tensors \(one per input\), got 1",
    ),
    (
        lambda a: (a[0], a[1], [a[2][0], torch.randn(5)], a[3], None),
        ValueError,
        r"proj_biases\[1\]: expected shape \[6\], got \[5\]",
    ),
    (
        lambda a: (a[0], a[1], a[2], torch.randn(3, 8), None),
        ValueError,
        r"score_weight: expected shape \[2, 8\]",
    ),
    (lambda a: (a[0], a[1], a[2], a[3], torch.randn(3)), ValueError, r"score_bias: expected shape \[2\]"),
    (
        lambda a: (a[0], [a[1][0].double(), a[1][1]], a[2], a[3], None),
        TypeError,
        r"proj_weights\[0\]: expected dtype torch.float32 like the inputs, got torch.float64",
    ),
    (
        lambda a: ([a[0][0], torch.randn(3, 5)], a[1], a[2], a[3], None),
        ValueError,
        r"inputs\[1\]: leading dims \[3\] differ",
    ),
    (lambda a: (a[0], a[1], a[2], a[3].to("meta"), None), ValueError, r"score_weight: expected device cpu"),
]


@pytest.mark.parametrize(("mutate", "error", "pattern"), ATTENTION_CASES)
def test_attention_fusion_bad_input(mutate, error, pattern):
    args = mutate(_attention())
    with pytest.raises(error, match=pattern):
        attention_fusion(*args)
    xs, projs, biases, score, sb = args
    if xs and len(projs) == len(xs) and (biases is None or len(biases) == len(xs)):
        with pytest.raises((error, RuntimeError), match=pattern):
            torch.ops.mmfast.attention_fusion(xs, projs, biases or [], score, sb)


def test_proj_weights_must_be_a_sequence():
    xs, projs, biases, score, _ = _attention()
    with pytest.raises(TypeError, match=r"proj_weights: expected a sequence of 2 tensors, got Tensor"):
        attention_fusion(xs, projs[0], biases, score)


def test_backward_op_checks_its_saved_tensors():
    xs, weight, _ = _gated()
    with pytest.raises(ValueError, match=r"gates: expected shape \[4, 9\]"):
        torch.ops.mmfast.gated_fusion_backward(torch.randn(4, 3), xs, weight, torch.randn(4, 3), [True] * 3)
    a = _attention()
    with pytest.raises(ValueError, match=r"weights: expected shape \[4, 2\]"):
        torch.ops.mmfast.attention_fusion_backward(
            torch.randn(4, 6), None, a[0], a[1], a[2], a[3], torch.randn(4, 3), [True] * 5
        )
