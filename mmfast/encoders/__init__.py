"""Modality encoders: each maps one modality's batch to ``[B, out_dim]`` features (and, for
attention fusions, to a token sequence with its padding mask)."""

from mmfast.encoders.audio import AudioEncoder
from mmfast.encoders.base import EncoderOutputs, ModalityEncoder
from mmfast.encoders.image import ImageEncoder, sinusoidal_positions_2d
from mmfast.encoders.text import TEXT_ENCODER_KINDS, TextEncoder

__all__ = [
    "TEXT_ENCODER_KINDS",
    "AudioEncoder",
    "EncoderOutputs",
    "ImageEncoder",
    "ModalityEncoder",
    "TextEncoder",
    "sinusoidal_positions_2d",
]
