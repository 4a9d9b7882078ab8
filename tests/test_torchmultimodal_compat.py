"""mmfast's layers as drop-ins for torchmultimodal's fusion modules (twins in
tests/_torchmultimodal_twins.py): torchmultimodal's argument names, dict inputs in sorted key order,
state dicts both ways, the ConcatFusionModule conversion, whole late-fusion models, and
torchmultimodal's own fusion tests run against the mmfast layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmfast.nn import AttentionFusion, ConcatLinear, GatedFusion
from mmfast.ops import apply_activation
from tests._torchmultimodal_twins import AttentionFusionModule, ConcatFusionModule, LateFusion

DIMS = {"text": 6, "audio": 4, "image": 9}  # concatenated in sorted order: audio, image, text
SCRIPT_ERROR = "mmfast layers do not support TorchScript; use torch.export.export or torch.compile"


def _embeddings(dims: dict[str, int], batch: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(batch, size, generator=generator) for name, size in dims.items()}


def _grads(output: torch.Tensor, leaves: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    seed = torch.randn(output.shape, generator=torch.Generator().manual_seed(3))
    return torch.autograd.grad((output * seed).sum(), leaves)


def _assert_same_function(ours: nn.Module, theirs: nn.Module, embeddings: dict[str, torch.Tensor]) -> None:
    """Same output and same gradients: of the inputs, and of every parameter (the two modules hold
    the same parameters in the same order, under the same names or, for ConcatLinear against a
    ConcatFusionModule, ``weight`` for ``projection.weight``)."""
    results = []
    for module in (ours, theirs):
        inputs = {k: v.clone().requires_grad_() for k, v in embeddings.items()}
        output = module(inputs)
        results.append((output, _grads(output, [*inputs.values(), *module.parameters()])))
    (out, grads), (want, want_grads) = results
    assert len(grads) == len(want_grads)
    torch.testing.assert_close(out, want)
    for got, expected in zip(grads, want_grads):
        torch.testing.assert_close(got, expected)


# torchmultimodal's tests/modules/fusions/test_attention_fusion.py, run against AttentionFusion.


def test_attention_fusion_no_projection_dim():
    channel_to_encoder_dim = {"channel_1": 3, "channel_2": 3, "channel_3": 4}
    fusion = AttentionFusion(channel_to_encoder_dim)
    assert fusion(_embeddings(channel_to_encoder_dim, batch=2)).shape == (2, 3)


@pytest.mark.parametrize("how", ["keyword", "positional"])
def test_attention_fusion_input_projection_dim(how):
    channel_to_encoder_dim = {"channel_1": 3, "channel_2": 3, "channel_3": 4}
    if how == "keyword":
        fusion = AttentionFusion(channel_to_encoder_dim, encoding_projection_dim=2)
    else:
        fusion = AttentionFusion(channel_to_encoder_dim, 2)
    assert fusion(_embeddings(channel_to_encoder_dim, batch=2)).shape == (2, 2)


def test_attention_fusion_scripted_model_says_torchscript_is_unsupported():
    fusion = AttentionFusion({"channel_1": 3, "channel_2": 3, "channel_3": 4}, encoding_projection_dim=2)
    with pytest.raises(RuntimeError, match=f"AttentionFusion: {SCRIPT_ERROR}"):
        torch.jit.script(fusion)


# torchmultimodal's argument names.


def test_attention_fusion_takes_torchmultimodal_argument_names():
    torch.manual_seed(0)
    theirs = AttentionFusionModule(channel_to_encoder_dim=DIMS, encoding_projection_dim=5)
    ours = AttentionFusion(channel_to_encoder_dim=DIMS, encoding_projection_dim=5)
    same = AttentionFusion(DIMS, out_dim=5)
    assert repr(ours) == repr(same) and ours.modalities == ("audio", "image", "text")
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }
    # Each name may be used with the other one of the pair.
    assert AttentionFusion(channel_to_encoder_dim=DIMS, out_dim=5).out_dim == 5
    assert AttentionFusion(DIMS, encoding_projection_dim=5).out_dim == 5
    assert AttentionFusion(channel_to_encoder_dim=DIMS).out_dim == min(DIMS.values())


def test_attention_fusion_argument_given_under_both_names_is_an_error():
    with pytest.raises(TypeError, match="AttentionFusion: got both in_dims and channel_to_encoder_dim"):
        AttentionFusion(DIMS, channel_to_encoder_dim=DIMS)
    with pytest.raises(TypeError, match="AttentionFusion: got both out_dim and encoding_projection_dim"):
        AttentionFusion(DIMS, 4, encoding_projection_dim=4)
    with pytest.raises(
        TypeError, match=r"expected the modality sizes, in_dims \(or channel_to_encoder_dim\)"
    ):
        AttentionFusion()


def test_concat_linear_takes_torchmultimodal_projection_argument():
    torch.manual_seed(0)
    projection = nn.Linear(sum(DIMS.values()), 7)
    ours = ConcatLinear(DIMS, projection=projection)
    assert (ours.out_features, ours.bias is not None) == (7, True)
    assert ours.weight.data_ptr() != projection.weight.data_ptr()  # a copy, as from_linear makes
    theirs = ConcatFusionModule(projection=projection)
    embeddings = _embeddings(DIMS)
    torch.testing.assert_close(ours(embeddings), theirs(embeddings))
    no_bias = ConcatLinear([4, 3], projection=nn.Linear(7, 2, bias=False).double())
    assert no_bias.bias is None and no_bias.weight.dtype == torch.float64


def test_concat_linear_projection_errors():
    linear = nn.Linear(19, 3)
    with pytest.raises(TypeError, match="ConcatLinear: got both out_features and projection"):
        ConcatLinear(DIMS, 3, projection=linear)
    with pytest.raises(TypeError, match="ConcatLinear: got both bias and projection"):
        ConcatLinear(DIMS, bias=True, projection=linear)
    with pytest.raises(
        TypeError, match="projection: ConcatLinear replaces an nn.Linear projection.*got Sequential"
    ):
        ConcatLinear(DIMS, projection=nn.Sequential(linear, nn.ReLU()))
    with pytest.raises(ValueError, match="in_features: sizes sum to 18 but the projection takes 19"):
        ConcatLinear([9, 9], projection=linear)
    with pytest.raises(ValueError, match="projection: the lazy Linear has no weights yet"):
        ConcatLinear(DIMS, projection=nn.LazyLinear(3))
    with pytest.raises(TypeError, match=r"expected out_features \(or a projection to take it from\)"):
        ConcatLinear(DIMS)


# Numbers: state dicts both ways, outputs and gradients.


def test_attention_fusion_state_dicts_load_strictly_both_ways():
    torch.manual_seed(0)
    theirs = AttentionFusionModule(DIMS, 5)
    ours = AttentionFusion(channel_to_encoder_dim=DIMS, encoding_projection_dim=5)
    ours.load_state_dict(theirs.state_dict())
    _assert_same_function(ours, theirs, _embeddings(DIMS))
    torch.manual_seed(1)
    fresh = AttentionFusion(DIMS, 5)
    theirs.load_state_dict(fresh.state_dict())
    _assert_same_function(fresh, theirs, _embeddings(DIMS, seed=1))


@pytest.mark.parametrize("activation", ["none", "gelu"])
@pytest.mark.parametrize("source", ["module", "state_dict"])
def test_concat_linear_from_concat_fusion(source, activation):
    torch.manual_seed(0)
    theirs = ConcatFusionModule(nn.Linear(sum(DIMS.values()), 8))
    given = theirs if source == "module" else theirs.state_dict()
    ours = ConcatLinear.from_concat_fusion(given, DIMS, activation=activation)
    assert ours.modalities == ("audio", "image", "text") and ours.activation == activation

    class Activated(nn.Module):
        """The torchmultimodal pipeline ConcatLinear fuses: the module, then the activation."""

        def __init__(self) -> None:
            super().__init__()
            self.fusion = theirs

        def forward(self, embeddings):
            return apply_activation(self.fusion(embeddings), activation)

    _assert_same_function(ours, Activated(), _embeddings(DIMS))
    # Sizes as a list in the module's (sorted) order give the same layer, reading a dict the same way.
    listed = ConcatLinear.from_concat_fusion(given, [DIMS[k] for k in sorted(DIMS)], activation=activation)
    embeddings = _embeddings(DIMS, seed=2)
    torch.testing.assert_close(listed(embeddings), ours(embeddings))


def test_concat_fusion_state_dict_goes_back_into_the_torchmultimodal_module():
    torch.manual_seed(0)
    ours = ConcatLinear(DIMS, 8)
    theirs = ConcatFusionModule(nn.Linear(sum(DIMS.values()), 8))
    theirs.load_state_dict(ours.concat_fusion_state_dict())
    embeddings = _embeddings(DIMS)
    torch.testing.assert_close(theirs(embeddings), ours(embeddings))
    no_bias = ConcatLinear([3, 4], 2, bias=False)
    assert list(no_bias.concat_fusion_state_dict()) == ["projection.weight"]
    again = ConcatLinear.from_concat_fusion(no_bias.concat_fusion_state_dict(), [3, 4])
    assert again.bias is None and torch.equal(again.weight, no_bias.weight)


def test_from_concat_fusion_errors():
    with pytest.raises(
        TypeError, match="projection: ConcatLinear replaces an nn.Linear projection.*got Identity"
    ):
        ConcatLinear.from_concat_fusion(ConcatFusionModule(), DIMS)  # no projection: a bare torch.cat
    with pytest.raises(TypeError, match=r"expected a ConcatFusionModule \(a module with a `projection`\)"):
        ConcatLinear.from_concat_fusion(nn.Linear(19, 2), DIMS)
    with pytest.raises(TypeError, match="expected a ConcatFusionModule or its state dict, got list"):
        ConcatLinear.from_concat_fusion([torch.zeros(2, 19)], DIMS)
    state = ConcatFusionModule(nn.Linear(19, 2)).state_dict()
    with pytest.raises(ValueError, match=r"expected the keys .*got \['weight'\]"):
        ConcatLinear.from_concat_fusion({"weight": state["projection.weight"]}, DIMS)
    with pytest.raises(ValueError, match=r"got \['extra', 'projection.bias', 'projection.weight'\]"):
        ConcatLinear.from_concat_fusion({**state, "extra": torch.zeros(1)}, DIMS)
    with pytest.raises(ValueError, match="in_features: sizes sum to 18 but projection.weight takes 19"):
        ConcatLinear.from_concat_fusion(state, [9, 9])


# Dict inputs wherever a layer takes several modalities.


def test_every_layer_reads_a_dict_in_sorted_key_order():
    torch.manual_seed(0)
    same = {"text": 6, "audio": 6, "image": 6}
    embeddings = _embeddings(same)
    in_order = [embeddings[k] for k in sorted(embeddings)]
    for layer in (ConcatLinear([6, 6, 6], 4), GatedFusion(6, num_modalities=3), AttentionFusion([6, 6, 6])):
        torch.testing.assert_close(layer(embeddings), layer(in_order))
        assert not torch.allclose(layer(embeddings), layer(list(embeddings.values())))


def test_concat_linear_dict_inputs_equal_concat_fusion_module():
    torch.manual_seed(0)
    theirs = ConcatFusionModule(nn.Linear(sum(DIMS.values()), 8))
    # Built from a list of sizes (in sorted-name order), and from the dict itself.
    for ours in (
        ConcatLinear.from_linear(theirs.projection, [DIMS[k] for k in sorted(DIMS)]),
        ConcatLinear.from_linear(theirs.projection, DIMS),
    ):
        _assert_same_function(ours, theirs, _embeddings(DIMS))


def test_named_concat_linear_checks_the_keys_and_names_them_in_errors():
    layer = ConcatLinear(DIMS, 3)
    embeddings = _embeddings(DIMS)
    with pytest.raises(ValueError, match=r"inputs: expected the modalities \['audio', 'image', 'text'\]"):
        layer({"audio": embeddings["audio"], "image": embeddings["image"]})
    with pytest.raises(ValueError, match=r"inputs\['image'\]: expected last dim 9, got shape \[5, 6\]"):
        layer({**embeddings, "image": embeddings["text"]})
    with pytest.raises(TypeError, match=r"inputs\['text'\]: expected a tensor, got str"):
        layer({**embeddings, "text": "text"})
    # An unnamed layer takes any keys (in sorted order), as ConcatFusionModule does.
    unnamed = ConcatLinear([4, 9, 6], 3)
    unnamed.load_state_dict(layer.state_dict())
    renamed = {"a": embeddings["audio"], "b": embeddings["image"], "c": embeddings["text"]}
    torch.testing.assert_close(unnamed(renamed), layer(embeddings))


@pytest.mark.parametrize("kind", ["concat", "gated", "attention"])
def test_layer_built_from_sizes_reads_keys_0_to_n_in_its_own_order(kind):
    """Keys "0".."11" of a 12-input layer are read as 0, 1, ..., 11, not as sorted strings."""
    torch.manual_seed(0)
    count = 12
    layer = {
        "concat": lambda: ConcatLinear([5] * count, 3),
        "gated": lambda: GatedFusion(5, num_modalities=count),
        "attention": lambda: AttentionFusion([5] * count),
    }[kind]()
    xs = [torch.randn(2, 5) for _ in range(count)]
    as_dict = {str(i): x for i, x in reversed(list(enumerate(xs)))}
    torch.testing.assert_close(layer(as_dict), layer(xs))
    as_dict["10"] = torch.randn(2, 4)
    with pytest.raises(ValueError, match=r"inputs\['10'\]: expected (last dim 5|a tensor \[\*, 5\])"):
        layer(as_dict)


# Whole late-fusion models.


def _encoders(dims: dict[str, int]) -> nn.ModuleDict:
    return nn.ModuleDict({name: nn.Linear(3 + i, size) for i, (name, size) in enumerate(dims.items())})


def _modalities(dims: dict[str, int]) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return {name: torch.randn(4, 3 + i, generator=generator) for i, name in enumerate(dims)}


def test_late_fusion_with_attention_fusion_swapped_in():
    torch.manual_seed(0)
    theirs = LateFusion(_encoders(DIMS), AttentionFusionModule(DIMS, 5), nn.Linear(5, 2))
    torch.manual_seed(1)
    fusion = AttentionFusion(channel_to_encoder_dim=DIMS, encoding_projection_dim=5)
    ours = LateFusion(_encoders(DIMS), fusion, nn.Linear(5, 2))
    ours.load_state_dict(theirs.state_dict())
    _assert_same_function(ours, theirs, _modalities(DIMS))
    torch.manual_seed(2)
    other = LateFusion(_encoders(DIMS), AttentionFusion(DIMS, 5), nn.Linear(5, 2))
    theirs.load_state_dict(other.state_dict())
    _assert_same_function(other, theirs, _modalities(DIMS))


def test_late_fusion_with_concat_linear_swapped_in():
    torch.manual_seed(0)
    total = sum(DIMS.values())
    theirs = LateFusion(_encoders(DIMS), ConcatFusionModule(nn.Linear(total, 6)), nn.Linear(6, 2))
    ours = LateFusion(_encoders(DIMS), ConcatFusionModule(nn.Linear(total, 6)), nn.Linear(6, 2))
    ours.load_state_dict(theirs.state_dict())
    ours.fusion_module = ConcatLinear.from_concat_fusion(ours.fusion_module, DIMS)
    _assert_same_function(ours, theirs, _modalities(DIMS))
