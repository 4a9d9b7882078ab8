"""`mmfast.nn.ContrastiveLoss` on one process: CLIP and SigLIP against open_clip-style reference code
(loss, gradients of the features and of the temperature and bias), the clamp of the multiplier,
fixed (buffer) parameters, state dicts, dtypes, torch.compile and bad arguments."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmfast.nn import ContrastiveLoss

# The loss and its gradients against the open_clip-style reference built from the B x B logits: the
# op sums the same B x B terms in another order (tiles, or the reference path itself), so float64
# agrees to rounding; float32's scale and bias gradients sum all B x B terms, ~1e-6 relative here.
TOLERANCE = {
    torch.float64: {"rtol": 1e-10, "atol": 1e-10},
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
}


class OpenClipClipLoss(nn.Module):
    """open_clip's ``ClipLoss`` on one process (``logit_scale`` already exponentiated)."""

    def forward(self, image, text, logit_scale, logit_bias=None):
        logits_per_image = logit_scale * image @ text.T
        if logit_bias is not None:
            logits_per_image = logits_per_image + logit_bias
        labels = torch.arange(image.shape[0])
        return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.T, labels)) / 2


class OpenClipSigLipLoss(nn.Module):
    """open_clip's ``SigLipLoss`` on one process."""

    def forward(self, image, text, logit_scale, logit_bias):
        logits = logit_scale * image @ text.T + logit_bias
        labels = 2 * torch.eye(image.shape[0], dtype=image.dtype) - 1
        return -F.logsigmoid(labels * logits).sum() / image.shape[0]


class ReferenceModel(nn.Module):
    """The parameters as open_clip's CLIP holds them, the multiplier clamped where used."""

    def __init__(self, kind, init_logit_scale, init_logit_bias, max_logit_scale, dtype):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(init_logit_scale, dtype=dtype))
        self.logit_bias = None
        if init_logit_bias is not None:
            self.logit_bias = nn.Parameter(torch.tensor(init_logit_bias, dtype=dtype))
        self.max_logit_scale = max_logit_scale
        self.loss = OpenClipClipLoss() if kind == "clip" else OpenClipSigLipLoss()

    def forward(self, image, text):
        scale = self.logit_scale.exp()
        if self.max_logit_scale is not None:
            scale = scale.clamp(max=self.max_logit_scale)
        return self.loss(image, text, scale, self.logit_bias)


def _features(rows: int, dim: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=generator, dtype=torch.float64), dim=-1).to(dtype)


def _loss_and_grads(module: nn.Module, image: torch.Tensor, text: torch.Tensor):
    image = image.detach().clone().requires_grad_()
    text = text.detach().clone().requires_grad_()
    loss = module(image, text)
    params = [module.logit_scale] + ([module.logit_bias] if module.logit_bias is not None else [])
    grads = torch.autograd.grad(loss, [image, text, *params])
    return loss, grads


def _assert_matches_reference(layer, reference, image, text, dtype):
    loss, grads = _loss_and_grads(layer, image, text)
    want_loss, want_grads = _loss_and_grads(reference, image, text)
    assert loss.shape == () and loss.dtype == dtype
    torch.testing.assert_close(loss, want_loss, **TOLERANCE[dtype])
    assert len(grads) == len(want_grads)
    for name, got, want in zip(["image", "text", "logit_scale", "logit_bias"], grads, want_grads):
        assert got.dtype == want.dtype and got.shape == want.shape, name
        torch.testing.assert_close(got, want, **TOLERANCE[dtype], msg=name)
    return grads


