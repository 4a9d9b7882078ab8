"""GatedFusion and AttentionFusion layers: against plain-PyTorch modules written the way
torchmultimodal and papers write them, state dicts, dict inputs and errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mmfast.models.weighted import ReferenceGatedFusion
from mmfast.nn import AttentionFusion, GatedFusion
from tests._tolerances import assert_matches_reference


class TorchMultimodalAttentionFusion(nn.Module):
    """torchmultimodal's AttentionFusionModule, in plain PyTorch (the reference): modalities in sorted
    name order, a softmax-scored Linear over their concatenation, one projection per modality."""

    def __init__(self, channel_to_encoder_dim: dict[str, int], encoding_projection_dim: int | None = None):
        super().__init__()
        attn_in_dim = sum(channel_to_encoder_dim.values())
        self.attention = nn.Sequential(nn.Linear(attn_in_dim, len(channel_to_encoder_dim)), nn.Softmax(-1))
        if encoding_projection_dim is None:
            encoding_projection_dim = min(channel_to_encoder_dim.values())
        self.encoding_projection = nn.ModuleDict(
            {c: nn.Linear(d, encoding_projection_dim) for c, d in channel_to_encoder_dim.items()}
        )

    def forward(self, embeddings: dict[str, torch.Tensor], return_weights: bool = False):
        names = sorted(embeddings)
        weights = self.attention(torch.cat([embeddings[n] for n in names], dim=-1))
        projected = [self.encoding_projection[n](embeddings[n]) for n in names]
        out = (weights.unsqueeze(-1) * torch.stack(projected, dim=-2)).sum(dim=-2)
        return (out, weights) if return_weights else out


class LoopGatedFusion(nn.Module):
    """Gated fusion as eager models write it: a Linear over the concatenation, then a loop."""

    def __init__(self, dim: int, num_modalities: int):
        super().__init__()
        rows = dim if num_modalities == 2 else num_modalities * dim
        self.gate = nn.Linear(num_modalities * dim, rows)
        self.dim, self.count = dim, num_modalities

    def forward(self, xs):
        logits = self.gate(torch.cat(xs, dim=-1))
        if self.count == 2:
            g = torch.sigmoid(logits)
            return g * xs[0] + (1 - g) * xs[1]
        weights = torch.softmax(logits.unflatten(-1, (self.count, self.dim)), dim=-2)
        out = torch.zeros_like(xs[0])
        for m, x in enumerate(xs):
            out = out + weights[..., m, :] * x
        return out


def _in_dtype_of_input(module: nn.Module):
    """The module run in the dtype of its input (the bf16 distance check runs it in float64 too)."""

    def run(inputs):
        first = next(iter(inputs.values())) if isinstance(inputs, dict) else inputs[0]
        return copy.deepcopy(module).to(first.dtype)(inputs)

    return run


DIMS = {"text": 12, "audio": 7, "image": 20}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("lead", [(5,), (2, 3)])
def test_attention_fusion_loads_torchmultimodal_weights(dtype, lead):
    reference = TorchMultimodalAttentionFusion(DIMS, 9).to(dtype)
    layer = AttentionFusion(DIMS, out_dim=9, dtype=dtype)
    layer.load_state_dict(reference.state_dict())
    assert sorted(layer.state_dict()) == sorted(reference.state_dict())
    inputs = {n: torch.randn(*lead, d, dtype=dtype, requires_grad=True) for n, d in DIMS.items()}
    out, weights = layer(inputs, return_weights=True)
    assert out.shape == (*lead, 9) and weights.shape == (*lead, 3)
    assert_matches_reference(out, _in_dtype_of_input(reference), [inputs], dtype)
    if dtype != torch.bfloat16:
        ref_out, ref_weights = reference(inputs, return_weights=True)
        torch.testing.assert_close(weights, ref_weights)
        names = sorted(dict(layer.named_parameters()))
        params = [*inputs.values(), *(dict(layer.named_parameters())[n] for n in names)]
        ref_params = [*inputs.values(), *(dict(reference.named_parameters())[n] for n in names)]
        got = torch.autograd.grad((out**2).sum() + weights.sum(), params)
        want = torch.autograd.grad((ref_out**2).sum() + ref_weights.sum(), ref_params)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)


def test_attention_fusion_sequence_inputs_and_default_out_dim():
    layer = AttentionFusion([12, 7, 20])
    assert layer.out_dim == 7
    reference = TorchMultimodalAttentionFusion({"0": 12, "1": 7, "2": 20})
    reference.load_state_dict(layer.state_dict())
    xs = [torch.randn(4, d) for d in (12, 7, 20)]
    torch.testing.assert_close(layer(xs), reference(dict(zip("012", xs))))


def test_attention_fusion_bad_inputs():
    layer = AttentionFusion(DIMS)
    with pytest.raises(ValueError, match=r"inputs: expected the modalities \['audio', 'image', 'text'\]"):
        layer({"audio": torch.randn(2, 7), "image": torch.randn(2, 20)})
    with pytest.raises(ValueError, match=r"inputs: expected 3 tensors, got 2"):
        layer([torch.randn(2, 7), torch.randn(2, 20)])
    with pytest.raises(ValueError, match=r"proj_weights\[0\]: expected shape \[7, 8\], got \[7, 7\]"):
        layer([torch.randn(2, 8), torch.randn(2, 20), torch.randn(2, 12)])
    with pytest.raises(ValueError, match="in_dims"):
        AttentionFusion([])


@pytest.mark.parametrize("count", [2, 3, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_gated_fusion_matches_the_loop_module(count, dtype):
    reference = LoopGatedFusion(10, count).to(dtype)
    layer = GatedFusion(10, num_modalities=count, dtype=dtype)
    layer.load_state_dict({"weight": reference.gate.weight, "bias": reference.gate.bias})
    xs = [torch.randn(3, 4, 10, dtype=dtype, requires_grad=True) for _ in range(count)]
    out = layer(xs)
    assert_matches_reference(out, _in_dtype_of_input(reference), [xs], dtype)
    if dtype != torch.bfloat16:
        got = torch.autograd.grad(out.pow(2).sum(), [*xs, layer.weight, layer.bias])
        want = torch.autograd.grad(
            reference(xs).pow(2).sum(), [*xs, reference.gate.weight, reference.gate.bias]
        )
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)


def test_gated_fusion_dict_inputs_state_dict_and_errors():
    layer = GatedFusion(6, num_modalities=3)
    twin = ReferenceGatedFusion(6, num_modalities=3)
    twin.load_state_dict(layer.state_dict())
    inputs = {"text": torch.randn(2, 6), "audio": torch.randn(2, 6), "image": torch.randn(2, 6)}
    ordered = [inputs["audio"], inputs["image"], inputs["text"]]
    torch.testing.assert_close(layer(inputs), twin(ordered))
    assert "num_modalities=3" in repr(layer)
    with pytest.raises(ValueError, match=r"inputs: expected 3 tensors, got 2"):
        layer(ordered[:2])
    with pytest.raises(ValueError, match=r"inputs\[1\]: expected feature dim 6"):
        layer([ordered[0], torch.randn(2, 5), ordered[2]])
    with pytest.raises(ValueError, match="num_modalities"):
        GatedFusion(6, num_modalities=1)
    no_bias = GatedFusion(6, bias=False)
    assert no_bias.bias is None and no_bias(ordered[:2]).shape == (2, 6)


@pytest.mark.parametrize("layer_kind", ["gated", "attention"])
def test_layers_compile_fullgraph(layer_kind):
    torch._dynamo.reset()
    layer = GatedFusion(8, num_modalities=3) if layer_kind == "gated" else AttentionFusion([8, 5, 3])
    xs = [torch.randn(4, d, requires_grad=True) for d in ([8, 8, 8] if layer_kind == "gated" else [8, 5, 3])]
    compiled = torch.compile(layer, fullgraph=True)
    out = compiled(xs)
    torch.testing.assert_close(out, layer(xs))
    got = torch.autograd.grad(out.sum(), [*xs, *layer.parameters()])
    want = torch.autograd.grad(layer(xs).sum(), [*xs, *layer.parameters()])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
