"""nn.ConcatLinear: a drop-in for act(nn.Linear(torch.cat(xs, -1)))."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmfast.nn import ConcatLinear
from mmfast.ops import apply_activation


def test_state_dict_round_trip_with_linear():
    linear = nn.Linear(20, 7)
    layer = ConcatLinear([12, 8], 7, activation="gelu")
    layer.load_state_dict(linear.state_dict())
    x1, x2 = torch.randn(5, 12), torch.randn(5, 8)
    torch.testing.assert_close(layer(x1, x2), apply_activation(linear(torch.cat([x1, x2], -1)), "gelu"))
    back = nn.Linear(20, 7)
    back.load_state_dict(layer.state_dict())
    assert torch.equal(back.weight, linear.weight) and torch.equal(back.bias, linear.bias)
    assert list(layer.state_dict()) == list(linear.state_dict())


def test_no_bias_state_dict_matches_linear_without_bias():
    layer = ConcatLinear([4, 4], 3, bias=False)
    assert layer.bias is None
    assert list(layer.state_dict()) == list(nn.Linear(8, 3, bias=False).state_dict())


def test_initialisation_matches_linear():
    torch.manual_seed(3)
    linear = nn.Linear(30, 9)
    torch.manual_seed(3)
    layer = ConcatLinear([10, 20], 9)
    assert torch.equal(layer.weight, linear.weight) and torch.equal(layer.bias, linear.bias)


def test_from_linear_copies_and_converts():
    linear = nn.Linear(11, 4).double()
    layer = ConcatLinear.from_linear(linear, [5, 6], activation="tanh")
    assert layer.weight.dtype == torch.float64 and layer.weight.data_ptr() != linear.weight.data_ptr()
    x1, x2 = torch.randn(2, 3, 5, dtype=torch.float64), torch.randn(2, 3, 6, dtype=torch.float64)
    torch.testing.assert_close(layer([x1, x2]), torch.tanh(linear(torch.cat([x1, x2], -1))))
    with pytest.raises(ValueError, match="in_features: sizes sum to 10"):
        ConcatLinear.from_linear(linear, [5, 5])


def test_forward_accepts_tensors_one_list_or_one_dict_and_checks_them():
    layer = ConcatLinear([3, 2], 4, activation="relu")
    x1, x2 = torch.randn(6, 3), torch.randn(6, 2)
    torch.testing.assert_close(layer(x1, x2), layer([x1, x2]))
    torch.testing.assert_close(layer(x1, x2), layer((x1, x2)))
    # A dict in sorted key order (torchmultimodal's ConcatFusionModule order).
    torch.testing.assert_close(layer(x1, x2), layer({"b": x2, "a": x1}))
    with pytest.raises(ValueError, match=r"inputs: expected 2 tensors \(one per modality\), got 1"):
        layer(x1)
    with pytest.raises(ValueError, match=r"inputs: expected 2 tensors \(one per modality\), got 3"):
        layer([x1, x2, x2])
    with pytest.raises(ValueError, match=r"inputs\['b'\]: expected last dim 2, got shape \[6, 3\]"):
        layer({"a": x1, "b": x1})
    with pytest.raises(TypeError, match="inputs: expected a sequence of tensors or a dict of them, got int"):
        layer(3)
    with pytest.raises(ValueError, match=r"inputs\[1\]: expected last dim 2"):
        layer(x1, torch.randn(6, 3))
    with pytest.raises(ValueError, match=r"inputs\[1\]: expected last dim 2, got shape \[\]"):
        layer(x1, torch.tensor(1.0))
    with pytest.raises(TypeError, match=r"inputs\[0\]: expected a tensor, got list"):
        layer([[1.0, 2.0, 3.0]], x2)


def test_named_in_features_take_the_modalities_in_sorted_order():
    torch.manual_seed(0)
    linear = nn.Linear(9, 4)
    layer = ConcatLinear.from_linear(linear, {"text": 5, "audio": 4}, activation="sigmoid")
    assert layer.modalities == ("audio", "text") and layer.in_features == (4, 5)
    assert repr(layer) == (
        "ConcatLinear(in_features={'audio': 4, 'text': 5}, out_features=4, bias=True, activation='sigmoid')"
    )
    audio, text = torch.randn(3, 4), torch.randn(3, 5)
    expected = torch.sigmoid(linear(torch.cat([audio, text], -1)))
    torch.testing.assert_close(layer({"text": text, "audio": audio}), expected)
    torch.testing.assert_close(layer(audio, text), expected)


def test_repr_and_constructor_checks():
    layer = ConcatLinear([768, 512, 128], 512, activation="gelu")
    assert repr(layer) == (
        "ConcatLinear(in_features=[768, 512, 128], out_features=512, bias=True, activation='gelu')"
    )
    with pytest.raises(
        TypeError, match="in_features: expected a sequence of sizes or a dict name -> size, got int"
    ):
        ConcatLinear(3, 2)
    with pytest.raises(ValueError, match=r"in_features: .*got \{'a': 0\}"):
        ConcatLinear({"a": 0}, 2)
    with pytest.raises(ValueError, match="activation: unknown activation 'gelu2'"):
        ConcatLinear([3], 2, activation="gelu2")
    with pytest.raises(ValueError, match="in_features"):
        ConcatLinear([], 2)
    with pytest.raises(ValueError, match="out_features"):
        ConcatLinear([3], 0)


def test_trains_like_linear():
    torch.manual_seed(0)
    linear = nn.Linear(10, 3)
    layer = ConcatLinear.from_linear(linear, [4, 6], activation="silu")
    data = [(torch.randn(16, 4), torch.randn(16, 6), torch.randn(16, 3)) for _ in range(5)]
    for model, forward in (
        (linear, lambda a, b: nn.functional.silu(linear(torch.cat([a, b], -1)))),
        (layer, layer),
    ):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for a, b, target in data:
            optimizer.zero_grad()
            nn.functional.mse_loss(forward(a, b), target).backward()
            optimizer.step()
    torch.testing.assert_close(layer.weight, linear.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.bias, linear.bias, rtol=1e-5, atol=1e-6)
