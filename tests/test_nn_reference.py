"""mmfast.nn.reference: the plain-PyTorch twins have the fused layers' state dicts and outputs."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mmfast.nn import AttentionFusion, ConcatLinear, GatedFusion
from mmfast.nn.reference import (
    ReferenceAttentionFusion,
    ReferenceConcatLinear,
    ReferenceGatedFusion,
    scaled_dot_product_attention_reference,
)

REPO = Path(__file__).resolve().parents[1]

# (fused layer, its twin, constructor arguments, input feature sizes)
PAIRS = {
    "concat-linear": (ConcatLinear, ReferenceConcatLinear, ([3, 5, 2], 4), {"activation": "gelu"}, [3, 5, 2]),
    "concat-linear-no-bias": (ConcatLinear, ReferenceConcatLinear, ([4], 6), {"bias": False}, [4]),
    "gated-2": (GatedFusion, ReferenceGatedFusion, (6,), {}, [6, 6]),
    "gated-3": (GatedFusion, ReferenceGatedFusion, (6,), {"num_modalities": 3}, [6, 6, 6]),
    "attention": (AttentionFusion, ReferenceAttentionFusion, ([3, 5, 2],), {"out_dim": 4}, [3, 5, 2]),
}


def _inputs(sizes: list[int], batch: int = 7) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(len(sizes))
    return [torch.randn(batch, d, generator=generator, requires_grad=True) for d in sizes]


@pytest.mark.parametrize("case", sorted(PAIRS))
def test_twin_state_dicts_load_strictly_both_ways_with_equal_outputs(case: str) -> None:
    fused_cls, twin_cls, args, kwargs, sizes = PAIRS[case]
    torch.manual_seed(0)
    fused = fused_cls(*args, **kwargs)
    torch.manual_seed(0)
    twin = twin_cls(*args, **kwargs)
    assert isinstance(twin, fused_cls)
    # Same names, shapes and (from the same seed) initial values.
    assert list(twin.state_dict()) == list(fused.state_dict())
    for name, value in fused.state_dict().items():
        assert torch.equal(twin.state_dict()[name], value), name
    xs = _inputs(sizes)
    # Fused weights into the twin, strictly, then twin weights (another draw) into the fused layer.
    torch.manual_seed(1)
    twin = twin_cls(*args, **kwargs)
    twin.load_state_dict(fused.state_dict(), strict=True)
    torch.testing.assert_close(twin(xs), fused(xs), atol=1e-5, rtol=1e-4)
    torch.manual_seed(2)
    other = twin_cls(*args, **kwargs)
    fused.load_state_dict(other.state_dict(), strict=True)
    torch.testing.assert_close(fused(xs), other(xs), atol=1e-5, rtol=1e-4)
    # And the gradients agree.
    grads = [torch.autograd.grad(m(xs).sum(), [*xs, *m.parameters()]) for m in (fused, other)]
    for g_fused, g_twin in zip(*grads):
        torch.testing.assert_close(g_fused, g_twin, atol=1e-5, rtol=1e-4)


def test_concat_linear_twin_reads_and_refuses_inputs_like_the_layer() -> None:
    layer, twin = ConcatLinear([3, 5], 4), ReferenceConcatLinear([3, 5], 4)
    twin.load_state_dict(layer.state_dict())
    a, b = torch.randn(2, 3), torch.randn(2, 5)
    torch.testing.assert_close(twin(a, b), layer(a, b))
    torch.testing.assert_close(twin([a, b]), layer([a, b]))
    # torch.cat would accept the sizes swapped (same sum); both layers refuse them, in the same words.
    for bad in ([b, a], [a], [a, "b"]):
        with pytest.raises((ValueError, TypeError)) as fused_error:
            layer(bad)
        with pytest.raises(fused_error.type, match=f"^{re.escape(str(fused_error.value))}$"):
            twin(bad)


def test_attention_twin_returns_the_weights_too() -> None:
    layer = AttentionFusion({"image": 4, "text": 6}, out_dim=3)
    twin = ReferenceAttentionFusion({"image": 4, "text": 6}, out_dim=3)
    twin.load_state_dict(layer.state_dict())
    inputs = {"text": torch.randn(5, 6), "image": torch.randn(5, 4)}
    out, weights = twin(inputs, return_weights=True)
    expected_out, expected_weights = layer(inputs, return_weights=True)
    torch.testing.assert_close(out, expected_out)
    torch.testing.assert_close(weights, expected_weights)


def test_attention_reference_matches_scaled_dot_product_attention() -> None:
    q, k, v = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 5)
    mask = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    mask[0, ..., 4:] = False
    torch.testing.assert_close(
        scaled_dot_product_attention_reference(q, k, v, attn_mask=mask),
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
    )
    torch.testing.assert_close(
        scaled_dot_product_attention_reference(q, k, v), F.scaled_dot_product_attention(q, k, v)
    )


def test_old_import_path_still_works_with_a_deprecation_warning() -> None:
    weighted = importlib.import_module("mmfast.models.weighted")
    for cls in (ReferenceGatedFusion, ReferenceAttentionFusion):
        with pytest.warns(DeprecationWarning, match="mmfast.nn.reference"):
            assert getattr(weighted, cls.__name__) is cls
    with pytest.raises(AttributeError):
        weighted.NoSuchTwin  # noqa: B018


def test_reference_twins_use_only_the_public_ops_namespace() -> None:
    tree = ast.parse((REPO / "mmfast" / "nn" / "reference.py").read_text(encoding="utf-8"))
    modules = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    modules += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert "mmfast.ops" in modules
    assert not [m for m in modules if m.startswith("mmfast.ops.")]