CASES = [
    # kind, init_logit_scale, init_logit_bias (None: the layer's default)
    ("clip", math.log(1 / 0.07), None),
    ("clip", 1.5, -3.0),  # a CLIP bias: its gradient is zero (the softmax ignores a shift)
    ("siglip", math.log(10.0), -10.0),
    ("siglip", 2.0, -1.5),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize(("kind", "scale", "bias"), CASES)
def test_matches_open_clip_reference(kind, scale, bias, dtype):
    layer = ContrastiveLoss(kind, init_logit_scale=scale, init_logit_bias=bias, dtype=dtype)
    reference_bias = bias if bias is not None or kind == "clip" else -10.0
    reference = ReferenceModel(kind, scale, reference_bias, 100.0, dtype)
    image, text = _features(9, 12, dtype, 1), _features(9, 12, dtype, 2)
    grads = _assert_matches_reference(layer, reference, image, text, dtype)
    assert all(g.abs().sum() > 0 for g in grads[:3])
    if kind == "clip" and bias is not None:
        assert grads[3].abs().item() < (1e-12 if dtype == torch.float64 else 1e-5)


def test_defaults_follow_clip_and_siglip():
    clip = ContrastiveLoss()
    assert clip.kind == "clip" and clip.logit_bias is None
    assert clip.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert clip.scale().item() == pytest.approx(1 / 0.07)
    siglip = ContrastiveLoss("siglip")
    assert siglip.logit_scale.item() == pytest.approx(math.log(10.0))
    assert siglip.logit_bias.item() == -10.0
    for layer in (clip, siglip):
        assert layer.logit_scale.shape == () and isinstance(layer.logit_scale, nn.Parameter)
        assert layer.logit_scale.dtype == torch.get_default_dtype()
        assert layer.max_logit_scale == 100.0 and layer.distributed is None
    assert isinstance(siglip.logit_bias, nn.Parameter) and siglip.logit_bias.shape == ()
    assert "kind='siglip'" in repr(siglip)


def test_state_dict_keys_and_round_trip():
    assert list(ContrastiveLoss("clip").state_dict()) == ["logit_scale"]
    assert list(ContrastiveLoss("clip", init_logit_bias=0.0).state_dict()) == ["logit_scale", "logit_bias"]
    assert list(ContrastiveLoss("siglip").state_dict()) == ["logit_scale", "logit_bias"]
    assert list(ContrastiveLoss("siglip", learnable=False).state_dict()) == ["logit_scale", "logit_bias"]
    assert [name for name, _ in ContrastiveLoss("siglip").named_parameters()] == ["logit_scale", "logit_bias"]

    trained = ContrastiveLoss("siglip", init_logit_scale=3.0, init_logit_bias=-4.0)
    fresh = ContrastiveLoss("siglip")
    fresh.load_state_dict(trained.state_dict())
    assert fresh.logit_scale.item() == 3.0 and fresh.logit_bias.item() == -4.0
    # open_clip-style weights (the parameters as tensors) load into the fixed form too.
    fixed = ContrastiveLoss("siglip", learnable=False)
    fixed.load_state_dict({"logit_scale": torch.tensor(2.5), "logit_bias": torch.tensor(-7.0)})
    assert fixed.logit_scale.item() == 2.5 and fixed.logit_bias.item() == -7.0
    with pytest.raises(RuntimeError, match="logit_bias"):
        ContrastiveLoss("clip").load_state_dict(
            {"logit_scale": torch.tensor(1.0), "logit_bias": torch.tensor(0.0)}
        )


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_multiplier_clamped_at_max_logit_scale(kind):
    image, text = _features(6, 8, torch.float64, 3), _features(6, 8, torch.float64, 4)
    dtype = torch.float64
    # exp(log 200) = 200, clamped to 100: the loss is that of multiplier 100, logit_scale's gradient
    # is exactly zero (torch.clamp's), the features' gradients are not.
    layer = ContrastiveLoss(kind, init_logit_scale=math.log(200.0), dtype=dtype)
    assert layer.scale().item() == 100.0
    at_cap = ContrastiveLoss(kind, init_logit_scale=math.log(100.0), dtype=dtype)
    loss, grads = _loss_and_grads(layer, image, text)
    torch.testing.assert_close(loss, _loss_and_grads(at_cap, image, text)[0], **TOLERANCE[dtype])
    reference = ReferenceModel(kind, math.log(200.0), -10.0 if kind == "siglip" else None, 100.0, dtype)
    _assert_matches_reference(layer, reference, image, text, dtype)
    assert grads[2].item() == 0.0
    assert grads[0].abs().sum() > 0 and grads[1].abs().sum() > 0
    if kind == "siglip":
        assert grads[3].abs().item() > 0

    # Below the cap the gradient flows; a lower cap applies; None removes it.
    below = _loss_and_grads(ContrastiveLoss(kind, init_logit_scale=math.log(50.0), dtype=dtype), image, text)
    assert below[1][2].abs().item() > 0
    assert ContrastiveLoss(kind, init_logit_scale=3.0, max_logit_scale=5.0).scale().item() == 5.0
    uncapped = ContrastiveLoss(kind, init_logit_scale=math.log(200.0), max_logit_scale=None, dtype=dtype)
    assert uncapped.scale().item() == pytest.approx(200.0)
    uncapped_loss, uncapped_grads = _loss_and_grads(uncapped, image, text)
    assert uncapped_grads[2].abs().item() > 0
    assert not torch.allclose(uncapped_loss, loss)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_fixed_parameters_are_buffers(kind):
    layer = ContrastiveLoss(kind, init_logit_scale=2.0, init_logit_bias=-1.0, learnable=False)
    assert list(layer.parameters()) == []
    assert [name for name, _ in layer.named_buffers()] == ["logit_scale", "logit_bias"]
    assert not layer.logit_scale.requires_grad and not layer.logit_bias.requires_grad
    learnable = ContrastiveLoss(kind, init_logit_scale=2.0, init_logit_bias=-1.0)
    image = _features(5, 4, torch.float32, 5).requires_grad_()
    text = _features(5, 4, torch.float32, 6).requires_grad_()
    loss = layer(image, text)
    torch.testing.assert_close(loss, learnable(image, text), rtol=0, atol=0)
    loss.backward()
    assert image.grad is not None and text.grad is not None
    # Buffers follow the module's dtype / device moves like parameters.
    assert layer.double().logit_scale.dtype == torch.float64
    assert layer(image.double(), text.double()).dtype == torch.float64


def test_float32_parameters_with_float64_and_bfloat16_features():
    # The scalars are cast to the features' compute dtype, with their gradient.
    layer = ContrastiveLoss("siglip")
    image, text = _features(4, 6, torch.float64, 7), _features(4, 6, torch.float64, 8)
    loss = layer(image, text)
    assert loss.dtype == torch.float64
    loss.backward()
    assert layer.logit_scale.grad.dtype == torch.float32 and layer.logit_bias.grad.dtype == torch.float32
    half = layer(image.bfloat16(), text.bfloat16())
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, loss.float(), rtol=2e-2, atol=2e-2)


