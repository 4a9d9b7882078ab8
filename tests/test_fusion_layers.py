"""GatedFusion and AttentionFusion layers against plain-PyTorch modules written the way
torchmultimodal and papers write them: outputs, attention weights and gradients (list and dict
inputs, 2-D and 3-D), state dicts both ways, errors, and torch.compile."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mmfast.nn.attention_fusion import AttentionFusion
from mmfast.nn.concat_linear import ConcatLinear
from mmfast.nn.gated_fusion import GatedFusion
from mmfast.nn.reference import ReferenceAttentionFusion, ReferenceGatedFusion
from tests._tolerances import assert_grads_match, assert_matches_reference

DTYPES = [torch.float32, torch.float64, torch.bfloat16]


class TorchMultimodalAttentionFusion(nn.Module):
    """torchmultimodal's AttentionFusionModule in plain PyTorch (the reference): modalities in sorted
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

    def forward(self, embeddings: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        names = sorted(embeddings)
        weights = self.attention(torch.cat([embeddings[n] for n in names], dim=-1))
        projected = [self.encoding_projection[n](embeddings[n]) for n in names]
        out = (weights.unsqueeze(-1) * torch.stack(projected, dim=-2)).sum(dim=-2)
        return out, weights


class LoopGatedFusion(nn.Module):
    """Gated fusion as eager models write it: a gate GEMM over the concatenation, a sigmoid or a
    softmax over the modalities, then a loop."""

    def __init__(self, dim: int, num_modalities: int):
        super().__init__()
        gate = nn.Linear(num_modalities * dim, dim if num_modalities == 2 else num_modalities * dim)
        self.weight, self.bias = gate.weight, gate.bias
        self.dim, self.count = dim, num_modalities

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        logits = F.linear(torch.cat(xs, dim=-1), self.weight, self.bias)
        if self.count == 2:
            g = torch.sigmoid(logits)
            return g * xs[0] + (1 - g) * xs[1]
        weights = torch.softmax(logits.unflatten(-1, (self.count, self.dim)), dim=-2)
        out = torch.zeros_like(xs[0])
        for m, x in enumerate(xs):
            out = out + weights[..., m, :] * x
        return out


def _leaves(inputs) -> list[torch.Tensor]:
    return list(inputs.values()) if isinstance(inputs, dict) else list(inputs)


def _fresh(inputs, dtype: torch.dtype | None = None):
    """Copies of the input tensors (optionally cast) that require grad, in the same container."""

    def copy_(x: torch.Tensor) -> torch.Tensor:
        return x.detach().to(dtype or x.dtype).requires_grad_()

    if isinstance(inputs, dict):
        return {k: copy_(v) for k, v in inputs.items()}
    return [copy_(x) for x in inputs]


def _outputs_and_grads(module, call, inputs, names: list[str], seeds: list[torch.Tensor]):
    """`call(module, inputs)` (a tuple of outputs) and the gradients of sum(output * seed) with
    respect to the inputs and the parameters `names` (the loss in float64 so that every dtype sees
    the same output gradients, rounded to its own dtype)."""
    outputs = call(module, inputs)
    named = dict(module.named_parameters())
    loss = sum((o.double() * s.double()).sum() for o, s in zip(outputs, seeds))
    grads = torch.autograd.grad(loss, [*_leaves(inputs), *(named[n] for n in names)])
    return outputs, grads


def _compare(fused: nn.Module, call_fused, reference: nn.Module, call_reference, inputs, dtype) -> None:
    """The fused layer (in `dtype`) against `reference`, whose parameters have the same names and
    values, run in `dtype` and in float64 (for the bfloat16 distance check): every output and the
    gradients of every input and parameter."""
    names = [n for n, _ in fused.named_parameters()]
    with torch.no_grad():
        shapes = [o.shape for o in call_fused(fused, inputs)]
    generator = torch.Generator().manual_seed(7)
    seeds = [torch.randn(shape, generator=generator) for shape in shapes]
    got, got_grads = _outputs_and_grads(fused, call_fused, _fresh(inputs), names, seeds)
    plain_module = copy.deepcopy(reference).to(dtype)
    plain, plain_grads = _outputs_and_grads(plain_module, call_reference, _fresh(inputs), names, seeds)
    exact_module = copy.deepcopy(reference).double()
    exact, exact_grads = _outputs_and_grads(
        exact_module, call_reference, _fresh(inputs, torch.float64), names, seeds
    )
    for out, plain_out, exact_out in zip(got, plain, exact):
        assert out.dtype == dtype and out.shape == plain_out.shape

        # Hands back the results computed above: the same-dtype one, or the float64 one when the
        # bfloat16 distance check asks for the reference in float64.
        def reference_result(t: torch.Tensor, plain_out=plain_out, exact_out=exact_out) -> torch.Tensor:
            return exact_out.detach() if t.dtype == torch.float64 else plain_out.detach()

        assert_matches_reference(out, reference_result, [plain_out.detach()], dtype)
    assert_grads_match(got_grads, plain_grads, exact_grads, dtype)


DIMS = {"text": 12, "audio": 7, "image": 20}  # sorted: audio, image, text


def _inputs(dims: list[int] | dict[str, int], lead: tuple[int, ...], dtype: torch.dtype, as_dict: bool):
    """Random inputs ``[*lead, d]``: a dict, or a list in sorted-name order."""
    named = dims if isinstance(dims, dict) else {f"m{i}": d for i, d in enumerate(dims)}
    generator = torch.Generator().manual_seed(sum(lead))
    tensors = {n: torch.randn(*lead, d, generator=generator).to(dtype) for n, d in named.items()}
    return tensors if as_dict else [tensors[n] for n in sorted(tensors)]


def _with_weights(layer, inputs):
    return layer(inputs, return_weights=True)


def _torchmultimodal_call(names: list[str]):
    def call(module, inputs):
        return module(inputs if isinstance(inputs, dict) else dict(zip(names, inputs)))

    return call


@pytest.mark.parametrize("as_dict", [True, False], ids=["dict", "list"])
@pytest.mark.parametrize("lead", [(5,), (2, 3)], ids=["2d", "3d"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_attention_fusion_equals_torchmultimodal_module(dtype, lead, as_dict):
    torch.manual_seed(0)
    reference = TorchMultimodalAttentionFusion(DIMS, 9)
    layer = AttentionFusion(DIMS, out_dim=9, dtype=dtype)
    layer.load_state_dict(reference.state_dict())
    assert sorted(layer.state_dict()) == sorted(reference.state_dict())
    inputs = _inputs(DIMS, lead, dtype, as_dict)
    out, weights = layer(inputs, return_weights=True)
    assert out.shape == (*lead, 9) and weights.shape == (*lead, 3)
    total = weights.double().sum(-1)
    torch.testing.assert_close(
        total, torch.ones_like(total), rtol=0, atol=1e-2 if dtype == torch.bfloat16 else 1e-6
    )
    assert torch.equal(layer(inputs), out)
    _compare(layer, _with_weights, reference, _torchmultimodal_call(sorted(DIMS)), inputs, dtype)


def test_attention_fusion_sequence_in_dims():
    torch.manual_seed(0)
    layer = AttentionFusion([12, 7, 20])
    assert layer.out_dim == 7 and layer.modalities == ("0", "1", "2")
    assert "in_dims=[12, 7, 20], out_dim=7" in repr(layer)
    assert list(layer.state_dict()) == [
        "attention.0.weight",
        "attention.0.bias",
        *(f"encoding_projection.{m}.{p}" for m in "012" for p in ("weight", "bias")),
    ]
    # torchmultimodal names the modalities of a sequence "0", "1", ... in the sequence's order.
    reference = TorchMultimodalAttentionFusion({"0": 12, "1": 7, "2": 20})
    layer.load_state_dict(reference.state_dict())
    xs = [torch.randn(4, d) for d in (12, 7, 20)]
    out, weights = layer(xs, return_weights=True)
    ref_out, ref_weights = reference(dict(zip("012", xs)))
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(weights, ref_weights)


def test_attention_fusion_from_sizes_reads_dict_keys_in_its_own_order():
    """A layer built from 12 sizes names its modalities "0".."11": a dict with those keys is read in
    that order, not as sorted strings ("10" before "2"), and the layer's error names the right key."""
    torch.manual_seed(0)
    sizes = [3 + i for i in range(12)]
    layer = AttentionFusion(sizes, out_dim=4)
    twin = ReferenceAttentionFusion(sizes, out_dim=4)
    twin.load_state_dict(layer.state_dict())
    xs = [torch.randn(2, d) for d in sizes]
    as_dict = {str(i): x for i, x in reversed(list(enumerate(xs)))}
    torch.testing.assert_close(layer(as_dict), layer(xs))
    torch.testing.assert_close(twin(as_dict), layer(xs))
    as_dict["10"] = torch.randn(2, 5)
    message = r"inputs\['10'\]: expected a tensor \[\*, 13\], got shape \[2, 5\]"
    for module in (layer, twin):
        with pytest.raises(ValueError, match=message):
            module(as_dict)


def test_attention_fusion_reference_twin_round_trip():
    torch.manual_seed(0)
    layer, twin = AttentionFusion(DIMS, out_dim=5), ReferenceAttentionFusion(DIMS, out_dim=5)
    inputs = _inputs(DIMS, (3,), torch.float32, as_dict=True)
    twin.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer(inputs), twin(inputs))
    torch.manual_seed(1)
    other = ReferenceAttentionFusion(DIMS, out_dim=5)
    layer.load_state_dict(other.state_dict())
    for a, b in zip(layer(inputs, return_weights=True), other(inputs, return_weights=True)):
        torch.testing.assert_close(a, b)


def test_attention_fusion_bad_inputs():
    layer = AttentionFusion(DIMS)
    a, i, t = torch.randn(2, 7), torch.randn(2, 20), torch.randn(2, 12)
    with pytest.raises(
        ValueError, match=r"inputs: expected the modalities \['audio', 'image', 'text'\], got"
    ):
        layer({"audio": a, "image": i})
    with pytest.raises(ValueError, match=r"expected the modalities .*got \['audio', 'image', 'video'\]"):
        layer({"audio": a, "image": i, "video": t})
    with pytest.raises(ValueError, match=r"inputs: expected 3 tensors \(one per modality\), got 2"):
        layer([a, i])
    with pytest.raises(
        ValueError, match=r"inputs\['image'\]: expected a tensor \[\*, 20\], got shape \[2, 12\]"
    ):
        layer({"audio": a, "image": t, "text": t})
    with pytest.raises(ValueError, match=r"inputs\[2\]: expected a tensor \[\*, 12\], got shape \[2, 20\]"):
        layer([a, i, i])
    with pytest.raises(
        TypeError, match="inputs: expected a sequence of tensors or a dict of them, got Tensor"
    ):
        layer(a)
    with pytest.raises(ValueError, match="in_dims: expected one or more positive sizes"):
        AttentionFusion([])
    with pytest.raises(ValueError, match=r"in_dims: expected one or more positive sizes, got \{'audio': 0\}"):
        AttentionFusion({"audio": 0})
    with pytest.raises(ValueError, match="in_dims: the op fuses at most 16 modalities, got 17"):
        AttentionFusion([4] * 17)
    with pytest.raises(
        TypeError, match="in_dims: expected a sequence of sizes or a dict name -> size, got int"
    ):
        AttentionFusion(4)
    with pytest.raises(ValueError, match="out_dim: expected a positive size, got 0"):
        AttentionFusion([3, 4], out_dim=0)


@pytest.mark.parametrize("count", [2, 3, 5])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gated_fusion_equals_the_loop_module(count, dtype):
    torch.manual_seed(count)
    reference = LoopGatedFusion(10, count)
    layer = GatedFusion(10, num_modalities=count, dtype=dtype)
    layer.load_state_dict(reference.state_dict())
    rows = 10 if count == 2 else count * 10
    assert layer.weight.shape == (rows, count * 10) and layer.bias.shape == (rows,)
    inputs = _inputs([10] * count, (3, 4), dtype, as_dict=count == 3)

    def call_reference(module, xs):
        return (module(_leaves(xs)),)

    _compare(layer, lambda m, xs: (m(xs),), reference, call_reference, inputs, dtype)


def test_gated_fusion_initialises_like_linear_and_runs_without_bias():
    torch.manual_seed(0)
    layer = GatedFusion(64, num_modalities=3)
    bound = 1 / math.sqrt(3 * 64)
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
    assert layer.bias.abs().max() <= bound and layer.weight.std() > 0.5 * bound / math.sqrt(3)
    no_bias = GatedFusion(6, bias=False)
    assert no_bias.bias is None and "bias=False" in repr(no_bias)
    xs = [torch.randn(2, 6), torch.randn(2, 6)]
    gate = torch.sigmoid(torch.cat(xs, -1) @ no_bias.weight.T)
    torch.testing.assert_close(no_bias(xs), gate * xs[0] + (1 - gate) * xs[1])


def test_gated_fusion_reference_twin_round_trip_and_dict_order():
    torch.manual_seed(0)
    layer, twin = GatedFusion(6, num_modalities=3), ReferenceGatedFusion(6, num_modalities=3)
    assert list(layer.state_dict()) == list(twin.state_dict()) == ["weight", "bias"]
    twin.load_state_dict(layer.state_dict())
    inputs = {"text": torch.randn(2, 6), "audio": torch.randn(2, 6), "image": torch.randn(2, 6)}
    ordered = [inputs["audio"], inputs["image"], inputs["text"]]
    torch.testing.assert_close(layer(inputs), twin(ordered))
    torch.testing.assert_close(layer(inputs), layer(ordered))
    assert not torch.allclose(layer(inputs), layer(ordered[::-1]))
    torch.manual_seed(1)
    other = ReferenceGatedFusion(6, num_modalities=3)
    layer.load_state_dict(other.state_dict())
    torch.testing.assert_close(layer(inputs), other(inputs))
    assert repr(layer) == "GatedFusion(dim=6, num_modalities=3, bias=True)"


def test_gated_fusion_bad_inputs():
    layer = GatedFusion(6, num_modalities=3)
    xs = [torch.randn(2, 6) for _ in range(3)]
    with pytest.raises(ValueError, match=r"inputs: expected 3 tensors \(one per modality\), got 2"):
        layer(xs[:2])
    with pytest.raises(ValueError, match=r"inputs: expected 3 tensors \(one per modality\), got 4"):
        layer(dict(zip("abcd", [*xs, xs[0]])))
    with pytest.raises(ValueError, match=r"inputs\[1\]: expected a tensor \[\*, 6\], got shape \[2, 5\]"):
        layer([xs[0], torch.randn(2, 5), xs[2]])
    # Every input of the wrong size: the layer names the input, not the op's weight argument.
    with pytest.raises(ValueError, match=r"inputs\['a'\]: expected a tensor \[\*, 6\], got shape \[2, 4\]"):
        layer({k: torch.randn(2, 4) for k in "abc"})
    with pytest.raises(ValueError, match=r"num_modalities: expected 2 to 16 \(the op's limit\), got 1"):
        GatedFusion(6, num_modalities=1)
    with pytest.raises(ValueError, match="num_modalities: expected 2 to 16"):
        GatedFusion(6, num_modalities=17)
    with pytest.raises(ValueError, match="dim: expected a positive size, got 0"):
        GatedFusion(0)
    with pytest.raises(ValueError, match=r"inputs\[2\]: expected a tensor \[\*, 6\]"):
        ReferenceGatedFusion(6, num_modalities=3)([xs[0], xs[1], torch.randn(2, 7)])


@pytest.mark.parametrize("layer_kind", ["concat", "gated", "attention"])
def test_layers_compile_fullgraph_forward_and_backward(layer_kind):
    """Dict inputs under torch.compile(fullgraph=True): the key ordering and checks trace away."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    if layer_kind == "concat":
        dims = {"a": 8, "b": 5, "c": 3}
        layer = ConcatLinear(dims, 6, activation="gelu")
    elif layer_kind == "gated":
        layer, dims = GatedFusion(8, num_modalities=3), {"a": 8, "b": 8, "c": 8}
    else:
        layer, dims = AttentionFusion({"a": 8, "b": 5, "c": 3}), {"a": 8, "b": 5, "c": 3}
    inputs = {n: torch.randn(4, d, requires_grad=True) for n, d in dims.items()}
    kwargs = {"return_weights": True} if layer_kind == "attention" else {}
    compiled = torch.compile(layer, fullgraph=True)
    got = compiled(inputs, **kwargs)
    want = layer(inputs, **kwargs)
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    leaves = [*inputs.values(), *layer.parameters()]
    got_grads = torch.autograd.grad(sum(o.pow(2).sum() for o in got), leaves)
    want_grads = torch.autograd.grad(sum(o.pow(2).sum() for o in want), leaves)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
