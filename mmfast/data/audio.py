"""Audio features: log-mel spectrograms (``torch.stft``, Hann window, mel filterbank) and
per-utterance normalisation of feature sequences (log-mel or MFCC frames, ``[T, F]``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mmfast.data.padding import lengths_to_valid_mask, pad_sequences


def hz_to_mel(frequency: torch.Tensor | float) -> torch.Tensor:
    """HTK mel scale: ``2595 * log10(1 + f / 700)``."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(frequency, dtype=torch.float64) / 700.0)


def mel_to_hz(mel: torch.Tensor | float) -> torch.Tensor:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (torch.as_tensor(mel, dtype=torch.float64) / 2595.0) - 1.0)


def mel_filterbank(
    n_freqs: int,
    n_mels: int,
    sample_rate: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    norm: str | None = None,
) -> torch.Tensor:
    """Triangular mel filters, ``[n_freqs, n_mels]`` (``spectrogram @ filters`` gives mel bands).

    Filter ``m`` rises linearly (in Hz) from mel point ``m`` to ``m + 1`` and falls to ``m + 2``,
    with ``n_mels + 2`` points equally spaced on the HTK mel scale between ``f_min`` and ``f_max``
    (default: Nyquist). Without ``norm`` the filters sum to 1 between the first and last centre;
    ``norm="slaney"`` divides each by its bandwidth (equal area).

    Args:
        n_freqs: number of STFT bins, ``n_fft // 2 + 1``.
        n_mels: number of mel bands.
        sample_rate: sampling rate of the waveform in Hz.
        f_min, f_max: frequency range in Hz.
        norm: None or ``"slaney"``.
    """
    if n_freqs < 2 or n_mels < 1:
        raise ValueError(f"n_freqs, n_mels: expected n_freqs >= 2 and n_mels >= 1, got {n_freqs}, {n_mels}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate: expected a positive rate, got {sample_rate}")
    nyquist = sample_rate / 2
    f_max = nyquist if f_max is None else f_max
    if not 0 <= f_min < f_max <= nyquist:
        raise ValueError(f"f_min, f_max: expected 0 <= f_min < f_max <= {nyquist}, got {f_min}, {f_max}")
    if norm not in (None, "slaney"):
        raise ValueError(f"norm: expected None or 'slaney', got {norm!r}")
    bin_hz = torch.linspace(0, nyquist, n_freqs, dtype=torch.float64)
    points_hz = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2))
    lower, centre, upper = points_hz[:-2], points_hz[1:-1], points_hz[2:]
    rising = (bin_hz[:, None] - lower) / (centre - lower)
    falling = (upper - bin_hz[:, None]) / (upper - centre)
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
    if norm == "slaney":
        filters = filters * (2.0 / (upper - lower))
    return filters.to(torch.float32)


def num_frames(
    num_samples: int | torch.Tensor, n_fft: int, hop_length: int, center: bool = True
) -> int | torch.Tensor:
    """Number of STFT frames for waveforms of ``num_samples`` samples (int or int64 tensor)."""
    if center:
        return num_samples // hop_length + 1
    return (num_samples - n_fft) // hop_length + 1


