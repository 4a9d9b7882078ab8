"""Loads the CMake-built op library with `torch.ops.load_library` and checks its ops against plain
PyTorch. Run in its own process and without importing mmfast, whose `_C` registers the same op
names:

    python .ci/check_cmake_library.py build-cmake/libmmfast_ops.so
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

ACTIVATIONS = {
    "none": lambda y: y,
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda y: F.gelu(y, approximate="tanh"),
    "silu": F.silu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}


def check_concat_linear() -> None:
    xs = [torch.randn(5, 3, d, dtype=torch.float64) for d in (7, 16, 3)]
    weight, bias = torch.randn(9, 26, dtype=torch.float64), torch.randn(9, dtype=torch.float64)
    for name, activation in ACTIVATIONS.items():
        got = torch.ops.mmfast.concat_linear(xs, weight, bias, name)
        expected = activation(F.linear(torch.cat(xs, -1), weight, bias))
        torch.testing.assert_close(got, expected, msg=lambda m, n=name: f"concat_linear {n}: {m}")
    xs32 = [x.float() for x in xs]
    got = torch.ops.mmfast.concat_linear(xs32, weight.float(), None, "gelu")
    torch.testing.assert_close(got, F.gelu(F.linear(torch.cat(xs32, -1), weight.float())))


def check_gated_fusion() -> None:
    xs = [torch.randn(6, 8, dtype=torch.float64) for _ in range(2)]
    weight, bias = torch.randn(8, 16, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    gate = torch.sigmoid(F.linear(torch.cat(xs, -1), weight, bias))
    torch.testing.assert_close(
        torch.ops.mmfast.gated_fusion(xs, weight, bias), gate * xs[0] + (1 - gate) * xs[1]
    )


def main(path: str) -> None:
    assert "mmfast" not in sys.modules
    torch.ops.load_library(path)
    check_concat_linear()
    checked = ["concat_linear"]
    if hasattr(torch.ops.mmfast, "gated_fusion"):
        check_gated_fusion()
        checked.append("gated_fusion")
    print(f"{path}: {', '.join(checked)} match plain PyTorch")


if __name__ == "__main__":
    main(sys.argv[1])
