"""Encoders: output shapes, tokens and masks, invariance to padding, gradients, input checks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from mmfast.data import padding as data_padding
from mmfast.data.padding import pad_sequences
from mmfast.encoders.audio import AudioEncoder
from mmfast.encoders.base import ModalityEncoder
from mmfast.encoders.image import ImageEncoder
from mmfast.encoders.text import TextEncoder


def test_image_encoder_shapes_and_tokens_average_to_the_output() -> None:
    encoder = ImageEncoder(3, out_dim=24, channels=(8, 16, 16)).eval()
    images = torch.randn(5, 3, 12, 12)
    out = encoder(images)
    tokens, mask = encoder.forward_tokens(images)
    assert out.shape == (5, 24) and isinstance(encoder, ModalityEncoder)
    assert tokens.shape == (5, 3 * 3, 24) and mask is None  # two stride-2 stages: 12 -> 6 -> 3
    assert torch.allclose(tokens.mean(dim=1), out, atol=1e-5)
    with pytest.raises(ValueError, match="images"):
        encoder(torch.randn(5, 1, 12, 12))


def test_image_encoder_has_residual_conv_bn_blocks_and_trains() -> None:
    encoder = ImageEncoder(1, out_dim=8, channels=(4, 8), blocks=2)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.modules()) >= 5
    encoder(torch.randn(4, 1, 8, 8)).square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in encoder.parameters())


def _pad_and_compare(encoder, sequences: list[torch.Tensor], extra: int, padding_value) -> None:
    """Encoding a batch must not depend on how far it is padded, nor on the other samples."""
    batch, lengths = pad_sequences(sequences, padding_value=padding_value)
    longer, _ = pad_sequences(sequences, padding_value=padding_value, max_length=batch.shape[1] + extra)
    out = encoder(batch, lengths)
    assert torch.allclose(out, encoder(longer, lengths), atol=1e-5)
    for i, seq in enumerate(sequences):
        alone = encoder(seq.unsqueeze(0), torch.tensor([seq.shape[0]]))
        assert torch.allclose(out[i : i + 1], alone, atol=1e-5)
    tokens, mask = encoder.forward_tokens(longer, lengths)
    assert tokens.shape[:2] == mask.shape == longer.shape[:2]
    assert mask.sum(dim=1).tolist() == [longer.shape[1] - n for n in lengths.tolist()]


@pytest.mark.parametrize("training", [False, True])
def test_audio_encoder_ignores_padding(training: bool) -> None:
    encoder = AudioEncoder(13, out_dim=16, channels=(8, 12), kernel_size=5).train(training)
    sequences = [torch.randn(n, 13) for n in (9, 4, 13)]
    # Garbage in padded frames must not matter either: pad with a large value.
    _pad_and_compare(encoder, sequences, extra=6, padding_value=0.0)
    batch, lengths = pad_sequences(sequences, padding_value=1e3)
    clean, _ = pad_sequences(sequences)
    assert torch.allclose(encoder(batch, lengths), encoder(clean, lengths), atol=1e-4)


def test_audio_encoder_without_lengths_uses_every_frame() -> None:
    encoder = AudioEncoder(6, out_dim=4, channels=(8,)).eval()
    frames = torch.randn(3, 7, 6)
    assert torch.allclose(encoder(frames), encoder(frames, torch.tensor([7, 7, 7])), atol=1e-6)
    tokens, mask = encoder.forward_tokens(frames)
    assert mask is None and torch.allclose(tokens.mean(dim=1), encoder(frames), atol=1e-5)
    with pytest.raises(ValueError, match="frames"):
        encoder(torch.randn(3, 7, 5))
    with pytest.raises(ValueError, match="lengths"):
        encoder(frames, torch.tensor([8, 1, 1]))
    with pytest.raises(ValueError, match="kernel_size"):
        AudioEncoder(6, kernel_size=4)


@pytest.mark.parametrize("bag_of_words", [False, True])
@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_text_encoder_ignores_padding(kind: str, bag_of_words: bool) -> None:
    encoder = TextEncoder(
        50, out_dim=16, kind=kind, embed_dim=16, hidden=24, num_layers=2, bag_of_words=bag_of_words
    ).eval()
    sequences = [torch.randint(1, 50, (n,)) for n in (5, 11, 1)]
    _pad_and_compare(encoder, sequences, extra=4, padding_value=0)
    batch, lengths = pad_sequences(sequences)
    # Without lengths they are the count of non-pad ids.
    assert torch.allclose(encoder(batch), encoder(batch, lengths), atol=1e-6)


@pytest.mark.parametrize("bag_of_words", [False, True])
@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_text_encoder_gradients_reach_every_parameter(kind: str, bag_of_words: bool) -> None:
    encoder = TextEncoder(30, out_dim=8, kind=kind, embed_dim=8, hidden=8, bag_of_words=bag_of_words)
    batch, lengths = pad_sequences([torch.randint(1, 30, (n,)) for n in (3, 6)])
    encoder(batch, lengths).sum().backward()
    for name, param in encoder.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert encoder.embedding.weight.grad[0].abs().sum() == 0  # the pad embedding never trains


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_text_encoder_bag_of_words_adds_the_mean_embedding(kind: str) -> None:
    torch.manual_seed(0)
    plain = TextEncoder(40, out_dim=6, kind=kind, embed_dim=8, hidden=8).eval()
    bag = TextEncoder(40, out_dim=6, kind=kind, embed_dim=8, hidden=8, bag_of_words=True).eval()
    # The other parameters are those of the encoder without it (created in the same order).
    assert set(bag.state_dict()) - set(plain.state_dict()) == {"bag_of_words.weight", "bag_of_words.bias"}
    bag.load_state_dict({**plain.state_dict(), **{k: v for k, v in bag.state_dict().items() if "bag" in k}})
    batch, lengths = pad_sequences([torch.randint(1, 40, (n,)) for n in (4, 9, 2)])
    mean_embedding = torch.stack(
        [bag.embedding(batch[i, :n]).mean(dim=0) for i, n in enumerate(lengths.tolist())]
    )
    expected = plain(batch, lengths) + bag.bag_of_words(mean_embedding)
    torch.testing.assert_close(bag(batch, lengths), expected)
    both = bag.forward_with_tokens(batch, lengths)
    torch.testing.assert_close(both.pooled, expected)
    torch.testing.assert_close(both.tokens, plain.forward_tokens(batch, lengths)[0])


def test_text_encoder_checks() -> None:
    with pytest.raises(ValueError, match="kind"):
        TextEncoder(10, kind="gru")
    with pytest.raises(ValueError, match="num_heads"):
        TextEncoder(10, kind="transformer", embed_dim=10, num_heads=4)
    encoder = TextEncoder(10, out_dim=4)
    with pytest.raises(ValueError, match="tokens"):
        encoder(torch.randn(2, 3))
    with pytest.raises(ValueError, match="lengths"):
        encoder(torch.ones(2, 3, dtype=torch.int64), torch.tensor([0, 3]))


def test_encoders_and_layers_do_not_import_the_data_package() -> None:
    # The layering is models -> encoders -> nn -> ops, mmfast.data a sibling used by training: the
    # padding masks the encoders use live in mmfast.nn, and mmfast.data re-exports them.
    root = Path(__file__).resolve().parents[1] / "mmfast"
    for path in sorted([*(root / "encoders").glob("*.py"), *(root / "nn").glob("*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        modules += [a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names]
        assert not [m for m in modules if m.startswith("mmfast.data")], path
    from mmfast.nn import _padding

    assert data_padding.lengths_to_padding_mask is _padding.lengths_to_padding_mask
    assert data_padding.lengths_to_valid_mask is _padding.lengths_to_valid_mask
