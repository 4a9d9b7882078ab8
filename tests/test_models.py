"""Multimodal classifier: fused vs reference twins, missing modalities, modality dropout, gradients."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from mmfast.data import collate, dataset_info
from mmfast.models import MultimodalClassifier, build_fusion, build_head
from mmfast.models.builder import build_classifier, build_encoder
from mmfast.models.classifier import FUSIONS

SYNTHETIC = dataset_info("synthetic", num_classes=3)  # audio, image, text: M = 3
AV_DIGITS = dataset_info("av-digits")  # audio, image: M = 2
SMALL = {"hidden": 16, "image_channels": (4, 8), "audio_channels": (8,)}


def _batch(info, size: int = 6) -> dict[str, torch.Tensor]:
    """A collated batch of random inputs with the shapes of ``info``, lengths varying."""
    generator = torch.Generator().manual_seed(size)
    samples = []
    for i in range(size):
        sample = {"label": torch.tensor(i % info.num_classes)}
        if "image" in info.modalities:
            sample["image"] = torch.randn(info.image_shape, generator=generator)
        if "audio" in info.modalities:
            sample["audio"] = torch.randn(3 + 2 * i, info.audio_features, generator=generator)
        if "text" in info.modalities:
            sample["text"] = torch.randint(2, info.vocab_size, (1 + i,), generator=generator)
        samples.append(sample)
    return collate(samples)


def _twins(info, fusion: str, **options):
    torch.manual_seed(0)
    fused = build_classifier(info, fusion=fusion, **SMALL, **options)
    reference = build_classifier(info, fusion=fusion, reference=True, **SMALL, **options)
    reference.load_state_dict(fused.state_dict())
    return fused.eval(), reference.eval()


@pytest.mark.parametrize("info", [AV_DIGITS, SYNTHETIC], ids=["M2", "M3"])
@pytest.mark.parametrize("fusion", FUSIONS)
def test_fused_and_reference_twins_share_parameters_and_outputs(fusion: str, info) -> None:
    fused, reference = _twins(info, fusion)
    assert list(fused.state_dict()) == list(reference.state_dict())
    batch = _batch(info)
    expected = reference(batch)
    assert expected.shape == (6, info.num_classes)
    torch.testing.assert_close(fused(batch), expected, atol=2e-5, rtol=1e-4)
    # And back: the reference's weights in the fused model.
    torch.manual_seed(1)
    other = build_classifier(info, fusion=fusion, reference=True, **SMALL).eval()
    fused.load_state_dict(other.state_dict())
    torch.testing.assert_close(fused(batch), other(batch), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_twins_match_gradients_too(fusion: str) -> None:
    fused, reference = _twins(SYNTHETIC, fusion, dropout=0.0)
    batch = _batch(SYNTHETIC)
    grads = []
    for model in (fused, reference):
        model.train()
        loss = torch.nn.functional.cross_entropy(model(batch), batch["label"])
        grads.append(torch.autograd.grad(loss, list(model.parameters())))
    for (name, _), g_fused, g_ref in zip(fused.named_parameters(), *grads):
        torch.testing.assert_close(g_fused, g_ref, atol=1e-5, rtol=1e-3, msg=name)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_parameter_gets_a_gradient(fusion: str) -> None:
    torch.manual_seed(0)
    model = build_classifier(SYNTHETIC, fusion=fusion, **SMALL)
    batch = _batch(SYNTHETIC)
    torch.nn.functional.cross_entropy(model(batch), batch["label"]).backward()
    # No unused parameter (DistributedDataParallel would need find_unused_parameters otherwise).
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_missing_modality_concat_fills_zeros() -> None:
    model = build_classifier(AV_DIGITS, fusion="concat", **SMALL).eval()
    batch = _batch(AV_DIGITS)
    audio_only = {k: v for k, v in batch.items() if not k.startswith("image")}
    logits = model(audio_only)
    audio = model.encoders["audio"](batch["audio"], batch["audio_lengths"])
    expected = model.head(model.fusion([audio, torch.zeros(6, model.encoders["image"].out_dim)]))
    torch.testing.assert_close(logits, expected)
    assert not torch.allclose(logits, model(batch))


def test_missing_modality_transformer_leaves_its_tokens_out() -> None:
    model = build_classifier(SYNTHETIC, fusion="transformer", **SMALL).eval()
    batch = _batch(SYNTHETIC)
    without_text = {k: v for k, v in batch.items() if not k.startswith("text")}
    tokens = [
        model.encoders[m].forward_tokens(batch[m], batch.get(f"{m}_lengths")) for m in ("audio", "image")
    ]
    expected = model.head(
        model.fusion([tokens[0][0], tokens[1][0], None], [tokens[0][1], tokens[1][1], None])
    )
    torch.testing.assert_close(model(without_text), expected)
    image_only = model({"image": batch["image"]})
    assert image_only.shape == (6, 3) and torch.isfinite(image_only).all()


@pytest.mark.parametrize("fusion", FUSIONS)
def test_modality_dropout_acts_in_training_only(fusion: str) -> None:
    torch.manual_seed(0)
    plain = build_classifier(AV_DIGITS, fusion=fusion, dropout=0.0, **SMALL)
    dropping = build_classifier(AV_DIGITS, fusion=fusion, dropout=0.0, modality_dropout=0.5, **SMALL)
    dropping.load_state_dict(plain.state_dict())
    batch = _batch(AV_DIGITS, size=32)
    plain.eval(), dropping.eval()
    torch.testing.assert_close(dropping(batch), plain(batch))
    plain.train(), dropping.train()
    assert not torch.allclose(dropping(batch), plain(batch))


def test_dropped_modality_matches_inference_without_it() -> None:
    torch.manual_seed(0)
    model = build_classifier(AV_DIGITS, fusion="transformer", dropout=0.0, modality_dropout=0.6, **SMALL)
    batch = _batch(AV_DIGITS, size=32)
    model.train()
    torch.manual_seed(7)
    logits = model(batch)
    torch.manual_seed(7)
    keep = model._modality_keep_mask(list(model.modalities), 32, torch.device("cpu"))
    assert keep.any(dim=1).all() and not keep.all()  # never all dropped; some dropped at p = 0.6
    # With dropout 0 and no batch norm on the audio path, training and eval agree on audio alone.
    audio_only = model.eval()({"audio": batch["audio"], "audio_lengths": batch["audio_lengths"]})
    rows = keep[:, 0] & ~keep[:, 1]  # modalities are sorted: audio, image
    assert rows.any()
    torch.testing.assert_close(logits[rows], audio_only[rows], atol=1e-5, rtol=1e-4)


def test_single_modality_baselines_and_ignored_keys() -> None:
    for modality in ("audio", "image"):
        model = build_classifier(AV_DIGITS, modalities=[modality], **SMALL)
        assert model.modalities == (modality,)
        assert model(_batch(AV_DIGITS)).shape == (6, 10)
    model = build_classifier(AV_DIGITS, modalities=["audio"], fusion="transformer", **SMALL)
    assert model({**_batch(AV_DIGITS), "unrelated": torch.zeros(1)}).shape == (6, 10)


def test_text_transformer_encoder_in_the_classifier() -> None:
    model = build_classifier(SYNTHETIC, fusion="transformer", text_encoder="transformer", **SMALL)
    assert model(_batch(SYNTHETIC)).shape == (6, 3)


def test_builder_and_classifier_errors() -> None:
    with pytest.raises(ValueError, match="modalities"):
        build_classifier(AV_DIGITS, modalities=["text"])
    with pytest.raises(ValueError, match="fusion"):
        build_classifier(AV_DIGITS, fusion="bilinear")
    with pytest.raises(ValueError, match="two modalities"):
        build_classifier(AV_DIGITS, fusion="gated", modalities=["audio"], reference=True)
    with pytest.raises(ValueError, match="modality_dropout"):
        build_classifier(AV_DIGITS, modality_dropout=1.0)
    model = build_classifier(AV_DIGITS, **SMALL)
    with pytest.raises(ValueError, match="batch"):
        model({"label": torch.zeros(2, dtype=torch.int64)})


@pytest.mark.parametrize("fusion", FUSIONS)
def test_bfloat16_autocast_runs_and_stays_close_to_the_reference(fusion: str) -> None:
    fused, reference = _twins(SYNTHETIC, fusion)
    batch = _batch(SYNTHETIC)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, low_reference = fused(batch), reference(batch)
    full = reference(batch)
    assert low.dtype == torch.bfloat16
    # The fused model's bf16 error is of the order of plain PyTorch's own bf16 error.
    error, reference_error = (low.float() - full).abs().max(), (low_reference.float() - full).abs().max()
    assert error <= 2 * reference_error + 1e-2


def _small_encoders(info) -> dict[str, nn.Module]:
    return {
        m: build_encoder(m, info, 16, image_channels=SMALL["image_channels"], audio_channels=(8,))
        for m in sorted(info.modalities)
    }


@pytest.mark.parametrize("fusion", FUSIONS)
def test_classifier_composed_from_modules_is_the_built_one(fusion: str) -> None:
    # build_classifier draws the encoders, then the fusion, then the head: composing the same
    # modules in that order gives the same parameters, names and outputs.
    torch.manual_seed(0)
    built = build_classifier(SYNTHETIC, fusion=fusion, **SMALL).eval()
    torch.manual_seed(0)
    encoders = _small_encoders(SYNTHETIC)
    fusion_module = build_fusion(fusion, {m: 16 for m in encoders}, 16)
    composed = MultimodalClassifier(encoders, fusion_module, build_head(fusion_module.out_dim, 3)).eval()
    assert composed.fusion is fusion_module and composed.modalities == ("audio", "image", "text")
    assert list(composed.state_dict()) == list(built.state_dict())
    for name, value in built.state_dict().items():
        assert torch.equal(composed.state_dict()[name], value), name
    batch = _batch(SYNTHETIC)
    torch.testing.assert_close(composed(batch), built(batch))


class _SumFusion(nn.Module):
    """A user's vector fusion: the sum of the modality features."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[torch.Tensor]] = []

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        self.calls.append(features)
        return torch.stack(features).sum(dim=0)


