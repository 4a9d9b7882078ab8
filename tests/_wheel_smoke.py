"""Smoke test of an installed mmfast wheel, run by tests/test_wheel.py in a fresh virtual environment
from a directory outside the source tree: the compiled backend is loaded, and every op in the build
matches its reference (forward and gradients). Prints one line per op; exits non-zero on failure.

tests/test_wheel.py copies tests/_tolerances.py beside it (the script's folder is first on sys.path)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

warnings.simplefilter("error")  # the compiled extension must load without the fallback warning
from _tolerances import FORWARD, GRAD  # noqa: E402

import mmfast  # noqa: E402
import mmfast.ops  # noqa: E402

SOURCE_TREE = Path(sys.argv[1]).resolve()


def leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def check(name: str, fused_fn, reference_fn, tensors: list[torch.Tensor]) -> None:
    fused_inputs, reference_inputs = leaves(*tensors), leaves(*tensors)
    fused, reference = fused_fn(fused_inputs), reference_fn(reference_inputs)
    # Every case is float64.
    torch.testing.assert_close(fused, reference, **FORWARD[torch.float64])
    fused.square().sum().backward()
    reference.square().sum().backward()
    for index, (a, b) in enumerate(zip(fused_inputs, reference_inputs)):
        torch.testing.assert_close(
            a.grad, b.grad, **GRAD[torch.float64], msg=lambda m, i=index: f"gradient {i}: {m}"
        )
    print(f"{name}: ok (output {tuple(fused.shape)}, {len(tensors)} gradients)")


def main() -> None:
    location = Path(mmfast.__file__).resolve()
    assert SOURCE_TREE not in location.parents, f"mmfast imported from the source tree: {location}"
    info = mmfast.backend_info()
    print(f"mmfast {mmfast.__version__} from {location.parent}, torch {torch.__version__}")
    for op, row in info.items():
        assert row["cpu"].startswith("cpp"), f"{op} does not run its compiled CPU kernel: {row['cpu']}"
    torch.manual_seed(0)
    ops = mmfast.ops

    # concat_linear: three segments, 3-D inputs, a fused activation.
    xs = [torch.randn(2, 3, d, dtype=torch.float64) for d in (5, 7, 4)]
    weight, bias = torch.randn(6, 16, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    check(
        "concat_linear",
        lambda t: ops.concat_linear(t[:3], t[3], t[4], activation="gelu"),
        lambda t: ops.concat_linear_reference(t[:3], t[3], t[4], activation="gelu"),
        [*xs, weight, bias],
    )
    if hasattr(ops, "gated_fusion"):
        xs = [torch.randn(4, 8, dtype=torch.float64) for _ in range(3)]
        weight, bias = torch.randn(24, 24, dtype=torch.float64), torch.randn(24, dtype=torch.float64)
        check(
            "gated_fusion",
            lambda t: ops.gated_fusion(t[:3], t[3], t[4]),
            lambda t: ops.gated_fusion_reference(t[:3], t[3], t[4]),
            [*xs, weight, bias],
        )
    if hasattr(ops, "attention_fusion"):
        dims, out_dim = (6, 4, 5), 3
        xs = [torch.randn(4, d, dtype=torch.float64) for d in dims]
        projections = [torch.randn(out_dim, d, dtype=torch.float64) for d in dims]
        proj_biases = [torch.randn(out_dim, dtype=torch.float64) for _ in dims]
        score_weight = torch.randn(len(dims), sum(dims), dtype=torch.float64)
        score_bias = torch.randn(len(dims), dtype=torch.float64)
        check(
            "attention_fusion",
            lambda t: ops.attention_fusion(t[:3], t[3:6], t[6:9], t[9], t[10]),
            lambda t: ops.attention_fusion_reference(t[:3], t[3:6], t[6:9], t[9], t[10]),
            [*xs, *projections, *proj_biases, score_weight, score_bias],
        )


if __name__ == "__main__":
    main()