def log_mel_spectrogram(
    waveform: torch.Tensor,
    sample_rate: int,
    n_fft: int = 400,
    hop_length: int | None = None,
    win_length: int | None = None,
    n_mels: int = 40,
    f_min: float = 0.0,
    f_max: float | None = None,
    power: float = 2.0,
    log_offset: float = 1e-6,
    center: bool = True,
) -> torch.Tensor:
    """``log(mel(|STFT|^power) + log_offset)`` of ``waveform [..., N]``; returns ``[..., T, n_mels]``.

    Frames are time-major (``[T, F]``), the layout the audio encoders and :func:`collate` take.
    ``T`` is :func:`num_frames` of ``N``. With ``center`` (the default) the signal is reflect-padded
    by ``n_fft // 2`` on both sides so that frame ``t`` is centred on sample ``t * hop_length``.
    For a list of waveforms of different lengths use :func:`batch_log_mel_spectrogram`.
    """
    if not isinstance(waveform, torch.Tensor) or not waveform.is_floating_point() or waveform.dim() < 1:
        raise ValueError(f"waveform: expected a floating tensor [..., N], got {_describe(waveform)}")
    hop_length, win_length = _check_stft_args(n_fft, hop_length, win_length, power, log_offset)
    if center and waveform.shape[-1] <= n_fft // 2:
        raise ValueError(f"waveform: expected more than n_fft // 2 = {n_fft // 2} samples to reflect-pad")
    batch_shape = waveform.shape[:-1]
    flat = waveform.reshape(-1, waveform.shape[-1])
    if center:
        flat = F.pad(flat.unsqueeze(1), (n_fft // 2, n_fft // 2), mode="reflect").squeeze(1)
    mel = _log_mel(flat, sample_rate, n_fft, hop_length, win_length, n_mels, f_min, f_max, power, log_offset)
    return mel.reshape(*batch_shape, mel.shape[-2], n_mels)


def batch_log_mel_spectrogram(
    waveforms: Sequence[torch.Tensor],
    sample_rate: int,
    n_fft: int = 400,
    hop_length: int | None = None,
    win_length: int | None = None,
    n_mels: int = 40,
    f_min: float = 0.0,
    f_max: float | None = None,
    power: float = 2.0,
    log_offset: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel frames of 1-D waveforms of different lengths in one STFT call.

    Equal, frame for frame, to :func:`log_mel_spectrogram` (``center=True``) of each waveform
    alone: each is reflect-padded at its own ends before the batch is zero-padded to one length.

    Returns:
        ``features`` ``[B, T_max, n_mels]`` (zero past each sequence's end) and int64 ``lengths``
        ``[B]`` (:func:`num_frames` of each waveform's length).
    """
    if len(waveforms) == 0:
        raise ValueError("waveforms: expected at least one waveform")
    for i, w in enumerate(waveforms):
        if not isinstance(w, torch.Tensor) or not w.is_floating_point() or w.dim() != 1:
            raise ValueError(f"waveforms[{i}]: expected a 1-D floating tensor, got {_describe(w)}")
        if w.shape[0] <= n_fft // 2:
            raise ValueError(f"waveforms[{i}]: expected more than n_fft // 2 = {n_fft // 2} samples")
    hop_length, win_length = _check_stft_args(n_fft, hop_length, win_length, power, log_offset)
    half = n_fft // 2
    padded = [_reflect_pad(w, half) for w in waveforms]
    signal, _ = pad_sequences(padded)
    lengths = torch.tensor([int(num_frames(w.shape[0], n_fft, hop_length)) for w in waveforms])
    mel = _log_mel(
        signal, sample_rate, n_fft, hop_length, win_length, n_mels, f_min, f_max, power, log_offset
    )
    mel = mel[:, : int(lengths.max())] * lengths_to_valid_mask(lengths, int(lengths.max())).unsqueeze(-1)
    return mel, lengths


def _reflect_pad(signal: torch.Tensor, width: int) -> torch.Tensor:
    """``F.pad(..., mode="reflect")`` of a 1-D signal; for short signals a cat of two flipped slices
    is several times cheaper than the padding kernel."""
    if width == 0:
        return signal
    return torch.cat([signal[1 : width + 1].flip(0), signal, signal[-width - 1 : -1].flip(0)])


def _check_stft_args(
    n_fft: int, hop_length: int | None, win_length: int | None, power: float, log_offset: float
) -> tuple[int, int]:
    if n_fft < 2:
        raise ValueError(f"n_fft: expected >= 2, got {n_fft}")
    hop_length = hop_length or n_fft // 4
    win_length = win_length or n_fft
    if not 0 < win_length <= n_fft or hop_length <= 0:
        raise ValueError(
            f"win_length, hop_length: expected 0 < win_length <= n_fft and hop_length > 0, "
            f"got {win_length}, {hop_length}"
        )
    if power <= 0 or log_offset <= 0:
        raise ValueError(f"power, log_offset: expected positive values, got {power}, {log_offset}")
    return hop_length, win_length


def _log_mel(
    frames_source: torch.Tensor,
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    win_length: int,
    n_mels: int,
    f_min: float,
    f_max: float | None,
    power: float,
    log_offset: float,
) -> torch.Tensor:
    """Log-mel of already padded ``[B, N]`` signals (frames start at sample 0), ``[B, T, n_mels]``."""
    window = torch.hann_window(
        win_length, periodic=True, dtype=frames_source.dtype, device=frames_source.device
    )
    spectrum = torch.stft(
        frames_source,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=win_length,
        window=window,
        center=False,
        return_complex=True,
    )  # [B, n_fft // 2 + 1, T]
    magnitude = spectrum.abs().pow(power).transpose(1, 2)
    filters = mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate, f_min, f_max)
    mel = magnitude @ filters.to(device=frames_source.device, dtype=magnitude.dtype)
    return torch.log(mel + log_offset)


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {list(value.shape)}"
    return type(value).__name__


def normalize_utterance(
    features: torch.Tensor, lengths: torch.Tensor | None = None, eps: float = 1e-5
) -> torch.Tensor:
    """Zero mean and unit variance per feature over each utterance's valid frames (CMVN).

    Args:
        features: ``[T, F]`` frames of one utterance, or ``[B, T, F]`` padded frames.
        lengths: int64 ``[B]`` valid frames per utterance (batched input only; default: all).
        eps: added to the variance, so constant features map to 0 instead of dividing by 0.

    Returns:
        The normalised frames, same shape; padding frames are set to 0.
    """
    if not features.is_floating_point() or features.dim() not in (2, 3):
        raise ValueError(
            f"features: expected floating [T, F] or [B, T, F], got {features.dtype} {list(features.shape)}"
        )
    if features.dim() == 2:
        if lengths is not None:
            raise ValueError("lengths: only for batched [B, T, F] features")
        return normalize_utterance(features.unsqueeze(0), None, eps).squeeze(0)
    batch, frames, _ = features.shape
    if lengths is None:
        lengths = torch.full((batch,), frames, dtype=torch.int64, device=features.device)
    if lengths.shape != (batch,) or (batch and (int(lengths.min()) < 1 or int(lengths.max()) > frames)):
        raise ValueError(f"lengths: expected [{batch}] values in [1, {frames}], got {lengths.tolist()}")
    valid = lengths_to_valid_mask(lengths, frames).unsqueeze(-1).to(features.dtype)
    count = lengths.to(features.dtype).view(-1, 1, 1)
    mean = (features * valid).sum(dim=1, keepdim=True) / count
    centred = (features - mean) * valid
    variance = centred.square().sum(dim=1, keepdim=True) / count
    return centred * torch.rsqrt(variance + eps)


def tone(frequency: float, sample_rate: int, num_samples: int, amplitude: float = 1.0) -> torch.Tensor:
    """A pure sine tone ``amplitude * sin(2 pi f t)``, float32 ``[num_samples]``."""
    t = torch.arange(num_samples, dtype=torch.float64) / sample_rate
    return (amplitude * torch.sin(2 * math.pi * frequency * t)).to(torch.float32)