class _TokenCount(nn.Module):
    """A user's token fusion: the number of valid tokens of each modality, per sample."""

    consumes_tokens = True

    def forward(self, tokens: list[torch.Tensor | None], masks: list[torch.Tensor | None]) -> torch.Tensor:
        counts = []
        for sequence, mask in zip(tokens, masks):
            if sequence is None:
                counts.append(torch.full((6,), -1.0))
            elif mask is None:
                counts.append(torch.full((sequence.shape[0],), float(sequence.shape[1])))
            else:
                counts.append((~mask).sum(dim=1).float())
        return torch.stack(counts, dim=1)


def test_any_fusion_and_head_modules_compose() -> None:
    encoders = _small_encoders(AV_DIGITS)
    fusion = _SumFusion()
    model = MultimodalClassifier(encoders, fusion, nn.Linear(16, 4), modality_dropout=0.2).eval()
    batch = _batch(AV_DIGITS)
    assert model(batch).shape == (6, 4)
    # One [B, out_dim] feature per modality, in sorted name order (audio, image).
    audio, image = fusion.calls[-1]
    torch.testing.assert_close(audio, encoders["audio"](batch["audio"], batch["audio_lengths"]))
    torch.testing.assert_close(image, encoders["image"](batch["image"]))
    model({"image": batch["image"]})
    assert torch.equal(fusion.calls[-1][0], torch.zeros(6, 16))  # a missing modality: zeros
    assert {name.split(".")[0] for name in model.state_dict()} == {"encoders", "head"}
    assert {"head.weight", "head.bias"} <= set(model.state_dict())


