"""`build_classifier`: a `MultimodalClassifier` with encoders sized for a dataset, its fusion and
head built by name."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mmfast.data.info import DatasetInfo
from mmfast.encoders.audio import AudioEncoder
from mmfast.encoders.image import ImageEncoder
from mmfast.encoders.text import TextEncoder
from mmfast.models.classifier import MultimodalClassifier


def build_encoder(
    modality: str,
    info: DatasetInfo,
    out_dim: int,
    text_encoder: str = "lstm",
    image_channels: Sequence[int] = (32, 64),
    audio_channels: Sequence[int] = (64, 128),
) -> nn.Module:
    """The default encoder of ``modality`` for the input sizes in ``info``."""
    if modality == "image" and info.image_shape is not None:
        return ImageEncoder(info.image_shape[0], out_dim, channels=image_channels)
    if modality == "audio" and info.audio_features is not None:
        return AudioEncoder(info.audio_features, out_dim, channels=audio_channels)
    if modality == "text" and info.vocab_size is not None:
        return TextEncoder(info.vocab_size, out_dim, kind=text_encoder, pad_id=info.pad_id)
    raise ValueError(f"modality: no encoder for {modality!r} with the input sizes of dataset {info.name!r}")


def build_classifier(
    info: DatasetInfo,
    *,
    fusion: str = "concat",
    modalities: Sequence[str] | None = None,
    reference: bool = False,
    hidden: int = 128,
    modality_dropout: float = 0.0,
    dropout: float = 0.1,
    text_encoder: str = "lstm",
    num_heads: int = 4,
    num_layers: int = 1,
    image_channels: Sequence[int] = (32, 64),
    audio_channels: Sequence[int] = (64, 128),
) -> MultimodalClassifier:
    """A classifier for dataset ``info``: one encoder per modality (``out_dim = hidden``), a fusion
    and a linear head over ``info.num_classes`` classes (:meth:`MultimodalClassifier.from_names`).

    Args:
        info: from :func:`mmfast.data.dataset_info`.
        fusion: ``"concat"``, ``"gated"``, ``"attention"`` or ``"transformer"``.
        modalities: the modalities to use (default: all of the dataset's), e.g. ``["image"]`` for
            a single-modality baseline with the same encoder.
        reference: the plain-PyTorch twin: the fusion built from :mod:`mmfast.nn.reference` (same
            parameter names, so state dicts load from one into the other).
        hidden: encoder output size and fusion width.
        modality_dropout: train-time probability of dropping each modality of a sample.
        dropout: dropout before the head and in the transformer fusion.
        text_encoder: ``"lstm"`` or ``"transformer"``.
        num_heads, num_layers: of the transformer fusion.
        image_channels, audio_channels: channels of the CNN stages of the image and audio encoders.
    """
    chosen = tuple(info.modalities if modalities is None else modalities)
    unknown = [m for m in chosen if m not in info.modalities]
    if unknown or not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(
            f"modalities: expected distinct names among {list(info.modalities)} of dataset {info.name!r}, "
            f"got {list(chosen)}"
        )
    encoders = {
        m: build_encoder(m, info, hidden, text_encoder, image_channels, audio_channels)
        for m in sorted(chosen)
    }
    return MultimodalClassifier.from_names(
        encoders,
        fusion,
        info.num_classes,
        hidden=hidden,
        dropout=dropout,
        modality_dropout=modality_dropout,
        reference=reference,
        num_heads=num_heads,
        num_layers=num_layers,
    )
