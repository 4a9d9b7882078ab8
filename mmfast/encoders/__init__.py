"""Modality encoders: each maps one modality's batch to ``[B, out_dim]`` features (and, for
attention fusions, to a token sequence with its padding mask)."""

from mmfast.encoders.audio import AudioEncoder
from mmfast.encoders.base import ModalityEncoder
from mmfast.encoders.image import ImageEncoder
from mmfast.encoders.text import TEXT_ENCODER_KINDS, TextEncoder

__all__ = ["TEXT_ENCODER_KINDS", "AudioEncoder", "ImageEncoder", "ModalityEncoder", "TextEncoder"]
