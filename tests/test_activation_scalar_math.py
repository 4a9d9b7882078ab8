"""kernels/activation.h's scalar path (the one the CUDA kernels run) against PyTorch.

The CPU kernels use the same formulas on at::vec registers; this compiles a tiny C++ program with
the header's ScalarMath and compares every activation and derivative with PyTorch's own."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from mmfast.ops import ACTIVATIONS, apply_activation
from tests._tolerances import SCALAR_ACTIVATION, tol

ROOT = Path(__file__).resolve().parent.parent
VALUES = [
    0.0,
    1e-30,
    -1e-30,
    1e-6,
    -1e-6,
    0.3,
    -0.3,
    1.0,
    -1.0,
    2.5,
    -2.5,
    7.0,
    -7.0,
    9.5,
    -9.5,
    13.5,
    -13.5,
    30.0,
    -30.0,
    88.0,
    -88.0,
    100.0,
    -100.0,
]


@pytest.fixture(scope="module")
def scalar_check(tmp_path_factory) -> Path:
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.fail("a C++ compiler is needed to build tests/cpp/activation_scalar_check.cpp")
    binary = tmp_path_factory.mktemp("scalar") / "activation_scalar_check"
    subprocess.run(
        [
            compiler,
            "-std=c++17",
            "-O1",
            "-I",
            str(ROOT / "kernels"),
            str(ROOT / "tests/cpp/activation_scalar_check.cpp"),
            "-o",
            str(binary),
        ],
        check=True,
    )
    return binary


def _run(binary: Path, dtype: str, activation: str) -> torch.Tensor:
    index = ACTIVATIONS.index(activation)
    grads = [1.0, -0.5, 2.0]
    lines = [f"{index} {x!r} {g!r}" for x in VALUES for g in grads]
    result = subprocess.run(
        [str(binary), dtype], input="\n".join(lines), capture_output=True, text=True, check=True
    )
    values = [[float(v) for v in line.split()] for line in result.stdout.splitlines()]
    return torch.tensor(values, dtype=torch.float64).view(len(VALUES), len(grads), 2)


def _expected(activation: str, dtype: torch.dtype) -> torch.Tensor:
    x = torch.tensor(VALUES, dtype=dtype).repeat_interleave(3).requires_grad_()
    grad = torch.tensor([1.0, -0.5, 2.0], dtype=dtype).repeat(len(VALUES))
    y = apply_activation(x, activation)
    (dx,) = torch.autograd.grad(y, x, grad)
    return torch.stack([y.detach(), dx], -1).double().view(len(VALUES), 3, 2)


def test_activation_names_match_the_header():
    header = (ROOT / "kernels/activation.h").read_text()
    names = header.split("kActivationNames[kNumActivations] = {", 1)[1].split("}", 1)[0]
    assert [n.strip().strip('"') for n in names.replace("\n", " ").split(",")] == list(ACTIVATIONS)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize(("dtype", "torch_dtype"), [("double", torch.float64), ("float", torch.float32)])
def test_scalar_math_matches_pytorch(scalar_check, activation, dtype, torch_dtype):
    got = _run(scalar_check, dtype, activation)
    want = _expected(activation, torch_dtype)
    torch.testing.assert_close(got, want, **tol(SCALAR_ACTIVATION[torch_dtype]))