def test_a_fusion_that_consumes_tokens_gets_tokens_and_masks() -> None:
    model = MultimodalClassifier(_small_encoders(SYNTHETIC), _TokenCount(), nn.Identity()).eval()
    batch = _batch(SYNTHETIC)
    counts = model(batch)  # audio, image, text
    _, audio_mask = model.encoders["audio"].forward_tokens(batch["audio"], batch["audio_lengths"])
    assert torch.equal(counts[:, 0], (~audio_mask).sum(dim=1).float())
    assert torch.equal(counts[:, 2], batch["text_lengths"].float())
    without_text = model({k: v for k, v in batch.items() if not k.startswith("text")})
    assert torch.equal(without_text[:, 2], torch.full((6,), -1.0))  # absent: None
    # Modality dropout masks the dropped modalities' tokens, never all of a sample's.
    model.modality_dropout = 0.6
    dropped = model.train()(batch)
    assert (dropped < counts).any() and (dropped.sum(dim=1) > 0).all()


def test_the_string_form_still_builds_by_name_with_a_deprecation_warning() -> None:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the builders do not take the old form
        expected = MultimodalClassifier.from_names(
            _small_encoders(AV_DIGITS), "gated", 10, hidden=16, modality_dropout=0.25, reference=True
        )
        build_classifier(AV_DIGITS, fusion="transformer", **SMALL)
    torch.manual_seed(0)
    encoders = _small_encoders(AV_DIGITS)
    with pytest.warns(DeprecationWarning, match="from_names"):
        keywords = MultimodalClassifier(
            encoders, fusion="gated", num_classes=10, hidden=16, modality_dropout=0.25, reference=True
        )
    torch.manual_seed(0)
    with pytest.warns(DeprecationWarning):
        # The old positional order: num_classes, hidden, dropout, modality_dropout, reference.
        positional = MultimodalClassifier(_small_encoders(AV_DIGITS), "gated", 10, 16, 0.1, 0.25, True)
    for model in (keywords, positional):
        assert model.modality_dropout == 0.25
        assert type(model.fusion.gate).__name__ == "ReferenceGatedFusion"
        assert list(model.state_dict()) == list(expected.state_dict())
        assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.state_dict().items())
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="hidden_size"):
        MultimodalClassifier(encoders, "concat", 10, hidden_size=16)
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="num_classes"):
        MultimodalClassifier(encoders, "concat")
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="fusion"):
        MultimodalClassifier(encoders, "bilinear", 10)


def test_module_form_errors() -> None:
    encoders = _small_encoders(AV_DIGITS)
    fusion = build_fusion("concat", {"audio": 16, "image": 16}, 8)
    with pytest.raises(TypeError, match="head"):
        MultimodalClassifier(encoders, fusion)
    with pytest.raises(TypeError, match="hidden"):
        MultimodalClassifier(encoders, fusion, build_head(8, 10), hidden=16)
    with pytest.raises(TypeError, match="fusion"):
        MultimodalClassifier(encoders, 3, build_head(8, 10))
    with pytest.raises(ValueError, match="encoders"):
        MultimodalClassifier({}, fusion, build_head(8, 10))
    with pytest.raises(ValueError, match="modality_dropout"):
        MultimodalClassifier(encoders, fusion, build_head(8, 10), modality_dropout=1.0)
    with pytest.raises(ValueError, match="equal feature size"):
        build_fusion("gated", {"audio": 16, "image": 8})
    with pytest.raises(ValueError, match="num_classes"):
        build_head(8, 1)
