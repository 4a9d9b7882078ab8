"""Preprocessing: images, tokenizer, log-mel features, utterance normalisation, padding, collate."""

from __future__ import annotations

import pytest
import torch

from mmfast.data.audio import (
    batch_log_mel_spectrogram,
    hz_to_mel,
    log_mel_spectrogram,
    mel_filterbank,
    mel_to_hz,
    normalize_utterance,
    num_frames,
    tone,
)
from mmfast.data.collate import collate
from mmfast.data.image import channel_stats, normalize_image, resize_image, to_unit_range
from mmfast.data.padding import lengths_to_padding_mask, lengths_to_valid_mask, pad_sequences
from mmfast.data.text import Tokenizer

# --- images -------------------------------------------------------------------------------------


def test_to_unit_range_scales_integers_by_dtype_max_and_floats_by_max_value() -> None:
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 3)
    assert torch.allclose(to_unit_range(images), torch.tensor([0.0, 0.2, 1.0]).view(1, 1, 3))
    digits = torch.tensor([0.0, 8.0, 16.0]).view(1, 1, 3)
    assert torch.equal(to_unit_range(digits, max_value=16), torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 3))


def test_resize_shapes_constant_images_and_unbatched_input() -> None:
    constant = torch.full((2, 3, 8, 8), 0.25)
    for mode in ("nearest", "bilinear", "bicubic", "area"):
        out = resize_image(constant, 16 if mode != "area" else 4, mode=mode)
        assert torch.allclose(out, torch.full_like(out, 0.25), atol=1e-6)
    single = torch.rand(3, 8, 6)
    out = resize_image(single, (4, 5))
    assert out.shape == (3, 4, 5)
    assert torch.equal(out, resize_image(single.unsqueeze(0), (4, 5)).squeeze(0))


def test_resize_down_by_two_with_area_averages_blocks() -> None:
    images = torch.arange(16.0).view(1, 1, 4, 4)
    out = resize_image(images, 2, mode="area")
    expected = images.view(1, 1, 2, 2, 2, 2).mean(dim=(3, 5))
    assert torch.allclose(out, expected)


def test_normalize_with_channel_stats_gives_zero_mean_unit_std() -> None:
    images = torch.rand(50, 3, 5, 5) * torch.tensor([1.0, 3.0, 0.5]).view(1, 3, 1, 1) + 2
    mean, std = channel_stats(images)
    out = normalize_image(images, mean, std)
    out_mean, out_std = channel_stats(out)
    assert torch.allclose(out_mean, torch.zeros(3), atol=1e-5)
    assert torch.allclose(out_std, torch.ones(3), atol=1e-5)
    assert torch.allclose(normalize_image(images[0], mean, std), out[0])


def test_image_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="images"):
        resize_image(torch.rand(8, 8), 4)
    with pytest.raises(ValueError, match="mode"):
        resize_image(torch.rand(1, 8, 8), 4, mode="lanczos")
    with pytest.raises(ValueError, match="size"):
        resize_image(torch.rand(1, 8, 8), 0)
    with pytest.raises(ValueError, match="mean"):
        normalize_image(torch.rand(3, 4, 4), [0.0, 0.0], [1.0, 1.0, 1.0])


# --- tokenizer ------------------------------------------------------------------------------------


def test_tokenizer_vocabulary_order_specials_and_min_freq() -> None:
    tok = Tokenizer.from_corpus(["b a a", "c a b", "rare"], min_freq=2)
    assert tok.id_to_word == ["<pad>", "<unk>", "a", "b"]
    assert tok.pad_id == 0 and tok.unk_id == 1 and len(tok) == tok.vocab_size == 4
    assert tok.encode("A c b").tolist() == [2, 1, 3]
    assert Tokenizer.from_corpus(["a b c d"], max_size=2).id_to_word == ["<pad>", "<unk>", "a", "b"]


def test_tokenizer_round_trip_lowercases_and_splits_punctuation() -> None:
    corpus = ["The cat sat on the mat.", "Isn't it a cat?"]
    tok = Tokenizer.from_corpus(corpus)
    for text in corpus:
        ids = tok.encode(text)
        assert ids.dtype == torch.int64
        assert tok.decode(ids) == " ".join(tok.tokenize(text))
    assert tok.tokenize("Isn't it?") == ["isn't", "it", "?"]
    cased = Tokenizer.from_corpus(corpus, lowercase=False)
    assert cased.encode("the The").tolist()[0] != cased.encode("the The").tolist()[1]
    assert Tokenizer.from_state_dict(tok.state_dict()).id_to_word == tok.id_to_word