class TinyClip(nn.Module):
    """Two linear towers, normalisation and the loss: what a training step compiles."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.image_tower = nn.Linear(10, 6)
        self.text_tower = nn.Linear(7, 6)
        self.loss = ContrastiveLoss(kind)

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        image = F.normalize(self.image_tower(images), dim=-1)
        text = F.normalize(self.text_tower(texts), dim=-1)
        return self.loss(image, text)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_torch_compile_fullgraph(kind):
    model = TinyClip(kind)
    images, texts = torch.randn(8, 10), torch.randn(8, 7)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    got = compiled(images, texts)
    got_grads = torch.autograd.grad(got, list(model.parameters()))
    want = model(images, texts)
    want_grads = torch.autograd.grad(want, list(model.parameters()))
    torch.testing.assert_close(got, want, **TOLERANCE[torch.float32])
    for (name, _), g, w in zip(model.named_parameters(), got_grads, want_grads):
        torch.testing.assert_close(g, w, **TOLERANCE[torch.float32], msg=name)


def test_not_distributed_without_a_process_group():
    assert not torch.distributed.is_initialized()
    image, text = _features(4, 3, torch.float32, 9), _features(4, 3, torch.float32, 10)
    auto, local = ContrastiveLoss(), ContrastiveLoss(distributed=False)
    assert not auto.is_distributed() and not local.is_distributed()
    torch.testing.assert_close(auto(image, text), local(image, text), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="torch.distributed is not initialised"):
        ContrastiveLoss(distributed=True)(image, text)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"kind": "infonce"}, ValueError, "kind: expected one of 'clip', 'siglip', got 'infonce'"),
        ({"kind": "clip", "init_logit_scale": "2"}, TypeError, "init_logit_scale: expected a float"),
        ({"kind": "clip", "init_logit_scale": math.inf}, ValueError, "init_logit_scale: expected a finite"),
        ({"kind": "siglip", "init_logit_bias": True}, TypeError, "init_logit_bias: expected a float"),
        ({"kind": "clip", "max_logit_scale": 0.0}, ValueError, "max_logit_scale: expected a positive"),
        ({"kind": "clip", "max_logit_scale": math.nan}, ValueError, "max_logit_scale: expected a finite"),
        ({"kind": "clip", "learnable": 1}, TypeError, "learnable: expected a bool"),
        ({"kind": "clip", "distributed": "auto"}, TypeError, "distributed: expected True, False or None"),
        ({"kind": "clip", "dtype": torch.int64}, TypeError, "dtype: expected a floating-point dtype"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ContrastiveLoss(**kwargs)


def test_bad_features_name_the_argument():
    layer = ContrastiveLoss("siglip")
    with pytest.raises(ValueError, match="image_features: expected a 2-D tensor"):
        layer(torch.randn(4), torch.randn(4, 3))
    with pytest.raises(ValueError, match="text_features: expected feature dim 3"):
        layer(torch.randn(4, 3), torch.randn(4, 5))
    with pytest.raises(ValueError, match="text_features: expected 4 rows"):
        ContrastiveLoss("clip")(torch.randn(4, 3), torch.randn(5, 3))