def test_tokenizer_batch_padding_lengths_and_truncation() -> None:
    tok = Tokenizer.from_corpus(["one two three four five"])
    ids, lengths = tok.encode_batch(["one two three", "four", "five five"])
    assert ids.shape == (3, 3) and lengths.tolist() == [3, 1, 2]
    assert ids[1, 1:].tolist() == [tok.pad_id, tok.pad_id]
    with pytest.raises(ValueError, match="max_length"):
        tok.encode_batch(["one two three"], max_length=2)
    ids, lengths = tok.encode_batch(["one two three", "four"], max_length=2, truncate=True)
    assert ids.tolist() == [tok.encode("one two").tolist(), [tok.encode("four").item(), 0]]
    assert lengths.tolist() == [2, 1]
    ids, lengths = tok.encode_batch(["one"], max_length=4)
    assert ids.shape == (1, 4) and lengths.tolist() == [1]


def test_tokenizer_decode_rejects_unknown_ids() -> None:
    tok = Tokenizer.from_corpus(["a"])
    with pytest.raises(ValueError, match="ids"):
        tok.decode([7])
    assert tok.decode([0, 1, 2], skip_special=False) == "<pad> <unk> a"


# --- audio ----------------------------------------------------------------------------------------


def test_htk_mel_scale_round_trip_and_anchor() -> None:
    freqs = torch.tensor([0.0, 440.0, 1000.0, 3999.0])
    assert torch.allclose(mel_to_hz(hz_to_mel(freqs)), freqs.double(), atol=1e-9)
    assert abs(float(hz_to_mel(1000.0)) - 1000.0) < 0.05  # 1000 Hz is about 1000 mel on the HTK scale


def test_mel_filterbank_shape_triangles_and_partition_of_unity() -> None:
    n_fft, n_mels, rate = 512, 24, 16000
    filters = mel_filterbank(n_fft // 2 + 1, n_mels, rate)
    assert filters.shape == (n_fft // 2 + 1, n_mels)
    assert filters.min() >= 0 and filters.max() <= 1
    bins = torch.linspace(0, rate / 2, n_fft // 2 + 1)
    centres = mel_to_hz(torch.linspace(0, float(hz_to_mel(rate / 2)), n_mels + 2))[1:-1]
    inside = (bins >= centres[0]) & (bins <= centres[-1])
    assert torch.allclose(filters[inside].sum(dim=1), torch.ones(int(inside.sum())), atol=1e-5)
    peaks = bins[filters.argmax(dim=0)]
    assert bool((peaks[1:] > peaks[:-1]).all())  # filters ordered by centre frequency
    assert torch.allclose(peaks, centres.float(), atol=rate / n_fft)  # peak within a bin of the centre
    slaney = mel_filterbank(n_fft // 2 + 1, n_mels, rate, norm="slaney")
    assert torch.allclose(slaney / slaney.max(dim=0).values, filters / filters.max(dim=0).values, atol=1e-5)


@pytest.mark.parametrize("frequency", [300.0, 1000.0, 2500.0])
def test_log_mel_of_a_pure_tone_peaks_at_its_band(frequency: float) -> None:
    rate, n_fft, n_mels = 8000, 512, 40
    features = log_mel_spectrogram(
        tone(frequency, rate, 4000), rate, n_fft=n_fft, hop_length=128, n_mels=n_mels
    )
    assert features.shape == (num_frames(4000, n_fft, 128), n_mels)
    filters = mel_filterbank(n_fft // 2 + 1, n_mels, rate)
    tone_bin = round(frequency * n_fft / rate)
    expected_band = int(filters[tone_bin].argmax())
    # The edge frames see the reflect padding, whose phase jump spreads energy to nearby bands.
    assert bool((features[1:-1].argmax(dim=1) == expected_band).all())


def test_log_mel_batches_and_matches_per_utterance() -> None:
    rate = 8000
    waves = [torch.randn(n) for n in (1000, 1700, 1234)]
    features, lengths = batch_log_mel_spectrogram(waves, rate, n_fft=256, hop_length=100, n_mels=20)
    assert lengths.tolist() == [num_frames(len(w), 256, 100) for w in waves]
    assert features.shape == (3, int(lengths.max()), 20)
    for row, wave, n in zip(features, waves, lengths.tolist()):
        alone = log_mel_spectrogram(wave, rate, n_fft=256, hop_length=100, n_mels=20)
        assert torch.allclose(row[:n], alone, atol=1e-4)
        assert bool((row[n:] == 0).all())
    stacked = log_mel_spectrogram(
        torch.stack([waves[0], waves[0]]), rate, n_fft=256, hop_length=100, n_mels=20
    )
    assert stacked.shape == (2, lengths[0], 20)


def test_log_mel_errors() -> None:
    with pytest.raises(ValueError, match="waveform"):
        log_mel_spectrogram(torch.arange(100), 8000)
    with pytest.raises(ValueError, match="hop_length"):
        log_mel_spectrogram(torch.randn(1000), 8000, n_fft=256, hop_length=-1)
    with pytest.raises(ValueError, match="f_min"):
        mel_filterbank(129, 10, 8000, f_max=5000)


def test_normalize_utterance_over_valid_frames_only() -> None:
    frames = torch.randn(2, 7, 4) * 3 + 5
    lengths = torch.tensor([7, 4])
    out = normalize_utterance(frames, lengths)
    for row, n in zip(out, lengths.tolist()):
        assert torch.allclose(row[:n].mean(dim=0), torch.zeros(4), atol=1e-5)
        assert torch.allclose(row[:n].var(dim=0, unbiased=False), torch.ones(4), atol=1e-3)
        assert bool((row[n:] == 0).all())
    assert torch.allclose(out[1, :4], normalize_utterance(frames[1, :4]), atol=1e-6)
    constant = normalize_utterance(torch.ones(5, 3))
    assert torch.equal(constant, torch.zeros(5, 3))
    with pytest.raises(ValueError, match="lengths"):
        normalize_utterance(frames, torch.tensor([8, 1]))


# --- padding and collate --------------------------------------------------------------------------


def test_pad_sequences_and_masks() -> None:
    seqs = [torch.ones(3, 2), torch.ones(1, 2) * 2]
    padded, lengths = pad_sequences(seqs, padding_value=-1.0)
    assert padded.shape == (2, 3, 2) and lengths.tolist() == [3, 1]
    assert bool((padded[1, 1:] == -1).all()) and bool((padded[1, 0] == 2).all())
    mask = lengths_to_padding_mask(lengths)
    assert mask.tolist() == [[False, False, False], [False, True, True]]
    assert torch.equal(lengths_to_valid_mask(lengths, 4), ~lengths_to_padding_mask(lengths, 4))
    with pytest.raises(ValueError, match="max_length"):
        pad_sequences(seqs, max_length=2)
    cut, cut_lengths = pad_sequences(seqs, max_length=2, truncate=True)
    assert cut.shape == (2, 2, 2) and cut_lengths.tolist() == [2, 1]
    with pytest.raises(ValueError, match=r"sequences\[1\]"):
        pad_sequences([torch.ones(2, 3), torch.ones(2, 4)])


def test_collate_pads_sequences_stacks_the_rest() -> None:
    samples = [
        {
            "image": torch.rand(1, 8, 8),
            "audio": torch.rand(5, 13),
            "text": torch.tensor([4, 5]),
            "label": torch.tensor(3),
        },
        {
            "image": torch.rand(1, 8, 8),
            "audio": torch.rand(9, 13),
            "text": torch.tensor([6]),
            "label": torch.tensor(1),
        },
    ]
    batch = collate(samples)
    assert set(batch) == {"image", "audio", "audio_lengths", "text", "text_lengths", "label"}
    assert batch["image"].shape == (2, 1, 8, 8)
    assert batch["audio"].shape == (2, 9, 13) and batch["audio_lengths"].tolist() == [5, 9]
    assert bool((batch["audio"][0, 5:] == 0).all()) and torch.equal(batch["audio"][1], samples[1]["audio"])
    assert batch["text"].tolist() == [[4, 5], [6, 0]] and batch["text_lengths"].tolist() == [2, 1]
    assert batch["label"].tolist() == [3, 1] and batch["label"].dtype == torch.int64
    assert batch["audio_lengths"].dtype == torch.int64


def test_collate_errors() -> None:
    with pytest.raises(ValueError, match="samples"):
        collate([])
    with pytest.raises(ValueError, match=r"samples\[1\]"):
        collate([{"image": torch.rand(1, 2, 2)}, {"audio": torch.rand(2, 2)}])
    with pytest.raises(ValueError, match="image"):
        collate([{"image": torch.rand(1, 2, 2)}, {"image": torch.rand(1, 3, 3)}])
